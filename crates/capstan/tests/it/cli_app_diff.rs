//! `capstan app diff` end to end: the built binary against an in-process devcluster and a real
//! Git repository. The first commit is deployed by a controller that is then stopped, so only
//! Git changes afterwards; the exit codes are kubectl diff's (0 same, 1 different, 2 error).

use base64::Engine as _;
use capstan_testkit::{GitRepo, start_cluster, wait_for_app};
use kube::api::Api;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const OLD_SECRET: &str = "cli-first-s3cret-value";
const NEW_SECRET: &str = "cli-second-s3cret-value";

fn commit(repo: &GitRepo, key: &str, password: &str) -> String {
    repo.write(
        "app/cm.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  key: {key}\n"
        ),
    );
    repo.write(
        "app/secret.yaml",
        &format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: {password}\n"),
    );
    repo.commit(key)
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn capstan(kubeconfig: &Path, cache: &Path, args: &[&str]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("capstan runs");
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    for value in [OLD_SECRET, NEW_SECRET] {
        // How the API server stores Secret data.
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        for text in [&run.stdout, &run.stderr] {
            assert!(
                !text.contains(value) && !text.contains(&encoded),
                "a Secret value leaks: {text}"
            );
        }
    }
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_diff_prints_what_git_changed_with_kubectl_diff_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = GitRepo::init(tmp.path().join("repo"));
    let first = commit(&repo, "old", OLD_SECRET);

    let cluster = start_cluster(&["capstan", "demo"]).await;
    let client = cluster.client();
    let kubeconfig: PathBuf = cluster.kubeconfig_path().to_path_buf();
    let cache = tmp.path().join("cli-cache");
    let repo_url = repo.path().display().to_string();
    let created = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args([
            "app",
            "create",
            "settings",
            "--repo",
            &repo_url,
            "--path",
            "app",
            "--revision",
            "main",
            "--dest-namespace",
            "demo",
            "--auto-sync",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );

    // A controller deploys the first commit, then stops: from here on only Git changes.
    let controller = capstan_controller::Controller::new(
        client.clone(),
        capstan_controller::Config {
            cache_dir: tmp.path().join("controller-cache"),
            ..capstan_controller::Config::default()
        },
    )
    .unwrap();
    let running = tokio::spawn(controller.run());
    let apps: Api<capstan_api::application::Application> =
        Api::namespaced(client.clone(), "capstan");
    wait_for_app(
        &apps,
        "settings",
        "the first commit deployed (Synced)",
        |a| {
            a.status
                .as_ref()
                .and_then(|s| s.sync.as_ref())
                .is_some_and(|s| s.status == "Synced" && s.revision == first)
        },
    )
    .await;
    running.abort();
    let _ = running.await;

    // In sync: exit 0, nothing printed.
    let run = capstan(&kubeconfig, &cache, &["app", "diff", "settings"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "");

    // Git changes the ConfigMap and the Secret and adds an object: exit 1, a header and the
    // diff per object, Secret values masked.
    commit(&repo, "new", NEW_SECRET);
    repo.write(
        "app/extra.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  added: here\n",
    );
    repo.commit("extra");
    let run = capstan(&kubeconfig, &cache, &["app", "diff", "settings"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let headers: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("====="))
        .collect();
    assert_eq!(
        headers,
        vec![
            "===== /ConfigMap demo/extra (Missing) ======",
            "===== /ConfigMap demo/settings (OutOfSync) ======",
            "===== /Secret demo/creds (OutOfSync) ======",
        ],
        "{}",
        run.stdout
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines.contains(&"-  key: old"), "{}", run.stdout);
    assert!(lines.contains(&"+  key: new"), "{}", run.stdout);
    assert!(lines.contains(&"+  added: here"), "{}", run.stdout);
    assert!(
        lines.contains(&"--- live Secret demo/creds"),
        "{}",
        run.stdout
    );

    // The deployed commit, named with --revision: no differences.
    let run = capstan(
        &kubeconfig,
        &cache,
        &["app", "diff", "settings", "--revision", &first],
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);

    // A broken manifest: exit 2, the error names the file and the application.
    repo.write(
        "app/broken.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed\n",
    );
    repo.commit("broken");
    let run = capstan(&kubeconfig, &cache, &["app", "diff", "settings"]);
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(run.stderr.contains("broken.yaml"), "{}", run.stderr);
    assert!(run.stderr.contains("capstan/settings"), "{}", run.stderr);
    assert_eq!(run.stdout, "");

    // An application that does not exist: exit 2, named.
    let run = capstan(&kubeconfig, &cache, &["app", "diff", "nope"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("nope"), "{}", run.stderr);
}
