//! Sync execution: the engine's plan run group by group (stage, then wave) with server-side
//! apply, each group waited on until its objects are Healthy before the next one starts.
//!
//! Before anything is written, every object to apply is applied once with `dryRun=All`: an
//! object the cluster would refuse (invalid, forbidden, unknown) fails the sync with nothing
//! applied.
//!
//! Custom resources whose CustomResourceDefinition is part of the same desired state
//! ([`PendingKind`]) cannot be dry-run before the CRD exists; the CRD is applied before them
//! (kind order) and the first of them waits until the CRD is Established and the kind served.
//!
//! A selective sync (`operation.sync.resources[]`) runs the plan restricted to the listed
//! objects, without hooks (as Argo CD documents); a listed object that is neither desired nor
//! tracked fails it before anything is applied.
//!
//! A person may terminate the running sync ([`StopFlag`]): it is checked before each group,
//! before each object and while waiting for a group to become Healthy; nothing further is
//! applied once it is set, and SyncFail hooks do not run.

use capstan_api::annotations as ann;
use capstan_api::application::{MESSAGE_TERMINATED, ResourceResult, SyncOperationResource};
use capstan_engine::health::HealthStatus as Hs;
use capstan_engine::plan::{
    self, Action, PlanOptions, PropagationPolicy, Stage, SyncPlan, SyncStep,
};
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
    PostParams, PropagationPolicy as KubePropagation,
};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::Shared;
use crate::compare::{Comparison, PendingKind, describe, gvk_of};
use crate::error::ControllerError;
use crate::live::Watched;

/// What a sync needs besides the comparison.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// Namespace of the Application.
    pub app_namespace: String,
    /// Name of the Application.
    pub app_name: String,
    /// Destination namespace.
    pub destination_namespace: String,
    /// Sync options (policy's and the operation's).
    pub sync_options: Vec<String>,
    /// Prune extraneous objects.
    pub prune: bool,
    /// Allow pruning everything when the render is empty.
    pub allow_empty: bool,
    /// Plan and dry-run only.
    pub dry_run: bool,
    /// A selective sync: only these objects (all when empty).
    pub resources: Vec<SyncOperationResource>,
    /// Set when the operation is to be terminated.
    pub stop: StopFlag,
}

/// Raised by the controller's Application watch (`observe_app` in the crate root) when a person
/// asked to terminate the running operation; the executor stops at the next check.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// Asks the executor to stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether stopping was asked for.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How a sync ended.
#[derive(Debug, Clone)]
pub struct SyncOutcome {
    /// All steps done.
    pub succeeded: bool,
    /// Stopped on request ([`StopFlag`]); the message is [`MESSAGE_TERMINATED`].
    pub terminated: bool,
    /// What happened, in words.
    pub message: String,
    /// Per object.
    pub resources: Vec<ResourceResult>,
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Namespace | Stage::Sync | Stage::Prune | Stage::PruneLast => "Sync",
        Stage::PreSync => "PreSync",
        Stage::PostSync => "PostSync",
        Stage::SyncFail => "SyncFail",
    }
}

/// Where a running sync is, reported to the [`Progress`] callback.
#[derive(Debug, Clone, Default)]
pub struct ProgressReport {
    /// The current group, in words (`Sync wave 1 (2/3)`).
    pub message: String,
    /// What was done so far, per object.
    pub resources: Vec<ResourceResult>,
    /// Health of the objects the sync is waiting for, as last seen (empty when not waiting).
    pub health: Vec<ObjectHealth>,
}

/// The health of one object, seen while waiting for its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHealth {
    /// API group.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace (empty when cluster-scoped).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `Healthy`, `Progressing`, `Degraded`, `Missing`, … (`Healthy` for kinds without health).
    pub status: String,
    /// Details.
    pub message: String,
}

/// Progress callback: called at the start of each group and, while a group is waited on, each
/// time the health of its objects changes; the executor awaits the returned future before going
/// on.
pub type Progress<'a> =
    &'a (dyn Fn(ProgressReport) -> futures::future::BoxFuture<'static, ()> + Send + Sync);

