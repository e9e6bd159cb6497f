//! `capstan bench`: end-to-end measurements of Capstan on the embedded cluster.

/// Arguments of `capstan bench`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs a benchmark.
pub async fn run(_args: Args) -> anyhow::Result<u8> {
    anyhow::bail!("no benchmark is built yet")
}
