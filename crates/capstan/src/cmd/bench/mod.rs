//! `capstan bench`: end-to-end measurements of Capstan on the embedded cluster.
//!
//! `bench shards` ([`shards`]) measures several replicas sharing the applications through
//! shard Leases: failover, rebalancing, hand-over and the leases' idle cost.
//!
//! `bench scale` runs everything in this one process, on three tokio runtimes whose threads are
//! named apart: the embedded cluster on `devcluster` threads, the controller and the HTTP server
//! (webhook) on `capstan-ctl` threads, and the benchmark driver (its client, its watches, the raw
//! baseline's applies) on the main runtime. The controller's CPU time is then the sum over the
//! `capstan-ctl` threads of `/proc/self/task/*/schedstat` (nanoseconds on the CPU), so neither the
//! cluster's work nor the driver's is charged to Capstan. One process rather than a `capstan
//! devcluster` child keeps the benchmark a single command without a second binary to find or a
//! port handshake, and per-thread accounting separates the CPU just as well; only memory cannot be
//! split per thread, so the controller's peak RSS is the process's peak minus the RSS measured
//! just before the controller starts (the cluster and the raw baseline's objects already loaded),
//! which also charges the cluster's growth by the Capstan-deployed objects to the controller: an
//! upper bound.
//!
//! Each runtime keeps its idle blocking threads alive for the whole run: an exiting thread takes
//! its CPU counters with it. Child processes count as the controller's too (`cutime`+`cstime` of
//! `/proc/self/stat`): the Git client runs `git-upload-pack` for `file://` fetches, and the
//! benchmark itself runs no `git` command while CPU is measured.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use capstan_api::annotations as ann;
use capstan_api::application::{
    self as appapi, Application, ApplicationDestination, ApplicationSource, ApplicationSpec,
    SyncPolicy, SyncPolicyAutomated,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

mod shards;

/// Namespace of the Applications (the controller's own).
const APP_NAMESPACE: &str = appapi::DEFAULT_NAMESPACE;
/// Applications deploying into one destination namespace.
const APPS_PER_NAMESPACE: usize = 100;
/// Name prefix of the controller's and HTTP server's threads (at most 15 bytes: the kernel's
/// thread name length).
const CONTROLLER_THREADS: &str = "capstan-ctl";
/// Name prefix of the embedded cluster's threads.
const CLUSTER_THREADS: &str = "devcluster";
/// Field manager of the raw baseline's applies.
const RAW_MANAGER: &str = "capstan-bench-raw";
/// Field manager of what the benchmark itself writes (Applications, refresh annotations).
const BENCH_MANAGER: &str = "capstan-bench";
/// The goals of issue 6.
const GOAL_APPS_PER_SECOND: f64 = 50.0;
const GOAL_RAW_RATIO: f64 = 0.5;
const GOAL_REFRESH_CPU_MS_PER_APP: f64 = 1.0;

/// Arguments of `capstan bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, clap::Subcommand)]
enum BenchCommand {
    /// Deploy N applications of M objects each from one local Git repository through the
    /// controller on an embedded cluster, and print throughput, refresh CPU, memory, webhook
    /// latency and the raw server-side-apply baseline.
    Scale(ScaleArgs),
    /// Run several controller replicas sharing N applications through shard Leases: time to
    /// Synced, the leases' idle CPU, failover after a crash, rebalancing onto a newcomer and the
    /// hand-over of a replica that stops cleanly.
    Shards(shards::ShardsArgs),
}

/// Output format of `bench scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    /// One aligned table: measure, value, goal.
    Table,
    /// One JSON object.
    Json,
}

#[derive(Debug, clap::Args)]
struct ScaleArgs {
    /// Number of Applications, each with its own path `apps/app-NNNN` in one Git repository.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    apps: u32,
    /// Manifests per application (cycling ConfigMap, Service, Deployment with one replica).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    objects_per_app: u32,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Applications the controller reconciles at once; the raw baseline applies this many
    /// objects at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// Commits pushed to one application's path, each announced by a webhook, to measure the
    /// commit-to-applied latency.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    webhook_commits: u32,
    /// Longest wait for any one phase (`90s`, `30m`) before the benchmark gives up.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    capstan_controller::parse_duration(s)
        .ok_or_else(|| format!("invalid duration {s:?} (expected e.g. 90s, 30m)"))
}

