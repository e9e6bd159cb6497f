//! `capstan render`: a repository, a revision and a path to the exact objects Capstan would
//! deploy, printed as YAML documents or a JSON array, sorted stably.
//!
//! The repository goes through `capstan-source` (resolve the revision, materialize the commit's
//! tree read-only in the cache) and the tree through `capstan-render`; rendered manifests are
//! cached on disk beside the repositories, keyed by repository and commit, so a second run on
//! an unchanged commit renders nothing. Once a day at most, after printing, a run deletes the
//! trees of the cache nobody used for a week (the manifest cache is bounded by size itself).

use anyhow::Context;
use capstan_render::{
    CacheConfig, HelmOptions, HelmParameter, RenderContext, Renderer, RendererConfig, SourceOptions,
};
use capstan_source::{Credentials, RepoCache, RepoUrl};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A tree of the user's cache unused for this long is deleted (by the next run that prunes).
const UNUSED_TREES_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The user's cache is pruned at most this often: a prune lists every tree and blob.
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Output format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// One YAML document per object.
    Yaml,
    /// One JSON array.
    Json,
}

/// Arguments of `capstan render`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Repository: a URL (https://, ssh://, git@host:path, file://) or a local path.
    #[arg(long)]
    pub repo: String,
    /// Branch, tag, commit SHA, HEAD or a semver range over tags.
    #[arg(long, default_value = "HEAD")]
    pub revision: String,
    /// Directory inside the repository.
    #[arg(long, default_value = ".")]
    pub path: String,
    /// Helm values file, relative to the chart directory (repeatable, merged in order).
    #[arg(long = "helm-values", value_name = "FILE")]
    pub helm_values: Vec<String>,
    /// Helm `--set` parameter `key=value` (repeatable).
    #[arg(long = "helm-set", value_name = "KEY=VALUE")]
    pub helm_set: Vec<String>,
    /// Helm `--set-string` parameter `key=value` (repeatable).
    #[arg(long = "helm-set-string", value_name = "KEY=VALUE")]
    pub helm_set_string: Vec<String>,
    /// Helm release name (default: the application name).
    #[arg(long)]
    pub release_name: Option<String>,
    /// Application name (default: the last component of --path, or the repository's name).
    #[arg(long)]
    pub app_name: Option<String>,
    /// Destination namespace.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Kubernetes version Helm charts see in `.Capabilities` (e.g. v1.32.0).
    #[arg(long)]
    pub kube_version: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "yaml")]
    pub output: Format,
    /// Cache directory (default: $XDG_CACHE_HOME/capstan or ~/.cache/capstan).
    #[arg(long, env = "CAPSTAN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

fn default_cache_dir() -> anyhow::Result<PathBuf> {
    user_cache_dir().context("neither XDG_CACHE_HOME nor HOME is set; pass --cache-dir")
}

/// The user's Capstan cache directory: `$XDG_CACHE_HOME/capstan`, else `~/.cache/capstan`;
/// `None` when neither variable is set (also used by `capstan app diff`).
pub(crate) fn user_cache_dir() -> Option<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(xdg).join("capstan"));
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty())?;
    Some(PathBuf::from(home).join(".cache/capstan"))
}

fn parameters(
    list: &[String],
    force_string: bool,
    flag: &str,
) -> anyhow::Result<Vec<HelmParameter>> {
    list.iter()
        .map(|p| {
            let (name, value) = p
                .split_once('=')
                .with_context(|| format!("{flag} {p:?}: expected KEY=VALUE"))?;
            Ok(HelmParameter {
                name: name.to_string(),
                value: value.to_string(),
                force_string,
            })
        })
        .collect()
}

fn app_name(args: &Args) -> String {
    if let Some(name) = &args.app_name {
        return name.clone();
    }
    let from = |s: &str| {
        s.trim_end_matches('/')
            .rsplit(['/', ':'])
            .next()
            .map(|n| n.trim_end_matches(".git").to_string())
            .filter(|n| !n.is_empty() && n != ".")
    };
    from(&args.path)
        .or_else(|| from(&args.repo))
        .unwrap_or_else(|| "app".into())
}

/// Runs the subcommand and returns the process exit code.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let cache_dir = match &args.cache_dir {
        Some(dir) => dir.clone(),
        None => default_cache_dir()?,
    };
    let output = args.output;
    // Git and the tools block; keep them off the async runtime's workers.
    let (objects, cache) = tokio::task::spawn_blocking(move || render(&args, &cache_dir))
        .await
        .context("the render task failed")??;
    let mut stdout = std::io::stdout().lock();
    match output {
        Format::Json => {
            serde_json::to_writer_pretty(&mut stdout, &objects)?;
            writeln!(stdout)?;
        }
        Format::Yaml => {
            for obj in &objects {
                writeln!(stdout, "---")?;
                stdout.write_all(serde_yaml_ng::to_string(obj)?.as_bytes())?;
            }
        }
    }
    stdout.flush()?;
    drop(stdout);
    // The output is complete: a prune now delays only the exit.
    tokio::task::spawn_blocking(move || prune_now_and_then(&cache))
        .await
        .context("the prune task failed")?;
    Ok(0)
}

