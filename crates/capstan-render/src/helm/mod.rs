//! Helm: the real engine, as the `helm` CLI when it is on PATH, else Helm's Go SDK loaded
//! in-process from `libhelm_c` (see [`ffi`]).
//!
//! Values precedence, as Helm and Argo CD: the chart's `values.yaml` < `valueFiles` in order <
//! `values` (or `valuesObject`, which replaces it) < `parameters` (`--set` / `--set-string`).
//! Maps merge deeply, anything else is replaced; a `--set` of an indexed key (`a[1]=x`) sets
//! that element of an existing list, a `--set` of a whole list (`a={x,y}`) replaces it.
//!
//! Output: every rendered template except `NOTES.txt`, plus the `crds/` files unless
//! `skipCrds`; hooks are kept with their annotations; test hooks (`helm.sh/hook: test`,
//! `test-success`, `test-failure`) are dropped unless `skipTests: false`. `lookup` returns
//! nothing (offline render).

pub(crate) mod deps;
pub(crate) mod ffi;

use crate::RenderError;
use crate::manifest::{Strictness, parse_yaml};
use crate::options::{HelmOptions, RenderContext};
use crate::paths::Tree;
use crate::process::{self, Limits};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::mpsc;

/// Which Helm runs charts.
#[derive(Clone)]
pub(crate) enum HelmEngine {
    /// The `helm` binary.
    Cli { bin: PathBuf, version: String },
    /// `libhelm_c`, loaded once.
    Library(Arc<ffi::HelmLib>),
    /// Neither was found; the reason is the error a Helm render returns.
    Unavailable(String),
}

impl std::fmt::Debug for HelmEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HelmEngine::Cli { bin, version } => write!(f, "helm CLI {} ({version})", bin.display()),
            HelmEngine::Library(lib) => write!(f, "libhelm_c {}", lib.version()),
            HelmEngine::Unavailable(reason) => write!(f, "unavailable: {reason}"),
        }
    }
}

impl HelmEngine {
    /// Version string for the cache key.
    pub(crate) fn version(&self) -> String {
        match self {
            HelmEngine::Cli { version, .. } => format!("helm {version}"),
            HelmEngine::Library(lib) => lib.version(),
            HelmEngine::Unavailable(_) => "none".into(),
        }
    }

    /// Loads the shared library from an explicit path.
    pub(crate) fn from_library(path: &Path) -> HelmEngine {
        match ffi::HelmLib::load(path) {
            Ok(lib) => HelmEngine::Library(Arc::new(lib)),
            Err(e) => HelmEngine::Unavailable(e),
        }
    }

    /// Finds the engine: `helm` on PATH, else `CAPSTAN_HELM_LIB`, else the library inside the
    /// `helm-python-sdk` wheel (asking `python3` where it is installed).
    pub(crate) fn discover(
        path_lookup: impl Fn(&str) -> Option<PathBuf>,
        limits: Limits,
    ) -> HelmEngine {
        if let Some(bin) = path_lookup("helm") {
            let mut cmd = Command::new(&bin);
            cmd.args(["version", "--short"]);
            let version = process::run("helm version", cmd, limits)
                .ok()
                .filter(|o| o.success)
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_else(|| "unknown".into());
            return HelmEngine::Cli { bin, version };
        }
        if let Some(path) = std::env::var_os("CAPSTAN_HELM_LIB").filter(|p| !p.is_empty()) {
            return HelmEngine::from_library(Path::new(&path));
        }
        let Some(python) = path_lookup("python3") else {
            return HelmEngine::Unavailable(
                "no `helm` on PATH, CAPSTAN_HELM_LIB is unset and python3 is not installed to locate the helm-python-sdk wheel".into(),
            );
        };
        let mut cmd = Command::new(python);
        cmd.args([
            "-c",
            "import helm_python, os; print(os.path.dirname(helm_python.__file__))",
        ]);
        let dir = match process::run("python3", cmd, limits) {
            Ok(o) if o.success => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
            _ => {
                return HelmEngine::Unavailable(
                    "no `helm` on PATH, CAPSTAN_HELM_LIB is unset and the helm-python-sdk wheel is not installed (python3 -m pip install helm-python-sdk)".into(),
                );
            }
        };
        let lib_dir = dir.join("lib");
        for name in [
            "libhelm_c.so",
            "libhelm_c.so.0",
            "libhelm_c.dylib",
            "helm_c.dll",
        ] {
            let candidate = lib_dir.join(name);
            if candidate.is_file() {
                return HelmEngine::from_library(&candidate);
            }
        }
        HelmEngine::Unavailable(format!("no libhelm_c library in {}", lib_dir.display()))
    }
}

