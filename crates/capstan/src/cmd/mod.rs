//! One module per subcommand: each owns its clap `Args` and an async `run` returning the exit code.

pub mod app;
pub mod app_diff;
pub mod bench;
pub mod devcluster;
pub mod diff;
pub mod docs;
pub mod health;
pub mod install;
pub mod render;
pub mod repo;
pub mod server;
pub mod up;

/// Logs go to stderr so that stdout stays machine-readable (`-o json`, rendered YAML).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAPSTAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
