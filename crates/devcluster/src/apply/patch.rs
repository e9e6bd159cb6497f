//! JSON patch (RFC 6902), JSON merge patch (RFC 7386) and Kubernetes' strategic merge patch.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::ApplyError;
use super::fieldset::Canon;
use super::hints::{Node, SmpList};

const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";

/// RFC 6902. A malformed patch document is a `BadPatch`; an operation that cannot apply (missing
/// path, failed `test`) is `Invalid`, as the API server answers 422 for it.
pub(crate) fn json_patch(live: &Value, patch: &Value) -> Result<Value, ApplyError> {
    if !patch.is_array() {
        return Err(ApplyError::BadPatch(
            "json patch must be a JSON array of operations".to_string(),
        ));
    }
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApplyError::BadPatch(format!("invalid json patch: {e}")))?;
    let mut out = live.clone();
    // Applied to a private copy: on error the copy is dropped, so nothing is half-applied.
    json_patch::patch_unsafe(&mut out, &ops.0).map_err(|e| {
        ApplyError::Invalid(format!(
            "the server rejected our request due to an error in our request: {e}"
        ))
    })?;
    Ok(out)
}

/// RFC 7386: objects merge recursively, `null` deletes, everything else replaces.
pub(crate) fn merge_patch(live: &Value, patch: &Value) -> Result<Value, ApplyError> {
    if !patch.is_object() {
        return Err(ApplyError::BadPatch(
            "merge patch must be a JSON object".to_string(),
        ));
    }
    let mut out = live.clone();
    merge_into(&mut out, patch);
    Ok(out)
}

