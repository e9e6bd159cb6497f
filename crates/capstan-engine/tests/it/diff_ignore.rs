//! `ignoreDifferences`: each form (JSON pointers, jq paths, managed-fields managers) and the
//! object selection (group, kind, name, namespace).

use capstan_engine::diff::{DiffError, DiffOptions, DiffStatus, IgnoreDifference, diff};
use serde_json::{Value, json};

fn load(name: &str) -> Value {
    let path = format!("{}/tests/data/diff/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn rule(v: Value) -> IgnoreDifference {
    serde_json::from_value(v).expect("rule")
}

fn opts(rules: Vec<IgnoreDifference>) -> DiffOptions {
    DiffOptions::new(rules, "capstan").expect("rules compile")
}

/// Live has 5 replicas set by hand and a changed image: two drifts to ignore one at a time.
fn drifted_pair() -> (Value, Value) {
    let desired = load("deployment-desired.yaml");
    let mut live = load("deployment-live.yaml");
    live["spec"]["replicas"] = json!(5);
    live["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:hotfix");
    (desired, live)
}

#[test]
fn json_pointers_remove_fields_from_both_sides() {
    let (desired, live) = drifted_pair();
    let only_replicas = opts(vec![rule(
        json!({"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]}),
    )]);
    let d = diff(Some(&desired), Some(&live), &only_replicas).unwrap();
    assert_eq!(d.status, DiffStatus::OutOfSync, "the image still differs");
    assert!(!d.unified.contains("replicas"), "{}", d.unified);

    let both = opts(vec![rule(json!({"group": "apps", "kind": "Deployment",
        "jsonPointers": ["/spec/replicas", "/spec/template/spec/containers/0/image"]}))]);
    let d = diff(Some(&desired), Some(&live), &both).unwrap();
    assert_eq!(d.status, DiffStatus::Synced, "{}", d.unified);
}

#[test]
fn jq_path_expressions_select_fields_by_content() {
    let (desired, mut live) = drifted_pair();
    live["spec"]["replicas"] = json!(2);
    let r = opts(vec![rule(json!({"group": "apps", "kind": "Deployment",
        "jqPathExpressions": [".spec.template.spec.containers[] | select(.name == \"web\") | .image"]}))]);
    let d = diff(Some(&desired), Some(&live), &r).unwrap();
    assert_eq!(d.status, DiffStatus::Synced, "{}", d.unified);

    // The same expression for another container name ignores nothing.
    let r = opts(vec![rule(json!({"group": "apps", "kind": "Deployment",
        "jqPathExpressions": [".spec.template.spec.containers[] | select(.name == \"sidecar\") | .image"]}))]);
    let d = diff(Some(&desired), Some(&live), &r).unwrap();
    assert_eq!(d.status, DiffStatus::OutOfSync);
}

#[test]
fn managed_fields_managers_ignore_what_they_own() {
    let (desired, mut live) = drifted_pair();
    live["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.25");
    // An HPA scaled the Deployment through the scale subresource.
    live["metadata"]["managedFields"]
        .as_array_mut()
        .unwrap()
        .push(json!({
            "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "manager": "kube-controller-manager",
            "operation": "Update", "subresource": "scale", "time": "2026-11-20T10:00:00Z",
            "fieldsV1": {"f:spec": {"f:replicas": {}}}
        }));
    let d = diff(Some(&desired), Some(&live), &DiffOptions::default()).unwrap();
    assert_eq!(d.status, DiffStatus::OutOfSync);
    let r = opts(vec![rule(json!({"group": "apps", "kind": "Deployment",
        "managedFieldsManagers": ["kube-controller-manager"]}))]);
    let d = diff(Some(&desired), Some(&live), &r).unwrap();
    assert_eq!(d.status, DiffStatus::Synced, "{}", d.unified);
    // A manager that owns nothing relevant ignores nothing.
    let r = opts(vec![rule(
        json!({"group": "apps", "kind": "Deployment", "managedFieldsManagers": ["kubectl-edit"]}),
    )]);
    assert_eq!(
        diff(Some(&desired), Some(&live), &r).unwrap().status,
        DiffStatus::OutOfSync
    );
}

#[test]
fn rules_apply_only_to_matching_objects() {
    let (desired, mut live) = drifted_pair();
    live["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.25");
    let pointer = json!(["/spec/replicas"]);
    let cases = [
        (
            json!({"group": "apps", "kind": "Deployment", "jsonPointers": pointer}),
            true,
        ),
        (
            json!({"group": "apps", "kind": "Deployment", "name": "web", "namespace": "shop", "jsonPointers": pointer}),
            true,
        ),
        (
            json!({"group": "*", "kind": "*", "jsonPointers": pointer}),
            true,
        ),
        (
            json!({"group": "apps", "kind": "Deployment", "name": "other", "jsonPointers": pointer}),
            false,
        ),
        (
            json!({"group": "apps", "kind": "Deployment", "namespace": "prod", "jsonPointers": pointer}),
            false,
        ),
        (
            json!({"group": "", "kind": "Deployment", "jsonPointers": pointer}),
            false,
        ),
        (
            json!({"group": "apps", "kind": "StatefulSet", "jsonPointers": pointer}),
            false,
        ),
    ];
    for (r, applies) in cases {
        let d = diff(Some(&desired), Some(&live), &opts(vec![rule(r.clone())])).unwrap();
        let expected = if applies {
            DiffStatus::Synced
        } else {
            DiffStatus::OutOfSync
        };
        assert_eq!(d.status, expected, "rule {r}");
    }
}

#[test]
fn unusable_rules_are_refused_when_compiled() {
    let err = DiffOptions::new(
        vec![
            rule(
                json!({"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]}),
            ),
            rule(json!({"group": "apps", "kind": "Deployment", "jsonPointers": ["spec.replicas"]})),
        ],
        "capstan",
    )
    .unwrap_err();
    assert!(
        matches!(err, DiffError::IgnoreRule { index: 1, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("ignoreDifferences[1] (Deployment): jsonPointers \"spec.replicas\""),
        "{err}"
    );

    let err = DiffOptions::new(
        vec![rule(
            json!({"kind": "Deployment", "jqPathExpressions": [".spec | frobnicate"]}),
        )],
        "capstan",
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("jqPathExpressions \".spec | frobnicate\": undefined"),
        "{err}"
    );
}

#[test]
fn rules_read_argo_cd_field_names() {
    let yaml = "group: apps\nkind: Deployment\njsonPointers: [/spec/replicas]\njqPathExpressions: ['.spec.paused']\nmanagedFieldsManagers: [kube-controller-manager]\n";
    let r: IgnoreDifference = serde_yaml_ng::from_str(yaml).unwrap();
    assert_eq!(r.json_pointers, vec!["/spec/replicas"]);
    assert_eq!(r.jq_path_expressions, vec![".spec.paused"]);
    assert_eq!(r.managed_fields_managers, vec!["kube-controller-manager"]);
}
