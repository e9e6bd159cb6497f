//! `capstan app diff`: what would change if the application were synced now.
//!
//! Like `kubectl diff`, it works from the user's kubeconfig without a running server: it builds
//! the controller's machinery (Git and manifest caches, renderer, repository credentials, live
//! cache) without running it, renders the application at its target revision (or `--revision`)
//! and compares it with the cluster exactly as the controller does, so the objects listed are
//! the ones `capstan app get` calls OutOfSync.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use capstan_api::application::Application;
use capstan_controller::manifests::{self, AppDiff, DiffItem, Handle};
use capstan_controller::ops;
use kube::api::Api;

/// Arguments of `capstan app diff`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name.
    pub name: String,
    /// Compare this revision (branch, tag, commit or semver range) instead of the
    /// application's spec.source.targetRevision.
    #[arg(long)]
    pub revision: Option<String>,
    /// Git and manifest cache directory. Default: `.capstan/cache` when the current directory
    /// has a `.capstan` directory (where `capstan up` or `capstan server` ran: their cache is
    /// reused), else `$XDG_CACHE_HOME/capstan` or `~/.cache/capstan`, so that a diff run
    /// anywhere else leaves nothing behind in that directory.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// The cache directory when `--cache-dir` is not given (see [`Args::cache_dir`]).
fn default_cache_dir() -> PathBuf {
    let local = Path::new(".capstan");
    if local.is_dir() {
        return local.join("cache");
    }
    super::render::user_cache_dir().unwrap_or_else(|| std::env::temp_dir().join("capstan-cache"))
}

/// Prints, per object that differs, a header and the unified diff from live (`-`) to desired
/// (`+`), Secret values masked. Exit codes as `kubectl diff`: 0 no differences, 1 differences,
/// 2 error (the error is returned and printed by `main`).
pub async fn run(api: Api<Application>, args: Args) -> anyhow::Result<u8> {
    let app = ops::get(&api, &args.name).await?;
    let cache_dir = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let controller = capstan_controller::Controller::new(
        api.into_client(),
        capstan_controller::Config {
            // Repository credentials are read from the application's namespace, as the
            // controller that manages it reads them from its own.
            namespace: Some(app.namespace().to_string()),
            cache_dir: cache_dir.clone(),
            ..capstan_controller::Config::default()
        },
    )
    .with_context(|| format!("preparing the cache in {}", cache_dir.display()))?;
    let handle = Handle::from(controller.shared());
    let diff = handle
        .diff(&app, args.revision.as_deref())
        .await
        .context("cannot compute the diff")?;
    let mut out = std::io::stdout().lock();
    print(&mut out, &diff).context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    drop(out);
    // As `capstan render` does with its cache: no controller runs here to prune this one.
    let repos = std::sync::Arc::clone(&controller.shared().repos);
    tokio::task::spawn_blocking(move || super::render::prune_now_and_then(&repos))
        .await
        .context("the prune task failed")?;
    Ok(u8::from(diff.differences().next().is_some()))
}

/// The header of one object, as `argocd app diff` writes it.
fn header(item: &DiffItem) -> String {
    format!(
        "===== {}/{} {}/{} ({}) ======",
        item.group,
        item.kind,
        item.namespace,
        item.name,
        manifests::status_name(item.status)
    )
}

fn print(out: &mut impl std::io::Write, diff: &AppDiff) -> std::io::Result<()> {
    for item in diff.differences() {
        writeln!(out, "{}", header(item))?;
        write!(out, "{}", item.unified)?;
        if !item.unified.ends_with('\n') {
            writeln!(out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_engine::diff::DiffStatus;

    fn item(kind: &str, status: DiffStatus, hook: bool) -> DiffItem {
        DiffItem {
            group: if kind == "Deployment" {
                "apps".into()
            } else {
                String::new()
            },
            kind: kind.into(),
            namespace: "demo".into(),
            name: "web".into(),
            status,
            hook,
            unified: if status == DiffStatus::Synced {
                String::new()
            } else {
                format!(
                    "--- live {kind} demo/web\n+++ desired {kind} demo/web\n@@ -1 +1 @@\n-a\n+b\n"
                )
            },
        }
    }

    #[test]
    fn only_differences_are_printed_with_their_headers() {
        let diff = AppDiff {
            revision: "abc".into(),
            items: vec![
                item("ConfigMap", DiffStatus::OutOfSync, false),
                item("Deployment", DiffStatus::Synced, false),
                item("Job", DiffStatus::Missing, true),
                item("Service", DiffStatus::Extraneous, false),
            ],
        };
        let mut out = Vec::new();
        print(&mut out, &diff).unwrap();
        let text = String::from_utf8(out).unwrap();
        let headers: Vec<&str> = text.lines().filter(|l| l.starts_with("=====")).collect();
        assert_eq!(
            headers,
            vec![
                "===== /ConfigMap demo/web (OutOfSync) ======",
                "===== /Service demo/web (Extraneous) ======",
            ]
        );
        assert!(text.contains("--- live ConfigMap demo/web\n+++ desired ConfigMap demo/web\n"));
        assert!(!text.contains("Deployment") && !text.contains("Job"));
    }
}
