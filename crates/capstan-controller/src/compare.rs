//! One comparison of an application: Git (resolved, materialized, rendered) against the live
//! cache, giving per-object sync status and health.

use capstan_api::annotations as ann;
use capstan_api::application::{
    self as appapi, Application, ApplicationSource, HealthStatus, ResourceStatus,
};
use capstan_engine::diff::{self, DiffOptions, DiffStatus, IgnoreDifference};
use capstan_engine::health::{self, Health, HealthStatus as Hs};
use capstan_render::{RenderContext, SourceOptions};
use capstan_source::RepoUrl;
use kube::api::GroupVersionKind;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::Shared;
use crate::error::ControllerError;
use crate::live::{AppKey, Watched};

/// A rendered source.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The commit rendered.
    pub revision: String,
    /// The source rendered.
    pub source: ApplicationSource,
    /// The objects, namespaces set for namespaced kinds, hooks included.
    pub objects: Vec<Value>,
    /// The tool used.
    pub tool: String,
    /// Desired kinds the cluster does not serve yet, each defined by a CustomResourceDefinition
    /// among `objects`: filled in by [`prepare_kinds`].
    pub pending_kinds: Vec<PendingKind>,
}

/// The outcome of a comparison.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The desired state.
    pub desired: Desired,
    /// Live objects tracked by the application (all watched kinds of the app).
    pub live: Vec<Arc<Value>>,
    /// Per object.
    pub resources: Vec<ResourceStatus>,
    /// Roll-up.
    pub sync_status: &'static str,
    /// Roll-up health.
    pub health: HealthStatus,
    /// Objects tracked by another application (group/kind ns/name → owner).
    pub shared: Vec<String>,
    /// Container images of the live objects.
    pub images: Vec<String>,
    /// Cluster-scoped (group, kind) among the kinds seen.
    pub cluster_scoped: Vec<(String, String)>,
    /// Diff status per desired object, for the plan.
    pub diff_status: HashMap<capstan_engine::plan::ObjectRef, DiffStatus>,
    /// How many of the objects requiring pruning no sync prunes: they say `Prune=false` or
    /// `Delete=false` (their annotation, else the application's sync options).
    pub never_pruned: usize,
}

impl Comparison {
    /// Whether all that is out of sync is live objects a sync with `prune` would leave: they
    /// only require pruning, and `prune` is off or none of them may be pruned. Such a sync
    /// could change nothing (an automated one is skipped, as Argo CD skips it: with self-heal
    /// it would run again after every backoff).
    pub fn only_unprunable_left(&self, prune: bool) -> bool {
        let pruning = self.resources.iter().filter(|r| r.requires_pruning).count();
        pruning > 0
            && self
                .resources
                .iter()
                .all(|r| r.status == appapi::SYNC_SYNCED || r.requires_pruning)
            && (!prune || self.never_pruned == pruning)
    }
}

/// A kind of the desired state that discovery does not know yet, defined by a
/// `CustomResourceDefinition` among the desired objects (an operator installed together with
/// its custom resources). Its objects cannot be watched, compared or dry-run until the CRD is
/// applied and Established.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PendingKind {
    /// API group (the CRD's spec.group).
    pub group: String,
    /// The version the desired objects use (served by the CRD).
    pub version: String,
    /// Kind (the CRD's spec.names.kind).
    pub kind: String,
    /// metadata.name of the defining CRD.
    pub crd: String,
    /// Whether the CRD's spec.scope is Namespaced.
    pub namespaced: bool,
}

/// The `CustomResourceDefinition` among `objects` that defines `gvk`: same spec.group and
/// spec.names.kind, and `gvk`'s version served (`spec.versions[]` with `served: true`, or the
/// single `spec.version` of the old v1beta1 shape).
pub fn defining_crd(objects: &[Value], gvk: &GroupVersionKind) -> Option<PendingKind> {
    objects.iter().find_map(|obj| {
        let api_version = obj.get("apiVersion").and_then(Value::as_str)?;
        if obj.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition")
            || api_version.split_once('/').map(|(g, _)| g) != Some("apiextensions.k8s.io")
        {
            return None;
        }
        let spec = obj.get("spec")?;
        let str_at = |pointer: &str| spec.pointer(pointer).and_then(Value::as_str);
        if str_at("/group") != Some(gvk.group.as_str())
            || str_at("/names/kind") != Some(gvk.kind.as_str())
        {
            return None;
        }
        let served = spec
            .get("versions")
            .and_then(Value::as_array)
            .is_some_and(|versions| {
                versions.iter().any(|v| {
                    v.get("name").and_then(Value::as_str) == Some(gvk.version.as_str())
                        && v.get("served").and_then(Value::as_bool) == Some(true)
                })
            })
            || str_at("/version") == Some(gvk.version.as_str());
        if !served {
            return None;
        }
        Some(PendingKind {
            group: gvk.group.clone(),
            version: gvk.version.clone(),
            kind: gvk.kind.clone(),
            crd: obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            namespaced: str_at("/scope") != Some("Cluster"),
        })
    })
}

