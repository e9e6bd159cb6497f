//! The live-state cache: one watch (kube-runtime reflector) per kind per cluster, shared by every
//! application, started lazily the first time an application uses the kind.
//!
//! Every event of a watched object that carries a tracking annotation marks the owning
//! application dirty and sends it to the controller's queue: a `kubectl edit` of an object shows
//! up as drift as soon as the watch delivers it, without waiting for the periodic refresh.
//!
//! Each watch also keeps an index of its objects by owning application, updated from the same
//! events, so that finding an application's objects (prune detection, deletion) costs the size
//! of that application, not a scan of the kind's whole store with a tracking-id parse per object:
//! with a thousand applications the scan was most of a no-change refresh's CPU.

use capstan_api::TrackingId;
use capstan_api::annotations as ann;
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::Scope;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

use crate::error::ControllerError;

/// An application, by namespace and name.
pub type AppKey = (String, String);

/// One watched kind.
pub struct Watched {
    /// The resource as discovered.
    pub resource: ApiResource,
    /// Whether objects of the kind live in namespaces.
    pub namespaced: bool,
    /// The reflector's store.
    pub store: Store<DynamicObject>,
    index: Arc<Mutex<TrackIndex>>,
    values: Arc<Mutex<ValueCache>>,
    task: tokio::task::JoinHandle<()>,
}

/// The JSON form of live objects, per object, valid for one resourceVersion.
///
/// Serializing a live object (managed fields, status) was the largest part of a no-change
/// comparison; an object that did not change keeps its resourceVersion, so its JSON is made
/// once per change instead of once per comparison. An entry is dropped when a watch event
/// replaces or deletes its object, so the cache holds at most one value per live object.
#[derive(Default)]
struct ValueCache {
    by_object: HashMap<ObjectKey, (String, Arc<serde_json::Value>)>,
}

impl ValueCache {
    /// The cached value of `obj` at `resource_version`, or `make()`'s, cached from now on.
    fn get_or_make(
        &mut self,
        obj: ObjectKey,
        resource_version: &str,
        make: impl FnOnce() -> serde_json::Value,
    ) -> Arc<serde_json::Value> {
        match self.by_object.get(&obj) {
            Some((rv, v)) if rv == resource_version => Arc::clone(v),
            _ => {
                let v = Arc::new(make());
                self.by_object
                    .insert(obj, (resource_version.to_string(), Arc::clone(&v)));
                v
            }
        }
    }

    fn forget(&mut self, obj: &ObjectKey) {
        self.by_object.remove(obj);
    }
}

/// An object of a watched kind: namespace (empty for cluster-scoped kinds) and name.
type ObjectKey = (String, String);

/// The objects of one kind by owning application (from their tracking annotations).
#[derive(Default)]
struct TrackIndex {
    by_app: HashMap<AppKey, BTreeSet<ObjectKey>>,
    by_object: HashMap<ObjectKey, AppKey>,
    /// During a relist (the watcher's `Init` … `InitDone`): the owners listed so far, which
    /// replace the index at `InitDone`, as the reflector replaces its store then.
    relisting: Option<HashMap<ObjectKey, AppKey>>,
}

impl TrackIndex {
    /// Records the owner of `obj` (`None`: untracked or deleted).
    fn set(&mut self, obj: ObjectKey, owner: Option<AppKey>) {
        if let Some(old) = self.by_object.remove(&obj)
            && let Some(set) = self.by_app.get_mut(&old)
        {
            set.remove(&obj);
            if set.is_empty() {
                self.by_app.remove(&old);
            }
        }
        if let Some(app) = owner {
            self.by_app
                .entry(app.clone())
                .or_default()
                .insert(obj.clone());
            self.by_object.insert(obj, app);
        }
    }

    fn replace(&mut self, listed: HashMap<ObjectKey, AppKey>) {
        self.by_app.clear();
        for (obj, app) in &listed {
            self.by_app
                .entry(app.clone())
                .or_default()
                .insert(obj.clone());
        }
        self.by_object = listed;
    }
}

