//! `capstan up` as a newcomer runs it: the real binary, its printed instructions followed to the
//! letter (the URL, the password, the `export KUBECONFIG=…` line), the example applications
//! watched until they are Synced and Healthy, Ctrl-C, and a second start on the same state.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use capstan_api::application::Application;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;

/// Generous: the machine is shared, and the first start renders every example twice (the
/// preflight check and the controller).
const STARTUP: Duration = Duration::from_secs(180);
const CONVERGE: Duration = Duration::from_secs(180);
const STOP: Duration = Duration::from_secs(60);

/// A running `capstan up`, its stdout read line by line. Killed if the test fails midway.
struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: PathBuf,
}

/// What the banner told the user.
#[derive(Debug)]
struct Banner {
    ui: String,
    password: Option<String>,
    password_line: String,
    kubeconfig: PathBuf,
    repo: PathBuf,
    repo_line: String,
}

impl Up {
    fn start(data_dir: &Path, stderr: PathBuf) -> Up {
        let err = std::fs::File::create(&stderr).expect("create the stderr file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args([
                "up",
                "--listen",
                "127.0.0.1:0",
                "--reconcile-interval",
                "5s",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("start capstan up");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Up {
            child,
            lines: rx,
            seen: Vec::new(),
            stderr,
        }
    }

    fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The next printed line matching `pred`, or a panic showing what was printed.
    fn wait_for_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "capstan up never printed {what} within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.seen.join("\n"),
                    self.stderr_tail()
                ),
            }
        }
    }

    /// Reads the banner, up to the Ctrl-C line that ends it.
    fn banner(&mut self) -> Banner {
        self.wait_for_line("the Ctrl-C line", STARTUP, |l| {
            l.starts_with("Ctrl-C stops everything")
        });
        let field = |label: &str| -> String {
            self.seen
                .iter()
                .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("no {label:?} line in {:#?}", self.seen))
        };
        let ui = field("Web UI:");
        let password_line = field("Password:");
        let password = (!password_line.starts_with('(')).then(|| {
            password_line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string()
        });
        let export = field("Kubernetes:");
        let kubeconfig = PathBuf::from(
            export
                .strip_prefix("export KUBECONFIG=")
                .unwrap_or_else(|| panic!("not an export line: {export}")),
        );
        let repo_line = field("Example repo:");
        let repo = PathBuf::from(repo_line.split_whitespace().next().unwrap_or_default());
        Banner {
            ui,
            password,
            password_line,
            kubeconfig,
            repo,
            repo_line,
        }
    }

    /// Sends SIGINT (what Ctrl-C sends) and waits for the process to exit.
    fn interrupt(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -INT failed");
        let deadline = Instant::now() + STOP;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for capstan up") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "capstan up did not stop within {STOP:?} of SIGINT\nstderr:\n{}",
                self.stderr_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every line printed so far and until the stream ends (after exit).
    fn drain(&mut self) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        self.seen.clone()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The Application names of `examples/apps/` (one file per application, named after it).
fn example_apps() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/apps");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("read examples/apps")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.file_stem().expect("stem").to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.len() >= 6,
        "the examples have at least six apps: {names:?}"
    );
    names
}

