//! Simulated controllers at scale, created through the API until every Deployment is Available.
//! Two shapes: 1,000 Deployments of 3 replicas each in one namespace (for the default pod ready
//! delay of 200 ms and for a zero delay side by side), and the shape of `capstan bench scale`:
//! 10 namespaces of 100 apps, each a Deployment of 1 replica and a Service selecting its pod (so
//! 100 Services and 100 Pods per namespace, which exercises the service → pods index).
//! Prints wall time, the process's CPU time (user + system), its peak RSS and its RSS once all
//! are Available. Each row runs in a process of its own (this binary started again with
//! `--row N`), so that the memory figures are that row's alone.
//!
//! The store keeps a parsed view of the simulated kinds' latest writes within a budget of JSON
//! bytes; the last rows repeat both shapes with no view kept (budget 0) and with every one kept
//! (unbounded), side by side with the default, to show the CPU/memory trade.
//!
//! The Deployments are created through the in-process API functions (what the HTTP handlers
//! call), so the CPU figures are the devcluster's own work: storage, watch fan-out, and the
//! simulated controllers and kubelet; no client library is in the measurement. The process CPU
//! also includes this bench's own polling for Available (it parses every Deployment each
//! 100 ms, about 15 % of the total).
//!
//! Run: `cargo bench -p devcluster --bench sim`. Timings only ever go here, never in tests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use devcluster::api::{self, Op};
use devcluster::sim::SimConfig;
use devcluster::store::DEFAULT_PARSED_BUDGET;
use devcluster::{Config, DevCluster};
use serde_json::{Value, json};

/// One scenario: `namespaces` × `apps` Deployments of `replicas`, with a Service each if
/// `services`.
#[derive(Clone, Copy)]
struct Shape {
    namespaces: usize,
    apps: usize,
    replicas: usize,
    services: bool,
}

impl Shape {
    fn deployments(&self) -> usize {
        self.namespaces * self.apps
    }
}

/// CPU time of this process so far (user + system), from /proc/self/stat.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Clock ticks are 100 per second on Linux (USER_HZ).
    Some(Duration::from_millis((utime + stime) * 10))
}

/// A memory figure of this process from /proc/self/status, in MiB (`VmHWM:` peak resident set
/// size, `VmRSS:` current).
fn status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn op(cluster: &DevCluster, group: &str, resource: &str, ns: Option<&str>) -> Op {
    let version = "v1";
    let info = cluster
        .state()
        .registry
        .get(group, version, resource)
        .expect("a built-in resource");
    Op {
        info,
        namespace: ns.map(String::from),
        name: None,
        subresource: None,
        query: HashMap::new(),
        manager: "bench".into(),
        manager_explicit: true,
    }
}

fn available_count(cluster: &DevCluster, replicas: usize) -> usize {
    cluster
        .state()
        .store
        .all_of("apps/deployments")
        .iter()
        // Parsed from the bytes on purpose: this polling is the bench's own work, and parsing
        // keeps its cost the same whether or not the store keeps objects parsed, so that
        // figures of builds before and after that change compare.
        .filter_map(|s| serde_json::from_slice::<Value>(&s.bytes).ok())
        .filter(|d| {
            d.pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Available" && c["status"] == "True")
                && d.pointer("/status/availableReplicas")
                    .and_then(Value::as_u64)
                    == Some(replicas as u64)
        })
        .count()
}

struct Figures {
    rss: f64,
    services: usize,
    create: Duration,
    total: Duration,
    cpu: Duration,
    peak_rss: f64,
    pods: usize,
    events: usize,
    writes: u64,
}

