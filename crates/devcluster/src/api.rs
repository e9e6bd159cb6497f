//! The verbs of the REST API with Kubernetes semantics, independent of HTTP: handlers in
//! `server.rs` parse a request into an [`Op`] and these functions do the work. Internal callers
//! (controllers) use the same functions, so every write goes through one path.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::State;
use crate::apply::{self, ApplyError, PatchKind};
use crate::registry::{ResourceInfo, resources_from_crd};
use crate::status::{ApiError, Cause, cause};
use crate::store::{Expect, StoreError, Stored, into_view};
use crate::validation::{FieldSelector, LabelSelector, check_name};

/// Maximum number of times a read-modify-write is retried when the object changed under it.
const MAX_RETRIES: usize = 16;

/// The parameters of one request that the verbs need.
pub struct Op {
    /// The resource.
    pub info: Arc<ResourceInfo>,
    /// Namespace from the path (None for cluster-scoped or all-namespaces requests).
    pub namespace: Option<String>,
    /// Name from the path.
    pub name: Option<String>,
    /// Subresource from the path ("status", "scale").
    pub subresource: Option<String>,
    /// Decoded query parameters.
    pub query: HashMap<String, String>,
    /// Field manager to record (from `fieldManager` or the User-Agent).
    pub manager: String,
    /// Whether the manager was named explicitly by the client.
    pub manager_explicit: bool,
}

/// A successful answer: status code, JSON body and warnings.
pub struct Reply {
    /// HTTP status code.
    pub code: u16,
    /// Body (JSON).
    pub body: Bytes,
    /// `Warning` headers to send.
    pub warnings: Vec<String>,
    /// After a create, update or patch of the main resource or its status: the object as
    /// stored but without `metadata.managedFields`, so that in-process callers (the simulated
    /// controllers) need not parse `body`. It is `body` parsed (less managedFields), except for
    /// types served in another form than stored (several versions of a CRD, events.k8s.io).
    pub object: Option<Arc<Value>>,
}

impl Reply {
    fn new(code: u16, body: Bytes) -> Reply {
        Reply {
            code,
            body,
            warnings: Vec::new(),
            object: None,
        }
    }

    fn with_object(code: u16, body: Bytes, object: Arc<Value>) -> Reply {
        Reply {
            object: Some(object),
            ..Reply::new(code, body)
        }
    }
}

impl Op {
    fn dry_run(&self) -> bool {
        self.query.get("dryRun").is_some_and(|v| v == "All")
    }

    fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    fn validation(&self) -> Result<&str, ApiError> {
        match self.query.get("fieldValidation").map(String::as_str) {
            None | Some("") => Ok("Warn"),
            Some(v @ ("Ignore" | "Warn" | "Strict")) => Ok(v),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other:?} (supported: Ignore, Warn, Strict)"
            ))),
        }
    }
}

/// Now, as Kubernetes writes timestamps (RFC 3339, seconds, UTC).
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn store_err(info: &ResourceInfo, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::AlreadyExists => ApiError::already_exists(info, name),
        StoreError::NotFound => ApiError::not_found(info, name),
        StoreError::Conflict => ApiError::conflict(
            info,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ),
        StoreError::Persist(m) | StoreError::Corrupt(m) => ApiError::internal(m),
    }
}

fn corrupt(e: StoreError) -> ApiError {
    ApiError::internal(e.to_string())
}

fn apply_err(info: &ResourceInfo, name: &str, e: ApplyError) -> ApiError {
    match e {
        ApplyError::BadPatch(m) => ApiError::bad_request(m),
        ApplyError::Invalid(m) => ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{} \"{name}\" is invalid: {m}", info.kind),
            details: Some(json!({"name": name, "kind": info.kind, "group": info.group,
                "causes": [{"reason": "FieldValueInvalid", "message": m}]})),
        },
        ApplyError::Conflict(conflicts) => {
            let message = apply::conflict_message(&conflicts);
            let causes = conflicts
                .iter()
                .map(|c| Cause {
                    reason: "FieldManagerConflict",
                    field: c.field.clone(),
                    message: c.cause_message(),
                })
                .collect();
            ApiError::conflict_message(info, name, message, causes)
        }
    }
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    // Invariant: the line above made metadata an object.
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj)?.get(field)?.as_str()
}

/// Decodes a request body: JSON, or YAML for apply patches and YAML content types.
pub fn decode_body(body: &[u8], content_type: &str) -> Result<Value, ApiError> {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let yaml = essence.ends_with("yaml");
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let value: Value = if yaml {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("the request body is not valid UTF-8"))?;
        serde_yaml_ng::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))?
    };
    Ok(value)
}

/// Checks that a body is an object of the path's kind; fills in apiVersion/kind when absent.
fn check_kind(op: &Op, obj: &mut Value) -> Result<(), ApiError> {
    let info = &op.info;
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let want_av = info.api_version();
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), json!(info.kind));
        }
        Some(k) if k == info.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind of the object ({k}) does not match the kind on the URL ({})",
                info.kind
            )));
        }
    }
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), json!(want_av));
        }
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version of the object ({av}) does not match the API version on the URL ({want_av})"
            )));
        }
    }
    if let Some(m) = map.get("metadata")
        && !m.is_object()
        && !m.is_null()
    {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    Ok(())
}

/// Checks the body's namespace against the path's; sets it when absent.
fn check_namespace(op: &Op, obj: &mut Value) -> Result<(), ApiError> {
    let path_ns = op.ns().to_string();
    let m = meta_mut(obj);
    if !op.info.namespaced {
        m.remove("namespace");
        return Ok(());
    }
    match m.get("namespace").and_then(Value::as_str) {
        None | Some("") => {
            m.insert("namespace".into(), json!(path_ns));
        }
        Some(ns) if ns == path_ns => {}
        Some(ns) => {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({ns}) does not match the namespace sent on the request ({path_ns})"
            )));
        }
    }
    Ok(())
}

fn unknown_fields(op: &Op, obj: &Value) -> Result<Vec<String>, ApiError> {
    let mode = op.validation()?;
    let Some(allowed) = &op.info.top_level_fields else {
        return Ok(Vec::new());
    };
    let unknown: Vec<String> = obj
        .as_object()
        .map(|m| {
            m.keys()
                .filter(|k| !k.starts_with('$') && !allowed.iter().any(|a| a == *k))
                .map(|k| format!("unknown field \"{k}\""))
                .collect()
        })
        .unwrap_or_default();
    match mode {
        "Strict" if !unknown.is_empty() => Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            unknown.join(", ")
        ))),
        "Ignore" => Ok(Vec::new()),
        _ => Ok(unknown),
    }
}

fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Whether two versions of an object differ in more than metadata, status, apiVersion and
/// kind (what bumps `metadata.generation`). Compared in place: this runs on every update.
fn spec_changed(old: &Value, new: &Value) -> bool {
    const IGNORED: [&str; 4] = ["metadata", "status", "apiVersion", "kind"];
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return old != new;
    };
    let counted =
        |m: &Map<String, Value>| m.keys().filter(|k| !IGNORED.contains(&k.as_str())).count();
    counted(old) != counted(new)
        || old
            .iter()
            .filter(|(k, _)| !IGNORED.contains(&k.as_str()))
            .any(|(k, v)| new.get(k) != Some(v))
}

fn check_meta_strings(op: &Op, obj: &Value, name: &str) -> Result<(), ApiError> {
    let Some(m) = meta(obj) else { return Ok(()) };
    let mut causes = Vec::new();
    for field in ["labels", "annotations"] {
        match m.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (k, v) in map {
                    if !v.is_string() {
                        causes.push(cause(
                            &format!("metadata.{field}.{k}"),
                            "Invalid value: must be a string",
                        ));
                    }
                }
            }
            Some(_) => causes.push(cause(
                &format!("metadata.{field}"),
                "Invalid value: must be a map of strings",
            )),
        }
    }
    if let Some(Value::Object(labels)) = m.get("labels") {
        for (k, v) in labels {
            if let Err(e) = LabelSelector::parse(&format!("{k}={}", v.as_str().unwrap_or(""))) {
                causes.push(cause("metadata.labels", e));
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&op.info, name, causes))
    }
}

/// Kind-specific defaulting and validation, shared by create and update.
fn prepare_kind(
    state: &State,
    op: &Op,
    obj: &mut Value,
    old: Option<&Value>,
    rv_hint: u64,
) -> Result<(), ApiError> {
    let info = &op.info;
    let name = meta_str(obj, "name").unwrap_or("").to_string();
    match (info.group.as_str(), info.resource.as_str()) {
        ("", "namespaces") => {
            let spec = obj
                .as_object_mut()
                .map(|m| m.entry("spec").or_insert_with(|| json!({})));
            if let Some(spec) = spec.and_then(Value::as_object_mut) {
                spec.entry("finalizers")
                    .or_insert_with(|| json!(["kubernetes"]));
            }
            let labels = meta_mut(obj).entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            let phase = if meta(obj).is_some_and(|m| m.contains_key("deletionTimestamp")) {
                "Terminating"
            } else {
                "Active"
            };
            obj["status"] = json!({"phase": phase});
        }
        ("", "secrets") => {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD;
            let Some(m) = obj.as_object_mut() else {
                return Ok(());
            };
            if let Some(Value::Object(sd)) = m.remove("stringData") {
                let data = m.entry("data").or_insert_with(|| json!({}));
                if let Some(d) = data.as_object_mut() {
                    for (k, v) in sd {
                        let s = v.as_str().unwrap_or_default();
                        d.insert(k, json!(b64.encode(s)));
                    }
                }
            }
            m.entry("type").or_insert_with(|| json!("Opaque"));
            if let Some(Value::Object(d)) = m.get("data") {
                for (k, v) in d {
                    let ok = v.as_str().is_some_and(|s| b64.decode(s).is_ok());
                    if !ok {
                        // The value itself never goes into the message: it is secret.
                        return Err(ApiError::bad_request(format!(
                            "Secret \"{name}\": data[{k}] is not valid base64"
                        )));
                    }
                }
            }
        }
        ("", "services") => {
            let old_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).cloned();
            let spec = obj
                .as_object_mut()
                .map(|m| m.entry("spec").or_insert_with(|| json!({})));
            if let Some(spec) = spec.and_then(Value::as_object_mut) {
                let ty = spec
                    .entry("type")
                    .or_insert_with(|| json!("ClusterIP"))
                    .as_str()
                    .unwrap_or("ClusterIP")
                    .to_string();
                if ty != "ExternalName" && !spec.get("clusterIP").is_some_and(|v| v.is_string()) {
                    let ip = old_ip.unwrap_or_else(|| {
                        json!(format!(
                            "10.96.{}.{}",
                            (rv_hint / 250) % 256,
                            rv_hint % 250 + 1
                        ))
                    });
                    spec.insert("clusterIPs".into(), json!([ip.clone()]));
                    spec.insert("clusterIP".into(), ip);
                }
                spec.entry("sessionAffinity")
                    .or_insert_with(|| json!("None"));
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let resources = resources_from_crd(obj).map_err(|problems| {
                ApiError::invalid(
                    info,
                    &name,
                    problems
                        .into_iter()
                        .map(|p| cause(&p.field, p.message))
                        .collect(),
                )
            })?;
            if let Some(r) = resources.first()
                && state.registry.is_builtin_resource(&r.group, &r.resource)
            {
                return Err(ApiError::invalid(
                    info,
                    &name,
                    vec![cause(
                        "spec.group",
                        "Invalid value: this group/resource is served by the server itself",
                    )],
                ));
            }
            let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
            let stored: Vec<Value> = obj
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                        .filter_map(|v| v.get("name").cloned())
                        .collect()
                })
                .unwrap_or_default();
            let t = now();
            // Conditions keep their transition time across updates: they stay True.
            let conditions = old
                .and_then(|o| o.pointer("/status/conditions"))
                .filter(|c| c.as_array().is_some_and(|a| a.len() == 2))
                .cloned();
            obj["status"] = json!({
                "acceptedNames": names,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "lastTransitionTime": t,
                     "reason": "NoConflicts", "message": "no conflicts found"},
                    {"type": "Established", "status": "True", "lastTransitionTime": t,
                     "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
                ],
                "storedVersions": stored,
            });
            if let Some(c) = conditions {
                obj["status"]["conditions"] = c;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Whether a stored namespace has `metadata.deletionTimestamp` (even null). Every create in a
/// namespace asks, so only that key is decoded: the rest is skipped without allocating.
fn namespace_terminating(bytes: &[u8]) -> Result<bool, StoreError> {
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| true)
    }
    #[derive(serde::Deserialize)]
    struct Meta {
        #[serde(default, rename = "deletionTimestamp", deserialize_with = "present")]
        deletion: bool,
    }
    #[derive(serde::Deserialize)]
    struct Namespace {
        metadata: Option<Meta>,
    }
    use serde::Deserialize;
    serde_json::from_slice::<Namespace>(bytes)
        .map(|n| n.metadata.is_some_and(|m| m.deletion))
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn check_namespace_usable(state: &State, op: &Op) -> Result<(), ApiError> {
    if !op.info.namespaced {
        return Ok(());
    }
    let ns = op.ns();
    let Some(ns_info) = state.registry.get("", "v1", "namespaces") else {
        return Ok(());
    };
    match state.store.get(&ns_info.storage_key(), "", ns) {
        None => Err(ApiError::not_found(&ns_info, ns)),
        Some(st) => {
            if namespace_terminating(&st.bytes).map_err(corrupt)? {
                Err(ApiError {
                    details: Some(json!({"name": ns, "kind": "namespaces"})),
                    ..ApiError::forbidden(format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        op.info.group_resource(),
                        op.name()
                    ))
                })
            } else {
                Ok(())
            }
        }
    }
}