/// Deletes the trees unused for [`UNUSED_TREES_KEPT`] when the last such prune is older than
/// [`PRUNE_EVERY`]. Failures are reported, never fatal: the command already succeeded.
pub(crate) fn prune_now_and_then(cache: &RepoCache) {
    match cache.prune_if_due(PRUNE_EVERY, UNUSED_TREES_KEPT) {
        Ok(None) => {}
        Ok(Some(report)) => {
            tracing::debug!(
                trees = report.trees_removed,
                blobs = report.blobs_removed,
                bytes = report.bytes_freed,
                "pruned the cache"
            );
            for failure in report.failures {
                tracing::warn!(error = %failure, "pruning the cache");
            }
        }
        Err(e) => tracing::warn!(error = %e, "pruning the cache"),
    }
}

fn render(args: &Args, cache_dir: &Path) -> anyhow::Result<(Vec<serde_json::Value>, RepoCache)> {
    // A local path is made absolute so that the cache key does not depend on the working dir.
    let repo_arg = match Path::new(&args.repo).canonicalize() {
        Ok(p) if !args.repo.contains("://") => p.to_string_lossy().into_owned(),
        _ => args.repo.clone(),
    };
    let url = RepoUrl::parse(&repo_arg)?;
    let cache = RepoCache::new(cache_dir.join("repos"))
        .with_context(|| format!("cache directory {}", cache_dir.display()))?;
    let resolved = cache
        .resolve(&url, &Credentials::None, &args.revision)
        .with_context(|| format!("cannot resolve {:?} in {url}", args.revision))?;
    let tree = cache.materialize(&url, &resolved.commit)?;
    tracing::debug!(commit = %resolved.commit, tree = %tree.root.display(), "materialized");

    let mut opts = SourceOptions {
        path: args.path.clone(),
        ..SourceOptions::default()
    };
    let mut params = parameters(&args.helm_set, false, "--helm-set")?;
    params.extend(parameters(
        &args.helm_set_string,
        true,
        "--helm-set-string",
    )?);
    if !args.helm_values.is_empty() || !params.is_empty() || args.release_name.is_some() {
        opts.helm = Some(HelmOptions {
            value_files: args.helm_values.clone(),
            parameters: params,
            release_name: args.release_name.clone(),
            ..HelmOptions::default()
        });
    }
    let ctx = RenderContext {
        app_name: app_name(args),
        namespace: args.namespace.clone(),
        kube_version: args.kube_version.clone(),
        api_versions: Vec::new(),
    };
    let renderer = Renderer::new(RendererConfig {
        cache: CacheConfig {
            disk_dir: Some(cache_dir.join("manifests")),
            ..CacheConfig::default()
        },
        ..RendererConfig::default()
    })?;
    // Symlinks pointing out of the repository are not materialized at all; a renderer would
    // otherwise silently miss them.
    let prefix = args.path.trim_matches('/').trim_start_matches("./");
    for link in &tree.skipped_symlinks {
        if prefix.is_empty() || prefix == "." || link.starts_with(prefix) {
            tracing::warn!(symlink = %link, "skipped: it points outside the repository");
        }
    }
    let key = format!("{}@{}", url.cache_key(), resolved.commit);
    let rendered = renderer.render(&tree.root, &opts, &ctx, Some(&key)).map_err(|e| {
        // A symlink that pointed out of the repository was not materialized at all; say so
        // instead of "does not exist".
        let message = e.to_string();
        let skipped = tree.skipped_symlinks.iter().find(|link| {
            let name = Path::new(link.as_str())
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            message.contains(link.as_str()) || (!name.is_empty() && message.contains(&format!("\"{name}\"")))
        });
        match skipped {
            Some(link) => anyhow::anyhow!(
                "{e} ({link} is a symlink pointing outside the repository, which Capstan does not follow)"
            ),
            None => anyhow::Error::new(e),
        }
    })?;
    tracing::info!(
        repo = %url,
        commit = %resolved.commit,
        path = %args.path,
        tool = %rendered.tool,
        objects = rendered.objects.len(),
        from_cache = rendered.from_cache,
        "rendered"
    );
    drop(tree);
    Ok((rendered.objects, cache))
}
