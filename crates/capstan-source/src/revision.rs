//! Resolving a `targetRevision` against the refs a remote advertised: pure logic, no I/O.

use std::collections::BTreeMap;

use gix::ObjectId;

use crate::cache::RevisionKind;

/// One advertised ref: what it points to and, for an annotated tag, the object it peels to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RefTarget {
    /// The object the ref names directly (a tag object for annotated tags).
    pub object: ObjectId,
    /// The object after peeling tags (equal to `object` for branches and lightweight tags).
    pub peeled: ObjectId,
}

/// The refs a remote advertised at one point in time. Comparing two of these is the whole
/// "has it changed?" check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Advertised {
    /// `HEAD`: the ref it points to (when symbolic) and its target.
    pub head: Option<(Option<String>, RefTarget)>,
    /// Every other advertised ref by full name (`refs/heads/main`, `refs/tags/v1.0.0`).
    pub refs: BTreeMap<String, RefTarget>,
}

impl Advertised {
    /// Every object id a fetch must have brought in for this set of refs to be usable.
    pub fn objects(&self) -> impl Iterator<Item = &ObjectId> {
        self.refs
            .values()
            .chain(self.head.as_ref().map(|(_, t)| t))
            .flat_map(|t| [&t.object, &t.peeled])
    }
}

/// What a revision names, before consulting the object store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// A ref of the remote; `commit` is its peeled target.
    Ref {
        name: String,
        kind: RevisionKind,
        target: ObjectId,
    },
    /// A full commit id.
    FullId(ObjectId),
    /// An abbreviated commit id (4 to 39 hex digits).
    ShortId(String),
}

/// Why a revision could not be looked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LookupError {
    NotFound(String),
    Invalid(String),
}

/// Resolve `revision` against `adv`, in this order: `""`/`HEAD`; a full ref name (`refs/...`);
/// a tag; a branch (tags first, as `git rev-parse` does); a full or abbreviated commit id; a
/// semver constraint over tags.
pub(crate) fn lookup(adv: &Advertised, revision: &str) -> Result<Lookup, LookupError> {
    let rev = revision.trim();
    if rev.is_empty() || rev == "HEAD" {
        return match &adv.head {
            Some((symref, target)) => Ok(Lookup::Ref {
                name: symref.clone().unwrap_or_else(|| "HEAD".into()),
                kind: RevisionKind::Head,
                target: target.peeled,
            }),
            None => Err(LookupError::NotFound(
                "the remote advertises no HEAD (empty repository or unborn default branch)".into(),
            )),
        };
    }
    if rev.starts_with("refs/") {
        return match adv.refs.get(rev) {
            Some(t) => Ok(Lookup::Ref {
                name: rev.to_owned(),
                kind: if rev.starts_with("refs/tags/") {
                    RevisionKind::Tag
                } else {
                    RevisionKind::Branch
                },
                target: t.peeled,
            }),
            None => Err(LookupError::NotFound(format!(
                "the remote advertises no ref {rev}"
            ))),
        };
    }
    for (prefix, kind) in [
        ("refs/tags/", RevisionKind::Tag),
        ("refs/heads/", RevisionKind::Branch),
    ] {
        let name = format!("{prefix}{rev}");
        if let Some(t) = adv.refs.get(&name) {
            return Ok(Lookup::Ref {
                name,
                kind,
                target: t.peeled,
            });
        }
    }
    if rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
        let id = ObjectId::from_hex(rev.to_ascii_lowercase().as_bytes())
            .map_err(|e| LookupError::Invalid(format!("not a commit id: {e}")))?;
        return Ok(Lookup::FullId(id));
    }
    if (4..40).contains(&rev.len()) && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Lookup::ShortId(rev.to_ascii_lowercase()));
    }
    if let Some(constraint) = parse_constraint(rev) {
        let reqs = constraint.map_err(LookupError::Invalid)?;
        return best_tag(adv, &reqs)
            .map(|(name, target)| Lookup::Ref {
                name,
                kind: RevisionKind::Semver,
                target,
            })
            .ok_or_else(|| {
                LookupError::NotFound(format!(
                    "no tag satisfies the semver constraint (tags considered: {})",
                    semver_tags(adv).len()
                ))
            });
    }
    Err(LookupError::NotFound(
        "no branch or tag has that name, and it is neither a commit id nor a semver constraint"
            .into(),
    ))
}

