//! The sync plan: which objects to apply, create, replace and prune, in which order.
//!
//! Order of the plan (each group ordered by wave, then kind, then namespace and name):
//!
//! 1. the destination Namespace when `CreateNamespace=true` and it does not exist yet;
//! 2. [`Stage::PreSync`] hooks;
//! 3. [`Stage::Sync`]: the desired objects and `Sync` hooks, waves ascending, kinds in the order
//!    of dependency (Namespace … ConfigMap … Service … Deployment … Ingress, custom resources
//!    last);
//! 4. [`Stage::Prune`]: live objects no longer desired, waves *descending*, kinds reversed;
//! 5. [`Stage::PostSync`] hooks;
//! 6. [`Stage::PruneLast`]: prunes of objects (or applications) with `PruneLast=true`;
//! 7. [`Stage::SyncFail`] hooks, which the executor runs only when the sync failed.
//!
//! Waves come from `capstan.dev/sync-wave` (or `argocd.argoproj.io/sync-wave`), default 0; a Helm
//! hook without one uses `helm.sh/hook-weight`. Hooks come from `capstan.dev/hook` (or Argo CD's
//! spelling; it wins over Helm's) or `helm.sh/hook` (`pre-install`/`pre-upgrade` → PreSync,
//! `post-install`/`post-upgrade` → PostSync, `crd-install` → an ordinary object; `test*` only when
//! [`PlanOptions::run_helm_tests`] (as PostSync hooks); delete and rollback hooks never run in a
//! sync). Hooks are created on every sync, never pruned and never part of the diff.
//!
//! Every object applied carries the tracking annotation of the application. The Namespace made
//! for `CreateNamespace=true` does not: it is not part of the application, so it is never pruned
//! with it.

mod order;

use capstan_api::TrackingId;
use capstan_api::annotations as ann;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::diff::{DiffStatus, group_of};

/// Identifies an object: group, kind, namespace (`""` when cluster-scoped), name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectRef {
    /// API group (`""` for the core group).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace (`""` for cluster-scoped objects).
    pub namespace: String,
    /// Name (for a hook with only `generateName`, that prefix).
    pub name: String,
}

impl ObjectRef {
    /// A reference from its parts.
    pub fn new(group: &str, kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            group: group.into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.group.is_empty() {
            write!(f, "{}/", self.group)?;
        }
        write!(f, "{}", self.kind)?;
        if self.namespace.is_empty() {
            write!(f, " {}", self.name)
        } else {
            write!(f, " {}/{}", self.namespace, self.name)
        }
    }
}

/// A hook phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Phase {
    /// Before anything is applied (migrations, backups).
    PreSync,
    /// Together with the objects.
    Sync,
    /// After every object is applied and healthy.
    PostSync,
    /// When the sync failed.
    SyncFail,
}

/// Where a step sits in the plan; the plan is sorted by stage, then wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Stage {
    /// The destination namespace, made before anything else (`CreateNamespace=true`).
    Namespace,
    /// PreSync hooks.
    PreSync,
    /// Desired objects and Sync hooks.
    Sync,
    /// Pruning of objects no longer desired.
    Prune,
    /// PostSync hooks.
    PostSync,
    /// Pruning of objects marked `PruneLast=true`.
    PruneLast,
    /// SyncFail hooks (run only when the sync failed).
    SyncFail,
}

/// When a hook object is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum HookDeletePolicy {
    /// After it succeeded.
    HookSucceeded,
    /// After it failed.
    HookFailed,
    /// Before a new one is created (the default).
    BeforeHookCreation,
}

/// Deletion propagation of a prune (`PrunePropagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub enum PropagationPolicy {
    /// Dependents are deleted first; the object goes last.
    #[default]
    Foreground,
    /// The object goes at once; dependents are collected afterwards.
    Background,
    /// Dependents are left in place.
    Orphan,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Action {
    /// Apply the object. `server_side`: server-side apply (with the `capstan` field manager,
    /// conflicts forced: Git wins); otherwise a client-side apply.
    Apply {
        /// Server-side apply (the default; `ServerSideApply=false` turns it off).
        server_side: bool,
        /// `Force=true`: when the apply is refused (an immutable field changed), delete and
        /// re-create the object.
        force: bool,
    },
    /// Create the object (a hook with `generateName`, which cannot be applied by name).
    Create,
    /// Replace the object (`Replace=true`); `force`: delete and re-create when replace fails
    /// (`Force=true`).
    Replace {
        /// Delete and re-create.
        force: bool,
    },
    /// Delete a live object no longer desired.
    Prune {
        /// Deletion propagation.
        propagation: PropagationPolicy,
    },
}

