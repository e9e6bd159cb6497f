//! Server-side apply and Update tracking: merging an applied configuration, field sets,
//! pruning fields an applier stopped applying, conflicts, and `metadata.managedFields`.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::fieldset::{
    Canon, FieldSet, PathElement, path_string, write_canonical, write_json_string,
};
use super::hints::{ListType, Node};
use super::{ApplyError, FieldConflict};

/// Where a map sits, for the metadata fields that are never owned by anyone.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Meta,
    Other,
}

impl Level {
    fn strips(self, key: &str) -> bool {
        match self {
            Level::Root => matches!(key, "apiVersion" | "kind"),
            Level::Meta => matches!(
                key,
                "name"
                    | "namespace"
                    | "uid"
                    | "resourceVersion"
                    | "generation"
                    | "creationTimestamp"
                    | "managedFields"
                    | "selfLink"
                    | "deletionTimestamp"
                    | "deletionGracePeriodSeconds"
            ),
            Level::Other => false,
        }
    }

    fn child(self, key: &str) -> Level {
        if self == Level::Root && key == "metadata" {
            Level::Meta
        } else {
            Level::Other
        }
    }
}

/// The identity of a list item under `list`, or an explanation of why it has none.
fn item_element(list: &ListType, item: &Value) -> Result<Option<PathElement>, String> {
    match list {
        ListType::Atomic => Ok(None),
        ListType::Set => {
            if item.is_object() || item.is_array() {
                return Err("a set-type list may only hold scalars".to_string());
            }
            Ok(Some(PathElement::Value(Box::new(Canon::new(item.clone())))))
        }
        ListType::Map(keys) => {
            let Value::Object(m) = item else {
                return Err("associative list items must be objects".to_string());
            };
            let mut key = Map::new();
            for (k, default) in keys {
                match m.get(k).filter(|v| !v.is_null()).or(default.as_ref()) {
                    Some(v) => {
                        key.insert(k.clone(), v.clone());
                    }
                    None => {
                        return Err(format!(
                            "associative list with keys has an element that omits key field {k:?}"
                        ));
                    }
                }
            }
            Ok(Some(PathElement::Key(Box::new(Canon::new(Value::Object(
                key,
            ))))))
        }
    }
}

/// The fields an applied configuration sets: what its applier owns.
pub(crate) fn field_set_of(
    applied: &Map<String, Value>,
    root: &Node,
) -> Result<FieldSet, ApplyError> {
    let mut set = FieldSet::default();
    collect_map(applied, root, Level::Root, &mut set, &|| String::new())?;
    Ok(set)
}

fn collect_map(
    m: &Map<String, Value>,
    node: &Node,
    level: Level,
    out: &mut FieldSet,
    path: &dyn Fn() -> String,
) -> Result<(), ApplyError> {
    for (k, v) in m {
        if level.strips(k) {
            continue;
        }
        let child = node.field(k);
        let cpath = || format!("{}.{k}", path());
        let mut cs = FieldSet::default();
        match v {
            Value::Object(cm) if !cm.is_empty() && !child.atomic => {
                collect_map(cm, child, level.child(k), &mut cs, &cpath)?;
                // Entries of a map with arbitrary keys are members themselves.
                if !node.is_named_field(k) {
                    cs.member = true;
                }
            }
            Value::Array(items) if child.list != ListType::Atomic => {
                collect_list(items, child, &mut cs, &cpath)?;
            }
            _ => cs.member = true,
        }
        if level == Level::Root && k == "metadata" {
            cs.member = false;
        }
        if !cs.is_empty() {
            out.children.insert(PathElement::Field(k.clone()), cs);
        }
    }
    Ok(())
}

fn collect_list(
    items: &[Value],
    node: &Node,
    out: &mut FieldSet,
    path: &dyn Fn() -> String,
) -> Result<(), ApplyError> {
    let item_node = node.item();
    for (i, item) in items.iter().enumerate() {
        let pe = match item_element(&node.list, item) {
            Ok(Some(pe)) => pe,
            Ok(None) => continue,
            Err(msg) => {
                return Err(ApplyError::Invalid(format!(
                    "{}: element {i}: {msg}",
                    path()
                )));
            }
        };
        if out.children.contains_key(&pe) {
            return Err(ApplyError::Invalid(format!(
                "{}: duplicate entries for key {}",
                path(),
                path_string(std::slice::from_ref(&pe))
            )));
        }
        let mut cs = FieldSet {
            member: true,
            ..FieldSet::default()
        };
        if let Value::Object(m) = item
            && !item_node.atomic
        {
            let ipath = || format!("{}{}", path(), path_string(std::slice::from_ref(&pe)));
            collect_map(m, item_node, Level::Other, &mut cs, &ipath)?;
        }
        out.children.insert(pe, cs);
    }
    Ok(())
}

