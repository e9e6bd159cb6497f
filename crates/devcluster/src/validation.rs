//! Name rules and label/field selectors, as the Kubernetes API server applies them.

use serde_json::Value;

use crate::registry::NameRule;

/// RFC 1123 label: at most 63 lower-case alphanumerics or '-', starting and ending alphanumeric.
pub fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_label)
}

/// Checks `name` against a rule; returns the Kubernetes-style explanation when it fails.
pub fn check_name(rule: NameRule, name: &str) -> Result<(), String> {
    let ok = match rule {
        NameRule::Subdomain => is_subdomain(name),
        NameRule::Label => is_label(name),
        NameRule::Rfc1035Label => {
            is_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase())
        }
        NameRule::PathSegment => {
            !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])
        }
    };
    if ok {
        return Ok(());
    }
    Err(match rule {
        NameRule::Subdomain => format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        ),
        NameRule::Label => format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        ),
        NameRule::Rfc1035Label => format!(
            "Invalid value: \"{name}\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
        ),
        NameRule::PathSegment => {
            format!(
                "Invalid value: \"{name}\": may not be '.' or '..' and may not contain '/' or '%'"
            )
        }
    })
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq)]
pub enum Requirement {
    /// `key=value` / `key==value`
    Eq(String, String),
    /// `key!=value` (also true when the label is absent)
    NotEq(String, String),
    /// `key in (a,b)`
    In(String, Vec<String>),
    /// `key notin (a,b)` (also true when absent)
    NotIn(String, Vec<String>),
    /// `key`
    Exists(String),
    /// `!key`
    NotExists(String),
}

/// A parsed label selector: all requirements must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector(pub Vec<Requirement>);