/// GET of one object (or its status / scale).
pub fn get(state: &State, op: &Op) -> Result<Bytes, ApiError> {
    let st = state
        .store
        .get(&op.info.storage_key(), op.ns(), op.name())
        .ok_or_else(|| ApiError::not_found(&op.info, op.name()))?;
    if op.subresource.as_deref() == Some("scale") {
        let v = st.view().map_err(corrupt)?;
        return Ok(Bytes::from(scale_of(&op.info, &v).to_string()));
    }
    Ok(served_version(&op.info, st.bytes))
}

/// Objects of a CRD with several versions are stored as written; read through a version, they
/// carry that version's apiVersion (conversion strategy `None`, the CRD default). Events read
/// through events.k8s.io/v1 are converted from their stored core/v1 form.
pub fn served_version(info: &ResourceInfo, bytes: Bytes) -> Bytes {
    if crate::events::is_events_v1(info) {
        return match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => Bytes::from(crate::events::to_events_v1(&v).to_string()),
            Err(_) => bytes,
        };
    }
    if info.crd.is_none() {
        return bytes;
    }
    let want = info.api_version();
    let needle = format!("\"apiVersion\":{}", Value::String(want.clone()));
    if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
        return bytes;
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut v) if v.is_object() => {
            v["apiVersion"] = json!(want);
            Bytes::from(v.to_string())
        }
        _ => bytes,
    }
}

/// The object as `info` serves it when that differs from the stored form (events.k8s.io).
fn served_value(info: &ResourceInfo, stored: &Value) -> Option<Value> {
    crate::events::is_events_v1(info).then(|| crate::events::to_events_v1(stored))
}

/// The stored form of an object written through `info`.
fn to_storage(info: &ResourceInfo, obj: Value) -> Value {
    if crate::events::is_events_v1(info) {
        crate::events::to_core(&obj)
    } else {
        obj
    }
}

fn continue_token(rv: u64, ns: &str, name: &str) -> String {
    use base64::Engine;
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": [ns, name]}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn parse_continue(token: &str) -> Result<(String, String), ApiError> {
    use base64::Engine;
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let ns = v
        .pointer("/start/0")
        .and_then(Value::as_str)
        .ok_or_else(bad)?;
    let name = v
        .pointer("/start/1")
        .and_then(Value::as_str)
        .ok_or_else(bad)?;
    Ok((ns.to_string(), name.to_string()))
}

/// The selectors of a list or watch.
pub struct Selectors {
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
}

impl Selectors {
    /// Parses `labelSelector` and `fieldSelector`.
    pub fn from_query(op: &Op) -> Result<Selectors, ApiError> {
        let labels = LabelSelector::parse(op.query.get("labelSelector").map_or("", String::as_str))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(
            op.query.get("fieldSelector").map_or("", String::as_str),
            &op.info.group,
            &op.info.resource,
        )
        .map_err(ApiError::bad_request)?;
        Ok(Selectors { labels, fields })
    }

    /// Tests one stored object.
    pub fn matches(&self, ns: &str, name: &str, bytes: &[u8]) -> bool {
        if !self.fields.needs_object() {
            if !self.fields.matches(ns, name, None) {
                return false;
            }
            if self.labels.is_empty() {
                return true;
            }
            // Only the labels are decoded: the cheap path of label-selected lists.
            #[derive(serde::Deserialize)]
            struct Labels {
                labels: Option<Map<String, Value>>,
            }
            #[derive(serde::Deserialize)]
            struct Obj {
                metadata: Option<Labels>,
            }
            return match serde_json::from_slice::<Obj>(bytes) {
                Ok(o) => self
                    .labels
                    .matches(o.metadata.and_then(|m| m.labels).as_ref()),
                Err(_) => false,
            };
        }
        // A field of the content is selected on: decode the whole object once.
        let Ok(obj) = serde_json::from_slice::<Value>(bytes) else {
            return false;
        };
        self.fields.matches(ns, name, Some(&obj))
            && (self.labels.is_empty()
                || self
                    .labels
                    .matches(obj.pointer("/metadata/labels").and_then(Value::as_object)))
    }
}

/// The result of a list: rv, items, continue token.
pub struct Listed {
    /// resourceVersion of the list.
    pub rv: u64,
    /// The items.
    pub items: Vec<Stored>,
    /// Continue token when more remain.
    pub cont: Option<String>,
}

/// LIST.
pub fn list(state: &State, op: &Op) -> Result<Listed, ApiError> {
    let sel = Selectors::from_query(op)?;
    let limit = match op.query.get("limit").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        ),
    };
    let after = match op.query.get("continue").map(String::as_str) {
        None | Some("") => None,
        Some(t) => Some(parse_continue(t)?),
    };
    let (rv, items, last) = state.store.list(
        &op.info.storage_key(),
        op.namespace.as_deref(),
        after.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
        limit,
        &|ns, name, bytes| sel.matches(ns, name, bytes),
    );
    Ok(Listed {
        rv,
        items,
        cont: last.map(|(ns, name)| continue_token(rv, &ns, &name)),
    })
}

/// Serializes a list.
pub fn list_body(info: &ResourceInfo, listed: &Listed) -> Bytes {
    let mut meta = json!({"resourceVersion": listed.rv.to_string()});
    if let Some(c) = &listed.cont {
        meta["continue"] = json!(c);
    }
    let head = format!(
        "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
        info.kind,
        info.api_version(),
        meta
    );
    let total: usize = listed.items.iter().map(|s| s.bytes.len() + 1).sum();
    let mut out = Vec::with_capacity(head.len() + total + 2);
    out.extend_from_slice(head.as_bytes());
    for (i, item) in listed.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&served_version(info, item.bytes.clone()));
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// POST: create.
pub fn create(state: &State, op: &Op, mut obj: Value) -> Result<Reply, ApiError> {
    if op.subresource.is_some() || op.name.is_some() {
        return Err(ApiError::method_not_allowed());
    }
    check_kind(op, &mut obj)?;
    check_namespace(op, &mut obj)?;
    let warnings = unknown_fields(op, &obj)?;
    let (created, object) = create_object(state, op, obj, |o| {
        apply::record_update(&op.info.hints, None, o, &op.manager, None, &now());
        Ok(())
    })?;
    let mut reply = Reply::with_object(201, served_version(&op.info, created), object);
    reply.warnings = warnings;
    Ok(reply)
}