/// Deep merge as Helm merges values files: maps merge, everything else is replaced.
pub(crate) fn merge_values(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        merge_values(existing, v)
                    }
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Merges one parsed `--set` expression: like [`merge_values`], except that a list holding
/// `null` placeholders (what an indexed key such as `a[2]=x` parses to) updates the elements
/// of an existing list instead of replacing it, as Helm's `strvals.ParseInto` does.
fn merge_set(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge_set(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o)) if o.iter().any(Value::is_null) => {
            for (i, v) in o.into_iter().enumerate() {
                if i < b.len() {
                    if !v.is_null() {
                        merge_set(&mut b[i], v);
                    }
                } else {
                    b.push(v);
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Escapes a parameter value for a `--set` expression as Argo CD does: commas are escaped
/// unless the value is a `{a,b}` list literal.
fn escape_set_value(value: &str) -> String {
    if value.starts_with('{') && value.ends_with('}') {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len());
    let mut prev = '\0';
    for c in value.chars() {
        if c == ',' && prev != '\\' {
            out.push('\\');
        }
        out.push(c);
        prev = c;
    }
    out
}

/// `values` / `valuesObject`: a YAML document is kept as text so that Helm's own YAML reader
/// parses it, exactly like a values file.
enum InlineValues {
    Yaml(String),
    Object(Value),
}

/// Everything a Helm render needs, owned, so that it can run on a worker thread.
struct Job {
    tree_root: PathBuf,
    chart_dir: PathBuf,
    chart_name: String,
    release: String,
    namespace: String,
    value_files: Vec<PathBuf>,
    inline_values: Option<InlineValues>,
    parameters: Vec<(String, bool)>,
    kube_version: Option<String>,
    api_versions: Vec<String>,
    include_crds: bool,
    include_tests: bool,
}

/// Renders the chart in `chart_dir` (canonical, inside the tree).
pub(crate) fn render(
    engine: &HelmEngine,
    tree: &Tree,
    chart_dir: &Path,
    opts: Option<&HelmOptions>,
    ctx: &RenderContext,
    scratch_parent: &Path,
    limits: Limits,
) -> Result<Vec<Value>, RenderError> {
    if let HelmEngine::Unavailable(reason) = engine {
        return Err(RenderError::ToolUnavailable {
            tool: "helm",
            reason: reason.clone(),
        });
    }
    let default = HelmOptions::default();
    let opts = opts.unwrap_or(&default);
    let mut value_files = Vec::new();
    for (i, f) in opts.value_files.iter().enumerate() {
        let what = format!("helm.valueFiles[{i}]");
        match tree.resolve(chart_dir, f, &what) {
            Ok(p) => value_files.push(p),
            Err(RenderError::NotFound { .. }) if opts.ignore_missing_value_files => {}
            Err(e) => return Err(e),
        }
    }
    let inline_values = match (&opts.values_object, &opts.values) {
        (Some(obj), _) if obj.is_object() => Some(InlineValues::Object(obj.clone())),
        (Some(obj), _) if obj.is_null() => None,
        (Some(_), _) => {
            return Err(RenderError::InvalidOption {
                field: "helm.valuesObject".into(),
                message: "values must be a map".into(),
            });
        }
        (None, Some(text)) if !text.trim().is_empty() => {
            // Checked here for a clear message with a line; parsed again by Helm's reader.
            let v: Value = serde_yaml_ng::from_str(text).map_err(|e| RenderError::Parse {
                file: "helm.values".into(),
                line: e.location().map(|l| l.line()),
                message: e.to_string(),
            })?;
            if !v.is_object() && !v.is_null() {
                return Err(RenderError::InvalidOption {
                    field: "helm.values".into(),
                    message: "values must be a map".into(),
                });
            }
            Some(InlineValues::Yaml(text.clone()))
        }
        _ => None,
    };
    let mut parameters = Vec::new();
    for (i, p) in opts.parameters.iter().enumerate() {
        if p.name.trim().is_empty() {
            return Err(RenderError::InvalidOption {
                field: format!("helm.parameters[{i}].name"),
                message: "empty name".into(),
            });
        }
        parameters.push((
            format!("{}={}", p.name, escape_set_value(&p.value)),
            p.force_string,
        ));
    }

    // Dependencies missing from charts/ are fetched (or copied) into a scratch copy.
    let scratch = tempfile::Builder::new()
        .prefix("capstan-helm-")
        .tempdir_in(scratch_parent)
        .map_err(|e| RenderError::io(scratch_parent, e))?;
    let prepared = deps::prepare(tree, chart_dir, scratch.path(), limits)?;

    let include_tests = opts.skip_tests == Some(false);
    let job = Job {
        tree_root: tree.root().to_path_buf(),
        chart_dir: prepared.chart_dir,
        chart_name: prepared.chart_name,
        release: opts
            .release_name
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| ctx.app_name.clone()),
        namespace: opts
            .namespace
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| ctx.namespace.clone()),
        value_files,
        inline_values,
        parameters,
        kube_version: opts
            .kube_version
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| ctx.kube_version.clone()),
        api_versions: if opts.api_versions.is_empty() {
            ctx.api_versions.clone()
        } else {
            opts.api_versions.clone()
        },
        include_crds: !opts.skip_crds,
        include_tests,
    };
    let templates = match engine {
        HelmEngine::Library(lib) => render_library(lib, job, limits)?,
        HelmEngine::Cli { bin, .. } => render_cli(bin, &job, scratch.path(), limits)?,
        HelmEngine::Unavailable(_) => unreachable!("checked above"),
    };
    let mut objects = Vec::new();
    for (name, text) in templates {
        if name.ends_with("NOTES.txt") || text.trim().is_empty() {
            continue;
        }
        for obj in parse_yaml(&name, &text, Strictness::Strict)? {
            if !include_tests && is_test_hook(&obj) {
                continue;
            }
            objects.push(obj);
        }
    }
    Ok(objects)
}

