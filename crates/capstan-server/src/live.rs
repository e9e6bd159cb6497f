//! Live objects of an application, read from the cluster at request time: the resource tree
//! (`status.resources` plus what they own through ownerReferences), manifests with Secrets
//! masked, and the core Events of the application and its objects.

use crate::error::ApiError;
use capstan_api::application::{Application, ResourceStatus};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};

/// What a masked Secret value is replaced with: the placeholder the engine masks diffs with, so
/// that a Secret looks the same in a manifest and in a diff.
pub const MASK: &str = capstan_controller::manifests::MASK;

/// Kinds whose objects are looked up as children of an application's objects, in the
/// namespaces the application's objects live in.
const CHILD_KINDS: &[(&str, &str, &str)] = &[
    ("apps", "v1", "ReplicaSet"),
    ("", "v1", "Pod"),
    ("batch", "v1", "Job"),
];

/// One node of the resource tree.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TreeNode {
    /// API group (`""` core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Namespace (empty when cluster-scoped).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID, when live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// UIDs of the owners shown in the tree (empty for the application's own objects).
    pub parents: Vec<String>,
    /// Whether it exists in the cluster.
    pub live: bool,
    /// `Synced`/`OutOfSync` for the application's own objects; absent for owned ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<String>,
    /// Health status, for kinds that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Health message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_message: Option<String>,
    /// Creation time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// Resolves kinds to resources once per kind (discovery is a request per kind).
#[derive(Default)]
pub struct Discovery {
    known: Mutex<HashMap<Gvk, (ApiResource, bool)>>,
}

/// Group, version, kind.
type Gvk = (String, String, String);

impl Discovery {
    /// The resource of a kind, and whether it is namespaced.
    pub async fn resolve(
        &self,
        client: &kube::Client,
        group: &str,
        version: &str,
        kind: &str,
    ) -> Result<(ApiResource, bool), ApiError> {
        let key = (group.to_string(), version.to_string(), kind.to_string());
        if let Some(hit) = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(hit.clone());
        }
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|e| {
                ApiError::kube(
                    &format!("discovering {}", gvk_label(group, version, kind)),
                    e,
                )
            })?;
        let resolved = (ar, caps.scope == Scope::Namespaced);
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, resolved.clone());
        Ok(resolved)
    }
}

fn gvk_label(group: &str, version: &str, kind: &str) -> String {
    if group.is_empty() {
        format!("{version}/{kind}")
    } else {
        format!("{group}/{version}/{kind}")
    }
}

fn api_for(
    client: &kube::Client,
    ar: &ApiResource,
    namespaced: bool,
    ns: &str,
) -> Api<DynamicObject> {
    if namespaced && !ns.is_empty() {
        Api::namespaced_with(client.clone(), ns, ar)
    } else {
        Api::all_with(client.clone(), ar)
    }
}

/// The health of a live object by the engine's built-in checks.
fn health_of(obj: &Value) -> (Option<String>, Option<String>) {
    match capstan_engine::health::builtin(obj) {
        Some(h) => (Some(h.status.as_str().to_string()), h.message),
        None => (None, None),
    }
}

fn node_from_live(obj: &DynamicObject, ar: &ApiResource, parents: Vec<String>) -> TreeNode {
    let value = serde_json::to_value(obj).unwrap_or(Value::Null);
    let (health, health_message) = health_of(&value);
    TreeNode {
        group: ar.group.clone(),
        version: ar.version.clone(),
        kind: ar.kind.clone(),
        namespace: obj.metadata.namespace.clone().unwrap_or_default(),
        name: obj.metadata.name.clone().unwrap_or_default(),
        uid: obj.metadata.uid.clone(),
        parents,
        live: true,
        sync: None,
        health,
        health_message,
        created_at: obj
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
    }
}