async fn run(delay: Duration, shape: Shape, parsed_budget: usize) -> Figures {
    let cluster = DevCluster::start(Config {
        sim: SimConfig {
            pod_ready_delay: delay,
            ..SimConfig::default()
        },
        ..Config::default()
    })
    .await
    .expect("devcluster starts");
    cluster.state().store.set_parsed_budget(parsed_budget);
    let ns_op = op(&cluster, "", "namespaces", None);
    let namespaces: Vec<String> = (0..shape.namespaces)
        .map(|i| format!("bench-{i}"))
        .collect();
    for ns in &namespaces {
        api::create(
            cluster.state(),
            &ns_op,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .expect("namespace created");
    }
    let rv0 = cluster.state().store.current_rv();
    let cpu0 = cpu_time().unwrap_or_default();
    let t0 = Instant::now();
    let mut created = 0;
    for ns in &namespaces {
        let d_op = op(&cluster, "apps", "deployments", Some(ns));
        let s_op = op(&cluster, "", "services", Some(ns));
        for i in 0..shape.apps {
            let name = format!("app-{i}");
            let d = json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "replicas": shape.replicas,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
                    },
                },
            });
            api::create(cluster.state(), &d_op, d).expect("deployment created");
            if shape.services {
                let s = json!({
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {
                        "selector": {"app": name},
                        "ports": [{"port": 80, "targetPort": 8080}],
                    },
                });
                api::create(cluster.state(), &s_op, s).expect("service created");
            }
            created += 1;
            // Let the simulation run beside the creations, as it would beside real clients.
            if created % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
    }
    let create = t0.elapsed();
    loop {
        if available_count(&cluster, shape.replicas) == shape.deployments() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "not all deployments became Available within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = t0.elapsed();
    let cpu = cpu_time().unwrap_or_default().saturating_sub(cpu0);
    let pods = cluster.state().store.all_of("/pods").len();
    let services = cluster.state().store.all_of("/services").len();
    let events = cluster.state().store.all_of("/events").len();
    let writes = cluster.state().store.current_rv() - rv0;
    let peak_rss = status_mib("VmHWM:").unwrap_or(0.0);
    let rss = status_mib("VmRSS:").unwrap_or(0.0);
    cluster.shutdown().await;
    Figures {
        rss,
        services,
        create,
        total,
        cpu,
        peak_rss,
        pods,
        events,
        writes,
    }
}

/// The rows: pod ready delay, shape, parsed budget of the store.
fn rows() -> Vec<(Duration, Shape, usize)> {
    let one_ns = Shape {
        namespaces: 1,
        apps: 1000,
        replicas: 3,
        services: false,
    };
    let with_services = Shape {
        namespaces: 10,
        apps: 100,
        replicas: 1,
        services: true,
    };
    vec![
        (Duration::ZERO, one_ns, DEFAULT_PARSED_BUDGET),
        (Duration::from_millis(200), one_ns, DEFAULT_PARSED_BUDGET),
        (Duration::ZERO, with_services, DEFAULT_PARSED_BUDGET),
        (Duration::ZERO, one_ns, 0),
        (Duration::ZERO, one_ns, usize::MAX),
        (Duration::ZERO, with_services, 0),
        (Duration::ZERO, with_services, usize::MAX),
    ]
}

/// Runs one row in this process and prints its line.
fn run_row(i: usize) {
    let Some((delay, shape, parsed)) = rows().get(i).copied() else {
        panic!("no row {i}");
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let f = rt.block_on(run(delay, shape, parsed));
    let budget = match parsed {
        0 => "0".to_string(),
        usize::MAX => "all".to_string(),
        b => format!("{}MiB", b >> 20),
    };
    println!(
        "{:>9}ms {:>8} {:>6} {:>8} {:>10.2} {:>11.2} {:>8.2} {:>8.2} {:>6} {:>6} {:>7} {:>7} {:>9.1} {:>8.1}",
        delay.as_millis(),
        budget,
        shape.namespaces,
        shape.services,
        f.create.as_secs_f64(),
        f.total.as_secs_f64(),
        f.cpu.as_secs_f64(),
        f.cpu.as_secs_f64() / f.total.as_secs_f64(),
        f.pods,
        f.services,
        f.events,
        f.writes,
        f.peak_rss,
        f.rss,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--row") {
        let row = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .expect("--row takes a row number");
        run_row(row);
        return;
    }
    println!(
        "Deployments until all Available (in-process API, 2 worker threads): 1 namespace x 1000 \
         Deployments x 3 replicas, or 10 namespaces x 100 (Deployment x 1 replica + Service); \
         budget: JSON bytes of the latest writes the store keeps parsed"
    );
    println!(
        "{:>11} {:>8} {:>6} {:>8} {:>10} {:>11} {:>8} {:>8} {:>6} {:>6} {:>7} {:>7} {:>9} {:>8}",
        "ready delay",
        "budget",
        "ns",
        "with svc",
        "create s",
        "available s",
        "CPU s",
        "CPU/wall",
        "pods",
        "svcs",
        "events",
        "writes",
        "peak RSS",
        "RSS MiB"
    );
    let exe = std::env::current_exe().expect("the bench's own path");
    for i in 0..rows().len() {
        // One process per row: RSS is a high-water mark of the whole process.
        let status = std::process::Command::new(&exe)
            .args(["--row", &i.to_string()])
            .status()
            .expect("the bench starts itself");
        assert!(status.success(), "row {i} failed");
    }
}
