//! Refresh triggers and other source kinds: the `capstan.dev/refresh` annotation makes a new
//! commit visible at once (and is removed), and a Kustomize overlay is rendered and deployed.

use crate::common;

use capstan_api::Application;
use capstan_api::application::SyncPolicyAutomated;
use common::*;
use kube::api::PostParams;

fn automated() -> Option<SyncPolicyAutomated> {
    Some(SyncPolicyAutomated {
        prune: true,
        self_heal: false,
        allow_empty: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_annotation_picks_up_a_commit_before_the_interval_and_is_removed() {
    let env = Env::start().await;
    let first = env.commit(&[("app/cm.yaml", Some(&cm_yaml("slow", "one")))], "first");
    // A refresh interval far longer than the test: only the annotation can bring the commit.
    let mut app = Application::new("capstan", "slow", env.spec("app", automated()));
    app.metadata.annotations = Some(
        [(
            capstan_api::annotations::REFRESH_INTERVAL.to_string(),
            "1h".to_string(),
        )]
        .into(),
    );
    env.apps.create(&PostParams::default(), &app).await.unwrap();
    env.until("slow", "the first sync", |a| {
        sync_status(a) == "Synced" && revision(a) == first
    })
    .await;
    let second = env.commit(&[("app/cm.yaml", Some(&cm_yaml("slow", "two")))], "second");
    capstan_controller::ops::refresh(&env.apps, "slow", false)
        .await
        .unwrap();
    let app = env
        .until("slow", "the refresh to see the second commit", |a| {
            revision(a) == second && sync_status(a) == "Synced"
        })
        .await;
    assert_eq!(
        cm_value(env.cm("slow").await.as_ref()).as_deref(),
        Some("two")
    );
    let app = if app.annotation(capstan_api::annotations::REFRESH).is_some() {
        env.until("slow", "the refresh annotation to be removed", |a| {
            a.annotation(capstan_api::annotations::REFRESH).is_none()
        })
        .await
    } else {
        app
    };
    assert!(app.annotation(capstan_api::annotations::REFRESH).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kustomize_overlay_is_rendered_and_deployed() {
    let env = Env::start().await;
    let commit = env.commit(
        &[
            ("base/cm.yaml", Some(&cm_yaml("settings", "base"))),
            ("base/kustomization.yaml", Some("resources:\n- cm.yaml\n")),
            (
                "overlays/prod/kustomization.yaml",
                Some("resources:\n- ../../base\nnamePrefix: prod-\n"),
            ),
        ],
        "kustomize",
    );
    env.create_app("kustomized", env.spec("overlays/prod", automated()))
        .await;
    let app = env
        .until("kustomized", "Synced", |a| {
            sync_status(a) == "Synced" && revision(a) == commit
        })
        .await;
    let status = app.status.unwrap();
    assert_eq!(status.source_type.as_deref(), Some("kustomize"));
    assert_eq!(status.resources[0].name, "prod-settings");
    assert_eq!(
        cm_value(env.cm("prod-settings").await.as_ref()).as_deref(),
        Some("base")
    );
}
