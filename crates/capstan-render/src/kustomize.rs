//! Kustomize: `kustomize build`, or `kubectl kustomize` when only kubectl is installed.
//!
//! Confinement. Kustomize's load restrictor (`LoadRestrictionsRootOnly`, passed explicitly)
//! keeps *files* under each kustomization's own directory, but it lets `resources`,
//! `components` and bases name any directory (`../../outside`), and it does not look through a
//! symlinked file. So before running the tool, every local path of every kustomization reached
//! from the source directory is resolved (symlinks included) and must lie inside the
//! repository; remote resources are refused because the output must depend on the commit only.
//!
//! Overrides (`spec.source.kustomize`) are applied by an overlay written into a scratch
//! directory: a kustomization whose only resource is the source directory, by a relative path
//! (Kustomize refuses absolute ones), carrying the overrides. The repository tree is never
//! written to, and no restriction is relaxed: a directory resource is allowed to be outside
//! the overlay's root, and patch files are copied in as inline patches.

use crate::RenderError;
use crate::manifest::{Strictness, parse_yaml};
use crate::options::KustomizeOptions;
use crate::paths::{Tree, relative_path};
use crate::process::{self, Limits};
use serde_json::{Map, Value, json};
use serde_yaml_ng::Value as Yaml;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The file names Kustomize recognises, in its order of preference.
pub(crate) const KUSTOMIZATION_FILES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Which binary runs Kustomize.
#[derive(Debug, Clone)]
pub(crate) enum KustomizeTool {
    /// A standalone `kustomize`.
    Kustomize(PathBuf),
    /// `kubectl kustomize`.
    Kubectl(PathBuf),
}

impl KustomizeTool {
    fn command(&self, dir: &Path) -> Command {
        let mut cmd = match self {
            KustomizeTool::Kustomize(bin) => {
                let mut c = Command::new(bin);
                c.arg("build");
                c
            }
            KustomizeTool::Kubectl(bin) => {
                let mut c = Command::new(bin);
                c.arg("kustomize");
                c
            }
        };
        cmd.arg(dir)
            .arg("--load-restrictor")
            .arg("LoadRestrictionsRootOnly");
        cmd
    }

