//! `capstan up` (being built; see the open issues).

/// Arguments of `capstan up`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand and returns the process exit code.
pub async fn run(_args: Args) -> anyhow::Result<u8> {
    anyhow::bail!("`capstan up` is not built yet")
}
