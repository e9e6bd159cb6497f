//! Capstan's controller: Applications reconciled from Git.
//!
//! [`Controller::run`] watches Applications (kube-runtime's controller: one reconcile per
//! application at a time, bounded concurrency, a queue fed by the Application watch, by the
//! live-state cache and by the refresh timer). One reconcile:
//!
//! 1. removes a `capstan.dev/refresh` annotation (a `hard` refresh also bypasses the manifest
//!    cache);
//! 2. resolves `spec.source.targetRevision`, materializes the commit and renders it (blocking
//!    work on the blocking pool);
//! 3. compares the render with the live objects of the shared cache ([`live`]): per-object sync
//!    status and health;
//! 4. runs a requested `operation` (a manual sync or rollback), or an automated sync when the
//!    policy asks for one ([`sync`]), recording `status.operationState` and `status.history`;
//! 5. writes the status when it changed (and `reconciledAt` once per refresh interval).
//!
//! Locking: a rollback locks the application in `status.lock` (revision, who, when). Status is
//! written only through the status subresource, by the controller (and `capstan app unlock`),
//! so neither a restart nor a parent application re-applying this Application's manifest (which
//! never carries status) undoes it. While locked, automated sync and self-heal do nothing and a
//! manual sync to another revision is refused.

pub mod compare;
pub mod creds;
pub mod error;
pub mod events;
pub mod live;
pub mod manifests;
pub mod metrics;
pub mod ops;
pub mod shard;
pub mod sync;

pub use error::ControllerError;

use capstan_api::annotations as ann;
use capstan_api::application::{
    self as appapi, Application, ApplicationCondition, ApplicationStatus, ApplicationSummary,
    ComparedTo, Lock, Operation, OperationInitiator, OperationState, RevisionHistory,
    SyncOperation, SyncOperationResult, SyncStatus,
};
use capstan_engine::health::HealthChecker;
use capstan_render::Renderer;
use capstan_source::RepoCache;
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller as KubeController};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use crate::compare::{Comparison, Desired};
use crate::live::{AppKey, LiveCache, lock};

/// Controller settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Namespace whose Applications are reconciled (`None`: all namespaces).
    pub namespace: Option<String>,
    /// Default refresh interval (per application: the `capstan.dev/refresh-interval`
    /// annotation). Up to 10 % of jitter is added so that applications spread out.
    pub reconcile_interval: Duration,
    /// Applications reconciled at once.
    pub concurrency: u16,
    /// Longest wait for a wave's objects to become Healthy.
    pub wave_timeout: Duration,
    /// Shortest time between two self-heal syncs of one application (a controller fighting
    /// Capstan over a field must not turn into a hot loop).
    pub self_heal_backoff: Duration,
    /// Where Git repositories and trees are cached.
    pub cache_dir: std::path::PathBuf,
    /// Materialized trees nobody used for this long are deleted from the cache (and the files
    /// only they held). Keep it well above the refresh interval: the trees applications are
    /// deployed at are used at every refresh; one pruned too early is only written again.
    pub cache_max_unused: Duration,
    /// How often the cache is pruned of unused trees.
    pub cache_prune_interval: Duration,
    /// Where measurements go (syncs, reconcile/fetch/render durations, queue depth).
    pub recorder: Arc<dyn metrics::Recorder>,
    /// Shards and leases when several replicas share the applications ([`shard`]); `None`: this
    /// controller reconciles every application and takes no lease (one replica only).
    pub sharding: Option<shard::ShardConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace: Some(appapi::DEFAULT_NAMESPACE.to_string()),
            reconcile_interval: Duration::from_secs(180),
            concurrency: 16,
            wave_timeout: Duration::from_secs(600),
            self_heal_backoff: Duration::from_secs(5),
            cache_dir: std::env::temp_dir().join("capstan-cache"),
            cache_max_unused: Duration::from_secs(3600),
            cache_prune_interval: Duration::from_secs(600),
            recorder: metrics::none(),
            sharding: None,
        }
    }
}

/// What every reconcile shares.
pub struct Shared {
    /// Client of the controller's cluster.
    pub client: kube::Client,
    /// Settings.
    pub config: Config,
    /// Git.
    pub repos: Arc<RepoCache>,
    /// Manifests.
    pub renderer: Arc<Renderer>,
    /// Health checks.
    pub health: HealthChecker,
    /// Live objects.
    pub live: LiveCache,
    /// Kubernetes events on Applications.
    pub recorder: events::Recorder,
    /// Repository credentials from Secrets in the controller's namespace (the Applications').
    pub creds: creds::CredStore,
    /// The applications this replica reconciles now (all of them when not sharding).
    pub ownership: shard::Ownership,
    dirty: Arc<Mutex<HashSet<AppKey>>>,
    memo: Mutex<HashMap<AppKey, Memo>>,
    /// When the Application watch first showed each pending `capstan.dev/refresh` annotation:
    /// a normal refresh is content with Git as seen by a ref listing begun after that moment.
    refresh_seen: Mutex<HashMap<AppKey, Instant>>,
    /// The stop flag of each running sync, raised by the Application watch when a person marks
    /// the operation Terminating (one watch for all applications, none per sync).
    running: Mutex<HashMap<AppKey, sync::StopFlag>>,
    /// When [`RefreshAll::refresh_all`] last asked for a refresh of every application: a
    /// comparison older than this is due, as if the refresh interval had passed.
    refresh_all_at: Mutex<Option<Instant>>,
}

/// How long a ref listing of a repository serves the comparisons that nothing in particular
/// asked for (the periodic refresh, a watched object's change). Explicit requests (a refresh
/// annotation, a webhook, a spec change, an operation) are never served older answers than
/// the request.
const RECENT_CHECK: Duration = Duration::from_secs(2);

/// What the last reconcile of an application saw, to skip work when nothing changed.
#[derive(Clone)]
struct Memo {
    fingerprint: String,
    compared_at: Instant,
    last_self_heal: Option<Instant>,
    /// The resourceVersion our last write to the Application returned: a watch copy older than
    /// it lags behind our own write and is read again.
    written: Option<String>,
}

/// The controller.
pub struct Controller {
    shared: Arc<Shared>,
    shards: Option<shard::ShardManager>,
    triggers_tx: mpsc::UnboundedSender<AppKey>,
    triggers: mpsc::UnboundedReceiver<AppKey>,
    refresh_all: mpsc::UnboundedReceiver<()>,
    refresh_all_tx: mpsc::UnboundedSender<()>,
}

