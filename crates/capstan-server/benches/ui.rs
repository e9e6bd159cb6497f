//! UI benchmark: time to the first usable render of the applications list in headless
//! Chromium, from navigation start to the first frame showing rows (the UI's User Timing mark
//! `capstan:list-rendered`), with 10 and with 10,000 applications in the same run, beside the
//! list API request's own duration as the browser saw it.
//!
//! The applications are seeded straight into the server's cache (the watch's feed), so the
//! figure is the UI and the API page, not the devcluster's create throughput.
//!
//! Run: `cargo bench -p capstan-server --bench ui`. Needs chromium and chromedriver.

#[path = "../tests/it/ui_support/server.rs"]
mod server;
#[path = "../tests/it/ui_support/webdriver.rs"]
mod webdriver;

use capstan_api::application::{
    Application, ApplicationDestination, ApplicationSource, ApplicationSpec, HealthStatus,
    SyncStatus,
};
use serde_json::Value;
use webdriver::{Browser, Session};

const RUNS: usize = 15;

fn app(i: usize) -> Application {
    let mut a = Application::new(
        "capstan",
        &format!("app-{i:05}"),
        ApplicationSpec {
            project: if i.is_multiple_of(3) {
                "team-a"
            } else {
                "default"
            }
            .into(),
            source: ApplicationSource {
                repo_url: format!("https://git.example.invalid/org/repo-{}.git", i % 50),
                target_revision: "main".into(),
                path: format!("apps/{i}"),
                ..ApplicationSource::default()
            },
            destination: ApplicationDestination {
                server: Some(capstan_api::application::IN_CLUSTER_SERVER.into()),
                name: None,
                namespace: format!("ns-{}", i % 100),
            },
            ..ApplicationSpec::default()
        },
    );
    let mut status = a.status_or_default();
    status.sync = Some(SyncStatus {
        status: if i.is_multiple_of(7) {
            "OutOfSync"
        } else {
            "Synced"
        }
        .into(),
        revision: format!("{:040x}", i),
        compared_to: None,
    });
    status.health = Some(HealthStatus {
        status: if i.is_multiple_of(11) {
            "Degraded"
        } else {
            "Healthy"
        }
        .into(),
        message: None,
    });
    a.status = Some(status);
    a
}

/// The page's timeline (milliseconds from navigation start): the document's request,
/// response, DOMContentLoaded and load, then every resource's start, request, first byte and
/// end, and the User Timing marks.
const TIMELINE: &str = "const r = (x) => Math.round(x); \
    const n = performance.getEntriesByType('navigation')[0]; \
    return { document: n && [r(n.requestStart), r(n.responseStart), \
               r(n.domContentLoadedEventEnd), r(n.loadEventEnd)], \
             resources: performance.getEntriesByType('resource').map(e => \
               [e.name.replace(location.origin, ''), r(e.startTime), r(e.requestStart), \
                r(e.responseStart), r(e.responseEnd)]), \
             marks: performance.getEntriesByType('mark').map(m => [m.name, r(m.startTime)]) };";

/// Loads the list `RUNS` times; returns the render and API-request milliseconds, sorted.
async fn measure(s: &Session, base: &str) -> (Vec<f64>, Vec<f64>) {
    let mut render = Vec::new();
    let mut request = Vec::new();
    for i in 0..RUNS {
        // A distinct query string forces a real navigation (a hash change alone would not).
        s.goto(&format!("{base}/?run={i}#/")).await;
        let v = s
            .wait_for(
                "the list's first render",
                "(() => { const m = performance.getEntriesByName('capstan:list-rendered')[0]; \
                   const r = performance.getEntriesByType('resource') \
                     .find(e => e.name.includes('/api/v1/applications?')); \
                   return m && r && document.querySelector('#apps tbody tr') \
                     ? [m.startTime, r.duration] : null; })()",
            )
            .await;
        let pair = v.as_array().cloned().unwrap_or_default();
        let shown = pair.first().and_then(Value::as_f64).unwrap_or(f64::NAN);
        render.push(shown);
        request.push(pair.get(1).and_then(Value::as_f64).unwrap_or(f64::NAN));
        if shown.is_nan() || shown >= 1000.0 {
            // A slow load: say where the time went, from the page's own timestamps.
            let detail = s.exec(TIMELINE, vec![]).await;
            println!("slow load {i}: {shown:.0} ms; page timeline: {detail}");
        }
    }
    render.sort_by(f64::total_cmp);
    request.sort_by(f64::total_cmp);
    (render, request)
}

fn row(label: &str, v: &[f64]) {
    let median = v[v.len() / 2];
    let p90 = v[(v.len() * 9 / 10).min(v.len() - 1)];
    println!(
        "{label:<44} {:>9.1} {median:>9.1} {p90:>9.1} {:>9.1}",
        v[0],
        v[v.len() - 1]
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(browser) = Browser::find_or_skip("ui benchmark") else {
        return;
    };
    // The users Secret lives in the controller's namespace.
    let cluster = capstan_testkit::start_cluster(&["capstan"]).await;
    let client = cluster.client();
    let server = server::UiServer::start_unwatched(&client).await;
    let (base, password) = (server.base.clone(), server.password.clone());

    let driver = webdriver::Driver::start(&browser).await;
    let profile = capstan_testkit::temp_dir("ui-bench-profile");
    let s = driver.session(&browser, profile.path(), (1400, 1000)).await;
    s.goto(&format!("{base}/")).await;
    s.type_text(&s.find("#username").await, "admin").await;
    s.type_text(&s.find("#password").await, &password).await;
    s.click_css("#login-submit").await;
    s.find("#apps").await;

    server.cache().replace_all((0..10).map(app).collect());
    let (small_render, small_request) = measure(&s, &base).await;
    server.cache().replace_all((0..10_000).map(app).collect());
    let (big_render, big_request) = measure(&s, &base).await;
    let rows = s
        .exec(
            "return document.querySelectorAll('#apps tbody tr').length;",
            vec![],
        )
        .await;

    println!("UI list, headless Chromium, {RUNS} page loads each (milliseconds)");
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9}",
        "", "min", "median", "p90", "max"
    );
    row("first rows shown, 10 applications", &small_render);
    row("first rows shown, 10,000 applications", &big_render);
    row("  list API request, 10 applications", &small_request);
    row("  list API request, 10,000 applications", &big_request);
    println!(
        "ratio 10,000 / 10 (median first render): {:.2}; rows on the first page: {rows}",
        big_render[RUNS / 2] / small_render[RUNS / 2]
    );

    s.quit().await;
    server.stop().await;
}
