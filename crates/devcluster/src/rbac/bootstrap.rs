//! The default roles a Kubernetes API server creates when RBAC is on, and ClusterRole
//! aggregation.
//!
//! Created at start when absent (an existing object of the same name is left as the user
//! changed it): `cluster-admin` bound to `system:masters`; `system:discovery`,
//! `system:basic-user` and `system:public-info-viewer` bound to `system:authenticated`; and
//! the user-facing `admin`, `edit` and `view`, which are aggregated as on a real cluster from
//! every ClusterRole labelled `rbac.authorization.k8s.io/aggregate-to-{admin,edit,view}:
//! "true"` (so a CRD's role that carries the label extends them).
//!
//! Aggregation writes the union of the selected roles' rules into the aggregated role's
//! `rules`, as the kube-controller-manager's clusterrole-aggregation controller does; it
//! runs at start and after every ClusterRole change.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, watch};

use super::CLUSTER_ROLES;
use crate::State;
use crate::api::{self, Op};
use crate::status::ApiError;

const RBAC_V1: &str = "rbac.authorization.k8s.io/v1";
const AGG: &str = "rbac.authorization.k8s.io/aggregate-to-";
const MANAGER: &str = "clusterrole-aggregation-controller";

const RW: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const RO: &[&str] = &["get", "list", "watch"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn meta(name: &str, labels: Value) -> Value {
    let mut l = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    if let (Some(l), Some(extra)) = (l.as_object_mut(), labels.as_object()) {
        l.extend(extra.clone());
    }
    json!({"name": name, "labels": l,
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}})
}

fn cluster_role(name: &str, labels: Value, rules: Vec<Value>) -> Value {
    json!({"apiVersion": RBAC_V1, "kind": "ClusterRole", "metadata": meta(name, labels),
        "rules": rules})
}

fn aggregated(name: &str, labels: Value, selects: &str) -> Value {
    json!({"apiVersion": RBAC_V1, "kind": "ClusterRole", "metadata": meta(name, labels),
        "aggregationRule": {"clusterRoleSelectors": [
            {"matchLabels": {format!("{AGG}{selects}"): "true"}}]},
        "rules": []})
}

fn binding(name: &str, role: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> = groups
        .iter()
        .map(|g| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}))
        .collect();
    json!({"apiVersion": RBAC_V1, "kind": "ClusterRoleBinding", "metadata": meta(name, json!({})),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects})
}

/// The default ClusterRoles and ClusterRoleBindings.
fn defaults() -> (Vec<Value>, Vec<Value>) {
    let view_core = [
        "bindings",
        "configmaps",
        "endpoints",
        "events",
        "limitranges",
        "namespaces",
        "namespaces/status",
        "persistentvolumeclaims",
        "persistentvolumeclaims/status",
        "pods",
        "pods/log",
        "pods/status",
        "replicationcontrollers",
        "replicationcontrollers/scale",
        "replicationcontrollers/status",
        "resourcequotas",
        "resourcequotas/status",
        "serviceaccounts",
        "services",
        "services/status",
    ];
    let apps = [
        "controllerrevisions",
        "daemonsets",
        "daemonsets/status",
        "deployments",
        "deployments/scale",
        "deployments/status",
        "replicasets",
        "replicasets/scale",
        "replicasets/status",
        "statefulsets",
        "statefulsets/scale",
        "statefulsets/status",
    ];
    let view = vec![
        rule(&[""], &view_core, RO),
        rule(&["apps"], &apps, RO),
        rule(
            &["autoscaling"],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
            RO,
        ),
        rule(
            &["batch"],
            &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
            RO,
        ),
        rule(
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
            RO,
        ),
        rule(
            &["networking.k8s.io"],
            &["ingresses", "ingresses/status", "networkpolicies"],
            RO,
        ),
        rule(&["discovery.k8s.io"], &["endpointslices"], RO),
        rule(&["events.k8s.io"], &["events"], RO),
    ];
    let edit = vec![
        rule(
            &[""],
            &[
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "secrets",
                "services/proxy",
            ],
            RO,
        ),
        rule(&[""], &["serviceaccounts"], &["impersonate"]),
        rule(
            &[""],
            &[
                "configmaps",
                "events",
                "persistentvolumeclaims",
                "pods",
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
            RW,
        ),
        rule(
            &[""],
            &["pods/eviction", "serviceaccounts/token"],
            &["create"],
        ),
        rule(
            &["apps"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
            RW,
        ),
        rule(&["autoscaling"], &["horizontalpodautoscalers"], RW),
        rule(&["batch"], &["cronjobs", "jobs"], RW),
        rule(
            &["networking.k8s.io"],
            &["ingresses", "networkpolicies"],
            RW,
        ),
        rule(&["policy"], &["poddisruptionbudgets"], RW),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ],
        ),
    ];
    let admin = vec![
        rule(
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews"],
            &["create"],
        ),
        rule(
            &["rbac.authorization.k8s.io"],
            &["rolebindings", "roles"],
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
        ),
    ];
    let to = |what: &str| json!({format!("{AGG}{what}"): "true"});
    let roles = vec![
        json!({"apiVersion": RBAC_V1, "kind": "ClusterRole", "metadata": meta("cluster-admin", json!({})),
            "rules": [rule(&["*"], &["*"], &["*"]), {"nonResourceURLs": ["*"], "verbs": ["*"]}]}),
        cluster_role(
            "system:discovery",
            json!({}),
            vec![
                json!({"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz",
                "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"],
                "verbs": ["get"]}),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            json!({}),
            vec![
                json!({"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"],
                "verbs": ["get"]}),
            ],
        ),
        cluster_role(
            "system:basic-user",
            json!({}),
            vec![
                rule(
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    &["create"],
                ),
                rule(
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                    &["create"],
                ),
            ],
        ),
        aggregated("admin", json!({}), "admin"),
        aggregated("edit", to("admin"), "edit"),
        aggregated("view", to("edit"), "view"),
        cluster_role("system:aggregate-to-admin", to("admin"), admin),
        cluster_role("system:aggregate-to-edit", to("edit"), edit),
        cluster_role("system:aggregate-to-view", to("view"), view),
    ];
    let bindings = vec![
        binding("cluster-admin", "cluster-admin", &["system:masters"]),
        binding(
            "system:discovery",
            "system:discovery",
            &["system:authenticated"],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &["system:authenticated"],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
    ];
    (roles, bindings)
}