/// Whether an object is a Helm test hook.
fn is_test_hook(obj: &Value) -> bool {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(capstan_api::annotations::HELM_HOOK))
        .and_then(Value::as_str)
        .is_some_and(|hooks| {
            hooks
                .split(',')
                .map(str::trim)
                .any(|h| matches!(h, "test" | "test-success" | "test-failure"))
        })
}

fn helm_err(e: ffi::FfiError) -> RenderError {
    RenderError::Helm(e.to_string())
}

/// The user-supplied values of a job, merged in Helm's order, with the library's parsers.
fn library_values(lib: &ffi::HelmLib, job: &Job, tree_root: &Path) -> Result<Value, RenderError> {
    let mut values = Value::Object(Map::new());
    for file in &job.value_files {
        let display = file
            .strip_prefix(tree_root)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| file.display().to_string());
        let text = std::fs::read_to_string(file).map_err(|e| RenderError::io(file, e))?;
        let parsed = lib
            .values_from_yaml(&text)
            .map_err(|e| RenderError::Helm(format!("values file {display}: {e}")))?;
        let v: Value = serde_json::from_str(&parsed)
            .map_err(|e| RenderError::Helm(format!("values file {display}: {e}")))?;
        if !v.is_null() {
            merge_values(&mut values, v);
        }
    }
    match &job.inline_values {
        Some(InlineValues::Object(v)) => merge_values(&mut values, v.clone()),
        Some(InlineValues::Yaml(text)) => {
            let parsed = lib
                .values_from_yaml(text)
                .map_err(|e| RenderError::Helm(format!("helm.values: {e}")))?;
            let v: Value = serde_json::from_str(&parsed)
                .map_err(|e| RenderError::Helm(format!("helm.values: {e}")))?;
            if !v.is_null() {
                merge_values(&mut values, v);
            }
        }
        None => {}
    }
    for (i, (expr, force_string)) in job.parameters.iter().enumerate() {
        let parsed = lib
            .strvals(expr, *force_string)
            .map_err(|e| RenderError::Helm(format!("helm.parameters[{i}]: {e}")))?;
        let v: Value = serde_json::from_str(&parsed)
            .map_err(|e| RenderError::Helm(format!("helm.parameters[{i}]: {e}")))?;
        merge_set(&mut values, v);
    }
    Ok(values)
}

