//! Built-in health rules, on objects written the way an API server returns them.

use capstan_engine::health::HealthStatus::*;
use capstan_engine::health::{Health, HealthChecker, HealthStatus, aggregate, builtin};
use serde_json::Value;

fn obj(yaml: &str) -> Value {
    serde_yaml_ng::from_str(yaml).expect("test YAML parses")
}

fn health(yaml: &str) -> Health {
    builtin(&obj(yaml)).expect("a built-in check applies")
}

fn assert_health(yaml: &str, status: HealthStatus, message: Option<&str>) {
    let h = health(yaml);
    assert_eq!(h.status, status, "{h:?}");
    assert_eq!(h.message.as_deref(), message, "{h:?}");
}

// ---------------------------------------------------------------------------------------------
// Deployment

const DEPLOYMENT_HEALTHY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: guestbook-ui
  namespace: default
  uid: 5b0e5c0c-2f4e-4f38-9d1e-9a3c1f9f8b11
  resourceVersion: "48213"
  generation: 3
  creationTimestamp: "2026-11-27T10:00:00Z"
  annotations:
    deployment.kubernetes.io/revision: "3"
spec:
  replicas: 3
  revisionHistoryLimit: 10
  progressDeadlineSeconds: 600
  selector:
    matchLabels: {app: guestbook-ui}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 25%, maxUnavailable: 25%}
  template:
    metadata:
      labels: {app: guestbook-ui}
    spec:
      containers:
      - name: guestbook-ui
        image: gcr.io/heptio-images/ks-guestbook-demo:0.2
        ports: [{containerPort: 80, protocol: TCP}]
status:
  observedGeneration: 3
  replicas: 3
  updatedReplicas: 3
  readyReplicas: 3
  availableReplicas: 3
  conditions:
  - type: Available
    status: "True"
    lastUpdateTime: "2026-11-27T10:00:30Z"
    lastTransitionTime: "2026-11-27T10:00:30Z"
    reason: MinimumReplicasAvailable
    message: Deployment has minimum availability.
  - type: Progressing
    status: "True"
    lastUpdateTime: "2026-11-27T10:05:12Z"
    lastTransitionTime: "2026-11-27T10:00:00Z"
    reason: NewReplicaSetAvailable
    message: ReplicaSet "guestbook-ui-85985d774c" has successfully progressed.
"#;

fn deployment_with(patch: impl FnOnce(&mut Value)) -> Value {
    let mut d = obj(DEPLOYMENT_HEALTHY);
    patch(&mut d);
    d
}

#[test]
fn deployment_fully_rolled_out_is_healthy() {
    assert_health(DEPLOYMENT_HEALTHY, Healthy, None);
}

#[test]
fn deployment_with_unobserved_generation_is_progressing() {
    let d = deployment_with(|d| d["metadata"]["generation"] = 4.into());
    let h = builtin(&d).unwrap();
    assert_eq!(h.status, Progressing);
    assert_eq!(
        h.message.as_deref(),
        Some(
            "Waiting for rollout to finish: observed deployment generation less than desired generation"
        )
    );
}

#[test]
fn paused_deployment_is_suspended() {
    let d = deployment_with(|d| {
        d["spec"]["paused"] = true.into();
        d["status"]["updatedReplicas"] = 1.into();
    });
    assert_eq!(builtin(&d).unwrap().status, Suspended);
}

#[test]
fn deployment_past_its_progress_deadline_is_degraded() {
    let d = deployment_with(|d| {
        d["status"]["updatedReplicas"] = 1.into();
        d["status"]["availableReplicas"] = 2.into();
        d["status"]["unavailableReplicas"] = 1.into();
        d["status"]["conditions"][1] = serde_json::json!({
            "type": "Progressing", "status": "False",
            "lastUpdateTime": "2026-11-27T10:15:00Z", "lastTransitionTime": "2026-11-27T10:15:00Z",
            "reason": "ProgressDeadlineExceeded",
            "message": "ReplicaSet \"guestbook-ui-6d8f7c9b5\" has timed out progressing."
        });
    });
    let h = builtin(&d).unwrap();
    assert_eq!(h.status, Degraded);
    assert_eq!(
        h.message.as_deref(),
        Some("Deployment \"guestbook-ui\" exceeded its progress deadline")
    );
}