/// Fills server-set metadata for a new object, validates, and stores it (unless dry-run).
/// `fields` records the managed fields once the final content is known. Returns the stored
/// bytes and object.
fn create_object(
    state: &State,
    op: &Op,
    mut obj: Value,
    fields: impl FnOnce(&mut Value) -> Result<(), ApiError>,
) -> Result<(Bytes, Arc<Value>), ApiError> {
    let info = &op.info;
    let m = meta_mut(&mut obj);
    let mut name = m
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        match m.get("generateName").and_then(Value::as_str) {
            Some(prefix) if !prefix.is_empty() => name = format!("{prefix}{}", random_suffix()),
            _ => {
                return Err(ApiError::invalid(
                    info,
                    "",
                    vec![Cause {
                        reason: "FieldValueRequired",
                        field: "metadata.name".into(),
                        message: "Required value: name or generateName is required".into(),
                    }],
                ));
            }
        }
        m.insert("name".into(), json!(name));
    }
    if m.get("resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    if let Err(msg) = check_name(info.name_rule, &name) {
        return Err(ApiError::invalid(
            info,
            &name,
            vec![cause("metadata.name", msg)],
        ));
    }
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(now()));
    m.insert("generation".into(), json!(1));
    m.remove("deletionTimestamp");
    m.remove("deletionGracePeriodSeconds");
    m.remove("selfLink");
    check_meta_strings(op, &obj, &name)?;
    check_namespace_usable(state, op)?;
    if info.status
        && let Some(map) = obj.as_object_mut()
    {
        map.remove("status");
    }
    crate::defaults::apply(&info.group, &info.resource, &mut obj);
    let rv_hint = state.store.current_rv() + 1;
    prepare_kind(state, op, &mut obj, None, rv_hint)?;
    fields(&mut obj)?;
    let obj = to_storage(info, obj);
    let skey = info.storage_key();
    if op.dry_run() {
        if state.store.get(&skey, op.ns(), &name).is_some() {
            return Err(ApiError::already_exists(info, &name));
        }
        return Ok((Bytes::from(obj.to_string()), into_view(obj)));
    }
    let written = state
        .store
        .write(&skey, op.ns(), &name, Expect::Absent, Some(obj))
        .map_err(|e| store_err(info, &name, e))?;
    after_write(state, info, &written.object, false);
    Ok((written.bytes, written.object))
}

/// Side effects of a committed write on the served API (CRDs).
fn after_write(state: &State, info: &ResourceInfo, obj: &Value, deleted: bool) {
    if info.group == "apiextensions.k8s.io" && info.resource == "customresourcedefinitions" {
        let name = meta_str(obj, "name").unwrap_or("");
        if deleted {
            state.registry.remove_crd(name);
        } else if meta(obj).is_some_and(|m| m.contains_key("deletionTimestamp")) {
            // Still served while its finalizers run, as in Kubernetes.
        } else if let Ok(resources) = resources_from_crd(obj) {
            state.registry.install_crd(name, resources);
        }
    }
}

/// How an update computes the new object from the live one.
enum Change<'a> {
    /// PUT with a full object (taken when there is only one attempt).
    Replace(&'a mut Value),
    /// PATCH (non-apply).
    Patch(PatchKind, &'a Value),
    /// Server-side apply.
    Apply(&'a Value, bool),
}

/// PUT.
pub fn update(state: &State, op: &Op, mut obj: Value) -> Result<Reply, ApiError> {
    if op.subresource.as_deref() == Some("scale") {
        return update_scale(state, op, Change::Replace(&mut obj));
    }
    check_kind(op, &mut obj)?;
    check_namespace(op, &mut obj)?;
    match meta_str(&obj, "name") {
        Some(n) if n == op.name() => {}
        None | Some("") => {
            meta_mut(&mut obj).insert("name".into(), json!(op.name()));
        }
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({})",
                op.name()
            )));
        }
    }
    let warnings = unknown_fields(op, &obj)?;
    let (body, object) = write_loop(state, op, Change::Replace(&mut obj))?;
    let mut reply = Reply::with_object(200, served_version(&op.info, body), object);
    reply.warnings = warnings;
    Ok(reply)
}

/// PATCH (all four kinds).
pub fn patch(state: &State, op: &Op, kind: PatchKind, patch: Value) -> Result<Reply, ApiError> {
    if kind == PatchKind::Apply {
        let mut applied = patch;
        if !op.manager_explicit {
            return Err(ApiError::bad_request(
                "PATCH: fieldManager is required for apply requests",
            ));
        }
        let force = match op.query.get("force").map(String::as_str) {
            None | Some("") | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "invalid force value {other:?}"
                )));
            }
        };
        if !applied.is_object() {
            return Err(ApiError::bad_request("the apply body must be an object"));
        }
        if applied
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
            || applied
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
        {
            return Err(ApiError::bad_request(
                "invalid object type: apiVersion and kind must be set in an apply body",
            ));
        }
        check_kind(op, &mut applied)?;
        if op.info.namespaced {
            if let Some(ns) = meta_str(&applied, "namespace")
                && ns != op.ns()
            {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({ns}) does not match the namespace sent on the request ({})",
                    op.ns()
                )));
            }
        } else if let Some(m) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("namespace");
        }
        match meta_str(&applied, "name") {
            Some(n) if n == op.name() => {}
            Some(n) => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({})",
                    op.name()
                )));
            }
            None => {
                meta_mut(&mut applied).insert("name".into(), json!(op.name()));
            }
        }
        let warnings = unknown_fields(op, &applied)?;
        if op.subresource.as_deref() == Some("scale") {
            return update_scale(state, op, Change::Apply(&applied, force));
        }
        let (body, object) = write_loop(state, op, Change::Apply(&applied, force))?;
        let mut reply = Reply::with_object(200, served_version(&op.info, body), object);
        reply.warnings = warnings;
        return Ok(reply);
    }
    if op.subresource.as_deref() == Some("scale") {
        return update_scale(state, op, Change::Patch(kind, &patch));
    }
    // Unknown top-level fields a patch would add: the keys of a merge patch (strategic merge
    // directives such as `$setElementOrder/…` are not fields), the first path
    // segments of a JSON patch.
    let touched = match (kind, &patch) {
        (PatchKind::Json, Value::Array(ops)) => Value::Object(
            ops.iter()
                .filter_map(|o| o.get("path").and_then(Value::as_str))
                .filter_map(|p| p.split('/').nth(1))
                .map(|k| (k.replace("~1", "/").replace("~0", "~"), Value::Null))
                .collect(),
        ),
        (_, v) => v.clone(),
    };
    let warnings = unknown_fields(op, &touched)?;
    let (body, object) = write_loop(state, op, Change::Patch(kind, &patch))?;
    let mut reply = Reply::with_object(200, served_version(&op.info, body), object);
    reply.warnings = warnings;
    Ok(reply)
}

