//! The Deployment controller: one ReplicaSet per pod template (`<name>-<pod-template-hash>`),
//! rolling updates within maxSurge/maxUnavailable or Recreate, revision history, and the
//! status and conditions the real controller writes.

use std::time::Duration;

use serde_json::{Value, json};

use super::events::Ev;
use super::util::{
    condition, controller_ref, int_at, int_or_percent, keep_transition, meta_str, seconds_since,
    template_hash, without_hash_label,
};
use super::write::KCM;
use super::{Key, Kind, Obj, Sim, SimError};

const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// What the controller needs of one ReplicaSet.
#[derive(Clone, Debug)]
struct RsView {
    name: String,
    /// spec.replicas
    spec: i64,
    /// status.replicas
    actual: i64,
    ready: i64,
    available: i64,
    revision: i64,
}

impl RsView {
    fn of(rs: &Obj) -> RsView {
        RsView {
            name: rs.name().to_string(),
            spec: int_at(&rs.v, "/spec/replicas").unwrap_or(1),
            actual: int_at(&rs.v, "/status/replicas").unwrap_or(0),
            ready: int_at(&rs.v, "/status/readyReplicas").unwrap_or(0),
            available: int_at(&rs.v, "/status/availableReplicas").unwrap_or(0),
            revision: revision_of(&rs.v),
        }
    }
}

fn revision_of(v: &Value) -> i64 {
    v.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The new ReplicaSet's replica count for one step of a rolling update.
fn new_rs_target(replicas: i64, surge: i64, new_spec: i64, all_spec: i64) -> i64 {
    if new_spec >= replicas {
        return replicas;
    }
    let max_total = replicas + surge;
    if all_spec >= max_total {
        return new_spec;
    }
    new_spec + (max_total - all_spec).min(replicas - new_spec)
}

/// The old ReplicaSets' replica counts (oldest first) for one step of a rolling update:
/// unhealthy old pods go first, then healthy ones as far as maxUnavailable allows.
fn old_rs_targets(
    replicas: i64,
    unavailable: i64,
    new_spec: i64,
    new_available: i64,
    old: &[(i64, i64)],
) -> Vec<i64> {
    let mut t: Vec<i64> = old.iter().map(|(s, _)| *s).collect();
    let old_total: i64 = t.iter().sum();
    if old_total == 0 {
        return t;
    }
    let min_available = replicas - unavailable;
    let new_unavailable = new_spec - new_available;
    let max_scaled_down = new_spec + old_total - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return t;
    }
    let mut cleaned = 0;
    for (i, (_, avail)) in old.iter().enumerate() {
        if cleaned >= max_scaled_down {
            break;
        }
        if t[i] == 0 || t[i] <= *avail {
            continue;
        }
        let s = (t[i] - avail).min(max_scaled_down - cleaned);
        t[i] -= s;
        cleaned += s;
    }
    let all_available = new_available + old.iter().map(|(_, a)| a).sum::<i64>();
    let total = all_available - min_available;
    let mut done = 0;
    for x in t.iter_mut() {
        if done >= total {
            break;
        }
        if *x == 0 {
            continue;
        }
        let s = (*x).min(total - done);
        *x -= s;
        done += s;
    }
    t
}