/// A copy of an applied value without `null` map entries (nulls mean "absent" in the result).
fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), clean(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(clean).collect()),
        other => other.clone(),
    }
}

/// Metadata the API server sets and keeps: an applied configuration never overrides a live
/// value of these (kubectl sends `creationTimestamp: null` from `--dry-run -o yaml` output).
fn server_owned_meta(key: &str) -> bool {
    matches!(
        key,
        "uid"
            | "creationTimestamp"
            | "generation"
            | "managedFields"
            | "selfLink"
            | "deletionTimestamp"
            | "deletionGracePeriodSeconds"
    )
}

/// Merges the applied value `rhs` into the live value `lhs`: granular maps merge, associative
/// and set lists merge by identity (applied order first, live-only items kept in place), all
/// else is replaced by the applied value. An applied `null` removes the field.
fn merge(lhs: Value, rhs: &Value, node: &Node, level: Level) -> Value {
    match (lhs, rhs) {
        (Value::Object(mut l), Value::Object(r)) if !node.atomic => {
            for (k, rv) in r {
                if level == Level::Meta
                    && (server_owned_meta(k) || rv.is_null())
                    && (l.contains_key(k) || rv.is_null())
                {
                    continue;
                }
                if rv.is_null() {
                    l.shift_remove(k);
                    continue;
                }
                let child = node.field(k);
                match l.get_mut(k) {
                    Some(slot) => {
                        let old = std::mem::take(slot);
                        *slot = merge(old, rv, child, level.child(k));
                    }
                    None => {
                        l.insert(k.clone(), clean(rv));
                    }
                }
            }
            Value::Object(l)
        }
        (Value::Array(l), Value::Array(r)) if node.list != ListType::Atomic => {
            merge_list(l, r, node)
        }
        (_, r) => clean(r),
    }
}

/// Whether merging `applied` into `live` (see [`merge`]) would give `live` back unchanged.
/// Allocation-light: this is the whole cost of a re-apply that changes nothing.
fn subsumes(live: &Value, applied: &Value, node: &Node, level: Level) -> bool {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) if !node.atomic => a.iter().all(|(k, av)| {
            if level == Level::Meta
                && (server_owned_meta(k) || av.is_null())
                && (l.contains_key(k) || av.is_null())
            {
                return true;
            }
            match (l.get(k), av) {
                (None, Value::Null) => true,
                (Some(_), Value::Null) | (None, _) => false,
                (Some(lv), av) => subsumes(lv, av, node.field(k), level.child(k)),
            }
        }),
        (Value::Array(l), Value::Array(a)) if node.list != ListType::Atomic => {
            let mut index: HashMap<String, usize> = HashMap::with_capacity(l.len());
            for (i, lv) in l.iter().enumerate() {
                let Some(id) = ident(&node.list, lv) else {
                    return false;
                };
                if index.insert(id, i).is_some() {
                    return false;
                }
            }
            let mut previous: Option<usize> = None;
            for av in a {
                let Some(&pos) = ident(&node.list, av).and_then(|id| index.get(&id)) else {
                    return false;
                };
                // Merging puts applied items in applied order: a different order is a change.
                if previous.is_some_and(|p| pos <= p) {
                    return false;
                }
                match l.get(pos) {
                    Some(lv) if subsumes(lv, av, node.item(), Level::Other) => {}
                    _ => return false,
                }
                previous = Some(pos);
            }
            true
        }
        _ => eq_ignoring_nulls(live, applied),
    }
}

/// `live == clean(applied)` without building the cleaned copy.
fn eq_ignoring_nulls(live: &Value, applied: &Value) -> bool {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            let mut present = 0;
            for (k, av) in a {
                if av.is_null() {
                    continue;
                }
                present += 1;
                match l.get(k) {
                    Some(lv) if eq_ignoring_nulls(lv, av) => {}
                    _ => return false,
                }
            }
            present == l.len()
        }
        (Value::Array(l), Value::Array(a)) => {
            l.len() == a.len() && l.iter().zip(a).all(|(lv, av)| eq_ignoring_nulls(lv, av))
        }
        _ => live == applied,
    }
}

