//! The `capstan` binary: one entry point for the agent, the embedded cluster and the offline tools.

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// mimalloc instead of glibc malloc: the controller's refresh path allocates and frees many small
/// objects on Tokio worker threads, and a profile showed about half of its CPU in glibc's
/// `malloc_consolidate`/`unlink_chunk`. With mimalloc `bench scale --apps 1000` spends ~40% less
/// CPU per refresh for ~90 MiB more peak RSS (figures in the commit that added this).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Capstan: a pull-based GitOps delivery agent for Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "capstan", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start everything on this machine: embedded cluster, controller, web UI and example apps.
    Up(cmd::up::Args),
    /// Run the embedded Kubernetes API server in the foreground.
    Devcluster(cmd::devcluster::Args),
    /// Print the health of every object in the given manifest files.
    Health(cmd::health::Args),
    /// Compare desired and live manifests offline (exit 0: same, 1: different, 2: error).
    Diff(cmd::diff::Args),
    /// Render an application's manifests from a Git repository, exactly as Capstan would deploy them.
    Render(cmd::render::Args),
    /// Run the controller and the HTTP API + web UI against a cluster.
    Server(cmd::server::Args),
    /// Manage Applications: create, list, get, diff, sync, wait, history, rollback, unlock, set, delete.
    App(cmd::app::Args),
    /// Repository credentials (Secrets the controller reads): add, list, rm.
    Repo(cmd::repo::Args),
    /// Print the YAML to install Capstan in a cluster (CRD, namespace, RBAC, Deployment).
    Install(cmd::install::Args),
    /// Measure Capstan end to end on the embedded cluster (e.g. `bench scale --apps 1000`).
    Bench(cmd::bench::Args),
    /// Print the CLI or HTTP API reference in Markdown (the source of docs/cli.md, docs/http-api.md).
    #[command(hide = true)]
    Docs(cmd::docs::Args),
}

fn main() -> ExitCode {
    cmd::init_tracing();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => cmd::up::run(args).await,
            Command::Devcluster(args) => cmd::devcluster::run(args).await,
            Command::Health(args) => cmd::health::run(args).await,
            Command::Diff(args) => cmd::diff::run(args).await,
            Command::Render(args) => cmd::render::run(args).await,
            Command::Server(args) => cmd::server::run(args).await,
            Command::App(args) => cmd::app::run(args).await,
            Command::Repo(args) => cmd::repo::run(args).await,
            Command::Install(args) => cmd::install::run(args).await,
            Command::Bench(args) => cmd::bench::run(args).await,
            Command::Docs(args) => cmd::docs::run(args).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
