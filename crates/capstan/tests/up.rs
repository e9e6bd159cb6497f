//! `capstan up` as a newcomer meets it when something is missing: each preflight failure names
//! what to do, and nothing is started.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STARTUP: Duration = Duration::from_secs(180);

/// Runs `capstan up` expecting it to fail before starting anything; returns its stderr.
fn up_fails(args: &[&str], data_dir: &Path, path_env: Option<&Path>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
    cmd.arg("up").args(args).arg("--data-dir").arg(data_dir);
    cmd.env_remove("CAPSTAN_HELM_LIB")
        .env("CAPSTAN_LOG", "error");
    if let Some(p) = path_env {
        cmd.env("PATH", p);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start capstan up");
    let deadline = Instant::now() + STARTUP;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("capstan up {args:?} kept running; it should have failed");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut stderr).expect("read stderr");
    }
    assert_eq!(
        status.code(),
        Some(2),
        "exit code 2 on error; stderr:\n{stderr}"
    );
    assert!(
        !data_dir.join("devcluster").exists(),
        "no cluster was started for a failed preflight"
    );
    stderr
}

#[test]
fn a_busy_ui_port_is_named_with_the_way_out() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("state");
    let stderr = up_fails(&["--listen", &addr], &data_dir, None);
    assert!(stderr.contains(&addr), "names the address: {stderr}");
    assert!(stderr.contains("--listen"), "suggests --listen: {stderr}");
    assert!(!data_dir.exists(), "nothing was created: {stderr}");
}

/// A directory holding links to just the named executables of the current PATH.
fn path_with(dir: &Path, tools: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    let path = std::env::var_os("PATH").expect("PATH");
    for tool in tools {
        let found = std::env::split_paths(&path)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{tool} is installed on this machine"));
        std::os::unix::fs::symlink(&found, dir.join(tool)).expect("symlink");
    }
    dir.to_path_buf()
}

#[test]
fn missing_tools_are_named_before_anything_starts() {
    let tmp = tempfile::tempdir().expect("tempdir");

    let bin = path_with(&tmp.path().join("no-tools"), &[]);
    let stderr = up_fails(
        &["--listen", "127.0.0.1:0"],
        &tmp.path().join("a"),
        Some(&bin),
    );
    assert!(stderr.contains("git is not installed"), "{stderr}");

    let bin = path_with(&tmp.path().join("git-only"), &["git"]);
    let stderr = up_fails(
        &["--listen", "127.0.0.1:0"],
        &tmp.path().join("b"),
        Some(&bin),
    );
    assert!(
        stderr.contains("Kustomize overlay") && stderr.contains("Install kubectl"),
        "{stderr}"
    );

    let bin = path_with(&tmp.path().join("git-kubectl"), &["git", "kubectl"]);
    let stderr = up_fails(
        &["--listen", "127.0.0.1:0"],
        &tmp.path().join("c"),
        Some(&bin),
    );
    assert!(
        stderr.contains("Helm's engine is missing") && stderr.contains("scripts/setup"),
        "{stderr}"
    );
}