#[test]
fn deployment_rollout_stages_are_progressing_with_rollout_status_messages() {
    // New pods being created.
    let d = deployment_with(|d| {
        d["status"]["replicas"] = 4.into();
        d["status"]["updatedReplicas"] = 1.into();
    });
    assert_eq!(
        builtin(&d).unwrap(),
        Health::new(
            Progressing,
            "Waiting for rollout to finish: 1 out of 3 new replicas have been updated..."
        )
    );
    // All new pods exist, old ones still terminating.
    let d = deployment_with(|d| d["status"]["replicas"] = 4.into());
    assert_eq!(
        builtin(&d).unwrap(),
        Health::new(
            Progressing,
            "Waiting for rollout to finish: 1 old replicas are pending termination..."
        )
    );
    // New pods not yet available.
    let d = deployment_with(|d| d["status"]["availableReplicas"] = 2.into());
    assert_eq!(
        builtin(&d).unwrap(),
        Health::new(
            Progressing,
            "Waiting for rollout to finish: 2 of 3 updated replicas are available..."
        )
    );
}

#[test]
fn freshly_created_deployment_without_status_is_progressing() {
    let d = deployment_with(|d| {
        d["metadata"]["generation"] = 1.into();
        d.as_object_mut().unwrap().remove("status");
    });
    assert_eq!(builtin(&d).unwrap().status, Progressing);
}

#[test]
fn deployment_scaled_to_zero_is_healthy() {
    let d = obj(r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: worker, namespace: jobs, generation: 2}
spec:
  replicas: 0
  selector: {matchLabels: {app: worker}}
  template: {metadata: {labels: {app: worker}}, spec: {containers: [{name: w, image: busybox}]}}
status:
  observedGeneration: 2
  conditions:
  - {type: Available, status: "True", reason: MinimumReplicasAvailable, message: Deployment has minimum availability.}
  - {type: Progressing, status: "True", reason: NewReplicaSetAvailable, message: ReplicaSet "worker-7b9c" has successfully progressed.}
"#);
    assert_eq!(builtin(&d).unwrap(), Health::status(Healthy));
}

// ---------------------------------------------------------------------------------------------
// StatefulSet

const STS: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: redis, namespace: cache, generation: 2}
spec:
  replicas: 3
  serviceName: redis
  podManagementPolicy: OrderedReady
  selector: {matchLabels: {app: redis}}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {partition: 0}
  template: {metadata: {labels: {app: redis}}, spec: {containers: [{name: redis, image: "redis:7"}]}}
status:
  observedGeneration: 2
  replicas: 3
  readyReplicas: 3
  currentReplicas: 3
  updatedReplicas: 3
  availableReplicas: 3
  currentRevision: redis-5d7f9c8b4
  updateRevision: redis-5d7f9c8b4
  collisionCount: 0
"#;

fn sts_with(patch: impl FnOnce(&mut Value)) -> Health {
    let mut s = obj(STS);
    patch(&mut s);
    builtin(&s).unwrap()
}

#[test]
fn statefulset_rolled_out_is_healthy_with_revision() {
    assert_health(
        STS,
        Healthy,
        Some("statefulset rolling update complete 3 pods at revision redis-5d7f9c8b4..."),
    );
}

#[test]
fn statefulset_generation_not_observed_is_progressing() {
    let h = sts_with(|s| s["metadata"]["generation"] = 3.into());
    assert_eq!(h.status, Progressing);
    let h = sts_with(|s| {
        s["status"]
            .as_object_mut()
            .unwrap()
            .remove("observedGeneration");
    });
    assert_eq!(h.status, Progressing);
}

#[test]
fn statefulset_waits_for_ready_pods() {
    let h = sts_with(|s| s["status"]["readyReplicas"] = 1.into());
    assert_eq!(
        h,
        Health::new(Progressing, "Waiting for 2 pods to be ready...")
    );
}

#[test]
fn statefulset_rolling_update_waits_for_update_revision() {
    let h = sts_with(|s| {
        s["status"]["updateRevision"] = "redis-6c4b8d9f7".into();
        s["status"]["updatedReplicas"] = 1.into();
        s["status"]["currentReplicas"] = 2.into();
    });
    assert_eq!(
        h,
        Health::new(
            Progressing,
            "waiting for statefulset rolling update to complete 1 pods at revision redis-6c4b8d9f7..."
        )
    );
}

