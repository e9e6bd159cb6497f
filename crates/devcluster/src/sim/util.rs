//! Small pure helpers shared by the simulated controllers.

use serde_json::{Map, Value, json};

/// A string field of `metadata` ("" when absent).
pub(crate) fn meta_str<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// An integer at a JSON pointer.
pub(crate) fn int_at(v: &Value, pointer: &str) -> Option<i64> {
    v.pointer(pointer).and_then(Value::as_i64)
}

/// One entry of `metadata.ownerReferences`.
pub(crate) struct OwnerRef {
    pub(crate) api_version: String,
    pub(crate) kind: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) controller: bool,
}

/// The owner references of an object.
pub(crate) fn owner_refs(v: &Value) -> Vec<OwnerRef> {
    v.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .map(|r| OwnerRef {
                    api_version: r
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                    kind: r.get("kind").and_then(Value::as_str).unwrap_or("").into(),
                    name: r.get("name").and_then(Value::as_str).unwrap_or("").into(),
                    uid: r.get("uid").and_then(Value::as_str).unwrap_or("").into(),
                    controller: r.get("controller").and_then(Value::as_bool) == Some(true),
                })
                .filter(|r| !r.uid.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `v`'s controller owner reference points at `uid`.
pub(crate) fn is_controlled_by(v: &Value, uid: &str) -> bool {
    owner_refs(v).iter().any(|r| r.controller && r.uid == uid)
}

/// An ownerReference as the controllers write it (controller, blockOwnerDeletion).
pub(crate) fn controller_ref(api_version: &str, kind: &str, name: &str, uid: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Equality-based selector (a Service's `spec.selector`, a `matchLabels`).
pub(crate) fn selector_matches(sel: &Map<String, Value>, labels: &Map<String, Value>) -> bool {
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A `metav1.LabelSelector` (matchLabels and matchExpressions). An absent or empty selector
/// matches nothing here: workload controllers refuse to adopt everything.
pub(crate) fn label_selector_matches(
    sel: Option<&Value>,
    labels: Option<&Map<String, Value>>,
) -> bool {
    let Some(sel) = sel.and_then(Value::as_object) else {
        return false;
    };
    let empty = Map::new();
    let labels = labels.unwrap_or(&empty);
    let ml = sel.get("matchLabels").and_then(Value::as_object);
    let me = sel.get("matchExpressions").and_then(Value::as_array);
    if ml.is_none_or(Map::is_empty) && me.is_none_or(Vec::is_empty) {
        return false;
    }
    if let Some(ml) = ml
        && !selector_matches(ml, labels)
    {
        return false;
    }
    for e in me.into_iter().flatten() {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let have = labels.get(key).and_then(Value::as_str);
        let ok = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => have.is_some_and(|h| values.contains(&h)),
            "NotIn" => have.is_none_or(|h| !values.contains(&h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A label selector as the `selector` string of a Scale or an HPA status.
pub(crate) fn selector_string(sel: Option<&Value>) -> String {
    let mut parts = Vec::new();
    if let Some(ml) = sel
        .and_then(|s| s.get("matchLabels"))
        .and_then(Value::as_object)
    {
        for (k, v) in ml {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    parts.join(",")
}

/// JSON with object keys sorted, so that equal objects hash equally whatever their key order.
pub(crate) fn canonical(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&m[k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// 32-bit FNV-1a, the hash Kubernetes uses for pod-template-hash and revision names.
pub(crate) fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The characters Kubernetes uses in generated names (no vowels, no confusable digits).
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Kubernetes' `SafeEncodeString`: each byte of the decimal string mapped into [`SAFE`].
pub(crate) fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| SAFE[usize::from(b) % SAFE.len()] as char)
        .collect()
}

/// A copy without nulls, empty objects and empty lists: what decoding into Kubernetes' typed
/// structs and comparing semantically ignores (clients such as `kubectl rollout undo` send
/// `creationTimestamp: null` and `resources: {}` in templates).
pub(crate) fn prune_empty(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), prune_empty(x)))
                .filter(|(_, x)| !is_empty(x))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(prune_empty).collect()),
        other => other.clone(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The hash of a pod template (with a collision count), as a label value.
pub(crate) fn template_hash(template: &Value, collision_count: i64) -> String {
    let mut data = canonical(&prune_empty(template));
    if collision_count > 0 {
        data.push_str(&collision_count.to_string());
    }
    safe_encode(&fnv32a(data.as_bytes()).to_string())
}

/// A pod template with the `pod-template-hash` label removed and empty values pruned (to
/// compare templates as Kubernetes does, semantically).
pub(crate) fn without_hash_label(template: &Value) -> Value {
    let mut t = prune_empty(template);
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove("pod-template-hash");
        if l.is_empty()
            && let Some(m) = t.get_mut("metadata").and_then(Value::as_object_mut)
        {
            m.remove("labels");
        }
    }
    t
}

/// An int-or-percent (`maxSurge`, `maxUnavailable`) against a total; percentages round up or
/// down as asked.
pub(crate) fn int_or_percent(v: Option<&Value>, total: i64, default: &str, round_up: bool) -> i64 {
    let v = v.cloned().unwrap_or_else(|| json!(default));
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0).max(0),
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) => {
                let x = p.max(0) * total;
                if round_up { (x + 99) / 100 } else { x / 100 }
            }
            None => s.parse::<i64>().unwrap_or(0).max(0),
        },
        _ => 0,
    }
}

/// The tag of an image reference (`nginx:1.27` → `1.27`), `latest` when none.
pub(crate) fn image_tag(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag,
        None => "latest",
    }
}

/// The fully qualified form of an image reference, as containerd reports it.
pub(crate) fn full_image(image: &str) -> String {
    let first = image.split('/').next().unwrap_or("");
    let qualified = if image.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost")
    {
        image.to_string()
    } else if image.contains('/') {
        format!("docker.io/{image}")
    } else {
        format!("docker.io/library/{image}")
    };
    if image_tag_explicit(image) || image.contains('@') {
        qualified
    } else {
        format!("{qualified}:latest")
    }
}

fn image_tag_explicit(image: &str) -> bool {
    let last = image.rsplit('/').next().unwrap_or(image);
    last.contains(':')
}

/// 64 hex digits derived from `seed` (a stand-in digest or container id).
pub(crate) fn hex64(seed: &str) -> String {
    let mut out = String::with_capacity(64);
    let mut h = fnv32a(seed.as_bytes());
    for i in 0..8u32 {
        h = fnv32a(&[h.to_le_bytes(), i.to_le_bytes()].concat());
        out.push_str(&format!("{h:08x}"));
    }
    out
}

/// Seconds since `ts` (an RFC 3339 time), if it parses.
pub(crate) fn seconds_since(ts: &str) -> Option<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
    Some((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
}

/// A condition of `conditions` by type.
pub(crate) fn condition<'a>(conditions: Option<&'a Value>, ty: &str) -> Option<&'a Value> {
    conditions?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
}

/// A condition keeping `lastTransitionTime` (and `lastProbeTime`-style fields) from `old`
/// when its status did not change, as controllers do.
pub(crate) fn keep_transition(mut new: Value, old: Option<&Value>) -> Value {
    if let Some(old) = old
        && old.get("status") == new.get("status")
        && let Some(t) = old.get("lastTransitionTime")
    {
        new["lastTransitionTime"] = t.clone();
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_hash_ignores_key_order_and_changes_with_content() {
        let a = json!({"metadata": {"labels": {"app": "x", "tier": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        let b = json!({"spec": {"containers": [{"image": "nginx", "name": "c"}]}, "metadata": {"labels": {"tier": "web", "app": "x"}}});
        let c = json!({"metadata": {"labels": {"app": "x", "tier": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:2"}]}});
        assert_eq!(template_hash(&a, 0), template_hash(&b, 0));
        assert_ne!(template_hash(&a, 0), template_hash(&c, 0));
        assert_ne!(template_hash(&a, 0), template_hash(&a, 1));
        assert!(template_hash(&a, 0).bytes().all(|b| SAFE.contains(&b)));
    }

    #[test]
    fn templates_compare_semantically() {
        let sent = json!({"metadata": {"creationTimestamp": null, "labels": {"app": "x", "pod-template-hash": "abc"}},
            "spec": {"containers": [{"name": "c", "image": "nginx", "resources": {}}]}});
        let stored = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        assert_eq!(without_hash_label(&sent), without_hash_label(&stored));
        let other = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "nginx:2"}]}});
        assert_ne!(without_hash_label(&other), without_hash_label(&stored));
    }

    #[test]
    fn percentages_round_as_kubernetes_does() {
        assert_eq!(int_or_percent(None, 3, "25%", true), 1);
        assert_eq!(int_or_percent(None, 3, "25%", false), 0);
        assert_eq!(int_or_percent(Some(&json!("50%")), 5, "25%", false), 2);
        assert_eq!(int_or_percent(Some(&json!(2)), 5, "25%", false), 2);
    }

    #[test]
    fn image_tags_and_names() {
        assert_eq!(image_tag("nginx"), "latest");
        assert_eq!(image_tag("nginx:fail"), "fail");
        assert_eq!(image_tag("registry:5000/team/app"), "latest");
        assert_eq!(image_tag("registry:5000/team/app:pullfail"), "pullfail");
        assert_eq!(full_image("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(full_image("team/app:1"), "docker.io/team/app:1");
        assert_eq!(full_image("ghcr.io/x/y:2"), "ghcr.io/x/y:2");
    }

    #[test]
    fn label_selectors() {
        let labels = json!({"app": "a", "tier": "web"});
        let l = labels.as_object();
        assert!(label_selector_matches(
            Some(&json!({"matchLabels": {"app": "a"}})),
            l
        ));
        assert!(!label_selector_matches(
            Some(&json!({"matchLabels": {"app": "b"}})),
            l
        ));
        assert!(label_selector_matches(
            Some(
                &json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "db"]}]})
            ),
            l
        ));
        assert!(!label_selector_matches(
            Some(&json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]})),
            l
        ));
        assert!(!label_selector_matches(Some(&json!({})), l));
    }
}
