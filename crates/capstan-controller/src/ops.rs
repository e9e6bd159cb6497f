//! What a person asks of an application (the CLI's verbs), as requests written onto the
//! Application for the controller to carry out: a sync writes `operation`, a refresh writes the
//! `capstan.dev/refresh` annotation, a rollback writes a sync operation of a history entry's
//! revision and source, an unlock clears `status.lock`.

use capstan_api::annotations as ann;
use capstan_api::application::{
    Application, Operation, OperationInitiator, PHASE_RUNNING, RESOURCES_FINALIZER, SyncOperation,
};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;

use crate::ControllerError;

/// The user name recorded as initiator: `$CAPSTAN_USER`, else `$USER`, else `unknown`.
pub fn current_user() -> String {
    std::env::var("CAPSTAN_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Reads an Application.
pub async fn get(api: &Api<Application>, name: &str) -> Result<Application, ControllerError> {
    api.get_opt(name)
        .await
        .map_err(|e| ControllerError::kube(format!("reading application {name}"), e))?
        .ok_or_else(|| ControllerError::Refused(format!("application {name} not found")))
}

/// Creates an Application.
pub async fn create(
    api: &Api<Application>,
    app: &Application,
) -> Result<Application, ControllerError> {
    api.create(&PostParams::default(), app)
        .await
        .map_err(|e| ControllerError::kube(format!("creating application {}", app.name()), e))
}

/// Asks for a refresh (`hard` also bypasses the manifest cache).
pub async fn refresh(
    api: &Api<Application>,
    name: &str,
    hard: bool,
) -> Result<(), ControllerError> {
    let value = if hard { "hard" } else { "normal" };
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {ann::REFRESH: value}}})),
    )
    .await
    .map_err(|e| ControllerError::kube(format!("requesting a refresh of {name}"), e))?;
    Ok(())
}

/// Requests a sync. Refused at once (as the controller would) when the application is locked
/// and `revision` names another revision than the locked one, or when an operation is running.
pub async fn request_sync(
    api: &Api<Application>,
    name: &str,
    sync: SyncOperation,
) -> Result<(), ControllerError> {
    let app = get(api, name).await?;
    if let Some(lock) = app.lock()
        && sync.rollback_id.is_none()
        && !sync.revision.is_empty()
        && !lock.revision.starts_with(&sync.revision)
    {
        return Err(ControllerError::Refused(format!(
            "application {name} is locked at {} by {} since {}; run `capstan app unlock {name}` first",
            lock.revision, lock.locked_by, lock.locked_at
        )));
    }
    if app.operation.is_some()
        || app
            .status
            .as_ref()
            .and_then(|s| s.operation_state.as_ref())
            .is_some_and(|s| s.phase == PHASE_RUNNING)
    {
        return Err(ControllerError::Refused(format!(
            "application {name} already has an operation in progress"
        )));
    }
    let op = Operation {
        sync: Some(sync),
        initiated_by: OperationInitiator {
            username: current_user(),
            automated: false,
        },
        ..Operation::default()
    };
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "operation": op })),
    )
    .await
    .map_err(|e| ControllerError::kube(format!("requesting a sync of {name}"), e))?;
    Ok(())
}

/// Requests a rollback to history entry `id` (default: the entry before the last one). The
/// application is locked once the sync succeeded.
pub async fn rollback(
    api: &Api<Application>,
    name: &str,
    id: Option<i64>,
) -> Result<i64, ControllerError> {
    let app = get(api, name).await?;
    let history = app
        .status
        .as_ref()
        .map(|s| s.history.clone())
        .unwrap_or_default();
    let entry = match id {
        Some(id) => history
            .iter()
            .find(|h| h.id == id)
            .cloned()
            .ok_or_else(|| {
                ControllerError::Refused(format!(
                    "application {name} has no history entry {id} (entries: {})",
                    history
                        .iter()
                        .map(|h| h.id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?,
        None => {
            if history.len() < 2 {
                return Err(ControllerError::Refused(format!(
                    "application {name} has no previous deployment to roll back to"
                )));
            }
            history[history.len() - 2].clone()
        }
    };
    request_sync(
        api,
        name,
        SyncOperation {
            revision: entry.revision.clone(),
            source: Some(entry.source.clone()),
            rollback_id: Some(entry.id),
            ..SyncOperation::default()
        },
    )
    .await?;
    Ok(entry.id)
}

/// Removes the lock, then asks for a refresh so that automated sync resumes at once.
pub async fn unlock(api: &Api<Application>, name: &str) -> Result<bool, ControllerError> {
    let app = get(api, name).await?;
    if app.lock().is_none() {
        return Ok(false);
    }
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"lock": null}})),
    )
    .await
    .map_err(|e| ControllerError::kube(format!("unlocking {name}"), e))?;
    let recorder = crate::events::recorder(api.clone().into_client(), "capstan-cli");
    let who = current_user();
    crate::events::publish(
        &recorder,
        &app,
        false,
        "Unlocked",
        format!(
            "unlocked by {who} (was locked at {} by {})",
            app.lock().map(|l| l.revision.as_str()).unwrap_or(""),
            app.lock().map(|l| l.locked_by.as_str()).unwrap_or("")
        ),
    )
    .await;
    refresh(api, name, false).await?;
    Ok(true)
}

/// What to wait for.
#[derive(Debug, Clone, Copy, Default)]
pub struct WaitFor {
    /// status.sync.status == Synced.
    pub synced: bool,
    /// status.health.status == Healthy.
    pub healthy: bool,
    /// No operation requested or running.
    pub operation: bool,
}

/// Polls the Application until `what` holds or `timeout` passes; returns the last state seen.
pub async fn wait(
    api: &Api<Application>,
    name: &str,
    what: WaitFor,
    timeout: Duration,
) -> Result<Application, ControllerError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let app = get(api, name).await?;
        let status = app.status.clone().unwrap_or_default();
        let synced = status.sync.as_ref().is_some_and(|s| s.status == "Synced");
        let healthy = status
            .health
            .as_ref()
            .is_some_and(|h| h.status == "Healthy");
        let idle = app.operation.is_none()
            && status
                .operation_state
                .as_ref()
                .is_none_or(|s| s.phase != PHASE_RUNNING);
        if (!what.synced || synced) && (!what.healthy || healthy) && (!what.operation || idle) {
            return Ok(app);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ControllerError::Other(format!(
                "timed out waiting for application {name}: sync {}, health {}, operation {}",
                status.sync.map(|s| s.status).unwrap_or_else(|| "-".into()),
                status
                    .health
                    .map(|h| h.status)
                    .unwrap_or_else(|| "-".into()),
                status
                    .operation_state
                    .map(|s| format!("{} ({})", s.phase, s.message))
                    .unwrap_or_else(|| "-".into())
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes an Application; with `cascade`, the resources finalizer is added first so that the
/// controller deletes the application's objects before the Application goes.
pub async fn delete(
    api: &Api<Application>,
    name: &str,
    cascade: bool,
) -> Result<(), ControllerError> {
    if cascade {
        let app = get(api, name).await?;
        let mut finalizers = app.metadata.finalizers.clone().unwrap_or_default();
        if !finalizers.iter().any(|f| f == RESOURCES_FINALIZER) {
            finalizers.push(RESOURCES_FINALIZER.to_string());
            api.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": finalizers}})),
            )
            .await
            .map_err(|e| ControllerError::kube(format!("adding the finalizer to {name}"), e))?;
        }
    }
    api.delete(name, &kube::api::DeleteParams::default())
        .await
        .map_err(|e| ControllerError::kube(format!("deleting application {name}"), e))?;
    Ok(())
}
