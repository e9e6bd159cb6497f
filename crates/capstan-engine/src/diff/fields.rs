//! Decoding of server-side apply field sets (`managedFields[].fieldsV1`).
//!
//! The encoding is a JSON object whose keys name path elements: `f:<name>` a map field,
//! `k:<json object>` an associative-list item identified by its key fields, `v:<json>` a set item,
//! `i:<n>` a list index, and `.` the element itself. Values are nested sets of the same shape.

use serde_json::{Map, Value};

/// A decoded field set: which fields below one position a manager owns.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSet {
    /// `f:<name>` children.
    pub fields: Vec<(String, FieldSet)>,
    /// `k:{...}` children: the key fields of the list item (canonical scalars) and its set.
    pub keys: Vec<(Vec<(String, String)>, FieldSet)>,
    /// `v:<json>` children (set items).
    pub values: Vec<(Value, FieldSet)>,
    /// `i:<n>` children.
    pub indices: Vec<(usize, FieldSet)>,
}

/// A `fieldsV1` entry that does not follow the encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldsError(pub String);

impl FieldSet {
    /// True when no child is listed: the whole value at this position is owned.
    pub fn is_leaf(&self) -> bool {
        self.fields.is_empty()
            && self.keys.is_empty()
            && self.values.is_empty()
            && self.indices.is_empty()
    }

    /// Decodes one `fieldsV1` object.
    pub fn decode(v: &Value) -> Result<FieldSet, FieldsError> {
        let map = v
            .as_object()
            .ok_or_else(|| FieldsError("a field set must be a JSON object".into()))?;
        Self::decode_map(map)
    }

    fn decode_map(map: &Map<String, Value>) -> Result<FieldSet, FieldsError> {
        let mut set = FieldSet::default();
        for (k, child) in map {
            if k == "." {
                continue;
            }
            let sub = match child.as_object() {
                Some(m) => Self::decode_map(m)?,
                None => return Err(FieldsError(format!("entry {k:?} is not an object"))),
            };
            if let Some(name) = k.strip_prefix("f:") {
                set.fields.push((name.to_string(), sub));
            } else if let Some(json) = k.strip_prefix("k:") {
                let key: Map<String, Value> = serde_json::from_str(json).map_err(|e| {
                    FieldsError(format!("list key {json:?} is not a JSON object: {e}"))
                })?;
                let mut pairs: Vec<(String, String)> = key
                    .iter()
                    .map(|(f, v)| (f.clone(), canonical_scalar(v)))
                    .collect();
                pairs.sort();
                set.keys.push((pairs, sub));
            } else if let Some(json) = k.strip_prefix("v:") {
                let value: Value = serde_json::from_str(json)
                    .map_err(|e| FieldsError(format!("set value {json:?} is not JSON: {e}")))?;
                set.values.push((value, sub));
            } else if let Some(idx) = k.strip_prefix("i:") {
                let i = idx
                    .parse()
                    .map_err(|_| FieldsError(format!("list index {idx:?} is not a number")))?;
                set.indices.push((i, sub));
            } else {
                return Err(FieldsError(format!("unknown path element {k:?}")));
            }
        }
        Ok(set)
    }

    /// The union of the field sets of the `metadata.managedFields` entries of `obj` that `keep`
    /// selects; `None` when no selected entry could be read. An entry whose `fieldsV1` cannot
    /// be decoded is skipped rather than failing the comparison: the API server validated
    /// these sets, so one it could not have produced only loses removal detection (or the
    /// ignoring) for that entry.
    pub fn from_managed_fields(obj: &Value, keep: impl Fn(&Value) -> bool) -> Option<FieldSet> {
        let entries = obj.pointer("/metadata/managedFields")?.as_array()?;
        let mut set: Option<FieldSet> = None;
        for entry in entries.iter().filter(|e| keep(e)) {
            let Some(decoded) = entry.get("fieldsV1").and_then(|f| FieldSet::decode(f).ok()) else {
                continue;
            };
            match set.as_mut() {
                Some(s) => s.merge(decoded),
                None => set = Some(decoded),
            }
        }
        set
    }

    /// Adds every path of `other` to `self` (a manager may own fields through several entries).
    pub fn merge(&mut self, other: FieldSet) {
        for (name, sub) in other.fields {
            match self.fields.iter_mut().find(|(n, _)| *n == name) {
                Some((_, mine)) => mine.merge(sub),
                None => self.fields.push((name, sub)),
            }
        }
        for (key, sub) in other.keys {
            match self.keys.iter_mut().find(|(k, _)| *k == key) {
                Some((_, mine)) => mine.merge(sub),
                None => self.keys.push((key, sub)),
            }
        }
        for (value, sub) in other.values {
            match self.values.iter_mut().find(|(v, _)| *v == value) {
                Some((_, mine)) => mine.merge(sub),
                None => self.values.push((value, sub)),
            }
        }
        for (i, sub) in other.indices {
            match self.indices.iter_mut().find(|(n, _)| *n == i) {
                Some((_, mine)) => mine.merge(sub),
                None => self.indices.push((i, sub)),
            }
        }
    }

