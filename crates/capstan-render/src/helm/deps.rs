//! Chart dependencies: vendored under `charts/` they are used as they are; missing ones are put
//! into a scratch copy of the chart: `file://` dependencies copied from the repository
//! (confined), HTTP(S) repository dependencies downloaded at the version `Chart.lock` pins
//! (through the repository's `index.yaml`). OCI and unnamed repositories are refused with a
//! clear error. The repository tree is never written to.

use crate::RenderError;
use crate::paths::Tree;
use crate::process::Limits;
use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The chart to load after dependencies are in place.
pub(crate) struct Prepared {
    /// The original chart directory, or its scratch copy.
    pub(crate) chart_dir: PathBuf,
    /// The chart's name.
    pub(crate) chart_name: String,
}

#[derive(Debug, Deserialize)]
struct ChartFile {
    #[serde(default)]
    name: String,
    #[serde(default)]
    dependencies: Vec<Dependency>,
}

#[derive(Debug, Deserialize, Clone)]
struct Dependency {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    repository: String,
}

#[derive(Debug, Deserialize)]
struct IndexFile {
    #[serde(default)]
    entries: std::collections::BTreeMap<String, Vec<IndexEntry>>,
}

#[derive(Debug, Deserialize)]
struct IndexEntry {
    #[serde(default)]
    version: String,
    #[serde(default)]
    urls: Vec<String>,
}

fn read_yaml<T: for<'de> Deserialize<'de>>(tree: &Tree, file: &Path) -> Result<T, RenderError> {
    let text = std::fs::read_to_string(file).map_err(|e| RenderError::io(file, e))?;
    serde_yaml_ng::from_str(&text).map_err(|e| RenderError::Parse {
        file: tree.display(file),
        line: e.location().map(|l| l.line()),
        message: e.to_string(),
    })
}

/// Whether `charts/` holds the dependency, as a directory or as a `.tgz`.
fn vendored(charts_dir: &Path, dep: &Dependency) -> bool {
    let Ok(entries) = std::fs::read_dir(charts_dir) else {
        return false;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            let chart_yaml = path.join("Chart.yaml");
            let named = std::fs::read_to_string(&chart_yaml)
                .ok()
                .and_then(|t| serde_yaml_ng::from_str::<ChartFile>(&t).ok())
                .is_some_and(|c| c.name == dep.name);
            if named {
                return true;
            }
        } else if file_name.ends_with(".tgz") && file_name.starts_with(&format!("{}-", dep.name)) {
            return true;
        }
    }
    false
}

/// Refuses a chart directory holding a symlink that resolves outside the tree: Helm's loader
/// follows symlinks, and `.Files.Get` would hand the target's content to the templates.
pub(crate) fn check_confined(tree: &Tree, dir: &Path) -> Result<(), RenderError> {
    let mut stack = vec![dir.to_path_buf()];
    let mut visited = std::collections::HashSet::new();
    while let Some(current) = stack.pop() {
        if !visited.insert(current.clone()) {
            continue;
        }
        let entries = std::fs::read_dir(&current).map_err(|e| RenderError::io(&current, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| RenderError::io(&current, e))?;
            let path = entry.path();
            let file_type = entry.file_type().map_err(|e| RenderError::io(&path, e))?;
            if file_type.is_symlink() {
                let target = path.canonicalize().map_err(|e| RenderError::io(&path, e))?;
                if !tree.contains(&target) {
                    return Err(RenderError::PathEscape {
                        what: "chart file".into(),
                        path: tree.display(&path),
                        reason: format!("it resolves through a symlink to {}", target.display()),
                    });
                }
                if target.is_dir() {
                    stack.push(target);
                }
            } else if file_type.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(())
}

/// Makes sure every declared dependency is available; see the module documentation.
pub(crate) fn prepare(
    tree: &Tree,
    chart_dir: &Path,
    scratch: &Path,
    limits: Limits,
) -> Result<Prepared, RenderError> {
    check_confined(tree, chart_dir)?;
    let chart_yaml = chart_dir.join("Chart.yaml");
    let chart: ChartFile = read_yaml(tree, &chart_yaml)?;
    if chart.name.is_empty() {
        return Err(RenderError::Manifest {
            file: tree.display(&chart_yaml),
            message: "the chart has no name".into(),
        });
    }
    let charts_dir = chart_dir.join("charts");
    let missing: Vec<Dependency> = chart
        .dependencies
        .iter()
        .filter(|d| !vendored(&charts_dir, d))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(Prepared {
            chart_dir: chart_dir.to_path_buf(),
            chart_name: chart.name,
        });
    }
    let lock_path = chart_dir.join("Chart.lock");
    let locked: Vec<Dependency> = if lock_path.is_file() {
        read_yaml::<ChartFile>(tree, &lock_path)?.dependencies
    } else {
        Vec::new()
    };
    let copy = scratch.join(&chart.name);
    copy_confined(tree, chart_dir, &copy)?;
    let copy_charts = copy.join("charts");
    std::fs::create_dir_all(&copy_charts).map_err(|e| RenderError::io(&copy_charts, e))?;
    for dep in missing {
        let err = |message: String| RenderError::Dependency {
            name: dep.name.clone(),
            message,
        };
        let repo = dep.repository.trim();
        if let Some(rel) = repo.strip_prefix("file://") {
            let src = tree.resolve(
                chart_dir,
                rel,
                &format!("dependency {} repository", dep.name),
            )?;
            copy_confined(tree, &src, &copy_charts.join(&dep.name))?;
        } else if repo.starts_with("http://") || repo.starts_with("https://") {
            let version = locked
                .iter()
                .find(|l| l.name == dep.name)
                .map(|l| l.version.clone())
                .or_else(|| {
                    // Without a lock an exact version is still unambiguous.
                    let v = dep.version.trim();
                    (!v.is_empty()
                        && v.chars()
                            .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c)))
                    .then(|| v.to_string())
                })
                .ok_or_else(|| {
                    err(format!(
                        "version {:?} is a range and there is no Chart.lock pinning it",
                        dep.version
                    ))
                })?;
            let target = copy_charts.join(format!("{}-{version}.tgz", dep.name));
            fetch(repo, &dep.name, &version, &target, limits).map_err(err)?;
        } else if repo.is_empty() {
            return Err(err(
                "not found under charts/ and no repository is declared".into()
            ));
        } else {
            return Err(err(format!(
                "not found under charts/ and repository {repo:?} is not supported (vendor it under charts/, or use an http(s) chart repository)"
            )));
        }
    }
    Ok(Prepared {
        chart_dir: copy,
        chart_name: chart.name,
    })
}

