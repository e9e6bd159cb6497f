//! Sets of field paths, and their `FieldsV1` encoding as the API server stores it in
//! `metadata.managedFields[].fieldsV1`.
//!
//! A [`FieldSet`] is a trie: every node is one path; `member` says whether that path itself is
//! in the set. In `FieldsV1` JSON a member with children is written as the child `"."`, a member
//! without children as an empty object.

use std::cmp::Ordering;
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// One step of a field path.
#[derive(Clone, Debug)]
pub(crate) enum PathElement {
    /// A field of a map or struct: `f:name`.
    Field(String),
    /// An item of an associative list, identified by its key fields: `k:{"name":"x"}`.
    Key(Box<Canon>),
    /// An item of a set-type list, identified by its value: `v:"x"`.
    Value(Box<Canon>),
    /// An item of a list by position: `i:0` (read, never produced by this module).
    Index(usize),
}

/// A JSON value with its canonical compact text (object keys sorted), which is both its identity
/// (equality) and its `FieldsV1` spelling.
#[derive(Clone, Debug)]
pub(crate) struct Canon {
    pub text: String,
    pub value: Value,
}

impl Canon {
    /// Canonical form of `value`: compact JSON with object keys sorted by name.
    pub(crate) fn new(value: Value) -> Canon {
        let mut text = String::new();
        write_canonical(&value, &mut text);
        Canon { text, value }
    }
}

