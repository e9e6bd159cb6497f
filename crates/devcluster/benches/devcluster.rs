//! Devcluster figures, printed as one table: server-side applies per second (1 client and 8
//! concurrent clients, over HTTPS), list latency with 10,000 objects (full and a 500 page), and
//! memory per stored object (RSS delta / count, and the overhead beyond the JSON size).
//!
//! Run: `cargo bench -p devcluster`. Timings only ever go here, never in tests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use devcluster::api::{self, Op};
use devcluster::{Config, DevCluster};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// Counts live heap bytes, so that memory per object is measured exactly (RSS is reported too,
/// but the allocator reuses freed memory, which blurs it).
struct Counting;

static LIVE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counter is only
// arithmetic on the sizes passed in.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size() as i64, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as i64 - layout.size() as i64,
            std::sync::atomic::Ordering::Relaxed,
        );
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live_heap() -> i64 {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn configmap(name: &str, i: usize) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "bench", "shard": (i % 16).to_string()},
                     "annotations": {"bench.example.com/note": "a configmap written by the devcluster benchmark"}},
        "data": {"key": format!("value-{i}"), "config.yaml": "server:\n  port: 8080\n  threads: 4\nlogging:\n  level: info\n"},
    })
}

async fn applies(client: &kube::Client, ns: &str, prefix: &str, n: usize) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let pp = PatchParams::apply("bench").force();
    for i in 0..n {
        let name = format!("{prefix}-{}", i % 200);
        // Alternate contents so that every apply is a real change (create or update).
        api.patch(&name, &pp, &Patch::Apply(configmap(&name, i)))
            .await
            .expect("apply succeeds");
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cluster = DevCluster::start(Config::default())
        .await
        .expect("cluster starts");
    let client = cluster.client();
    for ns in ["one", "many", "list", "mem"] {
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
    }
    let state = cluster.state().clone();
    let info = state.registry.get("", "v1", "configmaps").unwrap();
    let op = |ns: &str| Op {
        info: info.clone(),
        namespace: Some(ns.to_string()),
        name: None,
        subresource: None,
        query: HashMap::new(),
        manager: "bench".into(),
        manager_explicit: true,
    };
    // Memory first, while the allocator has little freed memory to hand back: RSS and live heap
    // before and after storing N objects, and the JSON bytes they take.
    let n_mem = 50_000;
    let before_rss = rss_bytes();
    let before_heap = live_heap();
    let mut json_bytes = 0usize;
    for i in 0..n_mem {
        let r = api::create(&state, &op("mem"), configmap(&format!("m-{i:05}"), i)).unwrap();
        json_bytes += r.body.len();
    }
    let rss_per_obj = rss_bytes().saturating_sub(before_rss) as f64 / n_mem as f64;
    let heap_per_obj = (live_heap() - before_heap) as f64 / n_mem as f64;
    let json_per_obj = json_bytes as f64 / n_mem as f64;

    // Warm up connections and code paths.
    applies(&client, "one", "warm", 200).await;

    // 1 client.
    let n1 = 3000;
    let t = Instant::now();
    applies(&client, "one", "a", n1).await;
    let one_rate = n1 as f64 / t.elapsed().as_secs_f64();

    // 8 concurrent clients.
    let per = 1000;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..8 {
        let client = cluster.client();
        tasks.push(tokio::spawn(async move {
            applies(&client, "many", &format!("c{c}"), per).await
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let many_rate = (8 * per) as f64 / t.elapsed().as_secs_f64();

    // 10,000 objects for listing, written through the API functions directly (fast setup).
    for i in 0..10_000 {
        api::create(&state, &op("list"), configmap(&format!("obj-{i:05}"), i)).unwrap();
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "list");
    let mut full = Vec::new();
    let mut page = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let l = cms.list(&ListParams::default()).await.unwrap();
        full.push(t.elapsed());
        assert_eq!(l.items.len(), 10_000);
        let t = Instant::now();
        let p = cms.list(&ListParams::default().limit(500)).await.unwrap();
        page.push(t.elapsed());
        assert_eq!(p.items.len(), 500);
    }
    let full_ms = median(full).as_secs_f64() * 1e3;
    let page_ms = median(page).as_secs_f64() * 1e3;
    // Server-side share of a full list: the store walk and serialization, without the client's
    // decoding into typed objects.
    let t = Instant::now();
    let listed = api::list(&state, &op("list")).unwrap();
    let body = api::list_body(&info, &listed);
    let server_full_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(body);

    println!();
    println!(
        "| devcluster benchmark (this machine, release build)      | value        | target      |"
    );
    println!(
        "|---------------------------------------------------------|--------------|-------------|"
    );
    println!(
        "| server-side applies/s, 1 client (HTTPS, kube-rs)        | {one_rate:>10.0}   | >= 3000     |"
    );
    println!(
        "| server-side applies/s, 8 concurrent clients             | {many_rate:>10.0}   | >= 3000     |"
    );
    println!(
        "| list 10,000 configmaps, full (client-observed, median)  | {full_ms:>9.1} ms |             |"
    );
    println!(
        "| list 10,000 configmaps, server share (walk + serialize) | {server_full_ms:>9.1} ms |             |"
    );
    println!(
        "| list 10,000 configmaps, limit=500 page (median)         | {page_ms:>9.2} ms |             |"
    );
    println!(
        "| memory per object, RSS delta / {n_mem}                   | {rss_per_obj:>8.0} B   |             |"
    );
    println!(
        "| memory per object, live heap delta / {n_mem}             | {heap_per_obj:>8.0} B   |             |"
    );
    println!(
        "| JSON size per object                                    | {json_per_obj:>8.0} B   |             |"
    );
    println!(
        "| overhead beyond JSON (RSS)                              | {:>8.0} B   | < 2048 B    |",
        rss_per_obj - json_per_obj
    );
    println!(
        "| overhead beyond JSON (live heap)                        | {:>8.0} B   | < 2048 B    |",
        heap_per_obj - json_per_obj
    );
    cluster.shutdown().await;
}
