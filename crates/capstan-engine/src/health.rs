//! Health assessment: is an object doing its job?
//!
//! [`builtin`] knows the kinds every cluster has (Deployment, StatefulSet, DaemonSet, ReplicaSet,
//! Pod, Job, CronJob, PersistentVolumeClaim, Service, Ingress, HorizontalPodAutoscaler,
//! APIService) and follows the rules GitOps users know from Argo CD. [`HealthChecker`] adds custom
//! checks written in Lua ([`crate::lua`]), which override the built-in check of their kind, and
//! honours the ignore-healthcheck annotations. [`aggregate`] rolls object health up into the
//! health of an application.
//!
//! An object without an applicable check has *no* health (`None`), which is not the same as
//! Healthy: a ConfigMap is neither working nor broken, and the roll-up ignores it.
//!
//! Everything here is pure: no clock, no I/O. Assessing a Lua check runs the script in a sandbox
//! with an instruction and memory budget, see [`crate::lua`].

use crate::lua::LuaScripts;
use capstan_api::annotations;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

/// The health of one object, or of an application. The derived order is "worse": the roll-up of
/// several objects is their maximum (Healthy < Suspended < Progressing < Missing < Degraded <
/// Unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum HealthStatus {
    /// Doing its job.
    Healthy,
    /// Deliberately paused or suspended (a paused Deployment, a suspended Job or CronJob).
    Suspended,
    /// Not yet healthy but still moving towards it (a rollout, a pending Pod).
    Progressing,
    /// Desired but absent from the cluster (set by the controller, never by a check).
    Missing,
    /// Failed, or stuck in a way that needs a person (CrashLoopBackOff, deadline exceeded).
    Degraded,
    /// The check could not decide (a custom script failed, an unexpected status).
    Unknown,
}

impl HealthStatus {
    /// Every status, best first.
    pub const ALL: [HealthStatus; 6] = [
        HealthStatus::Healthy,
        HealthStatus::Suspended,
        HealthStatus::Progressing,
        HealthStatus::Missing,
        HealthStatus::Degraded,
        HealthStatus::Unknown,
    ];

    /// The status name as it appears in manifests, scripts and JSON (`"Healthy"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "Healthy",
            HealthStatus::Suspended => "Suspended",
            HealthStatus::Progressing => "Progressing",
            HealthStatus::Missing => "Missing",
            HealthStatus::Degraded => "Degraded",
            HealthStatus::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the six status names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid health status {0:?}: expected Healthy, Suspended, Progressing, Missing, Degraded or Unknown"
)]
pub struct InvalidHealthStatus(pub String);

impl FromStr for HealthStatus {
    type Err = InvalidHealthStatus;

    /// Exact, case-sensitive names: scripts written for Argo CD spell them this way, and a typo
    /// should surface as an error rather than be guessed at.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HealthStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| InvalidHealthStatus(s.to_string()))
    }
}

/// The health of one object: a status and, where the check has something to say, why.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Health {
    /// The verdict.
    pub status: HealthStatus,
    /// A human explanation (`Waiting for rollout to finish: …`); never empty when present.
    pub message: Option<String>,
}

impl Health {
    /// A health with a message; an empty message is stored as `None`.
    pub fn new(status: HealthStatus, message: impl Into<String>) -> Self {
        let message = message.into();
        Health {
            status,
            message: (!message.is_empty()).then_some(message),
        }
    }

    /// A health without a message.
    pub fn status(status: HealthStatus) -> Self {
        Health {
            status,
            message: None,
        }
    }
}

/// The health of an application from the health of its objects: the worst one. Objects without
/// health are left out by the caller (they are not in the iterator); no objects at all is Healthy.
pub fn aggregate<'a>(items: impl IntoIterator<Item = &'a Health>) -> HealthStatus {
    items
        .into_iter()
        .map(|h| h.status)
        .max()
        .unwrap_or(HealthStatus::Healthy)
}

