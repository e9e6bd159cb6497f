//! PATCH and server-side apply for the devcluster: JSON patch, JSON merge patch, strategic merge
//! patch, server-side apply with `metadata.managedFields`, and field ownership for ordinary
//! writes (Update operations).
//!
//! The semantics follow Kubernetes (the API server's field manager and structured-merge-diff):
//! - An applier owns exactly the fields of its applied configuration. Fields it applied before
//!   and no longer applies are removed from the object unless another manager owns them.
//! - A field another manager owns whose value the apply would change (or add) is a conflict;
//!   `force` moves the ownership instead. Applying the same value shares ownership.
//! - Writes that are not applies ([`record_update`]) give their manager (operation `Update`)
//!   every field they add or change, taking it from everyone else.
//! - Associative lists merge by their keys, set lists by value; other lists are atomic; maps are
//!   granular unless declared atomic. [`ListHints`] carries this for built-in kinds and CRDs.
//!   Merged lists keep live items in place and put an applier's new items after the live items
//!   that precede them; reordering items in an applied configuration reorders them.
//! - A re-apply that changes nothing (same fields, same values) returns `live` unchanged,
//!   managedFields timestamps included, without parsing other managers' field sets.
//!
//! Invariants of this module:
//! - Pure: no I/O, no clock (callers pass `now`), no global mutable state. The built-in hint
//!   tables are built once and shared read-only.
//! - Nothing is half-applied: every function works on a copy and returns either the complete
//!   result or an error, leaving its inputs as they were.
//! - The object returned by [`patch`] and [`server_side_apply`] is plain JSON: no `$patch`,
//!   `$retainKeys`, `$setElementOrder/…` or `$deleteFromPrimitiveList/…` left in it.
//! - `apiVersion`, `kind` and `metadata.{name, namespace, uid, resourceVersion, generation,
//!   creationTimestamp, managedFields, selfLink, deletionTimestamp, deletionGracePeriodSeconds}`
//!   are never owned by anyone. Server-set metadata is the caller's job, after these functions.
//! - Server-set metadata (`uid`, `creationTimestamp`, `generation`, …) in `live` is never
//!   overwritten or removed by an applied configuration (a committed `creationTimestamp: null`
//!   is common); `name`, `namespace` and `resourceVersion` from it are merged like any field
//!   for the caller to check.
//! - Stored managedFields that do not parse lose only the unreadable entry (the store holds
//!   what this module wrote); a client-sent list that does not parse is ignored entirely.
//! - `metadata.managedFields` in an input object is only ever read from `live`/`old` (and, for
//!   [`record_update`], from a client that deliberately sends a different list, as Kubernetes
//!   allows); entries are written `manager, operation, apiVersion, time, fieldsType, fieldsV1,
//!   subresource`, in a stable order, new managers appended. Unchanged entries are kept verbatim.
//! - Error texts name the field path; they never contain field values (Secret data stays out of
//!   logs), except list keys, which Kubernetes prints too.

mod fieldset;
mod hints;
mod patch;
mod ssa;

use serde_json::Value;

pub use hints::ListHints;

/// The kind of a PATCH request, from its `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json` (built-in kinds only).
    StrategicMerge,
    /// `application/apply-patch+yaml`: server-side apply, see [`server_side_apply`].
    Apply,
}

impl PatchKind {
    /// The patch kind for a request's `Content-Type` header value (parameters such as
    /// `; charset=utf-8` and letter case are ignored). `None` for anything else, including
    /// `application/apply-patch+cbor`, which the devcluster does not speak (answer 415).
    pub fn from_content_type(ct: &str) -> Option<PatchKind> {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Some(PatchKind::StrategicMerge),
            "application/apply-patch+yaml" => Some(PatchKind::Apply),
            _ => None,
        }
    }

    /// The `Content-Type` of this patch kind.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchKind::Json => "application/json-patch+json",
            PatchKind::Merge => "application/merge-patch+json",
            PatchKind::StrategicMerge => "application/strategic-merge-patch+json",
            PatchKind::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Why a patch or apply was refused. The HTTP status each maps to is given per variant.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The patch document itself is malformed or not allowed here: 400 Bad Request.
    #[error("{0}")]
    BadPatch(String),
    /// The patch is well-formed but cannot apply to this object, or produces an invalid one
    /// (duplicate or missing list keys, a failed JSON patch `test`): 422 Unprocessable Entity.
    #[error("{0}")]
    Invalid(String),
    /// Server-side apply would change fields other managers own: 409 Conflict. Report it with
    /// [`conflict_message`] and one `FieldManagerConflict` cause per element.
    #[error("{}", conflict_message(.0))]
    Conflict(Vec<FieldConflict>),
}

