//! The web UI in a real headless Chromium (through chromedriver), against the real API server,
//! the real controller, an in-process devcluster and a real Git repository: log in, see the
//! applications, open one, watch its tree turn Healthy without a reload, sync, roll back (the
//! application locks), see a new commit held back, unlock, see the latest commit applied.
//!
//! Screenshots of each step go to `target/ui-artifacts/`. Without Chromium the test says so
//! and passes, unless `CI` is set: then it fails (scripts/setup installs Chromium).

use crate::ui_server;
use crate::webdriver;

use capstan_api::application::{
    Application, ApplicationDestination, ApplicationSource, ApplicationSpec, SyncPolicy,
    SyncPolicyAutomated,
};
use capstan_testkit::{GitRepo, start_cluster, wait_for_app};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use ui_server::UiServer;
use webdriver::{Browser, Driver, Session, artifacts_dir};

/// Commits a Deployment `web` (image tag `tag`) and a ConfigMap `web-settings` (`release:
/// tag`) under `app/`; returns the commit.
fn commit_release(repo: &GitRepo, tag: &str) -> String {
    repo.write(
        "app/deploy.yaml",
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  \
             selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        \
             app: web\n    spec:\n      containers:\n      - name: web\n        image: example.invalid/web:{tag}\n"
        ),
    )
    .write(
        "app/settings.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-settings\ndata:\n  release: \"{tag}\"\n"
        ),
    )
    .commit(&format!("release {tag}"))
}

/// Creates the application under test, `capstan/web` on the repository's `app` directory,
/// compared every second so that new commits show up without waiting for the default interval.
async fn create_web(apps: &Api<Application>, repo: &GitRepo, automated: bool) {
    let mut web = Application::new("capstan", "web", spec(repo, "app", automated));
    web.metadata.annotations = Some(
        [(
            capstan_api::annotations::REFRESH_INTERVAL.to_string(),
            "1s".to_string(),
        )]
        .into(),
    );
    apps.create(&PostParams::default(), &web)
        .await
        .expect("create web");
}

fn spec(repo: &GitRepo, path: &str, automated: bool) -> ApplicationSpec {
    ApplicationSpec {
        project: "default".into(),
        source: ApplicationSource {
            repo_url: repo.path().display().to_string(),
            target_revision: "main".into(),
            path: path.into(),
            ..ApplicationSource::default()
        },
        destination: ApplicationDestination {
            server: Some("https://kubernetes.default.svc".into()),
            name: None,
            namespace: "demo".into(),
        },
        sync_policy: automated.then(|| SyncPolicy {
            automated: Some(SyncPolicyAutomated {
                prune: true,
                self_heal: true,
                allow_empty: false,
            }),
            ..SyncPolicy::default()
        }),
        ignore_differences: Vec::new(),
        revision_history_limit: None,
    }
}

async fn release_in_cluster(client: &kube::Client) -> Option<String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "demo");
    cms.get_opt("web-settings")
        .await
        .expect("read ConfigMap")
        .and_then(|c| c.data)
        .and_then(|d| d.get("release").cloned())
}

fn synced_revision(app: &Application) -> String {
    app.status
        .as_ref()
        .and_then(|s| s.sync.as_ref())
        .map(|s| s.revision.clone())
        .unwrap_or_default()
}

struct Shots {
    dir: PathBuf,
    n: usize,
}

