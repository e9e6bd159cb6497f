//! The DaemonSet controller: one pod per simulated node, rolling updates one node at a time
//! (maxUnavailable) or OnDelete, and the scheduling counts of its status.

use serde_json::{Value, json};

use super::events::Ev;
use super::replicaset::{pod_active, pod_available, pod_from_template, pod_ready};
use super::util::{int_at, int_or_percent, template_hash};
use super::write::KCM;
use super::{Key, Kind, Obj, Sim, SimError};

impl Sim {
    pub(crate) fn reconcile_daemonset(&mut self, key: &Key) -> Result<(), SimError> {
        let Some(ds) = self.get(Kind::DaemonSet, &key.ns, &key.name)? else {
            return Ok(());
        };
        if ds.deleting() {
            return Ok(());
        }
        let template =
            ds.v.pointer("/spec/template")
                .cloned()
                .unwrap_or_else(|| json!({}));
        let hash = template_hash(
            &template,
            int_at(&ds.v, "/status/collisionCount").unwrap_or(0),
        );
        let nodes: Vec<String> = (0..self.cfg.nodes).map(|i| self.node_name(i)).collect();
        let desired = nodes.len() as i64;
        let min_ready = int_at(&ds.v, "/spec/minReadySeconds").unwrap_or(0);
        let on_delete =
            ds.v.pointer("/spec/updateStrategy/type")
                .and_then(Value::as_str)
                == Some("OnDelete");
        let max_unavailable = int_or_percent(
            ds.v.pointer("/spec/updateStrategy/rollingUpdate/maxUnavailable"),
            desired,
            "1",
            false,
        )
        .max(1);
        let pods = self.children_of(ds.uid(), ds.ns(), Kind::Pod);
        let active: Vec<&Obj> = pods.iter().filter(|p| pod_active(&p.v)).collect();
        let node_of = |p: &Obj| {
            p.v.pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let hash_of = |p: &Obj| {
            p.v.pointer("/metadata/labels/controller-revision-hash")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        for node in &nodes {
            if active.iter().any(|p| &node_of(p) == node) {
                continue;
            }
            let labels = [
                ("controller-revision-hash", hash.clone()),
                ("pod-template-generation", ds.generation().to_string()),
            ];
            let mut pod = pod_from_template(&template, &ds, Kind::DaemonSet, None, &labels);
            pod["spec"]["nodeName"] = json!(node);
            let created = self.create(Kind::Pod, ds.ns(), pod, KCM)?;
            let name = super::util::meta_str(&created, "name").to_string();
            self.ds_event(&ds, "SuccessfulCreate", format!("Created pod: {name}"));
        }
        // Pods on nodes that do not exist (a restart with fewer nodes) go.
        for p in &active {
            if !nodes.contains(&node_of(p)) {
                self.delete(Kind::Pod, ds.ns(), p.name(), KCM)?;
                self.ds_event(
                    &ds,
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", p.name()),
                );
            }
        }
        let unavailable_now = active
            .iter()
            .filter(|p| !pod_available(&p.v, min_ready).0)
            .count() as i64;
        if !on_delete {
            let budget = (max_unavailable - unavailable_now).max(0) as usize;
            let stale: Vec<String> = active
                .iter()
                .filter(|p| hash_of(p) != hash && nodes.contains(&node_of(p)))
                .map(|p| p.name().to_string())
                .take(budget)
                .collect();
            for name in stale {
                self.delete(Kind::Pod, ds.ns(), &name, KCM)?;
                self.ds_event(&ds, "SuccessfulDelete", format!("Deleted pod: {name}"));
            }
        }
        let on_nodes: Vec<&&Obj> = active
            .iter()
            .filter(|p| nodes.contains(&node_of(p)))
            .collect();
        let scheduled = nodes
            .iter()
            .filter(|n| on_nodes.iter().any(|p| &node_of(p) == *n))
            .count() as i64;
        let ready = on_nodes.iter().filter(|p| pod_ready(&p.v)).count() as i64;
        let available = on_nodes
            .iter()
            .filter(|p| pod_available(&p.v, min_ready).0)
            .count() as i64;
        let updated = on_nodes.iter().filter(|p| hash_of(p) == hash).count() as i64;
        let mut status = json!({
            "currentNumberScheduled": scheduled,
            "numberMisscheduled": 0,
            "desiredNumberScheduled": desired,
            "numberReady": ready,
            "observedGeneration": ds.generation(),
        });
        for (f, n) in [
            ("updatedNumberScheduled", updated),
            ("numberAvailable", available),
            ("numberUnavailable", (desired - available).max(0)),
        ] {
            if n > 0 {
                status[f] = json!(n);
            }
        }
        self.write_status(Kind::DaemonSet, &ds, status, KCM)?;
        Ok(())
    }

    fn ds_event(&mut self, ds: &Obj, reason: &'static str, message: String) {
        self.event(
            Kind::DaemonSet,
            &ds.v,
            Ev {
                warning: false,
                reason,
                message,
                component: "daemonset-controller",
                host: None,
                field_path: None,
            },
        );
    }
}
