//! Selective sync (`operation.sync.resources[]`) and terminating a running operation, end to
//! end on the devcluster.

use crate::common;

use capstan_api::application::{Application, OperationState, SyncOperation, SyncOperationResource};
use capstan_controller::ops;
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams};

fn state(app: &Application) -> OperationState {
    app.status
        .as_ref()
        .and_then(|s| s.operation_state.clone())
        .expect("an operation state")
}

fn history_len(app: &Application) -> usize {
    app.status.as_ref().map_or(0, |s| s.history.len())
}

fn configmap(name: &str) -> SyncOperationResource {
    SyncOperationResource {
        group: String::new(),
        kind: "ConfigMap".into(),
        name: name.into(),
        namespace: String::new(),
    }
}

/// Requests a sync and waits until the controller finished it (each test requests distinct
/// operations, so the operation recorded tells this one from the previous one).
async fn sync_and_wait(env: &Env, name: &str, sync: SyncOperation) -> Application {
    ops::request_sync(&env.apps, name, sync.clone(), "tester")
        .await
        .unwrap();
    env.until(name, "the requested sync to finish", |a| {
        a.operation.is_none()
            && a.status
                .as_ref()
                .and_then(|s| s.operation_state.as_ref())
                .is_some_and(|o| {
                    o.finished_at.is_some()
                        && o.phase != "Running"
                        && o.operation.sync.as_ref() == Some(&sync)
                })
    })
    .await
}