/// Renders through the library on a worker thread, so that the caller gets a timeout. A call
/// into Go cannot be interrupted: on timeout the worker finishes (and frees its chart) in the
/// background and its result is discarded.
fn render_library(
    lib: &Arc<ffi::HelmLib>,
    job: Job,
    limits: Limits,
) -> Result<Vec<(String, String)>, RenderError> {
    let lib = Arc::clone(lib);
    let (tx, rx) = mpsc::channel();
    let max = limits.max_output;
    std::thread::Builder::new()
        .name("capstan-helm".into())
        .spawn(move || {
            let _ = tx.send(render_library_blocking(&lib, &job, max));
        })
        .map_err(|e| RenderError::io("helm worker thread", e))?;
    match rx.recv_timeout(limits.timeout) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(RenderError::Timeout {
            tool: "helm".into(),
            after: limits.timeout,
        }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(RenderError::Helm(
            "the render thread stopped without a result".into(),
        )),
    }
}

fn render_library_blocking(
    lib: &ffi::HelmLib,
    job: &Job,
    max_output: usize,
) -> Result<Vec<(String, String)>, RenderError> {
    let values = library_values(lib, job, &job.tree_root)?;
    let chart = lib.load_chart(&job.chart_dir).map_err(helm_err)?;
    let mut options = json!({
        "name": job.release,
        "namespace": job.namespace,
        "revision": 1,
        "is_install": true,
    });
    if let Some(kv) = &job.kube_version {
        options["kube_version"] = json!(kv);
    }
    if !job.api_versions.is_empty() {
        options["api_versions"] = json!(job.api_versions);
    }
    let rendered = lib
        .render(&chart, &values.to_string(), &options.to_string())
        .map_err(helm_err)?;
    if rendered.len() > max_output {
        return Err(RenderError::OutputTooLarge {
            tool: "helm".into(),
            limit: max_output,
        });
    }
    let map: Map<String, Value> = serde_json::from_str(&rendered)
        .map_err(|e| RenderError::Helm(format!("unexpected render output: {e}")))?;
    let mut templates: Vec<(String, String)> = Vec::new();
    if job.include_crds {
        let crds: Vec<Value> = serde_json::from_str(&lib.crds(&chart).map_err(helm_err)?)
            .map_err(|e| RenderError::Helm(format!("unexpected crds output: {e}")))?;
        for crd in crds {
            let name = crd
                .get("filename")
                .or_else(|| crd.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("crds")
                .to_string();
            let data = crd
                .get("data")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            templates.push((name, data));
        }
    }
    let mut rendered: Vec<(String, String)> = map
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or("").to_string()))
        .collect();
    rendered.sort_by(|a, b| a.0.cmp(&b.0));
    templates.extend(rendered);
    Ok(templates)
}