/// One field an apply would take from another manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldConflict {
    /// The manager owning the field (`kubectl-client-side-apply`, `capstan`, …).
    pub manager: String,
    /// The field path as Kubernetes prints it: `.spec.replicas`,
    /// `.spec.template.spec.containers[name="web"].image`.
    pub field: String,
    /// The owner's operation: `Apply` or `Update`.
    pub operation: String,
    /// The API version the owner wrote with (printed for `Update` owners).
    pub api_version: String,
    /// The subresource the owner wrote through (`status`), if any.
    pub subresource: Option<String>,
}

impl FieldConflict {
    /// The manager as Kubernetes prints it: `"kubectl-edit" using apps/v1` for Update owners,
    /// `"capstan"` for appliers, with `with subresource "status"` when there is one.
    pub fn manager_display(&self) -> String {
        let mut s = quote(&self.manager);
        if let Some(sr) = &self.subresource {
            s.push_str(&format!(" with subresource {}", quote(sr)));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    /// The message of this conflict's `FieldManagerConflict` status cause (its `field` is
    /// [`FieldConflict::field`]): `conflict with "kubectl-edit" using apps/v1`.
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.manager_display())
    }
}

fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// The Status message of a 409 apply conflict, worded as the Kubernetes API server words it
/// (kubectl prints it and tells users to use `--force-conflicts`):
/// `Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas`,
/// and for several, grouped by manager (sorted):
/// `Apply failed with 2 conflicts: conflicts with "a":\n- .spec.replicas\n- .spec.paused`.
pub fn conflict_message(conflicts: &[FieldConflict]) -> String {
    match conflicts {
        [] => "Apply failed with 0 conflicts".to_string(),
        [one] => format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            one.manager_display(),
            one.field
        ),
        many => {
            let mut managers: Vec<String> =
                many.iter().map(FieldConflict::manager_display).collect();
            managers.sort();
            managers.dedup();
            let mut lines = Vec::new();
            for m in &managers {
                lines.push(format!("conflicts with {m}:"));
                for c in many.iter().filter(|c| &c.manager_display() == m) {
                    lines.push(format!("- {}", c.field));
                }
            }
            format!(
                "Apply failed with {} conflicts: {}",
                many.len(),
                lines.join("\n")
            )
        }
    }
}

/// Applies a JSON, merge or strategic merge patch to `live` and returns the patched object
/// (`live` is not modified). `PatchKind::Apply` is refused: applies go through
/// [`server_side_apply`]. Strategic merge patch on a kind whose hints do not support it (custom
/// resources) is a `BadPatch`; the server should answer 415 for it before calling here (see
/// [`ListHints::supports_strategic_merge`]).
pub fn patch(
    kind: PatchKind,
    hints: &ListHints,
    live: &Value,
    patch: &Value,
) -> Result<Value, ApplyError> {
    match kind {
        PatchKind::Json => patch::json_patch(live, patch),
        PatchKind::Merge => patch::merge_patch(live, patch),
        PatchKind::StrategicMerge => {
            if !hints.supports_strategic_merge() {
                return Err(ApplyError::BadPatch(
                    "strategic merge patch is not supported for custom resources; use \
                     application/merge-patch+json or application/json-patch+json"
                        .to_string(),
                ));
            }
            patch::strategic_merge_patch(live, patch, &hints.root)
        }
        PatchKind::Apply => Err(ApplyError::BadPatch(
            "apply patches must go through server-side apply".to_string(),
        )),
    }
}

/// Server-side apply of `applied` (the request body, as JSON) by `manager` onto `live` (`None`:
/// the object does not exist and is created from the applied configuration). Returns the new
/// object with `metadata.managedFields` updated; the caller then sets the server-owned metadata
/// (uid, resourceVersion, generation, creationTimestamp, …) and defaults.
///
/// When nothing changes (the same configuration applied again), the result equals `live`,
/// managedFields timestamps included, so the caller can skip the write.
pub fn server_side_apply(
    hints: &ListHints,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    ssa::apply(&hints.root, live, applied, manager, None, force, now)
}

/// [`server_side_apply`] through a subresource (`status`): the applier's managedFields entry
/// carries `subresource`, separate from its entry for the main resource.
pub fn server_side_apply_subresource(
    hints: &ListHints,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    subresource: Option<&str>,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    ssa::apply(&hints.root, live, applied, manager, subresource, force, now)
}

/// Records a non-apply write (create, update, JSON/merge/strategic patch) in `new`'s
/// `metadata.managedFields`: `manager` (operation `Update`, with `subresource` when written
/// through one) gets every field that `new` adds or changes compared to `old` (`None` for a
/// create), other managers lose those fields and the ones removed, and managers left with no
/// fields disappear. A client may send its own managedFields list in `new` (Kubernetes allows
/// replacing it; `[{}]` clears it); otherwise those of `old` are carried over.
pub fn record_update(
    hints: &ListHints,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    now: &str,
) {
    ssa::update(&hints.root, old, new, manager, subresource, now);
}

#[cfg(test)]
mod tests;
