//! Which resources the server serves: the built-in table and the resources of established CRDs.
//!
//! The registry is read on every request (to route it) and written only when a CRD changes, so it
//! sits behind an `RwLock` and hands out `Arc`s that a request keeps for its whole life.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::apply::ListHints;

/// Verbs every ordinary resource supports.
pub(crate) const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One served resource (one group/version/resource).
pub struct ResourceInfo {
    /// API group ("" for the core group).
    pub group: String,
    /// Version, e.g. "v1".
    pub version: String,
    /// Plural resource name used in paths, e.g. "deployments".
    pub resource: String,
    /// Kind, e.g. "Deployment".
    pub kind: String,
    /// Singular lower-case name, e.g. "deployment".
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names (`kubectl get deploy`).
    pub short_names: Vec<String>,
    /// Categories (`kubectl get all`).
    pub categories: Vec<String>,
    /// Verbs on the main resource.
    pub verbs: Vec<String>,
    /// Whether the `status` subresource exists (then the main resource ignores `.status` writes).
    pub status: bool,
    /// Whether the `scale` subresource exists, with the JSON paths of replicas (spec, status)
    /// and of the label selector (status).
    pub scale: Option<ScalePaths>,
    /// Top-level fields a valid object may carry, or `None` when anything goes (schemaless CRD).
    pub top_level_fields: Option<Vec<String>>,
    /// List merge keys for patches and server-side apply.
    pub hints: ListHints,
    /// Which name rule applies to `metadata.name`.
    pub name_rule: NameRule,
    /// Extra printer columns for tables: (header, JSON path below the object).
    pub columns: Vec<(String, String)>,
    /// The CRD that defines this resource, if any (its `metadata.name`).
    pub crd: Option<String>,
}

/// Where a scale subresource reads and writes its numbers.
#[derive(Clone, Debug)]
pub struct ScalePaths {
    /// Path of the desired replica count, e.g. `.spec.replicas`.
    pub spec_replicas: String,
    /// Path of the observed replica count, e.g. `.status.replicas`.
    pub status_replicas: String,
    /// Path of the label selector string or object, e.g. `.spec.selector` (may be empty).
    pub label_selector: String,
}

/// The validation rule for object names, as Kubernetes applies it per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain: lower-case alphanumerics, '-' and '.', at most 253 characters.
    Subdomain,
    /// RFC 1123 label: lower-case alphanumerics and '-', at most 63 characters.
    Label,
    /// RFC 1035 label (Services): as a label, but must start with a letter.
    Rfc1035Label,
    /// Any path segment (RBAC objects, e.g. "system:controller").
    PathSegment,
}

impl ResourceInfo {
    /// `apiVersion` of objects of this resource.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Storage key: objects of all versions of one group/resource live together, and the
    /// events.k8s.io Events with the core ones (one storage, see [`crate::events`]).
    pub fn storage_key(&self) -> String {
        if crate::events::is_events_v1(self) {
            return "/events".to_string();
        }
        format!("{}/{}", self.group, self.resource)
    }

    /// The group/resource as Kubernetes prints it in messages ("deployments.apps").
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// Path prefix of the group version (`/api/v1` or `/apis/G/V`).
    pub fn gv_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    categories: &'static [&'static str],
    status: bool,
    scale: bool,
    fields: &'static [&'static str],
    name_rule: NameRule,
    columns: &'static [(&'static str, &'static str)],
}

const SPEC_STATUS: &[&str] = &["spec", "status"];

#[allow(clippy::too_many_arguments)]
const fn b(
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    categories: &'static [&'static str],
    status: bool,
) -> Builtin {
    Builtin {
        group,
        version,
        resource,
        kind,
        namespaced,
        short,
        categories,
        status,
        scale: false,
        fields: SPEC_STATUS,
        name_rule: NameRule::Subdomain,
        columns: &[],
    }
}