/// The resource tree of `app`.
pub async fn tree(
    client: &kube::Client,
    discovery: &Discovery,
    app: &Application,
) -> Result<Vec<TreeNode>, ApiError> {
    let resources: Vec<ResourceStatus> = app
        .status
        .as_ref()
        .map(|s| s.resources.clone())
        .unwrap_or_default();
    let mut nodes = Vec::with_capacity(resources.len() * 3);
    let mut namespaces = BTreeSet::new();
    let mut frontier: VecDeque<String> = VecDeque::new();
    for r in &resources {
        let (ar, namespaced) = discovery
            .resolve(client, &r.group, &r.version, &r.kind)
            .await?;
        let api = api_for(client, &ar, namespaced, &r.namespace);
        let live = api.get_opt(&r.name).await.map_err(|e| {
            ApiError::kube(&format!("reading {} {}/{}", r.kind, r.namespace, r.name), e)
        })?;
        let mut node = match &live {
            Some(obj) => node_from_live(obj, &ar, Vec::new()),
            None => TreeNode {
                group: r.group.clone(),
                version: r.version.clone(),
                kind: r.kind.clone(),
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                uid: None,
                parents: Vec::new(),
                live: false,
                sync: None,
                health: None,
                health_message: None,
                created_at: None,
            },
        };
        // The controller's assessment (which includes custom health checks) wins.
        if let Some(h) = &r.health {
            node.health = Some(h.status.clone());
            node.health_message = h.message.clone();
        }
        node.sync = Some(r.status.clone());
        if let Some(uid) = &node.uid {
            frontier.push_back(uid.clone());
            if namespaced && !node.namespace.is_empty() {
                namespaces.insert(node.namespace.clone());
            }
        }
        nodes.push(node);
    }
    if frontier.is_empty() {
        return Ok(nodes);
    }
    // Candidates: every object of the child kinds in the namespaces involved, indexed by owner.
    let mut by_owner: HashMap<String, Vec<(DynamicObject, ApiResource)>> = HashMap::new();
    for (group, version, kind) in CHILD_KINDS {
        let (ar, _) = discovery.resolve(client, group, version, kind).await?;
        for ns in &namespaces {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| ApiError::kube(&format!("listing {kind}s in {ns}"), e))?;
            for obj in list.items {
                for owner in obj.metadata.owner_references.iter().flatten() {
                    by_owner
                        .entry(owner.uid.clone())
                        .or_default()
                        .push((obj.clone(), ar.clone()));
                }
            }
        }
    }
    let mut seen: HashSet<String> = frontier.iter().cloned().collect();
    while let Some(parent) = frontier.pop_front() {
        for (obj, ar) in by_owner.get(&parent).into_iter().flatten() {
            let Some(uid) = obj.metadata.uid.clone() else {
                continue;
            };
            if let Some(existing) = nodes.iter_mut().find(|n| n.uid.as_deref() == Some(&uid)) {
                if !existing.parents.contains(&parent) {
                    existing.parents.push(parent.clone());
                }
                continue;
            }
            if seen.insert(uid.clone()) {
                nodes.push(node_from_live(obj, ar, vec![parent.clone()]));
                frontier.push_back(uid);
            }
        }
    }
    Ok(nodes)
}

/// Replaces every value of a Secret's `data` and `stringData` with [`MASK`] (keys stay, so a
/// user sees which keys exist), and drops the last-applied annotation, which holds a copy.
pub fn mask_secret(obj: &mut Value) {
    capstan_controller::manifests::mask_secret(obj);
}

/// Which object a manifests request names.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ObjectQuery {
    /// API group (empty: core).
    #[serde(default)]
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace (empty: cluster-scoped).
    #[serde(default)]
    pub namespace: String,
}

