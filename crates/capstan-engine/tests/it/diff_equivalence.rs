//! Values the API server treats as equal must not count as drift; values it does not must.

use capstan_engine::diff::{DiffOptions, DiffStatus, diff};
use serde_json::{Value, json};

fn pod_with(resources: Value, extra_spec: Value) -> Value {
    let mut spec =
        json!({"containers": [{"name": "app", "image": "busybox", "resources": resources}]});
    for (k, v) in extra_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}, "spec": spec})
}

fn status(desired: &Value, live: &Value) -> DiffStatus {
    let d = diff(Some(desired), Some(live), &DiffOptions::default()).unwrap();
    assert_eq!(
        d.status == DiffStatus::Synced,
        d.unified.is_empty(),
        "{}",
        d.unified
    );
    d.status
}

#[test]
fn quantities_compare_by_value() {
    for (desired, live) in [
        (
            json!({"limits": {"cpu": "1000m"}}),
            json!({"limits": {"cpu": "1"}}),
        ),
        (
            json!({"limits": {"memory": "1Gi"}}),
            json!({"limits": {"memory": "1024Mi"}}),
        ),
        (
            json!({"requests": {"cpu": 0.5}}),
            json!({"requests": {"cpu": "500m"}}),
        ),
        (
            json!({"requests": {"cpu": 2}}),
            json!({"requests": {"cpu": "2"}}),
        ),
        (
            json!({"requests": {"ephemeral-storage": "1e9"}}),
            json!({"requests": {"ephemeral-storage": "1G"}}),
        ),
    ] {
        assert_eq!(
            status(
                &pod_with(desired.clone(), json!({})),
                &pod_with(live, json!({}))
            ),
            DiffStatus::Synced,
            "{desired}"
        );
    }
    for (desired, live) in [
        (
            json!({"limits": {"memory": "1G"}}),
            json!({"limits": {"memory": "1Gi"}}),
        ),
        (
            json!({"requests": {"cpu": "100m"}}),
            json!({"requests": {"cpu": "1"}}),
        ),
    ] {
        assert_eq!(
            status(
                &pod_with(desired.clone(), json!({})),
                &pod_with(live, json!({}))
            ),
            DiffStatus::OutOfSync,
            "{desired}"
        );
    }
}

#[test]
fn quantity_spelling_in_non_quantity_fields_is_drift() {
    let desired = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"cpu": "1000m"}});
    let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"cpu": "1"}});
    assert_eq!(status(&desired, &live), DiffStatus::OutOfSync);
}

#[test]
fn int_or_string_fields_accept_both_spellings() {
    let deploy = |max_surge: Value, port: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"strategy": {"rollingUpdate": {"maxSurge": max_surge}},
                "template": {"spec": {"containers": [{"name": "a", "ports": [{"containerPort": port}]}]}}}})
    };
    assert_eq!(
        status(
            &deploy(json!("1"), json!("80")),
            &deploy(json!(1), json!(80))
        ),
        DiffStatus::Synced
    );
    assert_eq!(
        status(&deploy(json!(1), json!(80)), &deploy(json!("1"), json!(80))),
        DiffStatus::Synced
    );
    assert_eq!(
        status(
            &deploy(json!("25%"), json!(80)),
            &deploy(json!(25), json!(80))
        ),
        DiffStatus::OutOfSync
    );
    assert_eq!(
        status(&deploy(json!(1), json!(80)), &deploy(json!(1), json!(81))),
        DiffStatus::OutOfSync
    );
}

#[test]
fn empty_and_absent_maps_and_lists_are_equal() {
    let desired = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "labels": {}, "annotations": {}, "finalizers": []}, "data": {"a": "1"}});
    let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
    assert_eq!(status(&desired, &live), DiffStatus::Synced);
    // And a non-empty map in Git that the cluster lacks is drift.
    let desired = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "labels": {"team": "a"}}, "data": {"a": "1"}});
    assert_eq!(status(&desired, &live), DiffStatus::OutOfSync);
}

#[test]
fn status_is_ignored_unless_the_kind_is_declared_status_bearing() {
    let desired = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"size": 1}, "status": {"phase": "Ready"}});
    let live = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"size": 1}, "status": {"phase": "Pending"}});
    assert_eq!(status(&desired, &live), DiffStatus::Synced);
    let opts = DiffOptions::default().compare_status_of("example.com", "Widget");
    let d = diff(Some(&desired), Some(&live), &opts).unwrap();
    assert_eq!(d.status, DiffStatus::OutOfSync);
}

#[test]
fn reordered_containers_and_sidecars_added_by_others_are_not_drift() {
    let desired = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
    let live = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "istio-proxy", "image": "proxy"}, {"name": "b", "image": "y"}, {"name": "a", "image": "x"}]}});
    assert_eq!(status(&desired, &live), DiffStatus::Synced);
    // But a desired container the cluster lacks is drift.
    let live = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "image": "x"}]}});
    assert_eq!(status(&desired, &live), DiffStatus::OutOfSync);
}

#[test]
fn atomic_lists_compare_whole() {
    let pod = |args: Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "args": args}]}})
    };
    assert_eq!(
        status(&pod(json!(["--a", "--b"])), &pod(json!(["--a", "--b"]))),
        DiffStatus::Synced
    );
    assert_eq!(
        status(&pod(json!(["--a"])), &pod(json!(["--a", "--b"]))),
        DiffStatus::OutOfSync
    );
    assert_eq!(
        status(&pod(json!(["--b", "--a"])), &pod(json!(["--a", "--b"]))),
        DiffStatus::OutOfSync
    );
}
