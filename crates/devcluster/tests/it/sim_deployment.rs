//! Simulated Deployment → ReplicaSet → Pod controllers, checked with the real kubectl: rollout
//! status, wait for Available, scale, image change, crash loops and progress deadlines.

use crate::common;

use std::time::Duration;

use common::{kubectl, kubectl_bin, kubectl_ok};
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
    // The tests work in "default", which the devcluster creates at start as a real cluster.
    (c, dir)
}

fn deployment(name: &str, image: &str, replicas: u32, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: default
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: app
        image: {image}
{extra_spec}
"#
    )
}

async fn get_json(c: &DevCluster, args: &[&str]) -> Value {
    let k = kubectl_bin("kubectl");
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = kubectl_ok(&k, c.kubeconfig_path(), &all, None).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Polls `f` until it returns Some, for at most `secs` seconds (a bound, not a timing claim).
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_status_wait_available_scale_and_image_change() {
    let (c, _dir) = start().await;
    let k = kubectl_bin("kubectl");
    let kc = c.kubeconfig_path();
    kubectl_ok(
        &k,
        kc,
        &["apply", "--server-side", "-f", "-"],
        Some(&deployment("web", "nginx:1.27", 3, "")),
    )
    .await;
    let out = kubectl_ok(
        &k,
        kc,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
        None,
    )
    .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    kubectl_ok(
        &k,
        kc,
        &[
            "wait",
            "--for=condition=Available",
            "deployment/web",
            "--timeout=60s",
        ],
        None,
    )
    .await;

    // What the user sees: one ReplicaSet named <deploy>-<hash>, 3 Running ready pods owned by it.
    let d = get_json(&c, &["deployment", "web"]).await;
    assert_eq!(d["status"]["readyReplicas"], 3);
    assert_eq!(d["status"]["availableReplicas"], 3);
    assert_eq!(d["status"]["updatedReplicas"], 3);
    assert_eq!(
        d["status"]["observedGeneration"],
        d["metadata"]["generation"]
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let progressing = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .cloned()
        .unwrap();
    assert_eq!(progressing["reason"], "NewReplicaSetAvailable");
    let rss = items(&get_json(&c, &["replicasets", "-l", "app=web"]).await);
    assert_eq!(rss.len(), 1);
    let rs = &rss[0];
    let hash = rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
    assert_eq!(
        rs["spec"]["selector"]["matchLabels"]["pod-template-hash"],
        hash
    );
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    assert_eq!(rs["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(
        rs["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
        true
    );
    assert_eq!(rs["status"]["availableReplicas"], 3);
    let pods = items(&get_json(&c, &["pods", "-l", "app=web"]).await);
    assert_eq!(pods.len(), 3);
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with(&format!("web-{hash}-")), "{name}");
        assert_eq!(name.len(), format!("web-{hash}-").len() + 5, "{name}");
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(p["spec"]["nodeName"], "devcluster-node-0");
        assert!(
            p["status"]["podIP"]
                .as_str()
                .unwrap()
                .starts_with("10.244.")
        );
        let cs = &p["status"]["containerStatuses"][0];
        assert_eq!(cs["ready"], true);
        assert_eq!(cs["started"], true);
        assert_eq!(cs["restartCount"], 0);
        assert!(cs["state"]["running"]["startedAt"].is_string());
        assert!(
            cs["containerID"]
                .as_str()
                .unwrap()
                .starts_with("containerd://")
        );
        assert_eq!(cs["image"], "docker.io/library/nginx:1.27");
    }
    let table = kubectl_ok(&k, kc, &["get", "pods", "-l", "app=web"], None).await;
    assert_eq!(table.matches("Running").count(), 3, "{table}");
    assert_eq!(table.matches("1/1").count(), 3, "{table}");

    // kubectl scale changes the pod count.
    kubectl_ok(
        &k,
        kc,
        &["scale", "deployment", "web", "--replicas=5"],
        None,
    )
    .await;
    kubectl_ok(
        &k,
        kc,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
        None,
    )
    .await;
    eventually(30, "5 running pods", || async {
        let pods = items(&get_json(&c, &["pods", "-l", "app=web"]).await);
        let running = pods
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        (pods.len() == 5 && running == 5).then_some(())
    })
    .await;

    // An image change rolls out a second ReplicaSet; the first ends at 0 replicas.
    kubectl_ok(
        &k,
        kc,
        &["set", "image", "deployment/web", "app=nginx:1.28"],
        None,
    )
    .await;
    let out = kubectl_ok(
        &k,
        kc,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
        None,
    )
    .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let rss = items(&get_json(&c, &["replicasets", "-l", "app=web"]).await);
    assert_eq!(rss.len(), 2);
    let old = rss
        .iter()
        .find(|r| r["metadata"]["labels"]["pod-template-hash"] == hash)
        .unwrap();
    let new = rss
        .iter()
        .find(|r| r["metadata"]["labels"]["pod-template-hash"] != hash)
        .unwrap();
    assert_eq!(old["spec"]["replicas"], 0);
    assert_eq!(new["spec"]["replicas"], 5);
    assert_eq!(
        new["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let d = get_json(&c, &["deployment", "web"]).await;
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let pods = items(&get_json(&c, &["pods", "-l", "app=web"]).await);
    assert_eq!(pods.len(), 5);
    assert!(
        pods.iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "nginx:1.28")
    );
    let history = kubectl_ok(&k, kc, &["rollout", "history", "deployment/web"], None).await;
    assert!(history.contains('1') && history.contains('2'), "{history}");

    // Undo: the first ReplicaSet becomes the new one again, as revision 3.
    kubectl_ok(&k, kc, &["rollout", "undo", "deployment/web"], None).await;
    kubectl_ok(
        &k,
        kc,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
        None,
    )
    .await;
    let rss = items(&get_json(&c, &["replicasets", "-l", "app=web"]).await);
    assert_eq!(rss.len(), 2, "undo reuses the first ReplicaSet");
    let first = rss
        .iter()
        .find(|r| r["metadata"]["labels"]["pod-template-hash"] == hash)
        .unwrap();
    assert_eq!(first["spec"]["replicas"], 5);
    assert_eq!(
        first["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let pods = items(&get_json(&c, &["pods", "-l", "app=web"]).await);
    assert!(
        pods.iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "nginx:1.27")
    );

    // Events as Kubernetes records them.
    let events = kubectl_ok(&k, kc, &["get", "events"], None).await;
    for reason in [
        "ScalingReplicaSet",
        "SuccessfulCreate",
        "SuccessfulDelete",
        "Scheduled",
        "Pulled",
        "Created",
        "Started",
    ] {
        assert!(events.contains(reason), "no {reason} event in:\n{events}");
    }
    let ev = items(&get_json(&c, &["events"]).await);
    let scaled = ev
        .iter()
        .find(|e| e["reason"] == "ScalingReplicaSet" && e["involvedObject"]["name"] == "web")
        .expect("a ScalingReplicaSet event on the deployment");
    assert_eq!(scaled["involvedObject"]["kind"], "Deployment");
    assert_eq!(scaled["source"]["component"], "deployment-controller");
    assert_eq!(scaled["type"], "Normal");
    assert!(scaled["count"].as_i64().unwrap() >= 1);
    assert!(
        scaled["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("Scaled up replica set web-{hash}")),
        "{scaled}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_shows_in_kubectl_and_deadline_is_exceeded() {
    let (c, _dir) = start().await;
    let k = kubectl_bin("kubectl");
    let kc = c.kubeconfig_path();
    kubectl_ok(
        &k,
        kc,
        &["apply", "--server-side", "-f", "-"],
        Some(&deployment(
            "broken",
            "busybox:fail",
            2,
            "  progressDeadlineSeconds: 2",
        )),
    )
    .await;
    eventually(30, "CrashLoopBackOff in kubectl get pods", || async {
        let table = kubectl_ok(&k, kc, &["get", "pods", "-l", "app=broken"], None).await;
        (table.matches("CrashLoopBackOff").count() == 2).then_some(())
    })
    .await;
    // rollout status fails once the progress deadline has passed.
    let r = kubectl(
        &k,
        kc,
        &["rollout", "status", "deployment/broken", "--timeout=60s"],
        None,
    )
    .await;
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stderr.contains("exceeded its progress deadline"),
        "{}",
        r.stderr
    );
    let d = get_json(&c, &["deployment", "broken"]).await;
    let conds = d["status"]["conditions"].as_array().unwrap();
    let progressing = conds.iter().find(|c| c["type"] == "Progressing").unwrap();
    assert_eq!(progressing["status"], "False");
    assert_eq!(progressing["reason"], "ProgressDeadlineExceeded");
    let available = conds.iter().find(|c| c["type"] == "Available").unwrap();
    assert_eq!(available["status"], "False");
    assert_eq!(available["reason"], "MinimumReplicasUnavailable");
    assert_eq!(d["status"]["unavailableReplicas"], 2);

    // Restarts keep growing, with the last termination recorded.
    let first = get_json(&c, &["pods", "-l", "app=broken"]).await;
    let pod = items(&first)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let cs = &items(&first)[0]["status"]["containerStatuses"][0];
    assert_eq!(cs["state"]["waiting"]["reason"], "CrashLoopBackOff");
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(cs["lastState"]["terminated"]["reason"], "Error");
    assert_eq!(cs["ready"], false);
    let before = cs["restartCount"].as_u64().unwrap();
    eventually(30, "restartCount to grow", || async {
        let p = get_json(&c, &["pod", &pod]).await;
        let n = p["status"]["containerStatuses"][0]["restartCount"]
            .as_u64()
            .unwrap();
        (n > before).then_some(())
    })
    .await;
    let events = kubectl_ok(&k, kc, &["get", "events"], None).await;
    assert!(events.contains("BackOff"), "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_failure_and_recreate_and_paused() {
    let (c, _dir) = start().await;
    let k = kubectl_bin("kubectl");
    let kc = c.kubeconfig_path();
    kubectl_ok(
        &k,
        kc,
        &["apply", "--server-side", "-f", "-"],
        Some(&deployment(
            "nopull",
            "registry.example/app:pullfail",
            1,
            "",
        )),
    )
    .await;
    eventually(30, "ImagePullBackOff", || async {
        let table = kubectl_ok(&k, kc, &["get", "pods", "-l", "app=nopull"], None).await;
        table.contains("ImagePullBackOff").then_some(())
    })
    .await;

    // Recreate: the old pods go before the new ones come.
    kubectl_ok(
        &k,
        kc,
        &["apply", "--server-side", "-f", "-"],
        Some(&deployment(
            "rec",
            "nginx:1",
            2,
            "  strategy: {type: Recreate}",
        )),
    )
    .await;
    kubectl_ok(
        &k,
        kc,
        &["rollout", "status", "deployment/rec", "--timeout=60s"],
        None,
    )
    .await;
    kubectl_ok(
        &k,
        kc,
        &["set", "image", "deployment/rec", "app=nginx:2"],
        None,
    )
    .await;
    kubectl_ok(
        &k,
        kc,
        &["rollout", "status", "deployment/rec", "--timeout=60s"],
        None,
    )
    .await;
    let pods = items(&get_json(&c, &["pods", "-l", "app=rec"]).await);
    assert_eq!(pods.len(), 2);
    assert!(
        pods.iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "nginx:2")
    );

    // Paused: a template change makes no new ReplicaSet until resumed.
    kubectl_ok(&k, kc, &["rollout", "pause", "deployment/rec"], None).await;
    kubectl_ok(
        &k,
        kc,
        &["set", "image", "deployment/rec", "app=nginx:3"],
        None,
    )
    .await;
    let d = eventually(30, "DeploymentPaused", || async {
        let d = get_json(&c, &["deployment", "rec"]).await;
        let paused = d["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "DeploymentPaused");
        (paused && d["status"]["observedGeneration"] == d["metadata"]["generation"]).then_some(d)
    })
    .await;
    assert_eq!(d["status"]["updatedReplicas"], Value::Null);
    let rss = items(&get_json(&c, &["replicasets", "-l", "app=rec"]).await);
    assert_eq!(rss.len(), 2, "no third ReplicaSet while paused");
    kubectl_ok(&k, kc, &["rollout", "resume", "deployment/rec"], None).await;
    kubectl_ok(
        &k,
        kc,
        &["rollout", "status", "deployment/rec", "--timeout=60s"],
        None,
    )
    .await;
    let rss = items(&get_json(&c, &["replicasets", "-l", "app=rec"]).await);
    assert_eq!(rss.len(), 3);
}