/// Hook details of a step that runs a hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookInfo {
    /// The phase the hook runs in.
    pub phase: Phase,
    /// When the hook object is deleted.
    pub delete_policies: Vec<HookDeletePolicy>,
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncStep {
    /// Where the step sits.
    pub stage: Stage,
    /// Its wave.
    pub wave: i32,
    /// What to do.
    pub action: Action,
    /// Which object.
    pub object_ref: ObjectRef,
    /// The object to apply (tracking annotation and namespace set), or the live object to prune.
    pub object: Value,
    /// Set for hooks.
    pub hook: Option<HookInfo>,
    /// `false` with `Validate=false`: skip schema validation.
    pub validate: bool,
}

/// An object deliberately left out of the plan, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The object.
    pub object_ref: ObjectRef,
    /// Why, in words.
    pub reason: String,
}

/// The ordered plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncPlan {
    /// Steps in execution order, grouped by (stage, wave).
    pub steps: Vec<SyncStep>,
    /// Objects left out (Skip hooks, unsupported Helm hooks, Synced objects with
    /// `ApplyOutOfSyncOnly`, prunes refused by `Prune=false`/`Delete=false` or because pruning
    /// is off).
    pub skipped: Vec<Skipped>,
    /// Objects with `Delete=false`: never deleted, not even when the application is deleted.
    pub retained: Vec<ObjectRef>,
}

impl SyncPlan {
    /// The distinct (stage, wave) groups in order: the executor applies one group, waits for it
    /// to become healthy, then moves on.
    pub fn groups(&self) -> Vec<(Stage, i32)> {
        let mut out: Vec<(Stage, i32)> = Vec::new();
        for s in &self.steps {
            if out.last() != Some(&(s.stage, s.wave)) {
                out.push((s.stage, s.wave));
            }
        }
        out
    }
}

/// A plan that cannot be made; the message names the object and annotation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// An object without apiVersion, kind or name.
    #[error("object #{index} is invalid: {reason}")]
    InvalidObject {
        /// Position among the desired (or live) objects.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// An annotation with a value that cannot be read.
    #[error("{object}: annotation {annotation}: {reason}")]
    InvalidAnnotation {
        /// The object.
        object: Box<ObjectRef>,
        /// The annotation name.
        annotation: String,
        /// What is wrong.
        reason: String,
    },
    /// A sync option with a value that cannot be read.
    #[error("sync option {option:?}: {reason}")]
    InvalidSyncOption {
        /// The option as written.
        option: String,
        /// What is wrong.
        reason: String,
    },
    /// Two desired objects with the same identity.
    #[error("{0} is defined more than once in the desired manifests")]
    Duplicate(Box<ObjectRef>),
    /// The render is empty but the cluster is not: pruning would delete the whole application.
    #[error(
        "refusing to prune all {live} live objects: the desired manifests are empty (an empty render is usually a mistake; set allowEmpty to prune everything)"
    )]
    EmptyDesired {
        /// How many live objects would be deleted.
        live: usize,
    },
}

