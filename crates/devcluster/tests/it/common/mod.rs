//! Helpers shared by the integration tests: a cluster per test, and the real kubectl binaries.

use std::path::{Path, PathBuf};
use std::process::Output;

use devcluster::{Config, DevCluster};

/// Starts an in-memory cluster on a free port.
pub async fn cluster() -> DevCluster {
    DevCluster::start(Config::default())
        .await
        .expect("devcluster starts")
}

/// The directory holding kubectl and its versioned siblings (kubectl.1.27 … kubectl.1.33).
pub fn kubectl_dir() -> PathBuf {
    let which = std::process::Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v kubectl)\""])
        .output()
        .expect("sh runs");
    let path = String::from_utf8_lossy(&which.stdout).trim().to_string();
    assert!(
        !path.is_empty(),
        "kubectl must be on the PATH for these tests"
    );
    Path::new(&path)
        .parent()
        .expect("kubectl has a directory")
        .to_path_buf()
}

/// Path of a kubectl binary: "kubectl" or a version such as "1.27".
pub fn kubectl_bin(version: &str) -> PathBuf {
    let dir = kubectl_dir();
    let bin = if version == "kubectl" {
        dir.join("kubectl")
    } else {
        dir.join(format!("kubectl.{version}"))
    };
    assert!(bin.exists(), "{} is missing", bin.display());
    bin
}

/// Result of one kubectl run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `bin args…` with KUBECONFIG set, feeding `stdin`.
pub async fn kubectl(bin: &Path, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig)
        .env(
            "HOME",
            kubeconfig.parent().expect("kubeconfig has a directory"),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("kubectl starts");
    let mut input = child.stdin.take().expect("stdin is piped");
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).await.expect("stdin accepts");
    }
    drop(input);
    child
        .wait_with_output()
        .await
        .expect("kubectl finishes")
        .into()
}

/// Like [`kubectl`], but fails the test when kubectl exits non-zero.
pub async fn kubectl_ok(
    bin: &Path,
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> String {
    let r = kubectl(bin, kubeconfig, args, stdin).await;
    assert_eq!(
        r.code, 0,
        "kubectl {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        r.code, r.stdout, r.stderr
    );
    r.stdout
}
