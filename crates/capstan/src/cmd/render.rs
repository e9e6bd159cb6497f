//! `capstan render` (being built; see the open issues).

/// Arguments of `capstan render`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand and returns the process exit code.
pub async fn run(_args: Args) -> anyhow::Result<u8> {
    anyhow::bail!("`capstan render` is not built yet")
}
