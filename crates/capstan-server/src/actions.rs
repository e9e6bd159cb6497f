//! Actions on an Application, written the way the controller reads them (the same contract as
//! `capstan app …`): a sync or rollback writes `operation`, a refresh the `capstan.dev/refresh`
//! annotation, auto-sync `spec.syncPolicy.automated`, lock and unlock `status.lock`, terminate
//! clears a pending `operation` or marks a running one `Terminating`.
//!
//! Every action is recorded as a Kubernetes Event on the Application naming the user.
//!
//! Sync, rollback, refresh, unlock and terminate are the CLI's requests: they go through
//! `capstan_controller::ops` (one definition of what a request is and when it is refused), with
//! the session's user as initiator. Lock and auto-sync exist only here.

use crate::auth::User;
use crate::error::ApiError;
use axum::http::StatusCode;
use capstan_api::application::{Application, SyncOperation, SyncOperationResource};
use capstan_controller::ControllerError;
use capstan_controller::ops;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::Deserialize;
use serde_json::json;

pub use capstan_controller::ops::PHASE_TERMINATING;

/// Body of `POST …/sync`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncRequest {
    /// Revision (branch, tag, commit); the target revision when empty.
    #[serde(default)]
    pub revision: String,
    /// Delete objects no longer in Git.
    #[serde(default)]
    pub prune: bool,
    /// Plan only.
    #[serde(default)]
    pub dry_run: bool,
    /// A selective sync: only these objects. Each is Argo CD's SyncOperationResource
    /// (`{"group", "kind", "name", "namespace"}`) or the CLI's text form
    /// `GROUP:KIND:NAME` / `GROUP:KIND:NAMESPACE/NAME`.
    #[serde(default)]
    pub resources: Vec<SelectedResource>,
}

/// One entry of [`SyncRequest::resources`].
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SelectedResource {
    /// `{"group": "apps", "kind": "Deployment", "name": "web", "namespace": "demo"}`.
    Object(SyncOperationResource),
    /// `apps:Deployment:demo/web`.
    Text(String),
}

impl SelectedResource {
    /// The resource, its shape checked (group may be empty, kind and name are required).
    fn resolve(self, index: usize) -> Result<SyncOperationResource, ApiError> {
        let resource = match self {
            SelectedResource::Object(r) => r.validate().map(|()| r),
            SelectedResource::Text(t) => SyncOperationResource::parse(&t),
        };
        resource.map_err(|e| ApiError::bad_request(format!("field resources[{index}]: {e}")))
    }
}

/// Body of `POST …/refresh`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// Bypass the manifest cache.
    #[serde(default)]
    pub hard: bool,
}

/// Body of `POST …/rollback`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// History id; the entry before the last when absent.
    #[serde(default)]
    pub id: Option<i64>,
}

/// Body of `PUT …/auto-sync`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoSyncRequest {
    /// On or off.
    pub enabled: bool,
}