async fn client(kubeconfig: &Path) -> kube::Client {
    // Two rustls backends are linked into this test: rustls wants one chosen explicitly.
    capstan_controller::ensure_crypto_provider();
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("read the printed kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("use the printed kubeconfig");
    kube::Client::try_from(config).expect("client")
}

/// Waits until every expected Application is Synced and Healthy; returns their statuses.
async fn wait_all_healthy(client: &kube::Client, expected: &[String], up: &Up) {
    let api: Api<Application> = Api::namespaced(client.clone(), "capstan");
    let deadline = Instant::now() + CONVERGE;
    let mut last = String::new();
    loop {
        if let Ok(list) = api.list(&Default::default()).await {
            let mut states: Vec<(String, String, String)> = list
                .items
                .iter()
                .map(|a| {
                    let s = a.status.clone().unwrap_or_default();
                    (
                        a.metadata.name.clone().unwrap_or_default(),
                        s.sync.map(|s| s.status).unwrap_or_default(),
                        s.health.map(|h| h.status).unwrap_or_default(),
                    )
                })
                .collect();
            states.sort();
            let names: Vec<String> = states.iter().map(|s| s.0.clone()).collect();
            if names == expected
                && states
                    .iter()
                    .all(|(_, sync, health)| sync == "Synced" && health == "Healthy")
            {
                return;
            }
            last = format!("{states:?}");
        }
        assert!(
            Instant::now() < deadline,
            "the applications were not all Synced and Healthy within {CONVERGE:?}: {last}\nstderr:\n{}",
            up.stderr_tail()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The Deployment `name` in `namespace`: desired and available replicas, tracking annotation.
async fn deployment(client: &kube::Client, namespace: &str, name: &str) -> (i32, i32, String) {
    let d = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("Deployment {namespace}/{name}: {e}"));
    let tracking = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("capstan.dev/tracking-id"))
        .cloned()
        .unwrap_or_default();
    (
        d.spec.and_then(|s| s.replicas).unwrap_or_default(),
        d.status
            .and_then(|s| s.available_replicas)
            .unwrap_or_default(),
        tracking,
    )
}

/// Logs in through the HTTP API as the user would from the printed lines; returns the status
/// and, on success, the bearer token.
async fn login(ui: &str, password: &str) -> (u16, Option<String>) {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}api/v1/session", ui))
        .json(&serde_json::json!({"username": "admin", "password": password}))
        .send()
        .await
        .expect("POST /api/v1/session");
    let status = r.status().as_u16();
    let token = if status == 200 {
        let body: serde_json::Value = r.json().await.expect("login answer is JSON");
        body["token"].as_str().map(str::to_string)
    } else {
        None
    };
    (status, token)
}

fn git_authors(repo: &Path) -> String {
    let out = Command::new("git")
        .args(["log", "--format=%an|%cn"])
        .current_dir(repo)
        .output()
        .expect("run git log");
    assert!(
        out.status.success(),
        "git log in {}: {:?}",
        repo.display(),
        out
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn up_deploys_every_example_and_resumes_after_ctrl_c() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("state");
    let expected = example_apps();
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    // First start: a fresh machine.
    let mut up = Up::start(&data_dir, tmp.path().join("stderr-1"));
    let banner = up.banner();
    assert!(banner.ui.starts_with("http://127.0.0.1:"), "{banner:?}");
    assert!(banner.ui.ends_with('/'), "{banner:?}");
    let password = banner
        .password
        .clone()
        .unwrap_or_else(|| panic!("a fresh start prints the admin password: {banner:?}"));
    assert!(password.len() >= 12, "a real password: {banner:?}");
    assert!(
        banner.password_line.contains("shown only this once"),
        "{banner:?}"
    );
    assert!(
        banner.kubeconfig.is_absolute() && banner.kubeconfig.is_file(),
        "{banner:?}"
    );
    assert!(
        banner.repo.is_absolute() && banner.repo.join(".git").is_dir(),
        "{banner:?}"
    );
    assert!(banner.repo_line.contains("created now"), "{banner:?}");
    assert_eq!(git_authors(&banner.repo), "capstan up|capstan up");

    let first_ui = banner.ui.clone();
    rt.block_on(async {
        let client = client(&banner.kubeconfig).await;
        wait_all_healthy(&client, &expected, &up).await;

        // What each example deploys, in its own namespace, tracked by its application.
        for (ns, name, replicas, app) in [
            ("guestbook-dev", "guestbook-ui-dev", 1, "guestbook-dev"),
            (
                "guestbook-staging",
                "guestbook-ui-staging",
                2,
                "guestbook-staging",
            ),
            ("guestbook-prod", "guestbook-ui-prod", 3, "guestbook-prod"),
            ("podinfo-dev", "podinfo", 1, "podinfo-dev"),
            ("podinfo-prod", "podinfo", 2, "podinfo-prod"),
            ("hello-jsonnet", "hello-dev", 2, "hello-jsonnet"),
        ] {
            let (desired, available, tracking) = deployment(&client, ns, name).await;
            assert_eq!((desired, available), (replicas, replicas), "{ns}/{name}");
            assert!(
                tracking.starts_with(&format!("capstan_{app}:")),
                "{ns}/{name} is tracked by {app}: {tracking:?}"
            );
        }

        // What the banner invites: edit the example repository, commit, and it is deployed.
        let overlay = banner.repo.join("guestbook/overlays/dev/kustomization.yaml");
        let text = std::fs::read_to_string(&overlay).expect("read the dev overlay");
        let edited = text.replacen("count: 1", "count: 2", 1);
        assert_ne!(text, edited, "the dev overlay sets 1 replica");
        std::fs::write(&overlay, edited).expect("edit the dev overlay");
        let out = Command::new("git")
            .args(["-c", "user.name=newcomer", "-c", "user.email=newcomer@localhost"])
            .args(["commit", "--quiet", "--all", "--message", "dev: two replicas"])
            .current_dir(&banner.repo)
            .output()
            .expect("git commit");
        assert!(out.status.success(), "git commit: {out:?}");
        let deadline = Instant::now() + CONVERGE;
        loop {
            let (desired, available, _) = deployment(&client, "guestbook-dev", "guestbook-ui-dev").await;
            if (desired, available) == (2, 2) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the commit was not deployed within {CONVERGE:?}: {desired} desired, {available} available\nstderr:\n{}",
                up.stderr_tail()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        wait_all_healthy(&client, &expected, &up).await;

        // The printed password logs in; a wrong one does not; the session reads the apps.
        let (status, _) = login(&banner.ui, "not-the-password").await;
        assert_eq!(status, 401, "a wrong password is refused");
        let (status, token) = login(&banner.ui, &password).await;
        assert_eq!(status, 200, "the printed password logs in");
        let token = token.expect("a bearer token");
        let body = reqwest::Client::new()
            .get(format!("{}api/v1/applications", banner.ui))
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET /api/v1/applications")
            .text()
            .await
            .expect("body");
        for app in &expected {
            assert!(
                body.contains(&format!("\"{app}\"")),
                "{app} listed by the API: {body}"
            );
        }
        // The web UI itself is served on the printed URL.
        let page = reqwest::get(&banner.ui).await.expect("GET the UI");
        assert_eq!(page.status().as_u16(), 200, "the UI page");
        let html = page.text().await.expect("the UI page");
        assert!(html.contains("<html"), "an HTML page: {html}");
    });
    up.wait_for_line("the all-healthy summary", CONVERGE, |l| {
        l.starts_with(&format!(
            "{0}/{0} applications Synced+Healthy",
            expected.len()
        ))
    });

    let status = up.interrupt();
    assert!(
        status.success(),
        "clean exit on Ctrl-C: {status:?}\nstderr:\n{}",
        up.stderr_tail()
    );
    let stderr = std::fs::read_to_string(&up.stderr).unwrap_or_default();
    assert!(stderr.contains("capstan: stopped"), "stderr:\n{stderr}");
    drop(up);

    // Second start on the same state: no new password, the same repository, the apps intact.
    let mut up = Up::start(&data_dir, tmp.path().join("stderr-2"));
    let banner = up.banner();
    assert_eq!(
        banner.password, None,
        "no new password on restart: {banner:?}"
    );
    assert!(
        banner.password_line.contains("set at the first start"),
        "{banner:?}"
    );
    assert!(
        banner.repo_line.contains("since the first start"),
        "{banner:?}"
    );
    assert_eq!(
        git_authors(&banner.repo),
        "newcomer|newcomer\ncapstan up|capstan up",
        "the repository is the user's, not recreated"
    );
    rt.block_on(async {
        let client = client(&banner.kubeconfig).await;
        let apps: Api<Application> = Api::namespaced(client.clone(), "capstan");
        let names: Vec<String> = apps
            .list(&Default::default())
            .await
            .expect("list Applications")
            .items
            .into_iter()
            .filter_map(|a| a.metadata.name)
            .collect();
        assert_eq!(
            names.len(),
            expected.len(),
            "no duplicated Applications: {names:?}"
        );
        wait_all_healthy(&client, &expected, &up).await;
        let (desired, available, _) =
            deployment(&client, "guestbook-prod", "guestbook-ui-prod").await;
        assert_eq!((desired, available), (3, 3));
        let (desired, _, _) = deployment(&client, "guestbook-dev", "guestbook-ui-dev").await;
        assert_eq!(desired, 2, "the user's commit is still what is deployed");
        let (status, _) = login(&banner.ui, &password).await;
        assert_eq!(status, 200, "the first password still logs in");
    });
    up.wait_for_line("the all-healthy summary", CONVERGE, |l| {
        l.contains(" applications Synced+Healthy. See them at")
    });
    let status = up.interrupt();
    assert!(
        status.success(),
        "clean exit on Ctrl-C: {status:?}\nstderr:\n{}",
        up.stderr_tail()
    );
    let printed = up.drain().join("\n");
    assert!(
        !printed.contains(&password),
        "the password is never printed again:\n{printed}"
    );
    assert!(!first_ui.is_empty());
}

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