/// The canonical identity text of a list item (what follows `k:` or `v:` in FieldsV1), built
/// without intermediate values: this runs for every list item of every apply.
fn ident(list: &ListType, item: &Value) -> Option<String> {
    match list {
        ListType::Atomic => None,
        ListType::Set => {
            if item.is_object() || item.is_array() {
                return None;
            }
            let mut s = String::new();
            write_canonical(item, &mut s);
            Some(s)
        }
        ListType::Map(keys) => {
            let m = item.as_object()?;
            let mut s = String::with_capacity(32);
            s.push('{');
            // Keys are sorted by name (ListType invariant), as canonical text requires.
            for (i, (k, default)) in keys.iter().enumerate() {
                let v = m.get(k).filter(|v| !v.is_null()).or(default.as_ref())?;
                if i > 0 {
                    s.push(',');
                }
                write_json_string(k, &mut s);
                s.push(':');
                write_canonical(v, &mut s);
            }
            s.push('}');
            Some(s)
        }
    }
}

/// Merges two associative or set lists. Both are walked together: an item in both is merged
/// where the applied list has it, live-only items stay where they are relative to it, and
/// applied-only items come in applied order after the live items that precede them (a second
/// applier's new container goes after the existing ones).
fn merge_list(l: Vec<Value>, r: &[Value], node: &Node) -> Value {
    let item_node = node.item();
    let l_ids: Vec<Option<String>> = l.iter().map(|v| ident(&node.list, v)).collect();
    let r_ids: Vec<Option<String>> = r.iter().map(|v| ident(&node.list, v)).collect();
    let r_index: HashMap<&str, usize> = r_ids
        .iter()
        .enumerate()
        .filter_map(|(i, id)| id.as_deref().map(|s| (s, i)))
        .collect();
    let l_index: HashMap<&str, usize> = l_ids
        .iter()
        .enumerate()
        .filter_map(|(i, id)| id.as_deref().map(|s| (s, i)))
        .collect();
    // Items of both lists, in applied order: the next one due is `shared[next]`.
    let shared: Vec<&str> = r_ids
        .iter()
        .filter_map(|id| id.as_deref())
        .filter(|id| l_index.contains_key(id))
        .collect();
    let mut next = 0;
    let mut emitted: HashMap<&str, ()> = HashMap::with_capacity(r.len());
    let mut lhs: Vec<Option<Value>> = l.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(lhs.len().max(r.len()));
    let (mut li, mut ri) = (0, 0);
    let l_len = lhs.len();
    while li < l_len || ri < r.len() {
        let l_id = l_ids.get(li).and_then(|id| id.as_deref());
        let r_id = r_ids.get(ri).and_then(|id| id.as_deref());
        let l_in_rhs = l_id.is_some_and(|id| r_index.contains_key(id));
        if li < l_len && ri < r.len() {
            if l_id.is_some() && l_id == r_id {
                if let (Some(lv), Some(rv)) = (lhs.get_mut(li).and_then(Option::take), r.get(ri)) {
                    out.push(merge(lv, rv, item_node, Level::Other));
                }
                if let Some(id) = r_id {
                    emitted.insert(id, ());
                }
                li += 1;
                ri += 1;
                next += 1;
                continue;
            }
            // A shared item the applied list wants later: it is merged at its turn.
            if l_in_rhs && shared.get(next).is_some_and(|s| Some(*s) != l_id) {
                li += 1;
                continue;
            }
        }
        if li < l_len {
            if !l_in_rhs {
                if let Some(lv) = lhs.get_mut(li).and_then(Option::take) {
                    out.push(lv);
                }
                li += 1;
                continue;
            }
            if l_id.is_some_and(|id| emitted.contains_key(id)) {
                li += 1;
                continue;
            }
        }
        if let Some(rv) = r.get(ri) {
            let matched = r_id
                .and_then(|id| l_index.get(id))
                .and_then(|&j| lhs.get_mut(j))
                .and_then(Option::take);
            out.push(match matched {
                Some(lv) => merge(lv, rv, item_node, Level::Other),
                None => clean(rv),
            });
            if let Some(id) = r_id {
                emitted.insert(id, ());
                if shared.get(next) == Some(&id) {
                    next += 1;
                }
            }
            ri += 1;
        } else {
            // Only a shared live item whose applied turn already passed can be left here.
            li += 1;
        }
    }
    Value::Array(out)
}

