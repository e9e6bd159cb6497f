//! What the merge algorithms need to know about an object's schema: which lists are associative
//! (and by which keys), which are sets, which maps and structs are atomic, and the strategic
//! merge patch strategy of every list.
//!
//! Only the paths that differ from the defaults are described. Defaults, as in Kubernetes'
//! structured-merge-diff for types without a schema: maps are granular, lists are atomic, and a
//! strategic merge patch replaces a list.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use serde_json::Value;

/// How server-side apply treats a list.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum ListType {
    /// The list is one value, owned and replaced as a whole.
    #[default]
    Atomic,
    /// A list of scalars merged as a set (`v:` elements).
    Set,
    /// An associative list: items are identified by these key fields (`k:` elements), sorted
    /// by name. A key missing from an item takes the default given here, if any (ports'
    /// `protocol: TCP`).
    Map(Vec<(String, Option<Value>)>),
}

/// How a strategic merge patch treats a list (the `patchStrategy` / `patchMergeKey` tags).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum SmpList {
    /// The patch's list replaces the live list.
    #[default]
    Replace,
    /// Scalars merged as a set (`finalizers`).
    MergePrimitive,
    /// Objects merged by this key field.
    MergeKey(String),
}

/// Schema knowledge about one position in an object.
#[derive(Clone, Debug, Default)]
pub(crate) struct Node {
    /// Known fields of a struct-like map.
    pub fields: HashMap<String, Node>,
    /// Schema of list items, or of the values of a map with arbitrary keys.
    pub elem: Option<Box<Node>>,
    /// Server-side apply list semantics.
    pub list: ListType,
    /// Strategic merge patch list semantics.
    pub smp: SmpList,
    /// The map or struct is one value for server-side apply (`x-kubernetes-map-type: atomic`,
    /// `structType=atomic`).
    pub atomic: bool,
    /// A map with arbitrary keys (labels, data): its entries are members of field sets
    /// themselves, and its values follow `elem`.
    pub free_keys: bool,
    /// Everything below is untyped (`x-kubernetes-preserve-unknown-fields`): maps have arbitrary
    /// keys, lists are atomic.
    pub deduced: bool,
    /// A struct or list the API server always serializes (a non-pointer Go struct such as
    /// `spec`, a list without omitempty such as `containers`), so its first appearance is not
    /// itself a change an updater owns.
    pub implicit: bool,
}

static EMPTY: LazyLock<Node> = LazyLock::new(Node::default);
static DEDUCED: LazyLock<Node> = LazyLock::new(|| Node {
    free_keys: true,
    deduced: true,
    ..Node::default()
});

impl Node {
    /// The schema of map field `name` (unknown fields get the defaults).
    pub(crate) fn field(&self, name: &str) -> &Node {
        if let Some(n) = self.fields.get(name) {
            return n;
        }
        if self.free_keys
            && let Some(e) = &self.elem
        {
            return e;
        }
        if self.deduced { &DEDUCED } else { &EMPTY }
    }

    /// The schema of this list's items.
    pub(crate) fn item(&self) -> &Node {
        match &self.elem {
            Some(e) => e,
            None if self.deduced => &DEDUCED,
            None => &EMPTY,
        }
    }

    /// Whether a child map field is a declared struct field (not an entry of a free-key map).
    pub(crate) fn is_named_field(&self, name: &str) -> bool {
        self.fields.contains_key(name) || !self.free_keys
    }

    fn at(&mut self, path: &str) -> &mut Node {
        let mut node = self;
        for seg in path.split('.').filter(|s| !s.is_empty()) {
            let (name, items) = match seg.strip_suffix("[]") {
                Some(n) => (n, true),
                None => (seg, false),
            };
            node = if name == "*" {
                node.free_keys = true;
                node.elem.get_or_insert_with(Box::default)
            } else {
                node.fields.entry(name.to_string()).or_default()
            };
            if items {
                node = node.elem.get_or_insert_with(Box::default);
            }
        }
        node
    }

    fn map_list(&mut self, path: &str, keys: &[&str], smp_key: &str) {
        let n = self.at(path);
        let mut keys: Vec<(String, Option<Value>)> = keys
            .iter()
            .map(|k| {
                let default = (*k == "protocol").then(|| Value::String("TCP".to_string()));
                (k.to_string(), default)
            })
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        n.list = ListType::Map(keys);
        n.smp = SmpList::MergeKey(smp_key.to_string());
    }

    fn set_list(&mut self, path: &str) {
        let n = self.at(path);
        n.list = ListType::Set;
        n.smp = SmpList::MergePrimitive;
    }

    fn atomic(&mut self, path: &str) {
        self.at(path).atomic = true;
    }

