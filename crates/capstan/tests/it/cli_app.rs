//! `capstan install`, `capstan server` and `capstan app …` end to end: the built binary against
//! an in-process devcluster, with kubectl applying what `install` prints and a real Git
//! repository made with the `git` CLI.

use capstan_testkit::{GitRepo, temp_dir};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// Kills the server when the test ends, passed or not.
pub(crate) struct Server(pub(crate) Child);

impl Server {
    /// `capstan server` against the cluster of `kubeconfig`, refreshing every second, its API
    /// and metrics on free ports (announced on its stdout, which is piped), with `extra` flags.
    pub(crate) fn start(kubeconfig: &Path, cache: &Path, extra: &[&str]) -> Server {
        Server(
            Command::new(env!("CARGO_BIN_EXE_capstan"))
                .args(["server", "--reconcile-interval", "1s"])
                .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
                .arg("--cache-dir")
                .arg(cache)
                .args(extra)
                .env("KUBECONFIG", kubeconfig)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("capstan server starts"),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn capstan(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("CAPSTAN_USER", "cli-tester")
        .output()
        .expect("capstan runs")
}

pub(crate) fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_server_and_app_commands_deploy_an_application() {
    let cluster = devcluster::DevCluster::start(devcluster::Config::default())
        .await
        .unwrap();
    let kubeconfig = cluster.kubeconfig_path().to_path_buf();
    let tmp = temp_dir("cli-app-e2e");

    // `capstan install` output is accepted by kubectl (CRD schema, RBAC, Deployment).
    let manifests = ok(capstan(&kubeconfig, &["install"]), "capstan install");
    let mut apply = Command::new("kubectl")
        .args(["apply", "-f", "-", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        apply
            .stdin
            .take()
            .unwrap()
            .write_all(manifests.as_bytes())
            .unwrap();
    }
    let applied = ok(apply.wait_with_output().unwrap(), "kubectl apply");
    assert!(
        applied.contains("customresourcedefinition.apiextensions.k8s.io/applications.capstan.dev"),
        "{applied}"
    );
    let ns = Command::new("kubectl")
        .args(["create", "namespace", "demo", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    ok(ns, "kubectl create namespace");

    // A repository with one ConfigMap.
    let repo = GitRepo::init(tmp.path().join("repo"));
    repo.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-git\ndata:\n  greeting: hello\n",
    );
    repo.commit("first");

    let cache = tmp.path().join("cache");
    let mut server = Server::start(&kubeconfig, &cache, &["--identity", "cli-test-server"]);
    let announced = read_announcement(&mut server.0);

    let repo_url = repo.path().display().to_string();
    ok(
        capstan(
            &kubeconfig,
            &[
                "app",
                "create",
                "hello",
                "--repo",
                &repo_url,
                "--path",
                "app",
                "--revision",
                "main",
                "--dest-namespace",
                "demo",
            ],
        ),
        "app create",
    );
    // Not automated: a manual sync with --wait reports the objects.
    let synced = ok(
        capstan(
            &kubeconfig,
            &["app", "sync", "hello", "--wait", "--timeout", "2m"],
        ),
        "app sync --wait",
    );
    assert!(synced.contains("Succeeded"), "{synced}");
    assert!(synced.contains("ConfigMap demo/from-git"), "{synced}");
    ok(
        capstan(
            &kubeconfig,
            &["app", "wait", "hello", "--sync", "--timeout", "2m"],
        ),
        "app wait",
    );

    let list: Value = serde_json::from_str(&ok(
        capstan(&kubeconfig, &["app", "list", "-o", "json"]),
        "list",
    ))
    .unwrap();
    assert_eq!(list[0]["metadata"]["name"], "hello");
    assert_eq!(list[0]["status"]["sync"]["status"], "Synced");
    let history: Value = serde_json::from_str(&ok(
        capstan(&kubeconfig, &["app", "history", "hello", "-o", "json"]),
        "history",
    ))
    .unwrap();
    assert_eq!(history[0]["id"], 0);
    assert_eq!(history[0]["initiatedBy"]["username"], "cli-tester");

    // kubectl sees the object and the printer columns of the CRD.
    let cm = Command::new("kubectl")
        .args([
            "get",
            "configmap",
            "from-git",
            "-n",
            "demo",
            "-o",
            "json",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    let cm: Value = serde_json::from_str(&ok(cm, "kubectl get cm")).unwrap();
    assert_eq!(cm["data"]["greeting"], "hello");
    let table = Command::new("kubectl")
        .args(["get", "applications", "-n", "capstan", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    let table = ok(table, "kubectl get applications");
    assert!(table.contains("SYNC STATUS"), "{table}");
    assert!(table.contains("Synced"), "{table}");

    // diff: in sync → exit 0.
    let diff = capstan(&kubeconfig, &["app", "diff", "hello"]);
    assert_eq!(diff.status.code(), Some(0));

    // A two-wave sync with --wait shows the phase, each wave, each object's result and the
    // health of the wave it waits for, one line per change.
    repo.write(
        "layered/web.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations:\n    capstan.dev/sync-wave: \"0\"\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: main\n        image: example.invalid/web:1\n",
    );
    repo.write(
        "layered/after.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: after\n  annotations:\n    capstan.dev/sync-wave: \"1\"\ndata:\n  key: v\n",
    );
    repo.commit("layered");
    ok(
        capstan(
            &kubeconfig,
            &[
                "app",
                "create",
                "layered",
                "--repo",
                &repo_url,
                "--path",
                "layered",
                "--revision",
                "main",
                "--dest-namespace",
                "demo",
            ],
        ),
        "app create layered",
    );
    let progress = ok(
        capstan(
            &kubeconfig,
            &["app", "sync", "layered", "--wait", "--timeout", "2m"],
        ),
        "app sync layered --wait",
    );
    let lines: Vec<&str> = progress.lines().map(str::trim).collect();
    let position = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{progress}"))
    };
    let wave0 = position("operation Running: Sync wave 0 (1/2)");
    let web = position("Synced       Deployment demo/web (Sync wave 0)");
    let healthy = position("health       Deployment demo/web Healthy");
    let wave1 = position("operation Running: Sync wave 1 (2/2)");
    let after = position("Synced       ConfigMap demo/after (Sync wave 1)");
    let done = position("operation Succeeded");
    assert!(
        wave0 < web && web < healthy && healthy < wave1,
        "{progress}"
    );
    assert!(wave1 < after && after < done, "{progress}");
    // One line per change: no line repeats.
    let mut seen = std::collections::HashSet::new();
    for l in &lines {
        assert!(seen.insert(*l), "{l:?} printed twice:\n{progress}");
    }
    // app wait on a finished operation returns at once with the row.
    let waited = ok(
        capstan(
            &kubeconfig,
            &["app", "wait", "layered", "--health", "--timeout", "2m"],
        ),
        "app wait layered --health",
    );
    assert!(waited.contains("Healthy"), "{waited}");
    // terminate-op with nothing running is refused (exit 2, the reason on stderr).
    let refused = capstan(&kubeconfig, &["app", "terminate-op", "layered"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("no operation to terminate"),
        "{refused:?}"
    );

    // The same process serves the HTTP API: log in with the password it printed, list.
    let http = reqwest::Client::new();
    let api = &announced.api;
    let login = http
        .post(format!("{api}/api/v1/session"))
        .json(&serde_json::json!({"username": "admin", "password": announced.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200, "login with the printed password");
    let token = login.json::<Value>().await.unwrap()["token"]
        .as_str()
        .expect("a bearer token")
        .to_string();
    let wrong = http
        .post(format!("{api}/api/v1/session"))
        .json(&serde_json::json!({"username": "admin", "password": "not-it"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401, "another password is refused");
    let page: Value = http
        .get(format!("{api}/api/v1/applications"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 2, "{page}");
    let mut names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["hello", "layered"], "{page}");

    // Its metrics listener shows the controller's sync and reconciles, without a session.
    let metrics = http
        .get(format!("{}/metrics", announced.metrics))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let succeeded = sample(&metrics, "capstan_syncs_total{result=\"Succeeded\"}");
    assert!(succeeded >= 1.0, "{metrics}");
    assert!(
        sample(&metrics, "capstan_reconcile_duration_seconds_count") > 0.0,
        "{metrics}"
    );
    assert!(
        sample(&metrics, "capstan_git_fetch_duration_seconds_count") > 0.0,
        "{metrics}"
    );
    assert!(
        sample(&metrics, "capstan_render_duration_seconds_count") > 0.0,
        "{metrics}"
    );
    // One replica, one shard: it leads through the shard's Lease.
    assert_eq!(sample(&metrics, "capstan_shards"), 1.0, "{metrics}");
    assert_eq!(sample(&metrics, "capstan_shards_held"), 1.0, "{metrics}");
    assert_eq!(lease_holder(&kubeconfig), "cli-test-server");

    // SIGTERM stops both the controller and the API, with a clean exit.
    let pid = server.0.id().to_string();
    ok(
        Command::new("kill").args(["-TERM", &pid]).output().unwrap(),
        "kill -TERM",
    );
    let status = server.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "capstan server exits cleanly");
    // ... having released its lease, so that a standby takes over at once.
    assert_eq!(lease_holder(&kubeconfig), "");
}

/// The holder of the one shard's Lease, as kubectl shows it.
fn lease_holder(kubeconfig: &Path) -> String {
    let out = Command::new("kubectl")
        .args([
            "get",
            "lease",
            "capstan-controller-shard-0",
            "-n",
            "capstan",
            "-o",
            "jsonpath={.spec.holderIdentity}",
            "--kubeconfig",
        ])
        .arg(kubeconfig)
        .output()
        .unwrap();
    ok(out, "kubectl get lease")
}

/// What `capstan server` prints at start.
struct Announced {
    api: String,
    metrics: String,
    password: String,
}

/// Reads the server's stdout until it announced the API, the metrics endpoint and the admin
/// password (first start on a fresh cluster).
fn read_announcement(child: &mut Child) -> Announced {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let (mut api, mut metrics, mut password) = (None, None, None);
    while api.is_none() || metrics.is_none() || password.is_none() {
        let line = lines
            .next()
            .expect("capstan server announces the API, metrics and the password before exiting")
            .unwrap();
        if let Some(rest) = line.strip_prefix("capstan: API on ") {
            api = Some(rest.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("capstan: metrics on ") {
            metrics = Some(rest.trim().trim_end_matches("/metrics").to_string());
        } else if line.starts_with("capstan: initial password of user admin") {
            password = line.rsplit(": ").next().map(str::to_string);
        }
    }
    // Keep draining so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Announced {
        api: api.unwrap(),
        metrics: metrics.unwrap(),
        password: password.unwrap(),
    }
}

/// The value of the sample `series` (name with labels) in a Prometheus text exposition.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}