/// Asks a running [`Controller`] for one refresh of every application, exactly as the refresh
/// timer does when the interval has passed (no annotation is written, so nothing but the
/// refresh itself is done). `capstan bench scale` measures one refresh cycle with it.
#[derive(Clone)]
pub struct RefreshAll {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<()>,
}

impl RefreshAll {
    /// Queues every application for a refresh; returns at once.
    pub fn refresh_all(&self) {
        *lock(&self.shared.refresh_all_at) = Some(Instant::now());
        // The controller gone means there is nothing left to refresh.
        let _ = self.tx.send(());
    }
}

/// Installs (server-side applies) the Application CRD and waits until it is served.
pub async fn install_crd(client: &kube::Client) -> Result<(), ControllerError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = Application::crd();
    let name = format!("{}.{}", appapi::PLURAL, appapi::GROUP);
    api.patch(
        &name,
        &PatchParams::apply(ann::FIELD_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .map_err(|e| ControllerError::kube(format!("applying the CRD {name}"), e))?;
    wait_for_crd(&api, &name).await
}

/// Waits (up to 30 s) until the CRD `name` is Established, that is served.
pub async fn wait_for_crd(
    api: &Api<CustomResourceDefinition>,
    name: &str,
) -> Result<(), ControllerError> {
    for _ in 0..300 {
        let served = api
            .get_opt(name)
            .await
            .map_err(|e| ControllerError::kube(format!("reading the CRD {name}"), e))?
            .and_then(|c| c.status)
            .and_then(|s| s.conditions)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if served {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ControllerError::Other(format!(
        "the CRD {name} was applied but is not Established after 30s"
    )))
}

impl Controller {
    /// A controller over `client`'s cluster.
    pub fn new(client: kube::Client, config: Config) -> Result<Self, ControllerError> {
        let repos = RepoCache::new(config.cache_dir.join("git"))
            .map_err(|e| ControllerError::Other(format!("Git cache: {e}")))?;
        let renderer = Renderer::new(capstan_render::RendererConfig {
            scratch_dir: Some(config.cache_dir.join("scratch")),
            ..Default::default()
        })
        .map_err(|e| ControllerError::Other(format!("renderer: {e}")))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let dirty = Arc::new(Mutex::new(HashSet::new()));
        let mut recorder = events::recorder(client.clone(), "capstan-controller");
        let (shards, ownership) = match &config.sharding {
            Some(sharding) => {
                sharding.validate().map_err(ControllerError::Other)?;
                recorder = recorder.with_instance(&sharding.identity);
                let (manager, ownership) = shard::ShardManager::new(
                    client.clone(),
                    sharding.clone(),
                    Arc::clone(&config.recorder),
                );
                (Some(manager), ownership)
            }
            None => (None, shard::Ownership::everything()),
        };
        let shared = Shared {
            live: LiveCache::new(client.clone(), tx.clone(), Arc::clone(&dirty)),
            recorder,
            ownership,
            creds: creds::CredStore::new(
                client.clone(),
                config
                    .namespace
                    .as_deref()
                    .unwrap_or(appapi::DEFAULT_NAMESPACE),
            ),
            client,
            config,
            repos: Arc::new(repos),
            renderer: Arc::new(renderer),
            health: HealthChecker::new(),
            dirty,
            memo: Mutex::new(HashMap::new()),
            refresh_seen: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            refresh_all_at: Mutex::new(None),
        };
        let (refresh_all_tx, refresh_all) = mpsc::unbounded_channel();
        Ok(Controller {
            shared: Arc::new(shared),
            shards,
            triggers_tx: tx,
            triggers: rx,
            refresh_all,
            refresh_all_tx,
        })
    }

    /// A handle to refresh every application at once (see [`RefreshAll`]).
    pub fn refresh_handle(&self) -> RefreshAll {
        RefreshAll {
            shared: Arc::clone(&self.shared),
            tx: self.refresh_all_tx.clone(),
        }
    }

    /// The shared state (for tests and the HTTP server).
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Runs until the Application watch ends (it does not, short of a shutdown of the task).
    /// Dropping the future stops everything at once, as a crash would: leases held are not
    /// released (they expire). [`Controller::run_until`] stops cleanly.
    pub async fn run(self) {
        self.run_until(std::future::pending()).await;
    }

    /// Runs until `stop` completes, then stops reconciling and releases the shard leases held,
    /// so that other replicas take over at once (a rolling update loses no time). Reconciles in
    /// flight are dropped, which is safe: an interrupted sync is resumed by whoever reconciles
    /// the application next.
    pub async fn run_until(self, stop: impl std::future::Future<Output = ()>) {
        let shared = self.shared;
        let apps: Api<Application> = match &shared.config.namespace {
            Some(ns) => Api::namespaced(shared.client.clone(), ns),
            None => Api::all(shared.client.clone()),
        };
        let gauge = Arc::clone(&shared);
        let triggers = tokio_stream_from(self.triggers).map(move |(ns, name)| {
            // The live cache marked the application dirty before sending it.
            gauge.config.recorder.queue_depth(lock(&gauge.dirty).len());
            ObjectRef::<Application>::new(&name).within(&ns)
        });
        let config = kube::runtime::controller::Config::default()
            .concurrency(shared.config.concurrency)
            .debounce(Duration::from_millis(50));
        // The Application watch, with a look at each event: when a refresh annotation first
        // appeared (see `refresh_seen`), whether a running sync is to be terminated, and what
        // to forget about a deleted application.
        let (reader, writer) = kube::runtime::reflector::store();
        let seen = Arc::clone(&shared);
        let stream = kube::runtime::reflector(
            writer,
            watcher(apps, watcher::Config::default()).default_backoff(),
        )
        .map(move |event| {
            match &event {
                Ok(watcher::Event::Apply(app) | watcher::Event::InitApply(app)) => {
                    observe_app(&seen, app)
                }
                Ok(watcher::Event::Delete(app)) => forget_app(&seen, app),
                _ => {}
            }
            event
        })
        .applied_objects();
        let refresh_all = tokio_stream_from(self.refresh_all);
        // Ends with this future, however it ends (a caller may abort the task running it).
        let _pruner = AbortOnDrop(tokio::spawn(prune_cache(Arc::clone(&shared))));
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let leases = self.shards.map(|mut manager| {
            AbortOnDrop(tokio::spawn(async move {
                tokio::select! {
                    () = manager.run() => {}
                    _ = release_rx => {}
                }
                manager.release_all().await;
            }))
        });
        let _follower = shared.ownership.follow().map(|follower| {
            AbortOnDrop(tokio::spawn(follow_shards(
                Arc::clone(&shared),
                follower,
                reader.clone(),
                self.triggers_tx,
            )))
        });
        let reconciling = KubeController::for_stream(stream, reader)
            .with_config(config)
            .reconcile_on(triggers)
            .reconcile_all_on(refresh_all)
            .run(reconcile_entry, error_policy, shared)
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "reconcile");
                }
            });
        tokio::select! {
            () = reconciling => {}
            () = stop => {}
        }
        if let Some(mut leases) = leases {
            let _ = release_tx.send(());
            if tokio::time::timeout(Duration::from_secs(5), &mut leases.0)
                .await
                .is_err()
            {
                tracing::warn!("the shard leases were not released within 5s; they expire");
            }
        }
    }
}

