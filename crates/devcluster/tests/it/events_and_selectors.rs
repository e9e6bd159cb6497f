//! Events through both APIs (core/v1 and events.k8s.io/v1 are one storage) and field selectors
//! per kind, driven by the real kubectl and kube-rs against a cluster whose simulated
//! controllers write the events.

use crate::common;

use std::time::Duration;

use common::{kubectl, kubectl_bin, kubectl_ok};
use devcluster::{Config, DevCluster};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::api::events::v1::Event as EventsV1;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use serde_json::Value;

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "nginx:1.25"}]
"#;

struct Env {
    cluster: DevCluster,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let cluster = DevCluster::start(Config {
            kubeconfig: Some(dir.path().join("kubeconfig")),
            ..Config::default()
        })
        .await
        .unwrap();
        let env = Env { cluster, _dir: dir };
        env.run(&["apply", "-f", "-"], Some(APP)).await;
        env.run(
            &[
                "rollout",
                "status",
                "deployment/web",
                "-n",
                "demo",
                "--timeout=60s",
            ],
            None,
        )
        .await;
        env
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> String {
        kubectl_ok(
            &kubectl_bin("kubectl"),
            self.cluster.kubeconfig_path(),
            args,
            stdin,
        )
        .await
    }

    async fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.run(args, None).await).unwrap()
    }

    /// `kubectl get SCOPE... --field-selector SELECTOR -o json`.
    async fn select(&self, scope: &[&str], selector: &str) -> Value {
        let mut args = vec!["get"];
        args.extend_from_slice(scope);
        args.extend_from_slice(&["--field-selector", selector, "-o", "json"]);
        self.json(&args).await
    }
}

fn items(list: &Value) -> &Vec<Value> {
    list["items"].as_array().expect("a list has items")
}