/// Plans and executes a sync of `cmp` (desired vs live).
pub async fn execute(
    shared: &Shared,
    cmp: &Comparison,
    req: &SyncRequest,
    progress: Progress<'_>,
) -> SyncOutcome {
    let fail = |message: String| SyncOutcome {
        succeeded: false,
        terminated: false,
        message,
        resources: Vec::new(),
    };
    if !cmp.shared.is_empty() {
        return fail(format!(
            "refusing to sync: {}; an object tracked by another application is never taken over",
            cmp.shared.join("; ")
        ));
    }
    let mut opts = PlanOptions::new(
        &req.app_namespace,
        &req.app_name,
        &req.destination_namespace,
    );
    opts.sync_options = req.sync_options.clone();
    opts.prune = req.prune;
    opts.allow_empty = req.allow_empty;
    opts.diff_status = cmp.diff_status.clone();
    opts.cluster_scoped
        .extend(cmp.cluster_scoped.iter().cloned());
    opts.destination_namespace_exists = namespace_exists(shared, &req.destination_namespace).await;
    // The plan owns its objects; a sync is rare next to comparisons, which share the values.
    let live: Vec<Value> = cmp.live.iter().map(|v| Value::clone(v)).collect();
    let the_plan = match plan::plan(&cmp.desired.objects, &live, &opts) {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot plan the sync: {e}")),
    };
    let the_plan = if req.resources.is_empty() {
        the_plan
    } else {
        match select(the_plan, &req.resources) {
            Ok(p) => p,
            Err(message) => return fail(message),
        }
    };
    if let Err(message) = dry_run(shared, &the_plan, &cmp.desired.pending_kinds).await {
        return fail(message);
    }
    // Pending kinds seen served (their CRD Established, discovery knowing them) in this sync.
    let mut served: HashSet<PendingKind> = HashSet::new();
    let mut resources: Vec<ResourceResult> = the_plan
        .skipped
        .iter()
        .filter(|s| s.reason.to_ascii_lowercase().contains("prun"))
        .map(|s| ResourceResult {
            group: s.object_ref.group.clone(),
            version: String::new(),
            kind: s.object_ref.kind.clone(),
            namespace: s.object_ref.namespace.clone(),
            name: s.object_ref.name.clone(),
            status: "PruneSkipped".into(),
            message: s.reason.clone(),
            sync_phase: "Sync".into(),
            wave: 0,
            hook_phase: String::new(),
        })
        .collect();
    if req.dry_run {
        for step in &the_plan.steps {
            resources.push(result_of(step, "Synced", "dry run: not applied".into()));
        }
        return SyncOutcome {
            succeeded: true,
            terminated: false,
            message: format!(
                "dry run: {} steps planned, nothing applied",
                the_plan.steps.len()
            ),
            resources,
        };
    }

    let groups = the_plan.groups();
    let mut failure: Option<String> = None;
    let terminated = |resources: Vec<ResourceResult>| SyncOutcome {
        succeeded: false,
        terminated: true,
        message: MESSAGE_TERMINATED.to_string(),
        resources,
    };
    for (index, (stage, wave)) in groups.iter().enumerate() {
        if *stage == Stage::SyncFail {
            continue;
        }
        if req.stop.is_set() {
            return terminated(resources);
        }
        let message = format!(
            "{} wave {} ({}/{})",
            stage_name(*stage),
            wave,
            index + 1,
            groups.len()
        );
        // With one group there is nothing to tell apart: the Running state written before the
        // sync says what it does, and the result follows at once (one write less per sync).
        if groups.len() > 1 {
            progress(ProgressReport {
                message: message.clone(),
                resources: resources.clone(),
                health: Vec::new(),
            })
            .await;
        }
        let steps: Vec<&SyncStep> = the_plan
            .steps
            .iter()
            .filter(|s| s.stage == *stage && s.wave == *wave)
            .collect();
        let mut to_wait: Vec<(Arc<Watched>, String, String, bool)> = Vec::new();
        for step in &steps {
            if req.stop.is_set() {
                return terminated(resources);
            }
            if let Some(pending) = pending_kind_of(&cmp.desired.pending_kinds, step)
                && !served.contains(pending)
            {
                match until_served(shared, pending, &req.stop, CRD_ESTABLISH_TIMEOUT).await {
                    Ok(()) => {
                        served.insert(pending.clone());
                    }
                    Err(Unserved::Stopped) => return terminated(resources),
                    Err(Unserved::Failed(reason)) => {
                        let message = format!("{}: not applied: {reason}", step.object_ref);
                        resources.push(result_of(step, "SyncFailed", message.clone()));
                        failure = Some(message);
                        break;
                    }
                }
            }
            match run_step(shared, step).await {
                Ok((watched, namespace, name)) => {
                    let pruned = matches!(step.action, Action::Prune { .. });
                    resources.push(result_of(
                        step,
                        if pruned { "Pruned" } else { "Synced" },
                        String::new(),
                    ));
                    if let Some(w) = watched {
                        to_wait.push((w, namespace, name, step.hook.is_some()));
                    }
                }
                Err(message) => {
                    resources.push(result_of(step, "SyncFailed", message.clone()));
                    failure = Some(message);
                    break;
                }
            }
        }
        if failure.is_some() {
            break;
        }
        let more = groups[index + 1..]
            .iter()
            .any(|(s, _)| *s != Stage::SyncFail);
        let has_hooks = to_wait.iter().any(|(_, _, _, hook)| *hook);
        let report = ProgressReport {
            message,
            resources: resources.clone(),
            health: Vec::new(),
        };
        if (more || has_hooks)
            && let Err(message) = wait_healthy(shared, &to_wait, &req.stop, report, progress).await
        {
            if req.stop.is_set() {
                return terminated(resources);
            }
            failure = Some(format!("{} wave {wave}: {message}", stage_name(*stage)));
            break;
        }
        // Hooks whose policy says so are deleted once they succeeded.
        for step in &steps {
            if let Some(hook) = &step.hook
                && hook
                    .delete_policies
                    .contains(&capstan_engine::plan::HookDeletePolicy::HookSucceeded)
                && let Err(e) = delete(shared, step, PropagationPolicy::Background).await
            {
                tracing::warn!(object = %step.object_ref, error = %e, "cannot delete hook");
            }
        }
    }
    if let Some(message) = failure {
        for step in the_plan.steps.iter().filter(|s| s.stage == Stage::SyncFail) {
            let outcome = run_step(shared, step).await;
            resources.push(match outcome {
                Ok(_) => result_of(step, "Synced", String::new()),
                Err(e) => result_of(step, "SyncFailed", e),
            });
        }
        return SyncOutcome {
            succeeded: false,
            terminated: false,
            message,
            resources,
        };
    }
    let applied = resources.iter().filter(|r| r.status == "Synced").count();
    let pruned = resources.iter().filter(|r| r.status == "Pruned").count();
    SyncOutcome {
        succeeded: true,
        terminated: false,
        message: format!("successfully synced: {applied} applied, {pruned} pruned"),
        resources,
    }
}