/// RFC 7386 in place; removed fields leave their siblings in order.
fn merge_into(target: &mut Value, patch: &Value) {
    let Value::Object(pm) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(tm) = target {
        for (k, v) in pm {
            if v.is_null() {
                tm.shift_remove(k);
            } else {
                merge_into(tm.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Strategic merge patch with the list strategies in `node`.
pub(crate) fn strategic_merge_patch(
    live: &Value,
    patch: &Value,
    node: &Node,
) -> Result<Value, ApplyError> {
    let Value::Object(pm) = patch else {
        return Err(ApplyError::BadPatch(
            "strategic merge patch must be a JSON object".to_string(),
        ));
    };
    let mut out = match live {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    if smp_map(&mut out, pm, node, "")? {
        return Err(ApplyError::BadPatch(
            "$patch: delete is not allowed on the whole object".to_string(),
        ));
    }
    Ok(Value::Object(out))
}

fn child_path(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

fn bad(path: &str, msg: impl std::fmt::Display) -> ApplyError {
    let at = if path.is_empty() { "." } else { path };
    ApplyError::BadPatch(format!("strategic merge patch at {at}: {msg}"))
}

/// Merges patch map `patch` into `target`. Returns true when the patch asks to delete the map
/// itself (`$patch: delete`).
fn smp_map(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    node: &Node,
    path: &str,
) -> Result<bool, ApplyError> {
    match patch.get("$patch") {
        None => {}
        Some(Value::String(s)) if s == "merge" => {}
        Some(Value::String(s)) if s == "delete" => return Ok(true),
        Some(Value::String(s)) if s == "replace" => {
            let mut fresh = Map::new();
            let rest: Map<String, Value> = patch
                .iter()
                .filter(|(k, _)| k.as_str() != "$patch")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            smp_map(&mut fresh, &rest, node, path)?;
            *target = fresh;
            return Ok(false);
        }
        Some(other) => return Err(bad(path, format_args!("unknown $patch directive {other}"))),
    }

    // Removals from primitive lists go first, so that the same patch can add values back.
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let Value::Array(gone) = v else {
                return Err(bad(path, format_args!("{k} must be a list")));
            };
            if let Some(Value::Array(items)) = target.get_mut(field) {
                items.retain(|i| !gone.contains(i));
            }
        }
    }

    for (k, v) in patch {
        if k.starts_with('$') {
            continue;
        }
        let child = node.field(k);
        match v {
            Value::Null => {
                target.shift_remove(k);
            }
            Value::Object(pm) => {
                let cpath = child_path(path, k);
                let delete = match target.get_mut(k) {
                    Some(Value::Object(tm)) => smp_map(tm, pm, child, &cpath)?,
                    _ => {
                        let mut fresh = Map::new();
                        let delete = smp_map(&mut fresh, pm, child, &cpath)?;
                        if !delete {
                            target.insert(k.clone(), Value::Object(fresh));
                        }
                        delete
                    }
                };
                if delete {
                    target.shift_remove(k);
                }
            }
            Value::Array(pl) => {
                let cpath = child_path(path, k);
                // Taken in place, so the field keeps its position among its siblings.
                let live = match target.get_mut(k).map(std::mem::take) {
                    Some(Value::Array(l)) => l,
                    _ => Vec::new(),
                };
                let merged = match &child.smp {
                    SmpList::Replace => replace_list(pl, child, &cpath)?,
                    SmpList::MergePrimitive => merge_primitive(live, pl, &cpath)?,
                    SmpList::MergeKey(key) => merge_keyed(live, pl, key, child.item(), &cpath)?,
                };
                target.insert(k.clone(), Value::Array(merged));
            }
            scalar => {
                target.insert(k.clone(), scalar.clone());
            }
        }
    }

    for (k, v) in patch {
        if let Some(field) = k.strip_prefix(SET_ELEMENT_ORDER) {
            let Value::Array(order) = v else {
                return Err(bad(path, format_args!("{k} must be a list")));
            };
            let key = match &node.field(field).smp {
                SmpList::MergeKey(key) => Some(key.as_str()),
                _ => None,
            };
            if let Some(Value::Array(items)) = target.get_mut(field) {
                apply_element_order(items, order, key);
            }
        }
    }

    if let Some(retain) = patch.get("$retainKeys") {
        let Value::Array(keep) = retain else {
            return Err(bad(path, "$retainKeys must be a list of field names"));
        };
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        target.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(false)
}

/// A list that is replaced: the patch's items, with any directives stripped from object items.
fn replace_list(pl: &[Value], node: &Node, path: &str) -> Result<Vec<Value>, ApplyError> {
    let item = node.item();
    let mut out = Vec::with_capacity(pl.len());
    for v in pl {
        match v {
            Value::Object(pm) => {
                let mut fresh = Map::new();
                if !smp_map(&mut fresh, pm, item, path)? {
                    out.push(Value::Object(fresh));
                }
            }
            other => out.push(other.clone()),
        }
    }
    Ok(out)
}

fn merge_primitive(
    mut live: Vec<Value>,
    pl: &[Value],
    path: &str,
) -> Result<Vec<Value>, ApplyError> {
    let mut seen: HashMap<String, ()> = live
        .iter()
        .map(|v| (Canon::new(v.clone()).text, ()))
        .collect();
    for v in pl {
        if v.is_object() || v.is_array() {
            return Err(bad(
                path,
                "a list of scalars cannot merge an object or a list",
            ));
        }
        if seen.insert(Canon::new(v.clone()).text, ()).is_none() {
            live.push(v.clone());
        }
    }
    Ok(live)
}

fn merge_keyed(
    live: Vec<Value>,
    pl: &[Value],
    key: &str,
    item: &Node,
    path: &str,
) -> Result<Vec<Value>, ApplyError> {
    let is_replace = |v: &Value| {
        v.get("$patch").and_then(Value::as_str) == Some("replace")
            && v.as_object().is_some_and(|m| m.len() == 1)
    };
    if pl.iter().any(is_replace) {
        // `{"$patch": "replace"}` as an item: the patch's other items become the whole list.
        let mut out = Vec::with_capacity(pl.len());
        for v in pl.iter().filter(|v| !is_replace(v)) {
            match v {
                Value::Object(pm) => {
                    let mut fresh = Map::new();
                    if !smp_map(&mut fresh, pm, item, path)? {
                        out.push(Value::Object(fresh));
                    }
                }
                other => out.push(other.clone()),
            }
        }
        return Ok(out);
    }

    let mut out: Vec<Option<Value>> = live.into_iter().map(Some).collect();
    let mut index: HashMap<String, usize> = HashMap::with_capacity(out.len());
    for (i, v) in out.iter().enumerate() {
        if let Some(k) = v.as_ref().and_then(|v| v.get(key)) {
            index.entry(Canon::new(k.clone()).text).or_insert(i);
        }
    }
    for (n, pv) in pl.iter().enumerate() {
        let Value::Object(pm) = pv else {
            return Err(bad(
                path,
                format_args!("item {n} is not an object, but the list merges by key {key:?}"),
            ));
        };
        let Some(kv) = pm.get(key) else {
            return Err(bad(
                path,
                format_args!("item {n} does not contain declared merge key: {key}"),
            ));
        };
        let canon = Canon::new(kv.clone()).text;
        let ipath = format!("{path}[{key}={canon}]");
        match index.get(&canon).copied() {
            Some(i) => {
                let delete = match out.get_mut(i) {
                    Some(Some(Value::Object(tm))) => smp_map(tm, pm, item, &ipath)?,
                    Some(slot) => {
                        let mut fresh = Map::new();
                        let delete = smp_map(&mut fresh, pm, item, &ipath)?;
                        *slot = Some(Value::Object(fresh));
                        delete
                    }
                    None => false,
                };
                if delete {
                    if let Some(slot) = out.get_mut(i) {
                        *slot = None;
                    }
                    index.remove(&canon);
                }
            }
            None => {
                let mut fresh = Map::new();
                if !smp_map(&mut fresh, pm, item, &ipath)? {
                    index.insert(canon, out.len());
                    out.push(Some(Value::Object(fresh)));
                }
            }
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// `$setElementOrder`: the items named in `order` take the slots those items occupy, in the
/// given order; items the order does not name stay where they are.
fn apply_element_order(items: &mut [Value], order: &[Value], key: Option<&str>) {
    let ident = |v: &Value| -> Option<String> {
        match key {
            Some(k) => v.get(k).map(|kv| Canon::new(kv.clone()).text),
            None => Some(Canon::new(v.clone()).text),
        }
    };
    let rank: HashMap<String, usize> = order
        .iter()
        .enumerate()
        .filter_map(|(i, v)| ident(v).map(|id| (id, i)))
        .collect();
    let mut slots = Vec::new();
    let mut named = Vec::new();
    for (i, v) in items.iter().enumerate() {
        if let Some(r) = ident(v).and_then(|id| rank.get(&id).copied()) {
            slots.push(i);
            named.push((r, v.clone()));
        }
    }
    named.sort_by_key(|(r, _)| *r);
    for (slot, (_, v)) in slots.into_iter().zip(named) {
        if let Some(target) = items.get_mut(slot) {
            *target = v;
        }
    }
}
