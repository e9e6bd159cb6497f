//! The web UI's accessibility and safety in a real headless Chromium against the real API
//! server and an in-process devcluster. The controller does not run here: the test writes
//! Application status itself (history, health, conditions), as the controller would.
//!
//! - keyboard only: log in, reach an application, open the rollback dialog with Enter and with
//!   Space, cancel with Escape (nothing requested), confirm (the request is written); every
//!   control has an accessible name, landmarks exist, focus is visible, changes are announced;
//! - API text is never markup (an application carrying HTML in its fields), the page's
//!   Content-Security-Policy blocks inline script, a read-only user gets no actions, and the
//!   login rate limit is shown.

use crate::ui_server;
use crate::webdriver;

use capstan_api::application::{
    Application, ApplicationDestination, ApplicationSource, ApplicationSpec,
};
use capstan_server::auth::{Role, set_user};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::time::Duration;
use ui_server::UiServer;
use webdriver::{Browser, Driver, Session, artifacts_dir};

const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";
const ESCAPE: &str = "\u{E00C}";

struct Env {
    _cluster: devcluster::DevCluster,
    client: kube::Client,
    apps: Api<Application>,
    ui: UiServer,
}

impl Env {
    async fn start() -> Env {
        let cluster = capstan_testkit::start_cluster(&["capstan"]).await;
        let client = cluster.client();
        let ui = UiServer::start(&client, None).await;
        Env {
            _cluster: cluster,
            apps: Api::namespaced(client.clone(), "capstan"),
            client,
            ui,
        }
    }

    /// Creates an application and writes the status a controller would have written.
    async fn app(&self, name: &str, repo_url: &str, status: Value) {
        let app = Application::new(
            "capstan",
            name,
            ApplicationSpec {
                project: "default".into(),
                source: ApplicationSource {
                    repo_url: repo_url.into(),
                    target_revision: "main".into(),
                    path: "deploy".into(),
                    ..ApplicationSource::default()
                },
                destination: ApplicationDestination {
                    server: Some("https://kubernetes.default.svc".into()),
                    name: None,
                    namespace: "default".into(),
                },
                ..ApplicationSpec::default()
            },
        );
        self.apps
            .create(&PostParams::default(), &app)
            .await
            .expect("create application");
        self.apps
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .expect("write status");
    }

    async fn stop(self) {
        self.ui.stop().await;
    }
}

fn deployed_status(repo_url: &str) -> Value {
    let entry = |id: i64, rev: &str, at: &str| {
        json!({"id": id, "revision": rev, "deployedAt": at,
               "source": {"repoURL": repo_url, "path": "deploy", "targetRevision": "main"},
               "initiatedBy": {"automated": true}})
    };
    json!({
        "sync": {"status": "Synced", "revision": "b".repeat(40)},
        "health": {"status": "Healthy"},
        "resources": [{"group": "", "version": "v1", "kind": "ConfigMap", "namespace": "default",
                       "name": "settings", "status": "Synced"}],
        "history": [entry(0, &"a".repeat(40), "2026-01-01T10:00:00Z"),
                    entry(1, &"b".repeat(40), "2026-01-02T10:00:00Z")],
        "reconciledAt": "2026-01-02T10:00:01Z",
    })
}

async fn browser_session(browser: &Browser, driver: &Driver) -> (Session, tempfile::TempDir) {
    let profile = tempfile::tempdir().unwrap();
    let s = driver.session(browser, profile.path(), (1300, 1400)).await;
    (s, profile)
}

/// Controls without an accessible name (label, aria-label or text), described for a message.
const UNLABELLED: &str = "return [...document.querySelectorAll('input, select, button, a[href]')] \
    .filter(el => el.offsetParent !== null || el.closest('dialog[open]')) \
    .filter(el => !((el.labels && el.labels.length) || el.getAttribute('aria-label') \
        || el.getAttribute('aria-labelledby') || el.textContent.trim())) \
    .map(el => el.outerHTML.slice(0, 120));";

