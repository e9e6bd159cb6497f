//! Engine benchmark: health + diff per object over a realistic mix of 10,000 objects (desired as
//! rendered from Git, live as an API server returns it: defaults, managedFields, status), and a
//! sync plan over the same set. Prints µs/object; the target is < 50 µs/object for health + diff.
//!
//! Run: `cargo bench -p capstan-engine --bench engine` (optionally `-- 20000` for another size).

use capstan_engine::diff::{DiffOptions, DiffStatus, IgnoreDifference, diff};
use capstan_engine::health::HealthChecker;
use capstan_engine::plan::{PlanOptions, plan};
use serde_json::{Value, json};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn tracking(group: &str, kind: &str, name: &str) -> String {
    format!("apps_shop:{group}/{kind}:shop/{name}")
}

fn server_meta(mut live: Value, i: usize, fields: Value) -> Value {
    let m = live["metadata"].as_object_mut().expect("metadata is a map");
    m.insert(
        "uid".into(),
        json!(format!("6f0c1d2e-8a43-4b4e-9c1e-{i:012}")),
    );
    m.insert("resourceVersion".into(), json!(format!("{}", 40000 + i)));
    m.insert("generation".into(), json!(1));
    m.insert("creationTimestamp".into(), json!("2026-11-20T09:14:02Z"));
    m.insert(
        "managedFields".into(),
        json!([{"apiVersion": "v1", "fieldsType": "FieldsV1", "manager": "capstan",
            "operation": "Apply", "time": "2026-11-20T09:14:02Z", "fieldsV1": fields}]),
    );
    live
}

fn deployment(i: usize, drift: bool) -> (Value, Value) {
    let name = format!("web-{i}");
    let desired = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": name, "tier": "frontend"}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.25",
                    "ports": [{"containerPort": 80}],
                    "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "REGION", "value": "eu"}],
                    "resources": {"requests": {"cpu": "250m", "memory": "128Mi"},
                                  "limits": {"cpu": "1", "memory": "256Mi"}}}]}}}});
    let mut live = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": name, "tier": "frontend"},
            "annotations": {"capstan.dev/tracking-id": tracking("apps", "Deployment", &name),
                            "deployment.kubernetes.io/revision": "1"}},
        "spec": {"progressDeadlineSeconds": 600, "replicas": 3, "revisionHistoryLimit": 10,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}, "type": "RollingUpdate"},
            "template": {"metadata": {"creationTimestamp": null, "labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": if drift { "nginx:1.24" } else { "nginx:1.25" },
                    "imagePullPolicy": "IfNotPresent",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "REGION", "value": "eu"}],
                    "resources": {"requests": {"cpu": "250m", "memory": "128Mi"},
                                  "limits": {"cpu": "1", "memory": "256Mi"}},
                    "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}],
                    "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                    "securityContext": {}, "terminationGracePeriodSeconds": 30}}},
        "status": {"availableReplicas": 3, "observedGeneration": 1, "readyReplicas": 3, "replicas": 3,
            "updatedReplicas": 3, "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                 "lastTransitionTime": "2026-11-20T09:14:09Z", "lastUpdateTime": "2026-11-20T09:14:09Z",
                 "message": "Deployment has minimum availability."},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                 "lastTransitionTime": "2026-11-20T09:14:02Z", "lastUpdateTime": "2026-11-20T09:14:09Z",
                 "message": "ReplicaSet has successfully progressed."}]}});
    let fields = json!({"f:metadata": {"f:annotations": {"f:capstan.dev/tracking-id": {}},
            "f:labels": {"f:app": {}, "f:tier": {}}},
        "f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {"f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {},
                "f:env": {"k:{\"name\":\"LOG_LEVEL\"}": {".": {}, "f:name": {}, "f:value": {}},
                          "k:{\"name\":\"REGION\"}": {".": {}, "f:name": {}, "f:value": {}}},
                "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}},
                "f:resources": {"f:limits": {"f:cpu": {}, "f:memory": {}}, "f:requests": {"f:cpu": {}, "f:memory": {}}}}}}}}});
    live = server_meta(live, i, fields);
    (desired, live)
}

fn service(i: usize) -> (Value, Value) {
    let name = format!("web-{i}");
    let desired = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "shop"},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}});
    let live = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "shop",
            "annotations": {"capstan.dev/tracking-id": tracking("", "Service", &name)}},
        "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
            "sessionAffinity": "None", "type": "ClusterIP"},
        "status": {"loadBalancer": {}}});
    let fields = json!({"f:metadata": {"f:annotations": {"f:capstan.dev/tracking-id": {}}},
        "f:spec": {"f:selector": {}, "f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}":
            {".": {}, "f:name": {}, "f:port": {}, "f:targetPort": {}}}}});
    (desired, server_meta(live, i, fields))
}

fn config_map(i: usize) -> (Value, Value) {
    let name = format!("settings-{i}");
    let data = json!({"LOG_LEVEL": "info", "FEATURES": "a,b,c", "config.yaml": "server:\n  port: 8080\n  workers: 4\n"});
    let desired = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "shop"}, "data": data});
    let live = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "shop",
            "annotations": {"capstan.dev/tracking-id": tracking("", "ConfigMap", &name)}}, "data": data});
    let fields = json!({"f:data": {"f:LOG_LEVEL": {}, "f:FEATURES": {}, "f:config.yaml": {}}});
    (desired, server_meta(live, i, fields))
}

