//! `capstan bench shards`: several controller replicas in this process share N applications
//! through shard Leases on the embedded cluster (one ConfigMap per application). Measured, in
//! one run: the time until the leases are taken and balanced, the time to all Synced, the
//! leases' CPU while nothing else happens, and the three moves of shards, in this order: a
//! newcomer's share (released to it at the others' next retry), a cleanly stopped replica's
//! (released at once, taken at the next retry) and a crashed replica's (taken over once its
//! leases expire, so that figure is read against the lease duration). Replicas run on the
//! `capstan-ctl` threads as in `bench scale`.

use super::*;

use capstan_controller::shard::{self, ShardConfig};
use k8s_openapi::api::coordination::v1::Lease;

#[derive(Debug, clap::Args)]
pub(super) struct ShardsArgs {
    /// Number of Applications (one ConfigMap each).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    apps: u32,
    /// Controller replicas started at first (one more joins later).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..=16))]
    replicas: u32,
    /// Shards the applications are split into (6: with 2 replicas and the newcomer, each of
    /// the three holds two).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=1024))]
    shards: u32,
    /// Lease duration; the renew deadline and retry period follow Kubernetes' ratios (15 s, 10 s,
    /// 2 s).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// How long the leases' idle CPU is measured.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    idle_window: Duration,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Longest wait for any one phase before the benchmark gives up.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    timeout: Duration,
}

/// One replica, running on the controller runtime until stopped or aborted.
struct Replica {
    identity: String,
    task: Option<tokio::task::JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Replica {
    async fn start(
        rt: &OwnRuntime,
        kubeconfig: &Path,
        identity: &str,
        cache_dir: PathBuf,
        sharding: ShardConfig,
    ) -> anyhow::Result<Replica> {
        let kubeconfig = kubeconfig.to_path_buf();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt
            .run("starting a replica", async move {
                let client = super::super::server::kube_client(Some(&kubeconfig)).await?;
                let config = capstan_controller::Config {
                    namespace: Some(APP_NAMESPACE.to_string()),
                    reconcile_interval: Duration::from_secs(24 * 3600),
                    cache_dir,
                    sharding: Some(sharding),
                    ..capstan_controller::Config::default()
                };
                let controller = capstan_controller::Controller::new(client, config)
                    .context("creating the controller")?;
                Ok(tokio::spawn(controller.run_until(async {
                    let _ = stopped.await;
                })))
            })
            .await?;
        Ok(Replica {
            identity: identity.to_string(),
            task: Some(task),
            stop: Some(stop),
        })
    }

    /// As a crash: nothing is released.
    fn crash(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// A clean stop: returns once the leases are released.
    async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.context("a replica panicked while stopping")?;
        }
        Ok(())
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.crash();
    }
}

/// Polls the shard holders every 50 ms until `pred` holds; returns how long it took.
async fn until_holders(
    leases: &Api<Lease>,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&BTreeMap<u32, String>) -> bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let now = shard::holders(leases)
            .await
            .context("listing the shard leases")?;
        if pred(&now) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("{what}: not reached within {timeout:?}; shard holders: {now:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(holders: &BTreeMap<u32, String>, who: &str) -> usize {
    holders.values().filter(|h| *h == who).count()
}

