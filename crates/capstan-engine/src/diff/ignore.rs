//! `ignoreDifferences`: fields removed from both sides before comparing.
//!
//! Field names follow Argo CD's (`jsonPointers`, `jqPathExpressions`,
//! `managedFieldsManagers`), so existing Application specs keep working.

use super::fields::{FieldSet, remove_owned};
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data, unwrap_valr};
use jaq_json::Val;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One `ignoreDifferences` entry: which objects it applies to and which fields it ignores.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IgnoreDifference {
    /// API group (`""` for the core group, `"*"` for any).
    #[serde(default)]
    pub group: String,
    /// Kind (`"*"` for any).
    pub kind: String,
    /// Only the object with this name, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Only objects in this namespace, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// RFC 6901 JSON pointers (`/spec/replicas`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json_pointers: Vec<String>,
    /// jq path expressions (`.spec.template.spec.containers[] | select(.name == "x") | .image`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jq_path_expressions: Vec<String>,
    /// Managers whose fields (per the live object's managedFields) are ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_fields_managers: Vec<String>,
}

type JqFilter = jaq_core::Filter<data::JustLut<Val>>;

/// An entry made ready to run: pointers split, jq expressions compiled once.
pub(crate) struct CompiledIgnore {
    group: String,
    kind: String,
    name: Option<String>,
    namespace: Option<String>,
    pointers: Vec<Vec<String>>,
    jq: Vec<JqFilter>,
    pub(crate) managers: Vec<String>,
}

impl std::fmt::Debug for CompiledIgnore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledIgnore")
            .field("group", &self.group)
            .field("kind", &self.kind)
            .field("pointers", &self.pointers)
            .field("jq", &self.jq.len())
            .field("managers", &self.managers)
            .finish()
    }
}

impl CompiledIgnore {
    /// Compiles `entry`; the error says which field of the entry is wrong and why.
    pub(crate) fn compile(entry: &IgnoreDifference) -> Result<Self, String> {
        if entry.kind.is_empty() {
            return Err("kind is empty (use \"*\" for any kind)".into());
        }
        let pointers = entry
            .json_pointers
            .iter()
            .map(|p| parse_pointer(p).map_err(|e| format!("jsonPointers {p:?}: {e}")))
            .collect::<Result<_, _>>()?;
        let jq = entry
            .jq_path_expressions
            .iter()
            .map(|e| compile_jq(e).map_err(|why| format!("jqPathExpressions {e:?}: {why}")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            group: entry.group.clone(),
            kind: entry.kind.clone(),
            name: entry.name.clone(),
            namespace: entry.namespace.clone(),
            pointers,
            jq,
            managers: entry.managed_fields_managers.clone(),
        })
    }

    /// True when the entry applies to the object with this identity.
    pub(crate) fn matches(&self, group: &str, kind: &str, namespace: &str, name: &str) -> bool {
        (self.group == "*" || self.group == group)
            && (self.kind == "*" || self.kind == kind)
            && self.name.as_deref().is_none_or(|n| n == name)
            && self.namespace.as_deref().is_none_or(|n| n == namespace)
    }

    /// Removes the pointed and jq-selected fields from `obj`.
    pub(crate) fn apply(&self, obj: &mut Value) {
        for pointer in &self.pointers {
            remove_pointer(obj, pointer);
        }
        if self.jq.is_empty() {
            return;
        }
        for filter in &self.jq {
            let mut paths = jq_paths(filter, obj);
            // Deleting the last paths first keeps the indices of earlier list items valid.
            paths.sort_by(|a, b| compare_paths(a, b));
            for path in paths.iter().rev() {
                remove_path(obj, path);
            }
        }
    }
}

/// The fields `managers` own according to `live_raw`'s managedFields (any operation).
pub(crate) fn managers_field_set(live_raw: &Value, managers: &[String]) -> Option<FieldSet> {
    FieldSet::from_managed_fields(live_raw, |entry| {
        let manager = entry.get("manager").and_then(Value::as_str).unwrap_or("");
        managers.iter().any(|m| m == manager)
    })
}

/// Removes the fields of `set` from `obj`.
pub(crate) fn remove_fields(obj: &mut Value, set: &FieldSet) {
    remove_owned(obj, set);
}

fn parse_pointer(p: &str) -> Result<Vec<String>, &'static str> {
    let rest = p
        .strip_prefix('/')
        .ok_or("a JSON pointer starts with '/' and cannot point at the whole object")?;
    Ok(rest
        .split('/')
        .map(|seg| seg.replace("~1", "/").replace("~0", "~"))
        .collect())
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(isize),
}

fn remove_pointer(obj: &mut Value, pointer: &[String]) {
    let path: Vec<Seg> = pointer.iter().map(|s| Seg::Key(s.clone())).collect();
    remove_path(obj, &path);
}

