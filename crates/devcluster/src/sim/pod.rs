//! The simulated scheduler and kubelet: a pod is bound to a node, goes Pending (containers
//! creating), Running, then Ready; run-to-completion pods (restartPolicy Never/OnFailure)
//! Succeed. Image tag `fail` crash-loops (or fails a run-to-completion pod), `pullfail` never
//! pulls.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::events::Ev;
use super::util::{full_image, hex64, image_tag, keep_transition};
use super::write::{KUBELET, SCHEDULER};
use super::{Key, Kind, Obj, Sim, SimError};

/// Where a pod is in its simulated life, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// Bound, containers being created.
    Pending,
    /// Containers started, not yet ready (or, for `pullfail`, ErrImagePull).
    Started,
    /// Ready (or CrashLoopBackOff / ImagePullBackOff / Succeeded / Failed).
    Settled,
}

/// How the containers of a pod behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Healthy,
    Crash,
    PullFail,
}

fn behaviour(pod: &Value) -> Behaviour {
    let images = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("image").and_then(Value::as_str));
    let mut b = Behaviour::Healthy;
    for img in images {
        match image_tag(img) {
            "pullfail" => return Behaviour::PullFail,
            "fail" => b = Behaviour::Crash,
            _ => {}
        }
    }
    b
}

fn stage_of(pod: &Value) -> Option<Stage> {
    let status = pod.get("status")?;
    let scheduled = super::util::condition(status.get("conditions"), "PodScheduled")?;
    if scheduled.get("status").and_then(Value::as_str) != Some("True") {
        return None;
    }
    let phase = status.get("phase").and_then(Value::as_str).unwrap_or("");
    if matches!(phase, "Succeeded" | "Failed") {
        return Some(Stage::Settled);
    }
    let statuses = status.get("containerStatuses").and_then(Value::as_array);
    let reasons: Vec<&str> = statuses
        .into_iter()
        .flatten()
        .filter_map(|c| c.pointer("/state/waiting/reason").and_then(Value::as_str))
        .collect();
    if reasons
        .iter()
        .any(|r| matches!(*r, "CrashLoopBackOff" | "ImagePullBackOff"))
    {
        return Some(Stage::Settled);
    }
    if reasons.contains(&"ErrImagePull") {
        return Some(Stage::Started);
    }
    let ready = super::util::condition(status.get("conditions"), "Ready")
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("True");
    if ready {
        return Some(Stage::Settled);
    }
    if phase == "Running" {
        return Some(Stage::Started);
    }
    Some(Stage::Pending)
}

impl Sim {
    pub(crate) fn reconcile_pod(&mut self, key: &Key) -> Result<(), SimError> {
        let Some(pod) = self.get(Kind::Pod, &key.ns, &key.name)? else {
            return Ok(());
        };
        if pod.deleting() {
            return Ok(());
        }
        let phase = pod
            .v
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if matches!(phase, "Succeeded" | "Failed") {
            return Ok(());
        }
        let node = pod
            .v
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if node.is_empty() {
            return self.schedule(&pod);
        }
        let seen = *self
            .pod_seen
            .entry(pod.uid().to_string())
            .or_insert_with(Instant::now);
        let elapsed = seen.elapsed();
        let delay = self.cfg.pod_ready_delay;
        let by_time = if elapsed >= delay {
            Stage::Settled
        } else if elapsed >= delay / 2 {
            Stage::Started
        } else {
            Stage::Pending
        };
        let current = stage_of(&pod.v);
        // A restarted simulation never moves a pod backwards.
        let stage = current.map_or(by_time, |c| c.max(by_time));
        let run_once = matches!(
            pod.v.pointer("/spec/restartPolicy").and_then(Value::as_str),
            Some("Never" | "OnFailure")
        );
        let b = behaviour(&pod.v);
        // Crash-loop restarts: back-off of 5 × delay (at least 1 s), doubling, capped at 5 min.
        let base = (delay * 5).max(Duration::from_secs(1));
        let mut restarts = 0u32;
        let mut next_restart = None;
        if b == Behaviour::Crash && !run_once && stage == Stage::Settled {
            let mut t = elapsed.saturating_sub(delay);
            let mut period = base;
            restarts = 1;
            while t >= period {
                t -= period;
                restarts += 1;
                period = (period * 2).min(Duration::from_secs(300));
            }
            next_restart = Some(period - t);
            let had = pod
                .v
                .pointer("/status/containerStatuses/0/restartCount")
                .and_then(Value::as_u64)
                .unwrap_or(0) as u32;
            restarts = restarts.max(had);
        }
        // The sandbox (and its IP) exists once the pod leaves Pending.
        let pod_ip = match pod.v.pointer("/status/podIP").and_then(Value::as_str) {
            Some(ip) => ip.to_string(),
            None if stage != Stage::Pending => self.alloc_pod_ip(),
            None => String::new(),
        };
        let status = self.pod_status(&pod.v, &node, &pod_ip, stage, b, run_once, restarts);
        let old_restarts = pod
            .v
            .pointer("/status/containerStatuses/0/restartCount")
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32;
        let wrote = self.write_status(Kind::Pod, &pod, status, KUBELET)?;
        if wrote {
            self.pod_events(
                &pod.v,
                &node,
                current,
                stage,
                b,
                run_once,
                restarts > old_restarts,
            );
        }
        // Timers for the next step.
        match stage {
            Stage::Pending => self.after(delay / 2 - elapsed.min(delay / 2), key.clone()),
            Stage::Started => self.after(delay - elapsed.min(delay), key.clone()),
            Stage::Settled => {
                if let Some(d) = next_restart {
                    self.after(d, key.clone());
                }
            }
        }
        Ok(())
    }