/// The HTTP answer to a refused or failed request of `ops`: 404 for what does not exist, 409
/// for a refusal by the application's state, the cluster's own code for a failed write.
fn api_error(e: ControllerError) -> ApiError {
    match e {
        ControllerError::NotFound(m) => ApiError::not_found(m),
        ControllerError::Refused(m) => ApiError::conflict(m),
        ControllerError::InvalidSpec(m) => ApiError::bad_request(m),
        ControllerError::Kube { what, source } => ApiError::kube(&what, source),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

async fn read(api: &Api<Application>, name: &str, ns: &str) -> Result<Application, ApiError> {
    api.get_opt(name)
        .await
        .map_err(|e| ApiError::kube(&format!("reading application {ns}/{name}"), e))?
        .ok_or_else(|| ApiError::not_found(format!("application {ns}/{name} not found")))
}

/// Requests a sync.
pub async fn sync(
    api: &Api<Application>,
    name: &str,
    req: SyncRequest,
    user: &User,
) -> Result<String, ApiError> {
    let resources = req
        .resources
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.resolve(i))
        .collect::<Result<Vec<_>, _>>()?;
    let selected = resources.len();
    let revision = req.revision.clone();
    let app = ops::request_sync(
        api,
        name,
        SyncOperation {
            revision: req.revision,
            prune: req.prune,
            dry_run: req.dry_run,
            resources,
            ..SyncOperation::default()
        },
        &user.username,
    )
    .await
    .map_err(api_error)?;
    let target = if revision.is_empty() {
        let t = &app.spec.source.target_revision;
        if t.is_empty() {
            "HEAD".to_string()
        } else {
            t.clone()
        }
    } else {
        revision
    };
    let mut message = format!("user {} requested sync to {target}", user.username);
    if req.prune {
        message.push_str(" with prune");
    }
    if req.dry_run {
        message.push_str(" (dry run)");
    }
    if selected > 0 {
        message.push_str(&format!(" of {selected} selected resource(s)"));
    }
    Ok(message)
}

/// Requests a rollback to history entry `id` (default: the entry before the last); the
/// controller locks the application once it succeeded. Returns the entry id and the message.
pub async fn rollback(
    api: &Api<Application>,
    name: &str,
    req: RollbackRequest,
    user: &User,
) -> Result<(i64, String), ApiError> {
    let (entry, _) = ops::rollback(api, name, req.id, &user.username)
        .await
        .map_err(api_error)?;
    Ok((
        entry.id,
        format!(
            "user {} requested rollback to history {} (revision {})",
            user.username, entry.id, entry.revision
        ),
    ))
}

/// Asks for a refresh.
pub async fn refresh(
    api: &Api<Application>,
    name: &str,
    hard: bool,
    user: &User,
) -> Result<String, ApiError> {
    // Not read first: a missing application is the API server's 404 on the patch.
    ops::refresh(api, name, hard).await.map_err(api_error)?;
    let value = if hard { "hard" } else { "normal" };
    Ok(format!(
        "user {} requested a {value} refresh",
        user.username
    ))
}

/// Removes the lock, then asks for a refresh so that automated sync resumes at once.
pub async fn unlock(
    api: &Api<Application>,
    name: &str,
    user: &User,
) -> Result<Option<String>, ApiError> {
    let Some(lock) = ops::remove_lock(api, name).await.map_err(api_error)? else {
        return Ok(None);
    };
    Ok(Some(format!(
        "user {} unlocked the application (was locked at {})",
        user.username, lock.revision
    )))
}

/// Locks the application at its current revision: automated sync and self-heal stop, and a sync
/// to another revision is refused, until unlocked.
pub async fn lock(
    api: &Api<Application>,
    ns: &str,
    name: &str,
    user: &User,
) -> Result<String, ApiError> {
    let app = read(api, name, ns).await?;
    if let Some(lock) = app.lock() {
        return Err(ApiError::conflict(format!(
            "application {ns}/{name} is already locked at {} by {}",
            lock.revision, lock.locked_by
        )));
    }
    let status = app.status.as_ref();
    let revision = status
        .and_then(|s| s.sync.as_ref())
        .map(|s| s.revision.clone())
        .filter(|r| !r.is_empty())
        .or_else(|| {
            status
                .and_then(|s| s.history.last())
                .map(|h| h.revision.clone())
        })
        .ok_or_else(|| {
            ApiError::conflict(format!(
                "application {ns}/{name} has no known revision to lock at (never reconciled)"
            ))
        })?;
    let source = status
        .and_then(|s| s.history.iter().rev().find(|h| h.revision == revision))
        .map_or_else(|| app.spec.source.clone(), |h| h.source.clone());
    let lock = capstan_api::application::Lock {
        revision: revision.clone(),
        source: Some(source),
        history_id: None,
        locked_by: user.username.clone(),
        locked_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"lock": lock}})),
    )
    .await
    .map_err(|e| ApiError::kube(&format!("locking {ns}/{name}"), e))?;
    Ok(format!(
        "user {} locked the application at {revision}",
        user.username
    ))
}

