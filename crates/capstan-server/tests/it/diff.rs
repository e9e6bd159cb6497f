//! The diff and the desired manifests over HTTP, end to end: a devcluster, a real Git
//! repository on disk, the controller (deploying the first commit) and the API server given the
//! controller's handle. What a user sees: no differences once synced; a ConfigMap changed in Git
//! shows its old and new lines; a changed Secret is listed but its values appear nowhere; an
//! older commit can be diffed; a broken manifest is a 422 naming the file.

use crate::common;

use capstan_api::application::{SyncPolicy, SyncPolicyAutomated};
use capstan_controller::manifests::{Handle, ObjectId};
use capstan_testkit::{GitRepo, start_cluster, wait_for_app};
use common::app;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tokio::sync::oneshot;

const OLD_SECRET: &str = "first-s3cret-d1ff-value";
const NEW_SECRET: &str = "second-s3cret-d1ff-value";

/// Writes the ConfigMap and the Secret with these values and commits them.
fn commit(repo: &GitRepo, key: &str, password: &str) -> String {
    repo.write(
        "app/cm.yaml",
        &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  key: {key}\n  other: same\n"),
    )
    .write(
        "app/secret.yaml",
        &format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: {password}\n"),
    )
    .commit(key)
}

struct Setup {
    _cluster: devcluster::DevCluster,
    client: kube::Client,
    base: String,
    http: reqwest::Client,
    token: String,
    handle: Handle,
    _stop: oneshot::Sender<()>,
    controller: tokio::task::JoinHandle<()>,
}