/// Assesses objects: built-in checks plus optional Lua overrides. Cloning is cheap (the scripts
/// sit behind an `Arc`), and one checker can be shared by every thread of the controller.
#[derive(Clone, Default)]
pub struct HealthChecker {
    lua: Option<LuaScripts>,
}

impl fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthChecker")
            .field("lua_scripts", &self.lua.as_ref().map_or(0, LuaScripts::len))
            .finish()
    }
}

impl HealthChecker {
    /// A checker with the built-in checks only.
    pub fn new() -> Self {
        HealthChecker { lua: None }
    }

    /// Adds custom Lua checks; a script for a kind replaces the built-in check of that kind.
    pub fn with_lua(mut self, scripts: LuaScripts) -> Self {
        self.lua = Some(scripts);
        self
    }

    /// The health of one object, or `None` when it is excluded by an ignore-healthcheck
    /// annotation or no check (custom or built-in) applies to its kind.
    pub fn assess(&self, obj: &Value) -> Option<Health> {
        if ignores_health(obj) {
            return None;
        }
        // Deletion wins over every check, custom ones included: whatever the object's own status
        // says, it is on its way out.
        if let Some(health) = being_deleted(obj) {
            return Some(health);
        }
        if let Some(scripts) = &self.lua {
            let (group, kind) = group_kind(obj);
            if let Some(script) = scripts.lookup(group, kind) {
                return Some(scripts.evaluate(script, obj));
            }
        }
        builtin(obj)
    }
}

/// True when the object carries `capstan.dev/ignore-healthcheck` or
/// `argocd.argoproj.io/ignore-healthcheck` (any value, as documented on the annotation).
pub fn ignores_health(obj: &Value) -> bool {
    obj.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| {
            a.contains_key(annotations::IGNORE_HEALTHCHECK)
                || a.contains_key(annotations::ARGOCD_IGNORE_HEALTHCHECK)
        })
}

/// The API group (`""` for the core group) and kind of an object, from `apiVersion` and `kind`.
pub fn group_kind(obj: &Value) -> (&str, &str) {
    let api_version = str_at(obj, &["apiVersion"]).unwrap_or("");
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    (group, str_at(obj, &["kind"]).unwrap_or(""))
}

/// The built-in health check for the object's kind; `None` when there is none (ConfigMap,
/// Secret, RBAC, CRDs, …). Annotations are not consulted here; see [`HealthChecker::assess`].
pub fn builtin(obj: &Value) -> Option<Health> {
    let (group, kind) = group_kind(obj);
    let check: fn(&Value) -> Health = match (group, kind) {
        ("apps" | "extensions", "Deployment") => deployment,
        ("apps", "StatefulSet") => stateful_set,
        ("apps" | "extensions", "DaemonSet") => daemon_set,
        ("apps" | "extensions", "ReplicaSet") => replica_set,
        ("", "Pod") => pod,
        ("", "PersistentVolumeClaim") => pvc,
        ("", "Service") => service,
        ("batch", "Job") => job,
        ("batch", "CronJob") => cron_job,
        ("networking.k8s.io" | "extensions", "Ingress") => ingress,
        ("autoscaling", "HorizontalPodAutoscaler") => hpa,
        ("apiregistration.k8s.io", "APIService") => api_service,
        _ => return being_deleted(obj),
    };
    Some(being_deleted(obj).unwrap_or_else(|| check(obj)))
}

/// An object with a deletion timestamp is Progressing (towards gone), whatever its kind: it is
/// usually held by a finalizer or draining its pods.
fn being_deleted(obj: &Value) -> Option<Health> {
    obj.pointer("/metadata/deletionTimestamp")
        .filter(|v| !v.is_null())?;
    let message = if str_at(obj, &["kind"]) == Some("Pod") {
        "Pod is being deleted"
    } else {
        "Pending deletion"
    };
    Some(Health::new(HealthStatus::Progressing, message))
}

