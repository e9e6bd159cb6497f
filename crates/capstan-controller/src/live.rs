//! The live-state cache: one watch (kube-runtime reflector) per kind per cluster, shared by every
//! application, started lazily the first time an application uses the kind.
//!
//! Every event of a watched object that carries a tracking annotation marks the owning
//! application dirty and sends it to the controller's queue: a `kubectl edit` of an object shows
//! up as drift as soon as the watch delivers it, without waiting for the periodic refresh.

use capstan_api::TrackingId;
use capstan_api::annotations as ann;
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::Scope;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{HashMap, HashSet};
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
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watched {
    /// The object as JSON, with `apiVersion` and `kind` set from the watched resource (list
    /// responses leave them out of their items).
    pub fn value(&self, obj: &DynamicObject) -> serde_json::Value {
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
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff();
        let task = tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(obj))
                    | Ok(watcher::Event::Delete(obj))
                    | Ok(watcher::Event::InitApply(obj)) => {
                        if let Some(app) = owner(&obj) {
                            lock(&dirty).insert(app.clone());
                            // The receiver lives as long as the controller; after it is gone
                            // nobody needs the trigger.
                            let _ = triggers.send(app);
                        }
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(kind = %kind, error = %err, "watch error; retrying"),
                }
            }
        });
        let watched = Arc::new(Watched {
            resource,
            namespaced,
            store: store.clone(),
            task,
        });
        match tokio::time::timeout(self.ready_timeout, store.wait_until_ready()).await {
            Ok(Ok(())) => {}
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
            for obj in w.store.state() {
                if owner(&obj).as_ref() == Some(app) {
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