/// The plan of a selective sync: only the steps of the listed objects, no hooks (Argo CD runs
/// none in a selective sync), and the destination namespace when the plan creates it (nothing
/// in it could be applied otherwise). Fails, naming them, when listed objects are neither
/// desired nor tracked by the application.
fn select(mut the_plan: SyncPlan, listed: &[SyncOperationResource]) -> Result<SyncPlan, String> {
    let is_listed = |r: &plan::ObjectRef| {
        listed
            .iter()
            .any(|l| l.matches(&r.group, &r.kind, &r.namespace, &r.name))
    };
    // Every desired object is a step or skipped (Synced under ApplyOutOfSyncOnly, a Skip hook),
    // and so is every tracked one (pruned, or skipped because pruning is off or refused).
    let known: Vec<&plan::ObjectRef> = the_plan
        .steps
        .iter()
        .filter(|s| s.stage != Stage::Namespace)
        .map(|s| &s.object_ref)
        .chain(the_plan.skipped.iter().map(|s| &s.object_ref))
        .collect();
    let unknown: Vec<String> = listed
        .iter()
        .filter(|l| {
            !known
                .iter()
                .any(|r| l.matches(&r.group, &r.kind, &r.namespace, &r.name))
        })
        .map(ToString::to_string)
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "selective sync: {} neither in the application's desired state nor tracked by it; nothing applied",
            if unknown.len() == 1 {
                format!("{} is", unknown[0])
            } else {
                format!("{} are", unknown.join(", "))
            }
        ));
    }
    the_plan
        .steps
        .retain(|s| s.stage == Stage::Namespace || (s.hook.is_none() && is_listed(&s.object_ref)));
    the_plan.skipped.retain(|s| is_listed(&s.object_ref));
    Ok(the_plan)
}