/// Removes from `v` the fields in `last` (what the applier owned before) that nobody owns any
/// more (`owned`: the applier's new set and every other manager's set, at this position). A
/// struct field counts as owned/applied when anything below it is; a removed path takes its
/// whole subtree.
fn prune(v: &mut Value, node: &Node, last: &FieldSet, owned: &[&FieldSet], root: bool) {
    match v {
        Value::Object(m) => {
            for (pe, lc) in &last.children {
                let PathElement::Field(k) = pe else { continue };
                let oc: Vec<&FieldSet> = owned.iter().filter_map(|o| o.children.get(pe)).collect();
                // `metadata` is never removed as a whole: name, uid and the like live there.
                let named = node.is_named_field(k) && !(root && k == "metadata");
                let in_last = lc.member || (named && !lc.children.is_empty());
                let in_owned = oc
                    .iter()
                    .any(|o| o.member || (named && !o.children.is_empty()));
                if in_last && !in_owned {
                    m.shift_remove(k);
                } else if !lc.children.is_empty()
                    && let Some(cv) = m.get_mut(k)
                {
                    prune(cv, node.field(k), lc, &oc, false);
                }
            }
        }
        Value::Array(items) if node.list != ListType::Atomic => {
            let index: HashMap<String, usize> = items
                .iter()
                .enumerate()
                .filter_map(|(i, it)| ident(&node.list, it).map(|id| (id, i)))
                .collect();
            let mut remove = vec![false; items.len()];
            for (pe, lc) in &last.children {
                let (PathElement::Key(c) | PathElement::Value(c)) = pe else {
                    continue;
                };
                let Some(&i) = index.get(&c.text) else {
                    continue;
                };
                let oc: Vec<&FieldSet> = owned.iter().filter_map(|o| o.children.get(pe)).collect();
                if lc.member && !oc.iter().any(|o| o.member) {
                    if let Some(flag) = remove.get_mut(i) {
                        *flag = true;
                    }
                } else if !lc.children.is_empty()
                    && let Some(item) = items.get_mut(i)
                {
                    prune(item, node.item(), lc, &oc, false);
                }
            }
            let mut flags = remove.into_iter();
            items.retain(|_| !flags.next().unwrap_or(false));
        }
        _ => {}
    }
}

/// Paths added or modified (`changed`) and removed (`removed`, with their whole subtrees)
/// between two values at the same position.
fn diff(
    l: &Value,
    r: &Value,
    node: &Node,
    level: Level,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    match (l, r) {
        (Value::Object(lm), Value::Object(rm))
            if !(node.atomic || lm.is_empty() && rm.is_empty()) =>
        {
            for (k, rv) in rm {
                if level.strips(k) {
                    continue;
                }
                let child = node.field(k);
                let mut c = FieldSet::default();
                let mut d = FieldSet::default();
                match lm.get(k) {
                    Some(lv) => diff(lv, rv, child, level.child(k), &mut c, &mut d),
                    None => added(rv, child, level.child(k), &mut c),
                }
                if level == Level::Root && k == "metadata" {
                    c.member = false;
                    d.member = false;
                }
                insert_nonempty(changed, k, c);
                insert_nonempty(removed, k, d);
            }
            for (k, lv) in lm {
                if level.strips(k) || rm.contains_key(k) {
                    continue;
                }
                let mut d = FieldSet::default();
                removed_all(lv, node.field(k), level.child(k), &mut d);
                insert_nonempty(removed, k, d);
            }
        }
        (Value::Array(la), Value::Array(ra)) if node.list != ListType::Atomic => {
            diff_lists(la, ra, node, changed, removed);
        }
        _ => {
            if l != r {
                changed.member = true;
            }
        }
    }
}

fn insert_nonempty(set: &mut FieldSet, k: &str, child: FieldSet) {
    if !child.is_empty() {
        set.children
            .insert(PathElement::Field(k.to_string()), child);
    }
}

