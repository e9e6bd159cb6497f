//! `capstan server`: the controller (and, later, the HTTP API) against a cluster.

use std::path::{Path, PathBuf};
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
    let config = capstan_controller::Config {
        namespace: (!args.all_namespaces).then(|| args.namespace.clone()),
        reconcile_interval: args.reconcile_interval,
        concurrency: args.concurrency.max(1),
        cache_dir: args.cache_dir.clone(),
        ..capstan_controller::Config::default()
    };
    let controller = capstan_controller::Controller::new(client, config)?;
    tracing::info!(namespace = %args.namespace, "capstan controller running");
    tokio::select! {
        () = controller.run() => {}
        signal = super::devcluster::wait_for_signal() => { signal?; }
    }
    eprintln!("capstan: shutting down");
    Ok(0)
}