fn result_of(step: &SyncStep, status: &str, message: String) -> ResourceResult {
    let version = step
        .object
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(|v| v.rsplit('/').next().unwrap_or(v).to_string())
        .unwrap_or_default();
    ResourceResult {
        group: step.object_ref.group.clone(),
        version,
        kind: step.object_ref.kind.clone(),
        namespace: step.object_ref.namespace.clone(),
        name: step.object_ref.name.clone(),
        status: status.to_string(),
        message,
        sync_phase: stage_name(step.stage).to_string(),
        wave: step.wave,
        hook_phase: if step.hook.is_some() {
            if status == "SyncFailed" {
                "Failed".into()
            } else {
                "Succeeded".into()
            }
        } else {
            String::new()
        },
    }
}

async fn namespace_exists(shared: &Shared, namespace: &str) -> bool {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(shared.client.clone());
    matches!(api.get_opt(namespace).await, Ok(Some(_)))
}

async fn api_for(
    shared: &Shared,
    obj: &Value,
) -> Result<(Api<DynamicObject>, Arc<Watched>, ApiResource), String> {
    let gvk = gvk_of(obj)?;
    let watched = shared
        .live
        .watch(&gvk)
        .await
        .map_err(|e| format!("{}: {e}", describe(obj)))?;
    let ar = watched.resource.clone();
    let api = match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) if watched.namespaced && !ns.is_empty() => {
            Api::namespaced_with(shared.client.clone(), ns, &ar)
        }
        _ => Api::all_with(shared.client.clone(), &ar),
    };
    Ok((api, watched, ar))
}

fn name_of(obj: &Value) -> String {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// How many dry-run requests are in flight at once: enough to hide the round trips of a large
/// application, few enough not to flood the API server.
const DRY_RUN_CONCURRENCY: usize = 8;

/// Server-side dry run of every object the plan applies, [`DRY_RUN_CONCURRENCY`] requests at a
/// time; the error is the first refusal in plan order (whatever order the answers arrive in), so
/// the message does not depend on timing.
///
/// Objects in a namespace the plan creates first cannot be dry-run before it exists, nor can
/// objects of a kind a CRD of the same plan defines ([`PendingKind`]) before that CRD is
/// established: they are checked when applied, and the CRD applied before them (the plan puts
/// CRDs ahead of custom resources, and it is dry-run here itself) is their check.
async fn dry_run(
    shared: &Shared,
    the_plan: &SyncPlan,
    pending: &[PendingKind],
) -> Result<(), String> {
    let created_namespaces: HashSet<String> = the_plan
        .steps
        .iter()
        .filter(|s| s.object_ref.kind == "Namespace" && s.object_ref.group.is_empty())
        .map(|s| s.object_ref.name.clone())
        .collect();
    let checked = the_plan.steps.iter().filter(|step| {
        matches!(step.action, Action::Apply { .. })
            && step.stage != Stage::SyncFail
            && !created_namespaces.contains(&step.object_ref.namespace)
            && pending_kind_of(pending, step).is_none()
    });
    // Made up front rather than in a `map` closure over the steps: a closure returning a
    // borrowing future, held across an await, trips rustc's check that the reconcile future is
    // Send ("implementation of Send is not general enough").
    let checks: Vec<_> = checked.map(|step| dry_run_one(shared, step)).collect();
    // `buffered` yields the answers in plan order.
    let mut answers = futures::stream::iter(checks).buffered(DRY_RUN_CONCURRENCY);
    while let Some(answer) = answers.next().await {
        answer?;
    }
    Ok(())
}

/// The dry run of one step's object.
async fn dry_run_one(shared: &Shared, step: &SyncStep) -> Result<(), String> {
    let (api, _, _) = api_for(shared, &step.object).await?;
    let params = PatchParams::apply(ann::FIELD_MANAGER).force().dry_run();
    api.patch(&name_of(&step.object), &params, &Patch::Apply(&step.object))
        .await
        .map(drop)
        .map_err(|e| {
            format!(
                "{} would be refused by the cluster (nothing was applied): {}",
                step.object_ref,
                kube_message(&e)
            )
        })
}

/// How long the sync waits for a CRD it applied to be Established and its kind served before
/// the first object of that kind is applied.
const CRD_ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// The pending kind (see [`PendingKind`]) of a step that writes an object, if any.
fn pending_kind_of<'a>(pending: &'a [PendingKind], step: &SyncStep) -> Option<&'a PendingKind> {
    if matches!(step.action, Action::Prune { .. }) {
        return None;
    }
    let version = step
        .object
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(|v| v.rsplit('/').next().unwrap_or(v))
        .unwrap_or_default();
    pending.iter().find(|p| {
        p.group == step.object_ref.group && p.kind == step.object_ref.kind && p.version == version
    })
}