impl Shots {
    async fn take(&mut self, s: &Session, name: &str) {
        self.n += 1;
        let path = self.dir.join(format!("browser-{:02}-{name}.png", self.n));
        s.screenshot(&path).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sync_rollback_lock_and_unlock_from_the_browser() {
    let Some(browser) =
        Browser::find_or_skip("login_sync_rollback_lock_and_unlock_from_the_browser")
    else {
        return;
    };

    // The cluster, the CRD, namespaces, a Git repository with a first release.
    let cluster = start_cluster(&["capstan", "demo"]).await;
    let client = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let repo = GitRepo::init(work.path().join("repo"));
    let first = commit_release(&repo, "v1");

    // The application under test (automated, self-heal) and a few neighbours for the list.
    let apps: Api<Application> = Api::namespaced(client.clone(), "capstan");
    create_web(&apps, &repo, true).await;
    for name in ["billing", "catalog", "search"] {
        let other = Application::new("capstan", name, spec(&repo, "missing-path", false));
        apps.create(&PostParams::default(), &other)
            .await
            .expect("create neighbour");
    }

    // The API server (plain HTTP on localhost: cookies without Secure).
    let ui = UiServer::start(&client, None).await;
    let (base, password) = (ui.base.clone(), ui.password.clone());

    let driver = Driver::start(&browser).await;
    let profile = tempfile::tempdir().unwrap();
    let s = driver.session(&browser, profile.path(), (1400, 1600)).await;
    let mut shots = Shots {
        dir: artifacts_dir(),
        n: 0,
    };

    // Log in: a wrong password is refused with a message, the right one opens the list.
    s.goto(&format!("{base}/")).await;
    let user = s.find("#username").await;
    s.type_text(&user, "admin").await;
    s.type_text(&s.find("#password").await, "not-the-password")
        .await;
    s.click_css("#login-submit").await;
    s.wait_for(
        "the login error",
        "document.querySelector('#login-error').textContent.includes('Wrong username or password')",
    )
    .await;
    shots.take(&s, "login-refused").await;
    s.type_text(&s.find("#password").await, &password).await;
    s.click_css("#login-submit").await;

    // The list shows every application with badges that carry text, not only colour.
    s.find("#apps tbody tr[data-app='capstan/web']").await;
    s.wait_for(
        "four applications listed",
        "document.querySelectorAll('#apps tbody tr').length === 4",
    )
    .await;
    let names = s
        .exec(
            "return [...document.querySelectorAll('#apps tbody tr a.app-link')].map(a => a.textContent);",
            vec![],
        )
        .await;
    assert_eq!(names, json!(["billing", "catalog", "search", "web"]));
    let badge = s
        .exec(
            "const b = document.querySelector(\"tr[data-app='capstan/web'] .badge[data-kind=health]\"); \
             return b && b.textContent;",
            vec![],
        )
        .await;
    assert!(
        badge.as_str().is_some_and(|t| !t.trim().is_empty()),
        "{badge}"
    );
    // Search narrows the list through the API.
    s.type_text(&s.find("#search").await, "cata").await;
    s.wait_for(
        "the search to leave only catalog",
        "(() => { const r = [...document.querySelectorAll('#apps tbody tr')]; \
           return r.length === 1 && r[0].dataset.app === 'capstan/catalog'; })()",
    )
    .await;
    s.clear(&s.find("#search").await).await;
    s.type_text(&s.find("#search").await, " ").await;
    s.wait_for(
        "the full list again",
        "document.querySelectorAll('#apps tbody tr').length === 4",
    )
    .await;
    shots.take(&s, "list").await;

    // Open the application. The controller is not running yet: nothing is Healthy.
    s.click_css("tr[data-app='capstan/web'] a.app-link").await;
    s.find("#resource-tree").await;
    s.exec("window.__sameDocument = true; return true;", vec![])
        .await;
    let healthy_before = s
        .exec(
            "return document.querySelectorAll('#resource-tree [data-kind=Deployment][data-health=Healthy]').length;",
            vec![],
        )
        .await;
    assert_eq!(healthy_before, json!(0));
    shots.take(&s, "app-before-controller").await;

    // Start the controller: the page follows the event stream, without a reload.
    let cache = tempfile::tempdir().unwrap();
    let controller = capstan_controller::Controller::new(
        client.clone(),
        capstan_controller::Config {
            reconcile_interval: Duration::from_secs(2),
            self_heal_backoff: Duration::from_millis(200),
            wave_timeout: Duration::from_secs(60),
            cache_dir: cache.path().to_path_buf(),
            ..capstan_controller::Config::default()
        },
    )
    .expect("controller");
    let controller = tokio::spawn(controller.run());
    s.wait_for(
        "the Deployment, its ReplicaSet and Pods to show Healthy in the tree",
        "document.querySelector('#resource-tree [data-kind=Deployment][data-name=web][data-health=Healthy]') \
         && document.querySelectorAll('#resource-tree [data-kind=ReplicaSet][data-health=Healthy]').length >= 1 \
         && document.querySelectorAll('#resource-tree [data-kind=Pod][data-health=Healthy]').length === 2",
    )
    .await;
    s.wait_for(
        "the app to show Synced and Healthy at the first commit",
        &format!(
            "document.querySelector('#app-sync .badge').dataset.status === 'Synced' \
             && document.querySelector('#app-health .badge').dataset.status === 'Healthy' \
             && document.querySelector('#synced-revision').dataset.revision === '{first}'"
        ),
    )
    .await;
    assert_eq!(
        s.exec("return window.__sameDocument === true;", vec![])
            .await,
        json!(true)
    );
    shots.take(&s, "app-healthy").await;

    // Click Sync: a manual sync by admin runs and succeeds.
    let history_before = apps.get("web").await.unwrap().status.unwrap().history.len();
    s.click_css("#sync-button").await;
    let app = wait_for_app(&apps, "web", "the manual sync to be recorded", |a| {
        a.status.as_ref().is_some_and(|st| {
            st.history.len() > history_before
                && st
                    .history
                    .last()
                    .is_some_and(|h| h.initiated_by.username == "admin")
        })
    })
    .await;
    assert_eq!(synced_revision(&app), first);
    s.wait_for(
        "the operation to show Succeeded, started by admin",
        "(() => { const p = document.querySelector('#op-phase'); \
           return p && p.dataset.phase === 'Succeeded' && p.textContent.includes('admin'); })()",
    )
    .await;
    shots.take(&s, "synced-by-admin").await;

    // A second release is applied automatically and shows up live.
    let second = commit_release(&repo, "v2");
    s.wait_for(
        "the second commit to be deployed",
        &format!("document.querySelector('#synced-revision').dataset.revision === '{second}'"),
    )
    .await;
    assert_eq!(release_in_cluster(&client).await.as_deref(), Some("v2"));

    // Roll back to the first release through the history table's button and its dialog.
    let first_entry = app
        .status
        .as_ref()
        .unwrap()
        .history
        .iter()
        .find(|h| h.revision == first)
        .expect("a history entry of the first commit")
        .id;
    s.wait_for(
        "a Rollback button on the first release's entry",
        &format!("document.querySelector(\"button.rollback[data-history-id='{first_entry}']\")"),
    )
    .await;
    s.click_css(&format!("button.rollback[data-history-id='{first_entry}']"))
        .await;
    s.wait_for(
        "the confirm dialog",
        "document.querySelector('#confirm').open",
    )
    .await;
    shots.take(&s, "rollback-confirm").await;
    s.click_css("#confirm-ok").await;
    s.wait_for(
        "the LOCKED banner naming the first commit and admin",
        &format!(
            "(() => {{ const b = document.querySelector('#locked-banner'); \
               return b && b.getAttribute('role') === 'alert' && b.textContent.includes('LOCKED') \
                 && b.textContent.includes('admin') && b.textContent.includes('{}'); }})()",
            &first[..8]
        ),
    )
    .await;
    let locked = wait_for_app(&apps, "web", "the lock", |a| a.lock().is_some()).await;
    assert_eq!(locked.lock().unwrap().revision, first);
    assert_eq!(locked.lock().unwrap().locked_by, "admin");
    assert_eq!(release_in_cluster(&client).await.as_deref(), Some("v1"));
    shots.take(&s, "locked").await;

    // A new commit is compared but not applied while locked.
    let third = commit_release(&repo, "v3");
    wait_for_app(&apps, "web", "the third commit to be compared", |a| {
        synced_revision(a) == third
    })
    .await;
    s.wait_for(
        "OutOfSync while locked",
        "document.querySelector('#app-sync .badge').dataset.status === 'OutOfSync' \
         && document.querySelector('#locked-banner')",
    )
    .await;
    assert_eq!(release_in_cluster(&client).await.as_deref(), Some("v1"));
    shots.take(&s, "locked-new-commit-held").await;

    // Unlock (confirmed): automated sync brings the latest commit.
    s.click_css("#unlock-button").await;
    s.wait_for(
        "the confirm dialog",
        "document.querySelector('#confirm').open",
    )
    .await;
    s.click_css("#confirm-ok").await;
    s.wait_for(
        "the banner to go and the latest commit to be Synced",
        "!document.querySelector('#locked-banner') \
         && document.querySelector('#app-sync .badge').dataset.status === 'Synced'",
    )
    .await;
    wait_for_app(&apps, "web", "Synced at the third commit", |a| {
        a.lock().is_none()
            && synced_revision(a) == third
            && a.status
                .as_ref()
                .and_then(|s| s.sync.as_ref())
                .is_some_and(|s| s.status == "Synced")
    })
    .await;
    assert_eq!(release_in_cluster(&client).await.as_deref(), Some("v3"));
    s.wait_for(
        "the page to show the third commit",
        &format!("document.querySelector('#synced-revision').dataset.revision === '{third}'"),
    )
    .await;
    // Still the same document: every change above arrived over the event stream.
    assert_eq!(
        s.exec("return window.__sameDocument === true;", vec![])
            .await,
        json!(true)
    );
    shots.take(&s, "unlocked-latest").await;

    // Audit: the actions are Events naming the user, and the page lists them.
    s.wait_for(
        "the audit events in the Events panel",
        "document.querySelector('#events') && document.querySelector('#events').textContent.includes('admin')",
    )
    .await;

    // Log out: back to the login form, and the API refuses the old cookie.
    s.click_css("#logout").await;
    s.find("#login-submit").await;
    let status: Value = s
        .exec(
            "return fetch('/api/v1/applications').then(r => r.status);",
            vec![],
        )
        .await;
    assert_eq!(status, json!(401));

    s.quit().await;
    controller.abort();
    ui.stop().await;
}

/// The diff view: with auto-sync off, a commit that changes a ConfigMap's value makes the open
/// Diff panel (following the event stream, no reload) list the ConfigMap as OutOfSync with its
/// old value on a `-` line and the new one on a `+` line, marked by text as well as colour;
/// the object's live and desired manifests show side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_panel_shows_a_new_commits_change_live() {
    let Some(browser) = Browser::find_or_skip("diff_panel_shows_a_new_commits_change_live") else {
        return;
    };
    let cluster = start_cluster(&["capstan", "demo"]).await;
    let client = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let repo = GitRepo::init(work.path().join("repo"));
    let first = commit_release(&repo, "v1");

    // Auto-sync off: a new commit is compared, never applied by itself.
    let apps: Api<Application> = Api::namespaced(client.clone(), "capstan");
    create_web(&apps, &repo, false).await;

    // The controller, and the server answering the diff through the controller's handle.
    let cache = tempfile::tempdir().unwrap();
    let controller = capstan_controller::Controller::new(
        client.clone(),
        capstan_controller::Config {
            reconcile_interval: Duration::from_secs(2),
            wave_timeout: Duration::from_secs(60),
            cache_dir: cache.path().to_path_buf(),
            ..capstan_controller::Config::default()
        },
    )
    .expect("controller");
    let handle = capstan_controller::manifests::Handle::from(controller.shared());
    let ui = UiServer::start(&client, Some(handle)).await;
    let (base, password) = (ui.base.clone(), ui.password.clone());
    let controller = tokio::spawn(controller.run());

    let driver = Driver::start(&browser).await;
    let profile = tempfile::tempdir().unwrap();
    let s = driver.session(&browser, profile.path(), (1400, 1600)).await;
    let mut shots = Shots {
        dir: artifacts_dir(),
        n: 100,
    };
    s.goto(&format!("{base}/#/apps/capstan/web")).await;
    s.type_text(&s.find("#username").await, "admin").await;
    s.type_text(&s.find("#password").await, &password).await;
    s.click_css("#login-submit").await;

    // Deploy the first commit by hand, then open the Diff panel: nothing differs.
    s.click_css("#sync-button").await;
    wait_for_app(&apps, "web", "the first commit Synced", |a| {
        synced_revision(a) == first
            && a.status
                .as_ref()
                .and_then(|s| s.sync.as_ref())
                .is_some_and(|s| s.status == "Synced")
    })
    .await;
    assert_eq!(release_in_cluster(&client).await.as_deref(), Some("v1"));
    s.exec("window.__sameDocument = true; return true;", vec![])
        .await;
    s.wait_for(
        "the page to show Synced at the first commit",
        &format!(
            "document.querySelector('#app-sync .badge').dataset.status === 'Synced' \
             && document.querySelector('#synced-revision').dataset.revision === '{first}'"
        ),
    )
    .await;
    let toggle = s.find("#diff-toggle").await;
    assert_eq!(
        s.property(&toggle, "ariaExpanded").await,
        Some(json!("false"))
    );
    // Keyboard: focus the toggle and press Enter, as a keyboard user opens it.
    s.exec(
        "document.querySelector('#diff-toggle').focus(); return true;",
        vec![],
    )
    .await;
    s.keys("\u{E007}").await;
    s.wait_for(
        "the open Diff panel to say nothing differs",
        "document.querySelector('#diff-toggle').getAttribute('aria-expanded') === 'true' \
         && document.querySelector('#diff-empty') \
         && !document.querySelector('#diff-body').hidden",
    )
    .await;

    // A new commit changes the ConfigMap's value: the open panel follows without a reload.
    let second = commit_release(&repo, "v2");
    wait_for_app(&apps, "web", "the second commit compared, OutOfSync", |a| {
        a.status
            .as_ref()
            .and_then(|s| s.sync.as_ref())
            .is_some_and(|s| s.status == "OutOfSync" && s.revision == second)
    })
    .await;
    let item = "#diff-list details[data-object='/ConfigMap/demo/web-settings']";
    s.wait_for(
        "the ConfigMap listed as OutOfSync in the Diff panel",
        &format!(
            "(() => {{ const d = document.querySelector(\"{item}\"); \
               return d && d.querySelector('summary .badge[data-kind=sync]').dataset.status === 'OutOfSync' \
                 && d.querySelector('summary').textContent.includes('demo/web-settings'); }})()"
        ),
    )
    .await;
    assert_eq!(
        s.exec("return window.__sameDocument === true;", vec![])
            .await,
        json!(true)
    );
    // Unfold it with the keyboard (the summary is focusable, Enter toggles it).
    s.exec(
        &format!("document.querySelector(\"{item} summary\").focus(); return true;"),
        vec![],
    )
    .await;
    s.keys("\u{E007}").await;
    let lines = s
        .wait_for(
            "the unfolded diff",
            &format!(
                "(() => {{ const d = document.querySelector(\"{item}\"); \
                   return d && d.open && [...d.querySelectorAll('pre.diff span')] \
                     .map(l => [l.className, l.textContent.replace(/\\n$/, '')]); }})()"
            ),
        )
        .await;
    let lines: Vec<(String, String)> = serde_json::from_value(lines).expect("line pairs");
    let removed: Vec<&str> = lines
        .iter()
        .filter(|(c, _)| c == "del")
        .map(|(_, t)| t.as_str())
        .collect();
    let added: Vec<&str> = lines
        .iter()
        .filter(|(c, _)| c == "add")
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(removed, ["-  release: v1"], "{lines:?}");
    assert_eq!(added, ["+  release: v2"], "{lines:?}");
    // The added and removed lines look different (colour), besides their +/- text.
    let colours = s
        .exec(
            &format!(
                "const d = document.querySelector(\"{item}\"); \
                 return [d.querySelector('pre.diff .add'), d.querySelector('pre.diff .del'), \
                         d.querySelector('pre.diff .ctx, pre.diff .hdr')] \
                   .map(e => getComputedStyle(e).backgroundColor + ' ' + getComputedStyle(e).color);"
            ),
            vec![],
        )
        .await;
    let colours: Vec<String> = serde_json::from_value(colours).expect("colours");
    assert!(
        colours[0] != colours[1] && colours[0] != colours[2] && colours[1] != colours[2],
        "{colours:?}"
    );
    shots.take(&s, "diff-configmap").await;

    // The object's details: its live manifest (still v1) beside the desired one (v2).
    s.click_css(&format!("{item} button.manifests-button"))
        .await;
    let sides = s
        .wait_for(
            "the live and desired manifests",
            &format!(
                "(() => {{ const p = document.querySelector(\"{item} .manifest-pair\"); \
                   const m = p ? [...p.querySelectorAll('.manifest')] : []; \
                   return m.length === 2 && m.every(x => x.querySelector('pre')) \
                     && m.map(x => x.textContent); }})()"
            ),
        )
        .await;
    let sides: Vec<String> = serde_json::from_value(sides).expect("two texts");
    assert!(
        sides[0].starts_with("Live (cluster)") && sides[0].contains("\"release\": \"v1\""),
        "{sides:?}"
    );
    assert!(
        sides[1].starts_with("Desired (Git)") && sides[1].contains("\"release\": \"v2\""),
        "{sides:?}"
    );
    shots.take(&s, "diff-manifests").await;
    // Nothing was applied: auto-sync is off.
    assert_eq!(release_in_cluster(&client).await.as_deref(), Some("v1"));

    s.quit().await;
    controller.abort();
    ui.stop().await;
}