#[test]
fn statefulset_partitioned_rollout_counts_only_pods_above_the_partition() {
    // partition 2 of 3 replicas: only ordinal 2 gets the new revision.
    let partitioned = |updated: i64| {
        sts_with(|s| {
            s["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = 2.into();
            s["status"]["updateRevision"] = "redis-6c4b8d9f7".into();
            s["status"]["updatedReplicas"] = updated.into();
            s["status"]["currentReplicas"] = (3 - updated).into();
        })
    };
    assert_eq!(
        partitioned(0),
        Health::new(
            Progressing,
            "Waiting for partitioned roll out to finish: 0 out of 1 new pods have been updated..."
        )
    );
    // The revisions differ forever under a partition, yet the rollout is done.
    assert_eq!(
        partitioned(1),
        Health::new(
            Healthy,
            "partitioned roll out complete: 1 new pods have been updated..."
        )
    );
}

#[test]
fn statefulset_on_delete_is_healthy_once_observed_and_ready() {
    let h = sts_with(|s| {
        s["spec"]["updateStrategy"] = serde_json::json!({"type": "OnDelete"});
        s["status"]["updateRevision"] = "redis-6c4b8d9f7".into();
        s["status"]["updatedReplicas"] = 0.into();
    });
    assert_eq!(h.status, Healthy);
    assert!(h.message.unwrap().contains("OnDelete"));
}

// ---------------------------------------------------------------------------------------------
// DaemonSet

const DS: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: fluent-bit, namespace: logging, generation: 5}
spec:
  selector: {matchLabels: {app: fluent-bit}}
  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1, maxSurge: 0}}
  template: {metadata: {labels: {app: fluent-bit}}, spec: {containers: [{name: fb, image: "fluent/fluent-bit:3.1"}]}}
status:
  currentNumberScheduled: 4
  desiredNumberScheduled: 4
  numberAvailable: 4
  numberMisscheduled: 0
  numberReady: 4
  observedGeneration: 5
  updatedNumberScheduled: 4
"#;

fn ds_with(patch: impl FnOnce(&mut Value)) -> Health {
    let mut d = obj(DS);
    patch(&mut d);
    builtin(&d).unwrap()
}

#[test]
fn daemonset_rules() {
    assert_health(DS, Healthy, None);
    assert_eq!(
        ds_with(|d| d["metadata"]["generation"] = 6.into()),
        Health::new(
            Progressing,
            "Waiting for rollout to finish: observed daemon set generation less than desired generation"
        )
    );
    assert_eq!(
        ds_with(|d| d["status"]["updatedNumberScheduled"] = 2.into()),
        Health::new(
            Progressing,
            "Waiting for daemon set \"fluent-bit\" rollout to finish: 2 out of 4 new pods have been updated..."
        )
    );
    assert_eq!(
        ds_with(|d| {
            d["status"]["numberAvailable"] = 3.into();
            d["status"]["numberUnavailable"] = 1.into();
        }),
        Health::new(
            Progressing,
            "Waiting for daemon set \"fluent-bit\" rollout to finish: 3 of 4 updated pods are available..."
        )
    );
    let on_delete = ds_with(|d| {
        d["spec"]["updateStrategy"] = serde_json::json!({"type": "OnDelete"});
        d["status"]["updatedNumberScheduled"] = 1.into();
    });
    assert_eq!(on_delete.status, Healthy);
    assert!(on_delete.message.unwrap().contains("1 out of 4"));
}

// ---------------------------------------------------------------------------------------------
// ReplicaSet

#[test]
fn replicaset_rules() {
    let rs = r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: guestbook-ui-85985d774c
  namespace: default
  generation: 1
  ownerReferences:
  - {apiVersion: apps/v1, kind: Deployment, name: guestbook-ui, uid: 5b0e5c0c-2f4e-4f38-9d1e-9a3c1f9f8b11, controller: true, blockOwnerDeletion: true}
spec:
  replicas: 3
  selector: {matchLabels: {app: guestbook-ui, pod-template-hash: 85985d774c}}
  template: {metadata: {labels: {app: guestbook-ui, pod-template-hash: 85985d774c}}, spec: {containers: [{name: ui, image: nginx}]}}
status:
  replicas: 3
  fullyLabeledReplicas: 3
  readyReplicas: 3
  availableReplicas: 3
  observedGeneration: 1
"#;
    assert_health(rs, Healthy, None);
    let mut v = obj(rs);
    v["status"]["availableReplicas"] = 1.into();
    assert_eq!(
        builtin(&v).unwrap(),
        Health::new(
            Progressing,
            "Waiting for rollout to finish: 1 out of 3 new replicas are available..."
        )
    );
    v["status"]["conditions"] = serde_json::json!([{
        "type": "ReplicaFailure", "status": "True", "lastTransitionTime": "2026-11-27T11:00:00Z",
        "reason": "FailedCreate",
        "message": "pods \"guestbook-ui-85985d774c-x7k2p\" is forbidden: exceeded quota: compute-resources, requested: limits.cpu=500m, used: limits.cpu=2, limited: limits.cpu=2"
    }]);
    let h = builtin(&v).unwrap();
    assert_eq!(h.status, Degraded);
    assert!(h.message.unwrap().contains("exceeded quota"));
    v["metadata"]["generation"] = 2.into();
    assert_eq!(builtin(&v).unwrap().status, Progressing);
}

