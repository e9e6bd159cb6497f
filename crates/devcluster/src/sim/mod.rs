//! Simulated workload controllers and kubelet: they move Deployments, ReplicaSets, Pods,
//! StatefulSets, DaemonSets, Jobs, CronJobs, Services, Endpoints, PVCs and HPAs through the
//! status the real kube-controller-manager, scheduler and kubelet would write, without running
//! a single container.
//!
//! Design: one task owns all simulation state. It follows the store's change feed, keeps an
//! index of children by owner uid (so a reconcile never scans the whole store), and runs a
//! level-triggered reconcile per object from a deduplicated work queue: read the current state,
//! compute the desired children and status, write the difference. Delays (pod start, crash-loop
//! back-off, progress deadlines, cron schedules) are timers that put a key back on the queue.
//! Every write goes through [`crate::api`] with the field manager the real component uses, so
//! writes get resourceVersions, watch events and managedFields like any client's.
//!
//! Failure on purpose: a container image whose tag is `fail` crash-loops (a Job's pod fails),
//! a tag `pullfail` never pulls (ErrImagePull, then ImagePullBackOff).

mod cronjob;
mod daemonset;
mod deployment;
mod events;
mod gc;
mod hpa;
mod job;
mod pod;
pub mod printers;
mod pvc;
mod replicaset;
mod service;
mod statefulset;
mod util;
mod write;

pub use cronjob::{Schedule, ScheduleError};

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::{broadcast, watch};

use crate::State;
use crate::registry::ResourceInfo;
use crate::store::{Event, EventType};

/// Settings of the simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Time from a pod's creation to its Ready condition (half of it to Running). Also the unit
    /// of the other simulated delays (a Job pod completes after it; crash-loop back-off is a
    /// multiple of it).
    pub pod_ready_delay: Duration,
    /// Number of simulated nodes (`devcluster-node-0` …); DaemonSets run one pod on each.
    pub nodes: usize,
    /// Whether the simulated controllers run at all (the garbage collector always runs).
    pub enabled: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            pod_ready_delay: Duration::from_millis(200),
            nodes: 1,
            enabled: true,
        }
    }
}

/// Why one reconcile could not finish; the key is retried.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The API refused a write (a conflict is the common case: someone wrote in between).
    #[error("{kind} {namespace}/{name}: {message}")]
    Api {
        /// Kind of the object written.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The API's answer.
        message: String,
        /// HTTP code of the answer.
        code: u16,
    },
    /// A stored object could not be read.
    #[error("stored object is corrupt: {0}")]
    Corrupt(String),
}

impl SimError {
    fn is_conflict(&self) -> bool {
        matches!(self, SimError::Api { code: 409, .. })
    }
}

/// The kinds the simulation reacts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Deployment,
    ReplicaSet,
    Pod,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    Service,
    Endpoints,
    Pvc,
    Hpa,
    Event,
}

impl Kind {
    const ALL: [Kind; 12] = [
        Kind::Deployment,
        Kind::ReplicaSet,
        Kind::Pod,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::Job,
        Kind::CronJob,
        Kind::Service,
        Kind::Endpoints,
        Kind::Pvc,
        Kind::Hpa,
        Kind::Event,
    ];