/// Reads watch events until `want` accepts one, for at most `secs` seconds (a bound, not a
/// timing claim).
async fn wait_for<K, S, F>(stream: &mut S, secs: u64, what: &str, mut want: F) -> K
where
    S: futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
    F: FnMut(&WatchEvent<K>) -> bool,
    K: Clone,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let ev = tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .unwrap_or_else(|_| panic!("gave up waiting for {what}"))
            .expect("the watch stays up")
            .unwrap_or_else(|| panic!("the watch ended before {what}"));
        if want(&ev) {
            match ev {
                WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
                    return o;
                }
                _ => unreachable!("only object events are accepted"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_one_storage_seen_through_both_apis() {
    let env = Env::start().await;
    let client = env.cluster.client();

    // The deployment controller's core/v1 event, listed through events.k8s.io by kubectl.
    let list = env
        .json(&["get", "events.v1.events.k8s.io", "-A", "-o", "json"])
        .await;
    let scaling = items(&list)
        .iter()
        .find(|e| e["reason"] == "ScalingReplicaSet" && e["regarding"]["name"] == "web")
        .unwrap_or_else(|| panic!("no ScalingReplicaSet event for web in {list:#}"));
    assert_eq!(scaling["apiVersion"], "events.k8s.io/v1");
    assert_eq!(scaling["regarding"]["kind"], "Deployment");
    assert_eq!(scaling["reportingController"], "deployment-controller");
    assert_eq!(
        scaling["deprecatedSource"]["component"],
        "deployment-controller"
    );
    assert_eq!(scaling["deprecatedCount"], 1);
    assert!(
        scaling["note"]
            .as_str()
            .is_some_and(|n| n.starts_with("Scaled up replica set web-")),
        "{scaling}"
    );
    assert!(scaling.get("message").is_none() && scaling.get("involvedObject").is_none());

    // The same through kube-rs' typed events.k8s.io client, selected by regarding.* fields.
    let v1: Api<EventsV1> = Api::namespaced(client.clone(), "demo");
    let selected = v1
        .list(&ListParams::default().fields(
            "regarding.kind=Deployment,regarding.name=web,reason=ScalingReplicaSet,reportingController=deployment-controller",
        ))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1, "{:?}", selected.items);
    assert_eq!(
        selected.items[0].metadata.name.as_deref(),
        scaling["metadata"]["name"].as_str()
    );

    // A watch through events.k8s.io sees the controller's next event.
    let rv = selected.metadata.resource_version.clone().unwrap();
    let mut stream = v1
        .watch(
            &WatchParams::default().fields("regarding.name=web,reason=ScalingReplicaSet"),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    env.run(
        &["scale", "deployment/web", "-n", "demo", "--replicas=3"],
        None,
    )
    .await;
    let seen = wait_for(&mut stream, 60, "the scale-up event", |e| {
        matches!(e, WatchEvent::Added(ev) | WatchEvent::Modified(ev)
            if ev.note.as_deref().is_some_and(|n| n.ends_with("to 3")))
    })
    .await;
    assert_eq!(
        seen.reporting_controller.as_deref(),
        Some("deployment-controller")
    );
    drop(stream);

    // Written through events.k8s.io, read through core/v1 (kubectl --raw and kube-rs).
    env.run(
        &["create", "-f", "-"],
        Some(
            r#"
apiVersion: events.k8s.io/v1
kind: Event
metadata: {name: manual, namespace: demo}
eventTime: "2026-01-01T00:00:00.000000Z"
reportingController: example.com/checker
reportingInstance: checker-1
action: Check
reason: Checked
note: all good
type: Normal
regarding: {apiVersion: apps/v1, kind: Deployment, name: web, namespace: demo}
related: {apiVersion: v1, kind: Pod, name: some-pod, namespace: demo}
"#,
        ),
    )
    .await;
    let core: Value = serde_json::from_str(
        &env.run(
            &["get", "--raw", "/api/v1/namespaces/demo/events/manual"],
            None,
        )
        .await,
    )
    .unwrap();
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["message"], "all good");
    assert_eq!(core["involvedObject"]["name"], "web");
    assert_eq!(core["reportingComponent"], "example.com/checker");
    assert_eq!(core["reportingInstance"], "checker-1");
    assert_eq!(core["eventTime"], "2026-01-01T00:00:00.000000Z");
    assert_eq!(core["related"]["name"], "some-pod");
    assert_eq!(core["action"], "Check");
    assert!(core.get("note").is_none() && core.get("regarding").is_none());
    let typed = Api::<CoreEvent>::namespaced(client.clone(), "demo")
        .get("manual")
        .await
        .unwrap();
    assert_eq!(typed.message.as_deref(), Some("all good"));

    // A patch through events.k8s.io lands in the one object; core readers see it.
    env.run(
        &[
            "patch",
            "events.v1.events.k8s.io",
            "manual",
            "-n",
            "demo",
            "--type=merge",
            "-p",
            r#"{"note":"still good","series":{"count":2,"lastObservedTime":"2026-01-01T00:01:00.000000Z"}}"#,
        ],
        None,
    )
    .await;
    let typed = Api::<CoreEvent>::namespaced(client.clone(), "demo")
        .get("manual")
        .await
        .unwrap();
    assert_eq!(typed.message.as_deref(), Some("still good"));
    assert_eq!(typed.series.and_then(|s| s.count), Some(2));
    // The core list (kubectl get events) shows it; deleting it through events.k8s.io removes it.
    let out = env.run(&["get", "events", "-n", "demo"], None).await;
    assert!(out.contains("still good"), "{out}");
    env.run(
        &["delete", "events.v1.events.k8s.io", "manual", "-n", "demo"],
        None,
    )
    .await;
    let r = kubectl(
        &kubectl_bin("kubectl"),
        env.cluster.kubeconfig_path(),
        &["get", "events", "manual", "-n", "demo"],
        None,
    )
    .await;
    assert!(r.stderr.contains("NotFound"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_selectors_per_kind_for_list_watch_and_describe() {
    let env = Env::start().await;
    let client = env.cluster.client();

    // kubectl describe finds the events by involvedObject.* field selectors.
    let out = env
        .run(&["describe", "deployment", "web", "-n", "demo"], None)
        .await;
    let events = out
        .split_once("Events:")
        .unwrap_or_else(|| panic!("no Events section in\n{out}"))
        .1;
    assert!(
        events.contains("ScalingReplicaSet") && events.contains("deployment-controller"),
        "{out}"
    );
    let pods = env
        .json(&["get", "pods", "-n", "demo", "-l", "app=web", "-o", "json"])
        .await;
    let pod = items(&pods)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let node = items(&pods)[0]["spec"]["nodeName"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env
        .run(&["describe", "pod", &pod, "-n", "demo"], None)
        .await;
    let events = out
        .split_once("Events:")
        .unwrap_or_else(|| panic!("no Events section in\n{out}"))
        .1;
    assert!(
        events.contains("Scheduled") && events.contains("Started"),
        "{out}"
    );
    // Only the pod's own events: no other pod's name appears.
    let other = items(&pods)[1]["metadata"]["name"].as_str().unwrap();
    assert!(!events.contains(other), "{out}");

    // Pods by status.phase and spec.nodeName, with =, == and !=.
    let names = |v: &Value| -> Vec<String> {
        items(v)
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let running = env
        .select(&["pods", "-n", "demo"], "status.phase=Running")
        .await;
    assert_eq!(names(&running).len(), 2);
    let pending = env.select(&["pods", "-A"], "status.phase==Pending").await;
    assert!(names(&pending).is_empty());
    let on_node = env
        .select(
            &["pods", "-n", "demo"],
            &format!("spec.nodeName={node},metadata.name!={pod}"),
        )
        .await;
    assert!(!names(&on_node).contains(&pod), "{on_node}");
    assert!(names(&on_node).len() <= 1);
    // Secrets by type, namespaces by phase, ReplicaSets by status.replicas.
    env.run(
        &[
            "create",
            "secret",
            "generic",
            "plain",
            "-n",
            "demo",
            "--from-literal=k=v",
        ],
        None,
    )
    .await;
    let tls = env
        .select(&["secrets", "-n", "demo"], "type=kubernetes.io/tls")
        .await;
    assert!(names(&tls).is_empty());
    let opaque = env.select(&["secrets", "-n", "demo"], "type=Opaque").await;
    assert_eq!(names(&opaque), ["plain"]);
    let active = env.select(&["namespaces"], "status.phase=Active").await;
    assert!(names(&active).contains(&"demo".to_string()));
    let rs = env.select(&["rs", "-n", "demo"], "status.replicas=2").await;
    assert_eq!(names(&rs).len(), 1, "{rs}");

    // An unsupported label is a 400 worded as Kubernetes words it, for list and watch.
    let r = kubectl(
        &kubectl_bin("kubectl"),
        env.cluster.kubeconfig_path(),
        &[
            "get",
            "pods",
            "-n",
            "demo",
            "--field-selector",
            "spec.bogus=1",
        ],
        None,
    )
    .await;
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("field label not supported: spec.bogus"),
        "{}",
        r.stderr
    );
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), "demo");
    match pods_api
        .list(&ListParams::default().fields("spec.bogus=1"))
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
            assert_eq!(s.message, "field label not supported: spec.bogus");
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    assert!(
        pods_api
            .watch(&WatchParams::default().fields("spec.bogus=1"), "0")
            .await
            .is_err()
    );

    // A watch selected on status.phase=Running sees a new pod arrive once it runs.
    let list = pods_api
        .list(&ListParams::default().fields("status.phase=Running"))
        .await
        .unwrap();
    let rv = list.metadata.resource_version.clone().unwrap();
    let mut stream = pods_api
        .watch(&WatchParams::default().fields("status.phase=Running"), &rv)
        .await
        .unwrap()
        .boxed();
    env.run(
        &["scale", "deployment/web", "-n", "demo", "--replicas=3"],
        None,
    )
    .await;
    let known: Vec<String> = list
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let arrived = wait_for(
        &mut stream,
        60,
        "the third pod to run",
        |e| matches!(e, WatchEvent::Added(p) if !known.contains(p.metadata.name.as_ref().unwrap())),
    )
    .await;
    assert_eq!(
        arrived.status.and_then(|s| s.phase).as_deref(),
        Some("Running")
    );
}