fn diff_lists(
    la: &[Value],
    ra: &[Value],
    node: &Node,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    let mut l_items: HashMap<String, &Value> = HashMap::with_capacity(la.len());
    let mut r_items: Vec<(String, &Value)> = Vec::with_capacity(ra.len());
    for v in la {
        match ident(&node.list, v) {
            Some(id) => {
                l_items.insert(id, v);
            }
            None => {
                // A live list that does not fit its schema is compared as one value.
                if la != ra {
                    changed.member = true;
                }
                return;
            }
        }
    }
    for v in ra {
        match ident(&node.list, v) {
            Some(id) => r_items.push((id, v)),
            None => {
                if la != ra {
                    changed.member = true;
                }
                return;
            }
        }
    }
    let item_node = node.item();
    for (id, rv) in r_items {
        let mut c = FieldSet::default();
        let mut d = FieldSet::default();
        match l_items.remove(&id) {
            Some(lv) => match (lv, rv) {
                (Value::Object(_), Value::Object(_)) => {
                    diff(lv, rv, item_node, Level::Other, &mut c, &mut d);
                }
                _ => {
                    if lv != rv {
                        c.member = true;
                    }
                }
            },
            None => {
                c.member = true;
                if let Value::Object(m) = rv
                    && !item_node.atomic
                {
                    added_fields(m, item_node, Level::Other, &mut c);
                }
            }
        }
        if c.is_empty() && d.is_empty() {
            continue;
        }
        let Ok(Some(pe)) = item_element(&node.list, rv) else {
            continue;
        };
        if !c.is_empty() {
            changed.children.insert(pe.clone(), c);
        }
        if !d.is_empty() {
            removed.children.insert(pe, d);
        }
    }
    for lv in l_items.into_values() {
        let Ok(Some(pe)) = item_element(&node.list, lv) else {
            continue;
        };
        let mut d = FieldSet {
            member: true,
            ..FieldSet::default()
        };
        if let Value::Object(m) = lv
            && !item_node.atomic
        {
            for (k, cv) in m {
                let mut dd = FieldSet::default();
                removed_all(cv, item_node.field(k), Level::Other, &mut dd);
                insert_nonempty(&mut d, k, dd);
            }
        }
        removed.children.insert(pe, d);
    }
}

/// Marks a newly present value: the path itself (a newly present granular map too, unless the
/// API server always serializes it) and everything below it.
fn added(v: &Value, node: &Node, level: Level, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() && !node.atomic => {
            if !node.implicit && level != Level::Meta {
                out.member = true;
            }
            added_fields(m, node, level, out);
        }
        Value::Array(items) if node.list != ListType::Atomic && !items.is_empty() => {
            let item_node = node.item();
            let mut elems = Vec::with_capacity(items.len());
            for it in items {
                match item_element(&node.list, it) {
                    Ok(Some(pe)) => elems.push((pe, it)),
                    _ => {
                        out.member = true;
                        return;
                    }
                }
            }
            // A list that appears owns its own path too (`f:env: {".": {}, …}`), as an
            // updater's record shows it.
            if !node.implicit {
                out.member = true;
            }
            for (pe, it) in elems {
                let mut c = FieldSet {
                    member: true,
                    ..FieldSet::default()
                };
                if let Value::Object(m) = it
                    && !item_node.atomic
                {
                    added_fields(m, item_node, Level::Other, &mut c);
                }
                out.children.insert(pe, c);
            }
        }
        _ => out.member = true,
    }
}

fn added_fields(m: &Map<String, Value>, node: &Node, level: Level, out: &mut FieldSet) {
    for (k, cv) in m {
        if level.strips(k) {
            continue;
        }
        let mut c = FieldSet::default();
        added(cv, node.field(k), level.child(k), &mut c);
        insert_nonempty(out, k, c);
    }
}

/// Marks a value that disappeared, with its whole subtree.
fn removed_all(v: &Value, node: &Node, level: Level, out: &mut FieldSet) {
    let mut scratch = FieldSet::default();
    added(v, node, level, &mut scratch);
    scratch.member = level != Level::Meta;
    out.union_with(&scratch);
}

/// One `metadata.managedFields` entry.
#[derive(Clone, Debug)]
struct Entry<'a> {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    /// The owned fields; valid once `unparsed` is `None` (see [`Entry::load`]).
    set: FieldSet,
    /// The stored `fieldsV1`, parsed only when needed: a re-apply that changes nothing never
    /// needs the other managers' sets.
    unparsed: Option<&'a Value>,
    /// The entry as stored, reused verbatim while the entry does not change.
    raw: Option<&'a Value>,
}

