//! Simulated Job, StatefulSet, DaemonSet, Service/Endpoints, PVC and HPA controllers, checked
//! with the real kubectl.

use crate::common;

use std::time::Duration;

use common::{kubectl, kubectl_bin, kubectl_ok};
use devcluster::{Config, DevCluster};
use serde_json::Value;

async fn start(nodes: usize) -> (DevCluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let sim = devcluster::sim::SimConfig {
        nodes,
        ..Default::default()
    };
    let c = DevCluster::start(Config {
        kubeconfig: Some(dir.path().join("kubeconfig")),
        sim,
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
    let k = kubectl_bin("kubectl");
    kubectl_ok(
        &k,
        c.kubeconfig_path(),
        &["apply", "--server-side", "-f", "-"],
        Some(yaml),
    )
    .await;
}

async fn run(c: &DevCluster, args: &[&str]) -> String {
    kubectl_ok(&kubectl_bin("kubectl"), c.kubeconfig_path(), args, None).await
}

async fn get_json(c: &DevCluster, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = run(c, &all).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
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

fn job(name: &str, image: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata: {{name: {name}, namespace: default}}
spec:
{extra}
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: {image}
"#
    )
}

fn condition(obj: &Value, ty: &str) -> Option<Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_fail_and_suspend() {
    let (c, _dir) = start(1).await;
    apply(
        &c,
        &job("ok", "busybox:1", "  completions: 3\n  parallelism: 2"),
    )
    .await;
    run(
        &c,
        &[
            "wait",
            "--for=condition=complete",
            "job/ok",
            "--timeout=60s",
        ],
    )
    .await;
    let j = get_json(&c, &["job", "ok"]).await;
    assert_eq!(j["status"]["succeeded"], 3);
    assert_eq!(j["status"]["active"], Value::Null);
    assert!(j["status"]["startTime"].is_string());
    assert!(j["status"]["completionTime"].is_string());
    assert_eq!(condition(&j, "Complete").unwrap()["status"], "True");
    assert_eq!(
        condition(&j, "SuccessCriteriaMet").unwrap()["reason"],
        "CompletionsReached"
    );
    let pods = items(&get_json(&c, &["pods", "-l", "job-name=ok"]).await);
    assert_eq!(pods.len(), 3);
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Succeeded");
        let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(t["reason"], "Completed");
        assert_eq!(t["exitCode"], 0);
    }
    let table = run(&c, &["get", "jobs"]).await;
    assert!(
        table.contains("Complete") && table.contains("3/3"),
        "{table}"
    );

    // A failing image exhausts backoffLimit: Failed, BackoffLimitExceeded.
    apply(&c, &job("bad", "busybox:fail", "  backoffLimit: 1")).await;
    let j = eventually(30, "job/bad to fail", || async {
        let j = get_json(&c, &["job", "bad"]).await;
        condition(&j, "Failed").map(|_| j)
    })
    .await;
    let failed = condition(&j, "Failed").unwrap();
    assert_eq!(failed["status"], "True");
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert_eq!(condition(&j, "FailureTarget").unwrap()["status"], "True");
    assert_eq!(j["status"]["failed"], 2);
    let pods = items(&get_json(&c, &["pods", "-l", "job-name=bad"]).await);
    assert!(pods.iter().all(|p| p["status"]["phase"] == "Failed"));
    let r = kubectl(
        &kubectl_bin("kubectl"),
        c.kubeconfig_path(),
        &[
            "wait",
            "--for=condition=complete",
            "job/bad",
            "--timeout=2s",
        ],
        None,
    )
    .await;
    assert_ne!(r.code, 0, "a failed job never completes");

    // Suspended: no pods, condition Suspended.
    apply(&c, &job("held", "busybox:1", "  suspend: true")).await;
    let j = eventually(30, "job/held suspended", || async {
        let j = get_json(&c, &["job", "held"]).await;
        condition(&j, "Suspended").map(|_| j)
    })
    .await;
    assert_eq!(
        condition(&j, "Suspended").unwrap()["reason"],
        "JobSuspended"
    );
    assert!(items(&get_json(&c, &["pods", "-l", "job-name=held"]).await).is_empty());

    let events = run(&c, &["get", "events"]).await;
    for reason in ["SuccessfulCreate", "Completed", "BackoffLimitExceeded"] {
        assert!(events.contains(reason), "no {reason} in:\n{events}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_pods_come_in_order_and_roll_in_reverse() {
    let (c, _dir) = start(1).await;
    let sts = |image: &str| {
        format!(
            r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db, namespace: default}}
spec:
  serviceName: db
  replicas: 3
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      containers: [{{name: db, image: "{image}"}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 1Gi}}}}
"#
        )
    };
    apply(&c, &sts("postgres:16")).await;
    run(
        &c,
        &["rollout", "status", "statefulset/db", "--timeout=60s"],
    )
    .await;
    let pods = items(&get_json(&c, &["pods", "-l", "app=db"]).await);
    let mut names: Vec<String> = pods
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);
    // Ordered creation: each pod was created after the one before it was ready.
    let by = |n: &str| {
        pods.iter()
            .find(|p| p["metadata"]["name"] == n)
            .unwrap()
            .clone()
    };
    for (prev, next) in [("db-0", "db-1"), ("db-1", "db-2")] {
        let ready_at = condition(&by(prev), "Ready").unwrap()["lastTransitionTime"]
            .as_str()
            .unwrap()
            .to_string();
        let created = by(next)["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            created >= ready_at,
            "{next} created {created} before {prev} was ready {ready_at}"
        );
    }
    let events = items(&get_json(&c, &["events"]).await);
    let creates: Vec<String> = events
        .iter()
        .filter(|e| e["reason"] == "SuccessfulCreate" && e["involvedObject"]["name"] == "db")
        .filter_map(|e| e["message"].as_str().map(String::from))
        .filter(|m| m.starts_with("create Pod"))
        .collect();
    assert_eq!(
        creates,
        [
            "create Pod db-0 in StatefulSet db successful",
            "create Pod db-1 in StatefulSet db successful",
            "create Pod db-2 in StatefulSet db successful"
        ]
    );
    let s = get_json(&c, &["statefulset", "db"]).await;
    assert_eq!(s["status"]["readyReplicas"], 3);
    let rev1 = s["status"]["currentRevision"].as_str().unwrap().to_string();
    assert!(rev1.starts_with("db-"), "{rev1}");
    assert_eq!(s["status"]["updateRevision"], rev1.as_str());
    // Claims from the templates, bound.
    for i in 0..3 {
        let pvc = get_json(&c, &["pvc", &format!("data-db-{i}")]).await;
        assert_eq!(pvc["status"]["phase"], "Bound");
    }

    // A template change rolls the pods from the highest ordinal down.
    apply(&c, &sts("postgres:17")).await;
    run(
        &c,
        &["rollout", "status", "statefulset/db", "--timeout=60s"],
    )
    .await;
    let s = get_json(&c, &["statefulset", "db"]).await;
    let rev2 = s["status"]["updateRevision"].as_str().unwrap().to_string();
    assert_ne!(rev1, rev2);
    assert_eq!(s["status"]["currentRevision"], rev2.as_str());
    assert_eq!(s["status"]["updatedReplicas"], 3);
    let events = items(&get_json(&c, &["events"]).await);
    let deletes: Vec<String> = events
        .iter()
        .filter(|e| e["reason"] == "SuccessfulDelete" && e["involvedObject"]["name"] == "db")
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect();
    assert_eq!(
        deletes,
        [
            "delete Pod db-2 in StatefulSet db successful",
            "delete Pod db-1 in StatefulSet db successful",
            "delete Pod db-0 in StatefulSet db successful"
        ]
    );
    let pods = items(&get_json(&c, &["pods", "-l", "app=db"]).await);
    assert!(pods.iter().all(|p| {
        p["metadata"]["labels"]["controller-revision-hash"] == rev2.as_str()
            && p["spec"]["containers"][0]["image"] == "postgres:17"
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_runs_one_pod_per_node() {
    let (c, _dir) = start(3).await;
    apply(
        &c,
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: default}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: "fluent-bit:3"}]
"#,
    )
    .await;
    run(
        &c,
        &["rollout", "status", "daemonset/agent", "--timeout=60s"],
    )
    .await;
    let ds = get_json(&c, &["daemonset", "agent"]).await;
    assert_eq!(ds["status"]["desiredNumberScheduled"], 3);
    assert_eq!(ds["status"]["numberReady"], 3);
    assert_eq!(ds["status"]["updatedNumberScheduled"], 3);
    let pods = items(&get_json(&c, &["pods", "-l", "app=agent"]).await);
    let mut nodes: Vec<&str> = pods
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap())
        .collect();
    nodes.sort();
    assert_eq!(
        nodes,
        [
            "devcluster-node-0",
            "devcluster-node-1",
            "devcluster-node-2"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_ips_endpoints_and_load_balancers() {
    let (c, _dir) = start(1).await;
    apply(
        &c,
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-lb, namespace: default}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 443, targetPort: 8443}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: cache, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 5Gi}}
"#,
    )
    .await;
    run(
        &c,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    )
    .await;
    let svc = get_json(&c, &["service", "web"]).await;
    let ip = svc["spec"]["clusterIP"].as_str().unwrap();
    assert!(ip.starts_with("10.96."), "{ip}");
    let ep = eventually(30, "endpoints with 2 ready addresses", || async {
        let ep = get_json(&c, &["endpoints", "web"]).await;
        (ep["subsets"][0]["addresses"].as_array().map_or(0, Vec::len) == 2).then_some(ep)
    })
    .await;
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 8080);
    assert_eq!(ep["subsets"][0]["ports"][0]["name"], "http");
    let pods = items(&get_json(&c, &["pods", "-l", "app=web"]).await);
    let mut pod_ips: Vec<&str> = pods
        .iter()
        .map(|p| p["status"]["podIP"].as_str().unwrap())
        .collect();
    let mut ep_ips: Vec<&str> = ep["subsets"][0]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["ip"].as_str().unwrap())
        .collect();
    pod_ips.sort();
    ep_ips.sort();
    assert_eq!(pod_ips, ep_ips);

    let lb = eventually(30, "a load balancer ingress", || async {
        let lb = get_json(&c, &["service", "web-lb"]).await;
        lb["status"]["loadBalancer"]["ingress"][0]["ip"]
            .is_string()
            .then_some(lb)
    })
    .await;
    let port = lb["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&port), "{port}");
    let table = run(&c, &["get", "service", "web-lb"]).await;
    assert!(table.contains("LoadBalancer"), "{table}");

    let pvc = eventually(30, "the claim bound", || async {
        let pvc = get_json(&c, &["pvc", "cache"]).await;
        (pvc["status"]["phase"] == "Bound").then_some(pvc)
    })
    .await;
    assert_eq!(pvc["status"]["capacity"]["storage"], "5Gi");
    assert!(
        pvc["spec"]["volumeName"]
            .as_str()
            .unwrap()
            .starts_with("pvc-")
    );

    // Scaling down removes the address.
    run(&c, &["scale", "deployment", "web", "--replicas=1"]).await;
    eventually(30, "endpoints with 1 address", || async {
        let ep = get_json(&c, &["endpoints", "web"]).await;
        (ep["subsets"][0]["addresses"].as_array().map_or(0, Vec::len) == 1).then_some(())
    })
    .await;
}