// ---------------------------------------------------------------------------------------------
// JSON access. Live objects come from the API server, desired ones from a rendered manifest that
// may lack `status` entirely, so every field is optional and absent numbers count as zero (the
// API server omits zero-valued status counters).

fn at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, key| v.get(key))
}

fn str_at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(obj, path).and_then(Value::as_str)
}

fn int_at(obj: &Value, path: &[&str]) -> Option<i64> {
    let v = at(obj, path)?;
    v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
}

fn count(obj: &Value, path: &[&str]) -> i64 {
    int_at(obj, path).unwrap_or(0)
}

fn name(obj: &Value) -> &str {
    str_at(obj, &["metadata", "name"]).unwrap_or("")
}

/// `metadata.generation` not yet seen by the controller: any status is stale.
fn generation_pending(obj: &Value) -> bool {
    count(obj, &["metadata", "generation"]) > count(obj, &["status", "observedGeneration"])
}

fn conditions(obj: &Value) -> impl Iterator<Item = &Map<String, Value>> {
    at(obj, &["status", "conditions"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Map<String, Value>> {
    conditions(obj).find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

fn field<'a>(cond: &'a Map<String, Value>, key: &str) -> &'a str {
    cond.get(key).and_then(Value::as_str).unwrap_or("")
}

fn is_true(cond: &Map<String, Value>) -> bool {
    field(cond, "status") == "True"
}

fn has_lb_ingress(obj: &Value) -> bool {
    at(obj, &["status", "loadBalancer", "ingress"])
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Workloads.

fn deployment(obj: &Value) -> Health {
    use HealthStatus::*;
    if at(obj, &["spec", "paused"]).and_then(Value::as_bool) == Some(true) {
        return Health::new(Suspended, "Deployment is paused");
    }
    if generation_pending(obj) {
        return Health::new(
            Progressing,
            "Waiting for rollout to finish: observed deployment generation less than desired generation",
        );
    }
    if condition(obj, "Progressing")
        .is_some_and(|c| field(c, "reason") == "ProgressDeadlineExceeded")
    {
        return Health::new(
            Degraded,
            format!("Deployment {:?} exceeded its progress deadline", name(obj)),
        );
    }
    // spec.replicas defaults to 1 on the server; a manifest that omits it means 1.
    let replicas = int_at(obj, &["spec", "replicas"]).unwrap_or(1);
    let total = count(obj, &["status", "replicas"]);
    let updated = count(obj, &["status", "updatedReplicas"]);
    let available = count(obj, &["status", "availableReplicas"]);
    if updated < replicas {
        return Health::new(
            Progressing,
            format!(
                "Waiting for rollout to finish: {updated} out of {replicas} new replicas have been updated..."
            ),
        );
    }
    if total > updated {
        return Health::new(
            Progressing,
            format!(
                "Waiting for rollout to finish: {} old replicas are pending termination...",
                total - updated
            ),
        );
    }
    if available < updated {
        return Health::new(
            Progressing,
            format!(
                "Waiting for rollout to finish: {available} of {updated} updated replicas are available..."
            ),
        );
    }
    Health::status(Healthy)
}

fn stateful_set(obj: &Value) -> Health {
    use HealthStatus::*;
    // observedGeneration absent means the controller has not looked at the object at all.
    if int_at(obj, &["status", "observedGeneration"]).unwrap_or(0) == 0 || generation_pending(obj) {
        return Health::new(
            Progressing,
            "Waiting for statefulset spec update to be observed...",
        );
    }
    let replicas = int_at(obj, &["spec", "replicas"]).unwrap_or(1);
    let ready = count(obj, &["status", "readyReplicas"]);
    let updated = count(obj, &["status", "updatedReplicas"]);
    if ready < replicas {
        return Health::new(
            Progressing,
            format!("Waiting for {} pods to be ready...", replicas - ready),
        );
    }
    let strategy = str_at(obj, &["spec", "updateStrategy", "type"]).unwrap_or("RollingUpdate");
    if strategy == "OnDelete" {
        // Pods are only replaced when someone deletes them: nothing to wait for.
        return Health::new(
            Healthy,
            format!("statefulset has {ready} ready pods (update strategy OnDelete)"),
        );
    }
    if strategy == "RollingUpdate"
        && let Some(partition) = int_at(
            obj,
            &["spec", "updateStrategy", "rollingUpdate", "partition"],
        )
        && partition > 0
    {
        let expected = (replicas - partition).max(0);
        if updated < expected {
            return Health::new(
                Progressing,
                format!(
                    "Waiting for partitioned roll out to finish: {updated} out of {expected} new pods have been updated..."
                ),
            );
        }
        return Health::new(
            Healthy,
            format!("partitioned roll out complete: {updated} new pods have been updated..."),
        );
    }
    let current_rev = str_at(obj, &["status", "currentRevision"]).unwrap_or("");
    let update_rev = str_at(obj, &["status", "updateRevision"]).unwrap_or("");
    if !update_rev.is_empty() && current_rev != update_rev {
        return Health::new(
            Progressing,
            format!(
                "waiting for statefulset rolling update to complete {updated} pods at revision {update_rev}..."
            ),
        );
    }
    let current = count(obj, &["status", "currentReplicas"]);
    Health::new(
        Healthy,
        format!("statefulset rolling update complete {current} pods at revision {current_rev}..."),
    )
}

fn daemon_set(obj: &Value) -> Health {
    use HealthStatus::*;
    if generation_pending(obj) {
        return Health::new(
            Progressing,
            "Waiting for rollout to finish: observed daemon set generation less than desired generation",
        );
    }
    let desired = count(obj, &["status", "desiredNumberScheduled"]);
    let updated = count(obj, &["status", "updatedNumberScheduled"]);
    let available = count(obj, &["status", "numberAvailable"]);
    if str_at(obj, &["spec", "updateStrategy", "type"]) == Some("OnDelete") {
        return Health::new(
            Healthy,
            format!(
                "daemon set {updated} out of {desired} new pods have been updated (update strategy OnDelete)"
            ),
        );
    }
    if updated < desired {
        return Health::new(
            Progressing,
            format!(
                "Waiting for daemon set {:?} rollout to finish: {updated} out of {desired} new pods have been updated...",
                name(obj)
            ),
        );
    }
    if available < desired {
        return Health::new(
            Progressing,
            format!(
                "Waiting for daemon set {:?} rollout to finish: {available} of {desired} updated pods are available...",
                name(obj)
            ),
        );
    }
    Health::status(Healthy)
}

fn replica_set(obj: &Value) -> Health {
    use HealthStatus::*;
    if generation_pending(obj) {
        return Health::new(
            Progressing,
            "Waiting for rollout to finish: observed replica set generation less than desired generation",
        );
    }
    if let Some(c) = condition(obj, "ReplicaFailure").filter(|c| is_true(c)) {
        return Health::new(Degraded, field(c, "message"));
    }
    let replicas = int_at(obj, &["spec", "replicas"]).unwrap_or(1);
    let available = count(obj, &["status", "availableReplicas"]);
    if available < replicas {
        return Health::new(
            Progressing,
            format!(
                "Waiting for rollout to finish: {available} out of {replicas} new replicas are available..."
            ),
        );
    }
    Health::status(Healthy)
}

/// Waiting reasons that will not resolve by themselves. Besides the names kubelet uses today, any
/// `Err…`, `…Error` or `…BackOff` reason counts, so that new kubelet reasons are caught too.
fn is_failing_wait_reason(reason: &str) -> bool {
    matches!(
        reason,
        "CrashLoopBackOff"
            | "ImagePullBackOff"
            | "ErrImagePull"
            | "ErrImageNeverPull"
            | "CreateContainerConfigError"
            | "CreateContainerError"
            | "InvalidImageName"
            | "RunContainerError"
            | "PreStartHookError"
            | "PostStartHookError"
    ) || reason.starts_with("Err")
        || reason.ends_with("Error")
        || reason.ends_with("BackOff")
}

fn container_statuses(obj: &Value) -> impl Iterator<Item = &Value> {
    ["initContainerStatuses", "containerStatuses"]
        .into_iter()
        .filter_map(|key| at(obj, &["status", key]).and_then(Value::as_array))
        .flatten()
}

fn pod(obj: &Value) -> Health {
    use HealthStatus::*;
    let restart_policy = str_at(obj, &["spec", "restartPolicy"]).unwrap_or("Always");
    let pod_message = str_at(obj, &["status", "message"]).unwrap_or("");
    // Only for long-running pods: a hook pod (Never/OnFailure) waiting on an image would
    // otherwise fail its sync phase early and then run anyway once the image appears.
    if restart_policy == "Always" {
        let failing: Vec<String> = container_statuses(obj)
            .filter_map(|cs| {
                let waiting = at(cs, &["state", "waiting"])?;
                let reason = str_at(waiting, &["reason"]).unwrap_or("");
                if !is_failing_wait_reason(reason) {
                    return None;
                }
                let container = str_at(cs, &["name"]).unwrap_or("?");
                Some(
                    match str_at(waiting, &["message"]).filter(|m| !m.is_empty()) {
                        Some(msg) => format!("container {container}: {reason}: {msg}"),
                        None => format!("container {container}: {reason}"),
                    },
                )
            })
            .collect();
        if !failing.is_empty() {
            return Health::new(Degraded, failing.join("; "));
        }
    }
    match str_at(obj, &["status", "phase"]).unwrap_or("") {
        "Pending" | "" => Health::new(Progressing, pod_message),
        "Succeeded" => Health::new(Healthy, pod_message),
        "Failed" => {
            if !pod_message.is_empty() {
                return Health::new(Degraded, pod_message);
            }
            let terminated: Vec<String> = container_statuses(obj)
                .filter_map(|cs| {
                    let t = at(cs, &["state", "terminated"])?;
                    let code = int_at(t, &["exitCode"]).unwrap_or(0);
                    (code != 0).then(|| {
                        let container = str_at(cs, &["name"]).unwrap_or("?");
                        let why = str_at(t, &["message"])
                            .filter(|m| !m.is_empty())
                            .or_else(|| str_at(t, &["reason"]))
                            .unwrap_or("");
                        format!("container {container} exited with code {code}: {why}")
                            .trim_end_matches([':', ' '])
                            .to_string()
                    })
                })
                .collect();
            Health::new(Degraded, terminated.join("; "))
        }
        "Running" => {
            if restart_policy != "Always" {
                // Finite pods (typically hooks) are only done when they succeed.
                return Health::new(Progressing, pod_message);
            }
            if pod_ready(obj) {
                return Health::new(Healthy, pod_message);
            }
            // Not ready and a container has died before: it is restarting after a crash.
            let crashed = container_statuses(obj).find_map(|cs| {
                let t = at(cs, &["lastState", "terminated"])?;
                let container = str_at(cs, &["name"]).unwrap_or("?");
                let why = str_at(t, &["message"])
                    .filter(|m| !m.is_empty())
                    .or_else(|| str_at(t, &["reason"]))
                    .unwrap_or("terminated");
                Some(format!("container {container} restarted: {why}"))
            });
            match crashed {
                Some(msg) => Health::new(Degraded, msg),
                None => Health::new(Progressing, pod_message),
            }
        }
        other => Health::new(
            Unknown,
            if pod_message.is_empty() {
                format!("unexpected pod phase {other:?}")
            } else {
                pod_message.to_string()
            },
        ),
    }
}

/// The Ready condition when the kubelet reports one; otherwise every container reports ready.
fn pod_ready(obj: &Value) -> bool {
    if let Some(c) = condition(obj, "Ready") {
        return is_true(c);
    }
    let mut statuses = at(obj, &["status", "containerStatuses"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .peekable();
    statuses.peek().is_some()
        && statuses.all(|cs| cs.get("ready").and_then(Value::as_bool) == Some(true))
}

fn job(obj: &Value) -> Health {
    use HealthStatus::*;
    let mut failed = None;
    let mut complete = None;
    let mut suspended = None;
    for c in conditions(obj).filter(|c| is_true(c)) {
        match field(c, "type") {
            "Failed" => failed = Some(field(c, "message")),
            "Complete" => complete = Some(field(c, "message")),
            "Suspended" => suspended = Some(field(c, "message")),
            _ => {}
        }
    }
    if let Some(msg) = failed {
        let reason = conditions(obj)
            .find(|c| field(c, "type") == "Failed")
            .map_or("", |c| field(c, "reason"));
        let msg = match (reason, msg) {
            ("", m) => m.to_string(),
            (r, "") => r.to_string(),
            (r, m) => format!("{r}: {m}"),
        };
        return Health::new(Degraded, msg);
    }
    if let Some(msg) = complete {
        return Health::new(Healthy, msg);
    }
    let spec_suspend = at(obj, &["spec", "suspend"]).and_then(Value::as_bool) == Some(true);
    if suspended.is_some() || spec_suspend {
        return Health::new(
            Suspended,
            suspended
                .filter(|m| !m.is_empty())
                .unwrap_or("Job is suspended"),
        );
    }
    let active = count(obj, &["status", "active"]);
    Health::new(
        Progressing,
        if active > 0 {
            format!("Job has {active} active pods")
        } else {
            String::new()
        },
    )
}

fn cron_job(obj: &Value) -> Health {
    use HealthStatus::*;
    if at(obj, &["spec", "suspend"]).and_then(Value::as_bool) == Some(true) {
        return Health::new(Suspended, "CronJob is suspended");
    }
    let Some(last_schedule) = str_at(obj, &["status", "lastScheduleTime"]) else {
        return Health::new(Healthy, "CronJob has not been scheduled yet");
    };
    let running = at(obj, &["status", "active"])
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if running {
        return Health::new(Healthy, "CronJob has a running job");
    }
    // Kubernetes writes both times as RFC 3339 in UTC with second precision, so they order as
    // strings; comparing them needs no clock.
    match str_at(obj, &["status", "lastSuccessfulTime"]) {
        Some(last_success) if last_success >= last_schedule => Health::new(
            Healthy,
            format!("CronJob's last run (scheduled {last_schedule}) succeeded"),
        ),
        _ => Health::new(
            Degraded,
            format!("CronJob's last run (scheduled {last_schedule}) did not succeed"),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Storage, networking, autoscaling, aggregation.

fn pvc(obj: &Value) -> Health {
    use HealthStatus::*;
    match str_at(obj, &["status", "phase"]).unwrap_or("") {
        "Bound" => Health::status(Healthy),
        "Lost" => Health::new(Degraded, "PersistentVolumeClaim lost its PersistentVolume"),
        "Pending" | "" => Health::new(Progressing, "Waiting for the volume to be bound"),
        other => Health::new(Unknown, format!("unexpected claim phase {other:?}")),
    }
}

fn service(obj: &Value) -> Health {
    use HealthStatus::*;
    if str_at(obj, &["spec", "type"]) != Some("LoadBalancer") || has_lb_ingress(obj) {
        return Health::status(Healthy);
    }
    Health::new(
        Progressing,
        "Waiting for the load balancer to be provisioned",
    )
}

fn ingress(obj: &Value) -> Health {
    use HealthStatus::*;
    if has_lb_ingress(obj) {
        return Health::status(Healthy);
    }
    Health::new(Progressing, "Waiting for the ingress to get an address")
}

const HPA_V1_CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";

fn hpa(obj: &Value) -> Health {
    use HealthStatus::*;
    // autoscaling/v2 reports conditions in status; autoscaling/v1 has no such field and the API
    // server serialises them as JSON into an annotation instead.
    let parsed;
    let conds: Vec<&Map<String, Value>> = if at(obj, &["status", "conditions"]).is_some() {
        conditions(obj).collect()
    } else if let Some(raw) = str_at(obj, &["metadata", "annotations", HPA_V1_CONDITIONS]) {
        parsed = match serde_json::from_str::<Value>(raw) {
            Ok(v) => v,
            Err(e) => {
                return Health::new(
                    Unknown,
                    format!("annotation {HPA_V1_CONDITIONS} is not a JSON list of conditions: {e}"),
                );
            }
        };
        parsed
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .collect()
    } else {
        Vec::new()
    };
    let degraded = conds.iter().find(|c| {
        matches!(field(c, "type"), "AbleToScale" | "ScalingActive")
            && field(c, "status") == "False"
            && {
                let reason = field(c, "reason");
                reason.starts_with("Failed")
                    || reason == "InvalidSelector"
                    || reason == "InvalidMetricSourceType"
            }
    });
    if let Some(c) = degraded {
        return Health::new(Degraded, field(c, "message"));
    }
    let healthy = conds.iter().find(|c| {
        matches!(
            (field(c, "type"), field(c, "reason")),
            ("AbleToScale", "SucceededRescale" | "ReadyForNewScale")
                | ("ScalingActive", "ValidMetricFound")
                | (
                    "ScalingLimited",
                    "DesiredWithinRange" | "TooFewReplicas" | "TooManyReplicas"
                )
        )
    });
    match healthy {
        Some(c) => Health::new(Healthy, field(c, "message")),
        None => Health::new(Progressing, "Waiting to Autoscale"),
    }
}

fn api_service(obj: &Value) -> Health {
    use HealthStatus::*;
    let Some(c) = condition(obj, "Available") else {
        return Health::new(Progressing, "Waiting to be processed");
    };
    let msg = match (field(c, "reason"), field(c, "message")) {
        ("", m) => m.to_string(),
        (r, "") => r.to_string(),
        (r, m) => format!("{r}: {m}"),
    };
    // Not available is Progressing, not Degraded: a fresh APIService is unavailable until its
    // backing Deployment is ready, and without a clock the engine cannot tell that from a
    // permanent failure.
    if is_true(c) {
        Health::new(Healthy, msg)
    } else {
        Health::new(Progressing, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn order_is_worse() {
        let mut all = HealthStatus::ALL;
        all.reverse();
        all.sort();
        assert_eq!(all, HealthStatus::ALL);
        assert!(HealthStatus::Degraded > HealthStatus::Missing);
        assert!(HealthStatus::Unknown > HealthStatus::Degraded);
    }

    #[test]
    fn status_names_round_trip_and_typos_are_refused() {
        for s in HealthStatus::ALL {
            assert_eq!(s.as_str().parse::<HealthStatus>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        }
        let err = "healthy".parse::<HealthStatus>().unwrap_err();
        assert!(err.to_string().contains("\"healthy\""), "{err}");
    }

    #[test]
    fn empty_message_is_none() {
        assert_eq!(Health::new(HealthStatus::Healthy, "").message, None);
        let h = Health::new(HealthStatus::Degraded, "boom");
        assert_eq!(
            serde_json::to_value(&h).unwrap(),
            json!({"status": "Degraded", "message": "boom"})
        );
    }

    #[test]
    fn group_kind_of_core_and_grouped_objects() {
        assert_eq!(
            group_kind(&json!({"apiVersion": "v1", "kind": "Pod"})),
            ("", "Pod")
        );
        assert_eq!(
            group_kind(&json!({"apiVersion": "apps/v1", "kind": "Deployment"})),
            ("apps", "Deployment")
        );
        assert_eq!(group_kind(&json!({})), ("", ""));
    }
}