    fn free(&mut self, path: &str) {
        self.at(path).free_keys = true;
    }

    fn implicit(&mut self, path: &str) {
        self.at(path).implicit = true;
    }

    /// Merges `other` into `self` (other wins on conflicting flags).
    fn overlay(&mut self, other: &Node) {
        for (k, v) in &other.fields {
            self.fields.entry(k.clone()).or_default().overlay(v);
        }
        if let Some(e) = &other.elem {
            self.elem.get_or_insert_with(Box::default).overlay(e);
        }
        if other.list != ListType::Atomic {
            self.list = other.list.clone();
        }
        if other.smp != SmpList::Replace {
            self.smp = other.smp.clone();
        }
        self.atomic |= other.atomic;
        self.free_keys |= other.free_keys;
        self.implicit |= other.implicit;
    }
}

/// Schema hints for one kind: how lists and maps merge under strategic merge patch and
/// server-side apply. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct ListHints {
    pub(crate) root: Arc<Node>,
    strategic: bool,
}

fn object_meta(root: &mut Node, prefix: &str) {
    root.implicit(prefix);
    root.free(&format!("{prefix}.labels"));
    root.free(&format!("{prefix}.annotations"));
    root.set_list(&format!("{prefix}.finalizers"));
    root.map_list(&format!("{prefix}.ownerReferences"), &["uid"], "uid");
}

fn container(root: &mut Node, path: &str) {
    root.map_list(path, &["name"], "name");
    root.map_list(
        &format!("{path}[].ports"),
        &["containerPort", "protocol"],
        "containerPort",
    );
    root.map_list(&format!("{path}[].env"), &["name"], "name");
    root.map_list(
        &format!("{path}[].volumeMounts"),
        &["mountPath"],
        "mountPath",
    );
    root.map_list(
        &format!("{path}[].volumeDevices"),
        &["devicePath"],
        "devicePath",
    );
    root.free(&format!("{path}[].resources.limits"));
    root.free(&format!("{path}[].resources.requests"));
    root.map_list(&format!("{path}[].resources.claims"), &["name"], "name");
}

fn pod_spec(root: &mut Node, p: &str) {
    root.implicit(p);
    container(root, &format!("{p}.containers"));
    container(root, &format!("{p}.initContainers"));
    container(root, &format!("{p}.ephemeralContainers"));
    root.map_list(&format!("{p}.volumes"), &["name"], "name");
    root.map_list(&format!("{p}.imagePullSecrets"), &["name"], "name");
    root.map_list(&format!("{p}.hostAliases"), &["ip"], "ip");
    root.map_list(
        &format!("{p}.topologySpreadConstraints"),
        &["topologyKey", "whenUnsatisfiable"],
        "topologyKey",
    );
    root.map_list(&format!("{p}.schedulingGates"), &["name"], "name");
    root.map_list(&format!("{p}.resourceClaims"), &["name"], "name");
    root.atomic(&format!("{p}.nodeSelector"));
    root.free(&format!("{p}.nodeSelector"));
    root.free(&format!("{p}.overhead"));
    root.free(&format!("{p}.resources.limits"));
    root.free(&format!("{p}.resources.requests"));
    // `containers` is the one list a pod spec always serializes (no omitempty).
    root.implicit(&format!("{p}.containers"));
}

fn pod_template(root: &mut Node, p: &str) {
    root.implicit(p);
    object_meta(root, &format!("{p}.metadata"));
    pod_spec(root, &format!("{p}.spec"));
}

fn conditions(root: &mut Node, path: &str) {
    root.map_list(path, &["type"], "type");
}

fn workload(root: &mut Node, spec: &str) {
    root.atomic(&format!("{spec}.selector"));
    pod_template(root, &format!("{spec}.template"));
}

