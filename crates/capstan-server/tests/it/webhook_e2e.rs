//! The webhook end to end: a commit in a real Git repository, a signed push delivery to the
//! server, and the running controller deploys the commit long before its refresh interval (one
//! hour), so only the webhook can explain it.

use crate::common;

use capstan_api::application::{SyncPolicy, SyncPolicyAutomated};
use capstan_server::webhook::hmac_sha256;
use capstan_testkit::{GitRepo, temp_dir};
use common::{Env, app};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use serde_json::json;
use std::time::Duration;

fn commit(repo: &GitRepo, value: &str) -> String {
    repo.write(
        "app/cm.yaml",
        &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hooked\ndata:\n  key: \"{value}\"\n"),
    )
    .commit(value)
}

async fn until_revision(env: &Env, want: &str, what: &str) {
    for _ in 0..1200 {
        let a = env.apps().get("hooked").await.unwrap();
        let sync = a.status.as_ref().and_then(|s| s.sync.as_ref());
        if sync.is_some_and(|s| s.status == "Synced" && s.revision == want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = env.apps().get("hooked").await.unwrap();
    panic!("{what}: never Synced at {want}; status {:?}", a.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_webhook_deploys_a_commit_without_waiting_for_the_refresh_interval() {
    let env = Env::start().await;
    let dirs = temp_dir("webhook-e2e");
    let repo = GitRepo::init(dirs.path().join("repo"));
    let first = commit(&repo, "one");

    let config = capstan_controller::Config {
        reconcile_interval: Duration::from_secs(3600),
        cache_dir: dirs.path().join("cache"),
        ..capstan_controller::Config::default()
    };
    let controller = capstan_controller::Controller::new(env.client.clone(), config).unwrap();
    let controller = tokio::spawn(controller.run());

    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "capstan-webhook", "namespace": "capstan"},
        "stringData": {"github": "e2e-s3cret"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), "capstan")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let mut a = app("hooked");
    a.spec.source.repo_url = repo.path().display().to_string();
    a.spec.source.path = "app".into();
    a.spec.sync_policy = Some(SyncPolicy {
        automated: Some(SyncPolicyAutomated {
            prune: true,
            self_heal: false,
            allow_empty: false,
        }),
        ..SyncPolicy::default()
    });
    a.metadata.annotations = Some(
        [(
            capstan_api::annotations::REFRESH_INTERVAL.to_string(),
            "1h".to_string(),
        )]
        .into(),
    );
    env.create_app(&a).await;
    until_revision(&env, &first, "the first sync").await;

    let second = commit(&repo, "two");
    let body = json!({
        "ref": "refs/heads/main",
        "after": second,
        "repository": {
            "html_url": repo.url(),
            "clone_url": format!("{}/.git", repo.url()),
            "default_branch": "main"
        }
    })
    .to_string();
    let r = env
        .http
        .post(env.url("/api/webhook"))
        .header("x-github-event", "push")
        .header(
            "x-hub-signature-256",
            format!(
                "sha256={}",
                hex::encode(hmac_sha256(b"e2e-s3cret", body.as_bytes()))
            ),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(answer["refreshed"], json!(["hooked"]));
    until_revision(&env, &second, "the webhook refresh").await;
    let cm = Api::<ConfigMap>::namespaced(env.client.clone(), "demo")
        .get("hooked")
        .await
        .unwrap();
    assert_eq!(
        cm.data.and_then(|d| d.get("key").cloned()).as_deref(),
        Some("two")
    );
    controller.abort();
    env.stop().await;
}
