//! Phases and waves on the devcluster's simulated workloads: a PreSync Job completes before the
//! objects are applied, wave 1 waits for wave 0 to be Healthy, and a crash-looping image makes
//! the application Degraded with the sync reporting it and later waves left alone.

use crate::common;

use common::*;

const HOOK: &str = "apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
  annotations:
    argocd.argoproj.io/hook: PreSync
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: example.invalid/migrate:1
";

fn deployment(name: &str, image: &str, wave: i32) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  annotations:
    capstan.dev/sync-wave: \"{wave}\"
spec:
  replicas: 1
  progressDeadlineSeconds: 3
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: main
        image: {image}
"
    )
}

fn cm_in_wave(name: &str, wave: i32) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  annotations:\n    capstan.dev/sync-wave: \"{wave}\"\ndata:\n  key: v\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presync_hook_then_waves_in_order_until_healthy() {
    let env = Env::start().await;
    env.commit(
        &[
            ("app/hook.yaml", Some(HOOK)),
            (
                "app/web.yaml",
                Some(&deployment("web", "example.invalid/web:1", 0)),
            ),
            ("app/after.yaml", Some(&cm_in_wave("after", 1))),
        ],
        "first",
    );
    env.create_app("layered", env.spec("app", None)).await;
    env.until("layered", "the first comparison", |a| {
        !sync_status(a).is_empty()
    })
    .await;
    capstan_controller::ops::request_sync(&env.apps, "layered", Default::default(), "tester")
        .await
        .unwrap();
    let app = env
        .until("layered", "the sync to finish", |a| {
            a.operation.is_none()
                && a.status
                    .as_ref()
                    .and_then(|s| s.operation_state.as_ref())
                    .is_some_and(|o| o.phase != "Running")
        })
        .await;
    let state = app
        .status
        .as_ref()
        .unwrap()
        .operation_state
        .clone()
        .unwrap();
    assert_eq!(state.phase, "Succeeded", "{}", state.message);
    let order: Vec<(String, String, i32)> = state
        .sync_result
        .unwrap()
        .resources
        .iter()
        .map(|r| (r.sync_phase.clone(), r.name.clone(), r.wave))
        .collect();
    assert_eq!(
        order,
        vec![
            ("PreSync".to_string(), "migrate".to_string(), 0),
            ("Sync".to_string(), "web".to_string(), 0),
            ("Sync".to_string(), "after".to_string(), 1),
        ]
    );
    let app = env
        .until("layered", "Synced and Healthy", |a| {
            sync_status(a) == "Synced" && health(a) == "Healthy"
        })
        .await;
    // The hook is not part of the application's resources.
    let resources = app.status.unwrap().resources;
    assert!(
        resources.iter().all(|r| r.name != "migrate"),
        "{resources:?}"
    );
    assert_eq!(resources.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_image_degrades_the_app_and_fails_the_sync_before_later_waves() {
    let env = Env::start().await;
    env.commit(
        &[
            (
                "app/bad.yaml",
                Some(&deployment("bad", "example.invalid/app:fail", 0)),
            ),
            ("app/later.yaml", Some(&cm_in_wave("later", 1))),
        ],
        "first",
    );
    env.create_app("broken-image", env.spec("app", None)).await;
    env.until("broken-image", "the first comparison", |a| {
        !sync_status(a).is_empty()
    })
    .await;
    capstan_controller::ops::request_sync(&env.apps, "broken-image", Default::default(), "tester")
        .await
        .unwrap();
    let app = env
        .until("broken-image", "the sync to fail", |a| {
            a.operation.is_none()
                && a.status
                    .as_ref()
                    .and_then(|s| s.operation_state.as_ref())
                    .is_some_and(|o| o.phase != "Running")
        })
        .await;
    let state = app
        .status
        .as_ref()
        .unwrap()
        .operation_state
        .clone()
        .unwrap();
    assert_eq!(state.phase, "Failed");
    assert!(
        state.message.contains("Deployment demo/bad is Degraded"),
        "{}",
        state.message
    );
    assert!(
        env.cm("later").await.is_none(),
        "wave 1 applied after a failed wave 0"
    );
    env.until("broken-image", "Degraded health", |a| {
        health(a) == "Degraded"
    })
    .await;
    assert!(app.status.unwrap().history.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_automated_sync_is_retried_up_to_the_retry_limit() {
    let env = Env::start().await;
    env.commit(
        &[
            (
                "app/bad.yaml",
                Some(&deployment("bad", "example.invalid/app:fail", 0)),
            ),
            ("app/later.yaml", Some(&cm_in_wave("later", 1))),
        ],
        "first",
    );
    let mut spec = env.spec(
        "app",
        Some(capstan_api::application::SyncPolicyAutomated {
            prune: false,
            self_heal: false,
            allow_empty: false,
        }),
    );
    if let Some(policy) = spec.sync_policy.as_mut() {
        policy.retry = Some(capstan_api::application::RetryStrategy {
            limit: 2,
            backoff: Some(capstan_api::application::Backoff {
                duration: Some("1s".into()),
                factor: Some(1),
                max_duration: Some("1s".into()),
            }),
        });
    }
    env.create_app("retried", spec).await;
    let app = env
        .until("retried", "the second retry to fail", |a| {
            a.status
                .as_ref()
                .and_then(|s| s.operation_state.as_ref())
                .is_some_and(|o| o.retry_count == 2 && o.phase == "Failed")
        })
        .await;
    let state = app
        .status
        .as_ref()
        .unwrap()
        .operation_state
        .clone()
        .unwrap();
    assert!(state.operation.initiated_by.automated);
    assert!(state.message.contains("Degraded"), "{}", state.message);
    assert!(app.status.unwrap().history.is_empty());
    assert!(env.cm("later").await.is_none());
}
