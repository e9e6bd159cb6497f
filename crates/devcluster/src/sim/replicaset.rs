//! The ReplicaSet controller: keeps `spec.replicas` pods of the template, reports how many
//! are ready and available.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::events::Ev;
use super::util::{
    condition, controller_ref, int_at, label_selector_matches, meta_str, seconds_since,
};
use super::write::KCM;
use super::{Key, Kind, Obj, Sim, SimError};

/// Whether a pod counts as active (not finished, not going away).
pub(crate) fn pod_active(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && !matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        )
}

/// Whether a pod's Ready condition is True.
pub(crate) fn pod_ready(pod: &Value) -> bool {
    condition(pod.pointer("/status/conditions"), "Ready")
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("True")
}

/// Whether a pod has been ready for `min_ready` seconds; when it is ready but not yet for
/// long enough, the time left.
pub(crate) fn pod_available(pod: &Value, min_ready: i64) -> (bool, Option<Duration>) {
    if !pod_ready(pod) {
        return (false, None);
    }
    if min_ready <= 0 {
        return (true, None);
    }
    let since = condition(pod.pointer("/status/conditions"), "Ready")
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .and_then(seconds_since)
        .unwrap_or(0);
    if since >= min_ready {
        (true, None)
    } else {
        (false, Some(Duration::from_secs((min_ready - since) as u64)))
    }
}

/// A pod object from a template, owned by `owner`.
pub(crate) fn pod_from_template(
    template: &Value,
    owner: &Obj,
    owner_kind: Kind,
    name: Option<&str>,
    extra_labels: &[(&str, String)],
) -> Value {
    let mut meta = Map::new();
    match name {
        Some(n) => {
            meta.insert("name".into(), json!(n));
        }
        None => {
            meta.insert("generateName".into(), json!(format!("{}-", owner.name())));
        }
    }
    meta.insert("namespace".into(), json!(owner.ns()));
    let mut labels = template
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (k, v) in extra_labels {
        labels.insert((*k).to_string(), json!(v));
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if let Some(a) = template.pointer("/metadata/annotations") {
        meta.insert("annotations".into(), a.clone());
    }
    meta.insert(
        "ownerReferences".into(),
        json!([controller_ref(
            owner_kind.api_version(),
            owner_kind.kind_name(),
            owner.name(),
            owner.uid()
        )]),
    );
    let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    if let Some(s) = spec.as_object_mut() {
        s.entry("restartPolicy").or_insert_with(|| json!("Always"));
        s.entry("dnsPolicy")
            .or_insert_with(|| json!("ClusterFirst"));
        s.entry("schedulerName")
            .or_insert_with(|| json!("default-scheduler"));
        s.entry("terminationGracePeriodSeconds")
            .or_insert_with(|| json!(30));
    }
    json!({"metadata": meta, "spec": spec})
}

/// Deletion preference of a pod when scaling down: unscheduled, pending, not ready, then
/// ready; newer before older.
fn delete_rank(pod: &Value) -> (u8, std::cmp::Reverse<String>) {
    let scheduled = pod.pointer("/spec/nodeName").is_some();
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    let rank = if !scheduled {
        0
    } else if phase != Some("Running") {
        1
    } else if !pod_ready(pod) {
        2
    } else {
        3
    };
    (
        rank,
        std::cmp::Reverse(meta_str(pod, "creationTimestamp").to_string()),
    )
}

impl Sim {
    pub(crate) fn reconcile_replicaset(&mut self, key: &Key) -> Result<(), SimError> {
        let Some(rs) = self.get(Kind::ReplicaSet, &key.ns, &key.name)? else {
            return Ok(());
        };
        if rs.deleting() {
            return Ok(());
        }
        let want = int_at(&rs.v, "/spec/replicas").unwrap_or(1).max(0) as usize;
        let min_ready = int_at(&rs.v, "/spec/minReadySeconds").unwrap_or(0);
        let pods = self.children_of(rs.uid(), rs.ns(), Kind::Pod);
        let active: Vec<&Obj> = pods.iter().filter(|p| pod_active(&p.v)).collect();
        let template =
            rs.v.pointer("/spec/template")
                .cloned()
                .unwrap_or_else(|| json!({}));
        if active.len() < want {
            for _ in active.len()..want {
                let pod = pod_from_template(&template, &rs, Kind::ReplicaSet, None, &[]);
                let created = self.create(Kind::Pod, rs.ns(), pod, KCM)?;
                self.rs_event(
                    &rs,
                    "SuccessfulCreate",
                    format!("Created pod: {}", meta_str(&created, "name")),
                );
            }
        } else if active.len() > want {
            let mut victims: Vec<&Obj> = active.clone();
            victims.sort_by_key(|p| delete_rank(&p.v));
            for p in victims.into_iter().take(active.len() - want) {
                self.delete(Kind::Pod, p.ns(), p.name(), KCM)?;
                self.rs_event(
                    &rs,
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", p.name()),
                );
            }
        }
        // Status from the pods as they were read, as the real controller does; the changes
        // just made come back through the change feed.
        let labels = template
            .pointer("/metadata/labels")
            .and_then(Value::as_object);
        let mut fully = 0;
        let mut ready = 0;
        let mut available = 0;
        let mut recheck: Option<Duration> = None;
        for p in &active {
            let pl = p.v.pointer("/metadata/labels").and_then(Value::as_object);
            if labels.is_none_or(|l| pl.is_some_and(|pl| super::util::selector_matches(l, pl))) {
                fully += 1;
            }
            if pod_ready(&p.v) {
                ready += 1;
            }
            let (avail, wait) = pod_available(&p.v, min_ready);
            if avail {
                available += 1;
            }
            if let Some(w) = wait {
                recheck = Some(recheck.map_or(w, |r| r.min(w)));
            }
        }
        let mut status = json!({"replicas": active.len(), "observedGeneration": rs.generation()});
        for (field, n) in [
            ("fullyLabeledReplicas", fully),
            ("readyReplicas", ready),
            ("availableReplicas", available),
        ] {
            if n > 0 {
                status[field] = json!(n);
            }
        }
        if let Some(c) = rs.v.pointer("/status/conditions") {
            status["conditions"] = c.clone();
        }
        self.write_status(Kind::ReplicaSet, &rs, status, KCM)?;
        if let Some(w) = recheck {
            self.after(w, key.clone());
        }
        let _ = label_selector_matches;
        Ok(())
    }

    fn rs_event(&mut self, rs: &Obj, reason: &'static str, message: String) {
        self.event(
            Kind::ReplicaSet,
            &rs.v,
            Ev {
                warning: false,
                reason,
                message,
                component: "replicaset-controller",
                host: None,
                field_path: None,
            },
        );
    }
}