/// Reads the live object, computes the new one, commits; retries when someone else wrote in
/// between (except for a PUT that named a resourceVersion: that is the client's precondition).
fn write_loop(
    state: &State,
    op: &Op,
    mut change: Change<'_>,
) -> Result<(Bytes, Arc<Value>), ApiError> {
    let info = &op.info;
    let skey = info.storage_key();
    let name = op.name().to_string();
    // A PUT naming a resourceVersion is the client's precondition: a conflict is its answer,
    // not a reason to try again.
    let retry_conflicts = !matches!(&change, Change::Replace(b) if meta_str(b, "resourceVersion").is_some_and(|s| !s.is_empty()));
    for _ in 0..MAX_RETRIES {
        let Some(cur) = state.store.get(&skey, op.ns(), &name) else {
            if let Change::Apply(applied, force) = &change {
                if op.subresource.is_some() {
                    return Err(ApiError::not_found(info, &name));
                }
                check_namespace_usable(state, op)?;
                let manager = op.manager.clone();
                let applied_obj = (*applied).clone();
                let force = *force;
                let mut base = applied_obj.clone();
                check_namespace(op, &mut base)?;
                return create_object(state, op, base, |o| {
                    let t = now();
                    // The apply result for a new object is the applied configuration plus
                    // managedFields; server-set metadata and defaults are kept from `o`.
                    let out = apply::server_side_apply(
                        &info.hints,
                        None,
                        &applied_obj,
                        &manager,
                        force,
                        &t,
                    )
                    .map_err(|e| apply_err(info, &name, e))?;
                    if let Some(mf) = out.pointer("/metadata/managedFields") {
                        meta_mut(o).insert("managedFields".into(), mf.clone());
                    }
                    Ok(())
                });
            }
            return Err(ApiError::not_found(info, &name));
        };
        let live_whole = cur.value().map_err(corrupt)?;
        let live: &Value = &live_whole;
        // The change is computed on the object as this API serves it.
        let live_served = served_value(info, live);
        let live_view = live_served.as_ref().unwrap_or(live);
        let new = match &mut change {
            Change::Replace(body) => {
                if let Some(rv) = meta_str(body, "resourceVersion").filter(|s| !s.is_empty())
                    && rv != cur.rv.to_string()
                {
                    return Err(ApiError::conflict(
                        info,
                        &name,
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ));
                }
                // Without retries this is the only attempt: the body is taken, not copied.
                let mut new = if retry_conflicts {
                    (**body).clone()
                } else {
                    std::mem::take(*body)
                };
                let sent_fields = meta(&new)
                    .and_then(|m| m.get("managedFields"))
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty());
                if !sent_fields
                    && let Some(mf) = meta(live_view).and_then(|m| m.get("managedFields"))
                {
                    meta_mut(&mut new).insert("managedFields".into(), mf.clone());
                }
                crate::defaults::apply(&info.group, &info.resource, &mut new);
                apply::record_update(
                    &info.hints,
                    Some(live_view),
                    &mut new,
                    &op.manager,
                    op.subresource.as_deref(),
                    &now(),
                );
                new
            }
            Change::Patch(kind, p) => {
                let mut new = apply::patch(*kind, &info.hints, live_view, p)
                    .map_err(|e| apply_err(info, &name, e))?;
                if !new.is_object() {
                    return Err(ApiError::bad_request("the patch result is not an object"));
                }
                if let Some(rv) = meta_str(&new, "resourceVersion")
                    && rv != cur.rv.to_string()
                {
                    return Err(ApiError::conflict(
                        info,
                        &name,
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ));
                }
                check_kind(op, &mut new)?;
                crate::defaults::apply(&info.group, &info.resource, &mut new);
                apply::record_update(
                    &info.hints,
                    Some(live_view),
                    &mut new,
                    &op.manager,
                    op.subresource.as_deref(),
                    &now(),
                );
                new
            }
            Change::Apply(applied, force) => {
                let mut new = apply::server_side_apply(
                    &info.hints,
                    Some(live_view),
                    applied,
                    &op.manager,
                    *force,
                    &now(),
                )
                .map_err(|e| apply_err(info, &name, e))?;
                // After the merge, so the applier owns only what it applied.
                crate::defaults::apply(&info.group, &info.resource, &mut new);
                new
            }
        };
        let mut new = to_storage(info, new);
        restore_server_fields(op, live, &mut new)?;
        check_meta_strings(op, &new, &name)?;
        let changed_spec = spec_changed(live, &new);
        let generation = meta(live)
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(1);
        meta_mut(&mut new).insert(
            "generation".into(),
            json!(if changed_spec {
                generation + 1
            } else {
                generation
            }),
        );
        prepare_kind(state, op, &mut new, Some(live), cur.rv)?;
        let terminating = meta(&new).is_some_and(|m| m.contains_key("deletionTimestamp"));
        let no_finalizers = meta(&new)
            .and_then(|m| m.get("finalizers"))
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty());
        if op.dry_run() {
            return Ok((Bytes::from(new.to_string()), into_view(new)));
        }
        let deleted = terminating && no_finalizers;
        let result = if deleted {
            state
                .store
                .write(&skey, op.ns(), &name, Expect::Rv(cur.rv), None)
                .map(|w| (w.bytes, into_view(new)))
        } else {
            state
                .store
                .write(&skey, op.ns(), &name, Expect::Rv(cur.rv), Some(new))
                .map(|w| (w.bytes, w.object))
        };
        match result {
            Ok((bytes, new)) => {
                after_write(state, info, &new, deleted);
                if deleted {
                    on_deleted(state, info, &new);
                }
                return Ok((bytes, new));
            }
            Err(StoreError::Conflict) if retry_conflicts => continue,
            Err(e) => return Err(store_err(info, &name, e)),
        }
    }
    Err(ApiError::conflict(
        info,
        &name,
        "too many concurrent writes; please retry",
    ))
}

