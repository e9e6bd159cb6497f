//! The StatefulSet controller: pods `<name>-0 … <name>-(n-1)` created in order (each after the
//! previous is Running and Ready, unless podManagementPolicy is Parallel), removed in reverse,
//! rolling updates in reverse ordinal order down to the partition (or OnDelete), claims from
//! volumeClaimTemplates, and currentRevision/updateRevision as `<name>-<hash>`.

use serde_json::{Value, json};

use super::events::Ev;
use super::replicaset::{pod_active, pod_available, pod_from_template, pod_ready};
use super::util::{int_at, template_hash};
use super::write::KCM;
use super::{Key, Kind, Obj, Sim, SimError};

const REVISION_LABEL: &str = "controller-revision-hash";

impl Sim {
    pub(crate) fn reconcile_statefulset(&mut self, key: &Key) -> Result<(), SimError> {
        let Some(sts) = self.get(Kind::StatefulSet, &key.ns, &key.name)? else {
            return Ok(());
        };
        if sts.deleting() {
            return Ok(());
        }
        let name = sts.name().to_string();
        let replicas = int_at(&sts.v, "/spec/replicas").unwrap_or(1).max(0);
        let template = sts
            .v
            .pointer("/spec/template")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let collisions = int_at(&sts.v, "/status/collisionCount").unwrap_or(0);
        let update_rev = format!("{name}-{}", template_hash(&template, collisions));
        let current_rev = sts
            .v
            .pointer("/status/currentRevision")
            .and_then(Value::as_str)
            .unwrap_or(&update_rev)
            .to_string();
        let parallel = sts
            .v
            .pointer("/spec/podManagementPolicy")
            .and_then(Value::as_str)
            == Some("Parallel");
        let on_delete = sts
            .v
            .pointer("/spec/updateStrategy/type")
            .and_then(Value::as_str)
            == Some("OnDelete");
        let partition = int_at(&sts.v, "/spec/updateStrategy/rollingUpdate/partition").unwrap_or(0);
        let min_ready = int_at(&sts.v, "/spec/minReadySeconds").unwrap_or(0);

        let pods = self.children_of(sts.uid(), sts.ns(), Kind::Pod);
        let prefix = format!("{name}-");
        let mut by_ordinal: Vec<(i64, &Obj)> = pods
            .iter()
            .filter(|p| pod_active(&p.v))
            .filter_map(|p| {
                p.name()
                    .strip_prefix(&prefix)
                    .and_then(|s| s.parse::<i64>().ok())
                    .map(|i| (i, p))
            })
            .collect();
        by_ordinal.sort_by_key(|(i, _)| *i);
        let rev_of = |p: &Obj| {
            p.v.pointer("/metadata/labels")
                .and_then(|l| l.get(REVISION_LABEL))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let healthy = |p: &Obj| {
            p.v.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
                && pod_ready(&p.v)
        };

        // One step per pass in OrderedReady mode: create the first missing ordinal once all
        // before it are healthy, else remove the highest surplus one, else update one pod.
        let mut acted = false;
        for i in 0..replicas {
            if by_ordinal.iter().any(|(o, _)| *o == i) {
                continue;
            }
            if !parallel && by_ordinal.iter().any(|(o, p)| *o < i && !healthy(p)) {
                break;
            }
            self.create_sts_pod(&sts, &template, i, &update_rev)?;
            acted = true;
            if !parallel {
                break;
            }
        }
        let all_healthy = by_ordinal.iter().all(|(_, p)| healthy(p));
        if !acted {
            let surplus: Vec<&(i64, &Obj)> =
                by_ordinal.iter().filter(|(o, _)| *o >= replicas).collect();
            if let Some((_, p)) = surplus.last()
                && (parallel || all_healthy || surplus.len() == by_ordinal.len())
            {
                let victims: Vec<String> = if parallel {
                    surplus.iter().map(|(_, p)| p.name().to_string()).collect()
                } else {
                    vec![p.name().to_string()]
                };
                for v in victims {
                    self.delete(Kind::Pod, sts.ns(), &v, KCM)?;
                    self.sts_event(
                        &sts,
                        "SuccessfulDelete",
                        format!("delete Pod {v} in StatefulSet {name} successful"),
                    );
                }
                acted = true;
            }
        }
        if !acted
            && !on_delete
            && all_healthy
            && by_ordinal.len() as i64 >= replicas
            && let Some((_, p)) = by_ordinal
                .iter()
                .rev()
                .find(|(o, p)| *o >= partition && *o < replicas && rev_of(p) != update_rev)
        {
            let v = p.name().to_string();
            self.delete(Kind::Pod, sts.ns(), &v, KCM)?;
            self.sts_event(
                &sts,
                "SuccessfulDelete",
                format!("delete Pod {v} in StatefulSet {name} successful"),
            );
        }

        let live: Vec<&Obj> = by_ordinal.iter().map(|(_, p)| *p).collect();
        let ready = live.iter().filter(|p| pod_ready(&p.v)).count();
        let available = live
            .iter()
            .filter(|p| pod_available(&p.v, min_ready).0)
            .count();
        let updated = live.iter().filter(|p| rev_of(p) == update_rev).count();
        let in_range = by_ordinal.iter().filter(|(o, _)| *o < replicas).count() as i64;
        let rolled = updated as i64 == replicas && in_range == replicas;
        let current_rev = if rolled {
            update_rev.clone()
        } else {
            current_rev
        };
        let current = live.iter().filter(|p| rev_of(p) == current_rev).count();
        let mut status = json!({
            "observedGeneration": sts.generation(),
            "replicas": live.len(),
            "availableReplicas": available,
            "currentRevision": current_rev,
            "updateRevision": update_rev,
            "collisionCount": collisions,
        });
        for (f, n) in [
            ("readyReplicas", ready),
            ("currentReplicas", current),
            ("updatedReplicas", updated),
        ] {
            if n > 0 {
                status[f] = json!(n);
            }
        }
        self.write_status(Kind::StatefulSet, &sts, status, KCM)?;
        Ok(())
    }

    fn create_sts_pod(
        &mut self,
        sts: &Obj,
        template: &Value,
        ordinal: i64,
        rev: &str,
    ) -> Result<(), SimError> {
        let name = sts.name().to_string();
        let pod_name = format!("{name}-{ordinal}");
        let labels = [
            (REVISION_LABEL, rev.to_string()),
            ("statefulset.kubernetes.io/pod-name", pod_name.clone()),
            ("apps.kubernetes.io/pod-index", ordinal.to_string()),
        ];
        let mut pod = pod_from_template(template, sts, Kind::StatefulSet, Some(&pod_name), &labels);
        pod["spec"]["hostname"] = json!(pod_name);
        if let Some(svc) = sts.v.pointer("/spec/serviceName").and_then(Value::as_str)
            && !svc.is_empty()
        {
            pod["spec"]["subdomain"] = json!(svc);
        }
        let claims = sts
            .v
            .pointer("/spec/volumeClaimTemplates")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for claim in claims {
            let tmpl = claim
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if tmpl.is_empty() {
                continue;
            }
            let claim_name = format!("{tmpl}-{pod_name}");
            if self.get(Kind::Pvc, sts.ns(), &claim_name)?.is_none() {
                let mut pvc = json!({
                    "metadata": {"name": claim_name, "namespace": sts.ns()},
                    "spec": claim.get("spec").cloned().unwrap_or_else(|| json!({})),
                });
                if let Some(l) = template.pointer("/metadata/labels") {
                    pvc["metadata"]["labels"] = l.clone();
                }
                match self.create(Kind::Pvc, sts.ns(), pvc, KCM) {
                    Ok(_) | Err(SimError::Api { code: 409, .. }) => {}
                    Err(e) => return Err(e),
                }
                self.sts_event(
                    sts,
                    "SuccessfulCreate",
                    format!(
                        "create Claim {claim_name} Pod {pod_name} in StatefulSet {name} success"
                    ),
                );
            }
            let volumes = pod["spec"]
                .as_object_mut()
                .map(|s| s.entry("volumes").or_insert_with(|| json!([])));
            if let Some(Value::Array(vs)) = volumes
                && !vs
                    .iter()
                    .any(|v| v.get("name").and_then(Value::as_str) == Some(tmpl))
            {
                vs.push(json!({"name": tmpl, "persistentVolumeClaim": {"claimName": claim_name}}));
            }
        }
        match self.create(Kind::Pod, sts.ns(), pod, KCM) {
            Ok(_) => {
                self.sts_event(
                    sts,
                    "SuccessfulCreate",
                    format!("create Pod {pod_name} in StatefulSet {name} successful"),
                );
                Ok(())
            }
            // Not yet indexed, or still being removed: the next pass sees it.
            Err(SimError::Api { code: 409, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn sts_event(&mut self, sts: &Obj, reason: &'static str, message: String) {
        self.event(
            Kind::StatefulSet,
            &sts.v,
            Ev {
                warning: false,
                reason,
                message,
                component: "statefulset-controller",
                host: None,
                field_path: None,
            },
        );
    }
}