// ---------------------------------------------------------------------------------------------
// Pod

const POD_RUNNING: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: guestbook-ui-85985d774c-4gq9x
  namespace: default
  labels: {app: guestbook-ui, pod-template-hash: 85985d774c}
spec:
  restartPolicy: Always
  containers:
  - {name: guestbook-ui, image: "gcr.io/heptio-images/ks-guestbook-demo:0.2"}
  nodeName: node-1
status:
  phase: Running
  hostIP: 10.0.0.11
  podIP: 10.244.1.17
  startTime: "2026-11-27T10:00:02Z"
  qosClass: BestEffort
  conditions:
  - {type: PodReadyToStartContainers, status: "True", lastTransitionTime: "2026-11-27T10:00:04Z"}
  - {type: Initialized, status: "True", lastTransitionTime: "2026-11-27T10:00:02Z"}
  - {type: Ready, status: "True", lastTransitionTime: "2026-11-27T10:00:09Z"}
  - {type: ContainersReady, status: "True", lastTransitionTime: "2026-11-27T10:00:09Z"}
  - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-27T10:00:02Z"}
  containerStatuses:
  - name: guestbook-ui
    image: gcr.io/heptio-images/ks-guestbook-demo:0.2
    imageID: gcr.io/heptio-images/ks-guestbook-demo@sha256:e6fbd640820c32c847a53b93eb7b404f25ffb56df1cc16d0711eec3a405d6509
    containerID: containerd://1a2b3c
    ready: true
    started: true
    restartCount: 0
    state:
      running: {startedAt: "2026-11-27T10:00:05Z"}
"#;

fn pod_with(patch: impl FnOnce(&mut Value)) -> Health {
    let mut p = obj(POD_RUNNING);
    patch(&mut p);
    builtin(&p).unwrap()
}

fn not_ready(p: &mut Value) {
    p["status"]["conditions"][2]["status"] = "False".into();
    p["status"]["conditions"][3]["status"] = "False".into();
    p["status"]["containerStatuses"][0]["ready"] = false.into();
}

#[test]
fn running_ready_pod_is_healthy() {
    assert_health(POD_RUNNING, Healthy, None);
}

#[test]
fn pod_in_crash_loop_is_degraded_with_the_kubelet_message() {
    let h = pod_with(|p| {
        not_ready(p);
        let cs = &mut p["status"]["containerStatuses"][0];
        cs["restartCount"] = 5.into();
        cs["started"] = false.into();
        cs["state"] = serde_json::json!({"waiting": {
            "reason": "CrashLoopBackOff",
            "message": "back-off 2m40s restarting failed container=guestbook-ui pod=guestbook-ui-85985d774c-4gq9x_default(0c5f9f2e)"
        }});
        cs["lastState"] = serde_json::json!({"terminated": {
            "exitCode": 1, "reason": "Error",
            "startedAt": "2026-11-27T10:04:00Z", "finishedAt": "2026-11-27T10:04:01Z",
            "containerID": "containerd://9f8e7d"
        }});
    });
    assert_eq!(h.status, Degraded);
    assert_eq!(
        h.message.as_deref(),
        Some(
            "container guestbook-ui: CrashLoopBackOff: back-off 2m40s restarting failed container=guestbook-ui pod=guestbook-ui-85985d774c-4gq9x_default(0c5f9f2e)"
        )
    );
}

#[test]
fn pending_pod_waiting_on_a_bad_image_is_degraded() {
    for reason in [
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
    ] {
        let h = pod_with(|p| {
            not_ready(p);
            p["status"]["phase"] = "Pending".into();
            p["status"]["containerStatuses"][0]["state"] = serde_json::json!({"waiting": {
                "reason": reason,
                "message": "Back-off pulling image \"gcr.io/heptio-images/ks-guestbook-demo:0.3\""
            }});
        });
        assert_eq!(h.status, Degraded, "{reason}");
        assert!(h.message.unwrap().contains(reason), "{reason}");
    }
}

#[test]
fn pod_creating_containers_is_progressing() {
    let h = pod_with(|p| {
        not_ready(p);
        p["status"]["phase"] = "Pending".into();
        p["status"]["containerStatuses"][0]["state"] =
            serde_json::json!({"waiting": {"reason": "ContainerCreating"}});
    });
    assert_eq!(h, Health::status(Progressing));
}