/// Removes the value at `path` if it exists; a key segment also indexes a list when numeric.
fn remove_path(obj: &mut Value, path: &[Seg]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for seg in parents {
        let next = match (cur, seg) {
            (Value::Object(m), Seg::Key(k)) => m.get_mut(k),
            (Value::Array(a), seg) => match list_index(seg, a.len()) {
                Some(i) => a.get_mut(i),
                None => None,
            },
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match (cur, last) {
        (Value::Object(m), Seg::Key(k)) => {
            m.shift_remove(k);
        }
        (Value::Array(a), seg) => {
            if let Some(i) = list_index(seg, a.len()) {
                a.remove(i);
            }
        }
        _ => {}
    }
}

fn list_index(seg: &Seg, len: usize) -> Option<usize> {
    let i = match seg {
        Seg::Index(i) => *i,
        Seg::Key(k) => k.parse::<isize>().ok().filter(|i| *i >= 0)?,
    };
    let i = if i < 0 {
        len.checked_sub(i.unsigned_abs())?
    } else {
        i as usize
    };
    (i < len).then_some(i)
}

fn compare_paths(a: &[Seg], b: &[Seg]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = match (x, y) {
            (Seg::Index(i), Seg::Index(j)) => i.cmp(j),
            (Seg::Key(k), Seg::Key(l)) => k.cmp(l),
            (Seg::Index(_), Seg::Key(_)) => std::cmp::Ordering::Less,
            (Seg::Key(_), Seg::Index(_)) => std::cmp::Ordering::Greater,
        };
        if o.is_ne() {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// Compiles `path(EXPR)`, so running it yields the paths the expression selects.
fn compile_jq(expr: &str) -> Result<JqFilter, String> {
    let code = format!("path({expr})");
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs());
    let loader = Loader::new(defs);
    let arena = Arena::default();
    let modules = loader
        .load(
            &arena,
            File {
                code: &code,
                path: (),
            },
        )
        .map_err(|errs| {
            let parse = errs
                .iter()
                .any(|(_, e)| !matches!(e, jaq_core::load::Error::Io(_)));
            if parse {
                "does not parse as a jq expression".to_string()
            } else {
                "imports modules, which are not allowed".to_string()
            }
        })?;
    Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errs| {
            let names: Vec<String> = errs
                .iter()
                .flat_map(|(_, list)| {
                    list.iter()
                        .map(|(name, what)| format!("{} {name}", what.as_str()))
                })
                .collect();
            format!("undefined: {}", names.join(", "))
        })
}

/// Runs a compiled `path(...)` filter; a runtime error (an expression written for objects of
/// another shape) selects nothing.
fn jq_paths(filter: &JqFilter, obj: &Value) -> Vec<Vec<Seg>> {
    let Ok(input) = Val::deserialize(obj) else {
        return Vec::new();
    };
    let ctx = Ctx::<data::JustLut<Val>>::new(&filter.lut, Vars::new([]));
    let mut out = Vec::new();
    for result in filter.id.run((ctx, input)).map(unwrap_valr) {
        let Ok(Val::Arr(path)) = result else {
            continue;
        };
        let segs: Option<Vec<Seg>> = path.iter().map(seg_of).collect();
        if let Some(segs) = segs.filter(|s| !s.is_empty()) {
            out.push(segs);
        }
    }
    out
}

fn seg_of(v: &Val) -> Option<Seg> {
    match v {
        Val::TStr(b) | Val::BStr(b) => Some(Seg::Key(String::from_utf8_lossy(b).into_owned())),
        Val::Num(jaq_json::Num::Int(i)) => Some(Seg::Index(*i)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_unescape_and_reject_the_root() {
        assert_eq!(parse_pointer("/a~1b/c~0d").unwrap(), vec!["a/b", "c~d"]);
        assert!(parse_pointer("").is_err());
        assert!(parse_pointer("spec").is_err());
    }

    #[test]
    fn jq_selects_list_items_and_deletes_them_last_first() {
        let rule = CompiledIgnore::compile(&IgnoreDifference {
            kind: "Deployment".into(),
            jq_path_expressions: vec![".spec.items[] | select(.drop)".into()],
            ..Default::default()
        })
        .unwrap();
        let mut v =
            json!({"spec": {"items": [{"drop": true}, {"n": 1}, {"drop": true}, {"n": 2}]}});
        rule.apply(&mut v);
        assert_eq!(v, json!({"spec": {"items": [{"n": 1}, {"n": 2}]}}));
        // An expression that does not fit the object's shape selects nothing.
        let mut other = json!({"spec": {"items": 3}});
        rule.apply(&mut other);
        assert_eq!(other, json!({"spec": {"items": 3}}));
    }

    #[test]
    fn bad_expressions_are_reported_with_the_field() {
        let err = CompiledIgnore::compile(&IgnoreDifference {
            kind: "X".into(),
            jq_path_expressions: vec![".spec | nosuchfn".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.contains("jqPathExpressions") && err.contains("nosuchfn"),
            "{err}"
        );
        let err = CompiledIgnore::compile(&IgnoreDifference {
            kind: "X".into(),
            jq_path_expressions: vec![".spec[".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.contains("does not parse"), "{err}");
    }
}