fn builtins() -> Vec<Builtin> {
    let all: &'static [&'static str] = &["all"];
    let mut v = vec![
        Builtin {
            name_rule: NameRule::Label,
            columns: &[("Status", ".status.phase")],
            ..b(
                "",
                "v1",
                "namespaces",
                "Namespace",
                false,
                &["ns"],
                &[],
                true,
            )
        },
        Builtin {
            fields: &["data", "binaryData", "immutable"],
            ..b(
                "",
                "v1",
                "configmaps",
                "ConfigMap",
                true,
                &["cm"],
                &[],
                false,
            )
        },
        Builtin {
            fields: &["data", "stringData", "type", "immutable"],
            columns: &[("Type", ".type")],
            ..b("", "v1", "secrets", "Secret", true, &[], &[], false)
        },
        Builtin {
            name_rule: NameRule::Rfc1035Label,
            columns: &[("Type", ".spec.type"), ("Cluster-IP", ".spec.clusterIP")],
            ..b("", "v1", "services", "Service", true, &["svc"], all, true)
        },
        Builtin {
            fields: &[
                "secrets",
                "imagePullSecrets",
                "automountServiceAccountToken",
            ],
            ..b(
                "",
                "v1",
                "serviceaccounts",
                "ServiceAccount",
                true,
                &["sa"],
                &[],
                false,
            )
        },
        Builtin {
            columns: &[("Status", ".status.phase")],
            ..b("", "v1", "pods", "Pod", true, &["po"], all, true)
        },
        Builtin {
            columns: &[("Status", ".status.phase")],
            ..b(
                "",
                "v1",
                "persistentvolumeclaims",
                "PersistentVolumeClaim",
                true,
                &["pvc"],
                &[],
                true,
            )
        },
        Builtin {
            fields: &["subsets"],
            ..b(
                "",
                "v1",
                "endpoints",
                "Endpoints",
                true,
                &["ep"],
                &[],
                false,
            )
        },
        Builtin {
            fields: &[
                "involvedObject",
                "reason",
                "message",
                "source",
                "firstTimestamp",
                "lastTimestamp",
                "count",
                "type",
                "eventTime",
                "series",
                "action",
                "related",
                "reportingComponent",
                "reportingInstance",
            ],
            columns: &[
                ("Type", ".type"),
                ("Reason", ".reason"),
                ("Message", ".message"),
            ],
            ..b("", "v1", "events", "Event", true, &["ev"], &[], false)
        },
        Builtin {
            scale: true,
            columns: &[
                ("Replicas", ".spec.replicas"),
                ("Available", ".status.availableReplicas"),
            ],
            ..b(
                "apps",
                "v1",
                "deployments",
                "Deployment",
                true,
                &["deploy"],
                all,
                true,
            )
        },
        Builtin {
            scale: true,
            columns: &[
                ("Replicas", ".spec.replicas"),
                ("Ready", ".status.readyReplicas"),
            ],
            ..b(
                "apps",
                "v1",
                "replicasets",
                "ReplicaSet",
                true,
                &["rs"],
                all,
                true,
            )
        },
        Builtin {
            scale: true,
            columns: &[
                ("Replicas", ".spec.replicas"),
                ("Ready", ".status.readyReplicas"),
            ],
            ..b(
                "apps",
                "v1",
                "statefulsets",
                "StatefulSet",
                true,
                &["sts"],
                all,
                true,
            )
        },
        Builtin {
            columns: &[
                ("Desired", ".status.desiredNumberScheduled"),
                ("Ready", ".status.numberReady"),
            ],
            ..b(
                "apps",
                "v1",
                "daemonsets",
                "DaemonSet",
                true,
                &["ds"],
                all,
                true,
            )
        },
        Builtin {
            columns: &[
                ("Completions", ".spec.completions"),
                ("Succeeded", ".status.succeeded"),
            ],
            ..b("batch", "v1", "jobs", "Job", true, &[], all, true)
        },
        Builtin {
            columns: &[("Schedule", ".spec.schedule"), ("Suspend", ".spec.suspend")],
            ..b(
                "batch",
                "v1",
                "cronjobs",
                "CronJob",
                true,
                &["cj"],
                all,
                true,
            )
        },
        Builtin {
            columns: &[("Class", ".spec.ingressClassName")],
            ..b(
                "networking.k8s.io",
                "v1",
                "ingresses",
                "Ingress",
                true,
                &["ing"],
                &[],
                true,
            )
        },
        b(
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "NetworkPolicy",
            true,
            &["netpol"],
            &[],
            false,
        ),
        Builtin {
            fields: &["rules"],
            name_rule: NameRule::PathSegment,
            ..b(
                "rbac.authorization.k8s.io",
                "v1",
                "roles",
                "Role",
                true,
                &[],
                &[],
                false,
            )
        },
        Builtin {
            fields: &["subjects", "roleRef"],
            name_rule: NameRule::PathSegment,
            columns: &[("Role", ".roleRef.name")],
            ..b(
                "rbac.authorization.k8s.io",
                "v1",
                "rolebindings",
                "RoleBinding",
                true,
                &[],
                &[],
                false,
            )
        },
        Builtin {
            fields: &["rules", "aggregationRule"],
            name_rule: NameRule::PathSegment,
            ..b(
                "rbac.authorization.k8s.io",
                "v1",
                "clusterroles",
                "ClusterRole",
                false,
                &[],
                &[],
                false,
            )
        },
        Builtin {
            fields: &["subjects", "roleRef"],
            name_rule: NameRule::PathSegment,
            columns: &[("Role", ".roleRef.name")],
            ..b(
                "rbac.authorization.k8s.io",
                "v1",
                "clusterrolebindings",
                "ClusterRoleBinding",
                false,
                &[],
                &[],
                false,
            )
        },
        b(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            &["api-extensions"],
            true,
        ),
        b(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            &[],
            false,
        ),
        b(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            &["pdb"],
            &[],
            true,
        ),
        b(
            "autoscaling",
            "v2",
            "horizontalpodautoscalers",
            "HorizontalPodAutoscaler",
            true,
            &["hpa"],
            all,
            true,
        ),
        Builtin {
            fields: &[
                "eventTime",
                "series",
                "reportingController",
                "reportingInstance",
                "action",
                "reason",
                "regarding",
                "related",
                "note",
                "type",
                "deprecatedSource",
                "deprecatedFirstTimestamp",
                "deprecatedLastTimestamp",
                "deprecatedCount",
            ],
            columns: &[("Type", ".type"), ("Reason", ".reason"), ("Note", ".note")],
            ..b(
                "events.k8s.io",
                "v1",
                "events",
                "Event",
                true,
                &["ev"],
                &[],
                false,
            )
        },
    ];
    // Group order of the real server: core first, then the built-in groups as above.
    v.shrink_to_fit();
    v
}