/// Inputs of [`plan`] besides the objects.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Namespace of the Application resource (for the tracking id).
    pub app_namespace: String,
    /// Name of the Application resource (for the tracking id).
    pub app_name: String,
    /// Namespace given to namespaced objects that name none.
    pub destination_namespace: String,
    /// Whether the destination namespace exists in the cluster (for `CreateNamespace=true`).
    pub destination_namespace_exists: bool,
    /// Application sync options, `Key=Value` (`CreateNamespace=true`, `PruneLast=true`, …).
    pub sync_options: Vec<String>,
    /// Whether pruning is enabled for this sync (off: extraneous objects are only reported).
    pub prune: bool,
    /// Allow pruning every live object when the desired set is empty.
    pub allow_empty: bool,
    /// Diff status per desired object, for `ApplyOutOfSyncOnly=true` (absent: out of sync).
    pub diff_status: HashMap<ObjectRef, DiffStatus>,
    /// Cluster-scoped kinds by (group, kind), beside the built-in ones (add CRDs' kinds).
    pub cluster_scoped: HashSet<(String, String)>,
    /// Run Helm `test` hooks as PostSync hooks instead of dropping them.
    pub run_helm_tests: bool,
}

impl PlanOptions {
    /// Options for application `app_namespace/app_name` deploying into `destination_namespace`:
    /// no sync options, pruning off, the built-in cluster-scoped kinds.
    pub fn new(app_namespace: &str, app_name: &str, destination_namespace: &str) -> Self {
        Self {
            app_namespace: app_namespace.into(),
            app_name: app_name.into(),
            destination_namespace: destination_namespace.into(),
            destination_namespace_exists: true,
            sync_options: Vec::new(),
            prune: false,
            allow_empty: false,
            diff_status: HashMap::new(),
            cluster_scoped: order::CLUSTER_SCOPED
                .iter()
                .map(|(g, k)| ((*g).to_string(), (*k).to_string()))
                .collect(),
            run_helm_tests: false,
        }
    }

    fn is_cluster_scoped(&self, group: &str, kind: &str) -> bool {
        self.cluster_scoped
            .contains(&(group.to_string(), kind.to_string()))
    }
}

/// Parsed sync options (the application's, overridden per object by its annotation).
#[derive(Debug, Clone, Default)]
struct SyncOptions {
    values: Vec<(String, String)>,
}

impl SyncOptions {
    fn parse<'a>(items: impl Iterator<Item = &'a str>) -> Result<Self, PlanError> {
        let mut values = Vec::new();
        for item in items {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| PlanError::InvalidSyncOption {
                    option: item.to_string(),
                    reason: "expected Key=Value".into(),
                })?;
            values.push((k.trim().to_string(), v.trim().to_string()));
        }
        Ok(Self { values })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn is(&self, key: &str, value: &str) -> bool {
        self.get(key).is_some_and(|v| v.eq_ignore_ascii_case(value))
    }

    /// `self` with `over` taking precedence.
    fn overlay(&self, over: &SyncOptions) -> SyncOptions {
        let mut values = self.values.clone();
        values.extend(over.values.iter().cloned());
        SyncOptions { values }
    }
}

fn annotations_of(obj: &Value) -> Option<&Map<String, Value>> {
    obj.pointer("/metadata/annotations")?.as_object()
}

fn object_sync_options(obj: &Value, r: &ObjectRef) -> Result<SyncOptions, PlanError> {
    let raw = ann::first(
        annotations_of(obj),
        &[ann::SYNC_OPTIONS, ann::ARGOCD_SYNC_OPTIONS],
    );
    let Some(raw) = raw else {
        return Ok(SyncOptions::default());
    };
    SyncOptions::parse(raw.split(',')).map_err(|e| PlanError::InvalidAnnotation {
        object: Box::new(r.clone()),
        annotation: ann::SYNC_OPTIONS.into(),
        reason: e.to_string(),
    })
}

/// True when the object must never be deleted, by prune or by application deletion
/// (`Delete=false` in its sync-options annotation).
pub fn never_delete(obj: &Value) -> bool {
    ann::first(
        annotations_of(obj),
        &[ann::SYNC_OPTIONS, ann::ARGOCD_SYNC_OPTIONS],
    )
    .is_some_and(|raw| {
        raw.split(',').any(|o| {
            o.split_once('=').is_some_and(|(k, v)| {
                k.trim() == "Delete" && v.trim().eq_ignore_ascii_case("false")
            })
        })
    })
}

