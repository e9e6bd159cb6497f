//! What a fresh real cluster offers and how its API server behaves where clients notice:
//! system namespaces, API defaulting, field selectors, deletion propagation, impersonation.

use crate::common;

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

const WORKLOADS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx, ports: [{containerPort: 80}]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: once, namespace: default}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: once, image: "busybox:1.36"}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 8080}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_defaults_are_filled_in_and_not_owned_by_the_applier() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path()).await;
    let k = kubectl_bin("kubectl");
    let kc = c.kubeconfig_path();
    kubectl_ok(
        &k,
        kc,
        &[
            "apply",
            "--server-side",
            "--field-manager=gitops",
            "-f",
            "-",
        ],
        Some(WORKLOADS),
    )
    .await;
    let d = json_of(
        &kubectl_ok(
            &k,
            kc,
            &[
                "get",
                "deployment",
                "web",
                "-o",
                "json",
                "--show-managed-fields",
            ],
            None,
        )
        .await,
    );
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["schedulerName"], "default-scheduler");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["securityContext"], json!({}));
    let ctr = &pod["containers"][0];
    assert_eq!(ctr["imagePullPolicy"], "Always");
    assert_eq!(ctr["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(ctr["terminationMessagePolicy"], "File");
    assert_eq!(ctr["ports"][0]["protocol"], "TCP");
    // The applier owns what it applied, not the defaults.
    let owned = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["manager"] == "gitops")
        .expect("gitops manages fields")["fieldsV1"]
        .to_string();
    assert!(owned.contains("f:selector"), "{owned}");
    assert!(!owned.contains("f:progressDeadlineSeconds"), "{owned}");
    assert!(!owned.contains("f:dnsPolicy"), "{owned}");

    let job = json_of(&kubectl_ok(&k, kc, &["get", "job", "once", "-o", "json"], None).await);
    assert_eq!(job["spec"]["backoffLimit"], 6);
    assert_eq!(job["spec"]["completions"], 1);
    assert_eq!(job["spec"]["parallelism"], 1);
    assert_eq!(job["spec"]["completionMode"], "NonIndexed");
    assert_eq!(job["spec"]["suspend"], false);
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );

    let svc = json_of(&kubectl_ok(&k, kc, &["get", "service", "web", "-o", "json"], None).await);
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["spec"]["sessionAffinity"], "None");
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4"]));
    assert_eq!(svc["spec"]["ipFamilyPolicy"], "SingleStack");
    assert_eq!(svc["spec"]["internalTrafficPolicy"], "Cluster");

    // Re-applying the same manifest is not a change: the diff against defaults is empty.
    let diff = kubectl(
        &k,
        kc,
        &["diff", "--server-side", "--field-manager=gitops", "-f", "-"],
        Some(WORKLOADS),
    )
    .await;
    assert_eq!(diff.code, 0, "{}{}", diff.stdout, diff.stderr);
    // A value the client sets wins over the default, through a plain merge patch too.
    kubectl_ok(
        &k,
        kc,
        &[
            "patch",
            "deployment",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"revisionHistoryLimit":2}}"#,
        ],
        None,
    )
    .await;
    let d = json_of(&kubectl_ok(&k, kc, &["get", "deployment", "web", "-o", "json"], None).await);
    assert_eq!(d["spec"]["revisionHistoryLimit"], 2);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
}
