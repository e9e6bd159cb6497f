//! `capstan up`: everything on this machine. Today that is the embedded cluster; the Capstan
//! controller and web UI join it as their issues land.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

/// Arguments of `capstan up`.
///
/// Starts the embedded Kubernetes API server with its state under `.capstan/devcluster` and its
/// kubeconfig at `.capstan/kubeconfig`, prints the `export KUBECONFIG=…` line and runs until
/// Ctrl-C. (The Capstan controller and web UI will be started here too once they are built.)
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory of the cluster state.
    #[arg(long, default_value = ".capstan/devcluster")]
    pub data_dir: PathBuf,
    /// Where to write the kubeconfig.
    #[arg(long, default_value = ".capstan/kubeconfig")]
    pub kubeconfig: PathBuf,
    /// Address of the API server; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

/// Runs the subcommand and returns the process exit code.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let cluster = devcluster::DevCluster::start(devcluster::Config {
        listen: args.listen,
        data_dir: Some(args.data_dir.clone()),
        kubeconfig: Some(args.kubeconfig.clone()),
        ..devcluster::Config::default()
    })
    .await
    .with_context(|| format!("starting the devcluster in {}", args.data_dir.display()))?;
    let kubeconfig = std::fs::canonicalize(cluster.kubeconfig_path())
        .unwrap_or_else(|_| cluster.kubeconfig_path().to_path_buf());
    println!("Capstan is up. Embedded cluster: {}", cluster.url());
    println!("export KUBECONFIG={}", kubeconfig.display());
    println!(
        "(Ctrl-C to stop; the state stays in {})",
        args.data_dir.display()
    );
    super::devcluster::wait_for_signal().await?;
    eprintln!("capstan: shutting down");
    cluster.shutdown().await;
    Ok(0)
}
