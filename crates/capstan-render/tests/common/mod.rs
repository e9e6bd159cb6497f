//! Shared helpers of the render tests: a copy of the fixtures as a repository, the real tools
//! run directly, and the object order.

#![allow(dead_code)]

use capstan_render::{RenderContext, Renderer, RendererConfig};
use capstan_testkit::{copy_dir, temp_dir};
/// Parsing and ordering of manifests, shared with the CLI's render test.
pub use capstan_testkit::{parse_stream, sorted};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fixtures directory.
pub fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// A temporary directory holding `repo/` (a copy of the fixtures) and room beside it for
/// things that must be outside the repository.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = temp_dir("render-fixture");
        copy_dir(&data(), &dir.path().join("repo"));
        Fixture { dir }
    }
    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    pub fn outside(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

pub fn renderer() -> Renderer {
    Renderer::new(RendererConfig::default()).unwrap()
}

pub fn ctx() -> RenderContext {
    RenderContext {
        app_name: "web".into(),
        namespace: "default".into(),
        kube_version: Some("v1.31.2".into()),
        api_versions: vec![],
    }
}

/// `kubectl kustomize DIR`, run directly.
pub fn kubectl_kustomize(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    sorted(parse_stream(&String::from_utf8(out.stdout).unwrap()))
}

/// Renders a chart with Helm's engine called directly through the helm-python-sdk binding
/// (the same libhelm_c, a different caller): `values` are the user values, `options` the
/// render options. Returns (template name, text) pairs and the CRD texts.
pub fn helm_engine_direct(
    chart: &Path,
    values: &Value,
    options: &Value,
) -> (Vec<(String, String)>, Vec<String>) {
    let script = r#"
import json, sys
from helm_python import chart, _native
req = json.load(sys.stdin)
c = chart.Chart.load(req["chart"])
out = _native.call_string("helm_render", c._raw(), json.dumps(req["values"]), json.dumps(req["options"]))
print(json.dumps({"templates": json.loads(out), "crds": [x["data"] for x in c.crds]}))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let request = serde_json::json!({"chart": chart, "values": values, "options": options});
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        request.to_string().as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let templates = parsed["templates"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let crds = parsed["crds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    (templates, crds)
}

/// Names of the objects as `Kind/name`.
pub fn names(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}
