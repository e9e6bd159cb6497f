//! The apply module's cost per operation, and side by side in the same run, the cost of merely
//! cloning and serializing the same object, so the figures read as ratios on a noisy machine.
//!
//! Run: `cargo bench -p devcluster --bench apply`.

use std::hint::black_box;
use std::time::Instant;

use devcluster::apply::{ListHints, PatchKind, patch, record_update, server_side_apply};
use serde_json::{Value, json};

fn deployment(replicas: u64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web", "namespace": "shop",
            "labels": {"app": "web", "app.kubernetes.io/part-of": "shop", "capstan.dev/app": "shop"},
            "annotations": {"capstan.dev/tracking-id": "capstan_shop:apps/Deployment:shop/web"}
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {"prometheus.io/scrape": "true"}},
                "spec": {
                    "serviceAccountName": "web",
                    "containers": [
                        {
                            "name": "web",
                            "image": image,
                            "args": ["--port=8080", "--log=json"],
                            "ports": [{"containerPort": 8080, "name": "http"}, {"containerPort": 9090, "name": "metrics"}],
                            "env": [
                                {"name": "MODE", "value": "prod"},
                                {"name": "LOG", "value": "info"},
                                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                            ],
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5},
                            "volumeMounts": [{"name": "config", "mountPath": "/etc/web"}]
                        },
                        {"name": "sidecar", "image": "busybox:1.36", "args": ["sleep", "infinity"]}
                    ],
                    "volumes": [{"name": "config", "configMap": {"name": "web"}}]
                }
            }
        }
    })
}

fn time<F: FnMut() -> R, R>(iterations: u32, mut f: F) -> f64 {
    for _ in 0..iterations / 10 {
        black_box(f());
    }
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(f());
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations)
}

fn main() {
    let hints = ListHints::builtin("apps", "Deployment");
    let cfg = deployment(3, "nginx:1.25");
    let changed = deployment(4, "nginx:1.27");
    let t = "2026-01-01T00:00:00Z";
    let live = server_side_apply(&hints, None, &cfg, "capstan", false, t).expect("apply");
    let n = 20_000;

    let base = time(n, || serde_json::to_vec(&live.clone()).map(|v| v.len()));
    let create = time(n, || {
        server_side_apply(&hints, None, &cfg, "capstan", false, t)
    });
    let noop = time(n, || {
        server_side_apply(&hints, Some(&live), &cfg, "capstan", false, t)
    });
    let change = time(n, || {
        server_side_apply(&hints, Some(&live), &changed, "capstan", false, t)
    });
    let conflict = time(n, || {
        server_side_apply(&hints, Some(&live), &changed, "other", false, t)
    });
    let update = time(n, || {
        let mut new = changed.clone();
        record_update(&hints, Some(&live), &mut new, "kubectl-edit", None, t);
        new
    });
    let smp = time(n, || {
        patch(
            PatchKind::StrategicMerge,
            &hints,
            &live,
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}}}),
        )
    });

    println!(
        "apply module, typical Deployment ({} bytes of JSON), µs per operation:",
        live.to_string().len()
    );
    for (name, us) in [
        ("clone + serialize (baseline)", base),
        ("SSA create", create),
        ("SSA re-apply (no-op)", noop),
        ("SSA apply with changes", change),
        ("SSA conflict (2nd manager)", conflict),
        ("record_update", update),
        ("strategic merge patch", smp),
    ] {
        println!(
            "  {name:<30} {us:>8.2} µs  {:>6.1}x baseline  {:>9.0} ops/s",
            us / base,
            1e6 / us
        );
    }
}