#[test]
fn running_pod_not_yet_ready_is_progressing_and_after_a_crash_degraded() {
    let h = pod_with(not_ready);
    assert_eq!(h.status, Progressing);
    let h = pod_with(|p| {
        not_ready(p);
        p["status"]["containerStatuses"][0]["restartCount"] = 1.into();
        p["status"]["containerStatuses"][0]["lastState"] = serde_json::json!({"terminated": {
            "exitCode": 137, "reason": "OOMKilled",
            "startedAt": "2026-11-27T10:04:00Z", "finishedAt": "2026-11-27T10:06:00Z"
        }});
    });
    assert_eq!(
        h,
        Health::new(Degraded, "container guestbook-ui restarted: OOMKilled")
    );
}

#[test]
fn finite_pods_are_progressing_while_running_and_not_degraded_by_image_pulls() {
    for policy in ["Never", "OnFailure"] {
        let h = pod_with(|p| p["spec"]["restartPolicy"] = policy.into());
        assert_eq!(h.status, Progressing, "{policy}");
        // A hook pod waiting on its image must not fail the sync phase early.
        let h = pod_with(|p| {
            p["spec"]["restartPolicy"] = policy.into();
            p["status"]["phase"] = "Pending".into();
            p["status"]["containerStatuses"][0]["state"] = serde_json::json!({"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}});
        });
        assert_eq!(h.status, Progressing, "{policy}");
    }
}

#[test]
fn pod_phases_succeeded_and_failed() {
    let h = pod_with(|p| {
        p["spec"]["restartPolicy"] = "Never".into();
        p["status"]["phase"] = "Succeeded".into();
        p["status"]["containerStatuses"][0]["state"] = serde_json::json!({"terminated": {
            "exitCode": 0, "reason": "Completed", "startedAt": "2026-11-27T10:00:05Z", "finishedAt": "2026-11-27T10:00:09Z"
        }});
    });
    assert_eq!(h, Health::status(Healthy));

    let h = pod_with(|p| {
        p["spec"]["restartPolicy"] = "Never".into();
        p["status"]["phase"] = "Failed".into();
        p["status"]["containerStatuses"][0]["ready"] = false.into();
        p["status"]["containerStatuses"][0]["state"] = serde_json::json!({"terminated": {
            "exitCode": 2, "reason": "Error", "message": "migration 0042 failed: relation \"users\" already exists",
            "startedAt": "2026-11-27T10:00:05Z", "finishedAt": "2026-11-27T10:00:09Z"
        }});
    });
    assert_eq!(
        h,
        Health::new(
            Degraded,
            "container guestbook-ui exited with code 2: migration 0042 failed: relation \"users\" already exists"
        )
    );

    // Evicted: the kubelet puts the reason on the pod itself.
    let h = pod_with(|p| {
        p["status"]["phase"] = "Failed".into();
        p["status"]["reason"] = "Evicted".into();
        p["status"]["message"] =
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 91Mi."
                .into();
    });
    assert_eq!(
        h,
        Health::new(
            Degraded,
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 91Mi."
        )
    );
}

#[test]
fn pod_being_deleted_is_progressing() {
    let h = pod_with(|p| {
        p["metadata"]["deletionTimestamp"] = "2026-11-27T10:30:00Z".into();
        p["metadata"]["deletionGracePeriodSeconds"] = 30.into();
    });
    assert_eq!(h, Health::new(Progressing, "Pod is being deleted"));
}

// ---------------------------------------------------------------------------------------------
// Job and CronJob

const JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: db-migrate, namespace: shop, generation: 1}
spec:
  backoffLimit: 2
  completions: 1
  parallelism: 1
  suspend: false
  template: {spec: {restartPolicy: Never, containers: [{name: migrate, image: "shop/migrate:1.4"}]}}
status:
  startTime: "2026-11-27T10:00:00Z"
  active: 1
  ready: 1
  terminating: 0
  uncountedTerminatedPods: {}
"#;

fn job_with(patch: impl FnOnce(&mut Value)) -> Health {
    let mut j = obj(JOB);
    patch(&mut j);
    builtin(&j).unwrap()
}

#[test]
fn job_rules() {
    assert_health(JOB, Progressing, Some("Job has 1 active pods"));

    let complete = job_with(|j| {
        let s = &mut j["status"];
        s["active"] = Value::Null;
        s["succeeded"] = 1.into();
        s["completionTime"] = "2026-11-27T10:01:00Z".into();
        s["conditions"] = serde_json::json!([
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": "2026-11-27T10:01:00Z", "lastTransitionTime": "2026-11-27T10:01:00Z"},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": "2026-11-27T10:01:00Z", "lastTransitionTime": "2026-11-27T10:01:00Z"}
        ]);
    });
    assert_eq!(
        complete,
        Health::new(Healthy, "Reached expected number of succeeded pods")
    );

    let failed = job_with(|j| {
        let s = &mut j["status"];
        s["active"] = Value::Null;
        s["failed"] = 3.into();
        s["conditions"] = serde_json::json!([
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}
        ]);
    });
    assert_eq!(
        failed,
        Health::new(
            Degraded,
            "BackoffLimitExceeded: Job has reached the specified backoff limit"
        )
    );

    let suspended = job_with(|j| {
        j["spec"]["suspend"] = true.into();
        j["status"] = serde_json::json!({"conditions": [
            {"type": "Suspended", "status": "True", "reason": "JobSuspended", "message": "Job suspended", "lastProbeTime": "2026-11-27T10:00:00Z", "lastTransitionTime": "2026-11-27T10:00:00Z"}
        ]});
    });
    assert_eq!(suspended, Health::new(Suspended, "Job suspended"));
    // Just suspended in spec, before the controller wrote the condition.
    let suspended = job_with(|j| {
        j["spec"]["suspend"] = true.into();
        j["status"] = serde_json::json!({});
    });
    assert_eq!(suspended, Health::new(Suspended, "Job is suspended"));
    // Resumed: the condition flips to False and the job runs again.
    let resumed = job_with(|j| {
        j["status"]["conditions"] = serde_json::json!([
            {"type": "Suspended", "status": "False", "reason": "JobResumed", "message": "Job resumed"}
        ]);
    });
    assert_eq!(resumed.status, Progressing);
}

