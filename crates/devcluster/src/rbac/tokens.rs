//! Service-account tokens.
//!
//! - TokenRequest (`POST …/serviceaccounts/NAME/token`): a JWT-shaped token signed with
//!   HMAC-SHA256 by a key of the server (kept in the data directory, so tokens survive a
//!   restart). It names the service account's uid and expires; it stops working when the
//!   service account (or the object it is bound to) is deleted.
//! - Legacy Secrets of type `kubernetes.io/service-account-token` annotated
//!   `kubernetes.io/service-account.name`: a controller fills `data.token`, `data.ca.crt` and
//!   `data.namespace` (and the uid annotation) once the service account exists, as the
//!   kube-controller-manager's token controller does. The token is stored in the Secret, so it
//!   lives as long as the Secret.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use super::{SecretToken, service_account_info};
use crate::State;
use crate::api::{self, Op, Reply};
use crate::auth::{Attributes, UserInfo};
use crate::status::ApiError;
use crate::store::EventType;

const TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
const SA_NAME: &str = "kubernetes.io/service-account.name";
const SA_UID: &str = "kubernetes.io/service-account.uid";
const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The HMAC key that signs TokenRequest tokens.
pub struct SigningKey(ring::hmac::Key);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

fn random_hex(n: usize) -> String {
    use rand::Rng;
    let mut bytes = vec![0u8; n];
    rand::rng().fill(&mut bytes[..]);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl SigningKey {
    /// A fresh random key (in-memory clusters).
    pub fn random() -> SigningKey {
        SigningKey::from_secret(random_hex(32).as_bytes())
    }

    fn from_secret(secret: &[u8]) -> SigningKey {
        SigningKey(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret))
    }

    /// The key kept in `dir/sa-signing-key`, created on first use.
    pub fn in_dir(dir: &Path) -> Result<SigningKey, crate::Error> {
        let path = dir.join("sa-signing-key");
        match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => Ok(SigningKey::from_secret(t.trim().as_bytes())),
            Ok(_) => Err(crate::Error::Io {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the key file is empty",
                ),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = random_hex(32);
                crate::tls::write_atomically(&path, &secret)?;
                Ok(SigningKey::from_secret(secret.as_bytes()))
            }
            Err(source) => Err(crate::Error::Io { path, source }),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{payload}");
        let tag = ring::hmac::sign(&self.0, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The claims of a token this key signed, or `None`.
    fn verify(&self, token: &str) -> Option<Value> {
        let (signed, sig) = token.rsplit_once('.')?;
        let (_, payload) = signed.split_once('.')?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        ring::hmac::verify(&self.0, signed.as_bytes(), &sig).ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }
}

fn uid_of(state: &State, skey: &str, ns: &str, name: &str) -> Option<String> {
    let v = state.store.get(skey, ns, name)?.value().ok()?;
    v.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(String::from)
}

/// The user of a TokenRequest token that is valid now: signature, expiry, and the service
/// account (and bound object) still existing with the uid the token names.
pub(super) fn verify_bound(state: &State, key: &SigningKey, token: &str) -> Option<UserInfo> {
    let claims = key.verify(token)?;
    let exp = claims.get("exp").and_then(Value::as_i64)?;
    if exp <= chrono::Utc::now().timestamp() {
        return None;
    }
    let k8s = claims.get("kubernetes.io")?;
    let ns = k8s.get("namespace").and_then(Value::as_str)?;
    let sa = k8s.get("serviceaccount")?;
    let name = sa.get("name").and_then(Value::as_str)?;
    let uid = sa.get("uid").and_then(Value::as_str)?;
    if uid_of(state, "/serviceaccounts", ns, name).as_deref() != Some(uid) {
        return None;
    }
    for (field, skey) in [("pod", "/pods"), ("secret", "/secrets")] {
        if let Some(b) = k8s.get(field) {
            let bname = b.get("name").and_then(Value::as_str)?;
            let buid = b.get("uid").and_then(Value::as_str)?;
            if uid_of(state, skey, ns, bname).as_deref() != Some(buid) {
                return None;
            }
        }
    }
    Some(service_account_info(ns, name))
}

/// The token of a legacy token Secret and whom it belongs to, if the Secret is one and has
/// been filled.
pub(super) fn secret_token(ns: &str, obj: &Value) -> Option<(String, SecretToken)> {
    if obj.get("type").and_then(Value::as_str) != Some(TOKEN_TYPE) {
        return None;
    }
    let annotations = obj.pointer("/metadata/annotations")?;
    let sa = annotations.get(SA_NAME).and_then(Value::as_str)?;
    let token = obj.pointer("/data/token").and_then(Value::as_str)?;
    let token = String::from_utf8(STANDARD.decode(token).ok()?).ok()?;
    if token.is_empty() {
        return None;
    }
    Some((
        token,
        SecretToken {
            namespace: ns.to_string(),
            service_account: sa.to_string(),
            uid: annotations
                .get(SA_UID)
                .and_then(Value::as_str)
                .map(String::from),
        },
    ))
}

/// Serves `POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`: authorizes `create
/// serviceaccounts/token`, checks the service account (and the bound object), and answers an
/// `authentication.k8s.io/v1` TokenRequest with `status.token` and `expirationTimestamp`.
pub fn token_request(
    state: &State,
    user: &UserInfo,
    namespace: &str,
    name: &str,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let attrs = Attributes {
        user,
        verb: "create",
        group: "",
        resource: "serviceaccounts",
        subresource: "token",
        namespace,
        name,
    };
    if let Err(why) = state.authorizer.authorize(&attrs) {
        return Err(super::forbidden(&attrs, &why));
    }
    let req = super::proto::decode(content_type, body, super::proto::token_request)?;
    if !req.is_object() {
        return Err(ApiError::bad_request(
            "the TokenRequest must be a JSON object",
        ));
    }
    match req.get("kind").and_then(Value::as_str) {
        None | Some("TokenRequest") => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind of the object ({k}) does not match TokenRequest"
            )));
        }
    }
    let invalid = |field: &str, msg: String| invalid(name, field, msg);
    let spec = req.get("spec").cloned().unwrap_or_else(|| json!({}));
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => 3600,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| invalid("spec.expirationSeconds", "must be an integer".into()))?,
    };
    if expiration < 600 {
        return Err(invalid(
            "spec.expirationSeconds",
            "may not specify a duration less than 10 minutes".into(),
        ));
    }
    if expiration > 1 << 32 {
        return Err(invalid(
            "spec.expirationSeconds",
            "may not specify a duration larger than 2^32 seconds".into(),
        ));
    }
    let audiences: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => vec![DEFAULT_AUDIENCE.to_string()],
    };
    let sa_info = state
        .registry
        .get("", "v1", "serviceaccounts")
        .ok_or_else(|| ApiError::internal("serviceaccounts are not served"))?;
    let sa_uid = uid_of(state, "/serviceaccounts", namespace, name)
        .ok_or_else(|| ApiError::not_found(&sa_info, name))?;
    let now = chrono::Utc::now();
    let exp = now.timestamp() + expiration;
    let mut k8s = json!({
        "namespace": namespace,
        "serviceaccount": {"name": name, "uid": sa_uid},
    });
    if let Some(bound) = spec.get("boundObjectRef").filter(|b| !b.is_null()) {
        let kind = bound.get("kind").and_then(Value::as_str).unwrap_or("");
        let bname = bound.get("name").and_then(Value::as_str).unwrap_or("");
        let (field, skey, resource) = match kind {
            "Pod" => ("pod", "/pods", "pods"),
            "Secret" => ("secret", "/secrets", "secrets"),
            other => {
                return Err(invalid(
                    "spec.boundObjectRef.kind",
                    format!("Unsupported value: {other:?}: supported values: \"Pod\", \"Secret\""),
                ));
            }
        };
        let binfo = state
            .registry
            .get("", "v1", resource)
            .ok_or_else(|| ApiError::internal(format!("{resource} are not served")))?;
        let buid = uid_of(state, skey, namespace, bname)
            .ok_or_else(|| ApiError::not_found(&binfo, bname))?;
        if let Some(want) = bound.get("uid").and_then(Value::as_str)
            && !want.is_empty()
            && want != buid
        {
            return Err(ApiError::conflict(
                &binfo,
                bname,
                &format!(
                    "the UID in the bound object reference ({want}) does not match the UID in record ({buid})"
                ),
            ));
        }
        k8s[field] = json!({"name": bname, "uid": buid});
    }
    let claims = json!({
        "iss": ISSUER,
        "aud": audiences,
        "sub": super::service_account_user(namespace, name),
        "iat": now.timestamp(),
        "nbf": now.timestamp(),
        "exp": exp,
        "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": k8s,
    });
    // dryRun answers without a usable token, as the API server does.
    let dry_run = query.get("dryRun").is_some_and(|d| d == "All");
    let token = if dry_run {
        String::new()
    } else {
        state.rbac.signing.sign(&claims)
    };
    let expires = chrono::DateTime::from_timestamp(exp, 0)
        .unwrap_or(now)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut spec_out = spec;
    if !spec_out.is_object() {
        spec_out = json!({});
    }
    spec_out["audiences"] = json!(audiences);
    spec_out["expirationSeconds"] = json!(expiration);
    let body = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": api::now()},
        "spec": spec_out,
        "status": {"token": token, "expirationTimestamp": expires},
    });
    Ok(Reply {
        code: 201,
        body: bytes::Bytes::from(body.to_string()),
        warnings: Vec::new(),
        object: None,
    })
}