    /// The Kustomize version (part of the cache key), asked once.
    pub(crate) fn version(&self, limits: Limits) -> String {
        let mut cmd = match self {
            KustomizeTool::Kustomize(bin) => {
                let mut c = Command::new(bin);
                c.arg("version");
                c
            }
            KustomizeTool::Kubectl(bin) => {
                let mut c = Command::new(bin);
                c.args(["version", "--client", "-o", "json"]);
                c
            }
        };
        let out = match process::run(
            "kustomize version",
            {
                cmd.env_remove("KUBECONFIG");
                cmd
            },
            limits,
        ) {
            Ok(o) if o.success => String::from_utf8_lossy(&o.stdout).into_owned(),
            _ => return "unknown".into(),
        };
        match self {
            KustomizeTool::Kustomize(_) => out.trim().to_string(),
            KustomizeTool::Kubectl(_) => serde_json::from_str::<Value>(&out)
                .ok()
                .and_then(|v| {
                    v.get("kustomizeVersion")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "unknown".into()),
        }
    }
}

/// Finds the kustomization file of a directory.
pub(crate) fn kustomization_file(dir: &Path) -> Option<PathBuf> {
    KUSTOMIZATION_FILES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

fn looks_remote(s: &str) -> bool {
    s.contains("://") || s.starts_with("git@") || s.starts_with("github.com/")
}

/// Checks every local path reachable from the kustomization in `dir` (canonical, inside the
/// tree): see the module documentation.
pub(crate) fn check_confined(tree: &Tree, dir: &Path) -> Result<(), RenderError> {
    let mut visited = HashSet::new();
    check_dir(tree, dir, &mut visited)
}

fn check_dir(tree: &Tree, dir: &Path, visited: &mut HashSet<PathBuf>) -> Result<(), RenderError> {
    if !visited.insert(dir.to_path_buf()) {
        return Ok(());
    }
    let Some(file) = kustomization_file(dir) else {
        // A plain directory of resources is not allowed by Kustomize either; let it say so.
        return Ok(());
    };
    let display = tree.display(&file);
    let text = std::fs::read_to_string(&file).map_err(|e| RenderError::io(&file, e))?;
    let doc: Yaml = serde_yaml_ng::from_str(&text).map_err(|e| RenderError::Parse {
        file: display.clone(),
        line: e.location().map(|l| l.line()),
        message: e.to_string(),
    })?;
    let Yaml::Mapping(map) = doc else {
        return Ok(());
    };
    let mut check = |field: &str, rel: &str| -> Result<(), RenderError> {
        let what = format!("{field} of {display}");
        if looks_remote(rel) {
            return Err(RenderError::PathEscape {
                what,
                path: rel.to_string(),
                reason: "remote resources are not supported (the render must depend only on the repository commit)".into(),
            });
        }
        let target = tree.resolve(dir, rel, &what)?;
        if target.is_dir() {
            check_dir(tree, &target, visited)?;
        }
        Ok(())
    };
    let strings = |v: Option<&Yaml>| -> Vec<String> {
        match v {
            Some(Yaml::Sequence(items)) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    };
    for field in [
        "resources",
        "bases",
        "components",
        "crds",
        "configurations",
        "generators",
        "transformers",
        "validators",
        "patchesStrategicMerge",
    ] {
        for entry in strings(map.get(field)) {
            // Inline YAML (generators, transformers, strategic-merge patches) holds no path.
            if entry.contains('\n') {
                continue;
            }
            check(field, entry.trim())?;
        }
    }
    for field in ["patches", "patchesJson6902", "replacements"] {
        if let Some(Yaml::Sequence(items)) = map.get(field) {
            for item in items {
                if let Some(path) = item.get("path").and_then(Yaml::as_str) {
                    check(field, path)?;
                }
            }
        }
    }
    for field in ["configMapGenerator", "secretGenerator"] {
        if let Some(Yaml::Sequence(items)) = map.get(field) {
            for item in items {
                for entry in strings(item.get("files")) {
                    let path = entry.split_once('=').map_or(entry.as_str(), |(_, p)| p);
                    check(field, path)?;
                }
                for entry in strings(item.get("envs")) {
                    check(field, &entry)?;
                }
                if let Some(env) = item.get("env").and_then(Yaml::as_str) {
                    check(field, env)?;
                }
            }
        }
    }
    if let Some(path) = map
        .get("openapi")
        .and_then(|o| o.get("path"))
        .and_then(Yaml::as_str)
    {
        check("openapi", path)?;
    }
    if map.contains_key("helmCharts") || map.contains_key("helmChartInflationGenerator") {
        return Err(RenderError::Kustomize(format!(
            "{display}: helmCharts need `--enable-helm`, which Capstan does not pass; render the chart as a Helm source instead"
        )));
    }
    Ok(())
}

/// Parses an image override as `kustomize edit set image` takes it.
fn image_entry(index: usize, spec: &str) -> Result<Value, RenderError> {
    let invalid = |m: &str| RenderError::InvalidOption {
        field: format!("kustomize.images[{index}]"),
        message: format!("{spec:?}: {m}"),
    };
    let (old, new) = match spec.split_once('=') {
        Some((old, new)) => (Some(old.trim()), new.trim()),
        None => (None, spec.trim()),
    };
    if new.is_empty() || old.is_some_and(str::is_empty) {
        return Err(invalid("expected [name=]image[:tag|@digest]"));
    }
    let (image, digest) = match new.split_once('@') {
        Some((i, d)) => (i, Some(d)),
        None => (new, None),
    };
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], Some(&image[last_slash + i + 1..])),
        None => (image, None),
    };
    let mut entry = Map::new();
    match old {
        Some(old) => {
            entry.insert("name".into(), json!(old));
            if name != old && name != "*" {
                entry.insert("newName".into(), json!(name));
            }
        }
        None => {
            entry.insert("name".into(), json!(name));
        }
    }
    if let Some(tag) = tag {
        entry.insert("newTag".into(), json!(tag));
    }
    if let Some(digest) = digest {
        entry.insert("digest".into(), json!(digest));
    }
    Ok(Value::Object(entry))
}