impl Setup {
    async fn start(cache: &Path) -> Setup {
        let cluster = start_cluster(&["capstan", "demo"]).await;
        let client = cluster.client();
        let controller = capstan_controller::Controller::new(
            client.clone(),
            capstan_controller::Config {
                reconcile_interval: Duration::from_secs(3600),
                cache_dir: cache.to_path_buf(),
                ..capstan_controller::Config::default()
            },
        )
        .unwrap();
        let handle = Handle::from(controller.shared());
        let controller = tokio::spawn(controller.run());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = capstan_server::serve(
            capstan_server::Config {
                listen: "127.0.0.1:0".parse().unwrap(),
                insecure_cookies: true,
                controller: Some(handle.clone()),
                ..capstan_server::Config::default()
            },
            client.clone(),
            async move {
                let _ = stopped.await;
            },
        )
        .await
        .expect("server starts");
        let base = format!("http://{}", server.addr);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let password = server.initial_admin_password.clone().unwrap();
        let r = http
            .post(format!("{base}/api/v1/session"))
            .json(&json!({"username": "admin", "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let token = r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        // Dropping the handle leaves the server's task running; dropping `stop` ends it.
        drop(server);
        Setup {
            _cluster: cluster,
            client,
            base,
            http,
            token,
            handle,
            _stop: stop,
            controller,
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

const DIFF: &str = "/api/v1/applications/capstan/settings/diff";
const MANIFESTS: &str = "/api/v1/applications/capstan/settings/manifests";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_diff_shows_what_git_changed_and_never_a_secret_value() {
    let dirs = tempfile::tempdir().unwrap();
    let repo = GitRepo::init(dirs.path().join("repo"));
    let first = commit(&repo, "old", OLD_SECRET);
    let env = Setup::start(&dirs.path().join("cache")).await;
    let apps: Api<capstan_api::application::Application> =
        Api::namespaced(env.client.clone(), "capstan");

    // Deployed by automated sync, which is then switched off.
    let mut a = app("settings");
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
    apps.create(&PostParams::default(), &a).await.unwrap();
    wait_for_app(&apps, "settings", "the first commit Synced", |a| {
        a.status
            .as_ref()
            .and_then(|s| s.sync.as_ref())
            .is_some_and(|s| s.status == "Synced" && s.revision == first)
    })
    .await;
    apps.patch(
        "settings",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"syncPolicy": null}})),
    )
    .await
    .unwrap();

    // Synced: no differences; with all=true every object, Synced.
    let d = env.get_json(DIFF).await;
    assert_eq!(d["revision"], first.as_str());
    assert_eq!(d["items"], json!([]), "{d}");
    let all = env.get_json(&format!("{DIFF}?all=true")).await;
    let kinds: Vec<(&str, &str)> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["kind"].as_str().unwrap(), i["status"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, vec![("ConfigMap", "Synced"), ("Secret", "Synced")]);

    // A new commit changes the ConfigMap and the Secret; nothing syncs it.
    let second = commit(&repo, "new", NEW_SECRET);
    let (status, body) = env.get(DIFF).await;
    assert_eq!(status, 200, "{body}");
    let d: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["revision"], second.as_str());
    let items = d["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{d}");
    let cm = &items[0];
    assert_eq!(
        (&cm["kind"], &cm["namespace"], &cm["name"], &cm["status"]),
        (
            &json!("ConfigMap"),
            &json!("demo"),
            &json!("settings"),
            &json!("OutOfSync")
        )
    );
    assert_eq!(cm["hook"], false);
    let unified = cm["unified"].as_str().unwrap();
    let lines: Vec<&str> = unified.lines().collect();
    assert!(lines.contains(&"-  key: old"), "{unified}");
    assert!(lines.contains(&"+  key: new"), "{unified}");
    assert!(!lines.contains(&"-  other: same"), "{unified}");
    let secret = &items[1];
    assert_eq!(
        (&secret["kind"], &secret["status"]),
        (&json!("Secret"), &json!("OutOfSync"))
    );
    assert!(
        secret["unified"].as_str().unwrap().contains("password"),
        "the changed key is named: {secret}"
    );
    assert_no_secret(&body);

    // The application's status agrees once the controller compares again.
    apps.patch(
        "settings",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"capstan.dev/refresh": "normal"}}})),
    )
    .await
    .unwrap();
    let mut agrees = false;
    for _ in 0..600 {
        let s = apps
            .get("settings")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        if s.sync.as_ref().is_some_and(|s| s.revision == second) {
            let out: Vec<&str> = s
                .resources
                .iter()
                .filter(|r| r.status != "Synced")
                .map(|r| r.kind.as_str())
                .collect();
            assert_eq!(out, vec!["ConfigMap", "Secret"]);
            agrees = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(agrees, "the controller never compared the second commit");

    // The older commit is what is deployed: no differences there.
    let d = env.get_json(&format!("{DIFF}?revision={first}")).await;
    assert_eq!(d["revision"], first.as_str());
    assert_eq!(d["items"], json!([]), "{d}");

    // Manifests: both sides, Secrets masked.
    let m = env
        .get_json(&format!(
            "{MANIFESTS}?kind=ConfigMap&name=settings&namespace=demo"
        ))
        .await;
    assert_eq!(m["live"]["data"]["key"], "old");
    assert_eq!(m["desired"]["data"]["key"], "new");
    assert_eq!(m["desired"]["metadata"]["namespace"], "demo");
    let (status, body) = env
        .get(&format!(
            "{MANIFESTS}?kind=Secret&name=creds&namespace=demo"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let m: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        m["live"]["data"]["password"],
        capstan_server::live::MASK,
        "{m}"
    );
    assert_eq!(
        m["desired"]["stringData"]["password"],
        capstan_server::live::MASK,
        "{m}"
    );
    assert_no_secret(&body);
    let (status, _) = env
        .get(&format!(
            "{MANIFESTS}?kind=Secret&name=other&namespace=demo"
        ))
        .await;
    assert_eq!(status, 404);

    // The controller's own reads agree.
    let app_now = apps.get("settings").await.unwrap();
    let live = env
        .handle
        .live_object(
            &app_now,
            &ObjectId {
                group: String::new(),
                kind: "ConfigMap".into(),
                namespace: "demo".into(),
                name: "settings".into(),
            },
        )
        .await
        .unwrap()
        .expect("the ConfigMap is live");
    assert_eq!(live["data"]["key"], "old");

    // A broken manifest: 422 naming the file; nothing else.
    repo.write(
        "app/broken.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed\n",
    )
    .commit("broken");
    let (status, body) = env.get(DIFF).await;
    assert_eq!(status, 422, "{body}");
    let e: Value = serde_json::from_str(&body).unwrap();
    let message = e["error"].as_str().unwrap();
    assert!(message.contains("broken.yaml"), "{message}");
    assert!(message.contains("capstan/settings"), "{message}");
    assert_no_secret(&body);
    // The live manifest is still served, with the reason the desired one is not.
    let m = env
        .get_json(&format!(
            "{MANIFESTS}?kind=ConfigMap&name=settings&namespace=demo"
        ))
        .await;
    assert_eq!(m["live"]["data"]["key"], "old");
    assert_eq!(m["desired"], Value::Null);
    assert!(
        m["desiredError"].as_str().unwrap().contains("broken.yaml"),
        "{m}"
    );
    // An object the cluster does not have: whether Git has it cannot be told, and the answer
    // says why instead of a 404.
    let m = env
        .get_json(&format!(
            "{MANIFESTS}?kind=ConfigMap&name=not-deployed&namespace=demo"
        ))
        .await;
    assert_eq!(m["live"], Value::Null);
    assert_eq!(m["desired"], Value::Null);
    assert!(
        m["desiredError"].as_str().unwrap().contains("broken.yaml"),
        "{m}"
    );
    // An older commit still diffs.
    let d = env.get_json(&format!("{DIFF}?revision={second}")).await;
    assert_eq!(d["items"].as_array().unwrap().len(), 2);
    // A revision that does not exist is a 422 naming it.
    let (status, body) = env.get(&format!("{DIFF}?revision=no-such-branch")).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("no-such-branch"), "{body}");
    // An unknown application is a 404.
    let (status, _) = env.get("/api/v1/applications/capstan/nope/diff").await;
    assert_eq!(status, 404);
    env.controller.abort();
}

fn assert_no_secret(body: &str) {
    use base64::Engine as _;
    for value in [OLD_SECRET, NEW_SECRET] {
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        assert!(
            !body.contains(value) && !body.contains(&encoded),
            "a Secret value leaks: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_controller_the_diff_and_manifests_answer_503() {
    let env = common::Env::start_without_controller().await;
    env.create_app(&app("alone")).await;
    let token = env.admin().await;
    for path in [
        "/api/v1/applications/capstan/alone/diff",
        "/api/v1/applications/capstan/alone/manifests?kind=ConfigMap&name=x&namespace=demo",
    ] {
        let (status, body) = env.get(&token, path).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert!(body.contains("without the controller"), "{body}");
    }
    env.stop().await;
}
