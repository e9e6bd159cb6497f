//! Garbage collection of ownerReferences: deleting a Deployment removes its ReplicaSets and
//! Pods; the `orphan` finalizer leaves them without the reference; `foregroundDeletion`
//! removes the dependents before the owner; a dependent with a second owner survives.

mod common;

use std::time::Duration;

use common::{kubectl_bin, kubectl_ok};
use devcluster::{Config, DevCluster};
use serde_json::Value;

async fn start() -> (DevCluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let c = DevCluster::start(Config {
        kubeconfig: Some(dir.path().join("kubeconfig")),
        ..Config::default()
    })
    .await
    .unwrap();
    apply(
        &c,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n",
    )
    .await;
    (c, dir)
}

async fn apply(c: &DevCluster, yaml: &str) {
    kubectl_ok(
        &kubectl_bin("kubectl"),
        c.kubeconfig_path(),
        &["apply", "--server-side", "-f", "-"],
        Some(yaml),
    )
    .await;
}

async fn run(c: &DevCluster, args: &[&str]) -> String {
    kubectl_ok(&kubectl_bin("kubectl"), c.kubeconfig_path(), args, None).await
}

async fn names(c: &DevCluster, kind: &str, selector: &str) -> Vec<String> {
    let out = run(c, &["get", kind, "-l", selector, "-o", "json"]).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// Polls `f` until it returns true, for at most `secs` seconds (a bound, not a timing claim).
async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn deployment(name: &str, finalizer: Option<&str>) -> String {
    let finalizers = finalizer.map_or(String::new(), |f| format!("\n  finalizers: [{f}]"));
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: default{finalizers}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: app, image: "nginx:1"}}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_deployment_removes_its_replicasets_and_pods() {
    let (c, _dir) = start().await;
    apply(&c, &deployment("web", None)).await;
    run(
        &c,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    )
    .await;
    assert_eq!(names(&c, "replicasets", "app=web").await.len(), 1);
    assert_eq!(names(&c, "pods", "app=web").await.len(), 2);
    run(&c, &["delete", "deployment", "web"]).await;
    eventually(30, "the ReplicaSet and Pods to be collected", || async {
        names(&c, "replicasets", "app=web").await.is_empty()
            && names(&c, "pods", "app=web").await.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_finalizer_keeps_dependents_without_the_reference() {
    let (c, _dir) = start().await;
    apply(&c, &deployment("keep", Some("orphan"))).await;
    run(
        &c,
        &["rollout", "status", "deployment/keep", "--timeout=60s"],
    )
    .await;
    run(&c, &["delete", "deployment", "keep", "--wait=false"]).await;
    eventually(30, "the deployment to go", || async {
        let out = run(&c, &["get", "deployments", "-o", "name"]).await;
        !out.contains("keep")
    })
    .await;
    let rs = names(&c, "replicasets", "app=keep").await;
    assert_eq!(rs.len(), 1, "the ReplicaSet stays");
    let out = run(&c, &["get", "replicaset", &rs[0], "-o", "json"]).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["metadata"]["ownerReferences"].is_null(), "{v}");
    assert_eq!(names(&c, "pods", "app=keep").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_finalizer_removes_dependents_and_a_second_owner_protects() {
    let (c, _dir) = start().await;
    apply(&c, &deployment("fg", Some("foregroundDeletion"))).await;
    run(&c, &["rollout", "status", "deployment/fg", "--timeout=60s"]).await;
    // A ConfigMap owned by the deployment and by another ConfigMap survives the deployment.
    apply(
        &c,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: anchor, namespace: default}\n",
    )
    .await;
    let uid = |kind: &'static str, name: &'static str| {
        let c = &c;
        async move {
            let out = run(c, &["get", kind, name, "-o", "jsonpath={.metadata.uid}"]).await;
            out.trim().to_string()
        }
    };
    let d_uid = uid("deployment", "fg").await;
    let a_uid = uid("configmap", "anchor").await;
    apply(
        &c,
        &format!(
            r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: shared
  namespace: default
  labels: {{app: fg}}
  ownerReferences:
  - {{apiVersion: apps/v1, kind: Deployment, name: fg, uid: {d_uid}}}
  - {{apiVersion: v1, kind: ConfigMap, name: anchor, uid: {a_uid}}}
"#
        ),
    )
    .await;
    run(&c, &["delete", "deployment", "fg", "--wait=false"]).await;
    eventually(
        30,
        "the deployment and its ReplicaSet and Pods to go",
        || async {
            let out = run(&c, &["get", "deployments", "-o", "name"]).await;
            !out.contains("fg")
                && names(&c, "replicasets", "app=fg").await.is_empty()
                && names(&c, "pods", "app=fg").await.is_empty()
        },
    )
    .await;
    let out = run(&c, &["get", "configmap", "shared", "-o", "json"]).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    let refs = v["metadata"]["ownerReferences"].as_array().unwrap();
    assert_eq!(refs.len(), 1, "only the dangling reference is dropped: {v}");
    assert_eq!(refs[0]["name"], "anchor");
    // Deleting the last owner collects it.
    run(&c, &["delete", "configmap", "anchor"]).await;
    eventually(30, "the shared ConfigMap to be collected", || async {
        let out = run(&c, &["get", "configmaps", "-o", "name"]).await;
        !out.contains("configmap/shared")
    })
    .await;
}