/// Whether the object is a hook (never compared, never pruned).
pub fn is_hook(obj: &Value) -> bool {
    let annotations = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    if ann::first(annotations, &[ann::HOOK, ann::ARGOCD_HOOK]).is_some() {
        return true;
    }
    match ann::first(annotations, &[ann::HELM_HOOK]) {
        Some(h) => h.split(',').any(|p| p.trim() != "crd-install"),
        None => false,
    }
}

/// Resolves, materializes and renders `source` at `revision` (the source's own targetRevision
/// when `None`), content with Git as seen by a ref listing begun at or after `since`
/// ([`capstan_source::RepoCache::resolve_since`]). Blocking work runs on the blocking pool.
pub async fn render(
    shared: &Shared,
    app: &Application,
    source: &ApplicationSource,
    revision: Option<&str>,
    hard: bool,
    since: std::time::Instant,
) -> Result<Desired, String> {
    let url = RepoUrl::parse(&source.repo_url)
        .map_err(|e| format!("spec.source.repoURL {:?}: {e}", source.repo_url))?;
    let rev = revision
        .map(str::to_string)
        .unwrap_or_else(|| source.target_revision.clone());
    let mut opts_json = serde_json::json!({ "path": source.path });
    for (field, value) in [
        ("chart", source.chart.clone().map(Value::String)),
        ("directory", source.directory.clone()),
        ("kustomize", source.kustomize.clone()),
        ("helm", source.helm.clone()),
    ] {
        if let Some(v) = value {
            opts_json[field] = v;
        }
    }
    let opts: SourceOptions = serde_json::from_value(opts_json)
        .map_err(|e| format!("spec.source: invalid rendering options: {e}"))?;
    let ctx = RenderContext {
        app_name: app.name().to_string(),
        namespace: dest_namespace(app),
        kube_version: None,
        api_versions: Vec::new(),
    };
    let creds = shared
        .creds
        .credentials_for(&url)
        .await
        .map_err(|e| format!("repository credentials for {url}: {e}"))?;
    let repos = Arc::clone(&shared.repos);
    let renderer = Arc::clone(&shared.renderer);
    let source_owned = source.clone();
    let recorder = Arc::clone(&shared.config.recorder);
    let joined = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let resolved = repos
            .resolve_since(&url, &creds, &rev, since)
            .map_err(|e| format!("cannot resolve revision {rev:?}: {e}"))?;
        let tree = repos
            .materialize(&url, &resolved.commit)
            .map_err(|e| format!("cannot read commit {}: {e}", resolved.commit))?;
        recorder.git_fetch_finished(started.elapsed());
        let key = (!hard).then(|| tree.tree_id.clone());
        let started = std::time::Instant::now();
        let rendered = renderer.render(&tree.root, &opts, &ctx, key.as_deref());
        recorder.render_finished(started.elapsed());
        let rendered = rendered.map_err(|e| {
            format!(
                "rendering {:?} at {}: {e}",
                opts.path,
                short(&resolved.commit)
            )
        })?;
        Ok::<_, String>(Desired {
            revision: resolved.commit,
            source: source_owned,
            objects: rendered.objects,
            tool: rendered.tool.to_string(),
            pending_kinds: Vec::new(),
        })
    })
    .await;
    match joined {
        Ok(result) => result,
        Err(e) => Err(format!("rendering task failed: {e}")),
    }
}

/// The destination namespace, `default` when unset.
pub fn dest_namespace(app: &Application) -> String {
    if app.spec.destination.namespace.is_empty() {
        "default".to_string()
    } else {
        app.spec.destination.namespace.clone()
    }
}

/// First 8 characters of a commit id.
pub fn short(commit: &str) -> &str {
    commit.get(..8).unwrap_or(commit)
}

/// The (group, version, kind) of an object.
pub fn gvk_of(obj: &Value) -> Result<GroupVersionKind, String> {
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{}: apiVersion is missing", describe(obj)))?;
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{}: kind is missing", describe(obj)))?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    Ok(GroupVersionKind::gvk(group, version, kind))
}

