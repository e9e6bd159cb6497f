//! Secret values never leave the diff: not in the unified diff, not in the JSON result, not in
//! debug output, not in error messages. A canary value proves it.

use capstan_engine::diff::{DiffOptions, DiffStatus, ObjectDiff, diff};
use serde_json::{Value, json};

const CANARY: &str = "canary-Zq81vT0p";

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Every rendering of a result a user or a log could see.
fn all_outputs(d: &ObjectDiff) -> String {
    format!(
        "{}\n{}\n{:?}",
        d.unified,
        serde_json::to_string(d).unwrap(),
        d
    )
}

fn assert_no_canary(text: &str) {
    assert!(!text.contains(CANARY), "canary leaked:\n{text}");
    assert!(
        !text.contains(&b64(CANARY)),
        "base64 canary leaked:\n{text}"
    );
    // The base64 of the canary inside a longer value shifts alignment; check the raw bytes'
    // distinctive middle too.
    assert!(
        !text.contains("Zq81vT0p"),
        "canary fragment leaked:\n{text}"
    );
}

fn secret(data: Value, string_data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "db", "namespace": "shop",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration":
                format!("{{\"stringData\":{{\"password\":\"{CANARY}\"}}}}")}},
        "data": data, "stringData": string_data})
}

#[test]
fn changed_secret_value_shows_the_key_never_the_value() {
    let desired = secret(
        json!({"user": b64("admin")}),
        json!({"password": CANARY, "token": "t1"}),
    );
    let live = secret(
        json!({"user": b64("admin"), "password": b64("old-value"), "token": b64("t1")}),
        Value::Null,
    );
    let d = diff(Some(&desired), Some(&live), &DiffOptions::default()).unwrap();
    assert_eq!(d.status, DiffStatus::OutOfSync);
    assert_no_canary(&all_outputs(&d));
    assert!(!all_outputs(&d).contains("old-value") && !all_outputs(&d).contains(&b64("old-value")));
    // Changed key: different placeholders on each side; unchanged keys: no diff line.
    assert!(
        d.unified.contains("-  password: +++++++++"),
        "{}",
        d.unified
    );
    assert!(d.unified.contains("+  password: ++++++++"), "{}", d.unified);
    assert!(
        !d.unified
            .lines()
            .any(|l| (l.starts_with('-') || l.starts_with('+')) && l.contains("user")),
        "{}",
        d.unified
    );
    assert!(
        !d.unified
            .lines()
            .any(|l| (l.starts_with('-') || l.starts_with('+')) && l.contains("token:")),
        "{}",
        d.unified
    );
}

#[test]
fn string_data_equal_to_live_data_is_synced_and_masked() {
    let desired = secret(Value::Null, json!({"password": CANARY}));
    let live = secret(json!({"password": b64(CANARY)}), Value::Null);
    let d = diff(Some(&desired), Some(&live), &DiffOptions::default()).unwrap();
    assert_eq!(d.status, DiffStatus::Synced, "{}", d.unified);
    assert_no_canary(&all_outputs(&d));
    assert_eq!(
        d.normalized_desired.as_ref().unwrap()["data"]["password"],
        "++++++++"
    );
    assert_eq!(
        d.normalized_live.as_ref().unwrap()["data"]["password"],
        "++++++++"
    );
}

#[test]
fn missing_and_extraneous_secrets_are_masked() {
    let desired = secret(json!({"a": b64(CANARY)}), json!({"b": CANARY}));
    let d = diff(Some(&desired), None, &DiffOptions::default()).unwrap();
    assert_eq!(d.status, DiffStatus::Missing);
    assert_no_canary(&all_outputs(&d));
    assert!(d.unified.contains("+  b: ++++++++"), "{}", d.unified);
    let live = secret(json!({"a": b64(CANARY)}), Value::Null);
    let d = diff(None, Some(&live), &DiffOptions::default()).unwrap();
    assert_eq!(d.status, DiffStatus::Extraneous);
    assert_no_canary(&all_outputs(&d));
}

#[test]
fn removed_secret_key_is_drift_and_masked() {
    let desired = secret(json!({"a": b64("x")}), Value::Null);
    let mut live = secret(json!({"a": b64("x"), "old": b64(CANARY)}), Value::Null);
    live["metadata"]["managedFields"] = json!([{"manager": "capstan", "operation": "Apply",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}, "f:old": {}}}}]);
    let d = diff(Some(&desired), Some(&live), &DiffOptions::default()).unwrap();
    assert_eq!(d.status, DiffStatus::OutOfSync);
    assert!(d.unified.contains("-  old: ++++++++"), "{}", d.unified);
    assert_no_canary(&all_outputs(&d));
}

#[test]
fn malformed_secret_errors_name_the_key_not_the_value() {
    let desired = secret(json!({"password": format!("{CANARY}!!")}), Value::Null);
    let err = diff(Some(&desired), None, &DiffOptions::default()).unwrap_err();
    let text = format!("{err} {err:?}");
    assert_no_canary(&text);
    assert_eq!(
        err.to_string(),
        "desired Secret shop/db: data key \"password\" is not valid base64"
    );
    let desired = secret(Value::Null, json!({"port": 5432}));
    let err = diff(Some(&desired), None, &DiffOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "desired Secret shop/db: stringData key \"port\" is not a string"
    );
}