impl Sim {
    pub(crate) fn reconcile_deployment(&mut self, key: &Key) -> Result<(), SimError> {
        let Some(d) = self.get(Kind::Deployment, &key.ns, &key.name)? else {
            return Ok(());
        };
        if d.deleting() {
            return Ok(());
        }
        let replicas = int_at(&d.v, "/spec/replicas").unwrap_or(1).max(0);
        let template =
            d.v.pointer("/spec/template")
                .cloned()
                .unwrap_or_else(|| json!({}));
        let collisions = int_at(&d.v, "/status/collisionCount").unwrap_or(0);
        let hash = template_hash(&template, collisions);
        let paused = d.v.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
        let recreate =
            d.v.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate");
        let (surge, unavailable) = if recreate {
            (0, 0)
        } else {
            let s = int_or_percent(
                d.v.pointer("/spec/strategy/rollingUpdate/maxSurge"),
                replicas,
                "25%",
                true,
            );
            let u = int_or_percent(
                d.v.pointer("/spec/strategy/rollingUpdate/maxUnavailable"),
                replicas,
                "25%",
                false,
            );
            if s == 0 && u == 0 { (0, 1) } else { (s, u) }
        };

        let mut rss: Vec<Obj> = self
            .children_of(d.uid(), d.ns(), Kind::ReplicaSet)
            .into_iter()
            .filter(|r| !r.deleting())
            .collect();
        rss.sort_by(|a, b| {
            (meta_str(&a.v, "creationTimestamp"), a.name())
                .cmp(&(meta_str(&b.v, "creationTimestamp"), b.name()))
        });
        let wanted = without_hash_label(&template);
        let new_pos = rss.iter().position(|r| {
            r.v.pointer("/spec/template")
                .is_some_and(|t| without_hash_label(t) == wanted)
        });
        let max_old_revision = rss
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != new_pos)
            .map(|(_, r)| revision_of(&r.v))
            .max()
            .unwrap_or(0);
        let mut progress_reason: Option<(&'static str, String)> = None;

        // The new ReplicaSet: create it, or bring its revision up to date (a rollback makes an
        // old template new again).
        let mut new_name = new_pos.map(|i| rss[i].name().to_string());
        if let Some(i) = new_pos {
            if revision_of(&rss[i].v) <= max_old_revision && !paused {
                let rev = (max_old_revision + 1).to_string();
                let patched = self.patch(
                    Kind::ReplicaSet,
                    &rss[i],
                    json!({"metadata": {"annotations": {REVISION: rev}}}),
                    KCM,
                )?;
                rss[i] = Obj { v: patched };
            }
        } else if !paused {
            let old_active = rss.iter().any(|r| {
                int_at(&r.v, "/spec/replicas").unwrap_or(1) > 0
                    || int_at(&r.v, "/status/replicas").unwrap_or(0) > 0
            });
            if !(recreate && old_active) {
                let all_spec: i64 = rss.iter().map(|r| RsView::of(r).spec).sum();
                let initial = if recreate {
                    replicas
                } else {
                    new_rs_target(replicas, surge, 0, all_spec)
                };
                match self.create_new_rs(
                    &d,
                    &template,
                    &hash,
                    initial,
                    max_old_revision + 1,
                    replicas + surge,
                )? {
                    Some(rs) => {
                        let name = rs.name().to_string();
                        self.scaling_event(&d, true, &name, initial, 0);
                        progress_reason = Some((
                            "NewReplicaSetCreated",
                            format!("Created new replica set \"{name}\""),
                        ));
                        new_name = Some(name);
                        rss.push(rs);
                    }
                    None => return Ok(()),
                }
            }
        }
        let new_idx = new_name
            .as_ref()
            .and_then(|n| rss.iter().position(|r| r.name() == n));
        let views: Vec<RsView> = rss.iter().map(RsView::of).collect();
        let old_idx: Vec<usize> = (0..rss.len()).filter(|i| Some(*i) != new_idx).collect();

        // Replica counts for this step.
        let mut targets: Vec<i64> = views.iter().map(|v| v.spec).collect();
        if paused {
            // Only plain scaling while paused: the sole active ReplicaSet follows spec.replicas.
            let active: Vec<usize> = (0..views.len()).filter(|i| views[*i].spec > 0).collect();
            match (active.as_slice(), new_idx) {
                ([only], _) => targets[*only] = replicas,
                ([], Some(n)) => targets[n] = replicas,
                _ => {}
            }
        } else if recreate {
            if old_idx.iter().any(|i| views[*i].spec > 0) {
                for i in &old_idx {
                    targets[*i] = 0;
                }
            } else if let Some(n) = new_idx
                && old_idx.iter().all(|i| views[*i].actual == 0)
            {
                targets[n] = replicas;
            }
        } else if let Some(n) = new_idx {
            let all_spec: i64 = views.iter().map(|v| v.spec).sum();
            let t = new_rs_target(replicas, surge, views[n].spec, all_spec);
            if t != views[n].spec {
                targets[n] = t;
            } else {
                let old: Vec<(i64, i64)> = old_idx
                    .iter()
                    .map(|i| (views[*i].spec, views[*i].available))
                    .collect();
                let olds = old_rs_targets(
                    replicas,
                    unavailable,
                    views[n].spec,
                    views[n].available,
                    &old,
                );
                for (k, i) in old_idx.iter().enumerate() {
                    targets[*i] = olds[k];
                }
            }
        }
        for (i, rs) in rss.iter_mut().enumerate() {
            let desired_ann =
                rs.v.pointer("/metadata/annotations")
                    .and_then(|a| a.get(DESIRED))
                    .and_then(Value::as_str)
                    .map(String::from);
            if targets[i] == views[i].spec && desired_ann.as_deref() == Some(&replicas.to_string())
            {
                continue;
            }
            let patch = json!({
                "metadata": {"annotations": {
                    DESIRED: replicas.to_string(),
                    MAX_REPLICAS: (replicas + surge).to_string(),
                }},
                "spec": {"replicas": targets[i]},
            });
            let patched = self.patch(Kind::ReplicaSet, rs, patch, KCM)?;
            *rs = Obj { v: patched };
            if targets[i] != views[i].spec {
                let name = views[i].name.clone();
                self.scaling_event(
                    &d,
                    targets[i] > views[i].spec,
                    &name,
                    targets[i],
                    views[i].spec,
                );
            }
        }

        // Old ReplicaSets beyond the history limit go, oldest revision first.
        let limit = int_at(&d.v, "/spec/revisionHistoryLimit")
            .unwrap_or(10)
            .max(0) as usize;
        let mut idle: Vec<usize> = old_idx
            .iter()
            .copied()
            .filter(|i| targets[*i] == 0 && views[*i].actual == 0)
            .collect();
        if idle.len() > limit {
            idle.sort_by_key(|i| views[*i].revision);
            for i in &idle[..idle.len() - limit] {
                self.delete(Kind::ReplicaSet, d.ns(), &views[*i].name, KCM)?;
            }
        }

        // The deployment's own revision annotation follows its new ReplicaSet.
        let mut d = d;
        if let Some(n) = new_idx {
            let rev = revision_of(&rss[n].v).to_string();
            let have =
                d.v.pointer("/metadata/annotations")
                    .and_then(|a| a.get(REVISION))
                    .and_then(Value::as_str);
            if have != Some(rev.as_str()) {
                let patched = self.patch(
                    Kind::Deployment,
                    &d,
                    json!({"metadata": {"annotations": {REVISION: rev}}}),
                    KCM,
                )?;
                d = Obj { v: patched };
            }
        }
        let new_rs = new_idx.map(|n| (views[n].name.clone(), views[n].actual));
        self.deployment_status(
            key,
            &d,
            &views,
            new_rs,
            replicas,
            unavailable,
            paused,
            progress_reason,
        )
    }

