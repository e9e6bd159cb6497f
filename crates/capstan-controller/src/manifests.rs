//! Desired and live manifests of an application, and their diff, for the HTTP API and the CLI.
//!
//! The desired side goes through the same steps as a reconcile ([`compare::render`], a manifest
//! cache hit when the commit's tree did not change, then [`compare::prepare_kinds`], which sets
//! the destination namespace and makes sure the kinds are watched); the live side is the
//! controller's live cache; objects are compared by the engine with the application's
//! `ignoreDifferences`, so a diff always agrees with `status.resources`: an object the status
//! calls OutOfSync is a Missing, OutOfSync or Extraneous item here, and a Synced one is Synced.
//!
//! Secret values never leave this module: the engine masks them in diffs, and
//! [`mask_secret`] masks whole objects with the same placeholder.

use capstan_api::application::Application;
use capstan_engine::diff::{self, DiffOptions, DiffStatus};
use kube::api::GroupVersionKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::compare::{self, Desired};
use crate::live::{AppKey, Watched};
use crate::{ControllerError, Shared};

/// What a masked Secret value is replaced with: the engine's placeholder, so a Secret reads
/// the same in a manifest view as in a diff.
pub const MASK: &str = capstan_engine::diff::SECRET_MASK;

/// Annotation in which client-side `kubectl apply` keeps a full copy of the object, Secret data
/// included.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// One object, by group, kind, namespace and name (namespace empty for cluster-scoped kinds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectId {
    /// API group (empty: the core group).
    #[serde(default)]
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace (empty: cluster-scoped).
    #[serde(default)]
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gk = if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}/{}", self.group, self.kind)
        };
        if self.namespace.is_empty() {
            write!(f, "{gk} {}", self.name)
        } else {
            write!(f, "{gk} {}/{}", self.namespace, self.name)
        }
    }
}

/// The comparison of one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffItem {
    /// API group (empty: the core group).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace (empty: cluster-scoped).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `Synced`, `OutOfSync`, `Missing` (desired, not live) or `Extraneous` (live and tracked
    /// by the application, no longer desired).
    pub status: DiffStatus,
    /// A sync hook: never part of the application's sync status (hooks run at sync time).
    pub hook: bool,
    /// Unified diff from live (`-`) to desired (`+`), normalized as the controller compares,
    /// Secret values masked; empty when Synced.
    pub unified: String,
}

impl DiffItem {
    /// Whether the object counts as a difference: not Synced and not a hook.
    pub fn differs(&self) -> bool {
        self.status != DiffStatus::Synced && !self.hook
    }

    /// The object's identity.
    pub fn id(&self) -> ObjectId {
        ObjectId {
            group: self.group.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// The diff of an application at one commit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppDiff {
    /// The commit rendered (full id).
    pub revision: String,
    /// Every desired object and every extraneous live one, sorted by group, kind, namespace
    /// and name. Hooks without a name (`generateName`: a new object per run) are left out.
    pub items: Vec<DiffItem>,
}

impl AppDiff {
    /// The items that count as differences ([`DiffItem::differs`]).
    pub fn differences(&self) -> impl Iterator<Item = &DiffItem> {
        self.items.iter().filter(|i| i.differs())
    }
}

/// The name of a status as the API and the CLI write it.
pub fn status_name(status: DiffStatus) -> &'static str {
    match status {
        DiffStatus::Synced => "Synced",
        DiffStatus::OutOfSync => "OutOfSync",
        DiffStatus::Missing => "Missing",
        DiffStatus::Extraneous => "Extraneous",
    }
}

/// A cheap, cloneable handle on the controller's shared state (Git and manifest caches,
/// renderer, credentials, live cache) for the HTTP server and the CLI.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("manifests::Handle").finish_non_exhaustive()
    }
}

impl From<Arc<Shared>> for Handle {
    fn from(shared: Arc<Shared>) -> Self {
        Handle { shared }
    }
}

impl Handle {
    /// [`diff`] over this controller.
    pub async fn diff(
        &self,
        app: &Application,
        revision: Option<&str>,
    ) -> Result<AppDiff, ControllerError> {
        diff(&self.shared, app, revision).await
    }

    /// [`desired_object`] over this controller.
    pub async fn desired_object(
        &self,
        app: &Application,
        revision: Option<&str>,
        id: &ObjectId,
    ) -> Result<Option<Value>, ControllerError> {
        desired_object(&self.shared, app, revision, id).await
    }

    /// [`live_object`] over this controller.
    pub async fn live_object(
        &self,
        app: &Application,
        id: &ObjectId,
    ) -> Result<Option<Value>, ControllerError> {
        live_object(&self.shared, app, id).await
    }
}

