//! The API over real HTTP against an in-process devcluster: pagination over 10,000
//! applications, the event stream, Secret masking across every read route, the resource tree,
//! and actions writing what the controller reads.

use crate::common;

use capstan_api::application::Application;
use capstan_server::Access;
use common::{Env, app, concrete};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use kube::api::{Api, ListParams, PostParams};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_walks_10000_applications_without_gaps() {
    // The cache is seeded through the watch's own entry point (replace_all, what the initial
    // list of the Application watch calls): the point is the API's paging, not 10,000 creates.
    let env = Env::start_with(false).await;
    let apps: Vec<Application> = (0..10_000)
        .map(|i: u32| {
            let mut a = app(&format!("app-{i:05}"));
            a.spec.project = format!("team-{}", i % 4);
            a.status = Some(
                serde_json::from_value(json!({
                    "health": {"status": if i.is_multiple_of(10) { "Degraded" } else { "Healthy" }},
                    "sync": {"status": "Synced"}
                }))
                .unwrap(),
            );
            a
        })
        .collect();
    env.server.cache.replace_all(apps);
    env.wait_ready().await;
    let token = env.admin().await;
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/api/v1/applications?limit=1000".to_string();
        if let Some(t) = &next {
            path.push_str(&format!("&continue={t}"));
        }
        let (s, body) = env.get(&token, &path).await;
        assert_eq!(s, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(page["total"], 10_000);
        pages += 1;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_string()),
        );
        match page["continue"].as_str() {
            Some(t) => next = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 10);
    assert_eq!(seen.len(), 10_000);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        10_000,
        "no repeats"
    );
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "pages are in name order");

    // Filters combine with paging; total counts all matches.
    let (_, body) = env
        .get(
            &token,
            "/api/v1/applications?health=Degraded&project=team-0&limit=50",
        )
        .await;
    let page: Value = serde_json::from_str(&body).unwrap();
    // i % 10 == 0 and i % 4 == 0  <=>  i % 20 == 0: 500 applications.
    assert_eq!(page["total"], 500);
    assert_eq!(page["items"].as_array().unwrap().len(), 50);
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["health"] == "Degraded" && i["project"] == "team-0")
    );
    let (_, body) = env
        .get(&token, "/api/v1/applications?search=APP-0999")
        .await;
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["total"], 10, "app-09990 … app-09999");
    // Bad parameters are refused with a message.
    let (s, body) = env.get(&token, "/api/v1/applications?limit=0").await;
    assert_eq!(s, 400, "{body}");
    let (s, body) = env
        .get(&token, "/api/v1/applications?continue=garbage")
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("continue"));
    env.stop().await;
}

