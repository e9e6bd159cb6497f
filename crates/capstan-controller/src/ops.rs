//! What a person asks of an application (the CLI's verbs), as requests written onto the
//! Application for the controller to carry out: a sync writes `operation`, a refresh writes the
//! `capstan.dev/refresh` annotation, a rollback writes a sync operation of a history entry's
//! revision and source, an unlock clears `status.lock`.
//!
//! The CLI and the HTTP API both call these; the initiator is a parameter (the CLI passes
//! [`current_user`], the API the session's user).

use capstan_api::annotations as ann;
use capstan_api::application::{
    Application, Lock, Operation, OperationInitiator, PHASE_RUNNING, RESOURCES_FINALIZER,
    RevisionHistory, SyncOperation,
};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::ControllerError;

/// Operation phase written to ask the controller to stop a running sync (Argo CD's spelling).
pub use capstan_api::application::PHASE_TERMINATING;

/// How many times a request is re-read and re-checked when the Application changed between
/// the read and the write (the controller writes status often).
const CONFLICT_ATTEMPTS: usize = 5;

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
        .ok_or_else(|| ControllerError::NotFound(format!("application {name} not found")))
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

/// Whether an operation is requested, running or being terminated on `app`.
pub fn operation_busy(app: &Application) -> bool {
    app.operation.is_some()
        || app
            .status
            .as_ref()
            .and_then(|s| s.operation_state.as_ref())
            .is_some_and(operation_busy_state)
}

/// Whether `state` is of an operation still running or being terminated.
pub fn operation_busy_state(state: &capstan_api::application::OperationState) -> bool {
    state.phase == PHASE_RUNNING || state.phase == PHASE_TERMINATING
}

/// Requests a sync initiated by `username`. Refused at once (as the controller would) when the
/// application is locked and `sync.revision` names another revision than the locked one, or
/// when an operation is in progress. The request is written with the resourceVersion it was
/// checked against, so a concurrent request cannot be overwritten; when the Application changed
/// in between, it is read and checked again. Returns the Application as written.
pub async fn request_sync(
    api: &Api<Application>,
    name: &str,
    sync: SyncOperation,
    username: &str,
) -> Result<Application, ControllerError> {
    let op = Operation {
        sync: Some(sync),
        initiated_by: OperationInitiator {
            username: username.to_string(),
            automated: false,
        },
        ..Operation::default()
    };
    for _ in 0..CONFLICT_ATTEMPTS {
        let app = get(api, name).await?;
        check_sync(&app, name, &op)?;
        let patch = json!({
            "metadata": {"resourceVersion": app.metadata.resource_version},
            "operation": op,
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(written) => return Ok(written),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => {
                return Err(ControllerError::kube(
                    format!("requesting a sync of {name}"),
                    e,
                ));
            }
        }
    }
    Err(ControllerError::Refused(format!(
        "application {name} kept changing while requesting a sync ({CONFLICT_ATTEMPTS} attempts); try again"
    )))
}

/// The refusals of [`request_sync`], on the Application as read.
fn check_sync(app: &Application, name: &str, op: &Operation) -> Result<(), ControllerError> {
    let sync = op.sync.as_ref();
    if let (Some(lock), Some(sync)) = (app.lock(), sync)
        && sync.rollback_id.is_none()
        && !sync.revision.is_empty()
        && !lock.revision.starts_with(&sync.revision)
    {
        return Err(ControllerError::Refused(format!(
            "application {name} is locked at {} by {} since {}; run `capstan app unlock {name}` first",
            lock.revision, lock.locked_by, lock.locked_at
        )));
    }
    if operation_busy(app) {
        return Err(ControllerError::Refused(format!(
            "application {name} already has an operation in progress"
        )));
    }
    Ok(())
}

/// What [`terminate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminated {
    /// A requested operation not yet started was withdrawn.
    Withdrawn,
    /// The running operation was marked Terminating; the controller stops it at its next check
    /// (between waves, between objects, while waiting for health) and records it `Failed` with
    /// the message `Operation terminated`.
    Terminating,
}