/// Reacts to the shards this replica gains and loses: the applications of a shard just taken
/// are queued at once (their shard's previous owner may have left work half done), and what was
/// remembered about the applications of a shard lost is forgotten (a later owner of the shard
/// may change them; comparing again when it comes back is the only safe start).
async fn follow_shards(
    shared: Arc<Shared>,
    mut follower: shard::Follower,
    apps: kube::runtime::reflector::Store<Application>,
    triggers: mpsc::UnboundedSender<AppKey>,
) {
    while let Some((acquired, lost)) = follower.next().await {
        let of_shards = |shards: &[u32]| -> Vec<AppKey> {
            apps.state()
                .iter()
                .map(|app| (app.namespace().to_string(), app.name().to_string()))
                .filter(|(ns, name)| shards.contains(&shared.ownership.shard_of(ns, name)))
                .collect()
        };
        if !lost.is_empty() {
            let mut memo = lock(&shared.memo);
            for key in of_shards(&lost) {
                memo.remove(&key);
            }
        }
        if !acquired.is_empty() {
            let keys = of_shards(&acquired);
            tracing::info!(
                shards = ?acquired,
                applications = keys.len(),
                "reconciling the applications of the shards acquired"
            );
            lock(&shared.dirty).extend(keys.iter().cloned());
            for key in keys {
                // The controller gone means there is nothing left to reconcile.
                let _ = triggers.send(key);
            }
        }
    }
}

/// A running sync's entry in `Shared::running`, removed however the sync ends: also when its
/// reconcile is dropped part-way (its shard was lost).
struct RunningSync<'a> {
    shared: &'a Shared,
    key: AppKey,
}

impl<'a> RunningSync<'a> {
    fn register(shared: &'a Shared, key: AppKey, stop: &sync::StopFlag) -> Self {
        lock(&shared.running).insert(key.clone(), stop.clone());
        RunningSync { shared, key }
    }
}

