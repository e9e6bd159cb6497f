//! Manifests from a source tree: plain directories, Kustomize, Helm (the real engine) and
//! Jsonnet, with a manifest cache.
//!
//! The input is a read-only directory tree (a materialized commit) and an Application's source
//! options; the output is the list of Kubernetes objects, sorted by (API group, kind,
//! namespace, name). A repository is untrusted input: every path is confined to the tree,
//! every external tool runs with a timeout and an output limit, and a failed render returns an
//! error, never a partial list.
//!
//! Tool detection, as Argo CD: when exactly one of `helm`, `kustomize`, `directory` is set in
//! the options, that tool; otherwise a `kustomization.yaml`/`.yml`/`Kustomization` in the
//! source directory means Kustomize, then a `Chart.yaml` means Helm, otherwise the directory
//! is read as manifests. A directory is reported as [`Tool::Jsonnet`] when it has Jsonnet
//! options or contains selected `*.jsonnet` files (which are evaluated beside the YAML/JSON
//! files, as Argo CD does).
//!
//! [`Renderer::render`] blocks (it runs tools and, for Helm dependencies, HTTP requests):
//! call it from a blocking context (`tokio::task::spawn_blocking`). The renderer is
//! `Send + Sync` and meant to be shared by all applications of a controller.

#![deny(missing_docs)]

mod cache;
mod directory;
mod error;
mod helm;
mod jsonnet;
mod kustomize;
pub mod manifest;
mod options;
mod paths;
mod process;

pub use cache::CacheConfig;
pub use error::RenderError;
pub use options::{
    DirectoryOptions, HelmOptions, HelmParameter, JsonnetOptions, JsonnetVar, KustomizeOptions,
    KustomizePatch, KustomizeReplica, KustomizeSelector, RenderContext, SourceOptions,
};

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The tool that produced a render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Tool {
    /// A plain directory of YAML/JSON manifests.
    Directory,
    /// Kustomize.
    Kustomize,
    /// Helm.
    Helm,
    /// A directory with Jsonnet (and possibly YAML/JSON) files.
    Jsonnet,
}

impl std::fmt::Display for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tool::Directory => "directory",
            Tool::Kustomize => "kustomize",
            Tool::Helm => "helm",
            Tool::Jsonnet => "jsonnet",
        })
    }
}

/// A render result.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The objects, sorted by (API group, kind, namespace, name), stable for equal keys.
    pub objects: Vec<serde_json::Value>,
    /// The tool that produced them.
    pub tool: Tool,
    /// Whether they came from the manifest cache (no tool ran).
    pub from_cache: bool,
}

/// How to find the Helm engine.
#[derive(Debug, Clone, Default)]
pub enum HelmEngineChoice {
    /// `helm` on PATH, else `CAPSTAN_HELM_LIB`, else the helm-python-sdk wheel's library.
    #[default]
    Discover,
    /// This `libhelm_c` shared library.
    Library(PathBuf),
    /// No Helm: Helm sources fail with a clear error.
    Disabled,
}

/// Renderer settings.
#[derive(Debug, Clone)]
pub struct RendererConfig {
    /// The Kustomize binary (`kustomize` or `kubectl`, told apart by file name); `None` looks
    /// for `kustomize`, then `kubectl`, on PATH.
    pub kustomize_bin: Option<PathBuf>,
    /// How to find Helm.
    pub helm: HelmEngineChoice,
    /// Longest a single tool run may take.
    pub timeout: Duration,
    /// Largest output a tool run may produce, in bytes.
    pub max_output_bytes: usize,
    /// Manifest cache bounds.
    pub cache: CacheConfig,
    /// Where scratch directories (overlays, chart copies) are created; the system temporary
    /// directory when `None`.
    pub scratch_dir: Option<PathBuf>,
}

impl Default for RendererConfig {
    fn default() -> Self {
        RendererConfig {
            kustomize_bin: None,
            helm: HelmEngineChoice::Discover,
            timeout: Duration::from_secs(90),
            max_output_bytes: 64 * 1024 * 1024,
            cache: CacheConfig::default(),
            scratch_dir: None,
        }
    }
}

