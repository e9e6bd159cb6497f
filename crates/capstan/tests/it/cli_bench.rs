//! `capstan bench scale` and `bench shards` end to end on a tiny scale: the built binary starts
//! its embedded cluster, Git repository, controller replicas (and webhook server), and prints one
//! JSON object with every figure. No timing is asserted (the machine is shared); only that every
//! figure is there and makes sense.

use std::process::Command;

const FIGURES: &[&str] = &[
    "apps",
    "objects_per_app",
    "concurrency",
    "seconds_to_synced",
    "apps_per_second",
    "capstan_objects_per_second",
    "raw_apply_seconds",
    "raw_apply_objects_per_second",
    "raw_ratio",
    "raw_apply_to_healthy_seconds",
    "raw_apply_to_healthy_objects_per_second",
    "raw_to_healthy_ratio",
    "controller_cpu_seconds_to_synced",
    "refresh_seconds",
    "refresh_cpu_ms_per_app",
    "refresh_cluster_cpu_ms_per_app",
    "requested_refresh_seconds",
    "requested_refresh_cpu_ms_per_app",
    "requested_refresh_cluster_cpu_ms_per_app",
    "peak_rss_mib",
    "webhook_commits",
    "webhook_latency_ms_p50",
    "webhook_latency_ms_p90",
];

#[test]
fn bench_scale_prints_every_figure_as_one_json_object() {
    let out = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args([
            "bench",
            "scale",
            "--apps",
            "3",
            "--objects-per-app",
            "3",
            "-o",
            "json",
            "--timeout",
            "120s",
        ])
        .env("CAPSTAN_LOG", "warn")
        .output()
        .expect("the capstan binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one JSON object on stdout, got:\n{stdout}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("stdout is JSON");
    for key in FIGURES {
        let x = v[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} is missing or not a number in {v}"));
        assert!(x.is_finite() && x > 0.0, "{key} = {x} in {v}");
    }
    // Zero when no Git fetch ran a process during the refresh (fetches are coalesced).
    let children = v["refresh_child_process_cpu_ms_per_app"]
        .as_f64()
        .unwrap_or_else(|| panic!("refresh_child_process_cpu_ms_per_app missing in {v}"));
    assert!(children.is_finite() && children >= 0.0, "{v}");
    // Healthy comes after applied (round3 may make them equal when nothing had to roll out).
    assert!(
        v["raw_apply_to_healthy_seconds"].as_f64() >= v["raw_apply_seconds"].as_f64(),
        "{v}"
    );
    assert_eq!(v["apps"], serde_json::json!(3.0));
    assert_eq!(v["objects_per_app"], serde_json::json!(3.0));
    assert_eq!(v["webhook_commits"], serde_json::json!(5.0));
    for goal in ["apps_per_second", "raw_ratio", "refresh_cpu_ms_per_app"] {
        assert!(
            v["goals_met"][goal].is_boolean(),
            "goals_met.{goal} missing in {v}"
        );
    }
    assert!(
        v["peak_rss_note"].is_string(),
        "peak_rss_note missing in {v}"
    );
    // Progress goes to stderr, never into the JSON.
    assert!(
        stderr.contains("all Synced and Healthy"),
        "stderr:\n{stderr}"
    );
}

#[test]
fn bench_shards_moves_every_shard_and_prints_one_json_object() {
    let out = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args([
            "bench",
            "shards",
            "--apps",
            "6",
            "--shards",
            "3",
            "--lease-duration",
            "2s",
            "--idle-window",
            "1s",
            "-o",
            "json",
            "--timeout",
            "120s",
        ])
        .env("CAPSTAN_LOG", "warn")
        .output()
        .expect("the capstan binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one JSON object on stdout, got:\n{stdout}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("stdout is JSON");
    for key in [
        "leases_settled_seconds",
        "seconds_to_synced",
        "apps_per_second",
        "idle_cpu_ms_per_second",
        "idle_cpu_ms_per_second_per_replica",
        "takeover_seconds",
        "takeover_to_lease_duration_ratio",
        "failover_to_synced_seconds",
        "rebalance_seconds",
        "handover_seconds",
        "handover_to_lease_duration_ratio",
    ] {
        let x = v[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} is missing or not a number in {v}"));
        assert!(x.is_finite() && x > 0.0, "{key} = {x} in {v}");
    }
    assert_eq!(v["apps"], serde_json::json!(6.0));
    assert_eq!(v["replicas"], serde_json::json!(2.0));
    assert_eq!(v["shards"], serde_json::json!(3.0));
    assert_eq!(v["lease_duration_seconds"], serde_json::json!(2.0));
    // Three members (two replicas and the newcomer) over three shards: one for the newcomer.
    assert_eq!(v["newcomer_shards"], serde_json::json!(1.0));
    // The crashed replica held a shard: some applications had to move.
    assert!(v["failover_applications"].as_f64() > Some(0.0), "{v}");
    // Safety, not speed: a crash is only taken over once its lease expired (2 s after the
    // survivor last saw it renewed, at most one retry period, 0.27 s, before the crash).
    assert!(v["takeover_seconds"].as_f64() >= Some(1.5), "{v}");
}
