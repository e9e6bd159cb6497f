//! The Job controller: runs pods up to `parallelism` until `completions` succeeded, counts
//! failures against `backoffLimit`, honours `suspend`, and writes the status and conditions
//! (SuccessCriteriaMet/Complete, FailureTarget/Failed, Suspended) as Kubernetes does.

use serde_json::{Value, json};

use super::events::Ev;
use super::replicaset::{pod_active, pod_from_template, pod_ready};
use super::util::{condition, int_at, keep_transition};
use super::write::KCM;
use super::{Key, Kind, Obj, Sim, SimError};

fn has_true(status: &Value, ty: &str) -> bool {
    condition(status.get("conditions"), ty)
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("True")
}

impl Sim {
    pub(crate) fn reconcile_job(&mut self, key: &Key) -> Result<(), SimError> {
        let Some(job) = self.get(Kind::Job, &key.ns, &key.name)? else {
            return Ok(());
        };
        if job.deleting() {
            return Ok(());
        }
        let old = job.v.get("status").cloned().unwrap_or_else(|| json!({}));
        let finished = has_true(&old, "Complete") || has_true(&old, "Failed");
        let pods = self.children_of(job.uid(), job.ns(), Kind::Pod);
        let active: Vec<&Obj> = pods.iter().filter(|p| pod_active(&p.v)).collect();
        let phase = |p: &Obj| {
            p.v.pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
        let failed = pods.iter().filter(|p| phase(p) == "Failed").count() as i64;
        let completions = int_at(&job.v, "/spec/completions");
        let parallelism = int_at(&job.v, "/spec/parallelism").unwrap_or(1).max(0);
        let backoff_limit = int_at(&job.v, "/spec/backoffLimit").unwrap_or(6);
        let suspended = job.v.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
        let now = crate::api::now();

        let complete = match completions {
            Some(c) => succeeded >= c,
            // Without completions, the first success completes the job once nothing runs.
            None => succeeded > 0 && active.is_empty(),
        };
        let failed_out = !complete && failed > backoff_limit;
        let old_conds = old.get("conditions");
        let cond = |ty: &str, st: &str, reason: &str, message: &str| -> Value {
            keep_transition(
                json!({"type": ty, "status": st, "lastProbeTime": now, "lastTransitionTime": now,
                    "reason": reason, "message": message}),
                condition(old_conds, ty),
            )
        };
        let mut conditions: Vec<Value> = old_conds
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut set = |c: Value| {
            let ty = c.get("type").cloned();
            match conditions.iter_mut().find(|x| x.get("type") == ty.as_ref()) {
                Some(x) => {
                    if x.get("status") != c.get("status") || x.get("reason") != c.get("reason") {
                        *x = c;
                    }
                }
                None => conditions.push(c),
            }
        };

        let mut created = Vec::new();
        let mut deleted = Vec::new();
        if finished {
            // Terminal: nothing more runs.
        } else if complete {
            set(cond(
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
            set(cond(
                "Complete",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
        } else if failed_out {
            set(cond(
                "FailureTarget",
                "True",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ));
            set(cond(
                "Failed",
                "True",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ));
            for p in &active {
                deleted.push(p.name().to_string());
            }
        } else if suspended {
            set(cond("Suspended", "True", "JobSuspended", "Job suspended"));
            for p in &active {
                deleted.push(p.name().to_string());
            }
        } else {
            if condition(old_conds, "Suspended").is_some() {
                set(cond("Suspended", "False", "JobResumed", "Job resumed"));
            }
            let remaining = completions.map_or(1, |c| (c - succeeded).max(0));
            let want = parallelism.min(remaining) as usize;
            if active.len() < want {
                let template = job
                    .v
                    .pointer("/spec/template")
                    .cloned()
                    .unwrap_or_else(|| json!({}));
                let uid = job.uid().to_string();
                let labels = [
                    ("batch.kubernetes.io/controller-uid", uid.clone()),
                    ("batch.kubernetes.io/job-name", job.name().to_string()),
                    ("controller-uid", uid),
                    ("job-name", job.name().to_string()),
                ];
                for _ in active.len()..want {
                    let pod = pod_from_template(&template, &job, Kind::Job, None, &labels);
                    let p = self.create(Kind::Pod, job.ns(), pod, KCM)?;
                    created.push(super::util::meta_str(&p, "name").to_string());
                }
            }
        }
        for name in &deleted {
            self.delete(Kind::Pod, job.ns(), name, KCM)?;
        }
        let running = if finished || complete || failed_out || suspended {
            0
        } else {
            active.len() as i64 + created.len() as i64
        };
        let ready = active.iter().filter(|p| pod_ready(&p.v)).count() as i64;
        let mut status = json!({});
        if !conditions.is_empty() {
            status["conditions"] = json!(conditions);
        }
        let start = old.get("startTime").cloned();
        match start {
            Some(s) => status["startTime"] = s,
            None if !suspended => status["startTime"] = json!(now),
            None => {}
        }
        if complete || finished {
            if let Some(t) = old.get("completionTime") {
                status["completionTime"] = t.clone();
            } else if complete {
                status["completionTime"] = json!(now);
            }
        }
        if running > 0 {
            status["active"] = json!(running);
        }
        if succeeded > 0 {
            status["succeeded"] = json!(succeeded);
        }
        if failed > 0 {
            status["failed"] = json!(failed);
        }
        status["ready"] = json!(if running > 0 { ready } else { 0 });
        status["terminating"] = json!(0);
        status["uncountedTerminatedPods"] = json!({});
        let wrote = self.write_status(Kind::Job, &job, status, KCM)?;
        for name in created {
            self.job_event(
                &job,
                false,
                "SuccessfulCreate",
                format!("Created pod: {name}"),
            );
        }
        for name in deleted {
            self.job_event(
                &job,
                false,
                "SuccessfulDelete",
                format!("Deleted pod: {name}"),
            );
        }
        if wrote && !finished {
            if complete {
                self.job_event(&job, false, "Completed", "Job completed".into());
            } else if failed_out {
                self.job_event(
                    &job,
                    true,
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit".into(),
                );
            } else if suspended && !has_true(&old, "Suspended") {
                self.job_event(&job, false, "Suspended", "Job suspended".into());
            }
        }
        Ok(())
    }

    fn job_event(&mut self, job: &Obj, warning: bool, reason: &'static str, message: String) {
        self.event(
            Kind::Job,
            &job.v,
            Ev {
                warning,
                reason,
                message,
                component: "job-controller",
                host: None,
                field_path: None,
            },
        );
    }
}