    /// (group, version, resource) as served.
    fn gvr(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Kind::Deployment => ("apps", "v1", "deployments"),
            Kind::ReplicaSet => ("apps", "v1", "replicasets"),
            Kind::Pod => ("", "v1", "pods"),
            Kind::StatefulSet => ("apps", "v1", "statefulsets"),
            Kind::DaemonSet => ("apps", "v1", "daemonsets"),
            Kind::Job => ("batch", "v1", "jobs"),
            Kind::CronJob => ("batch", "v1", "cronjobs"),
            Kind::Service => ("", "v1", "services"),
            Kind::Endpoints => ("", "v1", "endpoints"),
            Kind::Pvc => ("", "v1", "persistentvolumeclaims"),
            Kind::Hpa => ("autoscaling", "v2", "horizontalpodautoscalers"),
            Kind::Event => ("", "v1", "events"),
        }
    }

    fn kind_name(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Pod => "Pod",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::Pvc => "PersistentVolumeClaim",
            Kind::Hpa => "HorizontalPodAutoscaler",
            Kind::Event => "Event",
        }
    }

    fn api_version(self) -> &'static str {
        match self.gvr() {
            ("", _, _) => "v1",
            ("apps", _, _) => "apps/v1",
            ("batch", _, _) => "batch/v1",
            _ => "autoscaling/v2",
        }
    }

    fn storage_key(self) -> String {
        let (g, _, r) = self.gvr();
        format!("{g}/{r}")
    }

    /// The kind stored under a storage key ("apps/deployments").
    fn from_storage_key(skey: &str) -> Option<Kind> {
        let (group, resource) = skey.split_once('/')?;
        Kind::ALL.into_iter().find(|k| {
            let (g, _, r) = k.gvr();
            g == group && r == resource
        })
    }

    /// The kind of an owner reference (`apps/v1` `Deployment` …), if simulated.
    fn from_owner(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        Kind::ALL
            .into_iter()
            .find(|k| k.kind_name() == kind && k.gvr().0 == group)
    }
}

/// What the work queue holds: one object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key {
    kind: Kind,
    ns: String,
    name: String,
}

impl Key {
    fn new(kind: Kind, ns: &str, name: &str) -> Key {
        Key {
            kind,
            ns: ns.to_string(),
            name: name.to_string(),
        }
    }
}

/// An object read from the store, with the resourceVersion to write against. Shared with the
/// store (the simulated kinds are kept parsed there), so reading one copies nothing.
pub(crate) struct Obj {
    pub(crate) v: Arc<Value>,
}

impl Obj {
    fn uid(&self) -> &str {
        util::meta_str(&self.v, "uid")
    }
    fn name(&self) -> &str {
        util::meta_str(&self.v, "name")
    }
    fn ns(&self) -> &str {
        util::meta_str(&self.v, "namespace")
    }
    fn deleting(&self) -> bool {
        self.v.pointer("/metadata/deletionTimestamp").is_some()
    }
    fn generation(&self) -> i64 {
        self.v
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1)
    }
}

/// The simulation: all state lives here, owned by one task.
pub(crate) struct Sim {
    state: Arc<State>,
    cfg: SimConfig,
    infos: HashMap<Kind, Arc<ResourceInfo>>,
    queue: VecDeque<Key>,
    queued: HashSet<Key>,
    timers: BinaryHeap<Reverse<(Instant, Key)>>,
    /// The earliest pending timer of each key, so repeated reconciles do not pile up timers.
    pending: HashMap<Key, Instant>,
    /// owner uid → its children (same namespace as the owner).
    children: HashMap<String, BTreeSet<(Kind, String)>>,
    /// child → the uids of its owners (to undo the index when the child changes).
    owners_of: HashMap<Key, Vec<String>>,
    /// namespace → service name → selector, for services with a selector.
    services: HashMap<String, HashMap<String, Map<String, Value>>>,
    /// namespace → pod name → its labels (pods without labels too), so that a new selector is
    /// matched against memory instead of a list and parse of every pod of the namespace.
    pod_labels: HashMap<String, HashMap<String, Map<String, Value>>>,
    /// (namespace, service) → names of the pods its selector matches.
    service_pods: HashMap<(String, String), BTreeSet<String>>,
    /// (namespace, target kind, target name) → HPAs scaling it.
    hpa_targets: HashMap<(String, Kind, String), BTreeSet<String>>,
    /// Pod uid → when the simulated kubelet first saw it.
    pod_seen: HashMap<String, Instant>,
    /// Next pod IP (10.244.0.0/16) and load balancer IP.
    next_pod_ip: u32,
    next_lb_ip: u32,
    /// Round-robin node assignment.
    next_node: usize,
    events: events::Recorder,
}

/// Starts the garbage collector and (when enabled) the simulation loop; they stop when
/// `shutdown` turns true.
pub fn spawn(state: Arc<State>, cfg: SimConfig, shutdown: watch::Receiver<bool>) {
    gc::spawn(state.clone(), shutdown.clone());
    if !cfg.enabled {
        return;
    }
    // The simulation reads these kinds on every change: keep them parsed in the store. Events
    // are left out: the most numerous objects, read only to aggregate a repeated event.
    for kind in Kind::ALL {
        if kind != Kind::Event {
            state.store.keep_parsed(&kind.storage_key());
        }
    }
    let mut sim = Sim::new(state, cfg);
    tokio::spawn(async move { sim.run(shutdown).await });
}

