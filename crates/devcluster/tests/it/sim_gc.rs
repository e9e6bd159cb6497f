//! Garbage collection of ownerReferences: deleting a Deployment removes its ReplicaSets and
//! Pods; the `orphan` finalizer leaves them without the reference; `foregroundDeletion`
//! removes the dependents before the owner; a dependent with a second owner survives; DELETE's
//! `propagationPolicy` (kubectl `--cascade`) and `orphanDependents` set those finalizers.

use crate::common;

use std::time::Duration;

use common::{kubectl, kubectl_bin, kubectl_ok};
use devcluster::{Config, DevCluster};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
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
    // A DELETE without DeleteOptions: the finalizer the object carries decides (kubectl
    // delete would send its --cascade policy, which overrides it).
    run(
        &c,
        &[
            "delete",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments/keep",
        ],
    )
    .await;
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
    run(
        &c,
        &[
            "delete",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments/fg",
        ],
    )
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascade_orphan_keeps_the_replicaset_and_pods_without_the_reference() {
    let (c, _dir) = start().await;
    apply(&c, &deployment("lone", None)).await;
    run(
        &c,
        &["rollout", "status", "deployment/lone", "--timeout=60s"],
    )
    .await;
    let pods_before = names(&c, "pods", "app=lone").await;
    assert_eq!(pods_before.len(), 2);
    // kubectl waits until the deployment is gone.
    run(&c, &["delete", "deployment", "lone", "--cascade=orphan"]).await;
    let out = run(&c, &["get", "deployments", "-o", "name"]).await;
    assert!(!out.contains("lone"), "{out}");
    let rs = names(&c, "replicasets", "app=lone").await;
    assert_eq!(rs.len(), 1, "the ReplicaSet stays");
    eventually(30, "the reference to the deployment to go", || async {
        let out = run(&c, &["get", "replicaset", &rs[0], "-o", "json"]).await;
        let v: Value = serde_json::from_str(&out).unwrap();
        v["metadata"]["ownerReferences"].is_null()
    })
    .await;
    // The pods stay, still owned by the ReplicaSet (which still exists).
    let out = run(&c, &["get", "pods", "-l", "app=lone", "-o", "json"]).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    let pods = v["items"].as_array().unwrap();
    let mut after: Vec<String> = pods
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    after.sort();
    let mut before = pods_before.clone();
    before.sort();
    assert_eq!(after, before);
    for p in pods {
        let refs = p["metadata"]["ownerReferences"].as_array().unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0]["kind"], "ReplicaSet");
        assert_eq!(refs[0]["name"], rs[0].as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascade_foreground_deletes_the_dependents_before_the_owner() {
    let (c, _dir) = start().await;
    apply(&c, &deployment("fore", None)).await;
    run(
        &c,
        &["rollout", "status", "deployment/fore", "--timeout=60s"],
    )
    .await;
    let client = c.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // Watches from one resourceVersion: resourceVersions are one sequence for the whole store,
    // so they order the deletions across kinds.
    let rv = deployments
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut d_watch = deployments
        .watch(&WatchParams::default().fields("metadata.name=fore"), &rv)
        .await
        .unwrap()
        .boxed();
    let mut rs_watch = replicasets
        .watch(&WatchParams::default().labels("app=fore"), &rv)
        .await
        .unwrap()
        .boxed();
    let mut pod_watch = pods
        .watch(&WatchParams::default().labels("app=fore"), &rv)
        .await
        .unwrap()
        .boxed();
    run(
        &c,
        &["delete", "deployment", "fore", "--cascade=foreground"],
    )
    .await;
    // Everything has happened once kubectl returns: the deployment is gone.
    let rv_of = |m: &kube::api::ObjectMeta| -> u64 {
        m.resource_version.as_deref().unwrap().parse().unwrap()
    };
    let fg = |m: &kube::api::ObjectMeta| {
        m.deletion_timestamp.is_some()
            && m.finalizers
                .as_ref()
                .is_some_and(|f| f.iter().any(|f| f == "foregroundDeletion"))
    };
    let mut marked = false;
    let deployment_gone = loop {
        match next(&mut d_watch).await {
            WatchEvent::Modified(d) if fg(&d.metadata) => marked = true,
            WatchEvent::Deleted(d) => break rv_of(&d.metadata),
            _ => {}
        }
    };
    assert!(
        marked,
        "the deployment was kept with deletionTimestamp and the foregroundDeletion finalizer"
    );
    let mut rs_gone = None;
    while rs_gone.is_none() {
        if let WatchEvent::Deleted(r) = next(&mut rs_watch).await {
            rs_gone = Some(rv_of(&r.metadata));
        }
    }
    let mut pods_gone = Vec::new();
    while pods_gone.len() < 2 {
        if let WatchEvent::Deleted(p) = next(&mut pod_watch).await {
            pods_gone.push(rv_of(&p.metadata));
        }
    }
    let rs_gone = rs_gone.unwrap();
    assert!(rs_gone < deployment_gone, "{rs_gone} < {deployment_gone}");
    for p in pods_gone {
        assert!(
            p < rs_gone,
            "pod deleted at {p} before its ReplicaSet at {rs_gone}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_options_from_the_query_and_the_deprecated_orphan_dependents() {
    let (c, _dir) = start().await;
    apply(&c, &deployment("q1", Some("example.com/hold"))).await;
    apply(&c, &deployment("q2", Some("example.com/hold"))).await;
    // The extra finalizer holds the objects; the DELETE answers with the object as the
    // deletion left it (before the garbage collector acts on it).
    let deleted = |uri: &'static str| {
        let c = &c;
        async move {
            let out = run(c, &["delete", "--raw", uri]).await;
            serde_json::from_str::<Value>(&out).unwrap()
        }
    };
    let v = deleted("/apis/apps/v1/namespaces/default/deployments/q1?propagationPolicy=Foreground")
        .await;
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
    assert_eq!(
        v["metadata"]["finalizers"],
        serde_json::json!(["example.com/hold", "foregroundDeletion"])
    );
    let v = deleted("/apis/apps/v1/namespaces/default/deployments/q2?orphanDependents=true").await;
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
    assert_eq!(
        v["metadata"]["finalizers"],
        serde_json::json!(["example.com/hold", "orphan"])
    );
    // Both options at once, or an unknown policy: 422 as Kubernetes validates DeleteOptions.
    let r = kubectl(
        &kubectl_bin("kubectl"),
        c.kubeconfig_path(),
        &[
            "delete",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments/q2?orphanDependents=true&propagationPolicy=Background",
        ],
        None,
    )
    .await;
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("orphanDependents and deletionPropagation cannot be both set"),
        "{}",
        r.stderr
    );
    let r = kubectl(
        &kubectl_bin("kubectl"),
        c.kubeconfig_path(),
        &[
            "delete",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments/q2?propagationPolicy=Sideways",
        ],
        None,
    )
    .await;
    assert!(
        r.stderr.contains("Unsupported value: \"Sideways\""),
        "{}",
        r.stderr
    );
    // Removing the holding finalizer lets the deletion finish.
    for name in ["q1", "q2"] {
        run(
            &c,
            &[
                "patch",
                "deployment",
                name,
                "--type=json",
                "-p",
                r#"[{"op":"remove","path":"/metadata/finalizers/0"}]"#,
            ],
        )
        .await;
    }
    eventually(30, "both deployments to go", || async {
        let out = run(&c, &["get", "deployments", "-o", "name"]).await;
        !out.contains("q1") && !out.contains("q2")
    })
    .await;
}

/// The next event of a watch; the test fails if none comes within a generous bound.
async fn next<K>(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin),
) -> WatchEvent<K> {
    tokio::time::timeout(Duration::from_secs(60), stream.try_next())
        .await
        .expect("a watch event within 60 s")
        .expect("the watch stays up")
        .expect("the watch does not end")
}
