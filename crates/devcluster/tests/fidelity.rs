//! What a fresh real cluster offers and how its API server behaves where clients notice:
//! system namespaces, API defaulting, field selectors, deletion propagation, impersonation.

mod common;

use common::{kubectl, kubectl_bin, kubectl_ok};
use devcluster::{Config, DevCluster};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

async fn start(dir: &std::path::Path) -> DevCluster {
    DevCluster::start(Config {
        kubeconfig: Some(dir.join("kubeconfig")),
        ..Config::default()
    })
    .await
    .expect("devcluster starts")
}

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).expect("kubectl prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_cluster_has_system_namespaces_and_default_cannot_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path()).await;
    let k = kubectl_bin("kubectl");
    let out = kubectl_ok(
        &k,
        c.kubeconfig_path(),
        &["get", "namespaces", "-o", "json"],
        None,
    )
    .await;
    let list = json_of(&out);
    let mut names: Vec<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"].as_str().unwrap().to_string(),
                n["status"]["phase"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    names.sort();
    let want: Vec<(String, String)> = ["default", "kube-node-lease", "kube-public", "kube-system"]
        .iter()
        .map(|n| (n.to_string(), "Active".to_string()))
        .collect();
    assert_eq!(names, want);

    // kubectl works in "default" without creating it first; the kubernetes Service is there.
    let svc = json_of(
        &kubectl_ok(
            &k,
            c.kubeconfig_path(),
            &["get", "service", "kubernetes", "-o", "json"],
            None,
        )
        .await,
    );
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    kubectl_ok(
        &k,
        c.kubeconfig_path(),
        &["create", "configmap", "here", "--from-literal=a=b"],
        None,
    )
    .await;

    let refused = kubectl(
        &k,
        c.kubeconfig_path(),
        &["delete", "namespace", "default"],
        None,
    )
    .await;
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("this namespace may not be deleted")
            && refused.stderr.contains("Forbidden"),
        "{}",
        refused.stderr
    );
    let client = c.client();
    let ns: Api<Namespace> = Api::all(client);
    match ns.delete("kube-system", &DeleteParams::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert_eq!(s.reason, "Forbidden");
        }
        other => panic!("deleting kube-system: {other:?}"),
    }
    // An ordinary namespace still goes away.
    ns.delete("kube-node-lease", &DeleteParams::default())
        .await
        .unwrap();
    assert!(ns.get_opt("default").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_namespaces_of_a_persisted_store_are_not_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || Config {
        data_dir: Some(dir.path().join("data")),
        kubeconfig: Some(dir.path().join("kubeconfig")),
        ..Config::default()
    };
    let c = DevCluster::start(cfg()).await.unwrap();
    let ns: Api<Namespace> = Api::all(c.client());
    let patched = ns
        .patch(
            "kube-public",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"kept": "yes"}}})),
        )
        .await
        .unwrap();
    let before = (
        patched.metadata.uid.clone(),
        patched.metadata.resource_version.clone(),
    );
    ns.delete("kube-node-lease", &DeleteParams::default())
        .await
        .unwrap();
    c.shutdown().await;

    let c = DevCluster::start(cfg()).await.unwrap();
    let ns: Api<Namespace> = Api::all(c.client());
    let after = ns.get("kube-public").await.unwrap();
    assert_eq!(
        (
            after.metadata.uid.clone(),
            after.metadata.resource_version.clone()
        ),
        before
    );
    assert_eq!(after.metadata.labels.unwrap()["kept"], "yes");
    // Missing ones are created again, as the API server's system namespace controller does.
    assert!(ns.get_opt("kube-node-lease").await.unwrap().is_some());
    c.shutdown().await;
}