/// `Kind namespace/name` for messages.
pub fn describe(obj: &Value) -> String {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("object");
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    }
}

/// Starts (or finds) the watches for the desired kinds and the kinds the application had, and
/// sets the destination namespace on namespaced desired objects that name none.
///
/// A desired kind the cluster does not serve is an error naming the object, unless a
/// CustomResourceDefinition among the desired objects defines it ([`defining_crd`]): then it
/// has no watch yet, its objects take the CRD's scope, and [`compare`] reports them Missing.
pub async fn prepare_kinds(
    shared: &Shared,
    app: &Application,
    desired: &mut Desired,
) -> Result<Vec<Arc<Watched>>, String> {
    let namespace = dest_namespace(app);
    let mut kinds: HashMap<GroupVersionKind, Arc<Watched>> = HashMap::new();
    // Whether each desired kind (watched, or pending its CRD) is namespaced.
    let mut scope: HashMap<GroupVersionKind, bool> = HashMap::new();
    let mut pending_kinds = Vec::new();
    for obj in &desired.objects {
        let gvk = gvk_of(obj)?;
        if scope.contains_key(&gvk) {
            continue;
        }
        match shared.live.watch(&gvk).await {
            Ok(w) => {
                scope.insert(gvk.clone(), w.namespaced);
                kinds.insert(gvk, w);
            }
            Err(e @ ControllerError::UnknownKind { .. }) => {
                match defining_crd(&desired.objects, &gvk) {
                    Some(pending) => {
                        scope.insert(gvk, pending.namespaced);
                        pending_kinds.push(pending);
                    }
                    None => {
                        return Err(format!(
                            "{}: {e}; no CustomResourceDefinition of the application defines it",
                            describe(obj)
                        ));
                    }
                }
            }
            Err(e) => return Err(format!("{}: {e}", describe(obj))),
        }
    }
    desired.pending_kinds = pending_kinds;
    for obj in &mut desired.objects {
        let gvk = gvk_of(obj)?;
        // Every desired kind was given a scope above (or the function returned).
        let namespaced = scope.get(&gvk).copied().unwrap_or(true);
        if namespaced {
            let has_ns = obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            if !has_ns && let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("namespace".into(), Value::String(namespace.clone()));
            }
        } else if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("namespace");
        }
    }
    // Kinds the application deployed before (for objects no longer rendered). A kind that
    // disappeared from the cluster (its CRD deleted) is skipped: nothing of it can be live.
    if let Some(status) = &app.status {
        for r in &status.resources {
            let gvk = GroupVersionKind::gvk(&r.group, &r.version, &r.kind);
            if kinds.contains_key(&gvk) {
                continue;
            }
            if let Ok(w) = shared.live.watch(&gvk).await {
                kinds.insert(gvk, w);
            }
        }
    }
    Ok(kinds.into_values().collect())
}

/// The comparison options of `app`: its `ignoreDifferences` and Capstan's field manager. The
/// one definition the reconcile and the manifests/diff views share; the error names the field.
pub(crate) fn diff_options(app: &Application) -> Result<DiffOptions, String> {
    let ignore: Vec<IgnoreDifference> = app
        .spec
        .ignore_differences
        .iter()
        .map(|d| {
            serde_json::to_value(d)
                .and_then(serde_json::from_value)
                .map_err(|e| format!("spec.ignoreDifferences: {e}"))
        })
        .collect::<Result<_, _>>()?;
    DiffOptions::new(ignore, ann::FIELD_MANAGER).map_err(|e| format!("spec.ignoreDifferences: {e}"))
}

/// Refuses a destination other than the in-cluster one (the only cluster Capstan knows), with
/// the message the Application's condition shows.
pub(crate) fn check_destination(app: &Application) -> Result<(), String> {
    let dest = &app.spec.destination;
    let in_cluster = match (&dest.server, &dest.name) {
        (Some(server), _) if !server.is_empty() => server == appapi::IN_CLUSTER_SERVER,
        (_, Some(name)) if !name.is_empty() => name == appapi::IN_CLUSTER_NAME,
        _ => true,
    };
    if in_cluster {
        return Ok(());
    }
    Err(format!(
        "spec.destination: unknown cluster {}; only {} (name {}) is configured",
        dest.server
            .clone()
            .or_else(|| dest.name.clone())
            .unwrap_or_default(),
        appapi::IN_CLUSTER_SERVER,
        appapi::IN_CLUSTER_NAME
    ))
}

