//! Desired-versus-live comparison, as a user means "out of sync".
//!
//! Both objects are normalized first:
//! - server-set metadata (`uid`, `resourceVersion`, `generation`, `creationTimestamp`,
//!   `managedFields`, `selfLink`, `deletionGracePeriodSeconds`, `deletionTimestamp`), the
//!   `kubectl.kubernetes.io/last-applied-configuration` annotation and, when the desired object
//!   lacks it, the tracking annotation are dropped;
//! - `status` is dropped. Status is written by controllers through the status subresource, never
//!   by whoever applies the object, so it is not intent. The exception is a kind whose status is
//!   part of what is applied (a custom resource without a status subresource): name such kinds
//!   with [`DiffOptions::compare_status_of`];
//! - a Secret's `stringData` is folded into `data` (base64), as the API server does;
//! - the `ignoreDifferences` entries that match the object remove their fields from both sides.
//!
//! Then the live object is compared only on the fields the desired object sets (values the
//! server defaulted never count), with quantities (`1000m` = `1`), integers written as strings
//! (`"80"` = `80`) and empty versus absent maps and lists treated as equal. A field our field
//! manager applied earlier (per the live `managedFields`, operation `Apply`) that the desired
//! object no longer has is drift too: the next apply removes it. Lists are matched item by item
//! by their merge keys (`name` for containers, env, volumes; `containerPort`/`port` with
//! `protocol` for ports; …), other lists position by position.
//!
//! Secret values are masked in every output ([`ObjectDiff`] and its unified diff): per key,
//! equal values get the same placeholder (`++++++++`) and different values a different one
//! (`+++++++++`), so a user sees which keys changed and never what they hold.

mod compare;
mod fields;
mod ignore;
mod normalize;

pub use ignore::IgnoreDifference;

/// What a Secret value is shown as in a diff (and wherever a Secret is shown): the value's place
/// is kept, its content never. In a diff a value that differs from the other side's gets one
/// more `+`, so a changed key is still visible.
pub const SECRET_MASK: &str = "++++++++";

use ignore::CompiledIgnore;
use normalize::SecretProblem;
use serde::Serialize;
use serde_json::Value;
use similar::TextDiff;

/// How a desired object relates to the live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum DiffStatus {
    /// Live matches desired.
    Synced,
    /// Live differs from desired.
    OutOfSync,
    /// Desired, but not in the cluster.
    Missing,
    /// In the cluster (tracked by the application), but no longer desired.
    Extraneous,
}

/// The comparison of one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectDiff {
    /// The outcome.
    pub status: DiffStatus,
    /// API group (`""` for the core group).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace (`""` when neither side names one).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Unified diff from the normalized live object (`-`) to the normalized desired one (`+`),
    /// Secret values masked; empty when [`DiffStatus::Synced`] or when the options asked for no
    /// text ([`DiffOptions::without_text`]).
    pub unified: String,
    /// The desired object as compared (normalized, masked).
    pub normalized_desired: Option<Value>,
    /// The live object as compared: restricted to the fields the desired object sets plus the
    /// fields found removed (the whole normalized object when not desired); masked.
    pub normalized_live: Option<Value>,
}

/// A comparison that could not be made. Messages name the object and field, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffError {
    /// Neither a desired nor a live object was given.
    #[error("nothing to compare: neither a desired nor a live object was given")]
    NothingToCompare,
    /// An object lacks what identifies it.
    #[error("{side} object is invalid: {reason}")]
    InvalidObject {
        /// `desired` or `live`.
        side: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The two objects are not the same object.
    #[error("desired {desired} and live {live} are different objects")]
    Mismatch {
        /// Identity of the desired object.
        desired: String,
        /// Identity of the live object.
        live: String,
    },
    /// A Secret whose data cannot be read.
    #[error("{side} Secret {object}: {reason}")]
    Secret {
        /// `desired` or `live`.
        side: &'static str,
        /// `namespace/name`.
        object: String,
        /// What is wrong (names the key, never the value).
        reason: String,
    },
    /// An `ignoreDifferences` entry that cannot be used.
    #[error("ignoreDifferences[{index}] ({kind}): {reason}")]
    IgnoreRule {
        /// Position of the entry.
        index: usize,
        /// The entry's kind.
        kind: String,
        /// What is wrong, naming the field of the entry.
        reason: String,
    },
}

/// Options of a comparison, compiled once (jq expressions, pointers) and reused for every object.
#[derive(Debug)]
pub struct DiffOptions {
    ignore_differences: Vec<IgnoreDifference>,
    field_manager: String,
    compiled: Vec<CompiledIgnore>,
    status_kinds: Vec<(String, String)>,
    /// Whether [`ObjectDiff::unified`] is produced (YAML of both sides and a text diff: most of
    /// the cost of comparing an object that is not Synced).
    text: bool,
}