/// Puts back what clients may not change: identity, timestamps, and — depending on the
/// subresource — either the status (main resource) or everything but the status.
fn restore_server_fields(op: &Op, live: &Value, new: &mut Value) -> Result<(), ApiError> {
    let info = &op.info;
    let keep = [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "name",
        "namespace",
    ];
    if let Some(old_uid) = meta_str(live, "uid")
        && let Some(new_uid) = meta_str(new, "uid")
        && !new_uid.is_empty()
        && new_uid != old_uid
    {
        return Err(ApiError::conflict(
            info,
            op.name(),
            &format!(
                "Precondition failed: UID in precondition: {new_uid}, UID in object meta: {old_uid}"
            ),
        ));
    }
    match op.subresource.as_deref() {
        Some("status") => {
            // Only .status (and managedFields, which record who wrote it) may change. The
            // result is the live object with those two taken from `new`, in live's field
            // order; neither the live status nor its managedFields are copied only to be
            // replaced.
            let mut status = new.as_object_mut().and_then(|m| m.remove("status"));
            let mut managed = new
                .get_mut("metadata")
                .and_then(Value::as_object_mut)
                .and_then(|m| m.remove("managedFields"));
            let mut result = Map::new();
            for (k, v) in live.as_object().into_iter().flatten() {
                match k.as_str() {
                    "status" => {
                        if let Some(s) = status.take() {
                            result.insert(k.clone(), s);
                        }
                    }
                    "metadata" if managed.is_some() => {
                        let mut meta = Map::new();
                        for (mk, mv) in v.as_object().into_iter().flatten() {
                            if mk == "managedFields" {
                                if let Some(mf) = managed.take() {
                                    meta.insert(mk.clone(), mf);
                                }
                            } else {
                                meta.insert(mk.clone(), mv.clone());
                            }
                        }
                        if let Some(mf) = managed.take() {
                            meta.insert("managedFields".into(), mf);
                        }
                        result.insert(k.clone(), Value::Object(meta));
                    }
                    _ => {
                        result.insert(k.clone(), v.clone());
                    }
                }
            }
            // A status where live had none goes last, as an insert would put it.
            if let Some(s) = status {
                result.insert("status".into(), s);
            }
            *new = Value::Object(result);
        }
        _ => {
            if info.status {
                match live.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            let live_meta = meta(live).cloned().unwrap_or_default();
            let m = meta_mut(new);
            for k in keep {
                match live_meta.get(k) {
                    Some(v) => {
                        m.insert(k.into(), v.clone());
                    }
                    None => {
                        m.remove(k);
                    }
                }
            }
            m.remove("selfLink");
            // A finalizer may not be added to an object that is going away (Kubernetes refuses
            // it); removing them is how the deletion completes.
            if live_meta.contains_key("deletionTimestamp") {
                let old: Vec<Value> = live_meta
                    .get("finalizers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if let Some(Value::Array(fs)) = m.get("finalizers")
                    && fs.iter().any(|f| !old.contains(f))
                {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{}\" is forbidden: no new finalizers can be added if the object is being deleted",
                        info.group_resource(),
                        op.name()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The autoscaling/v1 Scale of an object.
pub fn scale_of(info: &ResourceInfo, obj: &Value) -> Value {
    let Some(paths) = &info.scale else {
        return Value::Null;
    };
    let at = |p: &str| -> Option<Value> {
        let pointer = p.replace('.', "/");
        obj.pointer(&pointer).cloned()
    };
    let selector = if paths.label_selector.is_empty() {
        None
    } else {
        at(&paths.label_selector)
    };
    let selector = match selector {
        Some(Value::String(s)) => s,
        Some(Value::Object(sel)) => sel
            .get("matchLabels")
            .and_then(Value::as_object)
            .map(|ml| {
                ml.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
        _ => String::new(),
    };
    let mut m = json!({
        "name": meta_str(obj, "name"),
        "uid": meta_str(obj, "uid"),
        "resourceVersion": meta_str(obj, "resourceVersion"),
        "creationTimestamp": meta_str(obj, "creationTimestamp"),
    });
    if let Some(ns) = meta_str(obj, "namespace") {
        m["namespace"] = json!(ns);
    }
    let mut status = json!({"replicas": at(&paths.status_replicas).unwrap_or(json!(0))});
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": m,
        "spec": {"replicas": at(&paths.spec_replicas).unwrap_or(json!(0))},
        "status": status,
    })
}

fn update_scale(state: &State, op: &Op, change: Change<'_>) -> Result<Reply, ApiError> {
    let info = &op.info;
    let Some(paths) = info.scale.clone() else {
        return Err(ApiError::no_route("scale"));
    };
    let name = op.name().to_string();
    let skey = info.storage_key();
    let scale_hints = apply::ListHints::builtin("autoscaling", "Scale");
    for _ in 0..MAX_RETRIES {
        let cur = state
            .store
            .get(&skey, op.ns(), &name)
            .ok_or_else(|| ApiError::not_found(info, &name))?;
        let live = cur.value().map_err(corrupt)?;
        let scale = scale_of(info, &live);
        let new_scale = match &change {
            Change::Replace(v) => (*v).clone(),
            Change::Patch(kind, p) => apply::patch(*kind, &scale_hints, &scale, p)
                .map_err(|e| apply_err(info, &name, e))?,
            Change::Apply(v, _) => {
                let mut s = scale.clone();
                if let Some(r) = v.pointer("/spec/replicas") {
                    s["spec"]["replicas"] = r.clone();
                }
                s
            }
        };
        if let Some(rv) = meta_str(&new_scale, "resourceVersion").filter(|s| !s.is_empty())
            && rv != cur.rv.to_string()
        {
            return Err(ApiError::conflict(
                info,
                &name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let replicas = new_scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .ok_or_else(|| {
                ApiError::invalid(
                    info,
                    &name,
                    vec![cause("spec.replicas", "Required value: must be an integer")],
                )
            })?;
        if replicas < 0 {
            return Err(ApiError::invalid(
                info,
                &name,
                vec![cause(
                    "spec.replicas",
                    "Invalid value: must be greater than or equal to 0",
                )],
            ));
        }
        let mut new = live.clone();
        let pointer = paths.spec_replicas.replace('.', "/");
        set_pointer(&mut new, &pointer, json!(replicas));
        apply::record_update(
            &info.hints,
            Some(&live),
            &mut new,
            &op.manager,
            Some("scale"),
            &now(),
        );
        if spec_changed(&live, &new) {
            let g = meta(&live)
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        if op.dry_run() {
            return Ok(Reply::new(
                200,
                Bytes::from(scale_of(info, &new).to_string()),
            ));
        }
        match state
            .store
            .write(&skey, op.ns(), &name, Expect::Rv(cur.rv), Some(new))
        {
            Ok(w) => {
                return Ok(Reply::new(
                    200,
                    Bytes::from(scale_of(info, &w.object).to_string()),
                ));
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(store_err(info, &name, e)),
        }
    }
    Err(ApiError::conflict(
        info,
        &name,
        "too many concurrent writes; please retry",
    ))
}

fn set_pointer(obj: &mut Value, pointer: &str, value: Value) {
    let mut cur = obj;
    let parts: Vec<&str> = pointer.split('/').filter(|p| !p.is_empty()).collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        // Invariant: `cur` was made an object just above.
        let map = cur.as_object_mut().expect("object");
        if i == parts.len() - 1 {
            map.insert((*p).to_string(), value);
            return;
        }
        cur = map.entry((*p).to_string()).or_insert_with(|| json!({}));
    }
}

/// Namespaces the API server refuses to delete (its NamespaceLifecycle admission plugin).
const IMMORTAL_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

/// DELETE of one object. `options` is the DeleteOptions body, if any.
pub fn delete(state: &State, op: &Op, options: Option<&Value>) -> Result<Reply, ApiError> {
    let mut reply = delete_stored(state, op, options)?;
    reply.body = served_version(&op.info, reply.body);
    Ok(reply)
}

/// [`delete`], answered in the stored form (the served form is the caller's to make).
fn delete_stored(state: &State, op: &Op, options: Option<&Value>) -> Result<Reply, ApiError> {
    let info = &op.info;
    if op.subresource.is_some() {
        return Err(ApiError::method_not_allowed());
    }
    let name = op.name().to_string();
    let skey = info.storage_key();
    let dry = op.dry_run()
        || options
            .and_then(|o| o.get("dryRun"))
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    let propagation = Propagation::of(op, options)?;
    let is_namespace = info.group.is_empty() && info.resource == "namespaces";
    // Refused before the object is read, as Kubernetes' admission does (these namespaces always
    // exist: they cannot be deleted).
    if is_namespace && IMMORTAL_NAMESPACES.contains(&name.as_str()) {
        return Err(ApiError {
            details: Some(json!({"name": name, "kind": "namespaces"})),
            ..ApiError::forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            ))
        });
    }
    for _ in 0..MAX_RETRIES {
        let cur = state
            .store
            .get(&skey, op.ns(), &name)
            .ok_or_else(|| ApiError::not_found(info, &name))?;
        let mut live = cur.value().map_err(corrupt)?;
        if let Some(pre) = options.and_then(|o| o.get("preconditions")) {
            if let Some(uid) = pre.get("uid").and_then(Value::as_str)
                && Some(uid) != meta_str(&live, "uid")
            {
                return Err(ApiError::conflict(
                    info,
                    &name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&live, "uid").unwrap_or("")
                    ),
                ));
            }
            if let Some(rv) = pre.get("resourceVersion").and_then(Value::as_str)
                && rv != cur.rv.to_string()
            {
                return Err(ApiError::conflict(
                    info,
                    &name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        cur.rv
                    ),
                ));
            }
        }
        // The garbage collector's finalizers, as the propagation policy asks (namespaces
        // delete their content themselves, see `finish_namespace`).
        let finalizers_changed = if is_namespace {
            false
        } else {
            let old: Vec<Value> = meta(&live)
                .and_then(|m| m.get("finalizers"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            match propagation.finalizers(&old) {
                Some(new) => {
                    let m = meta_mut(&mut live);
                    if new.is_empty() {
                        m.remove("finalizers");
                    } else {
                        m.insert("finalizers".into(), Value::Array(new));
                    }
                    true
                }
                None => false,
            }
        };
        let has_finalizers = meta(&live)
            .and_then(|m| m.get("finalizers"))
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        if has_finalizers || is_namespace {
            let already = meta(&live).is_some_and(|m| m.contains_key("deletionTimestamp"));
            if !already {
                let m = meta_mut(&mut live);
                m.insert("deletionTimestamp".into(), json!(now()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
                if is_namespace {
                    live["status"] = json!({"phase": "Terminating"});
                }
            }
            if dry {
                return Ok(Reply::new(200, Bytes::from(live.to_string())));
            }
            if already && !is_namespace && !finalizers_changed {
                return Ok(Reply::new(200, cur.bytes));
            }
            let bytes = if already && !finalizers_changed {
                cur.bytes.clone()
            } else {
                match state
                    .store
                    .write(&skey, op.ns(), &name, Expect::Rv(cur.rv), Some(live))
                {
                    Ok(w) => w.bytes,
                    Err(StoreError::Conflict) => continue,
                    Err(e) => return Err(store_err(info, &name, e)),
                }
            };
            if is_namespace {
                return Ok(Reply::new(
                    200,
                    finish_namespace(state, &name).unwrap_or(bytes),
                ));
            }
            return Ok(Reply::new(200, bytes));
        }
        if dry {
            return Ok(Reply::new(200, cur.bytes));
        }
        match state
            .store
            .write(&skey, op.ns(), &name, Expect::Rv(cur.rv), None)
        {
            Ok(w) => {
                after_write(state, info, &live, true);
                on_deleted(state, info, &live);
                return Ok(Reply::new(200, w.bytes));
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(store_err(info, &name, e)),
        }
    }
    Err(ApiError::conflict(
        info,
        &name,
        "too many concurrent writes; please retry",
    ))
}

/// The finalizers of the garbage collector that a deletion adds or removes.
const ORPHAN_FINALIZER: &str = "orphan";
const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// How a DELETE wants the owned objects treated: `propagationPolicy` or the deprecated
/// `orphanDependents`, from the DeleteOptions body or the query.
struct Propagation {
    policy: Option<String>,
    orphan_dependents: Option<bool>,
}

impl Propagation {
    fn of(op: &Op, options: Option<&Value>) -> Result<Propagation, ApiError> {
        let body = |k: &str| options.and_then(|o| o.get(k)).filter(|v| !v.is_null());
        let policy = match body("propagationPolicy") {
            Some(Value::String(p)) => Some(p.clone()),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "DeleteOptions.propagationPolicy must be a string, not {other}"
                )));
            }
            None => op.query.get("propagationPolicy").cloned(),
        };
        let orphan_dependents = match body("orphanDependents") {
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "DeleteOptions.orphanDependents must be a boolean, not {other}"
                )));
            }
            None => match op.query.get("orphanDependents").map(String::as_str) {
                None => None,
                Some("true") => Some(true),
                Some("false") => Some(false),
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "orphanDependents: invalid value {other:?} (true or false)"
                    )));
                }
            },
        };
        let invalid = |message: String| ApiError {
            code: 422,
            reason: "Invalid",
            message: format!(
                "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: {message}"
            ),
            details: Some(json!({"kind": "DeleteOptions", "group": "meta.k8s.io",
                "causes": [{"reason": "FieldValueInvalid", "field": "propagationPolicy",
                    "message": message}]})),
        };
        if let Some(p) = &policy {
            if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
                return Err(invalid(format!(
                    "Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                )));
            }
            if orphan_dependents.is_some() {
                return Err(invalid(format!(
                    "Invalid value: \"{p}\": orphanDependents and deletionPropagation cannot be both set"
                )));
            }
        }
        Ok(Propagation {
            policy,
            orphan_dependents,
        })
    }

    /// The new finalizer list of the object being deleted, or `None` if it stays as it is.
    /// As Kubernetes decides: an explicit option wins; without one, a GC finalizer the object
    /// already carries stays; otherwise the kind's default (Background for every kind served
    /// here) adds none.
    fn finalizers(&self, old: &[Value]) -> Option<Vec<Value>> {
        let has = |f: &str| old.iter().any(|x| x == f);
        let first_gc = old.iter().find_map(|x| match x.as_str() {
            Some(f @ (ORPHAN_FINALIZER | FOREGROUND_FINALIZER)) => Some(f),
            _ => None,
        });
        let (orphan, foreground) = match (self.orphan_dependents, self.policy.as_deref()) {
            (Some(o), _) => (o, false),
            (None, Some("Orphan")) => (true, false),
            (None, Some("Foreground")) => (false, true),
            (None, Some(_)) => (false, false),
            (None, None) => (
                first_gc == Some(ORPHAN_FINALIZER),
                first_gc == Some(FOREGROUND_FINALIZER),
            ),
        };
        if has(ORPHAN_FINALIZER) == orphan && has(FOREGROUND_FINALIZER) == foreground {
            return None;
        }
        let mut new: Vec<Value> = old
            .iter()
            .filter(|x| *x != ORPHAN_FINALIZER && *x != FOREGROUND_FINALIZER)
            .cloned()
            .collect();
        if orphan {
            new.push(json!(ORPHAN_FINALIZER));
        }
        if foreground {
            new.push(json!(FOREGROUND_FINALIZER));
        }
        Some(new)
    }
}

/// After a delete: a CRD takes its custom objects with it.
fn on_deleted(state: &State, info: &ResourceInfo, obj: &Value) {
    if info.group == "apiextensions.k8s.io" && info.resource == "customresourcedefinitions" {
        let group = obj
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or("");
        let plural = obj
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or("");
        let skey = format!("{group}/{plural}");
        for st in state.store.all_of(&skey) {
            let Ok(v) = st.view() else { continue };
            let ns = meta_str(&v, "namespace").unwrap_or("");
            let name = meta_str(&v, "name").unwrap_or("");
            if let Err(e) = state.store.write(&skey, ns, name, Expect::Rv(st.rv), None) {
                tracing::warn!(%skey, ns, name, error = %e, "could not remove a custom object of a deleted CRD");
            }
        }
    }
}

/// Deletes what a terminating namespace still holds and removes the namespace once it is empty.
/// Returns the namespace's last state if it was removed.
pub fn finish_namespace(state: &State, ns: &str) -> Option<Bytes> {
    let snapshot = state.registry.snapshot();
    let mut remaining = 0usize;
    for (skey, name) in state.store.keys_in_namespace(ns) {
        let Some((group, resource)) = skey.split_once('/') else {
            continue;
        };
        let info = snapshot
            .iter()
            .filter(|(g, _)| g == group)
            .flat_map(|(_, vs)| vs.iter())
            .flat_map(|(_, rs)| rs.iter())
            .find(|r| r.resource == resource)
            .cloned();
        let Some(info) = info else {
            remaining += 1;
            continue;
        };
        let op = Op {
            info,
            namespace: Some(ns.to_string()),
            name: Some(name.clone()),
            subresource: None,
            query: HashMap::new(),
            manager: "namespace-controller".into(),
            manager_explicit: true,
        };
        match delete(state, &op, None) {
            Ok(_) => {
                if state.store.get(&skey, ns, &name).is_some() {
                    remaining += 1;
                }
            }
            Err(e) if e.code == 404 => {}
            Err(_) => remaining += 1,
        }
    }
    if remaining > 0 {
        return None;
    }
    let ns_info = state.registry.get("", "v1", "namespaces")?;
    let cur = state.store.get(&ns_info.storage_key(), "", ns)?;
    state
        .store
        .write(&ns_info.storage_key(), "", ns, Expect::Rv(cur.rv), None)
        .ok()
        .map(|w| w.bytes)
}

/// DELETE on a collection.
pub fn delete_collection(
    state: &State,
    op: &Op,
    options: Option<&Value>,
) -> Result<Reply, ApiError> {
    if op.info.group.is_empty() && op.info.resource == "namespaces" {
        return Err(ApiError::method_not_allowed());
    }
    let listed = list(
        state,
        &Op {
            query: without(&op.query, &["limit", "continue"]),
            ..clone_op(op)
        },
    )?;
    let mut deleted = Vec::new();
    for item in &listed.items {
        let v = item.view().map_err(corrupt)?;
        let one = Op {
            namespace: meta_str(&v, "namespace").map(String::from),
            name: meta_str(&v, "name").map(String::from),
            ..clone_op(op)
        };
        // Stored form: `list_body` converts each item to the served version once.
        match delete_stored(state, &one, options) {
            Ok(r) => deleted.push(Stored::new(0, r.body)),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let body = list_body(
        &op.info,
        &Listed {
            rv: state.store.current_rv(),
            items: deleted,
            cont: None,
        },
    );
    Ok(Reply::new(200, body))
}

fn without(q: &HashMap<String, String>, keys: &[&str]) -> HashMap<String, String> {
    q.iter()
        .filter(|(k, _)| !keys.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn clone_op(op: &Op) -> Op {
    Op {
        info: op.info.clone(),
        namespace: op.namespace.clone(),
        name: op.name.clone(),
        subresource: op.subresource.clone(),
        query: op.query.clone(),
        manager: op.manager.clone(),
        manager_explicit: op.manager_explicit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A create asks only whether the namespace has a deletionTimestamp key (null counts), not
    /// whether some other field of that name exists.
    #[test]
    fn namespace_terminating_sees_the_deletion_timestamp_only() {
        let ns = |meta: Value| json!({"kind": "Namespace", "metadata": meta}).to_string();
        let yes = ns(json!({"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"}));
        let null = ns(json!({"name": "a", "deletionTimestamp": null}));
        let no = ns(json!({"name": "a", "labels": {"deletionTimestamp": "x"}}));
        assert!(namespace_terminating(yes.as_bytes()).unwrap());
        assert!(namespace_terminating(null.as_bytes()).unwrap());
        assert!(!namespace_terminating(no.as_bytes()).unwrap());
        assert!(!namespace_terminating(b"{}").unwrap());
        assert!(namespace_terminating(b"{").is_err());
    }

    /// Only fields outside metadata, status, apiVersion and kind count as a spec change, and a
    /// field added or removed counts as much as one changed.
    #[test]
    fn spec_changed_ignores_metadata_and_status_only() {
        let base = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "labels": {"x": "1"}},
            "data": {"k": "v"}, "status": {"phase": "A"},
        });
        let mut meta_only = base.clone();
        meta_only["metadata"]["labels"]["x"] = json!("2");
        meta_only["status"]["phase"] = json!("B");
        meta_only["apiVersion"] = json!("v2");
        assert!(!spec_changed(&base, &meta_only));
        assert!(!spec_changed(&base, &base.clone()));

        let mut data = base.clone();
        data["data"]["k"] = json!("w");
        assert!(spec_changed(&base, &data));
        let mut added = base.clone();
        added["binaryData"] = json!({});
        assert!(spec_changed(&base, &added));
        assert!(spec_changed(&added, &base));
        assert!(spec_changed(&json!(1), &json!(2)));
    }
}