/// Tags whose name (with an optional leading `v`) is a semver version.
fn semver_tags(adv: &Advertised) -> Vec<(semver::Version, &str, ObjectId)> {
    adv.refs
        .iter()
        .filter_map(|(name, t)| {
            let short = name.strip_prefix("refs/tags/")?;
            let plain = short.strip_prefix(['v', 'V']).unwrap_or(short);
            let v = semver::Version::parse(plain).ok()?;
            Some((v, name.as_str(), t.peeled))
        })
        .collect()
}

/// The highest tag matching any of `reqs` (alternatives joined by `||`). Pre-releases match only
/// when a comparator names a pre-release of the same major.minor.patch (the `semver` crate's
/// rule). Equal versions (`v1.0.0` and `1.0.0`) are broken by name so the result is stable.
fn best_tag(adv: &Advertised, reqs: &[semver::VersionReq]) -> Option<(String, ObjectId)> {
    semver_tags(adv)
        .into_iter()
        .filter(|(v, _, _)| reqs.iter().any(|r| r.matches(v)))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, name, id)| (name.to_owned(), id))
}

/// Parse `rev` as a semver constraint if it looks like one: it has an operator (`< > = ~ ^`),
/// a wildcard component (`1.x`, `1.2.*`), a `,`, a ` - ` range or `||`. Returns `None` for
/// anything else, so a plain name is never silently treated as a range.
///
/// The syntax accepted is the one GitOps users write (Helm/Masterminds style): comparators
/// separated by spaces or commas are ANDed (`>=1.2.0 <2`), `||` separates alternatives,
/// `1.2 - 1.4` is an inclusive range, and a bare version inside a constraint means exactly that
/// version.
pub(crate) fn parse_constraint(rev: &str) -> Option<Result<Vec<semver::VersionReq>, String>> {
    let looks_like = rev.contains(['<', '>', '=', '~', '^', ',', '*'])
        || rev.contains("||")
        || rev.contains(" - ")
        || rev
            .split('.')
            .enumerate()
            .any(|(i, part)| matches!(part.trim(), "x" | "X") && (i > 0 || rev.contains('.')));
    if !looks_like {
        return None;
    }
    let mut reqs = Vec::new();
    for alternative in rev.split("||") {
        let tokens: Vec<&str> = alternative
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
            .collect();
        if tokens.is_empty() {
            return Some(Err(format!(
                "empty alternative in semver constraint {rev:?}"
            )));
        }
        let mut comparators: Vec<String> = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let tok = tokens[i];
            if tokens.get(i + 1) == Some(&"-") {
                let Some(upper) = tokens.get(i + 2) else {
                    return Some(Err(format!("range without an upper bound in {rev:?}")));
                };
                comparators.push(format!(">={}", strip_v(tok)));
                comparators.push(format!("<={}", strip_v(upper)));
                i += 3;
                continue;
            }
            if tok.chars().all(|c| "<>=~^!".contains(c)) {
                // An operator written apart from its version: ">= 1.2.0".
                let Some(version) = tokens.get(i + 1) else {
                    return Some(Err(format!(
                        "operator {tok:?} without a version in {rev:?}"
                    )));
                };
                comparators.push(format!("{tok}{}", strip_v(version)));
                i += 2;
                continue;
            }
            let op_len = tok
                .find(|c: char| !"<>=~^!".contains(c))
                .unwrap_or(tok.len());
            let (op, version) = tok.split_at(op_len);
            let version = strip_v(version);
            let is_wildcard = version.split('.').any(|p| matches!(p, "x" | "X" | "*"));
            if op.is_empty() && !is_wildcard {
                comparators.push(format!("={version}"));
            } else {
                comparators.push(format!("{op}{version}"));
            }
            i += 1;
        }
        match semver::VersionReq::parse(&comparators.join(", ")) {
            Ok(r) => reqs.push(r),
            Err(e) => return Some(Err(format!("invalid semver constraint {rev:?}: {e}"))),
        }
    }
    Some(Ok(reqs))
}

