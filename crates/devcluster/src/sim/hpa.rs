//! HorizontalPodAutoscalers: with no metrics pipeline, the simulated autoscaler keeps its
//! target within minReplicas..maxReplicas and reports currentReplicas/desiredReplicas and the
//! AbleToScale, ScalingActive and ScalingLimited conditions.

use serde_json::{Value, json};

use super::events::Ev;
use super::util::{condition, int_at, keep_transition};
use super::write::KCM;
use super::{Key, Kind, Sim, SimError};

/// The (kind, name) an HPA scales, when it is a simulated kind.
pub(crate) fn target_of(v: &Value) -> Option<(Kind, String)> {
    let r = v.pointer("/spec/scaleTargetRef")?;
    let kind = Kind::from_owner(
        r.get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("apps/v1"),
        r.get("kind").and_then(Value::as_str)?,
    )?;
    if !matches!(
        kind,
        Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet
    ) {
        return None;
    }
    Some((kind, r.get("name").and_then(Value::as_str)?.to_string()))
}

impl Sim {
    pub(crate) fn reconcile_hpa(&mut self, key: &Key) -> Result<(), SimError> {
        let Some(hpa) = self.get(Kind::Hpa, &key.ns, &key.name)? else {
            return Ok(());
        };
        if hpa.deleting() {
            return Ok(());
        }
        let now = crate::api::now();
        let old = hpa.v.get("status").cloned().unwrap_or_else(|| json!({}));
        let old_conds = old.get("conditions");
        let cond = |ty: &str, st: &str, reason: &str, message: &str| {
            keep_transition(
                json!({"type": ty, "status": st, "lastTransitionTime": now, "reason": reason, "message": message}),
                condition(old_conds, ty),
            )
        };
        let target = match target_of(&hpa.v) {
            Some((kind, name)) => self.get(kind, hpa.ns(), &name)?.map(|t| (kind, t)),
            None => None,
        };
        let Some((kind, target)) = target else {
            let status = json!({
                "currentReplicas": old.get("currentReplicas").cloned().unwrap_or(json!(0)),
                "desiredReplicas": 0,
                "conditions": [cond("AbleToScale", "False", "FailedGetScale",
                    "the HPA controller was unable to get the target's current scale: not found")],
            });
            self.write_status(Kind::Hpa, &hpa, status, KCM)?;
            return Ok(());
        };
        let current = int_at(&target.v, "/spec/replicas").unwrap_or(1);
        let min = int_at(&hpa.v, "/spec/minReplicas").unwrap_or(1);
        let max = int_at(&hpa.v, "/spec/maxReplicas").unwrap_or(min).max(min);
        let desired = current.clamp(min, max);
        let mut status = json!({"currentReplicas": current, "desiredReplicas": desired});
        if let Some(t) = old.get("lastScaleTime") {
            status["lastScaleTime"] = t.clone();
        }
        // Scaling is disabled for a target at 0 replicas, as in Kubernetes.
        if current != 0 && desired != current {
            self.patch(kind, &target, json!({"spec": {"replicas": desired}}), KCM)?;
            status["lastScaleTime"] = json!(now);
            let why = if desired > current {
                "Current number of replicas below Spec.MinReplicas"
            } else {
                "Current number of replicas above Spec.MaxReplicas"
            };
            self.event(
                Kind::Hpa,
                &hpa.v,
                Ev {
                    warning: false,
                    reason: "SuccessfulRescale",
                    message: format!("New size: {desired}; reason: {why}"),
                    component: "horizontal-pod-autoscaler",
                    host: None,
                    field_path: None,
                },
            );
        }
        let limited = if current < min {
            cond(
                "ScalingLimited",
                "True",
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            )
        } else if current > max {
            cond(
                "ScalingLimited",
                "True",
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            )
        } else {
            cond(
                "ScalingLimited",
                "False",
                "DesiredWithinRange",
                "the desired count is within the acceptable range",
            )
        };
        status["conditions"] = json!([
            cond(
                "AbleToScale",
                "True",
                "ReadyForNewScale",
                "recommended size matches current size"
            ),
            if current == 0 {
                cond(
                    "ScalingActive",
                    "False",
                    "ScalingDisabled",
                    "scaling is disabled since the replica count of the target is zero",
                )
            } else {
                cond(
                    "ScalingActive",
                    "True",
                    "ValidMetricFound",
                    "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)",
                )
            },
            limited,
        ]);
        self.write_status(Kind::Hpa, &hpa, status, KCM)?;
        Ok(())
    }
}