impl Default for DiffOptions {
    /// No ignore rules, field manager [`capstan_api::annotations::FIELD_MANAGER`].
    fn default() -> Self {
        Self {
            ignore_differences: Vec::new(),
            field_manager: capstan_api::annotations::FIELD_MANAGER.to_string(),
            compiled: Vec::new(),
            status_kinds: Vec::new(),
            text: true,
        }
    }
}

impl DiffOptions {
    /// Compiles the ignore rules; an unusable entry is an error naming it and its field.
    pub fn new(
        ignore_differences: Vec<IgnoreDifference>,
        field_manager: impl Into<String>,
    ) -> Result<Self, DiffError> {
        let compiled = ignore_differences
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                CompiledIgnore::compile(entry).map_err(|reason| DiffError::IgnoreRule {
                    index,
                    kind: entry.kind.clone(),
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            ignore_differences,
            field_manager: field_manager.into(),
            compiled,
            status_kinds: Vec::new(),
            text: true,
        })
    }

    /// Leaves [`ObjectDiff::unified`] empty: for callers that need the status and the
    /// normalized objects but show no diff text (the controller's reconcile, which compares
    /// every object of every application on each refresh).
    pub fn without_text(mut self) -> Self {
        self.text = false;
        self
    }

    /// Compares `status` too for objects of this group and kind (custom resources whose status
    /// is applied with the object rather than written by a controller).
    pub fn compare_status_of(mut self, group: impl Into<String>, kind: impl Into<String>) -> Self {
        self.status_kinds.push((group.into(), kind.into()));
        self
    }

    /// The ignore rules as given.
    pub fn ignore_differences(&self) -> &[IgnoreDifference] {
        &self.ignore_differences
    }

    /// The field manager whose `Apply` entries reveal removed fields.
    pub fn field_manager(&self) -> &str {
        &self.field_manager
    }
}

/// Identity of an object: group, kind, namespace, name.
struct Identity {
    group: String,
    kind: String,
    namespace: String,
    name: String,
}

impl Identity {
    fn of(obj: &Value, side: &'static str) -> Result<Self, DiffError> {
        let invalid = |reason: &str| DiffError::InvalidObject {
            side,
            reason: reason.to_string(),
        };
        if !obj.is_object() {
            return Err(invalid("not a mapping"));
        }
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("apiVersion is missing"))?;
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("kind is missing"))?;
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid(&format!("{kind} has no metadata.name")))?;
        let namespace = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        Ok(Self {
            group: group_of(api_version).to_string(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    fn display(&self) -> String {
        let gk = if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}/{}", self.group, self.kind)
        };
        if self.namespace.is_empty() {
            format!("{gk} {}", self.name)
        } else {
            format!("{gk} {}/{}", self.namespace, self.name)
        }
    }
}

/// The API group of an `apiVersion` (`apps/v1` → `apps`, `v1` → ``).
pub fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(g, _)| g)
}

