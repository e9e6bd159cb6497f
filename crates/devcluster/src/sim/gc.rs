//! The garbage collector: dependents (objects with `metadata.ownerReferences`) follow their
//! owners, as kube-controller-manager's garbage collector makes them.
//!
//! - Background (the default): once an owner is gone, a dependent none of whose other owners
//!   still exists is deleted (its own dependents follow the same way); one that keeps another
//!   owner only loses the dangling reference.
//! - Orphan: an owner being deleted with the `orphan` finalizer first has the references to it
//!   removed from its dependents, then the finalizer removed (so the owner goes, the dependents
//!   stay).
//! - Foreground: an owner being deleted with the `foregroundDeletion` finalizer has its
//!   dependents deleted first; the finalizer is removed once none is left.
//!
//! The index covers every resource type (owners and dependents of any kind, custom resources
//! too) and is keyed by owner uid, so one deletion costs a look-up, not a scan of the store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use super::util::{OwnerRef, meta_str, owner_refs};
use crate::State;
use crate::api::{self, Op};
use crate::apply::PatchKind;
use crate::store::{Event, EventType};

const MANAGER: &str = "generic-garbage-collector";
const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";

/// One object: storage key, namespace, name.
type ObjKey = (Arc<str>, String, String);

struct Gc {
    state: Arc<State>,
    /// owner uid → its dependents.
    dependents: HashMap<String, HashSet<ObjKey>>,
    /// dependent → owner uids (to undo the index when it changes).
    owners_of: HashMap<ObjKey, Vec<String>>,
    /// Owners being deleted in the foreground, by uid, until their dependents are gone.
    foreground: HashMap<String, ObjKey>,
}

