//! `capstan app diff`: what would change if the application were synced now.

use capstan_api::application::Application;
use capstan_controller::ops;
use kube::api::Api;

/// Arguments of `capstan app diff`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name.
    pub name: String,
}

/// Prints the objects that differ (exit 0: none, 1: some, 2: error).
pub async fn run(api: Api<Application>, args: Args) -> anyhow::Result<u8> {
    let app = ops::get(&api, &args.name).await?;
    let status = app.status.unwrap_or_default();
    let mut differs = false;
    for r in status.resources.iter().filter(|r| r.status != "Synced") {
        differs = true;
        let what = if r.requires_pruning {
            "not in Git (would be pruned)"
        } else {
            "differs from Git"
        };
        println!("{} {}/{}: {what}", r.kind, r.namespace, r.name);
    }
    if status.sync.as_ref().is_some_and(|s| s.status == "Unknown") {
        for c in &status.conditions {
            eprintln!("{}: {}", c.type_, c.message);
        }
        return Ok(2);
    }
    Ok(u8::from(differs))
}