impl<'a> Entry<'a> {
    fn parse(v: &'a Value) -> Result<Entry<'a>, String> {
        let Value::Object(m) = v else {
            return Err("managedFields entry is not an object".to_string());
        };
        let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(Entry {
            manager: s("manager").unwrap_or_default(),
            operation: s("operation").unwrap_or_default(),
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time"),
            subresource: s("subresource").filter(|s| !s.is_empty()),
            set: FieldSet::default(),
            unparsed: m.get("fieldsV1"),
            raw: Some(v),
        })
    }

    /// Parses the stored field set. A set that does not parse (the store only holds what this
    /// module wrote, so this means corruption) leaves the entry empty, and it is dropped at
    /// write time rather than failing every later write to the object.
    fn load(&mut self) {
        if let Some(f) = self.unparsed.take() {
            match FieldSet::from_fields_v1(f) {
                Ok(set) => self.set = set,
                Err(_) => {
                    self.set = FieldSet::default();
                    self.raw = None;
                }
            }
        }
    }

    fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }

    fn to_json(&self) -> Value {
        if let Some(raw) = self.raw {
            return raw.clone();
        }
        let mut m = Map::new();
        m.insert("manager".into(), Value::String(self.manager.clone()));
        m.insert("operation".into(), Value::String(self.operation.clone()));
        m.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        if let Some(t) = &self.time {
            m.insert("time".into(), Value::String(t.clone()));
        }
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if let Some(sr) = &self.subresource {
            m.insert("subresource".into(), Value::String(sr.clone()));
        }
        Value::Object(m)
    }

    /// Removes `paths` from this entry's set; true when something was removed.
    fn drop_paths(&mut self, paths: &FieldSet) -> bool {
        let overlap = self.set.intersection(paths);
        if overlap.is_empty() {
            return false;
        }
        self.set.subtract(&overlap);
        self.raw = None;
        true
    }
}

/// Reads stored managedFields (their field sets stay unparsed until [`Entry::load`]). Entries
/// that are not objects are skipped: the store only holds what this module wrote.
fn parse_entries(v: Option<&Value>) -> Vec<Entry<'_>> {
    let Some(Value::Array(items)) = v else {
        return Vec::new();
    };
    items.iter().filter_map(|e| Entry::parse(e).ok()).collect()
}