fn object_key(obj: &DynamicObject) -> ObjectKey {
    (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watched {
    /// The object as JSON, with `apiVersion` and `kind` set from the watched resource (list
    /// responses leave them out of their items). Made once per resourceVersion of the object.
    pub fn value(&self, obj: &DynamicObject) -> Arc<serde_json::Value> {
        match obj.metadata.resource_version.as_deref() {
            Some(rv) => lock(&self.values).get_or_make(object_key(obj), rv, || self.to_json(obj)),
            None => Arc::new(self.to_json(obj)),
        }
    }

    fn to_json(&self, obj: &DynamicObject) -> serde_json::Value {
        // A DynamicObject always serializes: typed metadata and a JSON map.
        let mut v = serde_json::to_value(obj).unwrap_or(serde_json::Value::Null);
        if let Some(map) = v.as_object_mut() {
            map.insert(
                "apiVersion".into(),
                self.resource.api_version.clone().into(),
            );
            map.insert("kind".into(), self.resource.kind.clone().into());
        }
        v
    }

    /// The live object `namespace/name` (namespace ignored for cluster-scoped kinds).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<DynamicObject>> {
        let mut key = ObjectRef::new_with(name, self.resource.clone());
        if self.namespaced {
            key = key.within(namespace);
        }
        self.store.get(&key)
    }
}

/// The shared cache of live objects.
pub struct LiveCache {
    client: kube::Client,
    watched: Mutex<HashMap<GroupVersionKind, Arc<Watched>>>,
    /// Starting a watch is serialized per kind so that two applications asking for the same kind
    /// at once share one watch.
    starting: tokio::sync::Mutex<()>,
    triggers: mpsc::UnboundedSender<AppKey>,
    dirty: Arc<Mutex<HashSet<AppKey>>>,
    ready_timeout: Duration,
}

impl LiveCache {
    /// A cache over `client`'s cluster; changes of tracked objects are sent to `triggers`.
    pub fn new(
        client: kube::Client,
        triggers: mpsc::UnboundedSender<AppKey>,
        dirty: Arc<Mutex<HashSet<AppKey>>>,
    ) -> Self {
        LiveCache {
            client,
            watched: Mutex::new(HashMap::new()),
            starting: tokio::sync::Mutex::new(()),
            triggers,
            dirty,
            ready_timeout: Duration::from_secs(60),
        }
    }

    /// The kinds watched so far.
    pub fn watched_kinds(&self) -> Vec<GroupVersionKind> {
        lock(&self.watched).keys().cloned().collect()
    }

    fn cached(&self, gvk: &GroupVersionKind) -> Option<Arc<Watched>> {
        lock(&self.watched).get(gvk).cloned()
    }

    /// The watch of `gvk`, started (and synced) when it is not running yet. An unknown kind is
    /// an error naming it.
    pub async fn watch(&self, gvk: &GroupVersionKind) -> Result<Arc<Watched>, ControllerError> {
        if let Some(w) = self.cached(gvk) {
            return Ok(w);
        }
        let _starting = self.starting.lock().await;
        if let Some(w) = self.cached(gvk) {
            return Ok(w);
        }
        let (resource, caps) = kube::discovery::pinned_kind(&self.client, gvk)
            .await
            .map_err(|e| ControllerError::UnknownKind {
                api_version: gvk.api_version(),
                kind: gvk.kind.clone(),
                reason: e.to_string(),
            })?;
        let namespaced = matches!(caps.scope, Scope::Namespaced);
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let writer = reflector::store::Writer::new(resource.clone());
        let store = writer.as_reader();
        let triggers = self.triggers.clone();
        let dirty = Arc::clone(&self.dirty);
        let kind = gvk.kind.clone();
        let index: Arc<Mutex<TrackIndex>> = Arc::default();
        let task_index = Arc::clone(&index);
        let values: Arc<Mutex<ValueCache>> = Arc::default();
        let task_values = Arc::clone(&values);
        let (indexed_tx, mut indexed_rx) = tokio::sync::watch::channel(false);
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff();
        let task = tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                // The index is updated before the trigger is sent, so the reconcile it causes
                // finds the object under its application.
                let app = match event {
                    Ok(watcher::Event::Apply(obj)) => {
                        lock(&task_values).forget(&object_key(&obj));
                        let app = owner(&obj);
                        lock(&task_index).set(object_key(&obj), app.clone());
                        app
                    }
                    Ok(watcher::Event::Delete(obj)) => {
                        lock(&task_values).forget(&object_key(&obj));
                        let app = owner(&obj);
                        lock(&task_index).set(object_key(&obj), None);
                        app
                    }
                    Ok(watcher::Event::Init) => {
                        // Objects deleted while the watch was down get no Delete event.
                        lock(&task_values).by_object.clear();
                        lock(&task_index).relisting = Some(HashMap::new());
                        None
                    }
                    Ok(watcher::Event::InitApply(obj)) => {
                        let app = owner(&obj);
                        if let Some(a) = &app {
                            let mut index = lock(&task_index);
                            let listed = index.relisting.get_or_insert_with(HashMap::new);
                            listed.insert(object_key(&obj), a.clone());
                        }
                        app
                    }
                    Ok(watcher::Event::InitDone) => {
                        let mut index = lock(&task_index);
                        let listed = index.relisting.take().unwrap_or_default();
                        index.replace(listed);
                        // Nobody waits any more once the watch has been handed out.
                        let _ = indexed_tx.send(true);
                        None
                    }
                    Err(err) => {
                        tracing::warn!(kind = %kind, error = %err, "watch error; retrying");
                        None
                    }
                };
                if let Some(app) = app {
                    lock(&dirty).insert(app.clone());
                    // The receiver lives as long as the controller; after it is gone
                    // nobody needs the trigger.
                    let _ = triggers.send(app);
                }
            }
        });
        let watched = Arc::new(Watched {
            resource,
            namespaced,
            store: store.clone(),
            index,
            values,
            task,
        });
        // Ready when the first list is both in the store and in the index (the index follows
        // the store by one step of the task above).
        let ready = async {
            store.wait_until_ready().await.ok()?;
            indexed_rx.wait_for(|indexed| *indexed).await.ok()?;
            Some(())
        };
        match tokio::time::timeout(self.ready_timeout, ready).await {
            Ok(Some(())) => {}
            _ => {
                return Err(ControllerError::Watch {
                    kind: gvk.kind.clone(),
                    reason: "the initial list did not complete".into(),
                });
            }
        }
        lock(&self.watched).insert(gvk.clone(), Arc::clone(&watched));
        tracing::debug!(group = %gvk.group, kind = %gvk.kind, "watching");
        Ok(watched)
    }

    /// The objects (with their watch) of the watched kinds `kinds` that carry the tracking annotation of
    /// application `app`.
    pub fn tracked_by(
        &self,
        kinds: &[Arc<Watched>],
        app: &AppKey,
    ) -> Vec<(Arc<Watched>, Arc<DynamicObject>)> {
        let mut out = Vec::new();
        for w in kinds {
            let keys: Vec<ObjectKey> = lock(&w.index)
                .by_app
                .get(app)
                .map(|set| set.iter().cloned().collect())
                .unwrap_or_default();
            for (namespace, name) in keys {
                // The store may be one event ahead of the index: the object's current
                // annotation has the last word (a newly tracked object not indexed yet comes
                // with its own trigger, sent after indexing).
                if let Some(obj) = w.get(&namespace, &name)
                    && owner(&obj).as_ref() == Some(app)
                {
                    out.push((Arc::clone(w), obj));
                }
            }
        }
        out
    }
}