/// Runs a benchmark.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    match args.command {
        BenchCommand::Scale(args) => scale(args).await,
        BenchCommand::Shards(args) => shards::run(args).await,
    }
}

/// A runtime shut down without waiting when dropped (dropping a runtime blocks, which is not
/// allowed inside the main runtime's tasks).
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    fn new(name: &str, threads: usize) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .thread_keep_alive(Duration::from_secs(7 * 24 * 3600))
            .enable_all()
            .build()
            .with_context(|| format!("starting the {name} runtime"))?;
        Ok(OwnRuntime(Some(rt)))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        match &self.0 {
            Some(rt) => rt.handle().clone(),
            // Only `drop` takes the runtime out.
            None => unreachable!("runtime used after shutdown"),
        }
    }

    /// Runs `fut` on this runtime and waits for it from the caller's.
    async fn run<T: Send + 'static>(
        &self,
        what: &str,
        fut: impl Future<Output = anyhow::Result<T>> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.handle()
            .spawn(fut)
            .await
            .with_context(|| format!("{what}: the task panicked"))?
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// What the driver's watch knows of one Application.
#[derive(Debug, Clone, Default)]
struct Seen {
    sync: String,
    health: String,
    revision: String,
    refresh_pending: bool,
    /// How many times the refresh annotation was seen to go away.
    refreshes_done: u64,
    /// `status.reconciledAt`: written by every refresh the interval (or a refresh-all) made due.
    reconciled_at: String,
}

impl Seen {
    fn ready_at(&self, commit: &str) -> bool {
        self.sync == appapi::SYNC_SYNCED && self.health == "Healthy" && self.revision == commit
    }
}

type SeenMap = HashMap<String, Seen>;

/// A watch of the benchmark's Applications, feeding a map that waiters check on every change.
struct AppWatch {
    rx: tokio::sync::watch::Receiver<SeenMap>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AppWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AppWatch {
    fn start(client: kube::Client) -> AppWatch {
        let (tx, rx) = tokio::sync::watch::channel(SeenMap::new());
        let api: Api<Application> = Api::namespaced(client, APP_NAMESPACE);
        let task = tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(app) | watcher::Event::InitApply(app)) => {
                        tx.send_modify(|map| {
                            let name = app.metadata.name.clone().unwrap_or_default();
                            let entry = map.entry(name).or_default();
                            let status = app.status.as_ref();
                            let sync = status.and_then(|s| s.sync.as_ref());
                            entry.sync = sync.map(|s| s.status.clone()).unwrap_or_default();
                            entry.revision = sync.map(|s| s.revision.clone()).unwrap_or_default();
                            entry.health = status
                                .and_then(|s| s.health.as_ref())
                                .map(|h| h.status.clone())
                                .unwrap_or_default();
                            entry.reconciled_at = status
                                .and_then(|s| s.reconciled_at.clone())
                                .unwrap_or_default();
                            let pending = app.annotation(ann::REFRESH).is_some();
                            if entry.refresh_pending && !pending {
                                entry.refreshes_done += 1;
                            }
                            entry.refresh_pending = pending;
                        });
                    }
                    Ok(watcher::Event::Delete(app)) => {
                        tx.send_modify(|map| {
                            map.remove(app.metadata.name.as_deref().unwrap_or_default());
                        });
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "bench: Application watch error; retrying")
                    }
                }
            }
        });
        AppWatch { rx, task }
    }

    /// Waits until `pred` holds for the map; on timeout the error says `what` and shows
    /// `describe`'s account of the last map.
    async fn until(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl FnMut(&SeenMap) -> bool,
        describe: impl Fn(&SeenMap) -> String,
    ) -> anyhow::Result<()> {
        let mut rx = self.rx.clone();
        match tokio::time::timeout(timeout, rx.wait_for(pred)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => bail!("{what}: the Application watch stopped"),
            Err(_) => bail!(
                "{what}: not reached within {timeout:?}; {}",
                describe(&self.rx.borrow())
            ),
        }
    }

    /// Waits until every application of `names` is Synced and Healthy at `commit`.
    async fn until_ready(
        &self,
        timeout: Duration,
        what: &str,
        names: &[String],
        commit: &str,
    ) -> anyhow::Result<()> {
        self.until(
            timeout,
            what,
            |map| {
                names
                    .iter()
                    .all(|n| map.get(n).is_some_and(|s| s.ready_at(commit)))
            },
            |map| first_lagging(map, names, |s| s.ready_at(commit)),
        )
        .await
    }

    fn snapshot(&self) -> SeenMap {
        self.rx.borrow().clone()
    }
}