/// True when a sync never prunes the live object whatever it is asked: the application's sync
/// options, overridden by the object's annotation, say `Prune=false` or `Delete=false`. An
/// unreadable option counts as prunable; the plan reports it.
pub fn never_pruned(obj: &Value, app_sync_options: &[String]) -> bool {
    let Ok(app) = SyncOptions::parse(app_sync_options.iter().map(String::as_str)) else {
        return false;
    };
    let raw = ann::first(
        annotations_of(obj),
        &[ann::SYNC_OPTIONS, ann::ARGOCD_SYNC_OPTIONS],
    );
    let Ok(own) = SyncOptions::parse(raw.unwrap_or_default().split(',')) else {
        return false;
    };
    let options = app.overlay(&own);
    options.is("Prune", "false") || options.is("Delete", "false")
}

/// True when the object is a hook (or a Skip hook): hooks are created on every sync, never
/// pruned, and not part of the diff, so the caller leaves them out when comparing. A Helm
/// `crd-install` hook is an ordinary object.
pub fn is_hook(obj: &Value) -> bool {
    let a = annotations_of(obj);
    if ann::first(a, &[ann::HOOK, ann::ARGOCD_HOOK]).is_some() {
        return true;
    }
    ann::first(a, &[ann::HELM_HOOK])
        .is_some_and(|h| !h.split(',').any(|p| p.trim() == "crd-install"))
}

/// The sync wave of an object: `capstan.dev/sync-wave`, else `argocd.argoproj.io/sync-wave`,
/// else (for a Helm hook) `helm.sh/hook-weight`, else 0. A value that is not an integer is an
/// error naming the object and the annotation.
pub fn sync_wave(obj: &Value) -> Result<i32, PlanError> {
    let field = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or("");
    let r = ObjectRef::new(
        group_of(field("/apiVersion")),
        field("/kind"),
        field("/metadata/namespace"),
        field("/metadata/name"),
    );
    let a = annotations_of(obj);
    let helm_hook = ann::first(a, &[ann::HOOK, ann::ARGOCD_HOOK]).is_none()
        && ann::first(a, &[ann::HELM_HOOK]).is_some();
    wave_of(obj, &r, helm_hook)
}

/// How an object takes part in a sync.
enum Role {
    Resource,
    Hook(Vec<Phase>, Vec<HookDeletePolicy>),
    Skip(String),
}

fn hook_role(obj: &Value, r: &ObjectRef, run_helm_tests: bool) -> Result<Role, PlanError> {
    let a = annotations_of(obj);
    let bad = |annotation: &str, reason: String| PlanError::InvalidAnnotation {
        object: Box::new(r.clone()),
        annotation: annotation.into(),
        reason,
    };
    if let Some(raw) = ann::first(a, &[ann::HOOK, ann::ARGOCD_HOOK]) {
        let mut phases = Vec::new();
        for p in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let phase = match p {
                "PreSync" => Phase::PreSync,
                "Sync" => Phase::Sync,
                "PostSync" => Phase::PostSync,
                "SyncFail" => Phase::SyncFail,
                "Skip" => return Ok(Role::Skip("hook Skip".into())),
                other => {
                    return Err(bad(
                        ann::HOOK,
                        format!(
                            "unknown hook {other:?} (expected PreSync, Sync, PostSync, SyncFail or Skip)"
                        ),
                    ));
                }
            };
            if !phases.contains(&phase) {
                phases.push(phase);
            }
        }
        let policies = delete_policies(a, r)?;
        return Ok(Role::Hook(phases, policies));
    }
    let Some(raw) = ann::first(a, &[ann::HELM_HOOK]) else {
        return Ok(Role::Resource);
    };
    let mut phases = Vec::new();
    let mut dropped = Vec::new();
    for h in raw.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let phase = match h {
            "pre-install" | "pre-upgrade" => Some(Phase::PreSync),
            "post-install" | "post-upgrade" => Some(Phase::PostSync),
            "crd-install" => return Ok(Role::Resource),
            "test" | "test-success" if run_helm_tests => Some(Phase::PostSync),
            "test" | "test-success" | "test-failure" | "pre-delete" | "post-delete"
            | "pre-rollback" | "post-rollback" => {
                dropped.push(h);
                None
            }
            other => {
                return Err(bad(ann::HELM_HOOK, format!("unknown Helm hook {other:?}")));
            }
        };
        if let Some(p) = phase.filter(|p| !phases.contains(p)) {
            phases.push(p);
        }
    }
    if phases.is_empty() {
        return Ok(Role::Skip(format!(
            "Helm hook {} does not run during a sync",
            dropped.join(",")
        )));
    }
    let policies = delete_policies(a, r)?;
    Ok(Role::Hook(phases, policies))
}