/// Turns automated sync on (keeping its prune/selfHeal settings) or off.
pub async fn set_auto_sync(
    api: &Api<Application>,
    ns: &str,
    name: &str,
    enabled: bool,
    user: &User,
) -> Result<String, ApiError> {
    let automated = if enabled { json!({}) } else { json!(null) };
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"syncPolicy": {"automated": automated}}})),
    )
    .await
    .map_err(|e| ApiError::kube(&format!("setting auto-sync of {ns}/{name}"), e))?;
    Ok(format!(
        "user {} {} automated sync",
        user.username,
        if enabled { "enabled" } else { "disabled" }
    ))
}

/// Terminates the operation (see `ops::terminate`): a requested one not yet started is
/// withdrawn; a running one is marked `Terminating` for the controller to stop.
pub async fn terminate(
    api: &Api<Application>,
    ns: &str,
    name: &str,
    user: &User,
) -> Result<String, ApiError> {
    let how = match ops::terminate(api, name).await.map_err(api_error)? {
        ops::Terminated::Withdrawn => "withdrawn before it started",
        ops::Terminated::Terminating => "the running sync stops at its next step",
    };
    Ok(format!(
        "user {} terminated the operation of {ns}/{name} ({how})",
        user.username
    ))
}

/// Records an action as an Event on the Application (`reason` such as `SyncRequested`).
/// A failure is logged, not returned: the action itself has been done.
pub async fn audit(client: &kube::Client, app: &Application, reason: &str, message: &str) {
    let ns = app.namespace();
    let now = chrono::Utc::now();
    let mut suffix = [0u8; 8];
    if crate::auth::random_bytes(&mut suffix).is_err() {
        suffix = now.timestamp_nanos_opt().unwrap_or_default().to_le_bytes();
    }
    let stamp = k8s_openapi::jiff::Timestamp::now();
    let event = Event {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{}.{}", app.name(), hex::encode(suffix))),
            namespace: Some(ns.to_string()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(capstan_api::application::API_VERSION.to_string()),
            kind: Some(capstan_api::application::KIND.to_string()),
            name: Some(app.name().to_string()),
            namespace: Some(ns.to_string()),
            uid: app.metadata.uid.clone(),
            resource_version: app.metadata.resource_version.clone(),
            ..Default::default()
        },
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        type_: Some("Normal".to_string()),
        source: Some(EventSource {
            component: Some("capstan-server".to_string()),
            host: None,
        }),
        reporting_component: Some("capstan-server".to_string()),
        reporting_instance: Some("capstan-server".to_string()),
        action: Some(reason.to_string()),
        first_timestamp: Some(Time(stamp)),
        last_timestamp: Some(Time(stamp)),
        count: Some(1),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::error!(application = %format!("{ns}/{}", app.name()), reason, error = %e, "could not record the audit event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selected_resources_are_argo_objects_or_the_cli_form_and_their_shape_is_checked() {
        let req: SyncRequest = serde_json::from_value(json!({
            "resources": [
                {"group": "apps", "kind": "Deployment", "name": "web", "namespace": "demo"},
                {"kind": "ConfigMap", "name": "settings"},
                ":Service:demo/web",
            ]
        }))
        .unwrap();
        let resolved: Vec<SyncOperationResource> = req
            .resources
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.resolve(i).unwrap())
            .collect();
        assert_eq!(resolved[0].to_string(), "apps:Deployment:demo/web");
        assert_eq!(resolved[1].to_string(), ":ConfigMap:settings");
        assert_eq!(resolved[2].to_string(), ":Service:demo/web");

        for (bad, field) in [
            (json!({"group": "apps", "kind": "", "name": "web"}), "kind"),
            (json!({"kind": "ConfigMap", "name": " "}), "name"),
            (json!("apps:Deployment"), "GROUP:KIND:NAME"),
        ] {
            let req: SyncRequest = serde_json::from_value(json!({"resources": [bad]})).unwrap();
            let resource = req.resources.into_iter().next().unwrap();
            let err = resource.resolve(0).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            let text = format!("{err:?}");
            assert!(
                text.contains("resources[0]") && text.contains(field),
                "{text}"
            );
        }
        // An object without kind or name is no resource at all.
        assert!(
            serde_json::from_value::<SyncRequest>(json!({"resources": [{"group": "apps"}]}))
                .is_err()
        );
    }
}