/// The first application of `names` not satisfying `ok`, for timeout messages.
fn first_lagging(map: &SeenMap, names: &[String], ok: impl Fn(&Seen) -> bool) -> String {
    let lagging: Vec<&String> = names
        .iter()
        .filter(|n| !map.get(*n).is_some_and(&ok))
        .collect();
    match lagging.first() {
        None => "all done".to_string(),
        Some(name) => {
            let seen = map.get(*name).cloned().unwrap_or_default();
            format!(
                "{} of {} applications not there yet, e.g. {name}: sync {:?}, health {:?}, revision {:?}",
                lagging.len(),
                names.len(),
                seen.sync,
                seen.health,
                seen.revision
            )
        }
    }
}

/// CPU time of this process's threads whose name starts with `prefix`.
fn thread_cpu(prefix: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let mut total = Duration::ZERO;
    for task in tasks.flatten() {
        let dir = task.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        total += task_cpu(&dir).unwrap_or(Duration::ZERO);
    }
    total
}

/// CPU time of the waited-for child processes (clock ticks, 100 per second on Linux's user ABI).
fn children_cpu() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let cutime: u64 = fields.get(13)?.parse().ok()?;
            let cstime: u64 = fields.get(14)?.parse().ok()?;
            Some(cutime + cstime)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// The controller's CPU time: its threads and the processes it ran.
fn controller_cpu() -> Duration {
    thread_cpu(CONTROLLER_THREADS) + children_cpu()
}

/// One thread's CPU time: `schedstat`'s nanoseconds when the kernel keeps them, else
/// utime+stime from `stat` in clock ticks (100 per second on Linux's user ABI).
fn task_cpu(dir: &Path) -> Option<Duration> {
    if let Ok(s) = std::fs::read_to_string(dir.join("schedstat"))
        && let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse().ok())
    {
        return Some(Duration::from_nanos(ns));
    }
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // The name (field 2) is in parentheses and may hold spaces; fields 14 and 15 follow it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Waits until the controller is idle (under 10 ms of CPU in half a second), at most `max`.
async fn settle(max: Duration) {
    let deadline = Instant::now() + max;
    let mut last = controller_cpu();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = controller_cpu();
        if now.saturating_sub(last) < Duration::from_millis(10) {
            return;
        }
        last = now;
    }
}

fn app_name(i: usize) -> String {
    format!("app-{i:04}")
}

fn namespace_of(prefix: &str, i: usize) -> String {
    format!("{prefix}-{}", i / APPS_PER_NAMESPACE)
}

/// Manifest `j` of application `app` (no namespace: the destination sets it). `generation`
/// changes the ConfigMap's data, for the webhook commits.
fn manifest(app: &str, j: usize, generation: u32) -> (ApiResource, Value) {
    let name = format!("{app}-{j}");
    match j % 3 {
        0 => (
            ApiResource::erase::<ConfigMap>(&()),
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name},
                "data": {"app": app, "generation": generation.to_string()},
            }),
        ),
        1 => (
            ApiResource::erase::<Service>(&()),
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name},
                "spec": {
                    "selector": {"app": name},
                    "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
                },
            }),
        ),
        _ => (
            ApiResource::erase::<Deployment>(&()),
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
                    },
                },
            }),
        ),
    }
}

async fn git(repo: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("git")
        .args(args)
        .current_dir(repo)
        .env("GIT_AUTHOR_NAME", BENCH_MANAGER)
        .env("GIT_AUTHOR_EMAIL", "capstan-bench@localhost")
        .env("GIT_COMMITTER_NAME", BENCH_MANAGER)
        .env("GIT_COMMITTER_EMAIL", "capstan-bench@localhost")
        .output()
        .await
        .with_context(|| format!("running git {args:?} (is git installed?)"))?;
    if !out.status.success() {
        bail!(
            "git {args:?} in {}: {}",
            repo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The file name of an application's `j`th manifest.
fn manifest_file(j: usize) -> String {
    format!("obj-{j}.yaml")
}

fn write_manifest(repo: &Path, app: &str, j: usize, generation: u32) -> anyhow::Result<()> {
    let dir = repo.join("apps").join(app);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (_, value) = manifest(app, j, generation);
    let yaml = serde_yaml_ng::to_string(&value).context("writing a manifest as YAML")?;
    let file = dir.join(manifest_file(j));
    std::fs::write(&file, yaml).with_context(|| format!("writing {}", file.display()))
}

/// Creates the repository with every application's manifests; returns the commit.
async fn create_repo(repo: &Path, apps: usize, objects: usize) -> anyhow::Result<String> {
    std::fs::create_dir_all(repo).with_context(|| format!("creating {}", repo.display()))?;
    git(repo, &["init", "-q", "-b", "main"]).await?;
    for i in 0..apps {
        for j in 0..objects {
            write_manifest(repo, &app_name(i), j, 0)?;
        }
    }
    git(repo, &["add", "-A"]).await?;
    git(repo, &["commit", "-q", "-m", "bench: initial applications"]).await?;
    git(repo, &["rev-parse", "HEAD"]).await
}

async fn create_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))
        .context("building a Namespace")?;
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
    }
}

