//! `capstan diff` as a user runs it: real files, the real binary, exit codes like `kubectl diff`.

use std::path::PathBuf;
use std::process::{Command, Output};

const CANARY: &str = "canary-Zq81vT0p";

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../capstan-engine/tests/data/diff")
        .join(name)
}

fn capstan_diff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capstan"))
        .arg("diff")
        .args(args)
        .env("CAPSTAN_LOG", "error")
        .output()
        .expect("run capstan")
}

fn paths(desired: &str, live: &str) -> (String, String) {
    (
        data(desired).display().to_string(),
        data(live).display().to_string(),
    )
}

#[test]
fn identical_state_exits_0_and_prints_nothing() {
    let (d, l) = paths("deployment-desired.yaml", "deployment-live.yaml");
    let out = capstan_diff(&["--desired", &d, "--live", &l]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn differences_exit_1_with_masked_unified_diffs() {
    let (d, l) = paths("cli-desired.yaml", "cli-live.yaml");
    let out = capstan_diff(&["--desired", &d, "--live", &l]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("--- live ConfigMap shop/settings\n+++ desired ConfigMap shop/settings"),
        "{stdout}"
    );
    assert!(
        stdout.contains("-  LOG_LEVEL: info\n+  LOG_LEVEL: debug"),
        "{stdout}"
    );
    // The Secret's password changed: a masked line per side; the user did not change.
    assert!(
        stdout.contains("-  password: +++++++++\n+  password: ++++++++"),
        "{stdout}"
    );
    assert!(!stdout.contains("-  user:"), "{stdout}");
    // Missing (CronJob) and extraneous (leftover ConfigMap) objects.
    assert!(
        stdout.contains("+++ desired batch/CronJob shop/report"),
        "{stdout}"
    );
    assert!(
        stdout.contains("--- live ConfigMap shop/leftover"),
        "{stdout}"
    );
    // The unchanged ServiceAccount prints nothing.
    assert!(!stdout.contains("ServiceAccount"), "{stdout}");
    assert!(
        !stdout.contains(CANARY)
            && !stdout.contains("old-password")
            && !stdout.contains("b2xkLXBhc3N3b3Jk")
    );
}

#[test]
fn json_output_lists_every_object() {
    let (d, l) = paths("cli-desired.yaml", "cli-live.yaml");
    let out = capstan_diff(&["--desired", &d, "--live", &l, "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains(CANARY), "{stdout}");
    let results: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    let statuses: Vec<(String, String)> = results
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = [
        ("settings", "OutOfSync"),
        ("db", "OutOfSync"),
        ("web", "Synced"),
        ("report", "Missing"),
        ("leftover", "Extraneous"),
    ];
    assert_eq!(
        statuses,
        expect.map(|(a, b)| (a.to_string(), b.to_string())).to_vec()
    );
    assert_eq!(results[2]["unified"], "");
    assert_eq!(
        results[1]["normalizedDesired"]["data"]["password"],
        "++++++++"
    );
}

#[test]
fn bad_input_exits_2_naming_the_file() {
    let (d, _) = paths("cli-desired.yaml", "cli-live.yaml");
    let out = capstan_diff(&["--desired", &d, "--live", "/nonexistent/live.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read /nonexistent/live.yaml"),
        "{stderr}"
    );

    let dir = std::env::temp_dir().join(format!("capstan-cli-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.yaml");
    std::fs::write(
        &broken,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nkind: [unclosed\n",
    )
    .unwrap();
    let out = capstan_diff(&["--desired", broken.to_str().unwrap(), "--live", &d]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("broken.yaml: document 2 is not valid YAML or JSON"),
        "{stderr}"
    );

    std::fs::write(
        &broken,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {namespace: x}\n",
    )
    .unwrap();
    let out = capstan_diff(&["--desired", broken.to_str().unwrap(), "--live", &d]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("broken.yaml: object #0 lacks apiVersion, kind or metadata.name"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
