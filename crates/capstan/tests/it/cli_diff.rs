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

/// Kills the devcluster when the test ends, however it ends.
struct Cluster(std::process::Child);

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The real thing: objects applied by `kubectl --server-side --field-manager=capstan` to the
/// embedded cluster and read back with their managedFields compare equal to the manifests, and a
/// field removed from the manifests shows as a removal.
#[test]
fn diff_against_objects_applied_with_real_kubectl() {
    let dir = std::env::temp_dir().join(format!("capstan-cli-diff-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let _cluster = Cluster(
        Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args(["devcluster", "--kubeconfig"])
            .arg(&kubeconfig)
            .env("CAPSTAN_LOG", "error")
            .spawn()
            .expect("start devcluster"),
    );
    // Readiness: the kubeconfig appears once the server accepts requests.
    for _ in 0..600 {
        if kubeconfig.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(kubeconfig.exists(), "devcluster did not start");

    let namespace = dir.join("ns.yaml");
    std::fs::write(
        &namespace,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n",
    )
    .unwrap();
    kubectl(
        &kubeconfig,
        &["apply", "--server-side", "-f", namespace.to_str().unwrap()],
    );
    let desired = std::fs::read_to_string(data("deployment-desired.yaml")).unwrap();
    let desired_path = dir.join("desired.yaml");
    std::fs::write(&desired_path, &desired).unwrap();
    kubectl(
        &kubeconfig,
        &[
            "apply",
            "--server-side",
            "--field-manager=capstan",
            "-f",
            desired_path.to_str().unwrap(),
        ],
    );
    let live = kubectl(
        &kubeconfig,
        &[
            "get",
            "deployment",
            "web",
            "-n",
            "shop",
            "-o",
            "yaml",
            "--show-managed-fields",
        ],
    );
    assert!(live.contains("manager: capstan"), "{live}");
    let live_path = dir.join("live.yaml");
    std::fs::write(&live_path, live).unwrap();

    let (d, l) = (desired_path.to_str().unwrap(), live_path.to_str().unwrap());
    let out = capstan_diff(&["--desired", d, "--live", l]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let edited = desired.replace(
        "            - name: FEATURE_X\n              value: \"on\"\n",
        "",
    );
    assert_ne!(
        edited, desired,
        "the test data holds the FEATURE_X variable"
    );
    std::fs::write(&desired_path, edited).unwrap();
    let out = capstan_diff(&["--desired", d, "--live", l]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("-        - name: FEATURE_X\n-          value: on\n"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
