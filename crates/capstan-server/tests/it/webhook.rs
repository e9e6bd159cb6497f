//! `POST /api/webhook` over real HTTP against the server and an in-process devcluster: signed
//! pushes refresh exactly the applications following the pushed repository and ref, and every
//! unverifiable delivery is refused without touching anything; every delivery is counted in
//! `capstan_webhook_requests_total`.

use crate::common;

use capstan_api::annotations as ann;
use capstan_api::application::Application;
use capstan_server::webhook::hmac_sha256;
use common::{Env, app};
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

/// Creates `capstan-webhook` with the given provider keys.
async fn webhook_secret(env: &Env, keys: &[(&str, &str)]) {
    let data: serde_json::Map<String, Value> = keys
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "capstan-webhook", "namespace": "capstan"},
        "stringData": data,
    }))
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), "capstan")
        .create(&PostParams::default(), &secret)
        .await
        .expect("webhook Secret created");
}

async fn create(env: &Env, name: &str, repo: &str, revision: &str) {
    let mut a = app(name);
    a.spec.source.repo_url = repo.into();
    a.spec.source.target_revision = revision.into();
    env.create_app(&a).await;
}

/// The refresh annotation of every application, by name.
async fn refresh_marks(env: &Env) -> Vec<(String, Option<String>)> {
    let mut out: Vec<_> = env
        .apps()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|a: Application| {
            let mark = a
                .metadata
                .annotations
                .as_ref()
                .and_then(|m| m.get(ann::REFRESH).cloned());
            (a.metadata.name.unwrap_or_default(), mark)
        })
        .collect();
    out.sort();
    out
}

fn refreshed_names(marks: &[(String, Option<String>)]) -> Vec<&str> {
    marks
        .iter()
        .filter(|(_, m)| m.as_deref() == Some("normal"))
        .map(|(n, _)| n.as_str())
        .collect()
}

