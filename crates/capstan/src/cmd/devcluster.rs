//! `capstan devcluster`: the embedded Kubernetes API server in the foreground.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use devcluster::faults::{self, FaultConfig};

/// Arguments of `capstan devcluster`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Where to write the kubeconfig (atomically, once the server accepts requests).
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Keep the cluster state in this directory (durable, reloaded on start). Without it the
    /// state lives in memory only.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Enforce RBAC: Roles, ClusterRoles and their bindings decide what each token may do
    /// (the kubeconfig's admin token is in system:masters and may do everything).
    #[arg(long)]
    pub rbac: bool,
    /// Time from a simulated pod's creation to its Ready condition (half of it to Running),
    /// e.g. 200ms or 2s.
    #[arg(long, value_name = "DURATION", default_value = "200ms")]
    pub pod_ready_delay: String,
    /// Number of simulated nodes; DaemonSets run one pod on each.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub nodes: usize,
    /// Fault injection for reliability tests (all off by default).
    #[command(flatten)]
    pub faults: FaultArgs,
}

/// Fault injection flags; also settable at run time with `PUT /devcluster/faults`.
#[derive(Debug, Default, clap::Args)]
pub struct FaultArgs {
    /// Fraction of requests that fail (0 to 1), e.g. 0.2.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub fault_error_rate: f64,
    /// Status codes the failures answer, chosen at random (429 and 503 carry Retry-After: 1).
    #[arg(long, value_name = "CODES", default_value = "500,503,429")]
    pub fault_codes: String,
    /// Latency added to every request, e.g. 50ms.
    #[arg(long, value_name = "DURATION")]
    pub fault_latency: Option<String>,
    /// Up to this much more latency, at random, e.g. 20ms.
    #[arg(long, value_name = "DURATION")]
    pub fault_latency_jitter: Option<String>,
    /// Watch streams are cut this long after they start, e.g. 5s.
    #[arg(long, value_name = "DURATION")]
    pub fault_drop_watch_after: Option<String>,
    /// Refuse every write with 503 during START..END after start, e.g. 10s..30s.
    #[arg(long, value_name = "START..END")]
    pub fault_refuse_writes: Option<String>,
    /// Random failures hit mutating requests only (create, update, patch, delete).
    #[arg(long)]
    pub fault_only_writes: bool,
    /// Seed of the random choices, for reproducible runs.
    #[arg(long, value_name = "N")]
    pub fault_seed: Option<u64>,
}

impl FaultArgs {
    /// The devcluster's fault configuration; a bad value names its flag.
    pub fn config(&self) -> anyhow::Result<FaultConfig> {
        let duration = |flag: &'static str, v: &Option<String>| {
            v.as_deref()
                .map(|s| faults::parse_duration(flag, s))
                .transpose()
        };
        let config = FaultConfig {
            error_rate: self.fault_error_rate,
            codes: FaultConfig::parse_codes(&self.fault_codes).context("--fault-codes")?,
            latency: duration("--fault-latency", &self.fault_latency)?,
            latency_jitter: duration("--fault-latency-jitter", &self.fault_latency_jitter)?,
            drop_watch_after: duration("--fault-drop-watch-after", &self.fault_drop_watch_after)?,
            refuse_writes: false,
            refuse_writes_window: self
                .fault_refuse_writes
                .as_deref()
                .map(|w| faults::Window::parse("--fault-refuse-writes", w))
                .transpose()?,
            only_writes: self.fault_only_writes,
            seed: self.fault_seed,
        };
        if !(0.0..=1.0).contains(&config.error_rate) {
            anyhow::bail!(
                "--fault-error-rate: {} is not a fraction between 0 and 1",
                config.error_rate
            );
        }
        config.validate()?;
        Ok(config)
    }
}

/// Runs the subcommand and returns the process exit code.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let faults = args.faults.config()?;
    if faults.is_active() {
        eprintln!(
            "devcluster: injecting faults: {}",
            serde_json::to_string(&faults).context("printing the fault configuration")?
        );
    }
    let pod_ready_delay = faults::parse_duration("--pod-ready-delay", &args.pod_ready_delay)?;
    if args.nodes == 0 {
        anyhow::bail!("--nodes: at least one node is needed");
    }
    let cluster = devcluster::DevCluster::start(devcluster::Config {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        kubeconfig: Some(args.kubeconfig.clone()),
        rbac: args.rbac,
        faults,
        sim: devcluster::sim::SimConfig {
            pod_ready_delay,
            nodes: args.nodes,
            ..Default::default()
        },
        ..devcluster::Config::default()
    })
    .await
    .context("starting the devcluster")?;
    println!("devcluster listening on {}", cluster.url());
    println!("kubeconfig: {}", cluster.kubeconfig_path().display());
    wait_for_signal().await?;
    eprintln!("devcluster: shutting down");
    cluster.shutdown().await;
    Ok(0)
}

/// Waits for SIGINT or SIGTERM.
pub async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