    /// Binds a pod to a node, as the scheduler does.
    fn schedule(&mut self, pod: &Obj) -> Result<(), SimError> {
        let node = self.node_name(self.next_node % self.cfg.nodes);
        self.next_node = self.next_node.wrapping_add(1);
        self.patch(
            Kind::Pod,
            pod,
            json!({"spec": {"nodeName": node}}),
            SCHEDULER,
        )?;
        self.event(
            Kind::Pod,
            &pod.v,
            Ev {
                warning: false,
                reason: "Scheduled",
                message: format!(
                    "Successfully assigned {}/{} to {node}",
                    pod.ns(),
                    pod.name()
                ),
                component: "default-scheduler",
                host: None,
                field_path: None,
            },
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn pod_status(
        &self,
        pod: &Value,
        node: &str,
        pod_ip: &str,
        stage: Stage,
        b: Behaviour,
        run_once: bool,
        restarts: u32,
    ) -> Value {
        let now = crate::api::now();
        let old = pod.get("status");
        let old_conds = old.and_then(|s| s.get("conditions"));
        let uid = super::util::meta_str(pod, "uid");
        let containers: Vec<&Value> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let old_cs = |name: &str| -> Option<&Value> {
            old?.get("containerStatuses")?
                .as_array()?
                .iter()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
        };
        let settled = stage == Stage::Settled;
        // (phase, all containers ready, reason when not ready)
        let (phase, ready, not_ready_reason) = match (b, stage, run_once) {
            (_, Stage::Pending, _) => ("Pending", false, "ContainersNotReady"),
            (Behaviour::PullFail, _, _) => ("Pending", false, "ContainersNotReady"),
            (Behaviour::Healthy, Stage::Settled, true) => ("Succeeded", false, "PodCompleted"),
            (Behaviour::Crash, Stage::Settled, true) => ("Failed", false, "PodFailed"),
            (Behaviour::Healthy, Stage::Settled, false) => ("Running", true, ""),
            (_, _, _) => ("Running", false, "ContainersNotReady"),
        };
        let mut statuses = Vec::new();
        for c in &containers {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            let image = c.get("image").and_then(Value::as_str).unwrap_or("");
            let prev = old_cs(name);
            let started_at = prev
                .and_then(|p| p.pointer("/state/running/startedAt"))
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| now.clone());
            let container_id = format!(
                "containerd://{}",
                hex64(&format!("{uid}/{name}/{restarts}"))
            );
            let image_id = format!("{}@sha256:{}", image_repo(&full_image(image)), hex64(image));
            let mut cs = json!({
                "name": name,
                "image": full_image(image),
                "imageID": "",
                "ready": false,
                "restartCount": restarts,
                "started": false,
            });
            match (b, stage) {
                (_, Stage::Pending) => {
                    cs["state"] = json!({"waiting": {"reason": "ContainerCreating"}});
                }
                (Behaviour::PullFail, Stage::Started) => {
                    cs["image"] = json!(image);
                    cs["state"] = json!({"waiting": {"reason": "ErrImagePull",
                        "message": format!("failed to pull and unpack image \"{}\": not found", full_image(image))}});
                }
                (Behaviour::PullFail, Stage::Settled) => {
                    cs["image"] = json!(image);
                    cs["state"] = json!({"waiting": {"reason": "ImagePullBackOff",
                        "message": format!("Back-off pulling image \"{image}\"")}});
                }
                (Behaviour::Crash, Stage::Settled) if !run_once => {
                    cs["imageID"] = json!(image_id);
                    cs["containerID"] = json!(container_id);
                    cs["state"] = json!({"waiting": {"reason": "CrashLoopBackOff",
                        "message": format!("back-off {}s restarting failed container={name} pod={}_{}({uid})",
                            10u64 << restarts.saturating_sub(1).min(5),
                            super::util::meta_str(pod, "name"), super::util::meta_str(pod, "namespace"))}});
                    // The last termination changes only when the container restarts again.
                    let same = prev
                        .and_then(|p| p.get("restartCount"))
                        .and_then(Value::as_u64)
                        == Some(u64::from(restarts));
                    cs["lastState"] = match prev.and_then(|p| p.get("lastState")) {
                        Some(ls) if same && ls.get("terminated").is_some() => ls.clone(),
                        _ => json!({"terminated": {"exitCode": 1, "reason": "Error",
                            "startedAt": now, "finishedAt": now, "containerID": container_id}}),
                    };
                }
                (_, Stage::Settled) if run_once => {
                    let (code, reason) = if b == Behaviour::Crash {
                        (1, "Error")
                    } else {
                        (0, "Completed")
                    };
                    cs["imageID"] = json!(image_id);
                    cs["containerID"] = json!(container_id);
                    cs["state"] = json!({"terminated": {"exitCode": code, "reason": reason,
                        "startedAt": started_at, "finishedAt": now, "containerID": container_id}});
                    if let Some(prev_term) = prev.and_then(|p| p.pointer("/state/terminated")) {
                        cs["state"]["terminated"] = prev_term.clone();
                    }
                }
                _ => {
                    cs["imageID"] = json!(image_id);
                    cs["containerID"] = json!(container_id);
                    cs["started"] = json!(true);
                    cs["ready"] = json!(settled && b == Behaviour::Healthy);
                    cs["state"] = json!({"running": {"startedAt": started_at}});
                }
            }
            statuses.push(cs);
        }
        let not_ready_names: Vec<&str> = containers
            .iter()
            .filter_map(|c| c.get("name").and_then(Value::as_str))
            .collect();
        let cond = |ty: &str, ok: bool, reason: &str| -> Value {
            let mut c = json!({"type": ty, "status": if ok { "True" } else { "False" },
                "lastProbeTime": null, "lastTransitionTime": now});
            if !ok && !reason.is_empty() {
                c["reason"] = json!(reason);
                if reason == "ContainersNotReady" {
                    c["message"] = json!(format!(
                        "containers with unready status: [{}]",
                        not_ready_names.join(" ")
                    ));
                }
            }
            keep_transition(c, super::util::condition(old_conds, ty))
        };
        let initialized = cond("Initialized", true, "");
        let conditions = vec![
            cond("PodReadyToStartContainers", stage != Stage::Pending, ""),
            initialized,
            cond("Ready", ready, not_ready_reason),
            cond("ContainersReady", ready, not_ready_reason),
            cond("PodScheduled", true, ""),
        ];
        let start_time = old
            .and_then(|s| s.get("startTime"))
            .cloned()
            .unwrap_or_else(|| json!(now));
        let host_ip = self.host_ip(node);
        let mut status = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "startTime": start_time,
            "containerStatuses": statuses,
            "qosClass": qos_class(pod),
        });
        if stage != Stage::Pending {
            status["podIP"] = json!(pod_ip);
            status["podIPs"] = json!([{"ip": pod_ip}]);
        }
        if let Some(inits) = pod
            .pointer("/spec/initContainers")
            .and_then(Value::as_array)
        {
            let ics: Vec<Value> = inits
                .iter()
                .map(|c| {
                    let name = c.get("name").and_then(Value::as_str).unwrap_or("");
                    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
                    let cid = format!("containerd://{}", hex64(&format!("{uid}/init/{name}")));
                    json!({"name": name, "image": full_image(image), "imageID": "",
                        "ready": true, "restartCount": 0, "started": false, "containerID": cid,
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                            "startedAt": start_time, "finishedAt": start_time, "containerID": cid}}})
                })
                .collect();
            status["initContainerStatuses"] = json!(ics);
        }
        status
    }

    #[allow(clippy::too_many_arguments)]
    fn pod_events(
        &mut self,
        pod: &Value,
        node: &str,
        from: Option<Stage>,
        to: Stage,
        b: Behaviour,
        run_once: bool,
        restarted: bool,
    ) {
        let containers: Vec<(String, String)> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    c.get("image")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect();
        let ev = |warning: bool, reason: &'static str, message: String, name: &str| Ev {
            warning,
            reason,
            message,
            component: "kubelet",
            host: Some(node),
            field_path: Some(format!("spec.containers{{{name}}}")),
        };
        let mut out = Vec::new();
        let entered = |s: Stage| from.is_none_or(|f| f < s) && to >= s;
        for (name, image) in &containers {
            if entered(Stage::Started) {
                if b == Behaviour::PullFail {
                    out.push(ev(
                        false,
                        "Pulling",
                        format!("Pulling image \"{image}\""),
                        name,
                    ));
                    out.push(ev(true, "Failed", format!("Failed to pull image \"{image}\": failed to pull and unpack image \"{}\": not found", full_image(image)), name));
                    out.push(ev(true, "Failed", "Error: ErrImagePull".into(), name));
                } else {
                    out.push(ev(
                        false,
                        "Pulled",
                        format!("Container image \"{image}\" already present on machine"),
                        name,
                    ));
                    out.push(ev(
                        false,
                        "Created",
                        format!("Created container: {name}"),
                        name,
                    ));
                    out.push(ev(
                        false,
                        "Started",
                        format!("Started container {name}"),
                        name,
                    ));
                }
            }
            if entered(Stage::Settled) && b == Behaviour::PullFail {
                out.push(ev(
                    false,
                    "BackOff",
                    format!("Back-off pulling image \"{image}\""),
                    name,
                ));
                out.push(ev(true, "Failed", "Error: ImagePullBackOff".into(), name));
            }
            if b == Behaviour::Crash
                && !run_once
                && to == Stage::Settled
                && (restarted || entered(Stage::Settled))
            {
                let pod_name = super::util::meta_str(pod, "name");
                let ns = super::util::meta_str(pod, "namespace");
                let uid = super::util::meta_str(pod, "uid");
                out.push(ev(
                    true,
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {name} in pod {pod_name}_{ns}({uid})"
                    ),
                    name,
                ));
            }
        }
        for e in out {
            self.event(Kind::Pod, pod, e);
        }
    }
}

/// An image reference without its tag.
fn image_repo(full: &str) -> &str {
    match full.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => full,
    }
}

/// The QoS class the API server would compute from requests and limits.
fn qos_class(pod: &Value) -> &'static str {
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        if req.is_some_and(|m| !m.is_empty()) || lim.is_some_and(|m| !m.is_empty()) {
            any = true;
        }
        let full = |m: Option<&serde_json::Map<String, Value>>| {
            m.is_some_and(|m| m.contains_key("cpu") && m.contains_key("memory"))
        };
        if !full(lim) || (req.is_some() && req != lim) {
            guaranteed = false;
        }
    }
    if guaranteed {
        "Guaranteed"
    } else if any {
        "Burstable"
    } else {
        "BestEffort"
    }
}