impl Drop for RunningSync<'_> {
    fn drop(&mut self) {
        lock(&self.shared.running).remove(&self.key);
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Deletes the cache's trees (and blobs) unused for `cache_max_unused`, every
/// `cache_prune_interval`, so that a long-running controller following busy repositories does
/// not fill its disk. Trees a reconcile holds are never deleted (see `RepoCache::prune`).
async fn prune_cache(shared: Arc<Shared>) {
    let every = shared
        .config
        .cache_prune_interval
        .max(Duration::from_secs(1));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: nothing to prune at start that cannot wait one interval.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let repos = Arc::clone(&shared.repos);
        let max_unused = shared.config.cache_max_unused;
        match tokio::task::spawn_blocking(move || repos.prune(max_unused)).await {
            Ok(Ok(report)) => {
                let removed =
                    report.trees_removed + report.blobs_removed + report.temporaries_removed;
                if removed + report.repositories_repacked > 0 {
                    tracing::info!(
                        repacked = report.repositories_repacked,
                        trees = report.trees_removed,
                        blobs = report.blobs_removed,
                        temporaries = report.temporaries_removed,
                        bytes = report.bytes_freed,
                        trees_kept = report.trees_kept,
                        "pruned the source cache"
                    );
                }
                for failure in &report.failures {
                    tracing::warn!(error = %failure, "pruning the source cache");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "pruning the source cache"),
            Err(e) => tracing::warn!(error = %e, "the source cache pruner stopped short"),
        }
    }
}

/// What the Application watch notes of an added or changed application.
fn observe_app(shared: &Shared, app: &Application) {
    let key: AppKey = (app.namespace().to_string(), app.name().to_string());
    {
        let mut map = lock(&shared.refresh_seen);
        if app.annotation(ann::REFRESH).is_some() {
            map.entry(key.clone()).or_insert_with(Instant::now);
        } else {
            map.remove(&key);
        }
    }
    let terminating = app
        .status
        .as_ref()
        .and_then(|s| s.operation_state.as_ref())
        .is_some_and(|s| s.phase == appapi::PHASE_TERMINATING);
    if terminating && let Some(stop) = lock(&shared.running).get(&key) {
        tracing::info!(
            app = app.name(),
            "terminating the running operation on request"
        );
        stop.stop();
    }
}

/// An application is gone: what was remembered about it goes too.
fn forget_app(shared: &Shared, app: &Application) {
    let key: AppKey = (app.namespace().to_string(), app.name().to_string());
    lock(&shared.refresh_seen).remove(&key);
    lock(&shared.memo).remove(&key);
    if let Some(stop) = lock(&shared.running).get(&key) {
        stop.stop();
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn error_policy(_app: Arc<Application>, err: &ControllerError, _shared: Arc<Shared>) -> Action {
    tracing::warn!(error = %err, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// A duration as the annotations write it: `500ms`, `30s`, `5m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, ""), |i| s.split_at(i));
    let n: f64 = number.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Jitter in [0, 10 %) of `interval`, different per application and per call.
fn with_jitter(interval: Duration, key: &AppKey) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    let fraction = (h.finish() % 1000) as f64 / 10_000.0;
    interval + interval.mul_f64(fraction)
}

/// The inputs that, when they change, call for a new comparison.
fn fingerprint(app: &Application) -> String {
    json!({
        "generation": app.metadata.generation,
        "annotations": app.metadata.annotations,
        "deleting": app.metadata.deletion_timestamp.is_some(),
        "lock": app.lock().map(|l| (&l.revision, &l.locked_at)),
        "operation": app.operation,
    })
    .to_string()
}

fn interval_of(shared: &Shared, app: &Application) -> Duration {
    app.annotation(ann::REFRESH_INTERVAL)
        .and_then(parse_duration)
        .unwrap_or(shared.config.reconcile_interval)
}

/// One reconcile, when this replica holds the application's shard; dropped part-way when the
/// shard is lost meanwhile (nothing more is written for an application another replica may
/// now reconcile).
async fn reconcile_entry(
    app: Arc<Application>,
    shared: Arc<Shared>,
) -> Result<Action, ControllerError> {
    let Some(claim) = shared.ownership.claim(app.namespace(), app.name()) else {
        // Another replica's; this one is told when it takes the shard (`follow_shards`).
        return Ok(Action::await_change());
    };
    tokio::select! {
        result = reconcile_owned(app, Arc::clone(&shared)) => result,
        () = claim.lost() => Ok(Action::await_change()),
    }
}

async fn reconcile_owned(
    app: Arc<Application>,
    shared: Arc<Shared>,
) -> Result<Action, ControllerError> {
    let key: AppKey = (app.namespace().to_string(), app.name().to_string());
    let interval = interval_of(&shared, &app);
    let fp = fingerprint(&app);
    let memo = lock(&shared.memo).get(&key).cloned();
    let (dirty, waiting) = {
        let mut set = lock(&shared.dirty);
        (set.remove(&key), set.len())
    };
    shared.config.recorder.queue_depth(waiting);
    let refresh_all_at = *lock(&shared.refresh_all_at);
    let due = memo.as_ref().is_none_or(|m| {
        m.compared_at.elapsed() >= interval || refresh_all_at.is_some_and(|t| m.compared_at < t)
    });
    let changed = memo.as_ref().is_none_or(|m| m.fingerprint != fp);
    if !(dirty || due || changed) {
        // Woken by our own status write or a duplicate trigger: nothing to do before the next
        // refresh.
        let elapsed = memo.map_or(Duration::ZERO, |m| m.compared_at.elapsed());
        return Ok(Action::requeue(with_jitter(
            interval.saturating_sub(elapsed),
            &key,
        )));
    }
    let started = Instant::now();
    let since = match app.annotation(ann::REFRESH) {
        Some("hard") => started,
        Some(_) => lock(&shared.refresh_seen)
            .get(&key)
            .copied()
            .unwrap_or(started),
        None if !changed => started.checked_sub(RECENT_CHECK).unwrap_or(started),
        None => started,
    };
    let last_self_heal = memo.as_ref().and_then(|m| m.last_self_heal);
    let written = memo.and_then(|m| m.written);
    let result = reconcile_changed(
        &shared,
        &app,
        key,
        interval,
        fp,
        Freshness { due, since },
        last_self_heal,
        written,
    )
    .await;
    shared.config.recorder.reconcile_finished(started.elapsed());
    result
}

/// The part of [`reconcile_entry`] that does work (and is measured).
#[allow(clippy::too_many_arguments)]
async fn reconcile_changed(
    shared: &Arc<Shared>,
    app: &Arc<Application>,
    key: AppKey,
    interval: Duration,
    fp: String,
    fresh: Freshness,
    last_self_heal: Option<Instant>,
    written: Option<String>,
) -> Result<Action, ControllerError> {
    // The watch's copy may lag behind our own last write; decisions about operations and
    // history are made on a copy that includes it, read again only when the watch's is older.
    let current;
    let app: &Application = match &written {
        Some(rv) if !includes_write(app.metadata.resource_version.as_deref(), rv) => {
            let apps: Api<Application> = Api::namespaced(shared.client.clone(), app.namespace());
            let Some(read) = apps.get_opt(app.name()).await.map_err(|e| {
                ControllerError::kube(format!("reading application {}", app.name()), e)
            })?
            else {
                lock(&shared.memo).remove(&key);
                return Ok(Action::await_change());
            };
            current = read;
            &current
        }
        _ => app,
    };
    if app.metadata.deletion_timestamp.is_some() {
        return finalize(shared, app).await;
    }
    let outcome = reconcile(shared, app, fresh, last_self_heal).await?;
    lock(&shared.memo).insert(
        key.clone(),
        Memo {
            fingerprint: outcome.fingerprint.unwrap_or(fp),
            compared_at: Instant::now(),
            last_self_heal: outcome.self_healed_at.or(last_self_heal),
            written: outcome.written.or(written),
        },
    );
    Ok(Action::requeue(with_jitter(
        outcome.requeue.unwrap_or(interval),
        &key,
    )))
}

/// Whether `seen` (a watch copy's resourceVersion) includes the write that returned `written`.
/// resourceVersions are opaque to clients in general, but the API server (etcd's revision) and
/// the embedded cluster hand out increasing integers; anything else is only trusted when equal,
/// and then the object is read again.
fn includes_write(seen: Option<&str>, written: &str) -> bool {
    match seen {
        Some(seen) if seen == written => true,
        Some(seen) => matches!(
            (seen.parse::<u64>(), written.parse::<u64>()),
            (Ok(a), Ok(b)) if a >= b
        ),
        None => false,
    }
}

/// What a reconcile was asked for.
#[derive(Clone, Copy)]
struct Freshness {
    /// The refresh interval has passed: `reconciledAt` is written even if nothing changed.
    due: bool,
    /// Git as seen by a ref listing begun at or after this moment is recent enough.
    since: Instant,
}

struct Outcome {
    requeue: Option<Duration>,
    fingerprint: Option<String>,
    self_healed_at: Option<Instant>,
    /// The resourceVersion returned by the last write to the Application.
    written: Option<String>,
}

fn condition(type_: &str, message: String, previous: &ApplicationStatus) -> ApplicationCondition {
    let since = previous
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.message == message)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(now_rfc3339);
    ApplicationCondition {
        type_: type_.to_string(),
        message,
        last_transition_time: Some(since),
    }
}

/// One reconcile of one application.
async fn reconcile(
    shared: &Shared,
    app: &Application,
    fresh: Freshness,
    last_self_heal: Option<Instant>,
) -> Result<Outcome, ControllerError> {
    let Freshness { due, since } = fresh;
    let apps: Api<Application> = Api::namespaced(shared.client.clone(), app.namespace());
    let refresh = app.annotation(ann::REFRESH).map(str::to_string);
    let hard = refresh.as_deref() == Some("hard");
    let previous = app.status_or_default();
    let mut status = previous.clone();
    let mut outcome = Outcome {
        requeue: None,
        fingerprint: None,
        self_healed_at: None,
        written: None,
    };

    // The comparison against the spec's source and revision.
    let compared = compare_app(shared, app, &app.spec.source, None, hard, since).await;
    status.conditions.retain(|c| c.type_ == "SyncError");
    let mut comparison = None;
    match compared {
        Ok(cmp) => {
            record_comparison(&mut status, app, &cmp);
            for s in &cmp.shared {
                status
                    .conditions
                    .push(condition("SharedResourceWarning", s.clone(), &previous));
            }
            comparison = Some(cmp);
        }
        Err(message) => {
            let kind = if message.starts_with("spec.") {
                "InvalidSpecError"
            } else {
                "ComparisonError"
            };
            status.sync = Some(SyncStatus {
                status: appapi::SYNC_UNKNOWN.to_string(),
                revision: previous
                    .sync
                    .as_ref()
                    .map(|s| s.revision.clone())
                    .unwrap_or_default(),
                compared_to: Some(ComparedTo {
                    source: app.spec.source.clone(),
                    destination: app.spec.destination.clone(),
                }),
            });
            status.conditions.push(condition(kind, message, &previous));
        }
    }

    // A requested operation, or an automated sync.
    let mut ran_operation = false;
    let mut clear_operation = false;
    // An operation still Running in the status was interrupted (the controller stopped in the
    // middle of it: within one process the final status is written before the next reconcile).
    // It is run again from the start: applying is idempotent, and it ends in one history entry.
    let interrupted = previous
        .operation_state
        .as_ref()
        .filter(|s| s.phase == appapi::PHASE_RUNNING)
        .map(|s| s.operation.clone());
    // Terminating with no sync running (the controller stopped while it was asked to stop):
    // the stop is complete.
    if let Some(state) = status
        .operation_state
        .as_mut()
        .filter(|s| s.phase == appapi::PHASE_TERMINATING)
    {
        state.phase = appapi::PHASE_FAILED.to_string();
        state.message = appapi::MESSAGE_TERMINATED.to_string();
        state.finished_at = Some(now_rfc3339());
        let op = state.operation.clone();
        events::emit(
            shared,
            app,
            true,
            "OperationTerminated",
            format!(
                "sync initiated by {} was terminated on request",
                events::initiator(&op.initiated_by)
            ),
        )
        .await;
    }
    if app.operation.is_none()
        && let Some(op) = interrupted
    {
        tracing::info!(app = app.name(), "resuming an interrupted sync");
        run_operation(shared, app, op, &mut status, 0, comparison.as_ref()).await;
        ran_operation = true;
    } else if let Some(op) = &app.operation {
        let already_done = previous.operation_state.as_ref().is_some_and(|s| {
            &s.operation == op && s.phase != appapi::PHASE_RUNNING && s.finished_at.is_some()
        });
        if !already_done {
            run_operation(shared, app, op.clone(), &mut status, 0, comparison.as_ref()).await;
            ran_operation = true;
        }
        // The operation is done: it is cleared (as Argo CD does) once its result is written
        // below, so that whoever sees `operation` gone also sees the result, and a new one can
        // be requested.
        clear_operation = true;
    } else if let Some(cmp) = &comparison
        && let Some(automated) = app
            .spec
            .sync_policy
            .as_ref()
            .and_then(|p| p.automated.clone())
        && cmp.sync_status == appapi::SYNC_OUT_OF_SYNC
        && status.lock.is_none()
        && cmp.shared.is_empty()
        && !cmp.only_unprunable_left(automated.prune)
    {
        let last = previous.operation_state.as_ref();
        // A selective sync deployed part of the revision only: it is no attempt of it.
        let last = last.filter(|s| {
            s.operation
                .sync
                .as_ref()
                .is_none_or(|o| o.resources.is_empty())
        });
        let attempted = last.is_some_and(|s| {
            s.sync_result.as_ref().is_some_and(|r| {
                r.revision == cmp.desired.revision && r.source.as_ref() == Some(&app.spec.source)
            }) || (s.phase != appapi::PHASE_SUCCEEDED
                // A failed automated attempt at this revision is not repeated (as Argo CD);
                // a refused manual request (by the lock, say) does not count.
                && s.operation.initiated_by.automated
                && s.operation
                    .sync
                    .as_ref()
                    .is_some_and(|o| o.revision == cmp.desired.revision))
        });
        let last_succeeded = last.is_some_and(|s| s.phase == appapi::PHASE_SUCCEEDED);
        let self_heal = automated.self_heal && attempted && last_succeeded;
        let backoff_left = last_self_heal
            .map(|t| shared.config.self_heal_backoff.saturating_sub(t.elapsed()))
            .unwrap_or(Duration::ZERO);
        // spec.syncPolicy.retry: a failed automated sync is tried again after a backoff.
        let retry = last
            .filter(|s| {
                // A terminated sync was stopped by a person: it is not retried.
                attempted
                    && s.phase == appapi::PHASE_FAILED
                    && s.operation.initiated_by.automated
                    && s.message != appapi::MESSAGE_TERMINATED
            })
            .and_then(|s| {
                let policy = app.spec.sync_policy.as_ref()?.retry.as_ref()?;
                if policy.limit >= 0 && s.retry_count >= policy.limit {
                    return None;
                }
                let delay = retry_delay(policy, s.retry_count);
                let finished = s
                    .finished_at
                    .as_deref()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())?;
                let elapsed = (chrono::Utc::now() - finished.with_timezone(&chrono::Utc))
                    .to_std()
                    .unwrap_or(Duration::ZERO);
                Some((s.retry_count + 1, delay.saturating_sub(elapsed)))
            });
        if let Some((_, wait)) = retry
            && !wait.is_zero()
        {
            outcome.requeue = Some(wait + Duration::from_millis(10));
        }
        let retry_now = retry.filter(|(_, wait)| wait.is_zero()).map(|(n, _)| n);
        if !attempted || (self_heal && backoff_left.is_zero()) || retry_now.is_some() {
            let op = Operation {
                sync: Some(SyncOperation {
                    revision: cmp.desired.revision.clone(),
                    prune: automated.prune,
                    ..SyncOperation::default()
                }),
                initiated_by: OperationInitiator {
                    username: String::new(),
                    automated: true,
                },
                ..Operation::default()
            };
            run_operation(
                shared,
                app,
                op,
                &mut status,
                retry_now.unwrap_or(0),
                comparison.as_ref(),
            )
            .await;
            ran_operation = true;
            if self_heal {
                outcome.self_healed_at = Some(Instant::now());
            }
        } else if self_heal {
            outcome.requeue = Some(backoff_left + Duration::from_millis(10));
        }
    }

    if ran_operation {
        // Compare again so that the status shows the state after the sync.
        if let Ok(cmp) = compare_app(shared, app, &app.spec.source, None, false, since).await {
            record_comparison(&mut status, app, &cmp);
        }
        // The operation field is cleared below: remember the app without it so the watch
        // event of that change does not cause another full reconcile.
        let mut after = app.clone();
        after.operation = None;
        if let Some(a) = after.metadata.annotations.as_mut() {
            a.remove(ann::REFRESH);
        }
        outcome.fingerprint = Some(fingerprint(&after));
    }

    // Each form is serialized once: compared without reconciledAt, then written as the body.
    let mut old = serde_json::to_value(&previous).unwrap_or(Value::Null);
    let mut new = serde_json::to_value(&status).unwrap_or(Value::Null);
    if let (Some(o), Some(n)) = (old.as_object_mut(), new.as_object_mut()) {
        o.shift_remove("reconciledAt");
        n.shift_remove("reconciledAt");
    }
    if old != new || due || refresh.is_some() || previous.reconciled_at.is_none() {
        let now = now_rfc3339();
        status.reconciled_at = Some(now.clone());
        let body = match new {
            Value::Object(mut n) => {
                n.insert("reconciledAt".into(), Value::String(now));
                Value::Object(n)
            }
            // A status struct always serializes to an object; the general path covers the rest.
            _ => serde_json::to_value(&status).unwrap_or_else(|_| json!({})),
        };
        outcome.written = patch_status(&apps, app.name(), &old, body).await?;
    }
    // What the reconcile took from the Application itself goes in one write: the finished
    // operation (cleared as Argo CD does; a controller stopped right before this finds the
    // result recorded for the same operation and only clears it) and the refresh request.
    let mut taken = serde_json::Map::new();
    if clear_operation {
        taken.insert("operation".into(), Value::Null);
    }
    if refresh.is_some() {
        taken.insert(
            "metadata".into(),
            json!({"annotations": {ann::REFRESH: null}}),
        );
    }
    if !taken.is_empty() {
        let patched = apps
            .patch(
                app.name(),
                &PatchParams::default(),
                &Patch::Merge(Value::Object(taken)),
            )
            .await;
        match patched {
            Ok(a) => outcome.written = a.metadata.resource_version,
            Err(e) => tracing::warn!(
                app = app.name(),
                error = %e,
                "cannot clear the operation or the refresh request"
            ),
        }
    }
    if refresh.is_some() && outcome.fingerprint.is_none() {
        let mut after = app.clone();
        if let Some(a) = after.metadata.annotations.as_mut() {
            a.remove(ann::REFRESH);
        }
        outcome.fingerprint = Some(fingerprint(&after));
    }
    Ok(outcome)
}

/// What a comparison of the spec's source says, in `status`: sync, health, resources, images
/// and source type.
fn record_comparison(status: &mut ApplicationStatus, app: &Application, cmp: &Comparison) {
    status.sync = Some(SyncStatus {
        status: cmp.sync_status.to_string(),
        revision: cmp.desired.revision.clone(),
        compared_to: Some(ComparedTo {
            source: app.spec.source.clone(),
            destination: app.spec.destination.clone(),
        }),
    });
    status.health = Some(cmp.health.clone());
    status.resources = cmp.resources.clone();
    status.summary = (!cmp.images.is_empty()).then(|| ApplicationSummary {
        images: cmp.images.clone(),
    });
    status.source_type = Some(cmp.desired.tool.clone());
}

/// Writes `status` with a merge patch; fields present before and absent now are nulled (an
/// operation recorded without a revision must not keep the previous operation's).
/// Returns the Application's new resourceVersion.
async fn write_status(
    apps: &Api<Application>,
    name: &str,
    previous: &ApplicationStatus,
    status: &ApplicationStatus,
) -> Result<Option<String>, ControllerError> {
    let body = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    let previous = serde_json::to_value(previous).unwrap_or(Value::Null);
    patch_status(apps, name, &previous, body).await
}

/// Makes `new` a merge patch (RFC 7386) that turns `old` into `new`: every key of `old` absent
/// from `new` is set to null, at every depth where both are objects (a merge patch merges
/// objects key by key, so a key left out is kept, not removed). Arrays and scalars are replaced
/// whole by a merge patch and need nothing.
fn null_removed(old: &Value, new: &mut Value) {
    if let (Some(old), Some(new)) = (old.as_object(), new.as_object_mut()) {
        for (k, old_value) in old {
            match new.get_mut(k) {
                None => {
                    new.insert(k.clone(), Value::Null);
                }
                Some(new_value) => null_removed(old_value, new_value),
            }
        }
    }
}

/// Writes the serialized status `body` with a merge patch; fields of the serialized
/// `previous` status absent from `body` are nulled, at any depth. Returns the new
/// resourceVersion.
async fn patch_status(
    apps: &Api<Application>,
    name: &str,
    previous: &Value,
    mut body: Value,
) -> Result<Option<String>, ControllerError> {
    null_removed(previous, &mut body);
    let written = apps
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": body })),
        )
        .await
        .map_err(|e| {
            ControllerError::kube(format!("writing the status of application {name}"), e)
        })?;
    Ok(written.metadata.resource_version)
}

async fn compare_app(
    shared: &Shared,
    app: &Application,
    source: &capstan_api::application::ApplicationSource,
    revision: Option<&str>,
    hard: bool,
    since: Instant,
) -> Result<Comparison, String> {
    compare::check_destination(app)?;
    let mut desired: Desired = compare::render(shared, app, source, revision, hard, since).await?;
    let kinds = compare::prepare_kinds(shared, app, &mut desired).await?;
    compare::compare(shared, app, desired, &kinds)
}

/// Runs a sync operation and records it in `status` (operationState, history, lock), and its
/// result in the metrics.
async fn run_operation(
    shared: &Shared,
    app: &Application,
    op: Operation,
    status: &mut ApplicationStatus,
    retry_count: i64,
    fresh: Option<&Comparison>,
) {
    execute_operation(shared, app, op, status, retry_count, fresh).await;
    if let Some(state) = &status.operation_state {
        shared.config.recorder.sync_finished(&state.phase);
    }
}

/// Runs a sync operation and records it in `status`. Progress is written to the status as the
/// sync goes. `fresh` is the comparison this reconcile just made of the spec's source; it is
/// used instead of rendering again when the operation asks for that source at that revision.
async fn execute_operation(
    shared: &Shared,
    app: &Application,
    op: Operation,
    status: &mut ApplicationStatus,
    retry_count: i64,
    fresh: Option<&Comparison>,
) {
    let started_at = now_rfc3339();
    let apps: Api<Application> = Api::namespaced(shared.client.clone(), app.namespace());
    let mut state = OperationState {
        operation: op.clone(),
        phase: appapi::PHASE_RUNNING.to_string(),
        message: "starting".into(),
        sync_result: None,
        started_at: started_at.clone(),
        finished_at: None,
        retry_count,
    };
    let sync_op = op.sync.clone().unwrap_or_default();
    let lock_now = status.lock.clone();
    // Which source and revision: a rollback's (or an explicit one), else the locked one, else
    // the spec's.
    let (source, revision) = match (&sync_op.source, &lock_now) {
        (Some(s), _) => (
            s.clone(),
            (!sync_op.revision.is_empty()).then(|| sync_op.revision.clone()),
        ),
        (None, Some(l)) if sync_op.revision.is_empty() => (
            l.source.clone().unwrap_or_else(|| app.spec.source.clone()),
            Some(l.revision.clone()),
        ),
        _ => (
            app.spec.source.clone(),
            (!sync_op.revision.is_empty()).then(|| sync_op.revision.clone()),
        ),
    };
    let finish = |state: &mut OperationState, phase: &str, message: String| {
        state.phase = phase.to_string();
        state.message = message;
        state.finished_at = Some(now_rfc3339());
    };

    let reusable = fresh.filter(|c| {
        source == app.spec.source
            && revision
                .as_deref()
                .is_none_or(|r| r == c.desired.revision.as_str())
    });
    let compared = match reusable {
        Some(c) => Ok(c.clone()),
        None => {
            compare_app(
                shared,
                app,
                &source,
                revision.as_deref(),
                false,
                Instant::now(),
            )
            .await
        }
    };
    let cmp = match compared {
        Ok(c) => c,
        Err(message) => {
            finish(
                &mut state,
                appapi::PHASE_ERROR,
                format!("nothing applied: {message}"),
            );
            status.operation_state = Some(state);
            return;
        }
    };
    if let Some(l) = &lock_now
        && sync_op.rollback_id.is_none()
        && cmp.desired.revision != l.revision
    {
        finish(
            &mut state,
            appapi::PHASE_FAILED,
            format!(
                "application is locked at {} by {} since {}: a sync to {} is refused; run `capstan app unlock {}` first",
                compare::short(&l.revision),
                l.locked_by,
                l.locked_at,
                compare::short(&cmp.desired.revision),
                app.name()
            ),
        );
        let who = events::initiator(&op.initiated_by);
        events::emit(
            shared,
            app,
            true,
            "OperationRefused",
            format!("sync initiated by {who} refused: {}", state.message),
        )
        .await;
        status.operation_state = Some(state);
        return;
    }
    state.message = format!("syncing to {}", compare::short(&cmp.desired.revision));
    let what = match sync_op.rollback_id {
        Some(id) => format!(
            "rollback to history entry {id} ({})",
            compare::short(&cmp.desired.revision)
        ),
        None if !sync_op.resources.is_empty() => format!(
            "selective sync of {} to {}",
            sync_op
                .resources
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            compare::short(&cmp.desired.revision)
        ),
        None => format!("sync to {}", compare::short(&cmp.desired.revision)),
    };
    let who = events::initiator(&op.initiated_by);
    // Registered before Running is written, so a Terminating written after it is seen by
    // the Application watch (`observe_app`).
    let stop = sync::StopFlag::default();
    let key: AppKey = (app.namespace().to_string(), app.name().to_string());
    let registered = RunningSync::register(shared, key, &stop);
    let mut running = status.clone();
    running.operation_state = Some(state.clone());
    // The event and the Running state are independent writes: sent together, both done before
    // anything is applied.
    let (_, recorded) = tokio::join!(
        events::emit(
            shared,
            app,
            false,
            "OperationStarted",
            format!("{what} started, initiated by {who}"),
        ),
        write_status(&apps, app.name(), status, &running)
    );
    if let Err(e) = recorded {
        tracing::warn!(app = app.name(), error = %e, "cannot record the running operation");
    }
    let policy = app.spec.sync_policy.clone().unwrap_or_default();
    let mut sync_options = policy.sync_options.clone();
    sync_options.extend(sync_op.sync_options.iter().cloned());
    let req = sync::SyncRequest {
        app_namespace: app.namespace().to_string(),
        app_name: app.name().to_string(),
        destination_namespace: compare::dest_namespace(app),
        sync_options,
        prune: sync_op.prune,
        allow_empty: policy.automated.as_ref().is_some_and(|a| a.allow_empty),
        dry_run: sync_op.dry_run,
        resources: sync_op.resources.clone(),
        stop,
    };
    let progress_apps = apps.clone();
    let name = app.name().to_string();
    let revision_synced = cmp.desired.revision.clone();
    // The objects' health as the sync sees it, kept across groups so that each write carries
    // everything seen so far.
    let live_resources = Arc::new(Mutex::new(status.resources.clone()));
    let progress = move |report: sync::ProgressReport| -> futures::future::BoxFuture<'static, ()> {
        let apps = progress_apps.clone();
        let name = name.clone();
        let mut body = json!({"status": {"operationState": {
            "message": report.message,
            "syncResult": {"resources": report.resources, "revision": revision_synced},
        }}});
        if !report.health.is_empty() {
            let mut resources = lock(&live_resources);
            for h in &report.health {
                if let Some(r) = resources.iter_mut().find(|r| {
                    r.group == h.group
                        && r.kind == h.kind
                        && r.namespace == h.namespace
                        && r.name == h.name
                }) {
                    r.health = Some(appapi::HealthStatus {
                        status: h.status.clone(),
                        message: (!h.message.is_empty()).then(|| h.message.clone()),
                    });
                }
            }
            body["status"]["resources"] = json!(*resources);
        }
        // Awaited by the executor, so a progress write never lands after the final status;
        // it is informative, so a failed write is not an error. The phase is not written: a
        // person may have set it to Terminating meanwhile.
        Box::pin(async move {
            let _ = apps
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(body))
                .await;
        })
    };
    let result = sync::execute(shared, &cmp, &req, &progress).await;
    drop(registered);
    state.sync_result = Some(SyncOperationResult {
        resources: result.resources,
        revision: cmp.desired.revision.clone(),
        source: Some(source.clone()),
    });
    let selective = !sync_op.resources.is_empty();
    if result.succeeded {
        finish(&mut state, appapi::PHASE_SUCCEEDED, result.message);
        status.conditions.retain(|c| c.type_ != "SyncError");
        // A selective sync is not recorded in history (as in Argo CD): it did not deploy the
        // revision as a whole, so it is no state to roll back to.
        if !sync_op.dry_run && !selective {
            let id = status.history.iter().map(|h| h.id).max().unwrap_or(-1) + 1;
            status.history.push(RevisionHistory {
                id,
                revision: cmp.desired.revision.clone(),
                deployed_at: now_rfc3339(),
                deploy_started_at: Some(started_at),
                source: source.clone(),
                initiated_by: op.initiated_by.clone(),
            });
            let limit = app.revision_history_limit();
            if status.history.len() > limit {
                let excess = status.history.len() - limit;
                status.history.drain(..excess);
            }
            if let Some(rollback_id) = sync_op.rollback_id {
                status.lock = Some(Lock {
                    revision: cmp.desired.revision.clone(),
                    source: Some(source.clone()),
                    history_id: Some(rollback_id),
                    locked_by: if op.initiated_by.username.is_empty() {
                        "unknown".into()
                    } else {
                        op.initiated_by.username.clone()
                    },
                    locked_at: now_rfc3339(),
                });
            }
        }
    } else {
        finish(&mut state, appapi::PHASE_FAILED, result.message.clone());
    }
    if result.terminated {
        events::emit(
            shared,
            app,
            true,
            "OperationTerminated",
            format!("{what} initiated by {who} was terminated on request"),
        )
        .await;
    } else if state.phase == appapi::PHASE_SUCCEEDED {
        events::emit(
            shared,
            app,
            false,
            "OperationCompleted",
            format!("{what} succeeded, initiated by {who}: {}", state.message),
        )
        .await;
    } else {
        events::emit(
            shared,
            app,
            true,
            "OperationFailed",
            format!("{what} failed, initiated by {who}: {}", state.message),
        )
        .await;
    }
    if let Some(l) = status
        .lock
        .as_ref()
        .filter(|_| sync_op.rollback_id.is_some() && state.phase == appapi::PHASE_SUCCEEDED)
    {
        events::emit(
            shared,
            app,
            false,
            "Locked",
            format!(
                "locked at {} by {} after {what}",
                compare::short(&l.revision),
                l.locked_by
            ),
        )
        .await;
    }
    status.operation_state = Some(state);
}

