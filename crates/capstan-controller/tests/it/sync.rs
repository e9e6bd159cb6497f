//! Applications reconciled from Git end to end: sync status, automated sync of new commits,
//! drift and self-heal, prune rules, bad input.

use crate::common;

use capstan_api::application::{SyncOperation, SyncPolicyAutomated};
use common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automated_app_syncs_follows_commits_and_self_heals() {
    let env = Env::start().await;
    let first = env.commit(
        &[
            ("app/cm.yaml", Some(&cm_yaml("settings", "one"))),
            ("app/svc.yaml", Some(&svc_yaml("web"))),
        ],
        "first",
    );
    env.create_app(
        "guestbook",
        env.spec(
            "app",
            Some(SyncPolicyAutomated {
                prune: false,
                self_heal: true,
                allow_empty: false,
            }),
        ),
    )
    .await;

    let app = env
        .until("guestbook", "Synced+Healthy at the first commit", |a| {
            sync_status(a) == "Synced" && health(a) == "Healthy" && revision(a) == first
        })
        .await;
    let status = app.status.unwrap();
    assert_eq!(status.resources.len(), 2, "{:?}", status.resources);
    assert!(status.resources.iter().all(|r| r.status == "Synced"));
    let svc = status
        .resources
        .iter()
        .find(|r| r.kind == "Service")
        .unwrap();
    assert_eq!(svc.health.as_ref().unwrap().status, "Healthy");
    assert_eq!(status.history.len(), 1);
    assert_eq!(status.history[0].revision, first);
    assert!(status.history[0].initiated_by.automated);
    let op = status.operation_state.unwrap();
    assert_eq!(op.phase, "Succeeded");
    assert!(status.reconciled_at.is_some());
    let cm = env.cm("settings").await;
    assert_eq!(cm_value(cm.as_ref()).as_deref(), Some("one"));
    let tracking = cm
        .unwrap()
        .metadata
        .annotations
        .unwrap()
        .get(capstan_api::annotations::TRACKING_ID)
        .cloned();
    assert_eq!(
        tracking.as_deref(),
        Some("capstan_guestbook:/ConfigMap:demo/settings")
    );

    // A new commit is picked up on refresh and applied.
    let second = env.commit(
        &[("app/cm.yaml", Some(&cm_yaml("settings", "two")))],
        "second",
    );
    env.until_cm("settings", "the second commit's value", |c| {
        cm_value(c).as_deref() == Some("two")
    })
    .await;
    let app = env
        .until("guestbook", "Synced at the second commit", |a| {
            sync_status(a) == "Synced" && revision(a) == second
        })
        .await;
    assert_eq!(app.status.unwrap().history.len(), 2);

    // Drift made by someone else is reverted by self-heal.
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "demo");
    cms.patch(
        "settings",
        &PatchParams::apply("kubectl-edit").force(),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings"}, "data": {"key": "hand-edited"}})),
    )
    .await
    .unwrap();
    env.until_cm("settings", "self-heal to revert the edit", |c| {
        cm_value(c).as_deref() == Some("two")
    })
    .await;
    env.until("guestbook", "Synced after self-heal", |a| {
        sync_status(a) == "Synced"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_app_reports_drift_and_syncs_on_request() {
    let env = Env::start().await;
    let first = env.commit(&[("app/cm.yaml", Some(&cm_yaml("manual", "one")))], "first");
    env.create_app("manual", env.spec("app", None)).await;
    let app = env
        .until("manual", "OutOfSync (not deployed yet)", |a| {
            sync_status(a) == "OutOfSync" && revision(a) == first
        })
        .await;
    let status = app.status.unwrap();
    assert_eq!(status.resources[0].status, "OutOfSync");
    assert_eq!(health(&env.apps.get("manual").await.unwrap()), "Missing");
    // Without automated sync nothing is applied.
    assert!(env.cm("manual").await.is_none());

    capstan_controller::ops::request_sync(&env.apps, "manual", Default::default(), "tester")
        .await
        .unwrap();
    env.until("manual", "Synced after the manual sync", |a| {
        sync_status(a) == "Synced" && a.operation.is_none()
    })
    .await;
    assert_eq!(
        cm_value(env.cm("manual").await.as_ref()).as_deref(),
        Some("one")
    );
    let app = env.apps.get("manual").await.unwrap();
    let history = app.status.unwrap().history;
    assert_eq!(history.len(), 1);
    assert!(!history[0].initiated_by.automated);

    // Drift shows as OutOfSync (no self-heal: it stays).
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "demo");
    cms.patch(
        "manual",
        &PatchParams::apply("kubectl-edit").force(),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "manual"}, "data": {"key": "edited"}})),
    )
    .await
    .unwrap();
    let app = env
        .until("manual", "OutOfSync after the edit", |a| {
            sync_status(a) == "OutOfSync"
        })
        .await;
    assert_eq!(app.status.unwrap().resources[0].status, "OutOfSync");
    assert_eq!(
        cm_value(env.cm("manual").await.as_ref()).as_deref(),
        Some("edited")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_only_when_enabled_and_never_on_an_empty_render_without_allow_empty() {
    let env = Env::start().await;
    env.commit(
        &[
            ("keep/a.yaml", Some(&cm_yaml("keep-a", "1"))),
            ("keep/b.yaml", Some(&cm_yaml("keep-b", "1"))),
            ("prune/a.yaml", Some(&cm_yaml("prune-a", "1"))),
            ("prune/b.yaml", Some(&cm_yaml("prune-b", "1"))),
        ],
        "first",
    );
    let no_prune = SyncPolicyAutomated {
        prune: false,
        self_heal: false,
        allow_empty: false,
    };
    let prune = SyncPolicyAutomated {
        prune: true,
        self_heal: false,
        allow_empty: false,
    };
    env.create_app("keeper", env.spec("keep", Some(no_prune)))
        .await;
    env.create_app("pruner", env.spec("prune", Some(prune)))
        .await;
    for name in ["keeper", "pruner"] {
        env.until(name, "Synced", |a| sync_status(a) == "Synced")
            .await;
    }
    // A file deleted from Git.
    let second = env.commit(&[("keep/b.yaml", None), ("prune/b.yaml", None)], "delete b");
    env.until_cm("prune-b", "the pruning app to delete it", |c| c.is_none())
        .await;
    let keeper = env
        .until("keeper", "the deletion to be seen", |a| {
            revision(a) == second
                && a.status.as_ref().is_some_and(|s| {
                    s.resources
                        .iter()
                        .any(|r| r.name == "keep-b" && r.requires_pruning)
                })
        })
        .await;
    assert_eq!(sync_status(&keeper), "OutOfSync");
    assert!(env.cm("keep-b").await.is_some(), "pruned without prune");

    // Everything deleted from Git: an empty render prunes nothing without allowEmpty.
    let third = env.commit(
        &[("prune/a.yaml", None), ("prune/.keep", Some(""))],
        "empty",
    );
    let pruner = env
        .until("pruner", "the empty render to be tried", |a| {
            revision(a) == third
                && a.status
                    .as_ref()
                    .and_then(|s| s.operation_state.as_ref())
                    .is_some_and(|o| o.phase == "Failed")
        })
        .await;
    let message = pruner.status.unwrap().operation_state.unwrap().message;
    assert!(message.contains("allowEmpty"), "{message}");
    assert!(env.cm("prune-a").await.is_some(), "empty render pruned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_heal_leaves_alone_what_it_may_not_prune() {
    let env = Env::start().await;
    let kept = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: heal-kept\n  annotations:\n    capstan.dev/sync-options: Prune=false\ndata:\n  key: \"1\"\n";
    let first = env.commit(
        &[
            ("heal/a.yaml", Some(&cm_yaml("heal-a", "1"))),
            ("heal/b.yaml", Some(&cm_yaml("heal-b", "1"))),
            ("heal/kept.yaml", Some(kept)),
            ("prune/a.yaml", Some(&cm_yaml("prune-a", "1"))),
            (
                "prune/kept.yaml",
                Some(&kept.replace("heal-kept", "prune-kept")),
            ),
        ],
        "first",
    );
    // Self-heal without prune, and self-heal with prune of an object marked Prune=false: the
    // objects dropped from Git stay, and neither application syncs again and again.
    env.create_app(
        "healer",
        env.spec(
            "heal",
            Some(SyncPolicyAutomated {
                prune: false,
                self_heal: true,
                allow_empty: false,
            }),
        ),
    )
    .await;
    env.create_app(
        "pruner",
        env.spec(
            "prune",
            Some(SyncPolicyAutomated {
                prune: true,
                self_heal: true,
                allow_empty: false,
            }),
        ),
    )
    .await;
    for name in ["healer", "pruner"] {
        env.until(name, "Synced", |a| {
            sync_status(a) == "Synced" && revision(a) == first
        })
        .await;
    }
    let second = env.commit(
        &[
            ("heal/b.yaml", None),
            ("heal/kept.yaml", None),
            ("prune/kept.yaml", None),
        ],
        "drop b and the kept ones",
    );
    for name in ["healer", "pruner"] {
        let seen = env
            .until(name, "the commit compared", |a| revision(a) == second)
            .await;
        // Several refreshes later (one a second), still no sync of the second commit.
        let refreshed = std::sync::Mutex::new(std::collections::BTreeSet::new());
        let app = env
            .until(name, "three more refreshes", |a| {
                let mut refreshed = refreshed.lock().expect("not poisoned");
                if let Some(at) = a.status.as_ref().and_then(|s| s.reconciled_at.clone()) {
                    refreshed.insert(at);
                }
                refreshed.len() > 3
            })
            .await;
        let status = app.status.expect("status");
        assert_eq!(sync_status(&seen), "OutOfSync");
        assert_eq!(status.history.len(), 1, "{name}: {:?}", status.history);
        let last = status.operation_state.expect("the first sync");
        assert_eq!(
            last.sync_result.map(|r| r.revision).as_deref(),
            Some(first.as_str()),
            "{name} synced again: {}",
            last.message
        );
    }
    for cm in ["heal-b", "heal-kept", "prune-kept"] {
        assert!(env.cm(cm).await.is_some(), "{cm} was pruned");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_sync_after_an_automated_one_is_recorded_as_requested() {
    let env = Env::start().await;
    let first = env.commit(&[("app/cm.yaml", Some(&cm_yaml("recorded", "1")))], "first");
    env.create_app(
        "recorded",
        env.spec("app", Some(SyncPolicyAutomated::default())),
    )
    .await;
    let automated = env
        .until("recorded", "the automated sync", |a| {
            a.status
                .as_ref()
                .and_then(|s| s.operation_state.as_ref())
                .is_some_and(|o| o.phase == "Succeeded" && a.operation.is_none())
        })
        .await;
    let recorded = automated.status.unwrap().operation_state.unwrap().operation;
    assert_eq!(recorded.sync.unwrap().revision, first);
    // A person's sync names no revision (the spec's): the record must say so, not keep the
    // automated sync's revision, or whoever waits for this operation never sees it end.
    let written = capstan_controller::ops::request_sync(
        &env.apps,
        "recorded",
        SyncOperation {
            prune: true,
            ..SyncOperation::default()
        },
        "tester",
    )
    .await
    .expect("sync requested");
    let requested = written.operation.expect("the operation as written");
    let app = env
        .until("recorded", "the manual sync recorded", |a| {
            a.operation.is_none()
                && a.status
                    .as_ref()
                    .and_then(|s| s.operation_state.as_ref())
                    .is_some_and(|o| !o.operation.initiated_by.automated && o.phase != "Running")
        })
        .await;
    let state = app.status.unwrap().operation_state.unwrap();
    assert_eq!(state.operation, requested);
    assert_eq!(state.phase, "Succeeded", "{}", state.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_ends_in_a_clear_condition_and_nothing_applied() {
    let env = Env::start().await;
    env.commit(
        &[
            ("broken/good.yaml", Some(&cm_yaml("good", "1"))),
            (
                "broken/bad.yaml",
                Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [oops\n"),
            ),
            ("ok/cm.yaml", Some(&cm_yaml("ok", "1"))),
        ],
        "first",
    );
    let automated = || {
        Some(SyncPolicyAutomated {
            prune: true,
            self_heal: true,
            allow_empty: false,
        })
    };
    env.create_app("missing-path", env.spec("does/not/exist", automated()))
        .await;
    env.create_app("broken", env.spec("broken", automated()))
        .await;
    for (name, needle) in [("missing-path", "does/not/exist"), ("broken", "bad.yaml")] {
        let app = env
            .until(name, "a condition", |a| {
                a.status.as_ref().is_some_and(|s| !s.conditions.is_empty())
            })
            .await;
        let status = app.status.unwrap();
        assert_eq!(status.sync.unwrap().status, "Unknown");
        let c = &status.conditions[0];
        assert_eq!(c.type_, "ComparisonError");
        assert!(c.message.contains(needle), "{name}: {}", c.message);
        assert!(status.history.is_empty());
    }
    assert!(
        env.cm("good").await.is_none(),
        "half-applied a broken render"
    );
}