/// A comparison failure of `app` as an error naming the application; messages that name a
/// field of the spec are the Application's own fault, the rest (a manifest, a revision, a kind)
/// is what its source holds.
fn failure(app: &Application, message: String) -> ControllerError {
    let text = format!("application {}/{}: {message}", app.namespace(), app.name());
    if message.starts_with("spec.") {
        ControllerError::InvalidSpec(text)
    } else {
        ControllerError::Other(text)
    }
}

/// The comparison options of `app`: its `ignoreDifferences` and Capstan's field manager, as the
/// controller's comparison builds them.
pub fn diff_options(app: &Application) -> Result<DiffOptions, ControllerError> {
    compare::diff_options(app).map_err(|text| failure(app, text))
}

/// Renders `app` (its targetRevision, or `revision`), sets namespaces and makes sure every
/// kind it uses (and used) is watched.
async fn desired_and_kinds(
    shared: &Shared,
    app: &Application,
    revision: Option<&str>,
) -> Result<(Desired, Vec<Arc<Watched>>), ControllerError> {
    compare::check_destination(app).map_err(|text| failure(app, text))?;
    let revision = revision.filter(|r| !r.is_empty());
    let mut desired = compare::render(
        shared,
        app,
        &app.spec.source,
        revision,
        false,
        std::time::Instant::now(),
    )
    .await
    .map_err(|m| failure(app, m))?;
    let kinds = compare::prepare_kinds(shared, app, &mut desired)
        .await
        .map_err(|m| failure(app, m))?;
    Ok((desired, kinds))
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Desired against live, object by object: every desired object (hooks flagged) and every live
/// object tracked by `app` that is no longer desired.
pub async fn diff(
    shared: &Shared,
    app: &Application,
    revision: Option<&str>,
) -> Result<AppDiff, ControllerError> {
    let (desired, kinds) = desired_and_kinds(shared, app, revision).await?;
    let opts = diff_options(app)?;
    let key: AppKey = (app.namespace().to_string(), app.name().to_string());
    let by_gvk: HashMap<GroupVersionKind, &Arc<Watched>> = kinds
        .iter()
        .map(|w| {
            (
                GroupVersionKind::gvk(&w.resource.group, &w.resource.version, &w.resource.kind),
                w,
            )
        })
        .collect();
    let mut items = Vec::new();
    let mut seen: HashSet<ObjectId> = HashSet::new();
    for obj in &desired.objects {
        let hook = compare::is_hook(obj);
        let gvk = compare::gvk_of(obj).map_err(|m| failure(app, m))?;
        let name = str_at(obj, "/metadata/name");
        if name.is_empty() {
            if hook {
                continue;
            }
            return Err(failure(
                app,
                format!("{}: metadata.name is missing", compare::describe(obj)),
            ));
        }
        let namespace = str_at(obj, "/metadata/namespace");
        let live = by_gvk
            .get(&gvk)
            .and_then(|w| w.get(namespace, name).map(|o| w.value(&o)));
        let d = diff::diff(Some(obj), live.as_deref(), &opts)
            .map_err(|e| failure(app, format!("{}: {e}", compare::describe(obj))))?;
        seen.insert(ObjectId {
            group: gvk.group.clone(),
            kind: gvk.kind.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        });
        items.push(DiffItem {
            group: d.group,
            kind: d.kind,
            namespace: d.namespace,
            name: d.name,
            status: d.status,
            hook,
            unified: d.unified,
        });
    }
    for (watched, obj) in shared.live.tracked_by(&kinds, &key) {
        let value = watched.value(&obj);
        let id = ObjectId {
            group: watched.resource.group.clone(),
            kind: watched.resource.kind.clone(),
            namespace: obj.metadata.namespace.clone().unwrap_or_default(),
            name: obj.metadata.name.clone().unwrap_or_default(),
        };
        // A live hook that is no longer rendered is left alone by sync and prune, as by the
        // controller's comparison.
        if seen.contains(&id) || compare::is_hook(&value) {
            continue;
        }
        let d = diff::diff(None, Some(&value), &opts)
            .map_err(|e| failure(app, format!("live {id}: {e}")))?;
        items.push(DiffItem {
            group: d.group,
            kind: d.kind,
            namespace: d.namespace,
            name: d.name,
            status: d.status,
            hook: false,
            unified: d.unified,
        });
    }
    items.sort_by(|a, b| {
        (&a.group, &a.kind, &a.namespace, &a.name).cmp(&(&b.group, &b.kind, &b.namespace, &b.name))
    });
    Ok(AppDiff {
        revision: desired.revision,
        items,
    })
}

/// The desired manifest of one object of `app` (at its targetRevision, or `revision`), with
/// the namespace the controller applies it in and Secret values masked; `None` when the render
/// has no such object.
pub async fn desired_object(
    shared: &Shared,
    app: &Application,
    revision: Option<&str>,
    id: &ObjectId,
) -> Result<Option<Value>, ControllerError> {
    let (desired, _kinds) = desired_and_kinds(shared, app, revision).await?;
    let found = desired.objects.into_iter().find(|obj| {
        let group = diff::group_of(str_at(obj, "/apiVersion"));
        group == id.group
            && str_at(obj, "/kind") == id.kind
            && str_at(obj, "/metadata/name") == id.name
            && str_at(obj, "/metadata/namespace") == id.namespace
    });
    Ok(found.map(|mut obj| {
        mask_secret(&mut obj);
        obj
    }))
}

/// The live manifest of one object of `app` (one of its `status.resources`), from the live
/// cache, Secret values masked; `None` when it is not in the cluster. An object that is not the
/// application's is [`ControllerError::NotFound`].
pub async fn live_object(
    shared: &Shared,
    app: &Application,
    id: &ObjectId,
) -> Result<Option<Value>, ControllerError> {
    let status = app.status_or_default();
    let resource = status
        .resources
        .iter()
        .find(|r| {
            r.group == id.group
                && r.kind == id.kind
                && r.namespace == id.namespace
                && r.name == id.name
        })
        .ok_or_else(|| {
            ControllerError::NotFound(format!(
                "{id} is not an object of application {}/{}",
                app.namespace(),
                app.name()
            ))
        })?;
    let gvk = GroupVersionKind::gvk(&resource.group, &resource.version, &resource.kind);
    let watched = shared.live.watch(&gvk).await?;
    Ok(watched.get(&id.namespace, &id.name).map(|obj| {
        let mut value = (*watched.value(&obj)).clone();
        mask_secret(&mut value);
        value
    }))
}

/// Replaces every value of a Secret's `data` and `stringData` with [`MASK`] (keys stay, so a
/// user sees which keys exist) and drops the last-applied annotation, which holds a copy.
/// Other kinds are left as they are.
pub fn mask_secret(obj: &mut Value) {
    let is_secret = obj.get("kind").and_then(Value::as_str) == Some("Secret")
        && obj.get("apiVersion").and_then(Value::as_str) == Some("v1");
    if !is_secret {
        return;
    }
    for field in ["data", "stringData"] {
        if let Some(map) = obj.get_mut(field).and_then(Value::as_object_mut) {
            for v in map.values_mut() {
                *v = Value::String(MASK.to_string());
            }
        }
    }
    if let Some(annotations) = obj
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(LAST_APPLIED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_keys_kept_and_other_kinds_untouched() {
        let mut s = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "annotations": {
                LAST_APPLIED: "{\"data\":{\"k\":\"c2VjcmV0\"}}", "keep": "me"}},
            "data": {"k": "c2VjcmV0"}, "stringData": {"p": "secret"}});
        mask_secret(&mut s);
        assert_eq!(s["data"]["k"], MASK);
        assert_eq!(s["stringData"]["p"], MASK);
        let text = s.to_string();
        assert!(!text.contains("c2VjcmV0") && !text.contains("\"secret\""));
        assert_eq!(s["metadata"]["annotations"]["keep"], "me");
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"}});
        mask_secret(&mut cm);
        assert_eq!(cm["data"]["k"], "v");
    }

    #[test]
    fn the_mask_is_the_engines_placeholder() {
        // The engine masks a Secret seen on one side only with its first placeholder; whole
        // objects shown by the API must look the same as in a diff.
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "n"}, "data": {"k": "c2VjcmV0"}});
        let d = diff::diff(Some(&secret), None, &DiffOptions::default()).unwrap();
        assert_eq!(d.normalized_desired.unwrap()["data"]["k"], MASK);
    }

    #[test]
    fn differences_leave_out_synced_objects_and_hooks() {
        let item = |status, hook| DiffItem {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: "n".into(),
            name: "c".into(),
            status,
            hook,
            unified: String::new(),
        };
        assert!(!item(DiffStatus::Synced, false).differs());
        assert!(item(DiffStatus::OutOfSync, false).differs());
        assert!(item(DiffStatus::Missing, false).differs());
        assert!(item(DiffStatus::Extraneous, false).differs());
        assert!(!item(DiffStatus::Missing, true).differs());
        assert_eq!(
            item(DiffStatus::Synced, false).id().to_string(),
            "ConfigMap n/c"
        );
    }
}