async fn post(env: &Env, headers: &[(&str, String)], body: &[u8]) -> (u16, Value) {
    let mut req = env
        .http
        .post(env.url("/api/webhook"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `capstan_webhook_requests_total{provider, result}` as scraped from the metrics listener
/// (0 when the series has not appeared yet).
async fn webhook_count(env: &Env, provider: &str, result: &str) -> u64 {
    let text = env
        .http
        .get(format!("{}/metrics", env.metrics_base))
        .send()
        .await
        .expect("metrics scraped")
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("# TYPE capstan_webhook_requests_total counter\n"),
        "{text}"
    );
    let series =
        format!("capstan_webhook_requests_total{{provider=\"{provider}\",result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |n| n.parse().expect("a counter value"))
}

fn github_push(reference: &str) -> Vec<u8> {
    json!({
        "ref": reference,
        "after": "0123456789abcdef0123456789abcdef01234567",
        "repository": {
            "full_name": "acme/shop",
            "html_url": "https://github.com/acme/shop",
            "clone_url": "https://github.com/Acme/Shop.git",
            "ssh_url": "git@github.com:acme/shop.git",
            "default_branch": "main"
        }
    })
    .to_string()
    .into_bytes()
}

fn github_headers(event: &str, secret: &[u8], body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("x-github-event", event.to_string()),
        ("x-github-delivery", "1".to_string()),
        (
            "x-hub-signature-256",
            format!("sha256={}", hex::encode(hmac_sha256(secret, body))),
        ),
    ]
}

fn sorted(v: &Value) -> Vec<String> {
    let mut names: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("a list of names: {v}"))
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_github_push_refreshes_only_the_apps_on_that_repo_and_branch() {
    let env = Env::start().await;
    webhook_secret(&env, &[("github", "gh-s3cret")]).await;
    // The SSH spelling and the HEAD-follower must match the HTTPS URL the payload reports.
    create(&env, "shop-main", "git@github.com:acme/shop.git", "main").await;
    create(&env, "shop-head", "https://github.com/acme/shop", "HEAD").await;
    create(
        &env,
        "shop-release",
        "https://github.com/acme/shop.git",
        "release",
    )
    .await;
    create(
        &env,
        "other-main",
        "https://github.com/acme/other.git",
        "main",
    )
    .await;
    let body = github_push("refs/heads/main");

    // Wrong secret, tampered body and no signature: 401, nothing written.
    let (s, b) = post(&env, &github_headers("push", b"wrong", &body), &body).await;
    assert_eq!(s, 401, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("x-hub-signature-256"),
        "{b}"
    );
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let (s, _) = post(
        &env,
        &github_headers("push", b"gh-s3cret", &body),
        &tampered,
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = post(&env, &[("x-github-event", "push".into())], &body).await;
    assert_eq!(s, 401);
    let marks = refresh_marks(&env).await;
    assert!(refreshed_names(&marks).is_empty(), "{marks:?}");
    assert_eq!(webhook_count(&env, "github", "unauthorized").await, 3);
    assert_eq!(webhook_count(&env, "github", "refreshed").await, 0);

    // Ping: verified, answered, nothing refreshed.
    let ping = br#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#;
    let (s, b) = post(&env, &github_headers("ping", b"gh-s3cret", ping), ping).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["refreshed"], json!([]));
    let marks = refresh_marks(&env).await;
    assert!(refreshed_names(&marks).is_empty(), "{marks:?}");

    // The signed push.
    let (s, b) = post(&env, &github_headers("push", b"gh-s3cret", &body), &body).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(sorted(&b["refreshed"]), ["shop-head", "shop-main"]);
    let marks = refresh_marks(&env).await;
    assert_eq!(
        refreshed_names(&marks),
        ["shop-head", "shop-main"],
        "{marks:?}"
    );
    assert_eq!(
        webhook_count(&env, "github", "ignored").await,
        1,
        "the ping"
    );
    assert_eq!(webhook_count(&env, "github", "refreshed").await, 1);
    assert_eq!(webhook_count(&env, "github", "unauthorized").await, 3);

    // Audited on each refreshed application, and only there.
    let events = Api::<Event>::namespaced(env.client.clone(), "capstan")
        .list(&ListParams::default())
        .await
        .unwrap();
    let mut audited: Vec<String> = events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("WebhookRefresh"))
        .map(|e| e.involved_object.name.clone().unwrap_or_default())
        .collect();
    audited.sort();
    assert_eq!(audited, ["shop-head", "shop-main"]);
    let message = events
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("WebhookRefresh"))
        .and_then(|e| e.message.clone())
        .unwrap_or_default();
    assert!(message.contains("refs/heads/main"), "{message}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_generate_paths_limit_a_push_to_the_applications_whose_paths_it_changed() {
    let env = Env::start().await;
    webhook_secret(&env, &[("github", "gh-s3cret")]).await;
    for (name, path, annotation) in [
        ("web", "apps/web", Some((ann::MANIFEST_GENERATE_PATHS, "."))),
        (
            "api",
            "apps/api",
            Some((ann::ARGOCD_MANIFEST_GENERATE_PATHS, ".;../../lib")),
        ),
        (
            "base",
            "apps/base",
            Some((ann::MANIFEST_GENERATE_PATHS, "/shared")),
        ),
        ("every", "apps/every", None),
    ] {
        let mut a = app(name);
        a.spec.source.repo_url = "https://github.com/acme/shop.git".into();
        a.spec.source.target_revision = "main".into();
        a.spec.source.path = path.into();
        if let Some((key, value)) = annotation {
            a.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(key.to_string(), value.to_string());
        }
        env.create_app(&a).await;
    }
    let push = |files: Value| {
        let mut body: Value = serde_json::from_slice(&github_push("refs/heads/main")).unwrap();
        body["commits"] = files;
        body.to_string().into_bytes()
    };

    // Files under apps/web only: the app of that path, and the one without the annotation.
    let body = push(json!([
        {"added": ["apps/web/new.yaml"], "modified": [], "removed": []},
        {"added": [], "modified": ["apps/web/deploy.yaml"], "removed": ["README.md"]},
    ]));
    let (s, b) = post(&env, &github_headers("push", b"gh-s3cret", &body), &body).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(sorted(&b["refreshed"]), ["every", "web"]);
    let marks = refresh_marks(&env).await;
    assert_eq!(refreshed_names(&marks), ["every", "web"], "{marks:?}");

    // A root path (`/shared`) and a relative one climbing to the root (`../../lib`).
    let body = push(
        json!([{"added": [], "modified": ["shared/x.yaml", "lib/y.libsonnet"], "removed": []}]),
    );
    let (s, b) = post(&env, &github_headers("push", b"gh-s3cret", &body), &body).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(sorted(&b["refreshed"]), ["api", "base", "every"]);

    // A payload listing no files says nothing about paths: every application of the branch.
    let body = push(json!([]));
    let (s, b) = post(&env, &github_headers("push", b"gh-s3cret", &body), &body).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(sorted(&b["refreshed"]), ["api", "base", "every", "web"]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_tokens_and_gitea_signatures_are_verified() {
    let env = Env::start().await;
    webhook_secret(&env, &[("gitlab", "gl-token"), ("gitea", "gt-s3cret")]).await;
    create(
        &env,
        "gl-dev",
        "https://gitlab.example/group/sub/app.git",
        "dev",
    )
    .await;
    create(
        &env,
        "gl-main",
        "https://gitlab.example/group/sub/app.git",
        "main",
    )
    .await;
    create(&env, "gt-v1", "git@gitea.example:org/app.git", "v1.2.0").await;
    create(&env, "gt-range", "https://gitea.example/org/app", "^1.0").await;
    create(&env, "gt-main", "https://gitea.example/org/app", "main").await;

    let gitlab = json!({
        "object_kind": "push",
        "ref": "refs/heads/dev",
        "project": {
            "web_url": "https://gitlab.example/group/sub/app",
            "git_http_url": "https://gitlab.example/group/sub/app.git",
            "git_ssh_url": "git@gitlab.example:group/sub/app.git",
            "default_branch": "main"
        }
    })
    .to_string()
    .into_bytes();
    let (s, b) = post(
        &env,
        &[
            ("x-gitlab-event", "Push Hook".into()),
            ("x-gitlab-token", "gl-tokem".into()),
        ],
        &gitlab,
    )
    .await;
    assert_eq!(s, 401, "{b}");
    assert!(refreshed_names(&refresh_marks(&env).await).is_empty());
    let (s, b) = post(
        &env,
        &[
            ("x-gitlab-event", "Push Hook".into()),
            ("x-gitlab-token", "gl-token".into()),
        ],
        &gitlab,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(sorted(&b["refreshed"]), ["gl-dev"]);

    // A Gitea tag push (Gitea also sends X-GitHub-Event; its own header decides).
    let gitea = json!({
        "ref": "refs/tags/v1.2.0",
        "repository": {
            "html_url": "https://gitea.example/org/app",
            "clone_url": "https://gitea.example/org/app.git",
            "ssh_url": "git@gitea.example:org/app.git",
            "default_branch": "main"
        }
    })
    .to_string()
    .into_bytes();
    let bad = hex::encode(hmac_sha256(b"gl-token", &gitea));
    let good = hex::encode(hmac_sha256(b"gt-s3cret", &gitea));
    let headers = |sig: &str| {
        vec![
            ("x-gitea-event", "push".to_string()),
            ("x-github-event", "push".to_string()),
            ("x-gitea-signature", sig.to_string()),
        ]
    };
    let (s, _) = post(&env, &headers(&bad), &gitea).await;
    assert_eq!(s, 401);
    assert_eq!(refreshed_names(&refresh_marks(&env).await), ["gl-dev"]);
    let (s, b) = post(&env, &headers(&good), &gitea).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(sorted(&b["refreshed"]), ["gt-range", "gt-v1"]);
    assert_eq!(
        refreshed_names(&refresh_marks(&env).await),
        ["gl-dev", "gt-range", "gt-v1"]
    );
    for provider in ["gitlab", "gitea"] {
        assert_eq!(webhook_count(&env, provider, "unauthorized").await, 1);
        assert_eq!(webhook_count(&env, provider, "refreshed").await, 1);
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfigured_providers_unknown_senders_and_malformed_payloads_are_refused() {
    let env = Env::start().await;
    create(&env, "shop-main", "https://github.com/acme/shop", "main").await;
    let body = github_push("refs/heads/main");

    // No Secret at all: refused even with a signature (of some secret).
    let (s, b) = post(&env, &github_headers("push", b"", &body), &body).await;
    assert_eq!(s, 401, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("capstan-webhook"),
        "{b}"
    );

    // A Secret without this provider's key: still refused.
    webhook_secret(&env, &[("gitlab", "gl-token")]).await;
    let (s, b) = post(&env, &github_headers("push", b"gl-token", &body), &body).await;
    assert_eq!(s, 401, "{b}");
    assert!(b["error"].as_str().unwrap().contains("github"), "{b}");
    assert!(refreshed_names(&refresh_marks(&env).await).is_empty());

    // No provider header: 400 naming the headers looked for.
    let (s, b) = post(&env, &[], &body).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("X-Gitlab-Event"),
        "{b}"
    );

    // A verified but malformed payload: 400 with the reason.
    let (s, b) = post(
        &env,
        &[
            ("x-gitlab-event", "Push Hook".into()),
            ("x-gitlab-token", "gl-token".into()),
        ],
        b"{\"ref\": \"refs/heads/main\", ",
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(b["error"].as_str().unwrap().contains("JSON"), "{b}");
    let (s, b) = post(
        &env,
        &[
            ("x-gitlab-event", "Push Hook".into()),
            ("x-gitlab-token", "gl-token".into()),
        ],
        br#"{"ref": "refs/heads/main"}"#,
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(b["error"].as_str().unwrap().contains("project"), "{b}");

    // Over the body limit: refused before anything is read.
    let big = vec![b' '; capstan_server::webhook::BODY_LIMIT + 1];
    let (s, _) = post(
        &env,
        &[
            ("x-gitlab-event", "Push Hook".into()),
            ("x-gitlab-token", "gl-token".into()),
        ],
        &big,
    )
    .await;
    assert_eq!(s, 413);
    assert!(refreshed_names(&refresh_marks(&env).await).is_empty());

    assert_eq!(webhook_count(&env, "github", "unauthorized").await, 2);
    assert_eq!(webhook_count(&env, "unknown", "invalid").await, 1);
    // The two malformed payloads; the oversized body never reached the handler.
    assert_eq!(webhook_count(&env, "gitlab", "invalid").await, 2);
    assert_eq!(webhook_count(&env, "github", "refreshed").await, 0);
    env.stop().await;
}