/// Reads server-sent events until one named `event` whose data contains `needle`.
async fn next_event(
    resp: &mut reqwest::Response,
    buf: &mut String,
    event: &str,
    needle: &str,
) -> Value {
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut name = "";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n;
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if name == event && data.contains(needle) {
                return serde_json::from_str(&data).unwrap();
            }
        }
        let chunk = resp
            .chunk()
            .await
            .expect("stream readable")
            .expect("stream open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_delivers_status_changes() {
    let env = Env::start().await;
    env.create_app(&app("guestbook")).await;
    let token = env.admin().await;
    let mut resp = env
        .http
        .get(env.url("/api/v1/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    let wait = Duration::from_secs(10);
    tokio::time::timeout(wait, next_event(&mut resp, &mut buf, "ready", ""))
        .await
        .expect("ready event");

    // A status change written to the cluster (as the controller would) reaches the client.
    Api::<Application>::namespaced(env.client.clone(), "capstan")
        .patch_status(
            "guestbook",
            &Default::default(),
            &kube::api::Patch::Merge(json!({"status": {
                "health": {"status": "Degraded", "message": "pod crashed"},
                "sync": {"status": "OutOfSync"},
                "resources": [{"group": "apps", "version": "v1", "kind": "Deployment", "namespace": "demo",
                               "name": "web", "status": "OutOfSync", "health": {"status": "Degraded"}}]}})),
        )
        .await
        .unwrap();
    let updated = tokio::time::timeout(
        wait,
        next_event(&mut resp, &mut buf, "updated", "\"Degraded\""),
    )
    .await
    .expect("updated event");
    assert_eq!(updated["application"]["name"], "guestbook");
    assert_eq!(updated["application"]["health"], "Degraded");
    assert_eq!(updated["application"]["sync"], "OutOfSync");
    let resources = tokio::time::timeout(
        wait,
        next_event(&mut resp, &mut buf, "resources", "guestbook"),
    )
    .await
    .expect("resources event");
    assert_eq!(resources["resources"][0]["health"]["status"], "Degraded");

    // Operation progress: a requested sync shows as Requested.
    let (s, _) = env
        .send(
            &token,
            Method::POST,
            "/api/v1/applications/capstan/guestbook/sync",
            json!({}),
        )
        .await;
    assert_eq!(s, 202);
    let op = tokio::time::timeout(
        wait,
        next_event(&mut resp, &mut buf, "updated", "Requested"),
    )
    .await
    .expect("operation event");
    assert_eq!(op["application"]["operation"]["initiatedBy"], "admin");

    // Added and deleted.
    env.apps()
        .create(&PostParams::default(), &app("second"))
        .await
        .unwrap();
    tokio::time::timeout(wait, next_event(&mut resp, &mut buf, "added", "second"))
        .await
        .expect("added event");
    env.apps()
        .delete("second", &Default::default())
        .await
        .unwrap();
    tokio::time::timeout(wait, next_event(&mut resp, &mut buf, "deleted", "second"))
        .await
        .expect("deleted event");
    env.stop().await;
}

const CANARY: &str = "canary-7f3a9d-do-not-leak";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_secret_value_never_appears_in_any_response() {
    let env = Env::start().await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": "demo", "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration":
                format!("{{\"stringData\":{{\"password\":\"{CANARY}\"}}}}")}},
        "stringData": {"password": CANARY, "url": format!("postgres://u:{CANARY}@db")}
    }))
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), "demo")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "cfg", "namespace": "demo"}, "data": {"k": "v"}}),
    )
    .unwrap();
    Api::<ConfigMap>::namespaced(env.client.clone(), "demo")
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    env.create_app(&app("guestbook")).await;
    env.set_status(
        "guestbook",
        json!({"sync": {"status": "Synced", "revision": "aaa"}, "health": {"status": "Healthy"},
               "resources": [
                   {"group": "", "version": "v1", "kind": "Secret", "namespace": "demo", "name": "db", "status": "Synced"},
                   {"group": "", "version": "v1", "kind": "ConfigMap", "namespace": "demo", "name": "cfg", "status": "Synced"}],
               "history": [{"id": 1, "revision": "aaa", "deployedAt": "2026-01-01T00:00:00Z",
                            "source": {"repoURL": "https://git.example/guestbook.git"}}]}),
    )
    .await;
    let token = env.admin().await;
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(CANARY);
    let mut checked = 0;
    for (method, path, access) in capstan_server::routes() {
        if method != Method::GET || path == "/api/v1/events" || access == Access::Public {
            continue;
        }
        let mut paths = vec![concrete(path, "capstan", "guestbook")];
        if path.ends_with("/manifests") {
            paths = vec![
                format!("{}?kind=Secret&name=db&namespace=demo", paths[0]),
                format!("{}?kind=ConfigMap&name=cfg&namespace=demo", paths[0]),
            ];
        }
        for p in paths {
            let (s, body) = env.get(&token, &p).await;
            // The test application's repository cannot be fetched: the diff says so (422),
            // still without leaking anything.
            let want = if path.ends_with("/diff") { 422 } else { 200 };
            assert_eq!(s, want, "{p}: {body}");
            assert!(
                !body.contains(CANARY) && !body.contains(&encoded),
                "{p} leaks the Secret: {body}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "{checked}");
    // The Secret's manifest is served, with its keys and masked values.
    let (_, body) = env
        .get(
            &token,
            "/api/v1/applications/capstan/guestbook/manifests?kind=Secret&name=db&namespace=demo",
        )
        .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["live"]["data"]["password"], capstan_server::live::MASK);
    assert_eq!(v["live"]["data"]["url"], capstan_server::live::MASK);
    // An object outside the application is never served. (Its repository cannot be fetched,
    // so whether Git has the object cannot be told: the answer says why, with no live side.)
    let (s, body) = env
        .get(&token, "/api/v1/applications/capstan/guestbook/manifests?kind=Secret&name=other&namespace=demo")
        .await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["live"], Value::Null, "{body}");
    assert_eq!(v["desired"], Value::Null, "{body}");
    assert!(
        v["desiredError"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    // The SSE stream carries summaries and status.resources only, never object contents; the
    // list and the event stream are built from the same summaries checked above.
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_tree_shows_replicasets_and_pods_owned_by_a_deployment() {
    let env = Env::start().await;
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(env.client.clone(), "demo")
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    env.create_app(&app("guestbook")).await;
    env.set_status(
        "guestbook",
        json!({"resources": [{"group": "apps", "version": "v1", "kind": "Deployment", "namespace": "demo",
                              "name": "web", "status": "Synced", "health": {"status": "Healthy"}}]}),
    )
    .await;
    let token = env.admin().await;
    let mut last = Value::Null;
    for _ in 0..300 {
        let (s, body) = env
            .get(
                &token,
                "/api/v1/applications/capstan/guestbook/resource-tree",
            )
            .await;
        assert_eq!(s, 200, "{body}");
        last = serde_json::from_str(&body).unwrap();
        let nodes = last["nodes"].as_array().unwrap();
        let pods = nodes.iter().filter(|n| n["kind"] == "Pod").count();
        if pods == 2 {
            let dep = nodes.iter().find(|n| n["kind"] == "Deployment").unwrap();
            let rs = nodes
                .iter()
                .find(|n| n["kind"] == "ReplicaSet")
                .expect("ReplicaSet in the tree");
            assert_eq!(
                rs["parents"][0], dep["uid"],
                "ReplicaSet under the Deployment"
            );
            for pod in nodes.iter().filter(|n| n["kind"] == "Pod") {
                assert_eq!(pod["parents"][0], rs["uid"], "Pod under the ReplicaSet");
                assert!(pod["health"].is_string(), "pods carry health: {pod}");
            }
            assert_eq!(dep["sync"], "Synced");
            env.stop().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("tree never showed 2 pods: {last}");
}

async fn audit_messages(env: &Env) -> Vec<(String, String)> {
    Api::<Event>::namespaced(env.client.clone(), "capstan")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.kind.as_deref() == Some("Application"))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_write_what_the_controller_reads_and_are_audited() {
    let env = Env::start().await;
    env.create_app(&app("guestbook")).await;
    let token = env.admin().await;
    let base = "/api/v1/applications/capstan/guestbook";

    // Sync: operation.sync with the user as initiator.
    let (s, body) = env
        .send(
            &token,
            Method::POST,
            &format!("{base}/sync"),
            json!({"revision": "abc123", "prune": true}),
        )
        .await;
    assert_eq!(s, 202, "{body}");
    let a = env.apps().get("guestbook").await.unwrap();
    let op = a.operation.clone().expect("operation written");
    let sync = op.sync.unwrap();
    assert_eq!(sync.revision, "abc123");
    assert!(sync.prune && !sync.dry_run);
    assert_eq!(op.initiated_by.username, "admin");
    assert!(!op.initiated_by.automated);
    // A second request while one is pending is refused, naming why.
    let (s, body) = env
        .send(&token, Method::POST, &format!("{base}/sync"), json!({}))
        .await;
    assert_eq!(s, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("in progress"));
    // Unknown fields and selective sync are refused, not ignored.
    let (s, _) = env
        .send(
            &token,
            Method::POST,
            &format!("{base}/sync"),
            json!({"revison": "typo"}),
        )
        .await;
    assert_eq!(s, 400);
    // Terminate withdraws the pending request.
    let (s, body) = env
        .send(
            &token,
            Method::DELETE,
            &format!("{base}/operation"),
            json!(null),
        )
        .await;
    assert_eq!(s, 202, "{body}");
    assert!(
        env.apps()
            .get("guestbook")
            .await
            .unwrap()
            .operation
            .is_none()
    );
    let (s, _) = env
        .send(
            &token,
            Method::DELETE,
            &format!("{base}/operation"),
            json!(null),
        )
        .await;
    assert_eq!(s, 409, "nothing left to terminate");

    // Rollback: a sync of the history entry's revision and source, with its id.
    env.set_status(
        "guestbook",
        json!({"sync": {"status": "Synced", "revision": "bbb"},
               "history": [{"id": 1, "revision": "aaa", "deployedAt": "2026-01-01T00:00:00Z",
                            "source": {"repoURL": "https://git.example/guestbook.git", "path": "old"}},
                           {"id": 2, "revision": "bbb", "deployedAt": "2026-01-02T00:00:00Z",
                            "source": {"repoURL": "https://git.example/guestbook.git", "path": "deploy"}}]}),
    )
    .await;
    let (s, body) = env
        .send(&token, Method::POST, &format!("{base}/rollback"), json!({}))
        .await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(body["id"], 1);
    let op = env
        .apps()
        .get("guestbook")
        .await
        .unwrap()
        .operation
        .expect("rollback operation");
    let sync = op.sync.unwrap();
    assert_eq!(sync.rollback_id, Some(1));
    assert_eq!(sync.revision, "aaa");
    assert_eq!(sync.source.unwrap().path, "old");
    let (s, _) = env
        .send(
            &token,
            Method::POST,
            &format!("{base}/rollback"),
            json!({"id": 9}),
        )
        .await;
    assert_eq!(s, 404);
    env.send(
        &token,
        Method::DELETE,
        &format!("{base}/operation"),
        json!(null),
    )
    .await;

    // Lock at the current revision; a sync to another revision is then refused; unlock.
    let (s, body) = env
        .send(&token, Method::POST, &format!("{base}/lock"), json!(null))
        .await;
    assert_eq!(s, 202, "{body}");
    let lock = env
        .apps()
        .get("guestbook")
        .await
        .unwrap()
        .status
        .unwrap()
        .lock
        .expect("locked");
    assert_eq!(lock.revision, "bbb");
    assert_eq!(lock.locked_by, "admin");
    env.wait_cached("guestbook", |a| a.lock().is_some()).await;
    let (s, body) = env
        .send(
            &token,
            Method::POST,
            &format!("{base}/sync"),
            json!({"revision": "ccc"}),
        )
        .await;
    assert_eq!(s, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("locked at bbb"));
    let (s, body) = env
        .send(&token, Method::POST, &format!("{base}/unlock"), json!(null))
        .await;
    assert_eq!(s, 202, "{body}");
    let a = env.apps().get("guestbook").await.unwrap();
    assert!(a.lock().is_none());
    assert_eq!(
        a.annotation(capstan_api::annotations::REFRESH),
        Some("normal"),
        "unlock asks for a refresh"
    );

    // Refresh, auto-sync.
    let (s, _) = env
        .send(
            &token,
            Method::POST,
            &format!("{base}/refresh"),
            json!({"hard": true}),
        )
        .await;
    assert_eq!(s, 202);
    let a = env.apps().get("guestbook").await.unwrap();
    assert_eq!(
        a.annotation(capstan_api::annotations::REFRESH),
        Some("hard")
    );
    let (s, _) = env
        .send(
            &token,
            Method::PUT,
            &format!("{base}/auto-sync"),
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(s, 202);
    let a = env.apps().get("guestbook").await.unwrap();
    assert!(a.spec.sync_policy.unwrap().automated.is_some());
    let (s, _) = env
        .send(
            &token,
            Method::PUT,
            &format!("{base}/auto-sync"),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(s, 202);
    let a = env.apps().get("guestbook").await.unwrap();
    assert!(a.spec.sync_policy.and_then(|p| p.automated).is_none());

    // Every action left an Event on the Application naming the user.
    let events = audit_messages(&env).await;
    for (reason, text) in [
        (
            "SyncRequested",
            "user admin requested sync to abc123 with prune",
        ),
        ("OperationTerminated", "user admin terminated the operation"),
        (
            "RollbackRequested",
            "user admin requested rollback to history 1 (revision aaa)",
        ),
        ("Locked", "user admin locked the application at bbb"),
        ("Unlocked", "user admin unlocked the application"),
        ("RefreshRequested", "user admin requested a hard refresh"),
        ("AutoSyncEnabled", "user admin enabled automated sync"),
        ("AutoSyncDisabled", "user admin disabled automated sync"),
    ] {
        assert!(
            events
                .iter()
                .any(|(r, m)| r == reason && m.starts_with(text)),
            "no {reason} event {text:?} in {events:?}"
        );
    }
    // The events route of the application returns them.
    let (_, body) = env.get(&token, &format!("{base}/events")).await;
    assert!(body.contains("RollbackRequested"), "{body}");
    // Actions on a missing application are 404.
    let (s, _) = env
        .send(
            &token,
            Method::POST,
            "/api/v1/applications/capstan/nope/sync",
            json!({}),
        )
        .await;
    assert_eq!(s, 404);
    env.stop().await;
}