fn strip_v(s: &str) -> &str {
    s.strip_prefix(['v', 'V']).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId::from_bytes_or_panic(&[n; 20])
    }

    fn adv(tags: &[(&str, u8)]) -> Advertised {
        let mut a = Advertised::default();
        for (name, n) in tags {
            a.refs.insert(
                format!("refs/tags/{name}"),
                RefTarget {
                    object: id(*n),
                    peeled: id(*n),
                },
            );
        }
        a.refs.insert(
            "refs/heads/main".into(),
            RefTarget {
                object: id(200),
                peeled: id(200),
            },
        );
        a
    }

    fn pick(a: &Advertised, rev: &str) -> String {
        match lookup(a, rev) {
            Ok(Lookup::Ref { name, .. }) => name,
            other => panic!("{rev}: {other:?}"),
        }
    }

    #[test]
    fn semver_ranges_pick_the_highest_match() {
        let a = adv(&[
            ("v1.0.0", 1),
            ("v1.2.0", 2),
            ("v1.2.5", 3),
            ("1.9.1", 4),
            ("v2.0.0", 5),
            ("v2.1.0-rc.1", 6),
            ("not-a-version", 7),
        ]);
        assert_eq!(pick(&a, ">=1.2.0 <2"), "refs/tags/1.9.1");
        assert_eq!(pick(&a, ">= 1.2.0, < 2"), "refs/tags/1.9.1");
        assert_eq!(pick(&a, "1.x"), "refs/tags/1.9.1");
        assert_eq!(pick(&a, "1.2.x"), "refs/tags/v1.2.5");
        assert_eq!(pick(&a, "~1.2"), "refs/tags/v1.2.5");
        assert_eq!(pick(&a, "^1.0.0"), "refs/tags/1.9.1");
        assert_eq!(
            pick(&a, "*"),
            "refs/tags/v2.0.0",
            "pre-release only when named"
        );
        assert_eq!(pick(&a, ">=2.1.0-rc.0"), "refs/tags/v2.1.0-rc.1");
        assert_eq!(pick(&a, "1.0.0 - 1.2.0"), "refs/tags/v1.2.0");
        assert_eq!(pick(&a, "<1.1 || >=2"), "refs/tags/v2.0.0");
        assert_eq!(pick(&a, "=v1.2.0"), "refs/tags/v1.2.0");
        match lookup(&a, ">=3") {
            Err(LookupError::NotFound(m)) => assert!(m.contains("semver"), "{m}"),
            other => panic!("{other:?}"),
        }
        match lookup(&a, ">=1.2.0 <") {
            Err(LookupError::Invalid(m)) => assert!(m.contains("without a version"), "{m}"),
            other => panic!("{other:?}"),
        }
        match lookup(&a, ">=banana") {
            Err(LookupError::Invalid(m)) => assert!(m.contains("invalid semver constraint"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_before_ids_before_constraints() {
        let mut a = adv(&[("release", 1)]);
        a.refs.insert(
            "refs/heads/release".into(),
            RefTarget {
                object: id(9),
                peeled: id(9),
            },
        );
        // Tags win over branches, as in `git rev-parse`.
        assert_eq!(pick(&a, "release"), "refs/tags/release");
        assert_eq!(pick(&a, "refs/heads/release"), "refs/heads/release");
        assert_eq!(pick(&a, "main"), "refs/heads/main");
        assert!(matches!(lookup(&a, "abcd123"), Ok(Lookup::ShortId(s)) if s == "abcd123"));
        let full = "A".repeat(40);
        assert!(
            matches!(lookup(&a, &full), Ok(Lookup::FullId(i)) if i == ObjectId::from_hex(&[b'a'; 40]).unwrap())
        );
        assert!(matches!(lookup(&a, "nope"), Err(LookupError::NotFound(_))));
        assert!(matches!(lookup(&a, "HEAD"), Err(LookupError::NotFound(m)) if m.contains("HEAD")));
        assert!(parse_constraint("feature-x").is_none());
        assert!(parse_constraint("1.2.3").is_none());
        assert!(parse_constraint("x").is_none());
    }
}
