//! A plain directory of manifests (and `*.jsonnet` files), as Argo CD's directory source.
//!
//! Rules: files ending in `.yaml`, `.yml`, `.json` are manifests and `.jsonnet` files are
//! evaluated; every other file is ignored, as is a YAML file none of whose documents is a
//! Kubernetes object. Names starting with `.` are skipped. Subdirectories are visited only with
//! `recurse`. `include`/`exclude` are globs (`*` crosses `/`, `{a,b}` alternatives) matched
//! against the path relative to the source directory. Files are read in name order; a symlink
//! whose target leaves the repository is an error.

use crate::manifest::{Strictness, parse_json, parse_yaml};
use crate::options::DirectoryOptions;
use crate::paths::Tree;
use crate::process::Limits;
use crate::{RenderError, jsonnet};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// One file selected for rendering.
#[derive(Debug)]
pub(crate) struct Selected {
    pub(crate) path: PathBuf,
    pub(crate) rel: String,
    pub(crate) jsonnet: bool,
}

fn glob_set(field: &str, pattern: &str) -> Result<GlobSet, RenderError> {
    let mut builder = GlobSetBuilder::new();
    // Argo CD accepts `{a.yaml,b.yaml}` as well as a single pattern; globset does both.
    let glob = Glob::new(pattern).map_err(|e| RenderError::InvalidOption {
        field: field.to_string(),
        message: e.to_string(),
    })?;
    builder.add(glob);
    builder.build().map_err(|e| RenderError::InvalidOption {
        field: field.to_string(),
        message: e.to_string(),
    })
}

/// Lists the files of `dir` the options select, in a deterministic order.
pub(crate) fn select(
    tree: &Tree,
    dir: &Path,
    opts: Option<&DirectoryOptions>,
) -> Result<Vec<Selected>, RenderError> {
    let recurse = opts.is_some_and(|o| o.recurse);
    let include = match opts
        .and_then(|o| o.include.as_deref())
        .filter(|s| !s.is_empty())
    {
        Some(p) => Some(glob_set("directory.include", p)?),
        None => None,
    };
    let exclude = match opts
        .and_then(|o| o.exclude.as_deref())
        .filter(|s| !s.is_empty())
    {
        Some(p) => Some(glob_set("directory.exclude", p)?),
        None => None,
    };
    let mut out = Vec::new();
    let mut visited = HashSet::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((current, prefix)) = stack.pop() {
        if !visited.insert(current.clone()) {
            continue;
        }
        let mut entries: Vec<_> = std::fs::read_dir(&current)
            .map_err(|e| RenderError::io(&current, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| RenderError::io(&current, e))?;
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let rel = format!("{prefix}{name}");
            let path = entry.path();
            let file_type = entry.file_type().map_err(|e| RenderError::io(&path, e))?;
            let is_manifest_name = [".yaml", ".yml", ".json", ".jsonnet"]
                .iter()
                .any(|ext| name.ends_with(ext));
            if !file_type.is_dir() && !file_type.is_symlink() && !is_manifest_name {
                continue;
            }
            if file_type.is_symlink() && !is_manifest_name && !recurse {
                continue;
            }
            // Every followed entry (symlinks included) must stay inside the repository.
            let canonical = match path.canonicalize() {
                Ok(c) => c,
                Err(_) if file_type.is_symlink() => {
                    return Err(RenderError::NotFound {
                        what: "symlink target of".into(),
                        path: tree.display(&path),
                    });
                }
                Err(e) => return Err(RenderError::io(&path, e)),
            };
            if !tree.contains(&canonical) {
                return Err(RenderError::PathEscape {
                    what: "file".into(),
                    path: tree.display(&path),
                    reason: format!("it resolves through a symlink to {}", canonical.display()),
                });
            }
            if canonical.is_dir() {
                if recurse {
                    subdirs.push((canonical, format!("{rel}/")));
                }
                continue;
            }
            if !is_manifest_name {
                continue;
            }
            if include.as_ref().is_some_and(|g| !g.is_match(&rel)) {
                continue;
            }
            if exclude.as_ref().is_some_and(|g| g.is_match(&rel)) {
                continue;
            }
            out.push(Selected {
                path: canonical,
                jsonnet: name.ends_with(".jsonnet"),
                rel,
            });
        }
        // Depth-first in name order: push in reverse so the first subdirectory pops first.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(out)
}

/// Renders the selected files.
pub(crate) fn render(
    tree: &Tree,
    files: &[Selected],
    opts: Option<&DirectoryOptions>,
    limits: Limits,
) -> Result<Vec<Value>, RenderError> {
    let mut objects = Vec::new();
    let mut total: u64 = 0;
    for file in files {
        let display = tree.display(&file.path);
        if file.jsonnet {
            let jsonnet_opts = opts.and_then(|o| o.jsonnet.as_ref());
            objects.extend(jsonnet::evaluate_file(
                tree,
                &file.path,
                jsonnet_opts,
                limits,
            )?);
            continue;
        }
        // The same output bound as a tool run: a repository cannot make us hold gigabytes.
        total += std::fs::metadata(&file.path)
            .map_err(|e| RenderError::io(&file.path, e))?
            .len();
        if total > limits.max_output as u64 {
            return Err(RenderError::OutputTooLarge {
                tool: format!("directory {}", tree.display(&file.path)),
                limit: limits.max_output,
            });
        }
        let text =
            std::fs::read_to_string(&file.path).map_err(|e| RenderError::io(&file.path, e))?;
        if file.rel.ends_with(".json") {
            objects.extend(parse_json(&display, &text)?);
        } else {
            objects.extend(parse_yaml(&display, &text, Strictness::Lenient)?);
        }
    }
    Ok(objects)
}