/// Appends the canonical text of `v` (compact JSON, object keys sorted) to `out`.
pub(crate) fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(k, out);
                out.push(':');
                if let Some(child) = m.get(*k) {
                    write_canonical(child, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::String(s) => write_json_string(s, out),
        Value::Number(n) => {
            // Integers (the usual keys) directly; floats as serde_json spells them.
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else {
                out.push_str(&Value::Number(n.clone()).to_string());
            }
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => out.push_str("null"),
    }
}

/// Appends `s` as a JSON string literal, escaped as serde_json escapes it.
pub(crate) fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

/// A total order on JSON values, so that key and value items sort naturally (9 before 10).
pub(crate) fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => {
            let (fx, fy) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            fx.partial_cmp(&fy)
                .unwrap_or(Ordering::Equal)
                .then_with(|| x.to_string().cmp(&y.to_string()))
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                let o = compare_values(p, q);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            let mut kx: Vec<(&String, &Value)> = x.iter().collect();
            let mut ky: Vec<(&String, &Value)> = y.iter().collect();
            kx.sort_by(|p, q| p.0.cmp(q.0));
            ky.sort_by(|p, q| p.0.cmp(q.0));
            for ((ka, va), (kb, vb)) in kx.iter().zip(&ky) {
                let o = ka.cmp(kb).then_with(|| compare_values(va, vb));
                if o != Ordering::Equal {
                    return o;
                }
            }
            kx.len().cmp(&ky.len())
        }
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

impl PathElement {
    fn rank(&self) -> u8 {
        match self {
            PathElement::Field(_) => 0,
            PathElement::Key(_) => 1,
            PathElement::Value(_) => 2,
            PathElement::Index(_) => 3,
        }
    }

    /// The `FieldsV1` spelling: `f:name`, `k:{...}`, `v:...`, `i:N`.
    pub(crate) fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(c) => format!("k:{}", c.text),
            PathElement::Value(c) => format!("v:{}", c.text),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses one `FieldsV1` object key (not `.`).
    pub(crate) fn decode(s: &str) -> Result<PathElement, String> {
        let (prefix, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("invalid fieldsV1 key {s:?}: no prefix"))?;
        match prefix {
            "f" => Ok(PathElement::Field(rest.to_string())),
            "k" => {
                let v: Value = serde_json::from_str(rest)
                    .map_err(|e| format!("invalid fieldsV1 key {s:?}: {e}"))?;
                if !v.is_object() {
                    return Err(format!("invalid fieldsV1 key {s:?}: not a JSON object"));
                }
                Ok(PathElement::Key(Box::new(Canon::new(v))))
            }
            "v" => {
                let v: Value = serde_json::from_str(rest)
                    .map_err(|e| format!("invalid fieldsV1 key {s:?}: {e}"))?;
                Ok(PathElement::Value(Box::new(Canon::new(v))))
            }
            "i" => rest
                .parse::<usize>()
                .map(PathElement::Index)
                .map_err(|e| format!("invalid fieldsV1 key {s:?}: {e}")),
            _ => Err(format!("invalid fieldsV1 key {s:?}: unknown prefix")),
        }
    }
}

impl PartialEq for PathElement {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PathElement::Field(a), PathElement::Field(b)) => a == b,
            (PathElement::Key(a), PathElement::Key(b)) => a.text == b.text,
            (PathElement::Value(a), PathElement::Value(b)) => a.text == b.text,
            (PathElement::Index(a), PathElement::Index(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for PathElement {}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PathElement {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PathElement::Field(a), PathElement::Field(b)) => a.cmp(b),
            (PathElement::Key(a), PathElement::Key(b))
            | (PathElement::Value(a), PathElement::Value(b)) => {
                if a.text == b.text {
                    Ordering::Equal
                } else {
                    compare_values(&a.value, &b.value).then_with(|| a.text.cmp(&b.text))
                }
            }
            (PathElement::Index(a), PathElement::Index(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

/// Renders a path the way Kubernetes prints it in conflict messages:
/// `.spec.template.spec.containers[name="nginx"].image`, `.metadata.finalizers[="x"]`.
pub(crate) fn path_string(path: &[PathElement]) -> String {
    let mut out = String::new();
    for pe in path {
        match pe {
            PathElement::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            PathElement::Key(c) => {
                out.push('[');
                if let Value::Object(m) = &c.value {
                    let mut keys: Vec<(&String, &Value)> = m.iter().collect();
                    keys.sort_by(|a, b| a.0.cmp(b.0));
                    for (i, (k, v)) in keys.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}={}", Canon::new((*v).clone()).text);
                    }
                }
                out.push(']');
            }
            PathElement::Value(c) => {
                let _ = write!(out, "[={}]", c.text);
            }
            PathElement::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

/// A set of field paths (a trie). Invariant: no stored child is empty (see [`FieldSet::is_empty`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldSet {
    /// Whether the path of this node is itself in the set.
    pub member: bool,
    /// Longer paths, by their next element.
    pub children: Children,
}

/// The children of a [`FieldSet`] node, sorted by path element. A sorted vector rather than a
/// tree map: nodes have few children, and every apply builds and walks several sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Children(Vec<(PathElement, FieldSet)>);

impl Children {
    fn find(&self, pe: &PathElement) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.cmp(pe))
    }

    pub(crate) fn get(&self, pe: &PathElement) -> Option<&FieldSet> {
        self.find(pe)
            .ok()
            .and_then(|i| self.0.get(i))
            .map(|(_, c)| c)
    }

    pub(crate) fn get_mut(&mut self, pe: &PathElement) -> Option<&mut FieldSet> {
        match self.find(pe) {
            Ok(i) => self.0.get_mut(i).map(|(_, c)| c),
            Err(_) => None,
        }
    }

    pub(crate) fn contains_key(&self, pe: &PathElement) -> bool {
        self.find(pe).is_ok()
    }

    /// Inserts or replaces the child at `pe`.
    pub(crate) fn insert(&mut self, pe: PathElement, set: FieldSet) {
        match self.find(&pe) {
            Ok(i) => {
                if let Some(slot) = self.0.get_mut(i) {
                    slot.1 = set;
                }
            }
            Err(i) => self.0.insert(i, (pe, set)),
        }
    }

    pub(crate) fn remove(&mut self, pe: &PathElement) {
        if let Ok(i) = self.find(pe) {
            self.0.remove(i);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Children {
    type Item = (&'a PathElement, &'a FieldSet);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (PathElement, FieldSet)>,
        fn(&'a (PathElement, FieldSet)) -> (&'a PathElement, &'a FieldSet),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl FieldSet {
    /// True when no path at all is in the set.
    pub(crate) fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// Adds every path of `other`.
    pub(crate) fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (pe, oc) in &other.children {
            match self.children.get_mut(pe) {
                Some(c) => c.union_with(oc),
                None => {
                    if !oc.is_empty() {
                        self.children.insert(pe.clone(), oc.clone());
                    }
                }
            }
        }
    }

    /// Removes every path of `other` (member-wise: a removed path's descendants stay unless they
    /// are in `other` too).
    pub(crate) fn subtract(&mut self, other: &FieldSet) {
        if other.member {
            self.member = false;
        }
        for (pe, oc) in &other.children {
            if let Some(c) = self.children.get_mut(pe) {
                c.subtract(oc);
                if c.is_empty() {
                    self.children.remove(pe);
                }
            }
        }
    }

    /// The paths in both sets.
    pub(crate) fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: Children::default(),
        };
        for (pe, c) in &self.children {
            if let Some(oc) = other.children.get(pe) {
                let i = c.intersection(oc);
                if !i.is_empty() {
                    out.children.insert(pe.clone(), i);
                }
            }
        }
        out
    }

    /// Every member path, in set order.
    pub(crate) fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect_paths(&mut prefix, &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        if self.member && !prefix.is_empty() {
            out.push(prefix.clone());
        }
        for (pe, c) in &self.children {
            prefix.push(pe.clone());
            c.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// Parses a `fieldsV1` JSON object.
    pub(crate) fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let Value::Object(m) = v else {
            return Err("fieldsV1 must be a JSON object".to_string());
        };
        let mut set = FieldSet::default();
        for (k, child) in m {
            if k == "." {
                set.member = true;
                continue;
            }
            let pe = PathElement::decode(k)?;
            let mut c = FieldSet::from_fields_v1(child)?;
            // A key with an empty object is a leaf member.
            if c.children.is_empty() {
                c.member = true;
            }
            set.children.insert(pe, c);
        }
        Ok(set)
    }

    /// Whether `v` (a stored `fieldsV1` object) encodes exactly this set, without parsing it:
    /// the cheap check behind a re-apply that changes nothing.
    pub(crate) fn eq_fields_v1(&self, v: &Value) -> bool {
        let mut key = String::new();
        self.eq_fields_v1_with(v, &mut key)
    }

    fn eq_fields_v1_with(&self, v: &Value, key: &mut String) -> bool {
        let Value::Object(m) = v else {
            return false;
        };
        let has_dot = self.member && !self.children.is_empty();
        if m.len() != self.children.0.len() + usize::from(has_dot) {
            return false;
        }
        if has_dot && !m.contains_key(".") {
            return false;
        }
        for (pe, c) in &self.children {
            key.clear();
            match pe {
                PathElement::Field(name) => {
                    key.push_str("f:");
                    key.push_str(name);
                }
                PathElement::Key(c) => {
                    key.push_str("k:");
                    key.push_str(&c.text);
                }
                PathElement::Value(c) => {
                    key.push_str("v:");
                    key.push_str(&c.text);
                }
                PathElement::Index(i) => {
                    let _ = write!(key, "i:{i}");
                }
            }
            let Some(child) = m.get(key.as_str()) else {
                return false;
            };
            if c.children.is_empty() {
                if !c.member || child.as_object().is_none_or(|o| !o.is_empty()) {
                    return false;
                }
            } else if !c.eq_fields_v1_with(child, key) {
                return false;
            }
        }
        true
    }

    /// Encodes the set as a `fieldsV1` JSON object (`.` first, then children in set order).
    pub(crate) fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".to_string(), Value::Object(Map::new()));
        }
        for (pe, c) in &self.children {
            m.insert(pe.encode(), c.to_fields_v1());
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_v1_round_trip_keeps_members_and_keys() {
        let v = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}},
            }}}},
            "f:finalizers": {"v:\"a/b\"": {}},
        });
        let set = FieldSet::from_fields_v1(&v).unwrap();
        assert_eq!(set.to_fields_v1(), v);
        assert!(set.eq_fields_v1(&v));
        let mut fewer = set.clone();
        fewer
            .children
            .remove(&PathElement::Field("finalizers".into()));
        assert!(!fewer.eq_fields_v1(&v));
        let mut without_dot = v.clone();
        without_dot["f:metadata"]["f:labels"]
            .as_object_mut()
            .unwrap()
            .shift_remove(".");
        assert!(!set.eq_fields_v1(&without_dot));
        assert!(!set.eq_fields_v1(&json!({})));
        let paths: Vec<String> = set.paths().iter().map(|p| path_string(p)).collect();
        assert_eq!(
            paths,
            vec![
                ".finalizers[=\"a/b\"]",
                ".metadata.labels",
                ".metadata.labels.app",
                ".spec.template.spec.containers[name=\"web\"]",
                ".spec.template.spec.containers[name=\"web\"].image",
                ".spec.template.spec.containers[name=\"web\"].name",
            ]
        );
    }

    #[test]
    fn keys_sort_numerically_and_print_like_kubernetes() {
        let a = PathElement::Key(Box::new(Canon::new(
            json!({"protocol": "TCP", "containerPort": 9}),
        )));
        let b = PathElement::Key(Box::new(Canon::new(
            json!({"containerPort": 10, "protocol": "TCP"}),
        )));
        assert!(a < b);
        assert_eq!(a.encode(), "k:{\"containerPort\":9,\"protocol\":\"TCP\"}");
        assert_eq!(path_string(&[a]), "[containerPort=9,protocol=\"TCP\"]");
    }

    #[test]
    fn canonical_text_escapes_like_serde_json() {
        for s in [
            "plain",
            "quo\"te",
            "back\\slash",
            "nl\n\t\r\u{8}\u{c}",
            "\u{1}\u{1f}",
            "ünï/<&>",
        ] {
            let mut out = String::new();
            write_json_string(s, &mut out);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
        let v = json!({"b": [1, -3, true, null], "a": {"y": "\"", "x": 7}});
        assert_eq!(
            Canon::new(v).text,
            r#"{"a":{"x":7,"y":"\""},"b":[1,-3,true,null]}"#
        );
        for f in [json!(2.5), json!(1e20), json!(-0.125), json!(u64::MAX)] {
            assert_eq!(Canon::new(f.clone()).text, f.to_string());
        }
    }

    #[test]
    fn bad_fields_v1_is_an_error_not_a_panic() {
        for bad in [
            json!([]),
            json!({"x": {}}),
            json!({"k:[1]": {}}),
            json!({"i:-1": {}}),
            json!({"f:a": 3}),
        ] {
            assert!(FieldSet::from_fields_v1(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_algebra() {
        let a = FieldSet::from_fields_v1(&json!({"f:a": {}, "f:b": {"f:c": {}}})).unwrap();
        let b = FieldSet::from_fields_v1(&json!({"f:b": {"f:c": {}, "f:d": {}}})).unwrap();
        let i = a.intersection(&b);
        assert_eq!(i.to_fields_v1(), json!({"f:b": {"f:c": {}}}));
        let mut u = a.clone();
        u.union_with(&b);
        assert_eq!(
            u.to_fields_v1(),
            json!({"f:a": {}, "f:b": {"f:c": {}, "f:d": {}}})
        );
        u.subtract(&a);
        assert_eq!(u.to_fields_v1(), json!({"f:b": {"f:d": {}}}));
    }
}