fn build(group: &str, kind: &str) -> Node {
    let mut n = Node::default();
    object_meta(&mut n, "metadata");
    n.implicit("spec");
    n.implicit("status");
    match (group, kind) {
        ("", "Pod") => {
            pod_spec(&mut n, "spec");
            conditions(&mut n, "status.conditions");
            n.map_list("status.podIPs", &["ip"], "ip");
            n.map_list("status.hostIPs", &["ip"], "ip");
        }
        ("", "PodTemplate") => pod_template(&mut n, "template"),
        ("", "ReplicationController") => {
            n.atomic("spec.selector");
            n.free("spec.selector");
            pod_template(&mut n, "spec.template");
            conditions(&mut n, "status.conditions");
        }
        ("", "Service") => {
            n.map_list("spec.ports", &["port", "protocol"], "port");
            n.atomic("spec.selector");
            n.free("spec.selector");
            conditions(&mut n, "status.conditions");
        }
        ("", "ConfigMap") => {
            n.free("data");
            n.free("binaryData");
        }
        ("", "Secret") => {
            n.free("data");
            n.free("stringData");
        }
        ("", "ServiceAccount") => n.map_list("secrets", &["name"], "name"),
        ("", "Namespace") => conditions(&mut n, "status.conditions"),
        ("", "PersistentVolumeClaim") => {
            n.atomic("spec.selector");
            n.free("spec.resources.requests");
            n.free("spec.resources.limits");
            n.free("status.capacity");
            n.free("status.allocatedResources");
            conditions(&mut n, "status.conditions");
        }
        ("apps", "Deployment") => {
            workload(&mut n, "spec");
            n.implicit("spec.strategy");
            conditions(&mut n, "status.conditions");
        }
        ("apps", "ReplicaSet") | ("apps", "DaemonSet") | ("apps", "StatefulSet") => {
            workload(&mut n, "spec");
            n.implicit("spec.updateStrategy");
            conditions(&mut n, "status.conditions");
        }
        ("batch", "Job") => {
            workload(&mut n, "spec");
            conditions(&mut n, "status.conditions");
        }
        ("batch", "CronJob") => {
            n.implicit("spec.jobTemplate");
            n.implicit("spec.jobTemplate.spec");
            object_meta(&mut n, "spec.jobTemplate.metadata");
            workload(&mut n, "spec.jobTemplate.spec");
        }
        ("networking.k8s.io", "NetworkPolicy") => n.atomic("spec.podSelector"),
        ("policy", "PodDisruptionBudget") => {
            n.atomic("spec.selector");
            n.free("status.disruptedPods");
            conditions(&mut n, "status.conditions");
        }
        ("autoscaling", "HorizontalPodAutoscaler") => conditions(&mut n, "status.conditions"),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            conditions(&mut n, "status.conditions");
        }
        _ => {}
    }
    n
}