/// Selects ring as the process's TLS provider (once; later calls do nothing). Call it before
/// building a kube client in a binary that links several rustls backends.
pub fn ensure_crypto_provider() {
    // One installation for the whole process: the source crate's, which its Git connections use.
    capstan_source::ensure_crypto_provider();
}

/// An Application being deleted: with [`appapi::RESOURCES_FINALIZER`], its objects are deleted
/// (foreground; objects marked `Delete=false` stay) and the finalizer is removed once none is
/// left; without it the objects stay and there is nothing to do.
async fn finalize(shared: &Shared, app: &Application) -> Result<Action, ControllerError> {
    let finalizers = app.metadata.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == appapi::RESOURCES_FINALIZER) {
        return Ok(Action::await_change());
    }
    let key: AppKey = (app.namespace().to_string(), app.name().to_string());
    let mut kinds = Vec::new();
    let status = app.status_or_default();
    for r in &status.resources {
        let gvk = kube::api::GroupVersionKind::gvk(&r.group, &r.version, &r.kind);
        if let Ok(w) = shared.live.watch(&gvk).await {
            kinds.push(w);
        }
    }
    let mut remaining = 0usize;
    for (w, obj) in shared.live.tracked_by(&kinds, &key) {
        let value = w.value(&obj);
        if capstan_engine::plan::never_delete(&value) {
            continue;
        }
        remaining += 1;
        if obj.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = obj.metadata.name.clone().unwrap_or_default();
        let api: Api<kube::api::DynamicObject> = match &obj.metadata.namespace {
            Some(ns) if w.namespaced => {
                Api::namespaced_with(shared.client.clone(), ns, &w.resource)
            }
            _ => Api::all_with(shared.client.clone(), &w.resource),
        };
        match api
            .delete(&name, &kube::api::DeleteParams::foreground())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(ControllerError::kube(
                    format!(
                        "deleting {} {name} of application {}",
                        w.resource.kind,
                        app.name()
                    ),
                    e,
                ));
            }
        }
    }
    if remaining > 0 {
        // Deletions are under way; the watch events of the deleted objects bring us back.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let kept: Vec<String> = finalizers
        .into_iter()
        .filter(|f| f != appapi::RESOURCES_FINALIZER)
        .collect();
    let apps: Api<Application> = Api::namespaced(shared.client.clone(), app.namespace());
    apps.patch(
        app.name(),
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": kept}})),
    )
    .await
    .map_err(|e| ControllerError::kube(format!("removing the finalizer of {}", app.name()), e))?;
    lock(&shared.memo).remove(&key);
    Ok(Action::await_change())
}