const HOOK: &str = "apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
  annotations:
    argocd.argoproj.io/hook: PreSync
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: example.invalid/migrate:1
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selective_sync_applies_and_prunes_only_the_listed_objects_without_hooks_or_history() {
    let env = Env::start().await;
    env.commit(
        &[
            ("app/a.yaml", Some(&cm_yaml("a", "one"))),
            ("app/b.yaml", Some(&cm_yaml("b", "one"))),
            ("app/c.yaml", Some(&cm_yaml("c", "one"))),
            ("app/d.yaml", Some(&cm_yaml("d", "one"))),
            ("app/hook.yaml", Some(HOOK)),
        ],
        "first",
    );
    env.create_app("picky", env.spec("app", None)).await;
    env.until("picky", "the first comparison", |a| {
        !sync_status(a).is_empty()
    })
    .await;
    let app = sync_and_wait(&env, "picky", SyncOperation::default()).await;
    assert_eq!(state(&app).phase, "Succeeded", "{}", state(&app).message);
    assert_eq!(history_len(&app), 1);
    // The full sync ran the hook; remove its Job so that a run of it would show.
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), "demo");
    assert!(jobs.get_opt("migrate").await.unwrap().is_some());
    jobs.delete("migrate", &DeleteParams::background())
        .await
        .unwrap();
    while jobs.get_opt("migrate").await.unwrap().is_some() {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // a and b change, c and d are deleted from Git.
    let second = env.commit(
        &[
            ("app/a.yaml", Some(&cm_yaml("a", "two"))),
            ("app/b.yaml", Some(&cm_yaml("b", "two"))),
            ("app/c.yaml", None),
            ("app/d.yaml", None),
        ],
        "second",
    );
    env.until("picky", "OutOfSync at the second commit", |a| {
        sync_status(a) == "OutOfSync" && revision(a) == second
    })
    .await;
    let app = sync_and_wait(
        &env,
        "picky",
        SyncOperation {
            prune: true,
            resources: vec![
                configmap("a"),
                SyncOperationResource {
                    namespace: "demo".into(),
                    ..configmap("c")
                },
            ],
            ..SyncOperation::default()
        },
    )
    .await;
    let op = state(&app);
    assert_eq!(op.phase, "Succeeded", "{}", op.message);
    let touched: Vec<(String, String)> = op
        .sync_result
        .as_ref()
        .unwrap()
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.status.clone()))
        .collect();
    assert_eq!(
        touched,
        vec![
            ("a".to_string(), "Synced".to_string()),
            ("c".to_string(), "Pruned".to_string())
        ]
    );
    assert_eq!(cm_value(env.cm("a").await.as_ref()).as_deref(), Some("two"));
    assert_eq!(cm_value(env.cm("b").await.as_ref()).as_deref(), Some("one"));
    env.until_cm("c", "c pruned", |c| c.is_none()).await;
    assert!(env.cm("d").await.is_some(), "d pruned though not listed");
    assert!(
        jobs.get_opt("migrate").await.unwrap().is_none(),
        "a selective sync ran the PreSync hook"
    );
    // Not recorded in history, and the application is still OutOfSync (b, d).
    assert_eq!(history_len(&app), 1);
    let app = env
        .until("picky", "the comparison after the sync", |a| {
            a.status
                .as_ref()
                .is_some_and(|s| s.resources.iter().all(|r| r.name != "c"))
        })
        .await;
    assert_eq!(sync_status(&app), "OutOfSync");
    let status = app.status.unwrap();
    let of = |name: &str| {
        status
            .resources
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.status.clone())
    };
    assert_eq!(of("a").as_deref(), Some("Synced"));
    assert_eq!(of("b").as_deref(), Some("OutOfSync"));
    assert_eq!(of("d").as_deref(), Some("OutOfSync"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selective_sync_naming_an_unknown_object_fails_and_applies_nothing() {
    let env = Env::start().await;
    env.commit(&[("app/a.yaml", Some(&cm_yaml("a", "one")))], "first");
    env.create_app("strict", env.spec("app", None)).await;
    env.until("strict", "the first comparison", |a| {
        !sync_status(a).is_empty()
    })
    .await;
    let app = sync_and_wait(
        &env,
        "strict",
        SyncOperation {
            resources: vec![configmap("a"), configmap("nope")],
            ..SyncOperation::default()
        },
    )
    .await;
    let op = state(&app);
    assert_eq!(op.phase, "Failed");
    assert!(op.message.contains(":ConfigMap:nope"), "{}", op.message);
    assert!(!op.message.contains(":ConfigMap:a"), "{}", op.message);
    assert!(env.cm("a").await.is_none(), "a applied by a failed sync");
    assert_eq!(history_len(&app), 0);
}

fn deployment(name: &str, image: &str, wave: i32) -> String {
    // No progressDeadlineSeconds: a crash-looping Deployment stays Progressing (not Degraded)
    // for ten minutes, so the sync waits on it.
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  annotations:
    capstan.dev/sync-wave: \"{wave}\"
spec:
  replicas: 1
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_a_sync_stuck_in_a_wave_stops_it_before_the_next_wave() {
    let env = Env::start().await;
    env.commit(
        &[
            (
                "app/stuck.yaml",
                Some(&deployment("stuck", "example.invalid/app:fail", 0)),
            ),
            (
                "app/later.yaml",
                Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: later\n  annotations:\n    capstan.dev/sync-wave: \"1\"\ndata:\n  key: v\n"),
            ),
        ],
        "first",
    );
    env.create_app("stuck", env.spec("app", None)).await;
    env.until("stuck", "the first comparison", |a| {
        !sync_status(a).is_empty()
    })
    .await;
    // Nothing to terminate yet.
    let err = ops::terminate(&env.apps, "stuck").await.unwrap_err();
    assert!(err.to_string().contains("no operation"), "{err}");
    ops::request_sync(&env.apps, "stuck", SyncOperation::default(), "tester")
        .await
        .unwrap();
    // Wave 0 applied, the sync waiting for it to become Healthy.
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), "demo");
    env.until("stuck", "the sync running in wave 0", |a| {
        a.status
            .as_ref()
            .and_then(|s| s.operation_state.as_ref())
            .is_some_and(|o| o.phase == "Running" && o.message.contains("wave 0"))
    })
    .await;
    while deployments.get_opt("stuck").await.unwrap().is_none() {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        ops::terminate(&env.apps, "stuck").await.unwrap(),
        ops::Terminated::Terminating
    );
    let app = env
        .until("stuck", "the sync to stop", |a| {
            a.status
                .as_ref()
                .and_then(|s| s.operation_state.as_ref())
                .is_some_and(|o| o.phase != "Running" && o.phase != "Terminating")
        })
        .await;
    let op = state(&app);
    assert_eq!(op.phase, "Failed");
    assert_eq!(op.message, "Operation terminated");
    assert!(op.finished_at.is_some());
    assert_eq!(history_len(&app), 0);
    assert!(
        env.cm("later").await.is_none(),
        "wave 1 applied after terminate"
    );
    // The operation is cleared, so a new one may be requested, and it is not retried.
    env.until("stuck", "the operation cleared", |a| a.operation.is_none())
        .await;
    assert!(
        env.cm("later").await.is_none(),
        "wave 1 applied after terminate"
    );

    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.client.clone(), "capstan");
    let list = events.list(&Default::default()).await.unwrap();
    assert!(
        list.items.iter().any(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("stuck")
                && e.reason.as_deref() == Some("OperationTerminated")
                && e.note.as_deref().is_some_and(|n| n.contains("tester"))
        }),
        "{:#?}",
        list.items
            .iter()
            .map(|e| (e.reason.clone(), e.note.clone()))
            .collect::<Vec<_>>()
    );
}