fn load_all(entries: &mut [Entry<'_>]) {
    for e in entries {
        e.load();
    }
}

fn write_entries(obj: &mut Value, entries: &[Entry<'_>]) {
    let Value::Object(root) = obj else { return };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    if let Value::Object(meta) = meta {
        if entries.is_empty() {
            meta.shift_remove("managedFields");
        } else {
            meta.insert(
                "managedFields".into(),
                Value::Array(entries.iter().map(Entry::to_json).collect()),
            );
        }
    }
}

/// A copy of an object without `metadata.managedFields` (the largest part of a stored object,
/// and rewritten anyway).
fn clone_without_managed_fields(v: &Value) -> Value {
    let Value::Object(m) = v else {
        return v.clone();
    };
    Value::Object(
        m.iter()
            .map(|(k, v)| match v {
                Value::Object(meta) if k == "metadata" => (
                    k.clone(),
                    Value::Object(
                        meta.iter()
                            .filter(|(mk, _)| mk.as_str() != "managedFields")
                            .map(|(mk, mv)| (mk.clone(), mv.clone()))
                            .collect(),
                    ),
                ),
                _ => (k.clone(), v.clone()),
            })
            .collect(),
    )
}

fn managed_fields(v: &Value) -> Option<&Value> {
    v.get("metadata").and_then(|m| m.get("managedFields"))
}

fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Server-side apply; see [`super::server_side_apply`].
pub(crate) fn apply(
    root: &Node,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    subresource: Option<&str>,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    apply_with(root, live, applied, manager, subresource, force, now, true)
}

/// [`apply`], with the no-op shortcut switchable so tests can check it agrees with the full
/// computation.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply_with(
    root: &Node,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    subresource: Option<&str>,
    force: bool,
    now: &str,
    shortcut: bool,
) -> Result<Value, ApplyError> {
    let Value::Object(am) = applied else {
        return Err(ApplyError::BadPatch(
            "apply patch must be a JSON or YAML object".to_string(),
        ));
    };
    let Some(api_version) = str_field(am, "apiVersion") else {
        return Err(ApplyError::BadPatch(
            "apply patch: apiVersion must be set".to_string(),
        ));
    };
    let Some(kind) = str_field(am, "kind") else {
        return Err(ApplyError::BadPatch(
            "apply patch: kind must be set".to_string(),
        ));
    };
    if manager.is_empty() {
        return Err(ApplyError::BadPatch(
            "PATCH requests with the apply content type require a fieldManager".to_string(),
        ));
    }
    if managed_fields(applied).is_some_and(|v| !v.is_null() && v != &Value::Array(Vec::new())) {
        return Err(ApplyError::BadPatch(
            "metadata.managedFields must be nil".to_string(),
        ));
    }
    if let Some(Value::Object(lm)) = live
        && let Some(live_kind) = str_field(lm, "kind")
        && live_kind != kind
    {
        return Err(ApplyError::BadPatch(format!(
            "apply patch kind {kind:?} does not match the existing object's kind {live_kind:?}"
        )));
    }

    let new_set = field_set_of(am, root)?;
    let empty = Value::Object(Map::new());
    let live_v = live.unwrap_or(&empty);
    let mut entries = parse_entries(live.and_then(managed_fields));

    let me = entries
        .iter()
        .position(|e| e.is(manager, "Apply", subresource));
    if let Some(e) = me.and_then(|i| entries.get_mut(i)) {
        if shortcut && e.unparsed.is_some_and(|f| new_set.eq_fields_v1(f)) {
            // Re-applying the same fields, the common case: nothing to parse, and when the
            // values are the live ones too, nothing to do at all.
            if e.api_version == api_version
                && let Some(live) = live
                && subsumes(live, applied, root, Level::Root)
            {
                return Ok(live.clone());
            }
            e.set = new_set.clone();
            e.unparsed = None;
        } else {
            e.load();
        }
    }
    let mut merged = merge(
        clone_without_managed_fields(live_v),
        applied,
        root,
        Level::Root,
    );
    // Pruning needs everyone's sets, but only when the applier's set shrank or changed.
    let needs_prune = me
        .and_then(|i| entries.get(i))
        .is_some_and(|e| !e.set.is_empty() && e.set != new_set);
    if needs_prune {
        load_all(&mut entries);
    }
    if needs_prune
        && let Some(i) = me
        && let Some(last) = entries.get(i).map(|e| &e.set)
    {
        let mut owned: Vec<&FieldSet> = vec![&new_set];
        owned.extend(
            entries
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, e)| &e.set),
        );
        prune(&mut merged, root, last, &owned, true);
    }

    let mut changed = FieldSet::default();
    let mut removed = FieldSet::default();
    diff(
        live_v,
        &merged,
        root,
        Level::Root,
        &mut changed,
        &mut removed,
    );

    if !changed.is_empty() || !removed.is_empty() {
        load_all(&mut entries);
    }
    let mut conflicts = Vec::new();
    let mut overlaps = Vec::new();
    for (j, e) in entries.iter().enumerate() {
        if Some(j) == me {
            continue;
        }
        let overlap = e.set.intersection(&changed);
        if overlap.is_empty() {
            continue;
        }
        for p in overlap.paths() {
            conflicts.push(FieldConflict {
                manager: e.manager.clone(),
                field: path_string(&p),
                operation: e.operation.clone(),
                api_version: e.api_version.clone(),
                subresource: e.subresource.clone(),
            });
        }
        overlaps.push((j, overlap));
    }
    if !force && !conflicts.is_empty() {
        return Err(ApplyError::Conflict(conflicts));
    }
    for (j, overlap) in overlaps {
        if let Some(e) = entries.get_mut(j) {
            e.drop_paths(&overlap);
        }
    }
    if !removed.is_empty() {
        for (j, e) in entries.iter_mut().enumerate() {
            if Some(j) != me {
                e.drop_paths(&removed);
            }
        }
    }

    let object_changed = live.is_none() || !changed.is_empty() || !removed.is_empty();
    match me.and_then(|i| entries.get_mut(i)) {
        Some(e) => {
            if object_changed || e.set != new_set || e.api_version != api_version {
                e.set = new_set;
                e.api_version = api_version.to_string();
                e.time = Some(now.to_string());
                e.raw = None;
            }
        }
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Apply".to_string(),
            api_version: api_version.to_string(),
            time: Some(now.to_string()),
            subresource: subresource.map(str::to_string),
            set: new_set,
            unparsed: None,
            raw: None,
        }),
    }
    entries.retain(|e| e.unparsed.is_some() || !e.set.is_empty());
    write_entries(&mut merged, &entries);
    Ok(merged)
}