/// Renders with `helm template`.
fn render_cli(
    bin: &Path,
    job: &Job,
    scratch: &Path,
    limits: Limits,
) -> Result<Vec<(String, String)>, RenderError> {
    let mut cmd = Command::new(bin);
    cmd.arg("template")
        .arg(&job.release)
        .arg(&job.chart_dir)
        .arg("--namespace")
        .arg(&job.namespace);
    for f in &job.value_files {
        cmd.arg("--values").arg(f);
    }
    if let Some(inline) = &job.inline_values {
        let file = scratch.join("capstan-values.yaml");
        let text = match inline {
            InlineValues::Yaml(text) => text.clone(),
            InlineValues::Object(v) => v.to_string(),
        };
        std::fs::write(&file, text).map_err(|e| RenderError::io(&file, e))?;
        cmd.arg("--values").arg(file);
    }
    for (expr, force_string) in &job.parameters {
        cmd.arg(if *force_string {
            "--set-string"
        } else {
            "--set"
        })
        .arg(expr);
    }
    if let Some(kv) = &job.kube_version {
        cmd.arg("--kube-version").arg(kv);
    }
    for api in &job.api_versions {
        cmd.arg("--api-versions").arg(api);
    }
    cmd.arg(if job.include_crds {
        "--include-crds"
    } else {
        "--skip-crds"
    });
    if !job.include_tests {
        cmd.arg("--skip-tests");
    }
    // No repository or registry configuration of the host leaks into a render.
    cmd.current_dir(scratch)
        .env("HELM_CONFIG_HOME", scratch.join("config"))
        .env("HELM_CACHE_HOME", scratch.join("cache"))
        .env("HELM_DATA_HOME", scratch.join("data"))
        .env_remove("KUBECONFIG");
    let out = process::run("helm", cmd, limits)?;
    if !out.success {
        return Err(RenderError::Helm(out.stderr.trim().to_string()));
    }
    let text = String::from_utf8(out.stdout)
        .map_err(|_| RenderError::Helm("output is not UTF-8".into()))?;
    Ok(vec![(format!("helm template {}", job.chart_name), text)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_merge_updates_indexed_elements_and_replaces_whole_lists() {
        let mut base = json!({"a": [{"x": 1}, {"x": 2}], "b": [1, 2, 3], "m": {"k": 1, "j": 2}});
        merge_set(&mut base, json!({"a": [null, {"x": 9}]}));
        merge_set(&mut base, json!({"b": [7]}));
        merge_set(&mut base, json!({"m": {"k": "s"}}));
        assert_eq!(
            base,
            json!({"a": [{"x": 1}, {"x": 9}], "b": [7], "m": {"k": "s", "j": 2}})
        );
    }

    #[test]
    fn values_merge_replaces_lists_and_merges_maps() {
        let mut base = json!({"l": [1, 2], "m": {"a": 1, "n": null}});
        merge_values(&mut base, json!({"l": [3], "m": {"b": 2}}));
        assert_eq!(base, json!({"l": [3], "m": {"a": 1, "b": 2, "n": null}}));
    }

    #[test]
    fn set_values_escape_commas_like_argo_cd() {
        assert_eq!(escape_set_value("a,b"), "a\\,b");
        assert_eq!(escape_set_value("a\\,b"), "a\\,b");
        assert_eq!(escape_set_value("{a,b}"), "{a,b}");
    }

    #[test]
    fn test_hooks_are_recognised() {
        let hook = |h: &str| json!({"metadata": {"annotations": {"helm.sh/hook": h}}});
        assert!(is_test_hook(&hook("test")));
        assert!(is_test_hook(&hook("pre-install, test-success")));
        assert!(!is_test_hook(&hook("pre-install")));
        assert!(!is_test_hook(&json!({"metadata": {}})));
    }
}