fn op(state: &State, resource: &str, name: Option<&str>, manager: &str) -> Result<Op, ApiError> {
    let info = state
        .registry
        .get("rbac.authorization.k8s.io", "v1", resource)
        .ok_or_else(|| ApiError::internal(format!("{resource} are not served")))?;
    Ok(Op {
        info,
        namespace: None,
        name: name.map(String::from),
        subresource: None,
        query: HashMap::new(),
        manager: manager.into(),
        manager_explicit: true,
    })
}

/// Creates the default roles and bindings that do not exist yet, then aggregates.
pub fn bootstrap(state: &State) -> Result<(), ApiError> {
    let (roles, bindings) = defaults();
    for (resource, objects) in [("clusterroles", roles), ("clusterrolebindings", bindings)] {
        let op = op(state, resource, None, "kube-apiserver")?;
        for obj in objects {
            match api::create(state, &op, obj) {
                Ok(_) => {}
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
    }
    aggregate(state);
    Ok(())
}

/// A `metav1.LabelSelector`; an empty one selects everything (as aggregation reads it).
fn selects(sel: &Value, labels: &Map<String, Value>) -> bool {
    let ml_ok = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|ml| ml.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let me_ok = sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let have = labels.get(key).and_then(Value::as_str);
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => have.is_some_and(|h| values.contains(&h)),
                "NotIn" => have.is_none_or(|h| !values.contains(&h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        });
    ml_ok && me_ok
}

/// Writes the union of the selected roles' rules into every aggregated ClusterRole whose
/// rules differ, until nothing changes (aggregated roles may select aggregated roles).
pub fn aggregate(state: &State) {
    // Each pass settles at least one more level of nesting; real hierarchies are shallow.
    for _ in 0..8 {
        if !aggregate_once(state) {
            return;
        }
    }
}

fn aggregate_once(state: &State) -> bool {
    let mut roles: Vec<Value> = state
        .store
        .all_of(CLUSTER_ROLES)
        .into_iter()
        .filter_map(|s| s.value().ok())
        .collect();
    roles.sort_by(|a, b| {
        let n = |v: &Value| {
            v.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        n(a).cmp(&n(b))
    });
    let empty = Map::new();
    let mut changed = false;
    for role in &roles {
        let Some(selectors) = role
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array)
        else {
            continue;
        };
        let name = role
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut rules: Vec<Value> = Vec::new();
        for other in &roles {
            let oname = other
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let labels = other
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            if oname == name || !selectors.iter().any(|s| selects(s, labels)) {
                continue;
            }
            for r in other
                .get("rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !rules.contains(r) {
                    rules.push(r.clone());
                }
            }
        }
        let current = role.get("rules").cloned().unwrap_or_else(|| json!([]));
        if current == Value::Array(rules.clone()) {
            continue;
        }
        let mut updated = role.clone();
        updated["rules"] = Value::Array(rules);
        let Ok(op) = op(state, "clusterroles", Some(name), MANAGER) else {
            return false;
        };
        match api::update(state, &op, updated) {
            Ok(_) => changed = true,
            // A conflict means the role changed meanwhile; its event brings us back.
            Err(e) => tracing::debug!(
                role = name,
                code = e.code,
                "aggregation not written: {}",
                e.message
            ),
        }
    }
    changed
}

/// Re-aggregates after every ClusterRole change, as the aggregation controller does.
pub fn spawn_aggregation(state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut events = state.store.subscribe_all();
        loop {
            let ev = tokio::select! {
                e = events.recv() => e,
                _ = shutdown.changed() => return,
            };
            match ev {
                Ok(e) if &*e.key == CLUSTER_ROLES => aggregate(&state),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => aggregate(&state),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}