pub(super) async fn run(args: ShardsArgs) -> anyhow::Result<u8> {
    let n = args.apps as usize;
    let replicas = args.replicas as usize;
    let shards = args.shards;
    let timeout = args.timeout;
    let load_before = load_average();
    let lease = args.lease_duration.max(Duration::from_secs(1));
    let sharding = |identity: &str| ShardConfig {
        lease_duration: lease,
        renew_deadline: lease.mul_f64(10.0 / 15.0),
        retry_period: lease.mul_f64(2.0 / 15.0),
        ..ShardConfig::new(shards, identity, APP_NAMESPACE)
    };
    sharding("check")
        .validate()
        .map_err(|e| anyhow::anyhow!("--lease-duration: {e}"))?;
    let dir = tempfile::Builder::new()
        .prefix("capstan-bench-shards-")
        .tempdir()
        .context("creating a temporary directory")?;
    let cluster_rt = OwnRuntime::new(CLUSTER_THREADS, 2)?;
    let controller_rt = OwnRuntime::new(CONTROLLER_THREADS, 2)?;

    eprintln!("bench: writing {n} application paths to a Git repository");
    let repo = dir.path().join("repo");
    let first_commit = create_repo(&repo, n, 1).await?;
    let repo_url = format!("file://{}", repo.display());
    eprintln!("bench: starting the embedded cluster");
    let cluster = cluster_rt
        .run("starting the embedded cluster", async {
            devcluster::DevCluster::start(devcluster::Config::default())
                .await
                .context("starting the embedded cluster")
        })
        .await?;
    let kubeconfig = cluster.kubeconfig_path().to_path_buf();
    let client = super::super::server::kube_client(Some(&kubeconfig)).await?;
    capstan_controller::install_crd(&client)
        .await
        .context("installing the Application CRD")?;
    create_namespace(&client, APP_NAMESPACE).await?;
    for k in 0..n.div_ceil(APPS_PER_NAMESPACE) {
        create_namespace(&client, &format!("bench-apps-{k}")).await?;
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), APP_NAMESPACE);

    eprintln!("bench: starting {replicas} replicas over {shards} shards");
    let mut running = Vec::new();
    let started = Instant::now();
    for r in 0..replicas {
        let identity = format!("bench-replica-{r}");
        let cache = dir.path().join(format!("cache-{r}"));
        running.push(
            Replica::start(
                &controller_rt,
                &kubeconfig,
                &identity,
                cache,
                sharding(&identity),
            )
            .await?,
        );
    }
    let fair = (shards as usize).div_ceil(replicas);
    let identities: Vec<String> = running.iter().map(|r| r.identity.clone()).collect();
    until_holders(
        &leases,
        timeout,
        "every shard taken, none above its fair share",
        |h| h.len() == shards as usize && identities.iter().all(|i| count(h, i) <= fair),
    )
    .await?;
    let leases_settled = started.elapsed();

    let watch = AppWatch::start(client.clone());
    let names: Vec<String> = (0..n).map(app_name).collect();
    eprintln!("bench: creating {n} Applications");
    let apps: Api<Application> = Api::namespaced(client.clone(), APP_NAMESPACE);
    let started = Instant::now();
    create_applications(&apps, n, &repo_url, 16).await?;
    watch
        .until_ready(
            timeout,
            "all applications Synced and Healthy",
            &names,
            &first_commit,
        )
        .await?;
    let synced = started.elapsed();
    eprintln!("bench: all Synced and Healthy after {synced:.2?}");

    // The leases' cost when nothing else happens: renewals and listings only. (The renewals
    // never let the controller fall quiet as `settle` means it: a short wait ends the syncs'
    // own echoes.)
    settle(Duration::from_secs(3)).await;
    let idle_window = args.idle_window.max(Duration::from_secs(1));
    let cpu_before = controller_cpu();
    tokio::time::sleep(idle_window).await;
    let idle_cpu = controller_cpu().saturating_sub(cpu_before);

    // A newcomer gets its share, released by the others at their next retry.
    let newcomer = format!("bench-replica-{replicas}");
    let joined_at = Instant::now();
    running.push(
        Replica::start(
            &controller_rt,
            &kubeconfig,
            &newcomer,
            dir.path().join("cache-new"),
            sharding(&newcomer),
        )
        .await?,
    );
    // The replicas and the newcomer: the replicas give up all above the new fair share, the
    // newcomer takes what that frees.
    let members = replicas + 1;
    let share = (shards as usize).div_ceil(members);
    let newcomers_share = (shards as usize).saturating_sub((members - 1) * share);
    until_holders(&leases, timeout, "the newcomer to get its share", |h| {
        h.len() == shards as usize && count(h, &newcomer) >= newcomers_share
    })
    .await?;
    let rebalance = joined_at.elapsed();

    // A clean stop: replica 1 releases its shards and its member lease before it returns; the
    // others take them at their next retry.
    let leaving = running[1].identity.clone();
    let stopping_at = Instant::now();
    running[1].stop().await?;
    until_holders(&leases, timeout, "the others to hold every shard", |h| {
        h.len() == shards as usize && count(h, &leaving) == 0
    })
    .await?;
    let handover = stopping_at.elapsed();

    // Failover: a new commit for every application, then replica 0 crashes; its applications
    // are asked for a refresh, which only a new holder of their shards can answer (after the
    // crashed replica's leases expired).
    let victim = running[0].identity.clone();
    let before = shard::holders(&leases)
        .await
        .context("listing the shard leases")?;
    let lost: Vec<u32> = before
        .iter()
        .filter(|(_, h)| **h == victim)
        .map(|(s, _)| *s)
        .collect();
    let orphans: Vec<String> = names
        .iter()
        .filter(|name| lost.contains(&shard::shard_of(APP_NAMESPACE, name, shards)))
        .cloned()
        .collect();
    for name in &names {
        write_manifest(&repo, name, 0, 1)?;
    }
    git(&repo, &["add", "-A"]).await?;
    git(&repo, &["commit", "-q", "-m", "bench: second generation"]).await?;
    let second_commit = git(&repo, &["rev-parse", "HEAD"]).await?;
    eprintln!(
        "bench: crashing {victim} ({} shards, {} applications)",
        lost.len(),
        orphans.len()
    );
    let crashed_at = Instant::now();
    running[0].crash();
    futures::stream::iter(orphans.clone())
        .map(|name| {
            let apps = apps.clone();
            async move {
                apps.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {ann::REFRESH: "normal"}}})),
                )
                .await
                .with_context(|| format!("asking {name} for a refresh"))
                .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await?;
    let survivors: Vec<String> = running[2..].iter().map(|r| r.identity.clone()).collect();
    until_holders(&leases, timeout, "the survivors to hold every shard", |h| {
        h.len() == shards as usize && h.values().all(|holder| survivors.contains(holder))
    })
    .await?;
    let takeover = crashed_at.elapsed();
    watch
        .until_ready(
            timeout,
            "the crashed replica's applications at the new commit",
            &orphans,
            &second_commit,
        )
        .await?;
    let failover_synced = crashed_at.elapsed();

    drop(watch);
    drop(running);
    drop(controller_rt);
    drop(cluster);
    drop(cluster_rt);

    let figures: Vec<(&str, f64)> = vec![
        ("apps", n as f64),
        ("replicas", replicas as f64),
        ("shards", f64::from(shards)),
        ("lease_duration_seconds", lease.as_secs_f64()),
        ("leases_settled_seconds", leases_settled.as_secs_f64()),
        ("seconds_to_synced", synced.as_secs_f64()),
        ("apps_per_second", n as f64 / synced.as_secs_f64()),
        (
            "idle_cpu_ms_per_second",
            ms(idle_cpu) / idle_window.as_secs_f64(),
        ),
        (
            "idle_cpu_ms_per_second_per_replica",
            ms(idle_cpu) / idle_window.as_secs_f64() / replicas as f64,
        ),
        ("failover_applications", orphans.len() as f64),
        ("takeover_seconds", takeover.as_secs_f64()),
        (
            "takeover_to_lease_duration_ratio",
            takeover.as_secs_f64() / lease.as_secs_f64(),
        ),
        ("failover_to_synced_seconds", failover_synced.as_secs_f64()),
        ("newcomer_shards", newcomers_share as f64),
        ("rebalance_seconds", rebalance.as_secs_f64()),
        ("handover_seconds", handover.as_secs_f64()),
        (
            "handover_to_lease_duration_ratio",
            handover.as_secs_f64() / lease.as_secs_f64(),
        ),
    ];
    let load_after = load_average();
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            let mut obj = serde_json::Map::new();
            for (key, value) in &figures {
                obj.insert((*key).to_string(), json!(round3(*value)));
            }
            obj.insert("load_average_before".into(), json!(load_before));
            obj.insert("load_average_after".into(), json!(load_after));
            writeln!(out, "{}", Value::Object(obj)).context("writing to stdout")?;
        }
        Output::Table => {
            writeln!(out, "{:<40} {:>12}", "MEASURE", "VALUE").context("writing to stdout")?;
            for (key, value) in &figures {
                writeln!(out, "{key:<40} {value:>12.3}").context("writing to stdout")?;
            }
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
