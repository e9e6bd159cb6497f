//! `capstan devcluster` (being built; see the open issues).

/// Arguments of `capstan devcluster`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand and returns the process exit code.
pub async fn run(_args: Args) -> anyhow::Result<u8> {
    anyhow::bail!("`capstan devcluster` is not built yet")
}