/// The live manifest of an object of `app`'s tree, Secrets masked; `None` when it is not live.
pub async fn manifest(
    client: &kube::Client,
    discovery: &Discovery,
    app: &Application,
    q: &ObjectQuery,
) -> Result<Option<Value>, ApiError> {
    let nodes = tree(client, discovery, app).await?;
    let node = nodes
        .iter()
        .find(|n| {
            n.group == q.group && n.kind == q.kind && n.name == q.name && n.namespace == q.namespace
        })
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "{} {}/{} (group {:?}) is not an object of application {}/{}",
                q.kind,
                q.namespace,
                q.name,
                q.group,
                app.namespace(),
                app.name()
            ))
        })?;
    let (ar, namespaced) = discovery
        .resolve(client, &node.group, &node.version, &node.kind)
        .await?;
    let api = api_for(client, &ar, namespaced, &node.namespace);
    let live = api.get_opt(&node.name).await.map_err(|e| {
        ApiError::kube(
            &format!("reading {} {}/{}", node.kind, node.namespace, node.name),
            e,
        )
    })?;
    Ok(live.map(|obj| {
        let mut value = serde_json::to_value(&obj).unwrap_or(Value::Null);
        mask_secret(&mut value);
        value
    }))
}

/// An Event as the API returns it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
    /// The object it is about: kind, namespace, name.
    pub involved_object: Map<String, Value>,
    /// Occurrences.
    pub count: i32,
    /// First seen (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_timestamp: Option<String>,
    /// Last seen (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<String>,
    /// Who reported it.
    pub source: String,
}

/// Core Events about the Application or one of its objects, oldest first.
pub async fn events(
    client: &kube::Client,
    discovery: &Discovery,
    app: &Application,
) -> Result<Vec<EventView>, ApiError> {
    let nodes = tree(client, discovery, app).await?;
    let uids: HashSet<&str> = nodes.iter().filter_map(|n| n.uid.as_deref()).collect();
    let names: HashSet<(&str, &str, &str)> = nodes
        .iter()
        .map(|n| (n.kind.as_str(), n.namespace.as_str(), n.name.as_str()))
        .collect();
    let mut namespaces: BTreeSet<&str> = nodes
        .iter()
        .map(|n| n.namespace.as_str())
        .filter(|ns| !ns.is_empty())
        .collect();
    namespaces.insert(app.namespace());
    let mut out = Vec::new();
    for ns in namespaces {
        let api: Api<Event> = Api::namespaced(client.clone(), ns);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| ApiError::kube(&format!("listing events in {ns}"), e))?;
        for e in list.items {
            let o = &e.involved_object;
            let kind = o.kind.as_deref().unwrap_or("");
            let name = o.name.as_deref().unwrap_or("");
            let ons = o.namespace.as_deref().unwrap_or("");
            let about_app = kind == capstan_api::application::KIND
                && name == app.name()
                && ons == app.namespace();
            let about_object = o.uid.as_deref().is_some_and(|u| uids.contains(u))
                || names.contains(&(kind, ons, name));
            if !(about_app || about_object) {
                continue;
            }
            let mut involved = Map::new();
            involved.insert("kind".into(), Value::String(kind.to_string()));
            involved.insert("namespace".into(), Value::String(ons.to_string()));
            involved.insert("name".into(), Value::String(name.to_string()));
            let last = e
                .last_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()));
            out.push(EventView {
                type_: e.type_.clone().unwrap_or_else(|| "Normal".into()),
                reason: e.reason.clone().unwrap_or_default(),
                message: e.message.clone().unwrap_or_default(),
                involved_object: involved,
                count: e.count.unwrap_or(1),
                first_timestamp: e.first_timestamp.as_ref().map(|t| t.0.to_string()),
                last_timestamp: last,
                source: e
                    .source
                    .as_ref()
                    .and_then(|s| s.component.clone())
                    .or_else(|| e.reporting_component.clone())
                    .unwrap_or_default(),
            });
        }
    }
    out.sort_by(|a, b| a.last_timestamp.cmp(&b.last_timestamp));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_and_other_kinds_untouched() {
        let mut s = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"k\":\"c2VjcmV0\"}}",
                "keep": "me"}},
            "data": {"k": "c2VjcmV0"}, "stringData": {"p": "secret"}});
        mask_secret(&mut s);
        assert_eq!(s["data"]["k"], MASK);
        assert_eq!(s["stringData"]["p"], MASK);
        assert!(!s.to_string().contains("c2VjcmV0"));
        assert_eq!(s["metadata"]["annotations"]["keep"], "me");
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"}});
        mask_secret(&mut cm);
        assert_eq!(cm["data"]["k"], "v");
    }
}