/// The application named by an object's tracking annotation.
pub fn owner(obj: &DynamicObject) -> Option<AppKey> {
    let annotations = obj.metadata.annotations.as_ref()?;
    let value = annotations.get(ann::TRACKING_ID)?;
    let id = TrackingId::parse(value).ok()?;
    Some((id.app_namespace, id.app_name))
}

/// Locks a mutex, recovering the data of a poisoned one: the maps guarded here are always left
/// consistent (single inserts and removes), so a panic elsewhere does not invalidate them.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str) -> AppKey {
        ("capstan".to_string(), name.to_string())
    }

    fn obj(name: &str) -> ObjectKey {
        ("demo".to_string(), name.to_string())
    }

    fn objects_of(index: &TrackIndex, a: &str) -> Vec<String> {
        index
            .by_app
            .get(&app(a))
            .map(|s| s.iter().map(|(_, n)| n.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn the_index_follows_tracking_changes_deletes_and_relists() {
        let mut index = TrackIndex::default();
        index.set(obj("cm"), Some(app("a")));
        index.set(obj("svc"), Some(app("a")));
        index.set(obj("other"), None);
        assert_eq!(objects_of(&index, "a"), ["cm", "svc"]);

        // Re-annotated for another application: it moves.
        index.set(obj("cm"), Some(app("b")));
        assert_eq!(objects_of(&index, "a"), ["svc"]);
        assert_eq!(objects_of(&index, "b"), ["cm"]);

        // Deleted (or its annotation removed): gone, and an application without objects too.
        index.set(obj("svc"), None);
        assert!(!index.by_app.contains_key(&app("a")));
        assert!(!index.by_object.contains_key(&obj("svc")));

        // A relist replaces everything with what it listed.
        index.replace([(obj("new"), app("a"))].into_iter().collect());
        assert_eq!(objects_of(&index, "a"), ["new"]);
        assert!(objects_of(&index, "b").is_empty());
        assert_eq!(index.by_object.len(), 1);
    }

    #[test]
    fn a_live_value_is_made_once_per_resource_version() {
        let mut cache = ValueCache::default();
        let made = std::cell::Cell::new(0);
        let get = |cache: &mut ValueCache, rv: &str, data: i64| {
            cache.get_or_make(obj("cm"), rv, || {
                made.set(made.get() + 1);
                serde_json::json!({ "data": data })
            })
        };
        let first = get(&mut cache, "1", 1);
        let again = get(&mut cache, "1", 99);
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(*again, serde_json::json!({ "data": 1 }));

        // A new resourceVersion is a new object: made again, and it replaces the old entry.
        let changed = get(&mut cache, "2", 2);
        assert_eq!(*changed, serde_json::json!({ "data": 2 }));
        assert_eq!(cache.by_object.len(), 1);

        // Forgotten (watch event): made again even at the same resourceVersion.
        cache.forget(&obj("cm"));
        let remade = get(&mut cache, "2", 3);
        assert_eq!(*remade, serde_json::json!({ "data": 3 }));
        assert_eq!(made.get(), 3);
    }
}