/// Compares the desired objects with the live ones.
pub fn compare(
    shared: &Shared,
    app: &Application,
    desired: Desired,
    kinds: &[Arc<Watched>],
) -> Result<Comparison, String> {
    let key: AppKey = (app.namespace().to_string(), app.name().to_string());
    // The status carries no diff text: the views that show one (manifests.rs) make their own.
    let diff_opts = diff_options(app)?.without_text();

    let by_gvk: HashMap<(String, String, String), &Arc<Watched>> = kinds
        .iter()
        .map(|w| {
            (
                (
                    w.resource.group.clone(),
                    w.resource.version.clone(),
                    w.resource.kind.clone(),
                ),
                w,
            )
        })
        .collect();
    let mut cluster_scoped: BTreeSet<(String, String)> = BTreeSet::new();
    for w in kinds {
        if !w.namespaced {
            cluster_scoped.insert((w.resource.group.clone(), w.resource.kind.clone()));
        }
    }
    // Desired kinds without a watch yet ([`prepare_kinds`] let through only those a desired
    // CRD defines, hooks included, so that the sync knows to wait for their CRD too).
    for pending in desired.pending_kinds.iter().filter(|p| !p.namespaced) {
        cluster_scoped.insert((pending.group.clone(), pending.kind.clone()));
    }

    let mut resources = Vec::new();
    let mut healths: Vec<Health> = Vec::new();
    let mut shared_objects = Vec::new();
    let mut diff_status = HashMap::new();
    let mut seen: BTreeSet<(String, String, String, String)> = BTreeSet::new();
    let mut live_seen: HashMap<(String, String, String, String), Arc<Value>> = HashMap::new();
    let mut images = BTreeSet::new();
    let mut all_synced = true;
    let mut never_pruned = 0;
    let sync_options = app
        .spec
        .sync_policy
        .as_ref()
        .map_or(&[][..], |p| p.sync_options.as_slice());

    for obj in &desired.objects {
        if is_hook(obj) {
            continue;
        }
        let gvk = gvk_of(obj)?;
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{}: metadata.name is missing", describe(obj)))?;
        let namespace = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        let live = by_gvk
            .get(&(gvk.group.clone(), gvk.version.clone(), gvk.kind.clone()))
            .and_then(|w| w.get(namespace, name).map(|o| (w.value(&o), o)));
        let (live_value, live) = match live {
            Some((v, o)) => (Some(v), Some(o)),
            None => (None, None),
        };
        if let Some(l) = &live
            && let Some(other) = crate::live::owner(l)
            && other != key
        {
            shared_objects.push(format!(
                "{} is tracked by application {}/{}",
                describe(obj),
                other.0,
                other.1
            ));
        }
        let d = diff::diff(Some(obj), live_value.as_deref(), &diff_opts)
            .map_err(|e| format!("{}: {e}", describe(obj)))?;
        let status = match d.status {
            DiffStatus::Synced => appapi::SYNC_SYNCED,
            _ => {
                all_synced = false;
                appapi::SYNC_OUT_OF_SYNC
            }
        };
        diff_status.insert(
            capstan_engine::plan::ObjectRef::new(&gvk.group, &gvk.kind, namespace, name),
            d.status,
        );
        let health = match &live_value {
            Some(l) => {
                collect_images(l, &mut images);
                shared.health.assess(l)
            }
            None => (!health::ignores_health(obj)).then(|| Health::status(Hs::Missing)),
        };
        if let Some(h) = &health {
            healths.push(h.clone());
        }
        let id = (
            gvk.group.clone(),
            gvk.kind.clone(),
            namespace.to_string(),
            name.to_string(),
        );
        if let Some(v) = live_value {
            // Kept for the list of live objects below: serializing a live object (managed
            // fields, status) is a large part of a comparison's cost, once is enough.
            live_seen.insert(id.clone(), v);
        }
        seen.insert(id);
        resources.push(ResourceStatus {
            group: gvk.group.clone(),
            version: gvk.version.clone(),
            kind: gvk.kind.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            status: status.to_string(),
            health: health.map(to_api_health),
            requires_pruning: false,
        });
    }

    let mut live_values = Vec::new();
    for (watched, obj) in shared.live.tracked_by(kinds, &key) {
        let resource = &watched.resource;
        let namespace = obj.metadata.namespace.clone().unwrap_or_default();
        let name = obj.metadata.name.clone().unwrap_or_default();
        let id = (
            resource.group.clone(),
            resource.kind.clone(),
            namespace.clone(),
            name.clone(),
        );
        let value = match live_seen.remove(&id) {
            Some(v) => v,
            None => watched.value(&obj),
        };
        if !seen.contains(&id) && !is_hook(&value) {
            all_synced = false;
            if capstan_engine::plan::never_pruned(&value, sync_options) {
                never_pruned += 1;
            }
            resources.push(ResourceStatus {
                group: resource.group.clone(),
                version: resource.version.clone(),
                kind: resource.kind.clone(),
                namespace,
                name,
                status: appapi::SYNC_OUT_OF_SYNC.to_string(),
                health: shared.health.assess(&value).map(to_api_health),
                requires_pruning: true,
            });
        }
        live_values.push(value);
    }
    resources.sort_by(|a, b| {
        (&a.group, &a.kind, &a.namespace, &a.name).cmp(&(&b.group, &b.kind, &b.namespace, &b.name))
    });
    let worst = health::aggregate(healths.iter());
    let message = healths
        .iter()
        .find(|h| h.status == worst && h.message.is_some())
        .and_then(|h| h.message.clone());
    Ok(Comparison {
        desired,
        live: live_values,
        resources,
        sync_status: if all_synced {
            appapi::SYNC_SYNCED
        } else {
            appapi::SYNC_OUT_OF_SYNC
        },
        health: HealthStatus {
            status: worst.to_string(),
            message: if worst == Hs::Healthy { None } else { message },
        },
        shared: shared_objects,
        images: images.into_iter().collect(),
        cluster_scoped: cluster_scoped.into_iter().collect(),
        diff_status,
        never_pruned,
    })
}