/// Why a pending kind could not be used.
#[derive(Debug, PartialEq, Eq)]
enum Unserved {
    /// The operation is being terminated.
    Stopped,
    /// The CRD was not Established, or its kind not served, in time; in words.
    Failed(String),
}

/// Waits until the CRD defining `pending` reports the Established condition and discovery (a
/// fresh request, [`crate::live::LiveCache::watch`] asks the server every time a kind is not
/// watched yet) serves the kind, so that its watch can start and its objects be applied.
/// Gives up after `timeout` or as soon as `stop` is set.
async fn until_served(
    shared: &Shared,
    pending: &PendingKind,
    stop: &StopFlag,
    timeout: Duration,
) -> Result<(), Unserved> {
    let crds: Api<CustomResourceDefinition> = Api::all(shared.client.clone());
    let gvk = GroupVersionKind::gvk(&pending.group, &pending.version, &pending.kind);
    let crd = &pending.crd;
    poll_until(stop, timeout, || {
        let crds = crds.clone();
        let gvk = gvk.clone();
        async move {
            let found = crds.get_opt(crd).await.map_err(|e| {
                format!(
                    "reading CustomResourceDefinition {crd}: {}",
                    kube_message(&e)
                )
            })?;
            let Some(found) = found else {
                return Ok(Err(format!(
                    "CustomResourceDefinition {crd} does not exist"
                )));
            };
            if !is_established(&found) {
                return Ok(Err(format!(
                    "CustomResourceDefinition {crd} is not Established{}",
                    established_message(&found)
                )));
            }
            match shared.live.watch(&gvk).await {
                Ok(_) => Ok(Ok(())),
                Err(e @ ControllerError::UnknownKind { .. }) => Ok(Err(format!(
                    "CustomResourceDefinition {crd} is Established but {e}"
                ))),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await
}

/// Calls `probe` every 100 ms until it answers `Ok(Ok(()))`. `Ok(Err(why))` means not yet
/// (`why` is the message when time runs out), `Err` a failure that waiting will not cure.
async fn poll_until<F, Fut>(
    stop: &StopFlag,
    timeout: Duration,
    mut probe: F,
) -> Result<(), Unserved>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Result<(), String>, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if stop.is_set() {
            return Err(Unserved::Stopped);
        }
        let why = match probe().await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(why)) => why,
            Err(failure) => return Err(Unserved::Failed(failure)),
        };
        if Instant::now() >= deadline {
            return Err(Unserved::Failed(format!(
                "{why} after {} s",
                timeout.as_secs_f64()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a CRD's status has the condition Established=True.
fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// `: <message>` of a CRD's Established (else NamesAccepted) condition when it has one.
fn established_message(crd: &CustomResourceDefinition) -> String {
    let conditions = crd.status.as_ref().and_then(|s| s.conditions.as_ref());
    ["Established", "NamesAccepted"]
        .iter()
        .find_map(|t| {
            conditions?
                .iter()
                .find(|c| c.type_ == *t && c.status != "True")
                .and_then(|c| c.message.clone())
                .filter(|m| !m.is_empty())
        })
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

/// The API server's message of an error (no request bodies, so no Secret values).
pub fn kube_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

type StepResult = Result<(Option<Arc<Watched>>, String, String), String>;

async fn run_step(shared: &Shared, step: &SyncStep) -> StepResult {
    let (api, watched, _) = api_for(shared, &step.object).await?;
    let namespace = step.object_ref.namespace.clone();
    match &step.action {
        Action::Apply { .. } => {
            // Client-side apply is not implemented; server-side apply is used for every
            // object (ServerSideApply=false is accepted and treated as the default).
            if let Some(hook) = &step.hook
                && hook
                    .delete_policies
                    .contains(&capstan_engine::plan::HookDeletePolicy::BeforeHookCreation)
            {
                delete_and_wait(&api, &name_of(&step.object)).await?;
            }
            let params = PatchParams::apply(ann::FIELD_MANAGER).force();
            let name = name_of(&step.object);
            let applied = api
                .patch(&name, &params, &Patch::Apply(&step.object))
                .await
                .map_err(|e| format!("{}: {}", step.object_ref, kube_message(&e)))?;
            wait_cached(&watched, &applied).await;
            Ok((Some(watched), namespace, name))
        }
        Action::Create => {
            let obj: DynamicObject = serde_json::from_value(step.object.clone())
                .map_err(|e| format!("{}: {e}", step.object_ref))?;
            let created = api
                .create(&PostParams::default(), &obj)
                .await
                .map_err(|e| format!("{}: {}", step.object_ref, kube_message(&e)))?;
            let name = created.metadata.name.clone().unwrap_or_default();
            wait_cached(&watched, &created).await;
            Ok((Some(watched), namespace, name))
        }
        Action::Replace { force } => {
            let name = name_of(&step.object);
            let mut obj: DynamicObject = serde_json::from_value(step.object.clone())
                .map_err(|e| format!("{}: {e}", step.object_ref))?;
            let current = api
                .get_opt(&name)
                .await
                .map_err(|e| format!("{}: {}", step.object_ref, kube_message(&e)))?;
            let result = match current {
                Some(live) => {
                    obj.metadata.resource_version = live.metadata.resource_version.clone();
                    match api.replace(&name, &PostParams::default(), &obj).await {
                        Ok(o) => Ok(o),
                        Err(_) if *force => {
                            delete_and_wait(&api, &name).await?;
                            obj.metadata.resource_version = None;
                            api.create(&PostParams::default(), &obj).await
                        }
                        Err(e) => Err(e),
                    }
                }
                None => api.create(&PostParams::default(), &obj).await,
            }
            .map_err(|e| format!("{}: {}", step.object_ref, kube_message(&e)))?;
            wait_cached(&watched, &result).await;
            Ok((Some(watched), namespace, name))
        }
        Action::Prune { propagation } => {
            delete(shared, step, *propagation).await?;
            Ok((None, namespace, name_of(&step.object)))
        }
    }
}

async fn delete(
    shared: &Shared,
    step: &SyncStep,
    propagation: PropagationPolicy,
) -> Result<(), String> {
    let (api, _, _) = api_for(shared, &step.object).await?;
    let params = DeleteParams {
        propagation_policy: Some(match propagation {
            PropagationPolicy::Foreground => KubePropagation::Foreground,
            PropagationPolicy::Background => KubePropagation::Background,
            PropagationPolicy::Orphan => KubePropagation::Orphan,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name_of(&step.object), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(format!("{}: {}", step.object_ref, kube_message(&e))),
    }
}

async fn delete_and_wait(api: &Api<DynamicObject>, name: &str) -> Result<(), String> {
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(format!("{name}: {}", kube_message(&e))),
    }
    for _ in 0..600 {
        match api.get_opt(name).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => return Err(format!("{name}: {}", kube_message(&e))),
        }
    }
    Err(format!("{name}: still present a minute after its deletion"))
}

/// Waits (briefly) until the watch delivered `written`, so that the comparison after a sync
/// sees what the sync wrote rather than the state before it.
async fn wait_cached(watched: &Watched, written: &DynamicObject) {
    let Some(rv) = written.metadata.resource_version.as_deref() else {
        return;
    };
    let namespace = written.metadata.namespace.clone().unwrap_or_default();
    let name = written.metadata.name.clone().unwrap_or_default();
    let target: Option<u64> = rv.parse().ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(cached) = watched.get(&namespace, &name) {
            let current = cached.metadata.resource_version.as_deref();
            let caught_up = match (current.and_then(|c| c.parse::<u64>().ok()), target) {
                (Some(c), Some(t)) => c >= t,
                _ => current == Some(rv),
            };
            if caught_up {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every object of a group is Healthy (objects without health count as Healthy).
/// Degraded fails at once; so does a failed hook.
/// Gives up (with an error) as soon as `stop` is set. Reports the objects' health through
/// `progress` when first seen and whenever it changes.
async fn wait_healthy(
    shared: &Shared,
    objects: &[(Arc<Watched>, String, String, bool)],
    stop: &StopFlag,
    mut report: ProgressReport,
    progress: Progress<'_>,
) -> Result<(), String> {
    let deadline = Instant::now() + shared.config.wave_timeout;
    let mut reported: Option<Vec<ObjectHealth>> = None;
    loop {
        if stop.is_set() {
            return Err(MESSAGE_TERMINATED.to_string());
        }
        let mut pending = None;
        let mut degraded = None;
        let mut seen = Vec::with_capacity(objects.len());
        for (watched, namespace, name, _) in objects {
            let mut health = ObjectHealth {
                group: watched.resource.group.clone(),
                kind: watched.resource.kind.clone(),
                namespace: namespace.clone(),
                name: name.clone(),
                status: Hs::Missing.to_string(),
                message: String::new(),
            };
            let Some(live) = watched.get(namespace, name) else {
                pending = Some(format!(
                    "{} {namespace}/{name} is not there yet",
                    watched.resource.kind
                ));
                seen.push(health);
                continue;
            };
            let value = watched.value(&live);
            let assessed = shared.health.assess(&value);
            health.status = assessed
                .as_ref()
                .map_or(Hs::Healthy, |h| h.status)
                .to_string();
            health.message = assessed
                .as_ref()
                .and_then(|h| h.message.clone())
                .unwrap_or_default();
            seen.push(health);
            match assessed {
                None => {}
                Some(h) if h.status == Hs::Healthy => {}
                Some(h) if h.status == Hs::Degraded => {
                    degraded.get_or_insert(format!(
                        "{} is Degraded{}",
                        describe(&value),
                        h.message.map(|m| format!(": {m}")).unwrap_or_default()
                    ));
                }
                Some(h) => {
                    pending = Some(format!(
                        "{} is {}{}",
                        describe(&value),
                        h.status,
                        h.message.map(|m| format!(": {m}")).unwrap_or_default()
                    ));
                }
            }
        }
        if reported.as_ref() != Some(&seen) {
            report.health = seen.clone();
            progress(report.clone()).await;
            reported = Some(seen);
        }
        if let Some(message) = degraded {
            return Err(message);
        }
        match pending {
            None => return Ok(()),
            Some(p) if Instant::now() >= deadline => {
                return Err(format!("timed out waiting for health: {p}"));
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::AtomicUsize;

    fn crd_with(conditions: Value) -> CustomResourceDefinition {
        serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"kind": "Widget", "plural": "widgets"},
                     "versions": [{"name": "v1", "served": true, "storage": true}]},
            "status": {"conditions": conditions},
        }))
        .expect("a valid CRD")
    }

    #[test]
    fn established_is_read_from_the_crd_conditions() {
        let established = crd_with(json!([
            {"type": "NamesAccepted", "status": "True"},
            {"type": "Established", "status": "True"},
        ]));
        assert!(is_established(&established));
        let conflicting = crd_with(json!([
            {"type": "NamesAccepted", "status": "False",
             "message": "\"widgets\" is already in use"},
            {"type": "Established", "status": "False"},
        ]));
        assert!(!is_established(&conflicting));
        assert_eq!(
            established_message(&conflicting),
            ": \"widgets\" is already in use"
        );
        assert!(!is_established(&crd_with(json!([]))));
    }

    #[tokio::test]
    async fn polling_ends_when_ready_on_a_failure_on_stop_or_out_of_time() {
        let stop = StopFlag::default();
        let calls = AtomicUsize::new(0);
        // Ready at the third probe.
        let ready = poll_until(&stop, Duration::from_secs(60), || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                Ok(if n < 2 {
                    Err("not yet".to_string())
                } else {
                    Ok(())
                })
            }
        })
        .await;
        assert_eq!(ready, Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        // A failure waiting cannot cure ends it at once.
        let failed = poll_until(&stop, Duration::from_secs(60), || async {
            Err("forbidden".to_string())
        })
        .await;
        assert_eq!(failed, Err(Unserved::Failed("forbidden".into())));

        // Never ready: the last reason, once the time is up.
        let never = poll_until(&stop, Duration::ZERO, || async {
            Ok(Err(
                "CustomResourceDefinition widgets.example.com is not Established".into(),
            ))
        })
        .await;
        assert_eq!(
            never,
            Err(Unserved::Failed(
                "CustomResourceDefinition widgets.example.com is not Established after 0 s".into()
            ))
        );

        // Terminated: stops without asking again.
        stop.stop();
        let stopped = poll_until(&stop, Duration::from_secs(60), || async {
            panic!("probed after the stop")
        })
        .await;
        assert_eq!(stopped, Err(Unserved::Stopped));
    }
}