fn info_from_builtin(bi: &Builtin) -> ResourceInfo {
    let mut fields: Vec<String> = ["apiVersion", "kind", "metadata"]
        .iter()
        .chain(bi.fields.iter())
        .map(|s| s.to_string())
        .collect();
    fields.dedup();
    ResourceInfo {
        group: bi.group.into(),
        version: bi.version.into(),
        resource: bi.resource.into(),
        kind: bi.kind.into(),
        singular: bi.kind.to_ascii_lowercase(),
        namespaced: bi.namespaced,
        short_names: bi.short.iter().map(|s| s.to_string()).collect(),
        categories: bi.categories.iter().map(|s| s.to_string()).collect(),
        verbs: if bi.resource == "namespaces" {
            ALL_VERBS
                .iter()
                .filter(|v| **v != "deletecollection")
                .map(|s| s.to_string())
                .collect()
        } else {
            ALL_VERBS.iter().map(|s| s.to_string()).collect()
        },
        status: bi.status,
        scale: bi.scale.then(|| ScalePaths {
            spec_replicas: ".spec.replicas".into(),
            status_replicas: ".status.replicas".into(),
            label_selector: ".spec.selector".into(),
        }),
        top_level_fields: Some(fields),
        hints: ListHints::builtin(bi.group, bi.kind),
        name_rule: bi.name_rule,
        columns: bi
            .columns
            .iter()
            .map(|(h, p)| (h.to_string(), p.to_string()))
            .collect(),
        crd: None,
    }
}