/// Starts the garbage collector; it stops when `shutdown` turns true.
pub fn spawn(state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut rx = state.store.subscribe_all();
        let mut gc = Gc {
            state,
            dependents: HashMap::new(),
            owners_of: HashMap::new(),
            foreground: HashMap::new(),
        };
        gc.resync();
        loop {
            let ev = tokio::select! {
                e = rx.recv() => e,
                _ = shutdown.changed() => return,
            };
            match ev {
                Ok(ev) => gc.observe(&ev),
                Err(broadcast::error::RecvError::Lagged(_)) => gc.resync(),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

fn has_finalizer(v: &Value, f: &str) -> bool {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x == f))
}

impl Gc {
    /// Rebuilds the index from the store, then collects what lost its owners meanwhile.
    fn resync(&mut self) {
        self.dependents.clear();
        self.owners_of.clear();
        self.foreground.clear();
        let mut pending = Vec::new();
        for (skey, _) in self.storage_keys() {
            let skey: Arc<str> = Arc::from(skey.as_str());
            for st in self.state.store.all_of(&skey) {
                let Ok(v) = st.view() else { continue };
                self.index(&skey, &v, false);
                if meta_str(&v, "deletionTimestamp").is_empty() {
                    if !owner_refs(&v).is_empty() {
                        pending.push((skey.clone(), v));
                    }
                } else {
                    pending.push((skey.clone(), v));
                }
            }
        }
        for (skey, v) in pending {
            if !meta_str(&v, "deletionTimestamp").is_empty() {
                self.terminating(&skey, &v);
            } else {
                let key = (
                    skey.clone(),
                    meta_str(&v, "namespace").to_string(),
                    meta_str(&v, "name").to_string(),
                );
                self.collect(&key, None);
            }
        }
    }

    /// Every served (storage key, namespaced) pair.
    fn storage_keys(&self) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for (_, versions) in self.state.registry.snapshot() {
            for (_, resources) in versions {
                for r in resources {
                    let k = (r.storage_key(), r.namespaced);
                    if !out.contains(&k) && !r.resource.contains('/') {
                        out.push(k);
                    }
                }
            }
        }
        out
    }

    fn observe(&mut self, ev: &Event) {
        let key: ObjKey = (
            ev.key.clone(),
            ev.namespace.to_string(),
            ev.name.to_string(),
        );
        let mentions_owner = memfind(&ev.bytes, b"ownerReferences");
        let mentions_finalizer = memfind(&ev.bytes, b"\"finalizers\"");
        let indexed = self.owners_of.contains_key(&key);
        let deleted = ev.kind == EventType::Deleted;
        let uid_known = deleted || mentions_finalizer;
        if !mentions_owner && !indexed && !uid_known {
            return;
        }
        let Ok(v) = ev.view() else {
            return;
        };
        let old_owners = self.owners_of.get(&key).cloned().unwrap_or_default();
        self.index(&ev.key, &v, deleted);
        if deleted {
            let uid = meta_str(&v, "uid").to_string();
            self.foreground.remove(&uid);
            self.owner_gone(&uid);
        } else if !meta_str(&v, "deletionTimestamp").is_empty() {
            self.terminating(&ev.key, &v);
        }
        // A dependent of a foreground deletion is gone or let go of it: the owner may be done.
        for o in old_owners {
            if let Some(owner) = self.foreground.get(&o).cloned() {
                self.finish_foreground(&o, &owner);
            }
        }
    }

    fn index(&mut self, skey: &Arc<str>, v: &Value, deleted: bool) {
        let key: ObjKey = (
            skey.clone(),
            meta_str(v, "namespace").to_string(),
            meta_str(v, "name").to_string(),
        );
        if let Some(old) = self.owners_of.remove(&key) {
            for uid in old {
                if let Some(set) = self.dependents.get_mut(&uid) {
                    set.remove(&key);
                    if set.is_empty() {
                        self.dependents.remove(&uid);
                    }
                }
            }
        }
        if deleted {
            return;
        }
        let uids: Vec<String> = owner_refs(v).into_iter().map(|r| r.uid).collect();
        if uids.is_empty() {
            return;
        }
        for uid in &uids {
            self.dependents
                .entry(uid.clone())
                .or_default()
                .insert(key.clone());
        }
        self.owners_of.insert(key, uids);
    }

    /// An owner that is being deleted and holds one of the collector's finalizers.
    fn terminating(&mut self, skey: &Arc<str>, v: &Value) {
        let uid = meta_str(v, "uid").to_string();
        let key: ObjKey = (
            skey.clone(),
            meta_str(v, "namespace").to_string(),
            meta_str(v, "name").to_string(),
        );
        if has_finalizer(v, ORPHAN) {
            let deps: Vec<ObjKey> = self
                .dependents
                .get(&uid)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            for d in deps {
                self.drop_refs(&d, &[uid.as_str()]);
            }
            self.remove_finalizer(&key, ORPHAN);
        } else if has_finalizer(v, FOREGROUND) {
            self.foreground.insert(uid.clone(), key.clone());
            let deps: Vec<ObjKey> = self
                .dependents
                .get(&uid)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            for d in &deps {
                // A dependent with another owner that still exists only lets go of this one.
                let other_owner = self
                    .state
                    .store
                    .get(&d.0, &d.1, &d.2)
                    .and_then(|st| st.view().ok())
                    .is_some_and(|dv| {
                        owner_refs(&dv)
                            .iter()
                            .any(|r| r.uid != uid && self.owner_exists(r, &d.1))
                    });
                if other_owner {
                    self.drop_refs(d, &[uid.as_str()]);
                } else {
                    self.delete(d, "Foreground");
                }
            }
            self.finish_foreground(&uid, &key);
        }
    }

    fn finish_foreground(&mut self, uid: &str, owner: &ObjKey) {
        let left = self.dependents.get(uid).is_some_and(|s| !s.is_empty());
        if !left {
            self.foreground.remove(uid);
            self.remove_finalizer(owner, FOREGROUND);
        }
    }

    /// The owner with this uid is gone: collect its dependents.
    fn owner_gone(&mut self, uid: &str) {
        let deps: Vec<ObjKey> = self
            .dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for d in deps {
            self.collect(&d, Some(uid));
        }
    }

    /// Deletes a dependent none of whose owners exists any more, or drops its dangling
    /// references when another owner remains.
    fn collect(&mut self, dep: &ObjKey, gone: Option<&str>) {
        let Some(st) = self.state.store.get(&dep.0, &dep.1, &dep.2) else {
            return;
        };
        let Ok(v) = st.view() else { return };
        let refs = owner_refs(&v);
        let (alive, dangling): (Vec<&OwnerRef>, Vec<&OwnerRef>) = refs
            .iter()
            .partition(|r| Some(r.uid.as_str()) != gone && self.owner_exists(r, &dep.1));
        if dangling.is_empty() {
            return;
        }
        if alive.is_empty() {
            self.delete(dep, "Background");
        } else {
            let uids: Vec<&str> = dangling.iter().map(|r| r.uid.as_str()).collect();
            self.drop_refs(dep, &uids);
        }
    }

    fn owner_exists(&self, r: &OwnerRef, dep_ns: &str) -> bool {
        let (group, version) = match r.api_version.rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", r.api_version.as_str()),
        };
        let Some(info) = self.state.registry.by_kind(group, version, &r.kind) else {
            // An owner of a kind that is not served cannot exist.
            return false;
        };
        let ns = if info.namespaced { dep_ns } else { "" };
        self.state
            .store
            .get(&info.storage_key(), ns, &r.name)
            .and_then(|st| st.view().ok())
            .is_some_and(|v| meta_str(&v, "uid") == r.uid)
    }

    fn op(&self, key: &ObjKey) -> Option<Op> {
        let (group, resource) = key.0.split_once('/')?;
        let info = self
            .state
            .registry
            .snapshot()
            .into_iter()
            .filter(|(g, _)| g == group)
            .flat_map(|(_, vs)| vs.into_iter())
            .flat_map(|(_, rs)| rs.into_iter())
            .find(|r| r.resource == resource)?;
        Some(Op {
            info,
            namespace: (!key.1.is_empty()).then(|| key.1.clone()),
            name: Some(key.2.clone()),
            subresource: None,
            query: HashMap::new(),
            manager: MANAGER.into(),
            manager_explicit: true,
        })
    }

    fn delete(&self, key: &ObjKey, policy: &str) {
        let Some(op) = self.op(key) else { return };
        let options = json!({"propagationPolicy": policy});
        if let Err(e) = api::delete(&self.state, &op, Some(&options))
            && e.code != 404
        {
            tracing::warn!(object = ?key, error = %e, "garbage collector could not delete");
        }
    }

    /// Removes the references to `uids` from a dependent's ownerReferences.
    fn drop_refs(&self, key: &ObjKey, uids: &[&str]) {
        let Some(op) = self.op(key) else { return };
        let Some(st) = self.state.store.get(&key.0, &key.1, &key.2) else {
            return;
        };
        let Ok(v) = st.view() else { return };
        let kept: Vec<Value> = v
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|r| !uids.contains(&r.get("uid").and_then(Value::as_str).unwrap_or("")))
            .cloned()
            .collect();
        let refs = if kept.is_empty() {
            Value::Null
        } else {
            Value::Array(kept)
        };
        let patch =
            json!({"metadata": {"ownerReferences": refs, "resourceVersion": st.rv.to_string()}});
        if let Err(e) = api::patch(&self.state, &op, PatchKind::Merge, patch)
            && e.code != 404
        {
            tracing::warn!(object = ?key, error = %e, "garbage collector could not drop owner references");
        }
    }

    fn remove_finalizer(&self, key: &ObjKey, finalizer: &str) {
        let Some(op) = self.op(key) else { return };
        let Some(st) = self.state.store.get(&key.0, &key.1, &key.2) else {
            return;
        };
        let Ok(v) = st.view() else { return };
        let kept: Vec<Value> = v
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|f| f.as_str() != Some(finalizer))
            .cloned()
            .collect();
        let patch = json!({"metadata": {"finalizers": kept, "resourceVersion": st.rv.to_string()}});
        if let Err(e) = api::patch(&self.state, &op, PatchKind::Merge, patch)
            && e.code != 404
        {
            tracing::warn!(object = ?key, error = %e, "garbage collector could not remove its finalizer");
        }
    }
}

/// Whether `needle` occurs in `hay` (a cheap pre-filter before parsing an event).
fn memfind(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