/// The names of the pods behind a service's ready addresses, sorted.
fn endpoint_pods(ep: &Value) -> Vec<String> {
    let mut names: Vec<String> = ep["subsets"][0]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["targetRef"]["name"].as_str().map(String::from))
        .collect();
    names.sort();
    names
}

/// A service created after its pods are running, and one whose selector changes, find their
/// pods from the simulation's own index of pod labels (no pod event follows to tell them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_find_existing_pods_and_follow_selector_changes() {
    let (c, _dir) = start(1).await;
    apply(
        &c,
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "nginx:1", ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: loner, namespace: default, labels: {app: other}}
spec:
  containers: [{name: web, image: "nginx:1", ports: [{containerPort: 8080}]}]
"#,
    )
    .await;
    run(
        &c,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    )
    .await;
    run(
        &c,
        &[
            "wait",
            "pod/loner",
            "--for=condition=Ready",
            "--timeout=60s",
        ],
    )
    .await;
    let web_pods: Vec<String> = {
        let mut names: Vec<String> = items(&get_json(&c, &["pods", "-l", "app=web"]).await)
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    assert_eq!(web_pods.len(), 2);

    let service = |app: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: late, namespace: default}}\n\
             spec:\n  selector: {{app: {app}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
        )
    };
    apply(&c, &service("web")).await;
    eventually(
        30,
        "the late service's endpoints on the web pods",
        || async {
            let ep = get_json(&c, &["endpoints", "late"]).await;
            (endpoint_pods(&ep) == web_pods).then_some(())
        },
    )
    .await;

    apply(&c, &service("other")).await;
    eventually(30, "the endpoints moved to the loner pod", || async {
        let ep = get_json(&c, &["endpoints", "late"]).await;
        (endpoint_pods(&ep) == ["loner"]).then_some(())
    })
    .await;

    // A pod relabelled away leaves the selection.
    run(&c, &["label", "pod", "loner", "app=gone", "--overwrite"]).await;
    eventually(30, "endpoints without addresses", || async {
        let ep = get_json(&c, &["endpoints", "late"]).await;
        (ep["subsets"].as_array().is_none_or(Vec::is_empty)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_keeps_its_target_within_bounds() {
    let (c, _dir) = start(1).await;
    apply(
        &c,
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: api, image: "api:1"}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: api, namespace: default}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: api}
  minReplicas: 2
  maxReplicas: 4
"#,
    )
    .await;
    let hpa = eventually(30, "the HPA to scale its target to 2", || async {
        let hpa = get_json(&c, &["hpa", "api"]).await;
        let d = get_json(&c, &["deployment", "api"]).await;
        (d["spec"]["replicas"] == 2 && hpa["status"]["currentReplicas"] == 2).then_some(hpa)
    })
    .await;
    assert_eq!(hpa["status"]["desiredReplicas"], 2);
    assert_eq!(condition(&hpa, "AbleToScale").unwrap()["status"], "True");
    assert_eq!(condition(&hpa, "ScalingActive").unwrap()["status"], "True");
    run(
        &c,
        &["rollout", "status", "deployment/api", "--timeout=60s"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjob_runs_a_job_at_the_next_minute() {
    let (c, _dir) = start(1).await;
    apply(
        &c,
        r#"apiVersion: batch/v1
kind: CronJob
metadata: {name: tick, namespace: default}
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: tick, image: "busybox:1"}]
"#,
    )
    .await;
    // The next minute boundary is at most 60 s away.
    let cj = eventually(90, "a scheduled job to complete", || async {
        let cj = get_json(&c, &["cronjob", "tick"]).await;
        cj["status"]["lastSuccessfulTime"].is_string().then_some(cj)
    })
    .await;
    let scheduled = cj["status"]["lastScheduleTime"]
        .as_str()
        .unwrap()
        .to_string();
    let t = chrono::DateTime::parse_from_rfc3339(&scheduled).unwrap();
    assert_eq!(t.timestamp() % 60, 0, "scheduled on a minute boundary");
    let jobs = items(&get_json(&c, &["jobs"]).await);
    let name = format!("tick-{}", t.timestamp() / 60);
    let job = jobs
        .iter()
        .find(|j| j["metadata"]["name"] == name.as_str())
        .unwrap_or_else(|| panic!("no job {name} in {jobs:?}"));
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert_eq!(
        job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"],
        scheduled.as_str()
    );
    assert_eq!(condition(job, "Complete").unwrap()["status"], "True");
    let events = run(&c, &["get", "events"]).await;
    assert!(events.contains(&format!("Created job {name}")), "{events}");
}