/// Presses Tab until the focused element matches `css` (at most 60 times).
async fn tab_to(s: &Session, css: &str) {
    for _ in 0..60 {
        let hit = s
            .exec(
                "return document.activeElement && document.activeElement.matches(arguments[0]);",
                vec![json!(css)],
            )
            .await;
        if hit == json!(true) {
            return;
        }
        s.keys(TAB).await;
    }
    panic!("Tab never reached {css}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_only_user_logs_in_opens_an_app_and_rolls_back() {
    let Some(browser) =
        Browser::find_or_skip("keyboard_only_user_logs_in_opens_an_app_and_rolls_back")
    else {
        return;
    };
    let env = Env::start().await;
    let repo = "https://git.example.invalid/shop.git";
    env.app("shop", repo, deployed_status(repo)).await;
    let driver = Driver::start(&browser).await;
    let (s, _profile) = browser_session(&browser, &driver).await;

    // Login by keyboard: the user name field has the focus on load.
    s.goto(&format!("{}/", env.ui.base)).await;
    s.find("#username").await;
    s.wait_for(
        "focus in the user name field",
        "document.activeElement.id === 'username'",
    )
    .await;
    assert_eq!(s.exec(UNLABELLED, vec![]).await, json!([]));
    s.keys("admin").await;
    s.keys(TAB).await;
    s.keys(&env.ui.password).await;
    s.keys(ENTER).await;
    s.find("#apps tbody tr[data-app='capstan/shop']").await;

    // Landmarks, a live region, every control named.
    let landmarks = s
        .exec(
            "return ['header', 'nav', 'main', '[aria-live]', '[role=search]'] \
               .map(sel => Boolean(document.querySelector(sel)));",
            vec![],
        )
        .await;
    assert_eq!(landmarks, json!([true, true, true, true, true]));
    assert_eq!(s.exec(UNLABELLED, vec![]).await, json!([]));

    // Tab to the application's link and follow it with Enter.
    tab_to(&s, "tr[data-app='capstan/shop'] a.app-link").await;
    s.keys(ENTER).await;
    s.wait_for(
        "the application page with its history",
        "document.querySelector(\"button.rollback[data-history-id='0']\")",
    )
    .await;
    assert_eq!(s.exec(UNLABELLED, vec![]).await, json!([]));
    let tree_label = s
        .exec(
            "return document.querySelector('#resource-tree [data-kind=ConfigMap]').getAttribute('aria-label');",
            vec![],
        )
        .await;
    assert_eq!(tree_label, json!("ConfigMap settings"));

    // The Rollback button of the older entry: reachable by Tab, visibly focused.
    tab_to(&s, "button.rollback[data-history-id='0']").await;
    let outline = s
        .exec(
            "const st = getComputedStyle(document.activeElement); return [st.outlineStyle, st.outlineWidth];",
            vec![],
        )
        .await;
    assert_ne!(
        outline[0],
        json!("none"),
        "focus must be visible: {outline}"
    );
    assert_ne!(outline[1], json!("0px"), "focus must be visible: {outline}");
    s.screenshot(&artifacts_dir().join("keyboard-01-rollback-focused.png"))
        .await;

    // Enter opens the confirm dialog with the focus inside; Escape cancels: nothing requested.
    s.keys(ENTER).await;
    s.wait_for(
        "the dialog, focused",
        "document.querySelector('#confirm').open && document.activeElement.id === 'confirm-cancel'",
    )
    .await;
    s.keys(ESCAPE).await;
    s.wait_for(
        "the dialog to close",
        "!document.querySelector('#confirm').open",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        env.apps.get("shop").await.unwrap().operation.is_none(),
        "a cancelled dialog requested nothing"
    );

    // Space opens it too; Tab to the confirm button and press Enter: the rollback is requested.
    tab_to(&s, "button.rollback[data-history-id='0']").await;
    s.keys(" ").await;
    s.wait_for("the dialog", "document.querySelector('#confirm').open")
        .await;
    s.screenshot(&artifacts_dir().join("keyboard-02-rollback-dialog.png"))
        .await;
    tab_to(&s, "#confirm-ok").await;
    s.keys(ENTER).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let app = env.apps.get("shop").await.unwrap();
        let requested = app
            .operation
            .as_ref()
            .and_then(|o| o.sync.as_ref())
            .and_then(|s| s.rollback_id);
        if requested == Some(0) {
            assert_eq!(app.operation.unwrap().initiated_by.username, "admin");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rollback request written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The request is announced to screen readers and shown as waiting for the controller.
    s.wait_for(
        "the announcement",
        "document.querySelector('#live').textContent.includes('Rollback to #0 requested')",
    )
    .await;
    s.wait_for(
        "the pending operation",
        "document.querySelector('#operation').textContent.includes('waiting for the controller')",
    )
    .await;

    s.quit().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_text_is_never_markup_readonly_has_no_actions_and_rate_limit_is_shown() {
    let Some(browser) = Browser::find_or_skip(
        "api_text_is_never_markup_readonly_has_no_actions_and_rate_limit_is_shown",
    ) else {
        return;
    };
    let env = Env::start().await;
    let evil_repo = "https://git.example.invalid/<img src=x onerror=\"window.__xss=1\">.git";
    let mut status = deployed_status(evil_repo);
    status["conditions"] = json!([{"type": "ComparisonError",
        "message": "<b id=\"injected\">bold</b><script>window.__xss=2</script>"}]);
    status["health"] = json!({"status": "Degraded", "message": "<i id=\"injected2\">x</i>"});
    env.app("evil", evil_repo, status).await;
    set_user(
        &env.client,
        "capstan",
        "viewer",
        "viewer-password-1",
        Role::Readonly,
    )
    .await
    .expect("readonly user");
    let driver = Driver::start(&browser).await;
    let (s, _profile) = browser_session(&browser, &driver).await;

    s.goto(&format!("{}/", env.ui.base)).await;
    s.type_text(&s.find("#username").await, "viewer").await;
    s.type_text(&s.find("#password").await, "viewer-password-1")
        .await;
    s.click_css("#login-submit").await;
    // The repository URL shows as text (read again if a live reload replaced the row).
    s.wait_until("the evil row, its markup shown as text", async |s| {
        let row = s.find_opt("tr[data-app='capstan/evil']").await?;
        s.text(&row)
            .await
            .contains("<img src=x onerror=")
            .then_some(())
    })
    .await;
    assert!(s.text(&s.find("#whoami").await).await.contains("read-only"));
    // The health badge says Degraded in words, not only in red.
    let health = s
        .exec(
            "return document.querySelector(\"tr[data-app='capstan/evil'] .badge[data-kind=health]\").textContent;",
            vec![],
        )
        .await;
    assert!(
        health.as_str().unwrap_or_default().contains("Degraded"),
        "{health}"
    );

    s.click_css("tr[data-app='capstan/evil'] a.app-link").await;
    s.wait_for(
        "the condition, as text",
        "document.querySelector('#conditions') && document.querySelector('#conditions').textContent.includes('<script>')",
    )
    .await;
    let injected = s
        .exec(
            "return [window.__xss === undefined, !document.querySelector('#injected'), \
                     !document.querySelector('#injected2'), \
                     document.querySelectorAll('main img, main script').length];",
            vec![],
        )
        .await;
    assert_eq!(injected, json!([true, true, true, 0]));
    // The page's CSP refuses inline script even when something manages to insert it.
    let inline = s
        .exec(
            "const sc = document.createElement('script'); sc.textContent = 'window.__inline = 1'; \
             document.body.append(sc); return window.__inline === undefined;",
            vec![],
        )
        .await;
    assert_eq!(inline, json!(true), "inline script ran: the CSP is missing");

    // Read-only: every action control is disabled.
    s.wait_for(
        "the history table",
        "document.querySelector(\"button.rollback[data-history-id='0']\")",
    )
    .await;
    let enabled = s
        .exec(
            "return [...document.querySelectorAll('#sync-button, #refresh-button, #hard-refresh-button, \
               #auto-sync, button.rollback')].filter(b => !b.disabled).map(b => b.id || b.className);",
            vec![],
        )
        .await;
    assert_eq!(enabled, json!([]));
    s.screenshot(&artifacts_dir().join("readonly-01-app.png"))
        .await;

    // Log out; repeated wrong passwords end in the rate-limit message.
    s.click_css("#logout").await;
    let mut limited = false;
    for attempt in 0..10 {
        let user = s.find("#username").await;
        s.clear(&user).await;
        s.type_text(&user, "mallory").await;
        s.type_text(&s.find("#password").await, &format!("guess-{attempt}"))
            .await;
        s.click_css("#login-submit").await;
        // The answer to this attempt, as a person sees it: the form is idle again, it emptied
        // the password field (which held this attempt's guess until the refusal came back) and
        // it shows why. The previous attempt's message is identical, so the text alone could
        // not tell that this attempt was answered.
        let msg = s
            .wait_until(
                &format!("the answer to login attempt {attempt}"),
                async |s| {
                    let pass = s.find_opt("#password").await?;
                    let submit = s.find_opt("#login-submit").await?;
                    let error = s.find_opt("#login-error").await?;
                    let idle = s.property(&submit, "disabled").await? == json!(false);
                    let emptied = s.property(&pass, "value").await? == json!("");
                    let text = s.text(&error).await;
                    (idle && emptied && !text.is_empty()).then_some(text)
                },
            )
            .await;
        if msg.starts_with("Too many failed attempts. Try again in ") {
            limited = true;
            break;
        }
        assert_eq!(msg, "Wrong username or password.");
    }
    assert!(limited, "the rate limit never showed");
    s.screenshot(&artifacts_dir().join("readonly-02-rate-limited.png"))
        .await;

    s.quit().await;
    env.stop().await;
}