/// Update tracking; see [`super::record_update`].
pub(crate) fn update(
    root: &Node,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    now: &str,
) {
    let old_mf = old.and_then(managed_fields);
    let sent = match new {
        Value::Object(m) => match m.get_mut("metadata") {
            Some(Value::Object(meta)) => meta.shift_remove("managedFields"),
            _ => None,
        },
        _ => None,
    };
    let mut entries = match &sent {
        // A client may replace the ownership record; `[{}]` clears it entirely.
        Some(v @ Value::Array(a)) if !a.is_empty() && old_mf != Some(v) => {
            if a.iter().all(|e| e.as_object().is_some_and(Map::is_empty)) {
                return;
            }
            // What a client sends is checked in full; if it does not parse, the stored record
            // stays (as the API server does).
            let strict: Option<Vec<Entry<'_>>> = a
                .iter()
                .map(|e| {
                    let mut entry = Entry::parse(e).ok()?;
                    let fields = entry.unparsed.take();
                    entry.set = match fields {
                        Some(f) => FieldSet::from_fields_v1(f).ok()?,
                        None => FieldSet::default(),
                    };
                    Some(entry)
                })
                .collect();
            strict.unwrap_or_else(|| parse_entries(old_mf))
        }
        _ => parse_entries(old_mf),
    };
    let empty = Value::Object(Map::new());
    let mut changed = FieldSet::default();
    let mut removed = FieldSet::default();
    diff(
        old.unwrap_or(&empty),
        new,
        root,
        Level::Root,
        &mut changed,
        &mut removed,
    );

    let touched = !changed.is_empty() || !removed.is_empty();
    if touched {
        load_all(&mut entries);
    }
    let me = entries
        .iter()
        .position(|e| e.is(manager, "Update", subresource));
    for (j, e) in entries.iter_mut().enumerate() {
        if Some(j) != me {
            e.drop_paths(&changed);
            e.drop_paths(&removed);
        }
    }
    let api_version = new
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    match me.and_then(|i| entries.get_mut(i)) {
        Some(e) => {
            if touched {
                e.set.subtract(&removed);
                e.set.union_with(&changed);
                e.api_version = api_version;
                e.time = Some(now.to_string());
                e.raw = None;
            }
        }
        None => {
            if !changed.is_empty() {
                entries.push(Entry {
                    manager: manager.to_string(),
                    operation: "Update".to_string(),
                    api_version,
                    time: Some(now.to_string()),
                    subresource: subresource.map(str::to_string),
                    set: changed,
                    unparsed: None,
                    raw: None,
                });
            }
        }
    }
    entries.retain(|e| e.unparsed.is_some() || !e.set.is_empty());
    write_entries(new, &entries);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(v: &Value) -> Vec<&str> {
        v.as_array()
            .map(|a| a.iter().filter_map(|i| i["name"].as_str()).collect())
            .unwrap_or_default()
    }

    fn items(names: &[&str]) -> Vec<Value> {
        names.iter().map(|n| json!({"name": n})).collect()
    }

    #[test]
    fn list_merge_order() {
        let node = Node {
            list: ListType::Map(vec![("name".to_string(), None)]),
            ..Node::default()
        };
        let cases: [(&[&str], &[&str], &[&str]); 6] = [
            (&["a", "b"], &["c"], &["a", "b", "c"]),
            (&["a", "b"], &["b", "c"], &["a", "b", "c"]),
            (&["a", "b"], &["c", "a"], &["c", "a", "b"]),
            (&["a", "b", "c"], &["c", "a"], &["b", "c", "a"]),
            (&["a", "b"], &["b", "a", "d"], &["b", "a", "d"]),
            (&[], &["x", "y"], &["x", "y"]),
        ];
        for (live, applied, want) in cases {
            let out = merge_list(items(live), &items(applied), &node);
            assert_eq!(names(&out), want.to_vec(), "{live:?} + {applied:?}");
            // The no-op check agrees: unchanged exactly when the order is kept and nothing new.
            let unchanged = names(&out) == live.to_vec();
            let subsumed = subsumes(
                &Value::Array(items(live)),
                &Value::Array(items(applied)),
                &node,
                Level::Other,
            );
            assert_eq!(subsumed, unchanged, "{live:?} + {applied:?}");
        }
    }
}
