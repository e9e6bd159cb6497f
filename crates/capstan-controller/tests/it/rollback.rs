//! Rollback and lock end to end: a rollback deploys the previous revision and locks; new
//! commits then change nothing (even across a controller restart); a manual sync to another
//! revision is refused; unlock lets automated sync bring the latest commit back.

use crate::common;

use capstan_api::application::{Operation, SyncOperation, SyncPolicyAutomated};
use capstan_controller::ops;
use common::*;
use kube::api::{Patch, PatchParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_locks_until_unlocked_and_survives_a_restart() {
    let mut env = Env::start().await;
    let first = env.commit(&[("app/cm.yaml", Some(&cm_yaml("cfg", "one")))], "first");
    env.create_app(
        "shop",
        env.spec(
            "app",
            Some(SyncPolicyAutomated {
                prune: true,
                self_heal: true,
                allow_empty: false,
            }),
        ),
    )
    .await;
    env.until("shop", "first sync", |a| {
        sync_status(a) == "Synced" && revision(a) == first
    })
    .await;
    let second = env.commit(&[("app/cm.yaml", Some(&cm_yaml("cfg", "two")))], "second");
    env.until("shop", "second sync", |a| {
        sync_status(a) == "Synced"
            && revision(a) == second
            && a.status.as_ref().is_some_and(|s| s.history.len() == 2)
    })
    .await;

    // Roll back to the previous entry.
    let (entry, _) = ops::rollback(&env.apps, "shop", None, "alice")
        .await
        .unwrap();
    assert_eq!(entry.id, 0);
    assert_eq!(entry.revision, first);
    let app = env
        .until("shop", "the rollback to lock", |a| a.lock().is_some())
        .await;
    let lock = app.lock().unwrap();
    assert_eq!(lock.revision, first);
    assert_eq!(lock.locked_by, "alice");
    assert_eq!(lock.history_id, Some(0));
    assert_eq!(
        cm_value(env.cm("cfg").await.as_ref()).as_deref(),
        Some("one")
    );
    let history = app.status.as_ref().unwrap().history.clone();
    assert_eq!(history.len(), 3);
    assert_eq!(history[2].revision, first);
    assert_eq!(history[2].initiated_by.username, "alice");

    // A new commit is seen but changes nothing.
    let third = env.commit(&[("app/cm.yaml", Some(&cm_yaml("cfg", "three")))], "third");
    let app = env
        .until("shop", "the third commit to be compared", |a| {
            revision(a) == third
        })
        .await;
    assert_eq!(sync_status(&app), "OutOfSync");
    assert_eq!(
        cm_value(env.cm("cfg").await.as_ref()).as_deref(),
        Some("one")
    );

    // A manual sync to another revision is refused by the CLI…
    let err = ops::request_sync(
        &env.apps,
        "shop",
        SyncOperation {
            revision: third.clone(),
            ..SyncOperation::default()
        },
        "alice",
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("locked"), "{err}");
    // …and by the controller when the request is written directly.
    let op = Operation {
        sync: Some(SyncOperation {
            revision: third.clone(),
            ..SyncOperation::default()
        }),
        ..Operation::default()
    };
    env.apps
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({ "operation": op })),
        )
        .await
        .unwrap();
    let app = env
        .until("shop", "the direct sync request to be refused", |a| {
            a.operation.is_none()
                && a.status
                    .as_ref()
                    .and_then(|s| s.operation_state.as_ref())
                    .is_some_and(|o| {
                        o.phase == "Failed"
                            && o.operation
                                .sync
                                .as_ref()
                                .is_some_and(|s| s.revision == third)
                    })
        })
        .await;
    let message = app.status.unwrap().operation_state.unwrap().message;
    assert!(message.contains("locked"), "{message}");
    assert_eq!(
        cm_value(env.cm("cfg").await.as_ref()).as_deref(),
        Some("one")
    );

    // The lock survives a controller restart: after a fresh refresh by the new controller the
    // cluster is still at the rolled-back revision.
    env.stop_controller();
    let seen = env
        .apps
        .get("shop")
        .await
        .unwrap()
        .status
        .unwrap()
        .reconciled_at;
    env.start_controller();
    ops::refresh(&env.apps, "shop", false).await.unwrap();
    let app = env
        .until("shop", "a refresh by the restarted controller", |a| {
            a.annotation(capstan_api::annotations::REFRESH).is_none()
                && a.status.as_ref().and_then(|s| s.reconciled_at.clone()) != seen
        })
        .await;
    assert!(app.lock().is_some());
    assert_eq!(
        cm_value(env.cm("cfg").await.as_ref()).as_deref(),
        Some("one")
    );

    // Unlock: automated sync brings the latest commit back.
    assert!(ops::unlock(&env.apps, "shop", "alice").await.unwrap());
    env.until_cm("cfg", "the latest commit after unlock", |c| {
        cm_value(c).as_deref() == Some("three")
    })
    .await;
    let app = env
        .until("shop", "Synced at the latest commit", |a| {
            sync_status(a) == "Synced" && revision(a) == third
        })
        .await;
    assert!(app.lock().is_none());

    // Events on the Application record the story with its initiators.
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(env.client.clone(), "capstan");
    let list = events.list(&Default::default()).await.unwrap();
    let notes: Vec<(String, String)> = list
        .items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("shop"))
        .map(|e| {
            (
                e.reason.clone().unwrap_or_default(),
                e.note.clone().unwrap_or_default(),
            )
        })
        .collect();
    let has =
        |reason: &str, needle: &str| notes.iter().any(|(r, n)| r == reason && n.contains(needle));
    assert!(has("OperationStarted", "automated sync"), "{notes:#?}");
    assert!(
        has("OperationCompleted", "rollback to history entry 0"),
        "{notes:#?}"
    );
    assert!(has("Locked", "by alice"), "{notes:#?}");
    assert!(has("OperationRefused", "locked"), "{notes:#?}");
    assert!(has("Unlocked", "unlocked by alice"), "{notes:#?}");
}