    /// The set below map field `name`.
    pub fn field(&self, name: &str) -> Option<&FieldSet> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    /// The `k:` child whose key fields all match `item` (an element of an associative list).
    pub fn key_for(&self, item: &Value) -> Option<&FieldSet> {
        let obj = item.as_object()?;
        self.keys
            .iter()
            .find(|(pairs, _)| key_matches(pairs, obj))
            .map(|(_, s)| s)
    }

    /// The `v:` child equal to `item` (an element of a set-like list).
    pub fn value_for(&self, item: &Value) -> Option<&FieldSet> {
        self.values.iter().find(|(v, _)| v == item).map(|(_, s)| s)
    }
}

/// True when every key field of a `k:` element has the same (canonical) value in `obj`.
pub(crate) fn key_matches(pairs: &[(String, String)], obj: &Map<String, Value>) -> bool {
    pairs
        .iter()
        .all(|(f, v)| obj.get(f).is_some_and(|x| canonical_scalar(x) == *v))
}

/// A scalar as a comparable string: strings as they are, everything else as JSON.
pub(crate) fn canonical_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Keeps only the parts of `value` that `set` covers (what a manager owns of it).
pub(crate) fn restrict(value: &Value, set: &FieldSet) -> Value {
    if set.is_leaf() {
        return value.clone();
    }
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (name, sub) in &set.fields {
                if let Some(v) = map.get(name) {
                    out.insert(name.clone(), restrict(v, sub));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                if let Some(sub) = set.key_for(item) {
                    out.push(restrict(item, sub));
                } else if let Some(sub) = set.value_for(item) {
                    out.push(restrict(item, sub));
                } else if let Some((_, sub)) = set.indices.iter().find(|(n, _)| *n == i) {
                    out.push(restrict(item, sub));
                }
            }
            Value::Array(out)
        }
        other => other.clone(),
    }
}

/// Removes from `value` every leaf path that `set` lists (fields owned by an ignored manager).
pub(crate) fn remove_owned(value: &mut Value, set: &FieldSet) {
    remove_owned_except(value, set, &[]);
}

/// [`remove_owned`], keeping the fields named in `keep` (the key fields of an associative-list
/// item, without which the item could no longer be matched with its counterpart).
fn remove_owned_except(value: &mut Value, set: &FieldSet, keep: &[(String, String)]) {
    match value {
        Value::Object(map) => {
            for (name, sub) in &set.fields {
                if keep.iter().any(|(k, _)| k == name) {
                    continue;
                }
                if sub.is_leaf() {
                    map.shift_remove(name);
                } else if let Some(child) = map.get_mut(name) {
                    remove_owned(child, sub);
                }
            }
        }
        Value::Array(items) => {
            let mut drop = vec![false; items.len()];
            for (i, item) in items.iter_mut().enumerate() {
                let keyed = item
                    .as_object()
                    .and_then(|obj| set.keys.iter().find(|(pairs, _)| key_matches(pairs, obj)));
                let (sub, keep): (Option<&FieldSet>, &[(String, String)]) = match keyed {
                    Some((pairs, sub)) => (Some(sub), pairs),
                    None => (
                        set.value_for(item)
                            .or_else(|| set.indices.iter().find(|(n, _)| *n == i).map(|(_, s)| s)),
                        &[],
                    ),
                };
                if let Some(sub) = sub {
                    if sub.is_leaf() {
                        drop[i] = true;
                    } else {
                        remove_owned_except(item, sub, keep);
                    }
                }
            }
            let mut i = 0;
            items.retain(|_| {
                let keep = !drop[i];
                i += 1;
                keep
            });
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_every_path_element_and_restricts_a_value() {
        let set = FieldSet::decode(&json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}}},
                       "f:finalizers": {"v:\"a\"": {}}, "f:args": {"i:0": {}}}
        }))
        .unwrap();
        let spec = set.field("spec").unwrap();
        let containers = spec.field("containers").unwrap();
        assert_eq!(containers.keys.len(), 1);
        let live = json!({"name": "web", "image": "nginx", "imagePullPolicy": "Always"});
        let owned = containers.key_for(&live).unwrap();
        assert_eq!(restrict(&live, owned), json!({"image": "nginx"}));
        assert!(containers.key_for(&json!({"name": "other"})).is_none());
        assert!(
            spec.field("finalizers")
                .unwrap()
                .value_for(&json!("a"))
                .is_some()
        );
        assert_eq!(spec.field("args").unwrap().indices[0].0, 0);
    }

    #[test]
    fn rejects_malformed_sets() {
        assert!(FieldSet::decode(&json!({"x:foo": {}})).is_err());
        assert!(FieldSet::decode(&json!({"k:notjson": {}})).is_err());
        assert!(FieldSet::decode(&json!({"f:a": 1})).is_err());
        assert!(FieldSet::decode(&json!([])).is_err());
    }

    #[test]
    fn removes_owned_leaves_only() {
        let set = FieldSet::decode(&json!({"f:spec": {"f:replicas": {},
            "f:containers": {"k:{\"name\":\"a\"}": {"f:name": {}, "f:image": {}}}}}))
        .unwrap();
        let mut v = json!({"spec": {"replicas": 3, "paused": false,
            "containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        remove_owned(&mut v, &set);
        assert_eq!(
            v,
            json!({"spec": {"paused": false,
            "containers": [{"name": "a"}, {"name": "b", "image": "y"}]}})
        );
    }
}