/// Terminates the operation of `name`: a requested one not yet started is withdrawn, a running
/// one is marked `Terminating` for the controller to stop. Both writes carry the
/// resourceVersion they were decided on, so an operation that finished in between is never
/// marked. Refused when there is nothing to terminate.
pub async fn terminate(api: &Api<Application>, name: &str) -> Result<Terminated, ControllerError> {
    for _ in 0..CONFLICT_ATTEMPTS {
        let app = get(api, name).await?;
        let state = app.status.as_ref().and_then(|s| s.operation_state.as_ref());
        let running = state.is_some_and(|s| s.phase == PHASE_RUNNING);
        if state.is_some_and(|s| s.phase == PHASE_TERMINATING) {
            return Ok(Terminated::Terminating);
        }
        let precondition = json!({"resourceVersion": app.metadata.resource_version});
        let written = if running {
            api.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({
                    "metadata": precondition,
                    "status": {"operationState": {"phase": PHASE_TERMINATING}},
                })),
            )
            .await
            .map(|_| Terminated::Terminating)
        } else if app.operation.is_some() {
            api.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": precondition, "operation": null})),
            )
            .await
            .map(|_| Terminated::Withdrawn)
        } else {
            return Err(ControllerError::Refused(format!(
                "application {name} has no operation to terminate"
            )));
        };
        match written {
            Ok(done) => return Ok(done),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => {
                return Err(ControllerError::kube(
                    format!("terminating the operation of {name}"),
                    e,
                ));
            }
        }
    }
    Err(ControllerError::Refused(format!(
        "application {name} kept changing while terminating its operation ({CONFLICT_ATTEMPTS} attempts); try again"
    )))
}

/// Which history entry a rollback goes to: `id`, or the entry before the last one.
pub fn rollback_target(
    app: &Application,
    id: Option<i64>,
) -> Result<RevisionHistory, ControllerError> {
    let name = app.name();
    let history = app
        .status
        .as_ref()
        .map(|s| s.history.as_slice())
        .unwrap_or_default();
    match id {
        Some(id) => history.iter().find(|h| h.id == id).cloned().ok_or_else(|| {
            ControllerError::NotFound(format!(
                "application {name} has no history entry {id} (entries: {})",
                history
                    .iter()
                    .map(|h| h.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }),
        None => match history.len() {
            0 | 1 => Err(ControllerError::Refused(format!(
                "application {name} has no previous deployment to roll back to"
            ))),
            n => Ok(history[n - 2].clone()),
        },
    }
}

/// Requests, as `username`, a rollback to history entry `id` (default: the entry before the
/// last one): a sync of that entry's revision and source. The controller locks the application
/// once the sync succeeded. Returns the entry and the Application as written with the request
/// (its `operation` is the one to follow).
pub async fn rollback(
    api: &Api<Application>,
    name: &str,
    id: Option<i64>,
    username: &str,
) -> Result<(RevisionHistory, Application), ControllerError> {
    let app = get(api, name).await?;
    let entry = rollback_target(&app, id)?;
    let written = request_sync(
        api,
        name,
        SyncOperation {
            revision: entry.revision.clone(),
            source: Some(entry.source.clone()),
            rollback_id: Some(entry.id),
            ..SyncOperation::default()
        },
        username,
    )
    .await?;
    Ok((entry, written))
}

/// Removes the lock and asks for a refresh so that automated sync resumes at once. Returns the
/// lock removed, `None` when the application was not locked. Records nothing: the caller
/// records who did it ([`unlock`] with an Event, the HTTP API with its audit Event).
pub async fn remove_lock(
    api: &Api<Application>,
    name: &str,
) -> Result<Option<Lock>, ControllerError> {
    let app = get(api, name).await?;
    let Some(lock) = app.lock().cloned() else {
        return Ok(None);
    };
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"lock": null}})),
    )
    .await
    .map_err(|e| ControllerError::kube(format!("unlocking {name}"), e))?;
    refresh(api, name, false).await?;
    Ok(Some(lock))
}

/// Removes the lock as `username` (see [`remove_lock`]) and records an `Unlocked` Event on the
/// Application. Returns whether it was locked.
pub async fn unlock(
    api: &Api<Application>,
    name: &str,
    username: &str,
) -> Result<bool, ControllerError> {
    let app = get(api, name).await?;
    let Some(lock) = remove_lock(api, name).await? else {
        return Ok(false);
    };
    let recorder = crate::events::recorder(api.clone().into_client(), "capstan-cli");
    crate::events::publish(
        &recorder,
        &app,
        false,
        "Unlocked",
        format!(
            "unlocked by {username} (was locked at {} by {})",
            lock.revision, lock.locked_by
        ),
    )
    .await;
    Ok(true)
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