fn valid_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(is_subdomain)
        && !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_set(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

impl LabelSelector {
    /// Parses the `labelSelector` query syntax.
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for part in split_top(s) {
            let p = part.trim();
            let bad = || format!("unable to parse requirement: {p:?}");
            let req = if let Some(key) = p.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_string())
            } else if let Some((k, v)) = p.split_once("!=") {
                Requirement::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once("==") {
                Requirement::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once('=') {
                Requirement::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = p.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), parse_set(rest).ok_or_else(bad)?)
            } else if let Some((k, rest)) = p.split_once(" in ") {
                Requirement::In(k.trim().into(), parse_set(rest).ok_or_else(bad)?)
            } else if p.contains([' ', '(', ')', '<', '>']) {
                return Err(bad());
            } else {
                Requirement::Exists(p.to_string())
            };
            let (key, values): (&str, Vec<&String>) = match &req {
                Requirement::Eq(k, v) | Requirement::NotEq(k, v) => (k, vec![v]),
                Requirement::In(k, vs) | Requirement::NotIn(k, vs) => (k, vs.iter().collect()),
                Requirement::Exists(k) | Requirement::NotExists(k) => (k, vec![]),
            };
            if !valid_key(key) {
                return Err(format!("invalid label key {key:?} in selector {s:?}"));
            }
            if let Some(v) = values.iter().find(|v| !valid_value(v)) {
                return Err(format!("invalid label value {v:?} in selector {s:?}"));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Tests an object's `metadata.labels`.
    pub fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Eq(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }
}

/// One selectable field of a kind: the label clients use, where its value lives in the
/// stored object (a JSON pointer), and the value a missing field reads as (Kubernetes selects
/// on the typed object, where an absent number is `0` and an absent bool `false`).
type FieldLabel = (&'static str, &'static str, &'static str);

/// core/v1 Event fields (`ToSelectableFields` of the event registry).
const CORE_EVENT_FIELDS: &[FieldLabel] = &[
    ("involvedObject.kind", "/involvedObject/kind", ""),
    ("involvedObject.namespace", "/involvedObject/namespace", ""),
    ("involvedObject.name", "/involvedObject/name", ""),
    ("involvedObject.uid", "/involvedObject/uid", ""),
    (
        "involvedObject.apiVersion",
        "/involvedObject/apiVersion",
        "",
    ),
    (
        "involvedObject.resourceVersion",
        "/involvedObject/resourceVersion",
        "",
    ),
    ("involvedObject.fieldPath", "/involvedObject/fieldPath", ""),
    ("reason", "/reason", ""),
    ("reportingComponent", "/reportingComponent", ""),
    ("source", "/source/component", ""),
    ("type", "/type", ""),
];

/// events.k8s.io/v1 Event fields. They are stored in core/v1 form (see [`crate::events`]), so
/// the pointers name the core fields, as Kubernetes' field label conversion maps them.
const EVENTS_V1_FIELDS: &[FieldLabel] = &[
    ("regarding.kind", "/involvedObject/kind", ""),
    ("regarding.namespace", "/involvedObject/namespace", ""),
    ("regarding.name", "/involvedObject/name", ""),
    ("regarding.uid", "/involvedObject/uid", ""),
    ("regarding.apiVersion", "/involvedObject/apiVersion", ""),
    (
        "regarding.resourceVersion",
        "/involvedObject/resourceVersion",
        "",
    ),
    ("regarding.fieldPath", "/involvedObject/fieldPath", ""),
    ("reason", "/reason", ""),
    ("reportingController", "/reportingComponent", ""),
    ("type", "/type", ""),
];

const POD_FIELDS: &[FieldLabel] = &[
    ("spec.nodeName", "/spec/nodeName", ""),
    ("spec.restartPolicy", "/spec/restartPolicy", ""),
    ("spec.schedulerName", "/spec/schedulerName", ""),
    ("spec.serviceAccountName", "/spec/serviceAccountName", ""),
    ("spec.hostNetwork", "/spec/hostNetwork", "false"),
    ("status.phase", "/status/phase", ""),
    ("status.podIP", "/status/podIP", ""),
    ("status.nominatedNodeName", "/status/nominatedNodeName", ""),
];

/// The selectable fields of a resource beyond `metadata.name` and `metadata.namespace`, and
/// whether the kind has its own field label conversion in Kubernetes (which decides the wording
/// of the error for an unknown label).
fn field_labels(group: &str, resource: &str) -> (&'static [FieldLabel], bool) {
    match (group, resource) {
        ("", "pods") => (POD_FIELDS, true),
        ("", "events") => (CORE_EVENT_FIELDS, true),
        ("events.k8s.io", "events") => (EVENTS_V1_FIELDS, true),
        ("", "secrets") => (&[("type", "/type", "")], true),
        ("", "namespaces") => (&[("status.phase", "/status/phase", "")], true),
        ("", "nodes") => (
            &[("spec.unschedulable", "/spec/unschedulable", "false")],
            true,
        ),
        ("", "replicationcontrollers") | ("apps", "replicasets") => {
            (&[("status.replicas", "/status/replicas", "0")], true)
        }
        ("batch", "jobs") => (&[("status.successful", "/status/succeeded", "0")], true),
        _ => (&[], false),
    }
}

/// What one term of a field selector reads.
#[derive(Clone, Debug, PartialEq)]
enum Field {
    Name,
    Namespace,
    /// JSON pointer into the stored object and the value of an absent field.
    At(&'static str, &'static str),
}

/// One term: field, `=`/`==` (true) or `!=` (false), value.
#[derive(Clone, Debug, PartialEq)]
struct Term {
    field: Field,
    eq: bool,
    value: String,
}

/// A parsed field selector over the fields Kubernetes makes selectable for the resource
/// (`metadata.name` and `metadata.namespace` for every resource, and per kind e.g. Pods'
/// `status.phase` or Events' `involvedObject.name`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector(Vec<Term>);

impl FieldSelector {
    /// Parses `fieldSelector` (`field=value`, `field==value`, `field!=value`, comma-separated)
    /// for a resource of `group`. An unknown label is refused with Kubernetes' message.
    pub fn parse(s: &str, group: &str, resource: &str) -> Result<FieldSelector, String> {
        let (labels, converted) = field_labels(group, resource);
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (label, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            let label = label.trim();
            let field = match label {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                _ => match labels.iter().find(|(l, _, _)| *l == label) {
                    Some((_, pointer, absent)) => Field::At(pointer, absent),
                    None if converted => {
                        return Err(format!("field label not supported: {label}"));
                    }
                    None => {
                        return Err(format!(
                            "{label:?} is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                        ));
                    }
                },
            };
            out.push(Term {
                field,
                eq,
                value: value.trim().to_string(),
            });
        }
        Ok(FieldSelector(out))
    }

    /// Whether no term reads the object's content (then name and namespace decide).
    pub fn needs_object(&self) -> bool {
        self.0.iter().any(|t| matches!(t.field, Field::At(..)))
    }

    /// The name this selector pins (`metadata.name=x`), used to watch a single object.
    pub fn pinned_name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|t| t.eq && t.field == Field::Name)
            .map(|t| t.value.as_str())
    }

    /// Tests an object: its namespace, name and (when a term needs it) its stored content.
    pub fn matches(&self, namespace: &str, name: &str, obj: Option<&Value>) -> bool {
        self.0.iter().all(|t| {
            let owned;
            let actual: &str = match t.field {
                Field::Name => name,
                Field::Namespace => namespace,
                Field::At(pointer, absent) => match obj.and_then(|o| o.pointer(pointer)) {
                    None | Some(Value::Null) => absent,
                    Some(Value::String(s)) => s,
                    Some(other) => {
                        owned = other.to_string();
                        &owned
                    }
                },
            };
            (actual == t.value) == t.eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn label_selector_operators() {
        let l = labels(json!({"app": "web", "tier": "front"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(Some(&l));
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("app in (web, db)"));
        assert!(!m("app notin (web)"));
        assert!(m("missing notin (x)"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(m(""));
        assert!(LabelSelector::parse("a in b").is_err());
        assert!(LabelSelector::parse("bad key=x").is_err());
    }

    #[test]
    fn names() {
        assert!(check_name(NameRule::Subdomain, "a.b-c").is_ok());
        assert!(check_name(NameRule::Subdomain, "Bad").is_err());
        assert!(check_name(NameRule::Label, "a.b").is_err());
        assert!(check_name(NameRule::Rfc1035Label, "1abc").is_err());
        assert!(check_name(NameRule::PathSegment, "system:x").is_ok());
    }

    #[test]
    fn field_selector() {
        let f = FieldSelector::parse("metadata.name=a,metadata.namespace!=b", "", "configmaps")
            .unwrap();
        assert!(f.matches("c", "a", None));
        assert!(!f.matches("b", "a", None));
        assert_eq!(f.pinned_name(), Some("a"));
        assert!(!f.needs_object());
        assert_eq!(
            FieldSelector::parse("spec.x=1", "", "pods").unwrap_err(),
            "field label not supported: spec.x"
        );
        assert_eq!(
            FieldSelector::parse("data.x=1", "", "configmaps").unwrap_err(),
            "\"data.x\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
    }

    #[test]
    fn field_selector_per_kind() {
        let pod = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let f = FieldSelector::parse("status.phase=Running,spec.nodeName!=n2", "", "pods").unwrap();
        assert!(f.needs_object());
        assert!(f.matches("ns", "p", Some(&pod)));
        let f = FieldSelector::parse("spec.hostNetwork=false", "", "pods").unwrap();
        assert!(
            f.matches("ns", "p", Some(&pod)),
            "an absent bool reads false"
        );
        let rs = json!({"status": {"replicas": 3}});
        let f = FieldSelector::parse("status.replicas==3", "apps", "replicasets").unwrap();
        assert!(f.matches("ns", "r", Some(&rs)));
        let f = FieldSelector::parse("status.replicas=0", "apps", "replicasets").unwrap();
        assert!(
            f.matches("ns", "r", Some(&json!({}))),
            "an absent count reads 0"
        );
        let ev = json!({"involvedObject": {"kind": "Pod", "name": "p"}, "reportingComponent": "kubelet",
            "source": {"component": "kubelet"}});
        let f = FieldSelector::parse(
            "regarding.kind=Pod,regarding.name=p,reportingController=kubelet",
            "events.k8s.io",
            "events",
        )
        .unwrap();
        assert!(f.matches("ns", "e", Some(&ev)));
        let f = FieldSelector::parse("involvedObject.name=q,source=kubelet", "", "events").unwrap();
        assert!(!f.matches("ns", "e", Some(&ev)));
        assert!(FieldSelector::parse("involvedObject.name=p", "events.k8s.io", "events").is_err());
    }
}
