//! Diff of objects the way a real API server returns them: defaults, server metadata,
//! managedFields (with a `capstan` Apply entry) and status must not count as drift; real
//! changes and fields removed from Git must.

use capstan_engine::diff::{DiffOptions, DiffStatus, diff};
use serde_json::{Value, json};

fn load(name: &str) -> Value {
    let path = format!("{}/tests/data/diff/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// True when the diff has a removed (`-`) or added (`+`) line reading `text` once trimmed.
fn has_line(unified: &str, sign: char, text: &str) -> bool {
    unified.lines().any(|l| {
        l.starts_with(sign)
            && !l.starts_with("---")
            && !l.starts_with("+++")
            && l[1..].trim() == text
    })
}

fn container(obj: &mut Value) -> &mut Value {
    &mut obj["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn deployment_with_server_defaults_is_synced() {
    let desired = load("deployment-desired.yaml");
    let live = load("deployment-live.yaml");
    let d = diff(Some(&desired), Some(&live), &DiffOptions::default()).unwrap();
    assert_eq!(
        d.status,
        DiffStatus::Synced,
        "unexpected drift:\n{}",
        d.unified
    );
    assert_eq!(d.unified, "");
    assert_eq!((d.group.as_str(), d.kind.as_str()), ("apps", "Deployment"));
    assert_eq!((d.namespace.as_str(), d.name.as_str()), ("shop", "web"));
    // The compared live object holds only what the desired object says, in its spelling.
    assert_eq!(d.normalized_live, d.normalized_desired);
    let live_norm = d.normalized_live.unwrap();
    assert!(live_norm.get("status").is_none());
    assert!(live_norm["metadata"].get("managedFields").is_none());
    assert!(live_norm["spec"].get("revisionHistoryLimit").is_none());
}

#[test]
fn service_with_defaults_and_int_or_string_port_is_synced() {
    let desired = load("service-desired.yaml");
    let live = load("service-live.yaml");
    let d = diff(Some(&desired), Some(&live), &DiffOptions::default()).unwrap();
    assert_eq!(
        d.status,
        DiffStatus::Synced,
        "unexpected drift:\n{}",
        d.unified
    );
}

#[test]
fn changed_image_is_drift_and_shown() {
    let mut desired = load("deployment-desired.yaml");
    container(&mut desired)["image"] = json!("nginx:1.26");
    let live = load("deployment-live.yaml");
    let d = diff(Some(&desired), Some(&live), &DiffOptions::default()).unwrap();
    assert_eq!(d.status, DiffStatus::OutOfSync);
    assert!(
        has_line(&d.unified, '-', "image: nginx:1.25"),
        "{}",
        d.unified
    );
    assert!(
        has_line(&d.unified, '+', "image: nginx:1.26"),
        "{}",
        d.unified
    );
    assert!(
        d.unified.starts_with(
            "--- live apps/Deployment shop/web\n+++ desired apps/Deployment shop/web\n"
        ),
        "{}",
        d.unified
    );
    // Only the image line changes: defaults and status are not in the diff.
    let changed: Vec<&str> = d
        .unified
        .lines()
        .filter(|l| {
            (l.starts_with('-') || l.starts_with('+'))
                && !l.starts_with("---")
                && !l.starts_with("+++")
        })
        .collect();
    assert_eq!(changed.len(), 2, "{}", d.unified);
}

#[test]
fn hand_edited_live_value_is_drift() {
    let desired = load("deployment-desired.yaml");
    let mut live = load("deployment-live.yaml");
    live["spec"]["replicas"] = json!(5);
    let d = diff(Some(&desired), Some(&live), &DiffOptions::default()).unwrap();
    assert_eq!(d.status, DiffStatus::OutOfSync);
    assert!(
        has_line(&d.unified, '-', "replicas: 5") && has_line(&d.unified, '+', "replicas: 2"),
        "{}",
        d.unified
    );
}

#[test]
fn field_removed_from_git_that_capstan_applied_is_drift() {
    let mut desired = load("deployment-desired.yaml");
    let env = container(&mut desired)["env"].as_array_mut().unwrap();
    env.retain(|e| e["name"] != "FEATURE_X");
    let live = load("deployment-live.yaml");
    let d = diff(Some(&desired), Some(&live), &DiffOptions::default()).unwrap();
    assert_eq!(d.status, DiffStatus::OutOfSync);
    assert!(
        has_line(&d.unified, '-', "- name: FEATURE_X"),
        "{}",
        d.unified
    );
    assert!(
        !d.unified
            .lines()
            .any(|l| l.starts_with('+') && l.contains("FEATURE_X"))
    );

    // A removed label the manager owned is drift too.
    let mut desired = load("deployment-desired.yaml");
    desired["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("labels");
    let d = diff(Some(&desired), Some(&live), &DiffOptions::default()).unwrap();
    assert_eq!(d.status, DiffStatus::OutOfSync);
    assert!(has_line(&d.unified, '-', "app: web"), "{}", d.unified);
}

#[test]
fn removal_needs_ownership_by_our_manager_with_apply() {
    let mut desired = load("deployment-desired.yaml");
    let env = container(&mut desired)["env"].as_array_mut().unwrap();
    env.retain(|e| e["name"] != "FEATURE_X");
    let live = load("deployment-live.yaml");
    // Another field manager name: the env var is no longer "ours", so its absence is no drift.
    let other = DiffOptions::new(vec![], "someone-else").unwrap();
    let d = diff(Some(&desired), Some(&live), &other).unwrap();
    assert_eq!(d.status, DiffStatus::Synced, "{}", d.unified);
    // An Update (not Apply) entry of our manager does not count either.
    let mut live_update = live.clone();
    live_update["metadata"]["managedFields"][0]["operation"] = json!("Update");
    let d = diff(Some(&desired), Some(&live_update), &DiffOptions::default()).unwrap();
    assert_eq!(d.status, DiffStatus::Synced, "{}", d.unified);
}

#[test]
fn annotation_added_by_hand_is_not_drift_but_a_tracking_id_in_git_is_compared() {
    let desired = load("deployment-desired.yaml");
    let mut live = load("deployment-live.yaml");
    live["metadata"]["annotations"]["note"] = json!("edited by hand");
    let d = diff(Some(&desired), Some(&live), &DiffOptions::default()).unwrap();
    assert_eq!(d.status, DiffStatus::Synced, "{}", d.unified);

    let mut desired = load("deployment-desired.yaml");
    desired["metadata"]["annotations"] =
        json!({"capstan.dev/tracking-id": "other_app:apps/Deployment:shop/web"});
    let d = diff(Some(&desired), Some(&live), &DiffOptions::default()).unwrap();
    assert_eq!(d.status, DiffStatus::OutOfSync);
}

#[test]
fn missing_and_extraneous_objects() {
    let desired = load("deployment-desired.yaml");
    let live = load("deployment-live.yaml");
    let d = diff(Some(&desired), None, &DiffOptions::default()).unwrap();
    assert_eq!(d.status, DiffStatus::Missing);
    assert!(d.normalized_live.is_none());
    assert!(
        has_line(&d.unified, '+', "kind: Deployment"),
        "{}",
        d.unified
    );
    let d = diff(None, Some(&live), &DiffOptions::default()).unwrap();
    assert_eq!(d.status, DiffStatus::Extraneous);
    assert!(d.normalized_desired.is_none());
    assert!(
        has_line(&d.unified, '-', "kind: Deployment"),
        "{}",
        d.unified
    );
    assert!(!d.unified.contains("managedFields") && !d.unified.contains("resourceVersion"));
}

#[test]
fn bad_input_is_an_error_naming_the_problem() {
    let desired = load("deployment-desired.yaml");
    let service = load("service-live.yaml");
    let err = diff(Some(&desired), Some(&service), &DiffOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "desired apps/Deployment shop/web and live Service shop/web are different objects"
    );
    let err = diff(
        Some(&json!({"kind": "Deployment"})),
        None,
        &DiffOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "desired object is invalid: apiVersion is missing"
    );
    let err = diff(
        None,
        Some(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})),
        &DiffOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "live object is invalid: ConfigMap has no metadata.name"
    );
    assert!(diff(None, None, &DiffOptions::default()).is_err());
}
