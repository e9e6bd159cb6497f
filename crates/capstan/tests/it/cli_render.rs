//! `capstan render` end to end: the built binary against a real Git repository made in a
//! temporary directory, compared with `kubectl kustomize` run on the same files.

use capstan_testkit::{GitRepo, copy_dir, git, parse_stream, sorted, temp_dir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../capstan-render/tests/data")
}

/// A repository with the render fixtures committed on `main`, tagged `v1.0.0`.
fn make_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    copy_dir(&fixtures(), &repo);
    let git_repo = GitRepo::init(&repo);
    git_repo.commit("fixtures");
    git_repo.git(&["tag", "v1.0.0"]);
    repo
}

fn capstan(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capstan"))
        .arg("render")
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .env("CAPSTAN_LOG", "info")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[test]
fn renders_a_kustomize_overlay_from_git_like_kubectl_and_caches_it() {
    let tmp = temp_dir("cli-render-kustomize");
    let repo = make_repo(tmp.path());
    let cache = tmp.path().join("cache");
    let repo_arg = repo.to_str().unwrap();
    let out = capstan(
        &cache,
        &["--repo", repo_arg, "--path", "kustomize/overlays/prod"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = parse_stream(&String::from_utf8(out.stdout).unwrap());
    let kubectl = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo.join("kustomize/overlays/prod"))
        .output()
        .unwrap();
    assert!(kubectl.status.success());
    let want = sorted(parse_stream(&String::from_utf8(kubectl.stdout).unwrap()));
    assert_eq!(got, want);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("from_cache=false"), "{stderr}");

    // Same commit again: answered from the on-disk manifest cache.
    let again = capstan(
        &cache,
        &[
            "--repo",
            repo_arg,
            "--path",
            "kustomize/overlays/prod",
            "-o",
            "json",
        ],
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("from_cache=true"), "{stderr}");
    let json: Vec<Value> = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(json, want);
}

#[test]
fn renders_a_helm_chart_at_a_revision_with_values_and_parameters() {
    let tmp = temp_dir("cli-render-helm");
    let repo = make_repo(tmp.path());
    let cache = tmp.path().join("cache");
    // A later commit on main changes the chart's default replica count.
    let values = repo.join("helm/web/values.yaml");
    let text = std::fs::read_to_string(&values)
        .unwrap()
        .replace("replicaCount: 1", "replicaCount: 2");
    std::fs::write(&values, text).unwrap();
    git(&repo, &["commit", "-q", "-am", "two replicas"]);

    let deployment = |args: &[&str]| -> Value {
        let mut all = vec![
            "--repo",
            repo.to_str().unwrap(),
            "--path",
            "helm/web",
            "-o",
            "json",
        ];
        all.extend_from_slice(args);
        let out = capstan(&cache, &all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let objects: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        objects
            .into_iter()
            .find(|o| o["kind"] == "Deployment")
            .unwrap()
    };
    assert_eq!(deployment(&[])["spec"]["replicas"], 2);
    assert_eq!(deployment(&["--revision", "v1.0.0"])["spec"]["replicas"], 1);
    let d = deployment(&[
        "--revision",
        "main",
        "--helm-values",
        "envs/values-prod.yaml",
        "--helm-set",
        "image.tag=2.0.1",
        "--helm-set-string",
        "extraLabels.build=42",
        "--release-name",
        "shop",
        "--namespace",
        "prod",
    ]);
    assert_eq!(d["metadata"]["name"], "shop-web");
    assert_eq!(d["metadata"]["namespace"], "prod");
    assert_eq!(d["spec"]["replicas"], 4);
    assert_eq!(d["metadata"]["labels"]["build"], "42");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2.0.1"
    );
}

#[test]
fn bad_input_fails_with_a_clear_message_and_no_output() {
    let tmp = temp_dir("cli-render-errors");
    let repo = make_repo(tmp.path());
    let cache = tmp.path().join("cache");
    let repo_arg = repo.to_str().unwrap();
    for (args, expected) in [
        (
            vec!["--path", "../x"],
            "source path \"../x\" is outside the repository",
        ),
        (vec!["--path", "helm/broken"], "broken/templates/cm.yaml:6"),
        (
            vec!["--path", "does/not/exist"],
            "does not exist in the repository",
        ),
        (
            vec!["--path", "helm/web", "--helm-set", "novalue"],
            "expected KEY=VALUE",
        ),
        (vec!["--revision", "no-such-branch"], "no-such-branch"),
    ] {
        let mut all = vec!["--repo", repo_arg];
        all.extend(args.iter().copied());
        let out = capstan(&cache, &all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: no partial output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn a_symlink_out_of_the_repository_is_named_in_the_error() {
    let tmp = temp_dir("cli-render-symlink");
    let repo = make_repo(tmp.path());
    let cache = tmp.path().join("cache");
    let app = repo.join("kustomize/leak");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("kustomization.yaml"),
        "resources:\n- passwd.yaml\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", app.join("passwd.yaml")).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "leak"]);
    let out = capstan(
        &cache,
        &["--repo", repo.to_str().unwrap(), "--path", "kustomize/leak"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kustomize/leak/passwd.yaml is a symlink pointing outside the repository"),
        "{stderr}"
    );
}

/// The names of the materialized trees in the cache.
fn trees(cache: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache.join("repos/trees"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') && !n.contains('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn age(path: &Path, ago: &str) {
    let out = Command::new("touch")
        .args(["-h", "-d", ago])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_user_cache_loses_trees_unused_for_a_week_once_a_day() {
    let tmp = temp_dir("cli-render-prune");
    let repo = GitRepo::init(tmp.path().join("repo"));
    repo.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
    );
    repo.commit("one");
    let cache = tmp.path().join("cache");
    let render = |what: &str| {
        let out = capstan(
            &cache,
            &["--repo", repo.path().to_str().unwrap(), "--path", "app"],
        );
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    render("first");
    let old = trees(&cache);
    assert_eq!(old.len(), 1, "{old:?}");
    repo.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n",
    );
    repo.commit("two");

    // Pruned yesterday: the old tree stays, however old it is.
    age(&cache.join("repos/trees").join(&old[0]), "10 days ago");
    age(&cache.join("repos/.last-prune"), "2 hours ago");
    render("second");
    let both = trees(&cache);
    assert_eq!(both.len(), 2, "{both:?}");

    // A day later the tree unused for ten days goes; the one just used stays.
    age(&cache.join("repos/.last-prune"), "25 hours ago");
    render("third");
    let left = trees(&cache);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_ne!(left, old);
}