fn delete_policies(
    a: Option<&Map<String, Value>>,
    r: &ObjectRef,
) -> Result<Vec<HookDeletePolicy>, PlanError> {
    let (name, raw) = if let Some(raw) = ann::first(a, &[ann::HOOK_DELETE_POLICY]) {
        (ann::HOOK_DELETE_POLICY, raw)
    } else if let Some(raw) = ann::first(a, &[ann::ARGOCD_HOOK_DELETE_POLICY]) {
        (ann::ARGOCD_HOOK_DELETE_POLICY, raw)
    } else if let Some(raw) = ann::first(a, &[ann::HELM_HOOK_DELETE_POLICY]) {
        (ann::HELM_HOOK_DELETE_POLICY, raw)
    } else {
        return Ok(vec![HookDeletePolicy::BeforeHookCreation]);
    };
    let mut out = Vec::new();
    for p in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let policy = match p {
            "HookSucceeded" | "hook-succeeded" => HookDeletePolicy::HookSucceeded,
            "HookFailed" | "hook-failed" => HookDeletePolicy::HookFailed,
            "BeforeHookCreation" | "before-hook-creation" => HookDeletePolicy::BeforeHookCreation,
            other => {
                return Err(PlanError::InvalidAnnotation {
                    object: Box::new(r.clone()),
                    annotation: name.into(),
                    reason: format!("unknown delete policy {other:?}"),
                });
            }
        };
        if !out.contains(&policy) {
            out.push(policy);
        }
    }
    if out.is_empty() {
        out.push(HookDeletePolicy::BeforeHookCreation);
    }
    Ok(out)
}

fn wave_of(obj: &Value, r: &ObjectRef, helm_hook: bool) -> Result<i32, PlanError> {
    let a = annotations_of(obj);
    let (name, raw) = if let Some(raw) = ann::first(a, &[ann::SYNC_WAVE]) {
        (ann::SYNC_WAVE, raw)
    } else if let Some(raw) = ann::first(a, &[ann::ARGOCD_SYNC_WAVE]) {
        (ann::ARGOCD_SYNC_WAVE, raw)
    } else if let Some(raw) = ann::first(a, &[ann::HELM_HOOK_WEIGHT]).filter(|_| helm_hook) {
        (ann::HELM_HOOK_WEIGHT, raw)
    } else {
        return Ok(0);
    };
    raw.trim()
        .parse()
        .map_err(|_| PlanError::InvalidAnnotation {
            object: Box::new(r.clone()),
            annotation: name.into(),
            reason: format!("{raw:?} is not an integer"),
        })
}

/// Reads identity; fills the destination namespace into namespaced objects that lack one, and
/// drops a namespace from cluster-scoped ones (the API server ignores it).
fn identify(
    obj: &Value,
    index: usize,
    opts: &PlanOptions,
    allow_generate_name: bool,
) -> Result<(ObjectRef, bool), PlanError> {
    let invalid = |reason: String| PlanError::InvalidObject { index, reason };
    if !obj.is_object() {
        return Err(invalid("not a mapping".into()));
    }
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("apiVersion is missing".into()))?;
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("kind is missing".into()))?;
    let name = obj.pointer("/metadata/name").and_then(Value::as_str);
    let generate_name = obj
        .pointer("/metadata/generateName")
        .and_then(Value::as_str);
    let (name, generated) = match (name, generate_name) {
        (Some(n), _) if !n.is_empty() => (n, false),
        (_, Some(g)) if !g.is_empty() && allow_generate_name => (g, true),
        _ => return Err(invalid(format!("{kind} has no metadata.name"))),
    };
    let group = group_of(api_version);
    let namespace = if opts.is_cluster_scoped(group, kind) {
        ""
    } else {
        obj.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(&opts.destination_namespace)
    };
    Ok((ObjectRef::new(group, kind, namespace, name), generated))
}