#[test]
fn cronjob_rules() {
    let cj = |status: &str, suspend: bool| {
        obj(&format!(
            r#"
apiVersion: batch/v1
kind: CronJob
metadata: {{name: nightly-report, namespace: shop}}
spec:
  schedule: "0 3 * * *"
  suspend: {suspend}
  concurrencyPolicy: Forbid
  jobTemplate: {{spec: {{template: {{spec: {{restartPolicy: OnFailure, containers: [{{name: r, image: "shop/report:2"}}]}}}}}}}}
status: {status}
"#
        ))
    };
    let h = |v: Value| builtin(&v).unwrap();
    assert_eq!(h(cj("{}", true)).status, Suspended);
    assert_eq!(h(cj("{}", false)).status, Healthy);
    assert_eq!(
        h(cj(
            r#"{lastScheduleTime: "2026-11-27T03:00:00Z", lastSuccessfulTime: "2026-11-27T03:02:11Z"}"#,
            false
        ))
        .status,
        Healthy
    );
    assert_eq!(
        h(cj(
            r#"{lastScheduleTime: "2026-11-27T03:00:00Z", lastSuccessfulTime: "2026-11-26T03:01:40Z"}"#,
            false
        ))
        .status,
        Degraded
    );
    assert_eq!(
        h(cj(
            r#"{lastScheduleTime: "2026-11-27T03:00:00Z", active: [{apiVersion: batch/v1, kind: Job, name: nightly-report-29400000, namespace: shop}]}"#,
            false
        ))
        .status,
        Healthy
    );
}

// ---------------------------------------------------------------------------------------------
// PVC, Service, Ingress

#[test]
fn pvc_phases() {
    let pvc = |phase: &str| {
        obj(&format!(
            r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data-redis-0, namespace: cache}}
spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 8Gi}}}}, storageClassName: standard, volumeMode: Filesystem}}
status: {{phase: {phase}, accessModes: [ReadWriteOnce], capacity: {{storage: 8Gi}}}}
"#
        ))
    };
    assert_eq!(builtin(&pvc("Bound")).unwrap(), Health::status(Healthy));
    assert_eq!(builtin(&pvc("Pending")).unwrap().status, Progressing);
    assert_eq!(builtin(&pvc("Lost")).unwrap().status, Degraded);
}

#[test]
fn services() {
    let cluster_ip = obj(r#"
apiVersion: v1
kind: Service
metadata: {name: guestbook-ui, namespace: default}
spec:
  type: ClusterIP
  clusterIP: 10.96.14.3
  clusterIPs: [10.96.14.3]
  ports: [{port: 80, targetPort: 80, protocol: TCP}]
  selector: {app: guestbook-ui}
status:
  loadBalancer: {}
"#);
    assert_eq!(builtin(&cluster_ip).unwrap(), Health::status(Healthy));

    let mut lb = cluster_ip.clone();
    lb["spec"]["type"] = "LoadBalancer".into();
    assert_eq!(builtin(&lb).unwrap().status, Progressing);
    lb["status"]["loadBalancer"]["ingress"] =
        serde_json::json!([{"ip": "203.0.113.10", "ipMode": "VIP"}]);
    assert_eq!(builtin(&lb).unwrap(), Health::status(Healthy));
}

#[test]
fn ingress_needs_an_address() {
    let mut ing = obj(r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: shop, generation: 1}
spec:
  ingressClassName: nginx
  rules:
  - host: shop.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: shop, port: {number: 80}}}}]}
