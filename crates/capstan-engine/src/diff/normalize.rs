//! Normalization applied to both sides before comparing, and Secret masking applied after.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use capstan_api::annotations;
use serde_json::{Map, Value};

/// Metadata fields the API server sets; they never express intent.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
];

/// Annotation `kubectl apply` writes (client-side apply); it may hold a copy of Secret data.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A copy of `obj` without the parts [`strip`] would drop at once (status, server metadata),
/// so the bulky ones (managedFields, status) are never cloned.
pub(crate) fn clone_for_compare(obj: &Value, keep_status: bool) -> Value {
    let Value::Object(map) = obj else {
        return obj.clone();
    };
    let mut out = Map::with_capacity(map.len());
    for (k, v) in map {
        match (k.as_str(), v) {
            ("status", _) if !keep_status => {}
            ("metadata", Value::Object(meta)) => {
                let mut m = Map::with_capacity(meta.len());
                for (mk, mv) in meta {
                    if !SERVER_METADATA.contains(&mk.as_str()) {
                        m.insert(mk.clone(), mv.clone());
                    }
                }
                out.insert(k.clone(), Value::Object(m));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// Removes server-set metadata, the last-applied annotation, the tracking annotations (unless
/// `keep_tracking`), and `status` (unless `keep_status`).
pub(crate) fn strip(obj: &mut Value, keep_tracking: bool, keep_status: bool) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    if !keep_status {
        map.shift_remove("status");
    }
    let Some(Value::Object(meta)) = map.get_mut("metadata") else {
        return;
    };
    for field in SERVER_METADATA {
        meta.shift_remove(*field);
    }
    if let Some(Value::Object(ann)) = meta.get_mut("annotations") {
        ann.shift_remove(LAST_APPLIED);
        if !keep_tracking {
            ann.shift_remove(annotations::TRACKING_ID);
            ann.shift_remove(annotations::ARGOCD_TRACKING_ID);
        }
        if ann.is_empty() {
            meta.shift_remove("annotations");
        }
    }
}

/// A Secret whose data cannot be read; names the key, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecretProblem {
    /// `data` or `stringData` is not a map.
    NotAMap(&'static str),
    /// A `stringData` value is not a string.
    StringDataNotString(String),
    /// A `data` value is not valid base64.
    DataNotBase64(String),
}

/// True for a core-group Secret.
pub(crate) fn is_secret(obj: &Value) -> bool {
    obj.get("kind").and_then(Value::as_str) == Some("Secret")
        && obj.get("apiVersion").and_then(Value::as_str) == Some("v1")
}

/// Folds `stringData` into `data` (base64, `stringData` wins, as the API server does) and brings
/// every `data` value to canonical base64, so both sides compare byte for byte.
pub(crate) fn fold_secret(obj: &mut Value) -> Result<(), SecretProblem> {
    let Some(map) = obj.as_object_mut() else {
        return Ok(());
    };
    let mut data = match map.shift_remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(SecretProblem::NotAMap("data")),
    };
    for (key, value) in data.iter_mut() {
        let Value::String(s) = value else {
            return Err(SecretProblem::DataNotBase64(key.clone()));
        };
        let bytes = STANDARD
            .decode(s.as_bytes())
            .map_err(|_| SecretProblem::DataNotBase64(key.clone()))?;
        *s = STANDARD.encode(bytes);
    }
    match map.shift_remove("stringData") {
        None | Some(Value::Null) => {}
        Some(Value::Object(sd)) => {
            for (key, value) in sd {
                let Value::String(s) = value else {
                    return Err(SecretProblem::StringDataNotString(key));
                };
                data.insert(key, Value::String(STANDARD.encode(s.as_bytes())));
            }
        }
        Some(_) => return Err(SecretProblem::NotAMap("stringData")),
    }
    if !data.is_empty() {
        map.insert("data".to_string(), Value::Object(data));
    }
    Ok(())
}

/// The placeholder for the `n`-th distinct value of one key: [`super::SECRET_MASK`], then one
/// `+` more per distinct value.
fn token(n: usize) -> String {
    format!("{}{}", super::SECRET_MASK, "+".repeat(n))
}

/// Replaces every Secret value on both sides by a placeholder. Per key, equal values get the
/// same placeholder and different values different ones, so a diff still shows which keys
/// changed but never what they hold. Tokens are per key, so they do not reveal that two keys
/// share a value either.
pub(crate) fn mask_secrets(desired: Option<&mut Value>, live: Option<&mut Value>) {
    let desired_data = desired.and_then(data_map);
    let live_data = live.and_then(data_map);
    match (desired_data, live_data) {
        (Some(d), Some(l)) => {
            for (key, lv) in l.iter_mut() {
                let same = d.get(key).is_none_or(|dv| dv == lv);
                *lv = Value::String(token(usize::from(!same)));
            }
            for dv in d.values_mut() {
                *dv = Value::String(token(0));
            }
        }
        (Some(one), None) | (None, Some(one)) => {
            for v in one.values_mut() {
                *v = Value::String(token(0));
            }
        }
        (None, None) => {}
    }
}

fn data_map(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    if !is_secret(obj) {
        return None;
    }
    let map = obj.as_object_mut()?;
    // Anything left in stringData (a Secret that was never folded) is masked too.
    if let Some(Value::Object(sd)) = map.get_mut("stringData") {
        for v in sd.values_mut() {
            *v = Value::String(token(0));
        }
    }
    match map.get_mut("data") {
        Some(Value::Object(m)) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_data_folds_into_data_and_wins() {
        let mut s = json!({"apiVersion": "v1", "kind": "Secret",
            "data": {"a": "b2xk", "b": "eA=="}, "stringData": {"a": "new"}});
        fold_secret(&mut s).unwrap();
        assert_eq!(s["data"], json!({"a": "bmV3", "b": "eA=="}));
        assert!(s.get("stringData").is_none());
    }

    #[test]
    fn bad_secret_data_names_the_key_only() {
        let mut s = json!({"apiVersion": "v1", "kind": "Secret", "data": {"k": "not base64!"}});
        assert_eq!(
            fold_secret(&mut s),
            Err(SecretProblem::DataNotBase64("k".into()))
        );
    }

    #[test]
    fn masking_keeps_which_keys_changed() {
        let mut d = json!({"apiVersion": "v1", "kind": "Secret", "data": {"same": "YQ==", "changed": "Yg=="}});
        let mut l = json!({"apiVersion": "v1", "kind": "Secret", "data": {"same": "YQ==", "changed": "Yw==", "gone": "ZA=="}});
        mask_secrets(Some(&mut d), Some(&mut l));
        assert_eq!(
            d["data"],
            json!({"same": "++++++++", "changed": "++++++++"})
        );
        assert_eq!(
            l["data"],
            json!({"same": "++++++++", "changed": "+++++++++", "gone": "++++++++"})
        );
    }
}