/// How many queue items one batch processes before yielding to other tasks.
const BATCH: usize = 64;

impl Sim {
    fn new(state: Arc<State>, cfg: SimConfig) -> Sim {
        let mut infos = HashMap::new();
        for k in Kind::ALL {
            let (g, v, r) = k.gvr();
            if let Some(info) = state.registry.get(g, v, r) {
                infos.insert(k, info);
            }
        }
        Sim {
            state,
            cfg: SimConfig {
                nodes: cfg.nodes.max(1),
                ..cfg
            },
            infos,
            queue: VecDeque::new(),
            queued: HashSet::new(),
            timers: BinaryHeap::new(),
            pending: HashMap::new(),
            children: HashMap::new(),
            owners_of: HashMap::new(),
            services: HashMap::new(),
            pod_labels: HashMap::new(),
            service_pods: HashMap::new(),
            hpa_targets: HashMap::new(),
            pod_seen: HashMap::new(),
            next_pod_ip: 0,
            next_lb_ip: 0,
            next_node: 0,
            events: events::Recorder::default(),
        }
    }

    async fn run(&mut self, mut shutdown: watch::Receiver<bool>) {
        // Subscribe before reading the store: nothing written in between is missed.
        let mut rx = self.state.store.subscribe_all();
        self.resync();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let mut done = 0;
            while done < BATCH {
                if !self.drain(&mut rx) {
                    return;
                }
                self.fire_timers();
                let Some(key) = self.queue.pop_front() else {
                    break;
                };
                self.queued.remove(&key);
                self.reconcile(key);
                done += 1;
            }
            if !self.queue.is_empty() {
                tokio::task::yield_now().await;
                continue;
            }
            let next = self.timers.peek().map(|Reverse((t, _))| *t);
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                e = rx.recv() => match e {
                    Ok(ev) => self.observe(&ev),
                    Err(broadcast::error::RecvError::Lagged(_)) => self.resync(),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = sleep => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Takes every pending change off the feed. False when the feed is closed.
    fn drain(&mut self, rx: &mut broadcast::Receiver<Arc<Event>>) -> bool {
        loop {
            match rx.try_recv() {
                Ok(ev) => self.observe(&ev),
                Err(broadcast::error::TryRecvError::Empty) => return true,
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.resync(),
                Err(broadcast::error::TryRecvError::Closed) => return false,
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((t, _))) = self.timers.peek() {
            if *t > now {
                break;
            }
            if let Some(Reverse((t, key))) = self.timers.pop() {
                if self.pending.get(&key) == Some(&t) {
                    self.pending.remove(&key);
                }
                self.enqueue(key);
            }
        }
    }

    fn enqueue(&mut self, key: Key) {
        if self.queued.insert(key.clone()) {
            self.queue.push_back(key);
        }
    }

    fn after(&mut self, delay: Duration, key: Key) {
        let now = Instant::now();
        let at = now + delay;
        // An earlier timer of the same key is enough: its reconcile sets the next one.
        if self.pending.get(&key).is_some_and(|t| *t <= at && *t > now) {
            return;
        }
        self.pending.insert(key.clone(), at);
        self.timers.push(Reverse((at, key)));
    }

    /// Missed changes (or start-up): rebuild the indexes from the store and reconcile all.
    fn resync(&mut self) {
        self.children.clear();
        self.owners_of.clear();
        self.services.clear();
        self.pod_labels.clear();
        self.service_pods.clear();
        self.hpa_targets.clear();
        for kind in Kind::ALL {
            if kind == Kind::Event || kind == Kind::Endpoints {
                continue;
            }
            for st in self.state.store.all_of(&kind.storage_key()) {
                let Ok(v) = st.view() else { continue };
                self.index(kind, &v, false);
            }
        }
        // Service pod sets need every pod indexed first.
        let svcs: Vec<(String, String)> = self
            .services
            .iter()
            .flat_map(|(ns, m)| m.keys().map(move |n| (ns.clone(), n.clone())))
            .collect();
        for (ns, name) in svcs {
            self.rescan_service_pods(&ns, &name);
        }
    }

    fn observe(&mut self, ev: &Event) {
        let Some(kind) = Kind::from_storage_key(&ev.key) else {
            return;
        };
        if kind == Kind::Event || kind == Kind::Endpoints {
            return;
        }
        let Ok(v) = ev.view() else {
            return;
        };
        self.index(kind, &v, ev.kind == EventType::Deleted);
    }

    /// Updates the indexes for one object and queues what must look at it.
    fn index(&mut self, kind: Kind, v: &Value, deleted: bool) {
        let ns = util::meta_str(v, "namespace").to_string();
        let name = util::meta_str(v, "name").to_string();
        let key = Key::new(kind, &ns, &name);
        // Owner index.
        if let Some(old) = self.owners_of.remove(&key) {
            for uid in old {
                if let Some(set) = self.children.get_mut(&uid) {
                    set.remove(&(kind, name.clone()));
                    if set.is_empty() {
                        self.children.remove(&uid);
                    }
                }
            }
        }
        let refs = util::owner_refs(v);
        if !deleted && !refs.is_empty() {
            let uids: Vec<String> = refs.iter().map(|r| r.uid.clone()).collect();
            for uid in &uids {
                self.children
                    .entry(uid.clone())
                    .or_default()
                    .insert((kind, name.clone()));
            }
            self.owners_of.insert(key.clone(), uids);
        }
        for r in refs.iter().filter(|r| r.controller) {
            if let Some(k) = Kind::from_owner(&r.api_version, &r.kind) {
                self.enqueue(Key::new(k, &ns, &r.name));
            }
        }
        if deleted {
            let uid = util::meta_str(v, "uid");
            self.forget_events(uid);
        }
        match kind {
            Kind::Pod => {
                if deleted {
                    let uid = util::meta_str(v, "uid");
                    self.pod_seen.remove(uid);
                }
                self.pod_changed(&ns, &name, v, deleted);
            }
            Kind::Service => {
                let selector = v
                    .pointer("/spec/selector")
                    .and_then(Value::as_object)
                    .filter(|m| !m.is_empty())
                    .cloned();
                let entry = self.services.entry(ns.clone()).or_default();
                match selector {
                    Some(sel) if !deleted => {
                        let changed = entry.get(&name) != Some(&sel);
                        entry.insert(name.clone(), sel);
                        if changed {
                            self.rescan_service_pods(&ns, &name);
                        }
                    }
                    _ => {
                        entry.remove(&name);
                        self.service_pods.remove(&(ns.clone(), name.clone()));
                    }
                }
            }
            Kind::Hpa => {
                self.hpa_targets.retain(|(hns, _, _), set| {
                    if *hns == ns {
                        set.remove(&name);
                    }
                    !set.is_empty()
                });
                if !deleted && let Some(target) = hpa::target_of(v) {
                    self.hpa_targets
                        .entry((ns.clone(), target.0, target.1))
                        .or_default()
                        .insert(name.clone());
                }
            }
            Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet => {
                if let Some(hpas) = self.hpa_targets.get(&(ns.clone(), kind, name.clone())) {
                    let keys: Vec<Key> = hpas.iter().map(|h| Key::new(Kind::Hpa, &ns, h)).collect();
                    for k in keys {
                        self.enqueue(k);
                    }
                }
            }
            _ => {}
        }
        if !deleted || kind == Kind::Service {
            self.enqueue(key);
        }
    }

    /// A pod changed: keep the service pod sets current and queue the services concerned.
    fn pod_changed(&mut self, ns: &str, name: &str, v: &Value, deleted: bool) {
        let labels = v.pointer("/metadata/labels").and_then(Value::as_object);
        if deleted {
            if let Some(pods) = self.pod_labels.get_mut(ns) {
                pods.remove(name);
                if pods.is_empty() {
                    self.pod_labels.remove(ns);
                }
            }
        } else {
            // Most pod changes are status changes: the labels are copied only when they moved.
            let none = Map::new();
            let new = labels.unwrap_or(&none);
            let pods = self.pod_labels.entry(ns.to_string()).or_default();
            match pods.get_mut(name) {
                Some(old) if old == new => {}
                Some(old) => *old = new.clone(),
                None => {
                    pods.insert(name.to_string(), new.clone());
                }
            }
        }
        let Some(svcs) = self.services.get(ns) else {
            return;
        };
        let mut touched = Vec::new();
        for (svc, sel) in svcs {
            let matches = !deleted && labels.is_some_and(|l| util::selector_matches(sel, l));
            let set = self
                .service_pods
                .entry((ns.to_string(), svc.clone()))
                .or_default();
            let was = set.contains(name);
            if matches {
                set.insert(name.to_string());
            } else {
                set.remove(name);
            }
            if matches || was {
                touched.push(svc.clone());
            }
        }
        for svc in touched {
            self.enqueue(Key::new(Kind::Service, ns, &svc));
        }
    }

    fn rescan_service_pods(&mut self, ns: &str, name: &str) {
        let Some(sel) = self.services.get(ns).and_then(|m| m.get(name)) else {
            return;
        };
        let set: BTreeSet<String> = self
            .pod_labels
            .get(ns)
            .into_iter()
            .flatten()
            .filter(|(_, labels)| util::selector_matches(sel, labels))
            .map(|(pod, _)| pod.clone())
            .collect();
        self.service_pods
            .insert((ns.to_string(), name.to_string()), set);
    }

    fn reconcile(&mut self, key: Key) {
        let result = match key.kind {
            Kind::Deployment => self.reconcile_deployment(&key),
            Kind::ReplicaSet => self.reconcile_replicaset(&key),
            Kind::Pod => self.reconcile_pod(&key),
            Kind::StatefulSet => self.reconcile_statefulset(&key),
            Kind::DaemonSet => self.reconcile_daemonset(&key),
            Kind::Job => self.reconcile_job(&key),
            Kind::CronJob => self.reconcile_cronjob(&key),
            Kind::Service => self.reconcile_service(&key),
            Kind::Pvc => self.reconcile_pvc(&key),
            Kind::Hpa => self.reconcile_hpa(&key),
            Kind::Endpoints | Kind::Event => Ok(()),
        };
        if let Err(e) = result {
            // A conflict means the object moved on: its change event queues it again, and a
            // short retry covers the case where the conflicting write was our own.
            let delay = if e.is_conflict() {
                Duration::from_millis(20)
            } else {
                tracing::warn!(error = %e, "simulated controller");
                Duration::from_millis(500)
            };
            self.after(delay, key);
        }
    }

    /// Reads one object.
    fn get(&self, kind: Kind, ns: &str, name: &str) -> Result<Option<Obj>, SimError> {
        match self.state.store.get(&kind.storage_key(), ns, name) {
            None => Ok(None),
            Some(st) => {
                let v = st.view().map_err(|e| SimError::Corrupt(e.to_string()))?;
                Ok(Some(Obj { v }))
            }
        }
    }

    /// The children of `owner_uid` of one kind (in the owner's namespace), read from the store.
    fn children_of(&self, owner_uid: &str, ns: &str, kind: Kind) -> Vec<Obj> {
        let Some(set) = self.children.get(owner_uid) else {
            return Vec::new();
        };
        set.range((kind, String::new())..)
            .take_while(|(k, _)| *k == kind)
            .filter_map(|(_, name)| self.get(kind, ns, name).ok().flatten())
            // The index may briefly lag a re-created object of the same name.
            .filter(|o| util::is_controlled_by(&o.v, owner_uid))
            .collect()
    }

    fn node_name(&self, i: usize) -> String {
        format!("devcluster-node-{i}")
    }

    fn host_ip(&self, node: &str) -> String {
        let i: u32 = node
            .rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        format!("172.18.0.{}", 2 + i % 250)
    }

    fn alloc_pod_ip(&mut self) -> String {
        let n = self.next_pod_ip;
        self.next_pod_ip = self.next_pod_ip.wrapping_add(1) % (256 * 254);
        format!("10.244.{}.{}", n / 254, n % 254 + 1)
    }
}