status:
  loadBalancer: {}
"#);
    assert_eq!(builtin(&ing).unwrap().status, Progressing);
    ing["status"]["loadBalancer"]["ingress"] =
        serde_json::json!([{"hostname": "lb-1.example.net"}]);
    assert_eq!(builtin(&ing).unwrap(), Health::status(Healthy));
}

// ---------------------------------------------------------------------------------------------
// HorizontalPodAutoscaler

const HPA_V2: &str = r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: guestbook-ui, namespace: default}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: guestbook-ui}
  minReplicas: 2
  maxReplicas: 10
  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}}]
status:
  currentReplicas: 3
  desiredReplicas: 3
  currentMetrics: [{type: Resource, resource: {name: cpu, current: {averageUtilization: 41, averageValue: 41m}}}]
  conditions:
  - {type: AbleToScale, status: "True", lastTransitionTime: "2026-11-27T10:00:00Z", reason: ReadyForNewScale, message: recommended size matches current size}
  - {type: ScalingActive, status: "True", lastTransitionTime: "2026-11-27T10:00:00Z", reason: ValidMetricFound, message: the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)}
  - {type: ScalingLimited, status: "False", lastTransitionTime: "2026-11-27T10:00:00Z", reason: DesiredWithinRange, message: the desired count is within the acceptable range}
"#;

#[test]
fn hpa_v2_conditions() {
    assert_health(
        HPA_V2,
        Healthy,
        Some("recommended size matches current size"),
    );
    let mut v = obj(HPA_V2);
    v["status"]["conditions"][1] = serde_json::json!({
        "type": "ScalingActive", "status": "False", "reason": "FailedGetResourceMetric",
        "message": "the HPA was unable to compute the replica count: failed to get cpu utilization: missing request for cpu in container guestbook-ui of Pod guestbook-ui-85985d774c-4gq9x"
    });
    let h = builtin(&v).unwrap();
    assert_eq!(h.status, Degraded);
    assert!(h.message.unwrap().contains("missing request for cpu"));

    let mut v = obj(HPA_V2);
    v["status"]["conditions"][0] = serde_json::json!({
        "type": "AbleToScale", "status": "False", "reason": "FailedGetScale",
        "message": "the HPA controller was unable to get the target's current scale: deployments/scale.apps \"guestbook-ui\" not found"
    });
    assert_eq!(builtin(&v).unwrap().status, Degraded);

    // Hitting maxReplicas is a limit working as configured, not a failure.
    let mut v = obj(HPA_V2);
    v["status"]["conditions"][2] = serde_json::json!({
        "type": "ScalingLimited", "status": "True", "reason": "TooManyReplicas",
        "message": "the desired replica count is more than the maximum replica count"
    });
    assert_eq!(builtin(&v).unwrap().status, Healthy);

    let mut v = obj(HPA_V2);
    v["status"] = serde_json::json!({"currentReplicas": 0, "desiredReplicas": 0});
    assert_eq!(
        builtin(&v).unwrap(),
        Health::new(Progressing, "Waiting to Autoscale")
    );
}

#[test]
fn hpa_v1_conditions_from_the_annotation() {
    let v1 = |conditions: &str| {
        let mut v = obj(r#"
apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata:
  name: guestbook-ui
  namespace: default
  annotations: {}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: guestbook-ui}
  minReplicas: 2
  maxReplicas: 10
  targetCPUUtilizationPercentage: 70
status: {currentReplicas: 3, desiredReplicas: 3, currentCPUUtilizationPercentage: 41}
"#);
        v["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/conditions"] =
            conditions.into();
        builtin(&v).unwrap()
    };
    let ok = v1(
        r#"[{"type":"AbleToScale","status":"True","lastTransitionTime":"2026-11-27T10:00:00Z","reason":"SucceededRescale","message":"the HPA controller was able to update the target scale to 3"}]"#,
    );
    assert_eq!(
        ok,
        Health::new(
            Healthy,
            "the HPA controller was able to update the target scale to 3"
        )
    );
    let bad = v1(
        r#"[{"type":"AbleToScale","status":"True","reason":"SucceededGetScale","message":"the HPA controller was able to get the target's current scale"},{"type":"ScalingActive","status":"False","reason":"FailedGetResourceMetric","message":"unable to get metrics for resource cpu: no metrics returned from resource metrics API"}]"#,
    );
    assert_eq!(bad.status, Degraded);
    assert!(bad.message.unwrap().contains("no metrics returned"));
    let broken = v1("not json");
    assert_eq!(broken.status, Unknown);
    assert!(
        broken
            .message
            .unwrap()
            .contains("autoscaling.alpha.kubernetes.io/conditions")
    );
}