/// The object as it will be sent: namespace settled, tracking annotation set.
fn prepared(obj: &Value, r: &ObjectRef, opts: &PlanOptions) -> Value {
    let mut out = obj.clone();
    let Some(map) = out.as_object_mut() else {
        return out;
    };
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    let Some(meta) = meta.as_object_mut() else {
        return out;
    };
    if r.namespace.is_empty() {
        meta.shift_remove("namespace");
    } else {
        meta.insert("namespace".into(), Value::String(r.namespace.clone()));
    }
    let tracking = TrackingId {
        app_namespace: opts.app_namespace.clone(),
        app_name: opts.app_name.clone(),
        group: r.group.clone(),
        kind: r.kind.clone(),
        namespace: r.namespace.clone(),
        name: r.name.clone(),
    };
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !annotations.is_object() {
        *annotations = Value::Object(Map::new());
    }
    if let Some(a) = annotations.as_object_mut() {
        a.insert(ann::TRACKING_ID.into(), Value::String(tracking.to_string()));
    }
    out
}

/// Sort key inside a (stage, wave) group: kind order, then kind name (unknown kinds), then
/// namespace and name. Prunes use the reverse.
fn kind_key(r: &ObjectRef) -> (usize, &str, &str, &str) {
    (
        order::kind_rank(&r.kind),
        r.kind.as_str(),
        r.namespace.as_str(),
        r.name.as_str(),
    )
}