/// Compares a desired object (rendered from Git) with the live one (from the cluster).
///
/// `None` on one side gives [`DiffStatus::Missing`] (not live) or [`DiffStatus::Extraneous`]
/// (not desired). A desired object without a namespace matches a live object in any namespace:
/// the caller pairs objects after applying the destination namespace.
pub fn diff(
    desired: Option<&Value>,
    live: Option<&Value>,
    opts: &DiffOptions,
) -> Result<ObjectDiff, DiffError> {
    let desired_id = desired.map(|d| Identity::of(d, "desired")).transpose()?;
    let live_id = live.map(|l| Identity::of(l, "live")).transpose()?;
    let id = match (&desired_id, &live_id) {
        (Some(d), Some(l)) => {
            let same = d.group == l.group
                && d.kind == l.kind
                && d.name == l.name
                && (d.namespace.is_empty() || d.namespace == l.namespace);
            if !same {
                return Err(DiffError::Mismatch {
                    desired: d.display(),
                    live: l.display(),
                });
            }
            Identity {
                namespace: l.namespace.clone(),
                group: d.group.clone(),
                kind: d.kind.clone(),
                name: d.name.clone(),
            }
        }
        (Some(d), None) => clone_id(d),
        (None, Some(l)) => clone_id(l),
        (None, None) => return Err(DiffError::NothingToCompare),
    };
    let keep_status = opts
        .status_kinds
        .iter()
        .any(|(g, k)| *g == id.group && *k == id.kind);
    let desired_has_tracking = desired.is_some_and(|d| {
        d.pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .is_some_and(|a| {
                a.contains_key(capstan_api::annotations::TRACKING_ID)
                    || a.contains_key(capstan_api::annotations::ARGOCD_TRACKING_ID)
            })
    });
    let rules: Vec<&CompiledIgnore> = opts
        .compiled
        .iter()
        .filter(|r| r.matches(&id.group, &id.kind, &id.namespace, &id.name))
        .collect();
    let ignored_managers: Vec<String> = rules
        .iter()
        .flat_map(|r| r.managers.iter().cloned())
        .collect();
    let ignored_fields = match (live, ignored_managers.is_empty()) {
        (Some(l), false) => ignore::managers_field_set(l, &ignored_managers),
        _ => None,
    };

    let prepare = |obj: &Value, side: &'static str| -> Result<Value, DiffError> {
        let mut v = normalize::clone_for_compare(obj, keep_status);
        normalize::strip(&mut v, desired_has_tracking, keep_status);
        if normalize::is_secret(&v) {
            normalize::fold_secret(&mut v).map_err(|p| secret_error(p, side, &id))?;
        }
        if let Some(set) = &ignored_fields {
            ignore::remove_fields(&mut v, set);
        }
        for rule in &rules {
            rule.apply(&mut v);
        }
        Ok(v)
    };
    let norm_desired = desired.map(|d| prepare(d, "desired")).transpose()?;
    let norm_live = live.map(|l| prepare(l, "live")).transpose()?;

    let (status, mut out_desired, mut out_live) = match (norm_desired, norm_live) {
        (Some(d), Some(l)) => {
            let owned = live.and_then(|l| owned_fields(l, &opts.field_manager));
            let (mut projected, drift) = compare::project(&d, &l, owned.as_ref());
            // The version is not intent: the caller reads live objects in the desired version.
            if let (Some(pm), Some(av)) = (projected.as_object_mut(), d.get("apiVersion")) {
                pm.insert("apiVersion".to_string(), av.clone());
            }
            let status = if drift {
                DiffStatus::OutOfSync
            } else {
                DiffStatus::Synced
            };
            (status, Some(d), Some(projected))
        }
        (Some(d), None) => (DiffStatus::Missing, Some(d), None),
        (None, Some(l)) => (DiffStatus::Extraneous, None, Some(l)),
        (None, None) => return Err(DiffError::NothingToCompare),
    };
    normalize::mask_secrets(out_desired.as_mut(), out_live.as_mut());
    let unified = if status == DiffStatus::Synced || !opts.text {
        String::new()
    } else {
        unified_diff(out_live.as_ref(), out_desired.as_ref(), &id)
    };
    Ok(ObjectDiff {
        status,
        group: id.group,
        kind: id.kind,
        namespace: id.namespace,
        name: id.name,
        unified,
        normalized_desired: out_desired,
        normalized_live: out_live,
    })
}

fn clone_id(id: &Identity) -> Identity {
    Identity {
        group: id.group.clone(),
        kind: id.kind.clone(),
        namespace: id.namespace.clone(),
        name: id.name.clone(),
    }
}

fn secret_error(problem: SecretProblem, side: &'static str, id: &Identity) -> DiffError {
    let reason = match problem {
        SecretProblem::NotAMap(field) => format!("{field} is not a mapping"),
        SecretProblem::StringDataNotString(key) => {
            format!("stringData key {key:?} is not a string")
        }
        SecretProblem::DataNotBase64(key) => format!("data key {key:?} is not valid base64"),
    };
    let object = if id.namespace.is_empty() {
        id.name.clone()
    } else {
        format!("{}/{}", id.namespace, id.name)
    };
    DiffError::Secret {
        side,
        object,
        reason,
    }
}

/// The fields `manager` applied (operation `Apply`, main resource), merged over its entries.
fn owned_fields(live: &Value, manager: &str) -> Option<fields::FieldSet> {
    fields::FieldSet::from_managed_fields(live, |entry| {
        entry.get("manager").and_then(Value::as_str) == Some(manager)
            && entry.get("operation").and_then(Value::as_str) == Some("Apply")
            && entry
                .get("subresource")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
    })
}

fn to_yaml(v: Option<&Value>) -> String {
    match v {
        // Serializing a JSON value to YAML cannot fail: every key is a string.
        Some(v) => serde_yaml_ng::to_string(v).unwrap_or_default(),
        None => String::new(),
    }
}

fn unified_diff(live: Option<&Value>, desired: Option<&Value>, id: &Identity) -> String {
    let old = to_yaml(live);
    let new = to_yaml(desired);
    let name = id.display();
    TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("live {name}"), &format!("desired {name}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<DiffOptions>();
    }

    #[test]
    fn without_text_decides_the_same_and_only_leaves_the_text_out() {
        let desired = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "n"},
            "data": {"k": "new"},
        });
        let live = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "n", "uid": "u"},
            "data": {"k": "old"},
        });
        let with = diff(Some(&desired), Some(&live), &DiffOptions::default()).unwrap();
        let without = diff(
            Some(&desired),
            Some(&live),
            &DiffOptions::default().without_text(),
        )
        .unwrap();
        assert_eq!(with.status, DiffStatus::OutOfSync);
        assert_eq!(without.status, with.status);
        assert_eq!(without.normalized_desired, with.normalized_desired);
        assert_eq!(without.normalized_live, with.normalized_live);
        assert!(with.unified.contains("+  k: new"), "{}", with.unified);
        assert!(without.unified.is_empty());
    }
}