// ---------------------------------------------------------------------------------------------
// APIService

#[test]
fn apiservice_availability() {
    let api = |cond: &str| {
        obj(&format!(
            r#"
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: v1beta1.metrics.k8s.io}}
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  insecureSkipTLSVerify: true
  service: {{name: metrics-server, namespace: kube-system, port: 443}}
status:
  conditions: [{cond}]
"#
        ))
    };
    assert_eq!(
        builtin(&api(
            r#"{type: Available, status: "True", lastTransitionTime: "2026-11-27T10:00:00Z", reason: Passed, message: all checks passed}"#
        ))
        .unwrap(),
        Health::new(Healthy, "Passed: all checks passed")
    );
    let h = builtin(&api(
        r#"{type: Available, status: "False", lastTransitionTime: "2026-11-27T10:00:00Z", reason: MissingEndpoints, message: endpoints for service/metrics-server in "kube-system" have no addresses with port name "https"}"#,
    ))
    .unwrap();
    assert_eq!(h.status, Progressing);
    assert!(
        h.message
            .unwrap()
            .starts_with("MissingEndpoints: endpoints")
    );
}

// ---------------------------------------------------------------------------------------------
// No check, ignore annotations, roll-up

#[test]
fn kinds_without_a_check_have_no_health() {
    for doc in [
        "{apiVersion: v1, kind: ConfigMap, metadata: {name: cfg, namespace: default}, data: {a: b}}",
        "{apiVersion: v1, kind: Secret, metadata: {name: s, namespace: default}, type: Opaque, data: {password: aHVudGVyMg==}}",
        "{apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRole, metadata: {name: viewer}, rules: []}",
        "{apiVersion: example.com/v1, kind: Widget, metadata: {name: w}, status: {phase: Broken}}",
        // A Service-like kind in another group is not a Service.
        "{apiVersion: serving.knative.dev/v1, kind: Service, metadata: {name: hello}, spec: {}}",
    ] {
        assert_eq!(builtin(&obj(doc)), None, "{doc}");
        assert_eq!(HealthChecker::new().assess(&obj(doc)), None, "{doc}");
    }
}

#[test]
fn ignore_healthcheck_annotations_exclude_the_object() {
    let checker = HealthChecker::new();
    for ann in [
        "capstan.dev/ignore-healthcheck",
        "argocd.argoproj.io/ignore-healthcheck",
    ] {
        let mut d = obj(DEPLOYMENT_HEALTHY);
        d["metadata"]["generation"] = 9.into();
        assert_eq!(checker.assess(&d).unwrap().status, Progressing);
        d["metadata"]["annotations"][ann] = "true".into();
        assert_eq!(checker.assess(&d), None, "{ann}");
        // The built-in check itself does not read annotations.
        assert!(builtin(&d).is_some());
    }
}

#[test]
fn application_health_is_the_worst_object() {
    let h = |s| Health::status(s);
    assert_eq!(aggregate(&Vec::<Health>::new()), Healthy);
    assert_eq!(aggregate(&[h(Healthy), h(Healthy)]), Healthy);
    assert_eq!(aggregate(&[h(Healthy), h(Suspended)]), Suspended);
    assert_eq!(
        aggregate(&[h(Suspended), h(Progressing), h(Healthy)]),
        Progressing
    );
    assert_eq!(aggregate(&[h(Progressing), h(Missing)]), Missing);
    assert_eq!(aggregate(&[h(Missing), h(Degraded), h(Healthy)]), Degraded);
    assert_eq!(aggregate(&[h(Degraded), h(Unknown)]), Unknown);

    // Objects without health do not count: a ConfigMap does not make an app Healthy or worse.
    let checker = HealthChecker::new();
    let objects = [
        obj("{apiVersion: v1, kind: ConfigMap, metadata: {name: cfg}}"),
        obj(DEPLOYMENT_HEALTHY),
        obj(STS),
    ];
    let healths: Vec<Health> = objects.iter().filter_map(|o| checker.assess(o)).collect();
    assert_eq!(healths.len(), 2);
    assert_eq!(aggregate(&healths), Healthy);
}

#[test]
fn any_object_being_deleted_is_progressing() {
    let mut d = obj(DEPLOYMENT_HEALTHY);
    d["metadata"]["deletionTimestamp"] = "2026-11-27T10:30:00Z".into();
    d["metadata"]["finalizers"] = serde_json::json!(["foregroundDeletion"]);
    assert_eq!(
        HealthChecker::new().assess(&d).unwrap(),
        Health::new(Progressing, "Pending deletion")
    );
}
