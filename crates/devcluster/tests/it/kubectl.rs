//! The devcluster driven by the real kubectl binaries (the current one, 1.27 and 1.33).

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::{kubectl, kubectl_bin, kubectl_ok};
use devcluster::{Config, DevCluster};
use serde_json::Value;

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: demo
  labels: {app: web, tier: front}
data:
  color: blue
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: demo
type: Opaque
data:
  password: aHVudGVyMg==
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        ports:
        - containerPort: 80
        env:
        - {name: A, value: "1"}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 80
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

const WIDGET: &str = r#"
apiVersion: example.com/v1
kind: Widget
metadata:
  name: gear
  namespace: demo
spec:
  size: 3
"#;

async fn start() -> (DevCluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let c = DevCluster::start(Config {
        kubeconfig: Some(dir.path().join("kubeconfig")),
        ..Config::default()
    })
    .await
    .unwrap();
    (c, dir)
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

async fn workflow(version: &str) {
    let (c, _dir) = start().await;
    let kc = c.kubeconfig_path().to_path_buf();
    let bin = kubectl_bin(version);
    let k = |args: &'static [&'static str]| {
        let bin = bin.clone();
        let kc = kc.clone();
        async move { kubectl_ok(&bin, &kc, args, None).await }
    };

    // Multi-document server-side apply, then the custom resource once its CRD is established.
    let out = kubectl_ok(
        &bin,
        &kc,
        &["apply", "--server-side", "-f", "-"],
        Some(MANIFEST),
    )
    .await;
    for what in [
        "namespace/demo",
        "configmap/settings",
        "secret/creds",
        "deployment.apps/web",
        "service/web",
        "customresourcedefinition.apiextensions.k8s.io/widgets.example.com",
    ] {
        assert!(
            out.contains(&format!("{what} serverside-applied")),
            "{what} missing in:\n{out}"
        );
    }
    let out = kubectl_ok(
        &bin,
        &kc,
        &["apply", "--server-side", "-f", "-"],
        Some(WIDGET),
    )
    .await;
    assert!(
        out.contains("widget.example.com/gear serverside-applied"),
        "{out}"
    );

    // get -o json / yaml, short names, categories.
    let d = json(&k(&["-n", "demo", "get", "deploy", "web", "-o", "json"]).await);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["metadata"]["generation"], 1);
    let y = k(&["-n", "demo", "get", "wd", "gear", "-o", "yaml"]).await;
    assert!(y.contains("kind: Widget") && y.contains("size: 3"), "{y}");
    let all = k(&["-n", "demo", "get", "all"]).await;
    assert!(
        all.contains("deployment.apps/web") && all.contains("service/web"),
        "{all}"
    );

    // Label selectors, label and annotate.
    k(&["-n", "demo", "label", "configmap", "settings", "stage=prod"]).await;
    k(&[
        "-n",
        "demo",
        "annotate",
        "configmap",
        "settings",
        "owner=team-a",
    ])
    .await;
    let sel = k(&[
        "-n",
        "demo",
        "get",
        "cm",
        "-l",
        "stage=prod,tier in (front)",
        "-o",
        "name",
    ])
    .await;
    assert_eq!(sel.trim(), "configmap/settings");
    let none = kubectl(
        &bin,
        &kc,
        &["-n", "demo", "get", "cm", "-l", "stage=dev", "-o", "name"],
        None,
    )
    .await;
    assert_eq!(none.code, 0);
    assert_eq!(none.stdout.trim(), "");
    let cm = json(&k(&["-n", "demo", "get", "cm", "settings", "-o", "json"]).await);
    assert_eq!(cm["metadata"]["annotations"]["owner"], "team-a");

    // Server-side diff: nothing to change → 0.
    let same = kubectl(
        &bin,
        &kc,
        &["diff", "--server-side", "-f", "-"],
        Some(MANIFEST),
    )
    .await;
    assert_eq!(
        same.code, 0,
        "diff of the applied manifest:\n{}\n{}",
        same.stdout, same.stderr
    );
    let changed = MANIFEST.replace("replicas: 2", "replicas: 4");
    let diff = kubectl(
        &bin,
        &kc,
        &["diff", "--server-side", "-f", "-"],
        Some(&changed),
    )
    .await;
    assert_eq!(
        diff.code, 1,
        "diff exit code\n{}\n{}",
        diff.stdout, diff.stderr
    );
    assert!(
        diff.stdout.contains("-  replicas: 2") && diff.stdout.contains("+  replicas: 4"),
        "{}",
        diff.stdout
    );

    // Patches of the three kinds.
    k(&[
        "-n",
        "demo",
        "patch",
        "configmap",
        "settings",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"size":"L"}}"#,
    ])
    .await;
    k(&[
        "-n",
        "demo",
        "patch",
        "configmap",
        "settings",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/data/color","value":"red"}]"#,
    ])
    .await;
    k(&[
        "-n",
        "demo",
        "patch",
        "deployment",
        "web",
        "--type",
        "strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.27"}]}}}}"#,
    ])
    .await;
    let d = json(&k(&["-n", "demo", "get", "deploy", "web", "-o", "json"]).await);
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1, "strategic merge keyed by name");
    assert_eq!(containers[0]["image"], "nginx:1.27");
    assert_eq!(
        containers[0]["env"][0]["name"], "A",
        "other fields of the container are kept"
    );
    assert_eq!(d["metadata"]["generation"], 2);
    let cm = json(&k(&["-n", "demo", "get", "cm", "settings", "-o", "json"]).await);
    assert_eq!(cm["data"]["color"], "red");
    assert_eq!(cm["data"]["size"], "L");

    // replace -f with the object as read.
    let mut obj = cm.clone();
    obj["data"]["replaced"] = Value::from("yes");
    let replaced = kubectl_ok(&bin, &kc, &["replace", "-f", "-"], Some(&obj.to_string())).await;
    assert!(
        replaced.contains("configmap/settings replaced"),
        "{replaced}"
    );
    // ... and replacing with the stale resourceVersion is a conflict.
    let stale = kubectl(&bin, &kc, &["replace", "-f", "-"], Some(&obj.to_string())).await;
    assert_ne!(stale.code, 0);
    assert!(
        stale.stderr.contains("Conflict") || stale.stderr.contains("modified"),
        "{}",
        stale.stderr
    );

    // Another field manager conflicts on fields kubectl owns; --force-conflicts takes them.
    let other = kubectl(
        &bin,
        &kc,
        &[
            "apply",
            "--server-side",
            "--field-manager",
            "other",
            "-f",
            "-",
        ],
        Some(&changed),
    )
    .await;
    assert_ne!(other.code, 0);
    assert!(
        other.stderr.contains("conflict") && other.stderr.contains(".spec.replicas"),
        "{}",
        other.stderr
    );
    kubectl_ok(
        &bin,
        &kc,
        &[
            "apply",
            "--server-side",
            "--field-manager",
            "other",
            "--force-conflicts",
            "-f",
            "-",
        ],
        Some(&changed),
    )
    .await;
    let d = json(
        &k(&[
            "-n",
            "demo",
            "get",
            "deploy",
            "web",
            "-o",
            "json",
            "--show-managed-fields",
        ])
        .await,
    );
    assert_eq!(d["spec"]["replicas"], 4);
    let managers: Vec<&str> = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"other"), "{managers:?}");

    // get --watch sees a change made while it runs.
    let mut watch = tokio::process::Command::new(&bin)
        .args([
            "-n",
            "demo",
            "get",
            "configmaps",
            "--watch",
            "-o",
            "name",
            "--request-timeout=60s",
        ])
        .env("KUBECONFIG", &kc)
        .env("HOME", kc.parent().unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    assert!(
        matches!(&first, Ok(Ok(Some(l))) if l.starts_with("configmap/")),
        "{first:?}"
    );
    k(&[
        "-n",
        "demo",
        "annotate",
        "configmap",
        "settings",
        "watched=yes",
    ])
    .await;
    let next = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match lines.next_line().await {
                Ok(Some(l)) if l == "configmap/settings" => return true,
                Ok(Some(_)) => continue,
                _ => return false,
            }
        }
    })
    .await;
    assert_eq!(
        next.ok(),
        Some(true),
        "the watch printed the modified configmap"
    );
    let _ = watch.kill().await;

    // api-resources lists built-ins and the CRD's resource.
    let res = k(&["api-resources"]).await;
    for line in [
        "deployments",
        "deploy",
        "apps/v1",
        "widgets",
        "wd",
        "example.com/v1",
    ] {
        assert!(res.contains(line), "{line} missing:\n{res}");
    }

    // delete.
    let out = k(&["-n", "demo", "delete", "widget", "gear"]).await;
    assert!(out.contains("deleted"), "{out}");
    let gone = kubectl(&bin, &kc, &["-n", "demo", "get", "widget", "gear"], None).await;
    assert_ne!(gone.code, 0);
    assert!(
        gone.stderr.contains("NotFound") || gone.stderr.contains("not found"),
        "{}",
        gone.stderr
    );
    k(&["delete", "namespace", "demo"]).await;
    let ns = kubectl(&bin, &kc, &["get", "namespace", "demo"], None).await;
    assert_ne!(ns.code, 0, "namespace is gone: {}", ns.stdout);
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_current() {
    workflow("kubectl").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27() {
    workflow("1.27").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33() {
    workflow("1.33").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_strict_validation_and_unknown_kind() {
    let (c, _dir) = start().await;
    let kc = c.kubeconfig_path();
    let bin = kubectl_bin("kubectl");
    kubectl_ok(
        &bin,
        kc,
        &["apply", "--server-side", "-f", "-"],
        Some("apiVersion: v1\nkind: Namespace\nmetadata: {name: v}\n"),
    )
    .await;
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: v}\ndata: {a: b}\nbogus: 1\n";
    let r = kubectl(&bin, kc, &["apply", "--server-side", "-f", "-"], Some(bad)).await;
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("unknown field \"bogus\""), "{}", r.stderr);
    let r = kubectl(&bin, kc, &["get", "gizmos"], None).await;
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("the server doesn't have a resource type \"gizmos\""),
        "{}",
        r.stderr
    );
    let _ = Path::new("");
}