const BUILTIN_KINDS: &[(&str, &str)] = &[
    ("", "Pod"),
    ("", "PodTemplate"),
    ("", "ReplicationController"),
    ("", "Service"),
    ("", "ConfigMap"),
    ("", "Secret"),
    ("", "ServiceAccount"),
    ("", "Namespace"),
    ("", "PersistentVolumeClaim"),
    ("", "Endpoints"),
    ("", "Event"),
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("apps", "ControllerRevision"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("networking.k8s.io", "Ingress"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("policy", "PodDisruptionBudget"),
    ("autoscaling", "HorizontalPodAutoscaler"),
    ("coordination.k8s.io", "Lease"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("events.k8s.io", "Event"),
];

static BUILTIN: LazyLock<HashMap<(&'static str, &'static str), Arc<Node>>> = LazyLock::new(|| {
    BUILTIN_KINDS
        .iter()
        .map(|&(g, k)| ((g, k), Arc::new(build(g, k))))
        .collect()
});

static GENERIC: LazyLock<Arc<Node>> = LazyLock::new(|| Arc::new(build("", "")));

/// The `metadata` hints every object shares, to graft onto a custom resource's schema.
static META_ONLY: LazyLock<Node> = LazyLock::new(|| build("", ""));

impl ListHints {
    /// Hints for a built-in kind (`group` is `""` for core/v1). Unknown kinds get the
    /// `metadata` rules and the defaults everywhere else.
    pub fn builtin(group: &str, kind: &str) -> ListHints {
        let root = BUILTIN
            .get(&(group, kind))
            .cloned()
            .unwrap_or_else(|| GENERIC.clone());
        ListHints {
            root,
            strategic: true,
        }
    }

    /// Hints from a CRD version's `openAPIV3Schema`: `x-kubernetes-list-type` (atomic, set,
    /// map), `x-kubernetes-list-map-keys` (with the keys' `default`s), `x-kubernetes-map-type`,
    /// `additionalProperties` and `x-kubernetes-preserve-unknown-fields`. Custom resources do not
    /// support strategic merge patch (see [`ListHints::supports_strategic_merge`]).
    pub fn from_openapi_v3_schema(schema: &Value) -> ListHints {
        let mut root = schema_node(schema);
        let meta = META_ONLY.clone();
        root.overlay(&meta);
        ListHints {
            root: Arc::new(root),
            strategic: false,
        }
    }

    /// Whether `application/strategic-merge-patch+json` applies to this kind. Kubernetes answers
    /// 415 Unsupported Media Type for custom resources.
    pub fn supports_strategic_merge(&self) -> bool {
        self.strategic
    }
}

fn schema_node(s: &Value) -> Node {
    let mut n = Node::default();
    let Value::Object(m) = s else {
        return n;
    };
    if let Some(Value::Object(props)) = m.get("properties") {
        for (k, v) in props {
            n.fields.insert(k.clone(), schema_node(v));
        }
    }
    match m.get("additionalProperties") {
        Some(ap @ Value::Object(_)) => {
            n.free_keys = true;
            n.elem = Some(Box::new(schema_node(ap)));
        }
        Some(Value::Bool(true)) => {
            n.free_keys = true;
            n.elem = Some(Box::new(DEDUCED.clone()));
        }
        _ => {}
    }
    if let Some(items) = m.get("items") {
        n.elem = Some(Box::new(schema_node(items)));
    }
    let preserve = m.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if preserve && n.fields.is_empty() && n.elem.is_none() {
        n.deduced = true;
        n.free_keys = true;
    } else if preserve && n.elem.is_none() {
        // Declared fields keep their schema; any other field is untyped.
        n.free_keys = true;
        n.elem = Some(Box::new(DEDUCED.clone()));
    }
    if m.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic") {
        n.atomic = true;
    }
    match m.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            n.list = ListType::Set;
            n.smp = SmpList::MergePrimitive;
        }
        Some("map") => {
            let keys: Vec<String> = m
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|ks| {
                    ks.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            if !keys.is_empty() {
                let item_props = m.get("items").and_then(|i| i.get("properties"));
                let mut map_keys: Vec<(String, Option<Value>)> = keys
                    .iter()
                    .map(|k| {
                        let default = item_props
                            .and_then(|p| p.get(k))
                            .and_then(|p| p.get("default"))
                            .cloned();
                        (k.clone(), default)
                    })
                    .collect();
                map_keys.sort_by(|a, b| a.0.cmp(&b.0));
                n.list = ListType::Map(map_keys);
                if let [single] = keys.as_slice() {
                    n.smp = SmpList::MergeKey(single.clone());
                }
            }
        }
        _ => {}
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builtin_deployment_knows_pod_template_lists() {
        let h = ListHints::builtin("apps", "Deployment");
        let c = h
            .root
            .field("spec")
            .field("template")
            .field("spec")
            .field("containers");
        assert_eq!(c.list, ListType::Map(vec![("name".into(), None)]));
        let ports = c.item().field("ports");
        assert_eq!(
            ports.list,
            ListType::Map(vec![
                ("containerPort".into(), None),
                ("protocol".into(), Some(json!("TCP")))
            ])
        );
        assert_eq!(ports.smp, SmpList::MergeKey("containerPort".into()));
        assert!(h.root.field("spec").field("selector").atomic);
        assert!(h.supports_strategic_merge());
        // Unknown lists are atomic and replaced.
        let args = c.item().field("args");
        assert_eq!(args.list, ListType::Atomic);
        assert_eq!(args.smp, SmpList::Replace);
    }

    #[test]
    fn cronjob_template_path_is_deep() {
        let h = ListHints::builtin("batch", "CronJob");
        let c = h
            .root
            .field("spec")
            .field("jobTemplate")
            .field("spec")
            .field("template")
            .field("spec")
            .field("containers");
        assert_eq!(c.smp, SmpList::MergeKey("name".into()));
    }

    #[test]
    fn crd_schema_hints() {
        let schema = json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "routes": {
                            "type": "array",
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["host", "port"],
                            "items": {"type": "object", "properties": {
                                "host": {"type": "string"},
                                "port": {"type": "integer", "default": 80}
                            }}
                        },
                        "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                        "selector": {"type": "object", "x-kubernetes-map-type": "atomic",
                                     "additionalProperties": {"type": "string"}},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                }
            }
        });
        let h = ListHints::from_openapi_v3_schema(&schema);
        assert!(!h.supports_strategic_merge());
        let spec = h.root.field("spec");
        assert_eq!(
            spec.field("routes").list,
            ListType::Map(vec![
                ("host".into(), None),
                ("port".into(), Some(json!(80)))
            ])
        );
        assert_eq!(spec.field("tags").list, ListType::Set);
        assert!(spec.field("selector").atomic);
        assert!(spec.field("extra").deduced);
        let partly = ListHints::from_openapi_v3_schema(&json!({"type": "object", "properties": {
            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                     "properties": {"known": {"type": "array", "x-kubernetes-list-type": "set"}}}}}));
        let spec = partly.root.field("spec");
        assert_eq!(spec.field("known").list, ListType::Set);
        assert!(spec.is_named_field("known"));
        assert!(!spec.is_named_field("other"));
        assert!(spec.field("other").deduced);
        assert!(spec.field("extra").field("anything").free_keys);
        // ObjectMeta rules are grafted on.
        assert_eq!(
            h.root.field("metadata").field("finalizers").list,
            ListType::Set
        );
        assert!(h.root.field("metadata").field("labels").free_keys);
    }
}