/// 422 Invalid for a TokenRequest field, worded as the API server words it.
fn invalid(name: &str, field: &str, message: String) -> ApiError {
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!(
            "TokenRequest.authentication.k8s.io \"{name}\" is invalid: {field}: {message}"
        ),
        details: Some(
            json!({"name": name, "group": "authentication.k8s.io", "kind": "TokenRequest",
            "causes": [{"reason": "FieldValueInvalid", "field": field, "message": message}]}),
        ),
    }
}

/// Starts the legacy token controller: fills token Secrets whose service account exists.
pub fn spawn_token_controller(state: Arc<State>, shutdown: watch::Receiver<bool>) {
    tokio::spawn(token_controller(state, shutdown));
}

async fn token_controller(state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let mut events = state.store.subscribe_all();
    fill_all(&state, None);
    loop {
        let ev = tokio::select! {
            e = events.recv() => e,
            _ = shutdown.changed() => return,
        };
        match ev {
            Ok(e) if e.kind != EventType::Deleted && &*e.key == "/secrets" => {
                fill_one(&state, &e.namespace, &e.name);
            }
            // A service account appearing lets its waiting Secrets be filled.
            Ok(e) if e.kind == EventType::Added && &*e.key == "/serviceaccounts" => {
                fill_all(&state, Some(&e.namespace));
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => fill_all(&state, None),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn fill_all(state: &State, ns: Option<&str>) {
    let (_, items, _) = state.store.list("/secrets", ns, None, None, &|_, _, b| {
        // A cheap pre-filter before parsing: only token Secrets matter.
        b.windows(TOKEN_TYPE.len())
            .any(|w| w == TOKEN_TYPE.as_bytes())
    });
    for st in items {
        let Ok(v) = st.value() else { continue };
        let ns = v
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = v
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        fill_one(state, &ns, &name);
    }
}

/// Fills one token Secret if it needs it; a conflict means it changed, and its change event
/// brings it back here.
fn fill_one(state: &State, ns: &str, name: &str) {
    let Some(st) = state.store.get("/secrets", ns, name) else {
        return;
    };
    let Ok(mut obj) = st.value() else { return };
    if obj.get("type").and_then(Value::as_str) != Some(TOKEN_TYPE)
        || obj.pointer("/metadata/deletionTimestamp").is_some()
    {
        return;
    }
    let Some(sa) = obj
        .pointer(&format!(
            "/metadata/annotations/{}",
            SA_NAME.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .map(String::from)
    else {
        return;
    };
    let Some(uid) = uid_of(state, "/serviceaccounts", ns, &sa) else {
        return;
    };
    let has_token = obj
        .pointer("/data/token")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    if has_token {
        return;
    }
    if !obj.get("data").is_some_and(Value::is_object) {
        obj["data"] = json!({});
    }
    obj["data"]["token"] = json!(STANDARD.encode(random_hex(32)));
    obj["data"]["ca.crt"] = json!(STANDARD.encode(&state.rbac.ca_pem));
    obj["data"]["namespace"] = json!(STANDARD.encode(ns));
    obj["metadata"]["annotations"][SA_UID] = json!(uid);
    let Some(info) = state.registry.get("", "v1", "secrets") else {
        return;
    };
    let op = Op {
        info,
        namespace: Some(ns.to_string()),
        name: Some(name.to_string()),
        subresource: None,
        query: HashMap::new(),
        manager: "kube-controller-manager".into(),
        manager_explicit: true,
    };
    if let Err(e) = api::update(state, &op, obj) {
        tracing::debug!(
            namespace = ns,
            name,
            code = e.code,
            "token secret not filled: {}",
            e.reason
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked() {
        let k = SigningKey::random();
        let t = k.sign(&json!({"a": 1}));
        assert_eq!(k.verify(&t), Some(json!({"a": 1})));
        let other = SigningKey::random();
        assert_eq!(other.verify(&t), None, "another key's token is refused");
        let (head, _) = t.rsplit_once('.').unwrap();
        let forged = format!(
            "{}.{}.{}",
            head.split('.').next().unwrap(),
            URL_SAFE_NO_PAD.encode(r#"{"a":2}"#),
            t.rsplit('.').next().unwrap()
        );
        assert_eq!(k.verify(&forged), None, "a changed payload is refused");
    }

    #[test]
    fn key_survives_in_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let a = SigningKey::in_dir(dir.path()).unwrap();
        let b = SigningKey::in_dir(dir.path()).unwrap();
        let t = a.sign(&json!({"x": true}));
        assert!(b.verify(&t).is_some());
    }
}
