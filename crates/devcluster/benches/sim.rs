//! Simulated controllers at scale, created through the API until every Deployment is Available.
//! Two shapes: 1,000 Deployments of 3 replicas each in one namespace (for the default pod ready
//! delay of 200 ms and for a zero delay side by side), and the shape of `capstan bench scale`:
//! 10 namespaces of 100 apps, each a Deployment of 1 replica and a Service selecting its pod (so
//! 100 Services and 100 Pods per namespace, which exercises the service → pods index).
//! Prints wall time, the process's CPU time (user + system), its peak RSS, and the live heap
//! (counted by this bench's allocator) at the end and at its peak.
//!
//! The store keeps the parsed form of the simulated kinds' latest writes within a budget of JSON
//! bytes; the last rows repeat both shapes with no parsed form kept (budget 0) and with every
//! one kept (unbounded), side by side with the default, to show the CPU/memory trade.
//!
//! The Deployments are created through the in-process API functions (what the HTTP handlers
//! call), so the CPU figures are the devcluster's own work: storage, watch fan-out, and the
//! simulated controllers and kubelet; no client library is in the measurement.
//!
//! Run: `cargo bench -p devcluster --bench sim`. Timings only ever go here, never in tests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicI64, Ordering};

use devcluster::api::{self, Op};
use devcluster::sim::SimConfig;
use devcluster::store::DEFAULT_PARSED_BUDGET;
use devcluster::{Config, DevCluster};
use serde_json::{Value, json};

/// Counts live heap bytes and their high-water mark (RSS keeps freed memory, which blurs it).
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);

fn grew(by: i64) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are only
// arithmetic on the sizes passed in.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        grew(layout.size() as i64);
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        grew(new_size as i64 - layout.size() as i64);
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn mib(bytes: i64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

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
    delay: Duration,
    heap_end: f64,
    heap_peak: f64,
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
    let heap0 = LIVE.load(Ordering::Relaxed);
    PEAK.store(heap0, Ordering::Relaxed);
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
    let peak_rss = peak_rss_mib().unwrap_or(0.0);
    let heap_end = mib(LIVE.load(Ordering::Relaxed) - heap0);
    let heap_peak = mib(PEAK.load(Ordering::Relaxed) - heap0);
    cluster.shutdown().await;
    Figures {
        delay,
        heap_end,
        heap_peak,
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

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
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
    println!(
        "Deployments until all Available (in-process API, 2 worker threads): 1 namespace x 1000 \
         Deployments x 3 replicas, then 10 namespaces x 100 (Deployment x 1 replica + Service)"
    );
    println!(
        "{:>11} {:>8} {:>10} {:>11} {:>10} {:>8} {:>8} {:>8} {:>8} {:>10} {:>13} {:>9} {:>10}",
        "ready delay",
        "budget",
        "create s",
        "available s",
        "CPU s",
        "CPU/wall",
        "pods",
        "services",
        "events",
        "writes",
        "peak RSS MiB",
        "heap MiB",
        "peak heap"
    );
    // Zero delay first: the peak RSS figure is a high-water mark of the whole process, so the
    // later rows' include the first's (the heap figures are per row).
    let budget = |b: usize| match b {
        0 => "0".to_string(),
        usize::MAX => "all".to_string(),
        b => format!("{}MiB", b >> 20),
    };
    for (delay, shape, parsed) in [
        (Duration::ZERO, one_ns, DEFAULT_PARSED_BUDGET),
        (Duration::from_millis(200), one_ns, DEFAULT_PARSED_BUDGET),
        (Duration::ZERO, with_services, DEFAULT_PARSED_BUDGET),
        (Duration::ZERO, one_ns, 0),
        (Duration::ZERO, one_ns, usize::MAX),
        (Duration::ZERO, with_services, 0),
        (Duration::ZERO, with_services, usize::MAX),
    ] {
        let f = rt.block_on(run(delay, shape, parsed));
        println!(
            "{:>9}ms {:>8} {:>10.2} {:>11.2} {:>10.2} {:>8.2} {:>8} {:>8} {:>8} {:>10} {:>13.1} {:>9.1} {:>10.1}",
            f.delay.as_millis(),
            budget(parsed),
            f.create.as_secs_f64(),
            f.total.as_secs_f64(),
            f.cpu.as_secs_f64(),
            f.cpu.as_secs_f64() / f.total.as_secs_f64(),
            f.pods,
            f.services,
            f.events,
            f.writes,
            f.peak_rss,
            f.heap_end,
            f.heap_peak,
        );
    }
}