/// A problem with a CustomResourceDefinition that makes it unservable.
#[derive(Debug)]
pub struct CrdProblem {
    /// JSON path of the offending field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn problem(field: &str, message: impl Into<String>) -> CrdProblem {
    CrdProblem {
        field: field.into(),
        message: message.into(),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// Checks a CRD and derives the resources it serves (one per served version).
pub fn resources_from_crd(crd: &Value) -> Result<Vec<ResourceInfo>, Vec<CrdProblem>> {
    let mut problems = Vec::new();
    let name = str_at(crd, &["metadata", "name"]).unwrap_or("");
    let group = str_at(crd, &["spec", "group"]).unwrap_or("");
    let plural = str_at(crd, &["spec", "names", "plural"]).unwrap_or("");
    let kind = str_at(crd, &["spec", "names", "kind"]).unwrap_or("");
    let scope = str_at(crd, &["spec", "scope"]).unwrap_or("");
    if group.is_empty() {
        problems.push(problem("spec.group", "Required value"));
    } else if !group.contains('.') {
        problems.push(problem(
            "spec.group",
            format!("Invalid value: \"{group}\": should be a domain with at least one dot"),
        ));
    }
    if plural.is_empty() {
        problems.push(problem("spec.names.plural", "Required value"));
    } else if !crate::validation::is_label(plural) {
        problems.push(problem(
            "spec.names.plural",
            format!("Invalid value: \"{plural}\": a lowercase RFC 1123 label"),
        ));
    }
    if kind.is_empty() {
        problems.push(problem("spec.names.kind", "Required value"));
    }
    if scope != "Namespaced" && scope != "Cluster" {
        problems.push(problem(
            "spec.scope",
            format!(
                "Unsupported value: \"{scope}\": supported values: \"Cluster\", \"Namespaced\""
            ),
        ));
    }
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        problems.push(problem(
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        problems.push(problem(
            "spec.versions",
            "Required value: must have exactly one version marked as storage version",
        ));
    }
    let storage = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if !versions.is_empty() && storage != 1 {
        problems.push(problem("spec.versions", format!("Invalid value: must have exactly one version marked as storage version, status.storedVersions has {storage}")));
    }
    for (i, v) in versions.iter().enumerate() {
        if v.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            problems.push(problem(
                &format!("spec.versions[{i}].name"),
                "Required value",
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let strs = |path: &str| -> Vec<String> {
        crd.pointer(path)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let singular = str_at(crd, &["spec", "names", "singular"])
        .map(String::from)
        .unwrap_or_else(|| kind.to_ascii_lowercase());
    let mut out = Vec::new();
    for v in versions {
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let version = v.get("name").and_then(Value::as_str).unwrap_or_default();
        let schema = v
            .pointer("/schema/openAPIV3Schema")
            .cloned()
            .unwrap_or(Value::Null);
        let preserve = schema
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            == Some(true);
        let top_level_fields = match schema.get("properties").and_then(Value::as_object) {
            Some(props) if !preserve => {
                let mut f: Vec<String> =
                    vec!["apiVersion".into(), "kind".into(), "metadata".into()];
                f.extend(
                    props
                        .keys()
                        .filter(|k| !f.contains(k))
                        .cloned()
                        .collect::<Vec<_>>(),
                );
                Some(f)
            }
            _ => None,
        };
        let scale = v.pointer("/subresources/scale").map(|s| ScalePaths {
            spec_replicas: s
                .get("specReplicasPath")
                .and_then(Value::as_str)
                .unwrap_or(".spec.replicas")
                .into(),
            status_replicas: s
                .get("statusReplicasPath")
                .and_then(Value::as_str)
                .unwrap_or(".status.replicas")
                .into(),
            label_selector: s
                .get("labelSelectorPath")
                .and_then(Value::as_str)
                .unwrap_or("")
                .into(),
        });
        let columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .filter_map(|c| {
                        let n = c.get("name")?.as_str()?;
                        let p = c.get("jsonPath")?.as_str()?;
                        (p != ".metadata.creationTimestamp").then(|| (n.to_string(), p.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(ResourceInfo {
            group: group.into(),
            version: version.into(),
            resource: plural.into(),
            kind: kind.into(),
            singular: singular.clone(),
            namespaced: scope == "Namespaced",
            short_names: strs("/spec/names/shortNames"),
            categories: strs("/spec/names/categories"),
            verbs: ALL_VERBS.iter().map(|s| s.to_string()).collect(),
            status: v.pointer("/subresources/status").is_some(),
            scale,
            top_level_fields,
            hints: ListHints::from_openapi_v3_schema(&schema),
            name_rule: NameRule::Subdomain,
            columns,
            crd: Some(name.into()),
        });
    }
    Ok(out)
}

/// One group in discovery order: its name and its versions (preferred first) with resources.
pub type GroupSnapshot = (String, Vec<(String, Vec<Arc<ResourceInfo>>)>);

/// The set of served resources.
pub struct Registry {
    inner: RwLock<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    /// group → version → resource → info. Group order matters for discovery, so the built-in
    /// groups keep their insertion rank and CRD groups follow in name order.
    groups: BTreeMap<String, BTreeMap<String, BTreeMap<String, Arc<ResourceInfo>>>>,
    rank: BTreeMap<String, usize>,
    /// Bumped on every change so that discovery documents can carry a fresh hash.
    generation: u64,
}

impl Registry {
    /// A registry serving the built-in resources.
    pub fn new() -> Registry {
        let mut inner = RegistryInner::default();
        for (i, bi) in builtins().iter().enumerate() {
            inner.rank.entry(bi.group.to_string()).or_insert(i);
            inner
                .groups
                .entry(bi.group.into())
                .or_default()
                .entry(bi.version.into())
                .or_default()
                .insert(bi.resource.into(), Arc::new(info_from_builtin(bi)));
        }
        Registry {
            inner: RwLock::new(inner),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, RegistryInner> {
        // A poisoned lock only means a panic elsewhere while holding it; the map is still whole
        // because every writer replaces entries in one statement.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, RegistryInner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks up a resource by group, version and plural name.
    pub fn get(&self, group: &str, version: &str, resource: &str) -> Option<Arc<ResourceInfo>> {
        self.read()
            .groups
            .get(group)?
            .get(version)?
            .get(resource)
            .cloned()
    }

    /// Whether the group/version is served at all.
    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.read()
            .groups
            .get(group)
            .is_some_and(|g| g.contains_key(version))
    }

    /// Finds the resource serving a kind in a group/version (for apply bodies, owner refs).
    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
        self.read()
            .groups
            .get(group)?
            .get(version)?
            .values()
            .find(|r| r.kind == kind)
            .cloned()
    }

    /// All served groups in discovery order, each with its versions (preferred first) and
    /// their resources.
    pub fn snapshot(&self) -> Vec<GroupSnapshot> {
        let inner = self.read();
        let mut groups: Vec<&String> = inner.groups.keys().collect();
        groups.sort_by_key(|g| {
            (
                inner.rank.get(*g).copied().unwrap_or(usize::MAX),
                (*g).clone(),
            )
        });
        groups
            .into_iter()
            .map(|g| {
                let mut versions: Vec<(String, Vec<Arc<ResourceInfo>>)> = inner.groups[g]
                    .iter()
                    .map(|(v, rs)| (v.clone(), rs.values().cloned().collect()))
                    .collect();
                versions.sort_by_key(|v| std::cmp::Reverse(version_priority(&v.0)));
                (g.clone(), versions)
            })
            .collect()
    }

    /// A number that changes whenever the served set changes.
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// Serves (or re-serves, after an update) the resources of a CRD, replacing what it served
    /// before.
    pub fn install_crd(&self, crd_name: &str, resources: Vec<ResourceInfo>) {
        let mut inner = self.write();
        remove_crd_locked(&mut inner, crd_name);
        for r in resources {
            inner
                .groups
                .entry(r.group.clone())
                .or_default()
                .entry(r.version.clone())
                .or_default()
                .insert(r.resource.clone(), Arc::new(r));
        }
        inner.generation += 1;
    }

    /// Stops serving the resources of a CRD.
    pub fn remove_crd(&self, crd_name: &str) {
        let mut inner = self.write();
        remove_crd_locked(&mut inner, crd_name);
        inner.generation += 1;
    }

    /// Whether a CRD already serves this group/plural (a second CRD may not take it over).
    pub fn is_builtin_resource(&self, group: &str, resource: &str) -> bool {
        self.read().groups.get(group).is_some_and(|g| {
            g.values()
                .any(|rs| rs.get(resource).is_some_and(|r| r.crd.is_none()))
        })
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

fn remove_crd_locked(inner: &mut RegistryInner, crd_name: &str) {
    for versions in inner.groups.values_mut() {
        for resources in versions.values_mut() {
            resources.retain(|_, r| r.crd.as_deref() != Some(crd_name));
        }
        versions.retain(|_, rs| !rs.is_empty());
    }
    inner.groups.retain(|_, vs| !vs.is_empty());
}

/// Kubernetes version priority: GA > beta > alpha, higher numbers first; others last.
pub fn version_priority(v: &str) -> (u8, u64, u64) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let Ok(major) = digits.parse::<u64>() else {
        return (0, 0, 0);
    };
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    for (prefix, level) in [("beta", 2u8), ("alpha", 1u8)] {
        if let Some(n) = tail.strip_prefix(prefix)
            && let Ok(minor) = n.parse::<u64>()
        {
            return (level, major, minor);
        }
    }
    (0, 0, 0)
}