/// The raw baseline's two figures: all objects applied, and all of them Healthy.
struct RawTimes {
    applied: Duration,
    healthy: Duration,
}

/// Applies every object with server-side apply, `concurrency` at once, and waits until the
/// Deployments among them are available (ConfigMaps and Services are Healthy once they exist):
/// the same end state `seconds_to_synced` waits for, reached without Capstan.
async fn raw_apply(
    client: &kube::Client,
    apps: usize,
    objects: usize,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<RawTimes> {
    let (available_tx, mut available_rx) = tokio::sync::watch::channel(0usize);
    let deployments_api: Api<Deployment> = Api::all(client.clone());
    let health_watch = tokio::spawn(async move {
        let mut available = std::collections::HashSet::new();
        let stream = watcher(deployments_api, watcher::Config::default())
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let Ok(d) = event else { continue };
            let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let ready = d.status.as_ref().is_some_and(|s| {
                s.available_replicas.unwrap_or(0) >= wanted
                    && s.observed_generation >= d.metadata.generation
            });
            let key = (d.metadata.namespace.clone(), d.metadata.name.clone());
            if ready {
                available.insert(key);
            } else {
                available.remove(&key);
            }
            available_tx.send_replace(available.len());
        }
    });
    let mut work = Vec::with_capacity(apps * objects);
    for i in 0..apps {
        let ns = namespace_of("bench-raw", i);
        for j in 0..objects {
            let (resource, mut value) = manifest(&app_name(i), j, 0);
            value["metadata"]["namespace"] = Value::String(ns.clone());
            work.push((ns.clone(), resource, value));
        }
    }
    // Only the raw baseline's Deployments exist while it runs (the controller starts later).
    let deployments = work
        .iter()
        .filter(|(_, r, _)| r.kind == "Deployment")
        .count();
    let params = PatchParams::apply(RAW_MANAGER).force();
    let started = Instant::now();
    futures::stream::iter(work)
        .map(|(ns, resource, value)| {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
            let params = params.clone();
            async move {
                let name = value["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                api.patch(&name, &params, &Patch::Apply(&value))
                    .await
                    .with_context(|| format!("raw apply of {} {ns}/{name}", resource.kind))
                    .map(|_| ())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await?;
    let applied = started.elapsed();
    let waited = tokio::time::timeout(timeout, available_rx.wait_for(|n| *n >= deployments))
        .await
        .map(|r| r.map(|_| ()));
    health_watch.abort();
    match waited {
        Ok(Ok(_)) => Ok(RawTimes {
            applied,
            healthy: started.elapsed(),
        }),
        Ok(Err(_)) => bail!("raw baseline: the Deployment watch stopped"),
        Err(_) => bail!(
            "raw baseline: {} of {deployments} Deployments available after {timeout:?}",
            *available_rx.borrow()
        ),
    }
}

/// Creates the benchmark's applications `0..n`, `concurrency` at a time.
async fn create_applications(
    apps: &Api<Application>,
    n: usize,
    repo_url: &str,
    concurrency: usize,
) -> anyhow::Result<()> {
    futures::stream::iter(0..n)
        .map(|i| {
            let app = application(i, repo_url);
            async move {
                apps.create(&PostParams::default(), &app)
                    .await
                    .with_context(|| format!("creating Application {}", app_name(i)))
                    .map(|_| ())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await
}

fn application(i: usize, repo_url: &str) -> Application {
    let name = app_name(i);
    let mut app = Application::new(
        APP_NAMESPACE,
        &name,
        ApplicationSpec {
            project: "default".into(),
            source: ApplicationSource {
                repo_url: repo_url.to_string(),
                target_revision: "main".into(),
                path: format!("apps/{name}"),
                ..ApplicationSource::default()
            },
            destination: ApplicationDestination {
                server: Some("https://kubernetes.default.svc".into()),
                name: None,
                namespace: namespace_of("bench-apps", i),
            },
            sync_policy: Some(SyncPolicy {
                automated: Some(SyncPolicyAutomated {
                    prune: true,
                    self_heal: false,
                    allow_empty: false,
                }),
                ..SyncPolicy::default()
            }),
            ignore_differences: Vec::new(),
            revision_history_limit: None,
        },
    );
    // No periodic refresh during the run: every refresh measured is one the benchmark asked for.
    // Each application is concerned by pushes to its own path only (as Argo CD users of a
    // repository with many applications annotate them), which its webhook payloads list.
    app.metadata.annotations = Some(
        [
            (ann::REFRESH_INTERVAL.to_string(), "24h".to_string()),
            (ann::MANIFEST_GENERATE_PATHS.to_string(), ".".to_string()),
        ]
        .into(),
    );
    app
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A webhook secret that differs per run (the benchmark's server listens on localhost only).
fn webhook_secret() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("bench-{:016x}", h.finish())
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Rounds for display and JSON (three decimals).
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// How the benchmark asks for a refresh of every application.
enum RefreshKind<'a> {
    /// As the refresh timer does (the refresh cycle): nothing is written to ask.
    Cycle(&'a capstan_controller::RefreshAll),
    /// With the `capstan.dev/refresh` annotation on each Application.
    Annotation(&'a Api<Application>),
}

/// What one refresh of every application cost.
struct RefreshCost {
    elapsed: Duration,
    cpu: Duration,
    children_cpu: Duration,
    cluster_cpu: Duration,
}

/// Asks for one refresh of every application, waits until each shows it (a new
/// `reconciledAt`, or the annotation gone), lets the reconciles caused by the controller's own
/// writes end, and returns the CPU spent.
async fn measure_refresh(
    watch: &AppWatch,
    names: &[String],
    timeout: Duration,
    kind: RefreshKind<'_>,
) -> anyhow::Result<RefreshCost> {
    // reconciledAt has a resolution of one second: a refresh within the second of the last
    // write would not show, so a second passes first.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = watch.snapshot();
    let cpu_before = controller_cpu();
    let children_before = children_cpu();
    let cluster_cpu_before = thread_cpu(CLUSTER_THREADS);
    let started = Instant::now();
    let done = |s: &Seen, name: &String| {
        let Some(b) = before.get(name) else {
            return false;
        };
        match kind {
            RefreshKind::Cycle(_) => s.reconciled_at != b.reconciled_at,
            RefreshKind::Annotation(_) => s.refreshes_done > b.refreshes_done,
        }
    };
    match kind {
        RefreshKind::Cycle(handle) => handle.refresh_all(),
        RefreshKind::Annotation(apps) => {
            let refresh =
                Patch::Merge(json!({"metadata": {"annotations": {ann::REFRESH: "normal"}}}));
            futures::stream::iter(names.iter())
                .map(|name| {
                    let refresh = &refresh;
                    async move {
                        apps.patch(name, &PatchParams::default(), refresh)
                            .await
                            .with_context(|| format!("annotating Application {name} for a refresh"))
                            .map(|_| ())
                    }
                })
                .buffer_unordered(16)
                .try_collect::<()>()
                .await?;
        }
    }
    watch
        .until(
            timeout,
            "one refresh of every application",
            |map| names.iter().all(|n| map.get(n).is_some_and(|s| done(s, n))),
            |map| {
                let left = names
                    .iter()
                    .filter(|n| !map.get(*n).is_some_and(|s| done(s, n)))
                    .count();
                format!("{left} applications not refreshed yet")
            },
        )
        .await?;
    let elapsed = started.elapsed();
    // The reconciles woken by the controller's own writes belong to the refresh too.
    settle(Duration::from_secs(30)).await;
    Ok(RefreshCost {
        elapsed,
        cpu: controller_cpu().saturating_sub(cpu_before),
        children_cpu: children_cpu().saturating_sub(children_before),
        cluster_cpu: thread_cpu(CLUSTER_THREADS).saturating_sub(cluster_cpu_before),
    })
}

async fn scale(args: ScaleArgs) -> anyhow::Result<u8> {
    let n = args.apps as usize;
    let m = args.objects_per_app as usize;
    let concurrency = usize::from(args.concurrency);
    let timeout = args.timeout;
    let load_before = load_average();
    let dir = tempfile::Builder::new()
        .prefix("capstan-bench-")
        .tempdir()
        .context("creating a temporary directory")?;

    // Runtimes first: the controller's is dropped (shut down) before the cluster's.
    let cluster_rt = OwnRuntime::new(CLUSTER_THREADS, 2)?;
    let controller_rt = OwnRuntime::new(CONTROLLER_THREADS, 2)?;

    eprintln!("bench: writing {n} application paths of {m} manifests to a Git repository");
    let repo = dir.path().join("repo");
    let first_commit = create_repo(&repo, n, m).await?;
    let repo_url = format!("file://{}", repo.display());

    eprintln!("bench: starting the embedded cluster");
    let cluster = cluster_rt
        .run("starting the embedded cluster", async {
            devcluster::DevCluster::start(devcluster::Config::default())
                .await
                .context("starting the embedded cluster")
        })
        .await?;
    let kubeconfig: PathBuf = cluster.kubeconfig_path().to_path_buf();
    let client = super::server::kube_client(Some(&kubeconfig)).await?;
    capstan_controller::install_crd(&client)
        .await
        .context("installing the Application CRD")?;
    create_namespace(&client, APP_NAMESPACE).await?;
    for k in 0..n.div_ceil(APPS_PER_NAMESPACE) {
        create_namespace(&client, &format!("bench-apps-{k}")).await?;
        create_namespace(&client, &format!("bench-raw-{k}")).await?;
    }

    eprintln!(
        "bench: raw baseline: server-side apply of {} objects",
        n * m
    );
    let raw = raw_apply(&client, n, m, concurrency, timeout).await?;
    let raw_elapsed = raw.applied;
    let raw_rate = (n * m) as f64 / raw_elapsed.as_secs_f64();
    let raw_healthy_rate = (n * m) as f64 / raw.healthy.as_secs_f64();

    // The memory baseline: the cluster with the raw objects, before any controller thread.
    // Resetting the peak (clear_refs 5) makes VmHWM the peak from here on.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_baseline_kib = status_kib("VmRSS").context("reading VmRSS of /proc/self/status")?;

    let secret = webhook_secret();
    let webhook_secret_obj: Secret = serde_json::from_value(json!({
        "metadata": {"name": capstan_server::webhook::DEFAULT_SECRET_NAME, "namespace": APP_NAMESPACE},
        "stringData": {"github": secret},
    }))
    .context("building the webhook Secret")?;
    Api::<Secret>::namespaced(client.clone(), APP_NAMESPACE)
        .create(&PostParams::default(), &webhook_secret_obj)
        .await
        .context("creating the webhook Secret")?;

    eprintln!("bench: starting the controller and the HTTP server");
    let cache_dir = dir.path().join("cache");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller_concurrency = args.concurrency;
    let (server_addr, _server, _controller, refresh_all) = {
        let kubeconfig = kubeconfig.clone();
        controller_rt
            .run("starting the controller", async move {
                let client = super::server::kube_client(Some(&kubeconfig)).await?;
                let server = capstan_server::serve(
                    capstan_server::Config {
                        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                        metrics_listen: None,
                        ..capstan_server::Config::default()
                    },
                    client.clone(),
                    async move {
                        let _ = stop_rx.await;
                    },
                )
                .await
                .context("starting the HTTP server")?;
                let config = capstan_controller::Config {
                    namespace: Some(APP_NAMESPACE.to_string()),
                    reconcile_interval: Duration::from_secs(24 * 3600),
                    concurrency: controller_concurrency,
                    cache_dir,
                    ..capstan_controller::Config::default()
                };
                let controller = capstan_controller::Controller::new(client, config)
                    .context("creating the controller")?;
                let refresh_all = controller.refresh_handle();
                let task = tokio::spawn(controller.run());
                Ok((server.addr, server, task, refresh_all))
            })
            .await?
    };
    let watch = AppWatch::start(client.clone());
    let names: Vec<String> = (0..n).map(app_name).collect();
    settle(Duration::from_secs(10)).await;

    eprintln!("bench: creating {n} Applications");
    let apps: Api<Application> = Api::namespaced(client.clone(), APP_NAMESPACE);
    let cpu_before_sync = controller_cpu();
    let started = Instant::now();
    create_applications(&apps, n, &repo_url, concurrency).await?;
    watch
        .until_ready(
            timeout,
            "all applications Synced and Healthy",
            &names,
            &first_commit,
        )
        .await?;
    let synced_elapsed = started.elapsed();
    let cpu_to_synced = controller_cpu().saturating_sub(cpu_before_sync);
    eprintln!("bench: all Synced and Healthy after {synced_elapsed:.2?}");

    // One no-change refresh cycle: every application refreshed as the refresh timer does it.
    settle(Duration::from_secs(30)).await;
    let cycle = measure_refresh(&watch, &names, timeout, RefreshKind::Cycle(&refresh_all)).await?;
    // One requested refresh of every application (`capstan.dev/refresh: normal`, what
    // `capstan app get --refresh` writes): the annotation and its removal are two more writes.
    settle(Duration::from_secs(30)).await;
    let requested =
        measure_refresh(&watch, &names, timeout, RefreshKind::Annotation(&apps)).await?;
    let after = watch.snapshot();
    if let Some(name) = names
        .iter()
        .find(|n| !after.get(*n).is_some_and(|s| s.ready_at(&first_commit)))
    {
        bail!(
            "the no-change refresh changed application {name}: it is no longer Synced and Healthy at {first_commit}"
        );
    }

    // Commit-to-applied latency through the webhook, one commit to app-0000 at a time.
    let http = reqwest::Client::new();
    let hook_url = format!("http://{server_addr}/api/webhook");
    let target = app_name(0);
    let mut latencies = Vec::new();
    for k in 1..=args.webhook_commits {
        write_manifest(&repo, &target, 0, k)?;
        git(&repo, &["add", "-A"]).await?;
        git(
            &repo,
            &["commit", "-q", "-m", &format!("bench: webhook commit {k}")],
        )
        .await?;
        let commit = git(&repo, &["rev-parse", "HEAD"]).await?;
        let body = json!({
            "ref": "refs/heads/main",
            "after": commit,
            "commits": [{
                "id": commit,
                "added": [],
                "modified": [format!("apps/{target}/{}", manifest_file(0))],
                "removed": [],
            }],
            "repository": {
                "html_url": repo_url,
                "clone_url": repo_url,
                "default_branch": "main",
            },
        })
        .to_string();
        let signature = hex(&capstan_server::webhook::hmac_sha256(
            secret.as_bytes(),
            body.as_bytes(),
        ));
        let sent = Instant::now();
        let response = http
            .post(&hook_url)
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-hub-signature-256", format!("sha256={signature}"))
            .body(body)
            .send()
            .await
            .with_context(|| format!("posting the webhook to {hook_url}"))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("the webhook was refused ({status}): {text}");
        }
        watch
            .until_ready(
                timeout,
                &format!("webhook commit {k} applied to {target}"),
                std::slice::from_ref(&target),
                &commit,
            )
            .await?;
        latencies.push(ms(sent.elapsed()));
        // The webhook refreshes the applications the push concerns: let those refreshes end
        // before the next commit, so that each latency is measured from a quiet controller.
        watch
            .until(
                timeout,
                "the webhook's refreshes to finish",
                |map| map.values().all(|s| !s.refresh_pending),
                |map| {
                    let left = map.values().filter(|s| s.refresh_pending).count();
                    format!("{left} applications still carry the refresh annotation")
                },
            )
            .await?;
        settle(Duration::from_secs(30)).await;
    }
    let cm: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace_of("bench-apps", 0));
    let deployed = cm
        .get(&format!("{target}-0"))
        .await
        .with_context(|| format!("reading ConfigMap {target}-0"))?;
    let generation = deployed
        .data
        .as_ref()
        .and_then(|d| d.get("generation"))
        .cloned()
        .unwrap_or_default();
    if generation != args.webhook_commits.to_string() {
        bail!(
            "ConfigMap {target}-0 has generation {generation:?} after the webhook commits, not {}",
            args.webhook_commits
        );
    }
    latencies.sort_by(f64::total_cmp);

    let peak_kib = status_kib("VmHWM").context("reading VmHWM of /proc/self/status")?;
    let peak_rss_mib = peak_kib.saturating_sub(rss_baseline_kib) as f64 / 1024.0;
    let _ = stop_tx.send(());
    drop(watch);
    drop(controller_rt);
    drop(cluster);
    drop(cluster_rt);

    let seconds = synced_elapsed.as_secs_f64();
    let capstan_rate = (n * m) as f64 / seconds;
    let apps_per_second = n as f64 / seconds;
    let ratio = capstan_rate / raw_rate;
    let healthy_ratio = capstan_rate / raw_healthy_rate;
    let per_app = |d: Duration| ms(d) / n as f64;
    let refresh_ms_per_app = per_app(cycle.cpu);
    let figures: Vec<(&str, f64, &str)> = vec![
        ("apps", n as f64, ""),
        ("objects_per_app", m as f64, ""),
        ("concurrency", concurrency as f64, ""),
        ("seconds_to_synced", seconds, ""),
        ("apps_per_second", apps_per_second, ">= 50"),
        ("capstan_objects_per_second", capstan_rate, ""),
        ("raw_apply_seconds", raw_elapsed.as_secs_f64(), ""),
        ("raw_apply_objects_per_second", raw_rate, ""),
        ("raw_ratio", ratio, ">= 0.5"),
        (
            "raw_apply_to_healthy_seconds",
            raw.healthy.as_secs_f64(),
            "",
        ),
        (
            "raw_apply_to_healthy_objects_per_second",
            raw_healthy_rate,
            "",
        ),
        ("raw_to_healthy_ratio", healthy_ratio, ""),
        (
            "controller_cpu_seconds_to_synced",
            cpu_to_synced.as_secs_f64(),
            "",
        ),
        ("refresh_seconds", cycle.elapsed.as_secs_f64(), ""),
        ("refresh_cpu_ms_per_app", refresh_ms_per_app, "< 1"),
        (
            "refresh_child_process_cpu_ms_per_app",
            per_app(cycle.children_cpu),
            "",
        ),
        (
            "refresh_cluster_cpu_ms_per_app",
            per_app(cycle.cluster_cpu),
            "",
        ),
        (
            "requested_refresh_seconds",
            requested.elapsed.as_secs_f64(),
            "",
        ),
        (
            "requested_refresh_cpu_ms_per_app",
            per_app(requested.cpu),
            "",
        ),
        (
            "requested_refresh_cluster_cpu_ms_per_app",
            per_app(requested.cluster_cpu),
            "",
        ),
        ("peak_rss_mib", peak_rss_mib, ""),
        ("webhook_commits", f64::from(args.webhook_commits), ""),
        ("webhook_latency_ms_p50", percentile(&latencies, 0.5), ""),
        ("webhook_latency_ms_p90", percentile(&latencies, 0.9), ""),
    ];
    let goals_met = BTreeMap::from([
        ("apps_per_second", apps_per_second >= GOAL_APPS_PER_SECOND),
        ("raw_ratio", ratio >= GOAL_RAW_RATIO),
        (
            "refresh_cpu_ms_per_app",
            refresh_ms_per_app < GOAL_REFRESH_CPU_MS_PER_APP,
        ),
    ]);
    let rss_note = "peak_rss_mib: process peak RSS minus the RSS before the controller started \
                    (cluster and raw baseline loaded); includes the cluster's growth by the \
                    deployed objects, so an upper bound of the controller's";
    let load_after = load_average();

    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            let mut obj = serde_json::Map::new();
            for (key, value, _) in &figures {
                obj.insert((*key).to_string(), json!(round3(*value)));
            }
            obj.insert("goals_met".into(), json!(goals_met));
            obj.insert("peak_rss_note".into(), json!(rss_note));
            obj.insert("load_average_before".into(), json!(load_before));
            obj.insert("load_average_after".into(), json!(load_after));
            writeln!(out, "{}", Value::Object(obj)).context("writing to stdout")?;
        }
        Output::Table => {
            writeln!(out, "{:<42} {:>14}  {:<8} MET", "MEASURE", "VALUE", "GOAL")
                .context("writing to stdout")?;
            for (key, value, goal) in &figures {
                let met = match goals_met.get(key) {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "",
                };
                writeln!(out, "{key:<42} {:>14.3}  {goal:<8} {met}", value)
                    .context("writing to stdout")?;
            }
            writeln!(out, "{rss_note}").context("writing to stdout")?;
            writeln!(
                out,
                "load average before: {load_before}; after: {load_after}"
            )
            .context("writing to stdout")?;
        }
    }
    out.flush().context("writing to stdout")?;
    Ok(0)
}