/// Builds the overlay kustomization for the overrides, or `None` when there are none.
fn overlay(
    tree: &Tree,
    app_dir: &Path,
    scratch: &Path,
    opts: &KustomizeOptions,
) -> Result<Option<Value>, RenderError> {
    if opts == &KustomizeOptions::default() {
        return Ok(None);
    }
    let mut k = Map::new();
    k.insert(
        "apiVersion".into(),
        json!("kustomize.config.k8s.io/v1beta1"),
    );
    k.insert("kind".into(), json!("Kustomization"));
    let base = relative_path(scratch, app_dir);
    k.insert("resources".into(), json!([base.to_string_lossy()]));
    if let Some(p) = opts.name_prefix.as_deref().filter(|s| !s.is_empty()) {
        k.insert("namePrefix".into(), json!(p));
    }
    if let Some(s) = opts.name_suffix.as_deref().filter(|s| !s.is_empty()) {
        k.insert("nameSuffix".into(), json!(s));
    }
    if let Some(ns) = opts.namespace.as_deref().filter(|s| !s.is_empty()) {
        k.insert("namespace".into(), json!(ns));
    }
    if !opts.common_labels.is_empty() {
        k.insert("commonLabels".into(), json!(opts.common_labels));
    }
    if !opts.common_annotations.is_empty() {
        k.insert("commonAnnotations".into(), json!(opts.common_annotations));
    }
    if !opts.images.is_empty() {
        let images = opts
            .images
            .iter()
            .enumerate()
            .map(|(i, s)| image_entry(i, s))
            .collect::<Result<Vec<_>, _>>()?;
        k.insert("images".into(), Value::Array(images));
    }
    if !opts.replicas.is_empty() {
        let mut replicas = Vec::new();
        for (i, r) in opts.replicas.iter().enumerate() {
            let count = match &r.count {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            }
            .filter(|c| *c >= 0)
            .ok_or_else(|| RenderError::InvalidOption {
                field: format!("kustomize.replicas[{i}].count"),
                message: format!("{} is not a replica count", r.count),
            })?;
            replicas.push(json!({"name": r.name, "count": count}));
        }
        k.insert("replicas".into(), Value::Array(replicas));
    }
    if !opts.patches.is_empty() {
        let mut patches = Vec::new();
        for (i, p) in opts.patches.iter().enumerate() {
            let mut entry = Map::new();
            let text = match (&p.patch, &p.path) {
                (Some(inline), _) => inline.clone(),
                (None, Some(path)) => {
                    let file =
                        tree.resolve(app_dir, path, &format!("kustomize.patches[{i}].path"))?;
                    std::fs::read_to_string(&file).map_err(|e| RenderError::io(&file, e))?
                }
                (None, None) => {
                    return Err(RenderError::InvalidOption {
                        field: format!("kustomize.patches[{i}]"),
                        message: "neither patch nor path is set".into(),
                    });
                }
            };
            entry.insert("patch".into(), json!(text));
            if let Some(target) = &p.target {
                entry.insert("target".into(), json!(target));
            }
            if !p.options.is_empty() {
                entry.insert("options".into(), json!(p.options));
            }
            patches.push(Value::Object(entry));
        }
        k.insert("patches".into(), Value::Array(patches));
    }
    if !opts.components.is_empty() {
        let mut components = Vec::new();
        for (i, c) in opts.components.iter().enumerate() {
            let dir = tree.resolve(app_dir, c, &format!("kustomize.components[{i}]"))?;
            check_confined(tree, &dir)?;
            components.push(json!(relative_path(scratch, &dir).to_string_lossy()));
        }
        k.insert("components".into(), Value::Array(components));
    }
    Ok(Some(Value::Object(k)))
}

/// Runs Kustomize on `app_dir` (canonical, inside the tree) with the overrides.
pub(crate) fn build(
    tool: &KustomizeTool,
    tree: &Tree,
    app_dir: &Path,
    opts: Option<&KustomizeOptions>,
    scratch_parent: &Path,
    limits: Limits,
) -> Result<Vec<Value>, RenderError> {
    check_confined(tree, app_dir)?;
    let scratch = tempfile::Builder::new()
        .prefix("capstan-kustomize-")
        .tempdir_in(scratch_parent)
        .map_err(|e| RenderError::io(scratch_parent, e))?;
    let scratch_dir = scratch
        .path()
        .canonicalize()
        .map_err(|e| RenderError::io(scratch.path(), e))?;
    let target = match opts {
        Some(o) => match overlay(tree, app_dir, &scratch_dir, o)? {
            Some(k) => {
                let file = scratch_dir.join("kustomization.yaml");
                // JSON is YAML; the overlay is written in the form Kustomize reads fastest.
                let text = serde_json::to_string_pretty(&k)
                    .map_err(|e| RenderError::Kustomize(e.to_string()))?;
                std::fs::write(&file, text).map_err(|e| RenderError::io(&file, e))?;
                scratch_dir.clone()
            }
            None => app_dir.to_path_buf(),
        },
        None => app_dir.to_path_buf(),
    };
    let mut cmd = tool.command(&target);
    cmd.current_dir(&scratch_dir).env_remove("KUBECONFIG");
    let out = process::run("kustomize", cmd, limits)?;
    if !out.success {
        // Kustomize names the scratch overlay by its absolute path; show the repository's view.
        let message = out
            .stderr
            .replace(&format!("{}/", tree.root().display()), "")
            .trim()
            .to_string();
        return Err(RenderError::Kustomize(message));
    }
    let text = String::from_utf8(out.stdout)
        .map_err(|_| RenderError::Kustomize("output is not UTF-8".into()))?;
    parse_yaml(
        &format!("kustomize output of {}", tree.display(app_dir)),
        &text,
        Strictness::Strict,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_overrides_parse_like_kustomize_edit() {
        assert_eq!(
            image_entry(0, "nginx:1.25").unwrap(),
            json!({"name": "nginx", "newTag": "1.25"})
        );
        assert_eq!(
            image_entry(0, "nginx=registry.local:5000/web/nginx:1.25").unwrap(),
            json!({"name": "nginx", "newName": "registry.local:5000/web/nginx", "newTag": "1.25"})
        );
        assert_eq!(
            image_entry(0, "app@sha256:abc").unwrap(),
            json!({"name": "app", "digest": "sha256:abc"})
        );
        assert!(
            image_entry(3, "=x")
                .unwrap_err()
                .to_string()
                .contains("kustomize.images[3]")
        );
    }
}