/// Copies a directory, refusing any entry that resolves outside the tree.
fn copy_confined(tree: &Tree, src: &Path, dst: &Path) -> Result<(), RenderError> {
    std::fs::create_dir_all(dst).map_err(|e| RenderError::io(dst, e))?;
    let entries = std::fs::read_dir(src).map_err(|e| RenderError::io(src, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| RenderError::io(src, e))?;
        let path = entry.path();
        let canonical = path.canonicalize().map_err(|e| RenderError::io(&path, e))?;
        if !tree.contains(&canonical) {
            return Err(RenderError::PathEscape {
                what: "chart file".into(),
                path: tree.display(&path),
                reason: format!("it resolves through a symlink to {}", canonical.display()),
            });
        }
        let target = dst.join(entry.file_name());
        if canonical.is_dir() {
            copy_confined(tree, &canonical, &target)?;
        } else {
            std::fs::copy(&canonical, &target).map_err(|e| RenderError::io(&target, e))?;
        }
    }
    Ok(())
}

/// Downloads `name` at `version` from a chart repository into `target`. Runs on its own thread
/// so that the blocking HTTP client never runs inside a caller's async runtime.
fn fetch(
    repo: &str,
    name: &str,
    version: &str,
    target: &Path,
    limits: Limits,
) -> Result<(), String> {
    let repo = repo.trim_end_matches('/').to_string();
    let name = name.to_string();
    let version = version.to_string();
    let target = target.to_path_buf();
    std::thread::Builder::new()
        .name("capstan-helm-fetch".into())
        .spawn(move || fetch_blocking(&repo, &name, &version, &target, limits))
        .map_err(|e| format!("cannot start the download thread: {e}"))?
        .join()
        .map_err(|_| "the download thread panicked".to_string())?
}

fn get(client: &reqwest::blocking::Client, url: &str, limit: usize) -> Result<Vec<u8>, String> {
    let response = client
        .get(url)
        .send()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("GET {url}: HTTP {status}"));
    }
    let mut body = Vec::new();
    response
        .take(limit as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("GET {url}: {e}"))?;
    if body.len() > limit {
        return Err(format!("GET {url}: larger than {limit} bytes"));
    }
    Ok(body)
}

fn fetch_blocking(
    repo: &str,
    name: &str,
    version: &str,
    target: &Path,
    limits: Limits,
) -> Result<(), String> {
    // reqwest is built without a crypto provider of its own (only ring is linked, for kube):
    // it uses the process's default, installed here unless the binary installed one already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::blocking::Client::builder()
        .timeout(limits.timeout)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let index_url = format!("{repo}/index.yaml");
    let index_body = get(&client, &index_url, limits.max_output)?;
    let index: IndexFile = serde_yaml_ng::from_slice(&index_body)
        .map_err(|e| format!("{index_url}: not a chart repository index: {e}"))?;
    let entry = index
        .entries
        .get(name)
        .and_then(|versions| versions.iter().find(|e| e.version == version))
        .ok_or_else(|| format!("{index_url} has no {name} {version}"))?;
    let url = entry
        .urls
        .first()
        .ok_or_else(|| format!("{index_url}: {name} {version} has no download URL"))?;
    let url = if url.contains("://") {
        url.clone()
    } else {
        format!("{repo}/{}", url.trim_start_matches('/'))
    };
    let archive = get(&client, &url, limits.max_output)?;
    std::fs::write(target, archive).map_err(|e| format!("{}: {e}", target.display()))
}