/// Plans a sync of `desired` (rendered from Git) against `live` (what the cluster has that is
/// tracked by this application).
pub fn plan(desired: &[Value], live: &[Value], opts: &PlanOptions) -> Result<SyncPlan, PlanError> {
    let app_options = SyncOptions::parse(opts.sync_options.iter().map(String::as_str))?;
    let propagation = match app_options.get("PrunePropagationPolicy") {
        None => PropagationPolicy::Foreground,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "foreground" => PropagationPolicy::Foreground,
            "background" => PropagationPolicy::Background,
            "orphan" => PropagationPolicy::Orphan,
            _ => {
                return Err(PlanError::InvalidSyncOption {
                    option: format!("PrunePropagationPolicy={v}"),
                    reason: "expected foreground, background or orphan".into(),
                });
            }
        },
    };

    let mut steps: Vec<SyncStep> = Vec::new();
    let mut skipped: Vec<Skipped> = Vec::new();
    let mut retained: Vec<ObjectRef> = Vec::new();
    let mut desired_refs: HashSet<ObjectRef> = HashSet::new();
    let mut resources = 0usize;

    for (index, obj) in desired.iter().enumerate() {
        let (r, generated) = identify(obj, index, opts, true)?;
        let role = hook_role(obj, &r, opts.run_helm_tests)?;
        let object_options = object_sync_options(obj, &r)?;
        let options = app_options.overlay(&object_options);
        let validate = !options.is("Validate", "false");
        if options.is("Delete", "false") {
            retained.push(r.clone());
        }
        match role {
            Role::Skip(reason) => skipped.push(Skipped {
                object_ref: r,
                reason,
            }),
            Role::Hook(phases, delete_policies) => {
                let helm =
                    ann::first(annotations_of(obj), &[ann::HOOK, ann::ARGOCD_HOOK]).is_none();
                let wave = wave_of(obj, &r, helm)?;
                let object = prepared(obj, &r, opts);
                for phase in phases {
                    let stage = match phase {
                        Phase::PreSync => Stage::PreSync,
                        Phase::Sync => Stage::Sync,
                        Phase::PostSync => Stage::PostSync,
                        Phase::SyncFail => Stage::SyncFail,
                    };
                    steps.push(SyncStep {
                        stage,
                        wave,
                        action: if generated {
                            Action::Create
                        } else {
                            apply_action(&options)
                        },
                        object_ref: r.clone(),
                        object: object.clone(),
                        hook: Some(HookInfo {
                            phase,
                            delete_policies: delete_policies.clone(),
                        }),
                        validate,
                    });
                }
            }
            Role::Resource => {
                if generated {
                    return Err(PlanError::InvalidObject {
                        index,
                        reason: format!(
                            "{} has only metadata.generateName, which only hooks may use",
                            r.kind
                        ),
                    });
                }
                if !desired_refs.insert(r.clone()) {
                    return Err(PlanError::Duplicate(Box::new(r)));
                }
                resources += 1;
                let wave = wave_of(obj, &r, false)?;
                if options.is("ApplyOutOfSyncOnly", "true")
                    && opts.diff_status.get(&r) == Some(&DiffStatus::Synced)
                {
                    skipped.push(Skipped {
                        object_ref: r,
                        reason: "Synced (ApplyOutOfSyncOnly=true)".into(),
                    });
                    continue;
                }
                steps.push(SyncStep {
                    stage: Stage::Sync,
                    wave,
                    action: apply_action(&options),
                    object: prepared(obj, &r, opts),
                    object_ref: r,
                    hook: None,
                    validate,
                });
            }
        }
    }

    // Prune: live, tracked, not desired, and not a hook (hooks are never pruned).
    let mut prunes: Vec<SyncStep> = Vec::new();
    for (index, obj) in live.iter().enumerate() {
        let (r, _) = identify(obj, index, opts, false)?;
        if desired_refs.contains(&r) {
            continue;
        }
        if !matches!(hook_role(obj, &r, opts.run_helm_tests), Ok(Role::Resource)) {
            continue;
        }
        let object_options = object_sync_options(obj, &r)?;
        let options = app_options.overlay(&object_options);
        if options.is("Delete", "false") {
            retained.push(r.clone());
            skipped.push(Skipped {
                object_ref: r,
                reason: "not pruned: Delete=false".into(),
            });
            continue;
        }
        if options.is("Prune", "false") {
            skipped.push(Skipped {
                object_ref: r,
                reason: "not pruned: Prune=false".into(),
            });
            continue;
        }
        if !opts.prune {
            skipped.push(Skipped {
                object_ref: r,
                reason: "requires pruning (pruning is off for this sync)".into(),
            });
            continue;
        }
        let wave = wave_of(obj, &r, false)?;
        prunes.push(SyncStep {
            stage: if options.is("PruneLast", "true") {
                Stage::PruneLast
            } else {
                Stage::Prune
            },
            wave,
            action: Action::Prune { propagation },
            object_ref: r,
            object: obj.clone(),
            hook: None,
            validate: true,
        });
    }
    if resources == 0 && !prunes.is_empty() && !opts.allow_empty {
        return Err(PlanError::EmptyDesired { live: prunes.len() });
    }

    if app_options.is("CreateNamespace", "true")
        && !opts.destination_namespace_exists
        && !opts.destination_namespace.is_empty()
        && !desired_refs.contains(&ObjectRef::new(
            "",
            "Namespace",
            "",
            &opts.destination_namespace,
        ))
    {
        steps.push(SyncStep {
            stage: Stage::Namespace,
            wave: 0,
            action: apply_action(&app_options),
            object_ref: ObjectRef::new("", "Namespace", "", &opts.destination_namespace),
            object: json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": opts.destination_namespace}}),
            hook: None,
            validate: true,
        });
    }

    steps.sort_by(|a, b| {
        (a.stage, a.wave, kind_key(&a.object_ref)).cmp(&(b.stage, b.wave, kind_key(&b.object_ref)))
    });
    // Prunes go highest wave first, and within a wave in reverse kind order (what depends on
    // something goes before it).
    prunes.sort_by(|a, b| {
        (a.stage, b.wave, kind_key(&b.object_ref)).cmp(&(b.stage, a.wave, kind_key(&a.object_ref)))
    });
    steps.extend(prunes);
    steps.sort_by_key(|s| s.stage);
    retained.sort();
    retained.dedup();
    Ok(SyncPlan {
        steps,
        skipped,
        retained,
    })
}

fn apply_action(options: &SyncOptions) -> Action {
    if options.is("Replace", "true") {
        Action::Replace {
            force: options.is("Force", "true"),
        }
    } else {
        Action::Apply {
            server_side: !options.is("ServerSideApply", "false"),
            force: options.is("Force", "true"),
        }
    }
}
