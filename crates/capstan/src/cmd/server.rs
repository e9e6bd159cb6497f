//! `capstan server`: the controller and the HTTP API (with its metrics listener) against a
//! cluster, in one process.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

/// Arguments of `capstan server`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kubeconfig of the cluster to manage (default: $KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace whose Applications are reconciled.
    #[arg(long, default_value = capstan_api::application::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Reconcile Applications of every namespace.
    #[arg(long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Default refresh interval (`180s`, `3m`); jitter of up to 10 % is added.
    #[arg(long, default_value = "3m", value_parser = parse_duration)]
    pub reconcile_interval: Duration,
    /// Applications reconciled at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,
    /// Do not apply the Application CRD at start.
    #[arg(long)]
    pub no_install_crd: bool,
    /// Git and manifest cache directory.
    #[arg(long, default_value = ".capstan/cache")]
    pub cache_dir: PathBuf,
    /// Delete materialized trees of the cache unused for this long (checked every 10 minutes);
    /// keep it well above the refresh interval.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub cache_max_unused: Duration,
    /// Address of the HTTP API (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the Prometheus metrics endpoint (no authentication, as scrapers expect).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub metrics_listen: SocketAddr,
    /// Run the controller alone: no HTTP API, no metrics listener.
    #[arg(long, conflicts_with_all = ["listen", "metrics_listen", "insecure_cookies"])]
    pub no_api: bool,
    /// Shards the applications are split into. Every replica takes shards through Leases in
    /// `--namespace` (at most its fair share) and reconciles only their applications; with 1,
    /// one replica is active and the others stand by. Give every replica the same number.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub shards: u32,
    /// This replica's name in the leases (default: $POD_NAME, else the host name and a random
    /// suffix). Must be unique per replica.
    #[arg(long)]
    pub identity: Option<String>,
    /// How long a lease stays valid after its holder's last renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// A holder that could not renew for this long stops reconciling the shard (shorter than
    /// --lease-duration, so it has stopped before another replica takes over).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub renew_deadline: Duration,
    /// How often leases are renewed and free shards looked for.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub lease_retry_period: Duration,
    /// Reconcile every application without taking leases: only for a single replica, never
    /// for several (they would all apply).
    #[arg(long, conflicts_with_all = ["shards", "identity"])]
    pub no_leases: bool,
    /// Send the session cookie without `Secure`, for a browser reaching the API over plain
    /// http on another host than localhost. Never on a network-facing server.
    #[arg(long)]
    pub insecure_cookies: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    capstan_controller::parse_duration(s)
        .ok_or_else(|| format!("invalid duration {s:?} (expected e.g. 30s, 3m, 1h)"))
}

/// A client from a kubeconfig file, or the default configuration when `None`.
pub async fn kube_client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    capstan_controller::ensure_crypto_provider();
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using the kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig given and none found (use --kubeconfig)")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// Runs the subcommand and returns the process exit code.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    if !args.no_install_crd {
        capstan_controller::install_crd(&client).await.context(
            "installing the Application CRD (use --no-install-crd if it is managed elsewhere)",
        )?;
    }
    let namespace = (!args.all_namespaces).then(|| args.namespace.clone());
    // One metrics handle: the controller records into it, the API's listener serves it.
    let metrics = capstan_server::Metrics::new();

    // The controller exists before the API, which renders diffs with its caches.
    let config = capstan_controller::Config {
        namespace: namespace.clone(),
        reconcile_interval: args.reconcile_interval,
        concurrency: args.concurrency.max(1),
        cache_dir: args.cache_dir.clone(),
        cache_max_unused: args.cache_max_unused,
        recorder: Arc::new(metrics.clone()),
        sharding: sharding(&args)?,
        ..capstan_controller::Config::default()
    };
    let controller = capstan_controller::Controller::new(client.clone(), config)?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = if args.no_api {
        None
    } else {
        let config = capstan_server::Config {
            listen: args.listen,
            metrics_listen: Some(args.metrics_listen),
            namespace: args.namespace.clone(),
            applications_namespace: namespace.clone(),
            insecure_cookies: args.insecure_cookies,
            metrics: metrics.clone(),
            controller: Some(controller.shared().into()),
            ..capstan_server::Config::default()
        };
        let server = capstan_server::serve(config, client.clone(), async move {
            let _ = stop_rx.await;
        })
        .await
        .context("starting the HTTP API (choose other addresses with --listen/--metrics-listen, or --no-api)")?;
        announce(&server)?;
        Some(server)
    };

    tracing::info!(namespace = %args.namespace, "capstan controller running");
    let mut outcome = Ok(());
    controller
        .run_until(async {
            outcome = super::devcluster::wait_for_signal().await;
            eprintln!("capstan: shutting down");
        })
        .await;
    // The controller stopped reconciling (its reconciles are dropped mid-way, which is safe: an
    // interrupted operation is resumed at the next start) and released its leases; the API
    // finishes the requests in flight.
    let _ = stop_tx.send(());
    if let Some(server) = server
        && tokio::time::timeout(Duration::from_secs(10), server.wait())
            .await
            .is_err()
    {
        eprintln!("capstan: the HTTP API did not stop within 10s; leaving it");
    }
    outcome?;
    Ok(0)
}

/// The lease settings of `args`, `None` with `--no-leases`.
fn sharding(args: &Args) -> anyhow::Result<Option<capstan_controller::shard::ShardConfig>> {
    if args.no_leases {
        return Ok(None);
    }
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(capstan_controller::shard::default_identity);
    let config = capstan_controller::shard::ShardConfig {
        lease_duration: args.lease_duration,
        renew_deadline: args.renew_deadline,
        retry_period: args.lease_retry_period,
        ..capstan_controller::shard::ShardConfig::new(args.shards, identity, &args.namespace)
    };
    config.validate().map_err(|e| {
        anyhow::anyhow!("--shards/--lease-duration/--renew-deadline/--lease-retry-period: {e}")
    })?;
    Ok(Some(config))
}

/// Prints where the API listens and, once, the generated admin password. Stdout, never a log:
/// logs are collected and kept, a password must not be.
fn announce(server: &capstan_server::Server) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "capstan: API on http://{}", server.addr).context("writing to stdout")?;
    if let Some(addr) = server.metrics_addr {
        writeln!(out, "capstan: metrics on http://{addr}/metrics").context("writing to stdout")?;
    }
    if let Some(password) = &server.initial_admin_password {
        writeln!(
            out,
            "capstan: initial password of user admin (shown once, stored hashed in Secret {}): {password}",
            capstan_server::auth::USERS_SECRET
        )
        .context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    Ok(())
}