/// The engine's health as the API's.
pub fn to_api_health(h: Health) -> HealthStatus {
    HealthStatus {
        status: h.status.to_string(),
        message: h.message,
    }
}

fn collect_images(obj: &Value, out: &mut BTreeSet<String>) {
    for pointer in [
        "/spec/template/spec/containers",
        "/spec/template/spec/initContainers",
        "/spec/containers",
        "/spec/jobTemplate/spec/template/spec/containers",
    ] {
        if let Some(list) = obj.pointer(pointer).and_then(Value::as_array) {
            for c in list {
                if let Some(image) = c.get("image").and_then(Value::as_str) {
                    out.insert(image.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd(versions: Value, scope: &str) -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": scope,
                "names": {"kind": "Widget", "plural": "widgets"},
                "versions": versions,
            },
        })
    }

    fn widget(version: &str) -> GroupVersionKind {
        GroupVersionKind::gvk("example.com", version, "Widget")
    }

    #[test]
    fn a_crd_defines_its_group_kind_and_served_versions_only() {
        let objects = vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
            crd(
                json!([{"name": "v1", "served": true, "storage": true},
                       {"name": "v2", "served": false, "storage": false}]),
                "Namespaced",
            ),
        ];
        assert_eq!(
            defining_crd(&objects, &widget("v1")),
            Some(PendingKind {
                group: "example.com".into(),
                version: "v1".into(),
                kind: "Widget".into(),
                crd: "widgets.example.com".into(),
                namespaced: true,
            })
        );
        // Declared but not served, not declared, another kind, another group.
        assert_eq!(defining_crd(&objects, &widget("v2")), None);
        assert_eq!(defining_crd(&objects, &widget("v3")), None);
        assert_eq!(
            defining_crd(
                &objects,
                &GroupVersionKind::gvk("example.com", "v1", "Gadget")
            ),
            None
        );
        assert_eq!(
            defining_crd(
                &objects,
                &GroupVersionKind::gvk("other.com", "v1", "Widget")
            ),
            None
        );
        // No CRD at all.
        assert_eq!(defining_crd(&objects[..1], &widget("v1")), None);
    }

    #[test]
    fn the_crd_scope_and_the_old_single_version_shape_are_read() {
        let cluster = crd(json!([{"name": "v1", "served": true}]), "Cluster");
        assert!(!defining_crd(&[cluster], &widget("v1")).unwrap().namespaced);

        let mut old = crd(Value::Null, "Namespaced");
        old["apiVersion"] = json!("apiextensions.k8s.io/v1beta1");
        old["spec"]["version"] = json!("v1alpha1");
        assert!(defining_crd(&[old], &widget("v1alpha1")).is_some());

        // Something merely called CustomResourceDefinition in another group defines nothing.
        let mut impostor = crd(json!([{"name": "v1", "served": true}]), "Namespaced");
        impostor["apiVersion"] = json!("example.com/v1");
        assert_eq!(defining_crd(&[impostor], &widget("v1")), None);
    }
}