fn secret(i: usize) -> (Value, Value) {
    let name = format!("db-{i}");
    let desired = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": "shop"},
        "stringData": {"user": "app", "password": format!("pw-{i}")}});
    let live = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": "shop",
            "annotations": {"capstan.dev/tracking-id": tracking("", "Secret", &name)}},
        "data": {"user": "YXBw", "password": base64_of(&format!("pw-{i}"))}});
    let fields = json!({"f:type": {}, "f:stringData": {}});
    (desired, server_meta(live, i, fields))
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn service_account(i: usize) -> (Value, Value) {
    let name = format!("sa-{i}");
    let desired = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": "shop"}});
    let live = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": "shop",
            "annotations": {"capstan.dev/tracking-id": tracking("", "ServiceAccount", &name)}}});
    (
        desired,
        server_meta(
            live,
            i,
            json!({"f:metadata": {"f:annotations": {"f:capstan.dev/tracking-id": {}}}}),
        ),
    )
}

fn ingress(i: usize) -> (Value, Value) {
    let name = format!("web-{i}");
    let spec = json!({"ingressClassName": "nginx", "rules": [{"host": format!("web-{i}.example.com"),
        "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": name, "port": {"number": 80}}}}]}}]});
    let desired = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "shop"}, "spec": spec});
    let live = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "shop",
            "annotations": {"capstan.dev/tracking-id": tracking("networking.k8s.io", "Ingress", &name)}},
        "spec": spec, "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}});
    (
        desired,
        server_meta(
            live,
            i,
            json!({"f:spec": {"f:ingressClassName": {}, "f:rules": {}}}),
        ),
    )
}

/// Whether object `i` is built drifted (a Deployment running an older image): 4% of objects.
fn drifted(i: usize) -> bool {
    i.is_multiple_of(10) && (i.is_multiple_of(100) || i.is_multiple_of(30))
}

/// The mix: per 10 objects 3 Deployments, 3 Services, 2 ConfigMaps, 1 Secret, and a
/// ServiceAccount or Ingress.
fn objects(n: usize) -> Vec<(Value, Value)> {
    (0..n)
        .map(|i| match i % 10 {
            0 => deployment(i, drifted(i)),
            1 | 2 => deployment(i, false),
            3..=5 => service(i),
            6 | 7 => config_map(i),
            8 => secret(i),
            _ if i % 20 == 9 => service_account(i),
            _ => ingress(i),
        })
        .collect()
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn measure(rounds: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm-up
    median(
        (0..rounds)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let pairs = objects(n);
    let checker = HealthChecker::new();
    let plain = DiffOptions::default();
    let rules: Vec<IgnoreDifference> = serde_json::from_value(json!([
        {"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]},
        {"group": "apps", "kind": "Deployment",
         "jqPathExpressions": [".spec.template.spec.containers[] | select(.name == \"istio-proxy\")"]},
        {"group": "", "kind": "Service", "managedFieldsManagers": ["kube-controller-manager"]}
    ]))
    .expect("rules");
    let with_rules = DiffOptions::new(rules, "capstan").expect("rules compile");

    // Sanity: the mix has the drift it was built with and nothing else.
    let out_of_sync = pairs
        .iter()
        .filter(|(d, l)| diff(Some(d), Some(l), &plain).expect("diff").status != DiffStatus::Synced)
        .count();
    assert_eq!(
        out_of_sync,
        (0..n).filter(|i| drifted(*i)).count(),
        "the benchmark set must be synced except for the objects built drifted"
    );
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    let rounds = 7;

    let health_only = measure(rounds, || {
        for (_, l) in &pairs {
            black_box(checker.assess(black_box(l)));
        }
    });
    let diff_only = measure(rounds, || {
        for (d, l) in &pairs {
            black_box(diff(Some(d), Some(l), &plain).expect("diff"));
        }
    });
    let both = measure(rounds, || {
        for (d, l) in &pairs {
            black_box(checker.assess(black_box(l)));
            black_box(diff(Some(d), Some(l), &plain).expect("diff"));
        }
    });
    let both_rules = measure(rounds, || {
        for (d, l) in &pairs {
            black_box(checker.assess(black_box(l)));
            black_box(diff(Some(d), Some(l), &with_rules).expect("diff"));
        }
    });
    let desired: Vec<Value> = pairs.iter().map(|(d, _)| d.clone()).collect();
    let live: Vec<Value> = pairs.iter().map(|(_, l)| l.clone()).collect();
    let mut popts = PlanOptions::new("apps", "shop", "shop");
    popts.prune = true;
    let planned = measure(rounds, || {
        black_box(plan(&desired, &live, &popts).expect("plan"));
    });

    println!(
        "engine benchmark: {n} objects ({out_of_sync} out of sync), median of {rounds} rounds"
    );
    println!(
        "  health only                 {:>8.2} µs/object",
        per(health_only)
    );
    println!(
        "  diff only                   {:>8.2} µs/object",
        per(diff_only)
    );
    println!(
        "  health + diff               {:>8.2} µs/object   (target < 50)",
        per(both)
    );
    println!(
        "  health + diff, 3 ignore rules {:>6.2} µs/object",
        per(both_rules)
    );
    println!(
        "  sync plan                   {:>8.2} µs/object   ({:.1} ms for the set)",
        per(planned),
        planned.as_secs_f64() * 1e3
    );
}