    /// Creates the ReplicaSet of the current template. `None` when a ReplicaSet of that name
    /// exists with another template (a hash collision: the collision count is bumped and the
    /// next pass uses another name) or is not yet indexed.
    fn create_new_rs(
        &mut self,
        d: &Obj,
        template: &Value,
        hash: &str,
        replicas: i64,
        revision: i64,
        max_replicas: i64,
    ) -> Result<Option<Obj>, SimError> {
        let name = format!("{}-{hash}", d.name());
        let mut tmpl = template.clone();
        tmpl["metadata"]["labels"]["pod-template-hash"] = json!(hash);
        let mut selector =
            d.v.pointer("/spec/selector")
                .cloned()
                .unwrap_or_else(|| json!({}));
        selector["matchLabels"]["pod-template-hash"] = json!(hash);
        let labels = tmpl["metadata"]["labels"].clone();
        let mut spec = json!({"replicas": replicas, "selector": selector, "template": tmpl});
        if let Some(m) = d.v.pointer("/spec/minReadySeconds") {
            spec["minReadySeconds"] = m.clone();
        }
        let rs = json!({
            "metadata": {
                "name": name,
                "namespace": d.ns(),
                "labels": labels,
                "annotations": {
                    DESIRED: int_at(&d.v, "/spec/replicas").unwrap_or(1).to_string(),
                    MAX_REPLICAS: max_replicas.to_string(),
                    REVISION: revision.to_string(),
                },
                "ownerReferences": [controller_ref("apps/v1", "Deployment", d.name(), d.uid())],
            },
            "spec": spec,
        });
        match self.create(Kind::ReplicaSet, d.ns(), rs, KCM) {
            Ok(v) => Ok(Some(Obj { v })),
            Err(SimError::Api { code: 409, .. }) => {
                let Some(existing) = self.get(Kind::ReplicaSet, d.ns(), &name)? else {
                    return Ok(None);
                };
                let same = existing
                    .v
                    .pointer("/spec/template")
                    .is_some_and(|t| without_hash_label(t) == without_hash_label(template));
                if !same || !super::util::is_controlled_by(&existing.v, d.uid()) {
                    let mut status = d.v.get("status").cloned().unwrap_or_else(|| json!({}));
                    status["collisionCount"] =
                        json!(int_at(&d.v, "/status/collisionCount").unwrap_or(0) + 1);
                    self.write_status(Kind::Deployment, d, status, KCM)?;
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn scaling_event(&mut self, d: &Obj, up: bool, rs: &str, to: i64, from: i64) {
        let dir = if up { "up" } else { "down" };
        self.event(
            Kind::Deployment,
            &d.v,
            Ev {
                warning: false,
                reason: "ScalingReplicaSet",
                message: format!("Scaled {dir} replica set {rs} from {from} to {to}"),
                component: "deployment-controller",
                host: None,
                field_path: None,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn deployment_status(
        &mut self,
        key: &Key,
        d: &Obj,
        views: &[RsView],
        new_rs: Option<(String, i64)>,
        replicas: i64,
        unavailable: i64,
        paused: bool,
        created: Option<(&'static str, String)>,
    ) -> Result<(), SimError> {
        let now = crate::api::now();
        let old = d.v.get("status").cloned().unwrap_or_else(|| json!({}));
        let old_conds = old.get("conditions");
        let total_spec: i64 = views.iter().map(|v| v.spec).sum();
        let actual: i64 = views.iter().map(|v| v.actual).sum();
        let ready: i64 = views.iter().map(|v| v.ready).sum();
        let available: i64 = views.iter().map(|v| v.available).sum();
        let updated = new_rs.as_ref().map_or(0, |(_, n)| *n);
        let unavail = (total_spec - available).max(0);
        let mut status = json!({"observedGeneration": d.generation()});
        for (f, n) in [
            ("replicas", actual),
            ("updatedReplicas", updated),
            ("readyReplicas", ready),
            ("availableReplicas", available),
            ("unavailableReplicas", unavail),
        ] {
            if n > 0 {
                status[f] = json!(n);
            }
        }
        let cond = |ty: &str, st: &str, reason: &str, message: String, update: bool| -> Value {
            let prev = condition(old_conds, ty);
            let mut c = json!({"type": ty, "status": st, "lastUpdateTime": now,
                "lastTransitionTime": now, "reason": reason, "message": message});
            // lastUpdateTime moves only when the condition is updated (progress made or its
            // reason/message changed).
            if !update
                && let Some(p) = prev
                && p.get("reason") == c.get("reason")
                && p.get("message") == c.get("message")
                && let Some(t) = p.get("lastUpdateTime")
            {
                c["lastUpdateTime"] = t.clone();
            }
            keep_transition(c, prev)
        };
        let available_cond = if available >= replicas - unavailable {
            cond(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                false,
            )
        } else {
            cond(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                false,
            )
        };
        let prev = condition(old_conds, "Progressing");
        let prev_reason = prev
            .and_then(|p| p.get("reason"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let rs_name = new_rs.as_ref().map(|(n, _)| n.clone()).unwrap_or_default();
        let complete =
            new_rs.is_some() && updated == replicas && actual == replicas && available == replicas;
        let old_updated = int_at(&old, "/updatedReplicas").unwrap_or(0);
        let old_old = int_at(&old, "/replicas").unwrap_or(0) - old_updated;
        let progressing = updated > old_updated
            || (actual - updated) < old_old
            || ready > int_at(&old, "/readyReplicas").unwrap_or(0)
            || available > int_at(&old, "/availableReplicas").unwrap_or(0);
        let deadline = int_at(&d.v, "/spec/progressDeadlineSeconds").unwrap_or(600);
        let mut recheck = None;
        let progressing_cond = if paused {
            Some(cond(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
                false,
            ))
        } else if prev_reason == "DeploymentPaused"
            && created.is_none()
            && !complete
            && !progressing
        {
            Some(cond(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
                false,
            ))
        } else if let Some((reason, message)) = created {
            Some(cond("Progressing", "True", reason, message, true))
        } else if complete {
            Some(cond(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                false,
            ))
        } else if new_rs.is_none() || prev_reason == "ProgressDeadlineExceeded" {
            // No rollout to judge, or already timed out (it stays so until a new rollout).
            prev.cloned()
        } else if progressing || prev.is_none() {
            recheck = Some(deadline);
            if prev.is_none() {
                Some(cond(
                    "Progressing",
                    "True",
                    "FoundNewReplicaSet",
                    format!("Found new replica set \"{rs_name}\""),
                    true,
                ))
            } else {
                Some(cond(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{rs_name}\" is progressing."),
                    true,
                ))
            }
        } else {
            let since = prev
                .and_then(|p| p.get("lastUpdateTime"))
                .and_then(Value::as_str)
                .and_then(seconds_since)
                .unwrap_or(0);
            if since > deadline {
                Some(cond(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                    true,
                ))
            } else {
                recheck = Some(deadline - since);
                prev.cloned()
            }
        };
        let mut conds = vec![available_cond];
        if let Some(p) = progressing_cond {
            conds.push(p);
        }
        status["conditions"] = json!(conds);
        if let Some(c) = old.get("collisionCount") {
            status["collisionCount"] = c.clone();
        }
        self.write_status(Kind::Deployment, d, status, KCM)?;
        if let Some(secs) = recheck {
            // One second past the deadline: timestamps have a resolution of one second.
            self.after(Duration::from_secs(secs.max(0) as u64 + 1), key.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_replica_set_grows_within_max_surge() {
        // 3 replicas, surge 1: the old RS holds 3, so the new one may have 1.
        assert_eq!(new_rs_target(3, 1, 0, 3), 1);
        // Already at the maximum total: no growth.
        assert_eq!(new_rs_target(3, 1, 1, 4), 1);
        // Old RS scaled down to 1: the new one takes the room.
        assert_eq!(new_rs_target(3, 1, 1, 2), 3);
        // More than wanted after a scale-down of the deployment.
        assert_eq!(new_rs_target(2, 1, 3, 3), 2);
    }

    #[test]
    fn old_replica_sets_shrink_within_max_unavailable() {
        // 3 replicas, unavailable 0, new RS has 1 available: one old pod may go.
        assert_eq!(old_rs_targets(3, 0, 1, 1, &[(3, 3)]), vec![2]);
        // New pod not available yet: nothing may go.
        assert_eq!(old_rs_targets(3, 0, 1, 0, &[(3, 3)]), vec![3]);
        // Unhealthy old pods go first: the newer, broken old RS is emptied while the healthy
        // older one keeps its pods.
        assert_eq!(old_rs_targets(3, 0, 1, 1, &[(2, 2), (2, 0)]), vec![2, 0]);
        // Unavailable new pods hold everything back.
        assert_eq!(old_rs_targets(3, 0, 1, 0, &[(3, 1)]), vec![3]);
        // maxUnavailable 1: one old pod may go before any new one is available.
        assert_eq!(old_rs_targets(4, 1, 1, 0, &[(4, 4)]), vec![3]);
    }
}