/// Client-side apply (the default `kubectl apply`) creates, then patches with a strategic merge
/// patch computed by kubectl, without warnings.
async fn client_side_apply(version: &str) {
    let (c, _dir) = start().await;
    let kc = c.kubeconfig_path();
    let bin = kubectl_bin(version);
    let r = kubectl(&bin, kc, &["apply", "-f", "-"], Some(MANIFEST)).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("deployment.apps/web created"),
        "{}",
        r.stdout
    );
    let changed = MANIFEST.replace("nginx:1.25", "nginx:1.26");
    let r = kubectl(&bin, kc, &["apply", "-f", "-"], Some(&changed)).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("deployment.apps/web configured"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("configmap/settings unchanged"),
        "{}",
        r.stdout
    );
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
    let d = json(
        &kubectl_ok(
            &bin,
            kc,
            &["-n", "demo", "get", "deploy", "web", "-o", "json"],
            None,
        )
        .await,
    );
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["image"], "nginx:1.26");
    assert!(
        d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string(),
        "{d}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_client_side_apply_current() {
    client_side_apply("kubectl").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_client_side_apply_1_27() {
    client_side_apply("1.27").await;
}

/// `kubectl create <kind>` sends protobuf for built-in types; the kinds it is used with most
/// (namespace, configmap, secret, serviceaccount) are decoded.
async fn imperative_create(version: &str) {
    let (c, _dir) = start().await;
    let kc = c.kubeconfig_path();
    let bin = kubectl_bin(version);
    kubectl_ok(&bin, kc, &["create", "namespace", "imp"], None).await;
    kubectl_ok(
        &bin,
        kc,
        &[
            "-n",
            "imp",
            "create",
            "configmap",
            "cfg",
            "--from-literal=a=1",
            "--from-literal=b=2",
        ],
        None,
    )
    .await;
    kubectl_ok(
        &bin,
        kc,
        &[
            "-n",
            "imp",
            "create",
            "secret",
            "generic",
            "pw",
            "--from-literal=password=hunter2",
        ],
        None,
    )
    .await;
    kubectl_ok(
        &bin,
        kc,
        &["-n", "imp", "create", "serviceaccount", "robot"],
        None,
    )
    .await;
    let ns = json(&kubectl_ok(&bin, kc, &["get", "ns", "imp", "-o", "json"], None).await);
    assert_eq!(ns["status"]["phase"], "Active");
    assert!(ns["metadata"].get("generateName").is_none(), "{ns}");
    let cm = json(
        &kubectl_ok(
            &bin,
            kc,
            &["-n", "imp", "get", "cm", "cfg", "-o", "json"],
            None,
        )
        .await,
    );
    assert_eq!(cm["data"], serde_json::json!({"a": "1", "b": "2"}));
    let s = json(
        &kubectl_ok(
            &bin,
            kc,
            &["-n", "imp", "get", "secret", "pw", "-o", "json"],
            None,
        )
        .await,
    );
    assert_eq!(s["data"]["password"], "aHVudGVyMg==");
    assert_eq!(s["type"], "Opaque");
    kubectl_ok(
        &bin,
        kc,
        &["-n", "imp", "get", "serviceaccount", "robot"],
        None,
    )
    .await;
    // Kinds without a protobuf decoder get a clear 415, not a garbled object.
    let r = kubectl(
        &bin,
        kc,
        &["-n", "imp", "create", "deployment", "web", "--image=nginx"],
        None,
    )
    .await;
    // kubectl 1.27 still sends JSON for typed creates, so there it simply works.
    if version == "1.27" {
        assert_eq!(r.code, 0, "{}", r.stderr);
    } else {
        assert_ne!(r.code, 0);
        assert!(
            r.stderr.contains("protobuf is accepted for v1 Namespace"),
            "{}",
            r.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_imperative_create_current() {
    imperative_create("kubectl").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_imperative_create_1_27() {
    imperative_create("1.27").await;
}