/// Counters of a renderer's work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderStats {
    /// Renders that ran a tool (or read a directory).
    pub renders: u64,
    /// Renders answered from the cache.
    pub cache_hits: u64,
}

/// Renders sources; holds tool discovery, limits and the manifest cache.
pub struct Renderer {
    kustomize: Option<kustomize::KustomizeTool>,
    kustomize_version: String,
    helm: helm::HelmEngine,
    limits: process::Limits,
    scratch_dir: PathBuf,
    cache: cache::ManifestCache,
    renders: AtomicU64,
    cache_hits: AtomicU64,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("kustomize", &self.kustomize)
            .field("kustomize_version", &self.kustomize_version)
            .field("helm", &self.helm)
            .finish_non_exhaustive()
    }
}

/// Finds an executable on PATH.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

impl Renderer {
    /// Discovers the tools (once) and sets up the cache. Missing tools are not an error here:
    /// a source that needs one fails with [`RenderError::ToolUnavailable`].
    pub fn new(cfg: RendererConfig) -> Result<Self, RenderError> {
        let limits = process::Limits {
            timeout: cfg.timeout,
            max_output: cfg.max_output_bytes,
        };
        let kustomize = match &cfg.kustomize_bin {
            Some(bin) => {
                let is_kubectl = bin
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("kubectl"));
                Some(if is_kubectl {
                    kustomize::KustomizeTool::Kubectl(bin.clone())
                } else {
                    kustomize::KustomizeTool::Kustomize(bin.clone())
                })
            }
            None => which("kustomize")
                .map(kustomize::KustomizeTool::Kustomize)
                .or_else(|| which("kubectl").map(kustomize::KustomizeTool::Kubectl)),
        };
        let kustomize_version = kustomize
            .as_ref()
            .map(|k| k.version(limits))
            .unwrap_or_else(|| "none".into());
        let helm = match &cfg.helm {
            HelmEngineChoice::Discover => helm::HelmEngine::discover(which, limits),
            HelmEngineChoice::Library(path) => helm::HelmEngine::from_library(path),
            HelmEngineChoice::Disabled => helm::HelmEngine::Unavailable(
                "Helm is disabled in the renderer's configuration".into(),
            ),
        };
        let scratch_dir = cfg.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&scratch_dir).map_err(|e| RenderError::io(&scratch_dir, e))?;
        Ok(Renderer {
            kustomize,
            kustomize_version,
            helm,
            limits,
            scratch_dir,
            cache: cache::ManifestCache::new(cfg.cache),
            renders: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
        })
    }

    /// The tool versions that are part of every cache key, e.g. for `capstan version`.
    pub fn tool_versions(&self) -> String {
        format!(
            "kustomize {}; {}; jrsonnet 0.5.0-pre98; capstan-render {}",
            self.kustomize_version,
            self.helm.version(),
            env!("CARGO_PKG_VERSION")
        )
    }

    /// Counters of the work done so far.
    pub fn stats(&self) -> RenderStats {
        RenderStats {
            renders: self.renders.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
        }
    }

    /// Renders `opts.path` of the tree at `tree_root` (a read-only checkout).
    ///
    /// `cache_key` identifies the tree's content (repository URL + commit, or the path's tree
    /// id): with it, a render whose inputs did not change is answered from the cache without
    /// running anything; without it, nothing is cached (a working directory may change).
    pub fn render(
        &self,
        tree_root: &Path,
        opts: &SourceOptions,
        ctx: &RenderContext,
        cache_key: Option<&str>,
    ) -> Result<Rendered, RenderError> {
        let key = match cache_key {
            Some(k) => {
                let opts_json =
                    serde_json::to_vec(opts).map_err(|e| RenderError::InvalidOption {
                        field: "source".into(),
                        message: e.to_string(),
                    })?;
                let ctx_json = serde_json::to_vec(ctx).map_err(|e| RenderError::InvalidOption {
                    field: "context".into(),
                    message: e.to_string(),
                })?;
                let versions = self.tool_versions();
                let key = cache::key(&[k.as_bytes(), &opts_json, &ctx_json, versions.as_bytes()]);
                if let Some((objects, tool)) = self.cache.get(&key) {
                    self.cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Rendered {
                        objects: objects.as_ref().clone(),
                        tool,
                        from_cache: true,
                    });
                }
                Some(key)
            }
            None => None,
        };
        self.renders.fetch_add(1, Ordering::Relaxed);
        let (mut objects, tool) = self.render_uncached(tree_root, opts, ctx)?;
        manifest::sort_objects(&mut objects);
        if let Some(key) = key {
            self.cache.put(key, Arc::new(objects.clone()), tool);
        }
        Ok(Rendered {
            objects,
            tool,
            from_cache: false,
        })
    }

    fn render_uncached(
        &self,
        tree_root: &Path,
        opts: &SourceOptions,
        ctx: &RenderContext,
    ) -> Result<(Vec<serde_json::Value>, Tool), RenderError> {
        if opts.chart.as_deref().is_some_and(|c| !c.is_empty()) {
            return Err(RenderError::InvalidOption {
                field: "chart".into(),
                message: "Helm-repository sources are not supported by the tree renderer; point `path` at a chart in the repository".into(),
            });
        }
        let tree = paths::Tree::new(tree_root)?;
        let path = if opts.path.trim().is_empty() {
            "."
        } else {
            opts.path.trim()
        };
        let app_dir = tree.resolve(tree.root(), path, "source path")?;
        if !app_dir.is_dir() {
            return Err(RenderError::Manifest {
                file: tree.display(&app_dir),
                message: "the source path is not a directory".into(),
            });
        }
        let explicit = [
            opts.helm.is_some(),
            opts.kustomize.is_some(),
            opts.directory.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if explicit > 1 {
            return Err(RenderError::InvalidOption {
                field: "source".into(),
                message: "more than one of helm, kustomize and directory is set".into(),
            });
        }
        let tool = if opts.helm.is_some() {
            Tool::Helm
        } else if opts.kustomize.is_some() {
            Tool::Kustomize
        } else if opts.directory.is_some() {
            Tool::Directory
        } else if kustomize::kustomization_file(&app_dir).is_some() {
            Tool::Kustomize
        } else if app_dir.join("Chart.yaml").is_file() {
            Tool::Helm
        } else {
            Tool::Directory
        };
        match tool {
            Tool::Kustomize => {
                let Some(bin) = &self.kustomize else {
                    return Err(RenderError::ToolUnavailable {
                        tool: "kustomize",
                        reason: "neither `kustomize` nor `kubectl` is on PATH".into(),
                    });
                };
                if kustomize::kustomization_file(&app_dir).is_none() {
                    return Err(RenderError::NotFound {
                        what: "kustomization file in".into(),
                        path: tree.display(&app_dir),
                    });
                }
                let objects = kustomize::build(
                    bin,
                    &tree,
                    &app_dir,
                    opts.kustomize.as_ref(),
                    &self.scratch_dir,
                    self.limits,
                )?;
                Ok((objects, Tool::Kustomize))
            }
            Tool::Helm => {
                if !app_dir.join("Chart.yaml").is_file() {
                    return Err(RenderError::NotFound {
                        what: "Chart.yaml in".into(),
                        path: tree.display(&app_dir),
                    });
                }
                let objects = helm::render(
                    &self.helm,
                    &tree,
                    &app_dir,
                    opts.helm.as_ref(),
                    ctx,
                    &self.scratch_dir,
                    self.limits,
                )?;
                Ok((objects, Tool::Helm))
            }
            Tool::Directory | Tool::Jsonnet => {
                let dir_opts = opts.directory.as_ref();
                let files = directory::select(&tree, &app_dir, dir_opts)?;
                let has_jsonnet_opts = dir_opts
                    .and_then(|d| d.jsonnet.as_ref())
                    .is_some_and(|j| j != &JsonnetOptions::default());
                let tool = if has_jsonnet_opts || files.iter().any(|f| f.jsonnet) {
                    Tool::Jsonnet
                } else {
                    Tool::Directory
                };
                let objects = directory::render(&tree, &files, dir_opts, self.limits)?;
                Ok((objects, tool))
            }
        }
    }
}
