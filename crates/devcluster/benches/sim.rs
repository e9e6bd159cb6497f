//! Simulated controllers at scale: 1,000 Deployments of 3 replicas each, created through the
//! API, until every one is Available. Prints wall time, the process's CPU time (user + system)
//! and its peak RSS, for the default pod ready delay (200 ms) and for a zero delay side by side.
//!
//! The Deployments are created through the in-process API functions (what the HTTP handlers
//! call), so the CPU figures are the devcluster's own work: storage, watch fan-out, and the
//! simulated controllers and kubelet; no client library is in the measurement.
//!
//! Run: `cargo bench -p devcluster --bench sim`. Timings only ever go here, never in tests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use devcluster::api::{self, Op};
use devcluster::sim::SimConfig;
use devcluster::{Config, DevCluster};
use serde_json::{Value, json};

const DEPLOYMENTS: usize = 1000;
const REPLICAS: usize = 3;

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

/// Peak resident set size of this process, in MiB (VmHWM).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
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

fn available_count(cluster: &DevCluster) -> usize {
    cluster
        .state()
        .store
        .all_of("apps/deployments")
        .iter()
        .filter_map(|s| s.value().ok())
        .filter(|d| {
            d.pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Available" && c["status"] == "True")
                && d.pointer("/status/availableReplicas")
                    .and_then(Value::as_u64)
                    == Some(REPLICAS as u64)
        })
        .count()
}

struct Figures {
    delay: Duration,
    create: Duration,
    total: Duration,
    cpu: Duration,
    peak_rss: f64,
    pods: usize,
    events: usize,
    writes: u64,
}

async fn run(delay: Duration) -> Figures {
    let cluster = DevCluster::start(Config {
        sim: SimConfig {
            pod_ready_delay: delay,
            ..SimConfig::default()
        },
        ..Config::default()
    })
    .await
    .expect("devcluster starts");
    let ns_op = op(&cluster, "", "namespaces", None);
    api::create(
        cluster.state(),
        &ns_op,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
    )
    .expect("namespace created");
    let rv0 = cluster.state().store.current_rv();
    let cpu0 = cpu_time().unwrap_or_default();
    let t0 = Instant::now();
    let d_op = op(&cluster, "apps", "deployments", Some("bench"));
    for i in 0..DEPLOYMENTS {
        let name = format!("app-{i}");
        let d = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {
                "replicas": REPLICAS,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
                },
            },
        });
        api::create(cluster.state(), &d_op, d).expect("deployment created");
        // Let the simulation run beside the creations, as it would beside real clients.
        if i % 50 == 49 {
            tokio::task::yield_now().await;
        }
    }
    let create = t0.elapsed();
    loop {
        if available_count(&cluster) == DEPLOYMENTS {
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
    let events = cluster.state().store.all_of("/events").len();
    let writes = cluster.state().store.current_rv() - rv0;
    let peak_rss = peak_rss_mib().unwrap_or(0.0);
    cluster.shutdown().await;
    Figures {
        delay,
        create,
        total,
        cpu,
        peak_rss,
        pods,
        events,
        writes,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "{DEPLOYMENTS} Deployments x {REPLICAS} replicas until all Available (in-process API, 2 worker threads)"
    );
    println!(
        "{:>11} {:>10} {:>11} {:>10} {:>8} {:>8} {:>8} {:>10} {:>13}",
        "ready delay",
        "create s",
        "available s",
        "CPU s",
        "CPU/wall",
        "pods",
        "events",
        "writes",
        "peak RSS MiB"
    );
    // Zero delay first: the peak RSS figure is a high-water mark of the whole process, so the
    // second row's includes the first's.
    for delay in [Duration::ZERO, Duration::from_millis(200)] {
        let f = rt.block_on(run(delay));
        println!(
            "{:>9}ms {:>10.2} {:>11.2} {:>10.2} {:>8.2} {:>8} {:>8} {:>10} {:>13.1}",
            f.delay.as_millis(),
            f.create.as_secs_f64(),
            f.total.as_secs_f64(),
            f.cpu.as_secs_f64(),
            f.cpu.as_secs_f64() / f.total.as_secs_f64(),
            f.pods,
            f.events,
            f.writes,
            f.peak_rss,
        );
    }
}
