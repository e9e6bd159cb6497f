//! List API latency with 10,000 applications, over real HTTP (loopback), printed as a table:
//! first page, a filtered page, a search, and a deep page, beside the in-memory list alone so
//! the HTTP + JSON share is visible. The applications are seeded into the server's cache
//! through the same entry the Application watch uses (`AppCache::replace_all`).
//!
//! Run: `cargo bench -p capstan-server --bench api`.

use capstan_api::application::{
    Application, ApplicationDestination, ApplicationSource, ApplicationSpec, ApplicationStatus,
    HealthStatus, SyncStatus,
};
use capstan_server::cache::Filter;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const APPS: usize = 10_000;
const ROUNDS: usize = 200;

fn app(i: usize) -> Application {
    let health = ["Healthy", "Progressing", "Degraded", "Healthy", "Healthy"][i % 5];
    let sync = if i.is_multiple_of(7) {
        "OutOfSync"
    } else {
        "Synced"
    };
    let mut a = Application::new(
        "capstan",
        &format!("app-{i:05}"),
        ApplicationSpec {
            project: format!("team-{}", i % 10),
            source: ApplicationSource {
                repo_url: format!("https://git.example/org/repo-{}.git", i % 100),
                target_revision: "main".into(),
                path: format!("apps/app-{i:05}"),
                ..ApplicationSource::default()
            },
            destination: ApplicationDestination {
                server: Some("https://kubernetes.default.svc".into()),
                name: None,
                namespace: format!("ns-{}", i % 50),
            },
            ..ApplicationSpec::default()
        },
    );
    a.status = Some(ApplicationStatus {
        sync: Some(SyncStatus {
            status: sync.into(),
            revision: format!("{i:040x}"),
            compared_to: None,
        }),
        health: Some(HealthStatus {
            status: health.into(),
            message: None,
        }),
        ..ApplicationStatus::default()
    });
    a
}

struct Row {
    name: &'static str,
    items: usize,
    p50: Duration,
    p99: Duration,
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cluster = devcluster::DevCluster::start(devcluster::Config::default())
        .await
        .expect("devcluster starts");
    let client = cluster.client();
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "capstan"}})).unwrap();
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&Default::default(), &ns)
        .await
        .expect("namespace");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = capstan_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        insecure_cookies: true,
        ..capstan_server::Config::default()
    };
    let server = capstan_server::serve_unwatched(config, client, async move {
        let _ = stopped.await;
    })
    .await
    .expect("server starts");
    let seed = Instant::now();
    server.cache.replace_all((0..APPS).map(app).collect());
    let seed_time = seed.elapsed();
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let password = server
        .initial_admin_password
        .clone()
        .expect("admin password");
    let login: Value = http
        .post(format!("{base}/api/v1/session"))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_string();

    let queries: [(&'static str, &str); 4] = [
        ("first page (limit 100)", "limit=100"),
        (
            "filtered: health=Degraded&sync=OutOfSync",
            "health=Degraded&sync=OutOfSync&limit=100",
        ),
        ("search: repo-42", "search=repo-42&limit=100"),
        (
            "deep page (continue at app-09000)",
            "limit=100&continue=capstan/app-09000",
        ),
    ];
    let mut rows = Vec::new();
    for (name, q) in queries {
        let url = format!("{base}/api/v1/applications?{q}");
        let mut times = Vec::with_capacity(ROUNDS);
        let mut items = 0;
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let body = http
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            times.push(t.elapsed());
            let v: Value = serde_json::from_slice(&body).unwrap();
            items = v["items"].as_array().map_or(0, Vec::len);
        }
        let (p50, p99) = percentiles(times);
        rows.push(Row {
            name,
            items,
            p50,
            p99,
        });
    }
    // The in-memory part alone (filter + page), for the same first page.
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let page = server.cache.list(&Filter::default(), 100, None);
        times.push(t.elapsed());
        assert_eq!(page.items.len(), 100);
    }
    let (p50, p99) = percentiles(times);
    rows.push(Row {
        name: "cache.list only (first page, no HTTP)",
        items: 100,
        p50,
        p99,
    });

    println!(
        "capstan-server list API, {APPS} applications, {ROUNDS} requests each (loopback HTTP, bearer token)"
    );
    println!("seeding the cache: {:.1} ms", seed_time.as_secs_f64() * 1e3);
    println!(
        "{:<45} {:>6} {:>10} {:>10}",
        "request", "items", "p50 ms", "p99 ms"
    );
    for r in rows {
        println!(
            "{:<45} {:>6} {:>10.3} {:>10.3}",
            r.name,
            r.items,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3
        );
    }
    let _ = stop.send(());
    server.wait().await;
    cluster.shutdown().await;
}
