//! API defaulting as kube-apiserver does it for the built-in types: the fields a client left
//! out are filled in on every write (create, update, patch, apply) before the object is
//! validated and stored, so readers see what a real cluster would return.
//!
//! Server-side apply records only the applied configuration as the applier's fields, so a
//! defaulted field is not owned by an applier; a create or update records the defaulted object,
//! as Kubernetes does for those operations.

use serde_json::{Map, Value, json};

/// Fills in the defaults of `obj`, an object of `group`/`resource`. Unknown resources are left
/// as they are.
pub fn apply(group: &str, resource: &str, obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    match (group, resource) {
        ("apps", "deployments") => {
            set(spec, "replicas", json!(1));
            if let Some(strategy) = object(spec, "strategy") {
                set(strategy, "type", json!("RollingUpdate"));
                if strategy.get("type") == Some(&json!("RollingUpdate"))
                    && let Some(ru) = object(strategy, "rollingUpdate")
                {
                    set(ru, "maxUnavailable", json!("25%"));
                    set(ru, "maxSurge", json!("25%"));
                }
            }
            set(spec, "revisionHistoryLimit", json!(10));
            set(spec, "progressDeadlineSeconds", json!(600));
            template(spec, true);
        }
        ("apps", "statefulsets") => {
            set(spec, "replicas", json!(1));
            if let Some(strategy) = object(spec, "updateStrategy") {
                set(strategy, "type", json!("RollingUpdate"));
                if strategy.get("type") == Some(&json!("RollingUpdate"))
                    && let Some(ru) = object(strategy, "rollingUpdate")
                {
                    set(ru, "partition", json!(0));
                }
            }
            set(spec, "podManagementPolicy", json!("OrderedReady"));
            set(spec, "revisionHistoryLimit", json!(10));
            if let Some(retention) = object(spec, "persistentVolumeClaimRetentionPolicy") {
                set(retention, "whenDeleted", json!("Retain"));
                set(retention, "whenScaled", json!("Retain"));
            }
            template(spec, true);
        }
        ("apps", "daemonsets") => {
            if let Some(strategy) = object(spec, "updateStrategy") {
                set(strategy, "type", json!("RollingUpdate"));
                if strategy.get("type") == Some(&json!("RollingUpdate"))
                    && let Some(ru) = object(strategy, "rollingUpdate")
                {
                    set(ru, "maxUnavailable", json!(1));
                    set(ru, "maxSurge", json!(0));
                }
            }
            set(spec, "revisionHistoryLimit", json!(10));
            template(spec, true);
        }
        ("apps", "replicasets") => {
            set(spec, "replicas", json!(1));
            template(spec, true);
        }
        ("batch", "jobs") => {
            // Kubernetes defaults completions only when neither count is given.
            if absent(spec, "completions") && absent(spec, "parallelism") {
                set(spec, "completions", json!(1));
            }
            set(spec, "parallelism", json!(1));
            set(spec, "backoffLimit", json!(6));
            set(spec, "completionMode", json!("NonIndexed"));
            set(spec, "suspend", json!(false));
            // A Job's pods must say how they restart; validation, not defaulting, decides.
            template(spec, false);
        }
        ("batch", "cronjobs") => {
            set(spec, "concurrencyPolicy", json!("Allow"));
            set(spec, "suspend", json!(false));
            set(spec, "successfulJobsHistoryLimit", json!(3));
            set(spec, "failedJobsHistoryLimit", json!(1));
            if let Some(job_spec) = spec
                .get_mut("jobTemplate")
                .and_then(|t| t.get_mut("spec"))
                .and_then(Value::as_object_mut)
            {
                template(job_spec, false);
            }
        }
        ("", "pods") => pod_spec(spec, true),
        ("", "services") => service(spec),
        ("", "persistentvolumeclaims") => set(spec, "volumeMode", json!("Filesystem")),
        _ => {}
    }
}

fn absent(map: &Map<String, Value>, key: &str) -> bool {
    map.get(key).is_none_or(Value::is_null)
}

/// Sets `key` when the client left it out (or sent null).
fn set(map: &mut Map<String, Value>, key: &str, value: Value) {
    if absent(map, key) {
        map.insert(key.to_string(), value);
    }
}

/// The object at `key`, created empty when absent; `None` when the client sent another type
/// (validation reports it).
fn object<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    if absent(map, key) {
        map.insert(key.to_string(), json!({}));
    }
    map.get_mut(key).and_then(Value::as_object_mut)
}

fn template(spec: &mut Map<String, Value>, restart_always: bool) {
    if let Some(pod) = spec
        .get_mut("template")
        .and_then(|t| t.get_mut("spec"))
        .and_then(Value::as_object_mut)
    {
        pod_spec(pod, restart_always);
    }
}

fn pod_spec(spec: &mut Map<String, Value>, restart_always: bool) {
    if restart_always {
        set(spec, "restartPolicy", json!("Always"));
    }
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "schedulerName", json!("default-scheduler"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "securityContext", json!({}));
    for list in ["initContainers", "containers"] {
        let Some(Value::Array(containers)) = spec.get_mut(list) else {
            continue;
        };
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            set(c, "terminationMessagePath", json!("/dev/termination-log"));
            set(c, "terminationMessagePolicy", json!("File"));
            let policy = pull_policy(c.get("image").and_then(Value::as_str).unwrap_or(""));
            set(c, "imagePullPolicy", json!(policy));
            if let Some(Value::Array(ports)) = c.get_mut("ports") {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    set(p, "protocol", json!("TCP"));
                }
            }
        }
    }
}

/// `Always` for `:latest` or an image without tag or digest, else `IfNotPresent`.
fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    // A colon after the last slash starts the tag; one before it is a registry port.
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn service(spec: &mut Map<String, Value>) {
    set(spec, "type", json!("ClusterIP"));
    set(spec, "sessionAffinity", json!("None"));
    let external_name = spec.get("type") == Some(&json!("ExternalName"));
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                set(p, "targetPort", port);
            }
        }
    }
    if !external_name {
        set(spec, "ipFamilies", json!(["IPv4"]));
        set(spec, "ipFamilyPolicy", json!("SingleStack"));
        set(spec, "internalTrafficPolicy", json!("Cluster"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(pull_policy("nginx"), "Always");
        assert_eq!(pull_policy("nginx:latest"), "Always");
        assert_eq!(pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(pull_policy("registry:5000/app"), "Always");
        assert_eq!(pull_policy("registry:5000/app:v1"), "IfNotPresent");
        assert_eq!(pull_policy("app@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn client_values_are_kept() {
        let mut d = json!({"spec": {"replicas": 0, "strategy": {"type": "Recreate"},
            "template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "a", "image": "x:1", "imagePullPolicy": "Never"}]}}}});
        apply("apps", "deployments", &mut d);
        assert_eq!(d["spec"]["replicas"], 0);
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "OnFailure");
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "Never"
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    }
}
