//! `capstan devcluster`: the embedded Kubernetes API server in the foreground.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

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
}

/// Runs the subcommand and returns the process exit code.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let cluster = devcluster::DevCluster::start(devcluster::Config {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        kubeconfig: Some(args.kubeconfig.clone()),
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