/// The delay before retry number `done + 1`: `duration * factor^done`, at most `maxDuration`
/// (defaults 5s, 2, 3m as Argo CD's).
fn retry_delay(policy: &capstan_api::application::RetryStrategy, done: i64) -> Duration {
    let backoff = policy.backoff.clone().unwrap_or_default();
    let base = backoff
        .duration
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(Duration::from_secs(5));
    let max = backoff
        .max_duration
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(Duration::from_secs(180));
    let factor = backoff.factor.unwrap_or(2).max(1) as f64;
    let exponent = i32::try_from(done.clamp(0, 30)).unwrap_or(30);
    base.mul_f64(factor.powi(exponent)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::application::{Backoff, RetryStrategy};

    #[test]
    fn a_status_patch_removes_what_is_gone_at_every_depth() {
        let old = json!({
            "operationState": {"operation": {"sync": {"revision": "abc", "prune": false}},
                               "phase": "Succeeded", "message": "done"},
            "history": [{"id": 0}],
            "lock": {"revision": "abc"}
        });
        let mut new = json!({
            "operationState": {"operation": {"sync": {"prune": true}}, "phase": "Running"},
            "history": []
        });
        null_removed(&old, &mut new);
        assert_eq!(
            new,
            json!({
                "operationState": {"operation": {"sync": {"revision": null, "prune": true}},
                                   "phase": "Running", "message": null},
                "history": [],
                "lock": null
            })
        );
        // Applied as a merge patch to the old status, it gives the new one exactly.
        let mut merged = old.clone();
        json_patch::merge(&mut merged, &new);
        assert_eq!(
            merged,
            json!({
                "operationState": {"operation": {"sync": {"prune": true}}, "phase": "Running"},
                "history": []
            })
        );
    }

    #[test]
    fn durations_as_annotations_write_them() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("12"), Some(Duration::from_secs(12)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5d"), None);
    }

    #[test]
    fn retry_backoff_grows_by_factor_up_to_the_maximum() {
        let policy = RetryStrategy {
            limit: 5,
            backoff: Some(Backoff {
                duration: Some("2s".into()),
                factor: Some(3),
                max_duration: Some("1m".into()),
            }),
        };
        let delays: Vec<u64> = (0..5).map(|n| retry_delay(&policy, n).as_secs()).collect();
        assert_eq!(delays, vec![2, 6, 18, 54, 60]);
        let defaults = RetryStrategy {
            limit: 1,
            backoff: None,
        };
        assert_eq!(retry_delay(&defaults, 0), Duration::from_secs(5));
        assert_eq!(retry_delay(&defaults, 10), Duration::from_secs(180));
    }
}
