//! `capstan install --self-manage`: Capstan installs itself into a cluster and then manages its
//! own installation from Git. The installation's manifests are committed to a repository,
//! `capstan install --apply` puts them in the cluster, and a `capstan server` (standing in for
//! the pod the devcluster only simulates) finds its Application `capstan` Synced with nothing
//! to do, rolls out an upgrade committed to Git, and never prunes the CRD or the namespace.

use crate::cli_app::{Server, capstan, ok};

use capstan_api::application::Application;
use capstan_testkit::{GitRepo, temp_dir, wait_for_app};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use std::io::BufRead;
use std::time::Duration;

fn image_of(deployment: &Deployment) -> String {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

fn sync_of(app: &Application) -> (String, String, String) {
    let status = app.status.clone().unwrap_or_default();
    (
        status
            .sync
            .as_ref()
            .map(|s| s.status.clone())
            .unwrap_or_default(),
        status
            .health
            .as_ref()
            .map(|h| h.status.clone())
            .unwrap_or_default(),
        status.sync.map(|s| s.revision).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capstan_installs_itself_and_manages_its_installation_from_git() {
    let cluster = devcluster::DevCluster::start(devcluster::Config::default())
        .await
        .expect("devcluster starts");
    let kubeconfig = cluster.kubeconfig_path().to_path_buf();
    let client = cluster.client();
    let tmp = temp_dir("install-self-managed");
    let repo = GitRepo::init(tmp.path().join("platform"));
    let repo_url = repo.path().display().to_string();
    let install = |extra: &[&str]| {
        let mut args = vec![
            "install",
            "--self-manage",
            "--repo",
            &repo_url,
            "--path",
            "capstan",
            "--revision",
            "main",
            "--replicas",
            "2",
        ];
        args.extend_from_slice(extra);
        ok(capstan(&kubeconfig, &args), "capstan install")
    };

    // The installation goes to Git first, then into the cluster.
    let v1 = install(&["--image", "example.invalid/capstan:1"]);
    repo.write("capstan/install.yaml", &v1);
    let first = repo.commit("Capstan 1, managed by itself");
    let applied = install(&["--image", "example.invalid/capstan:1", "--apply"]);
    assert!(applied.contains("8 objects applied"), "{applied}");
    assert!(
        applied.contains("Application capstan manages them"),
        "{applied}"
    );
    let password = applied
        .lines()
        .find_map(|l| l.split("): ").nth(1))
        .expect("the admin password is printed once");
    assert!(password.len() >= 16, "{applied}");
    let users: Api<Secret> = Api::namespaced(client.clone(), "capstan");
    let stored = users.get("capstan-users").await.expect("users Secret");
    let stored = serde_json::to_string(&stored).expect("json");
    assert!(
        !stored.contains(password),
        "the password is stored only hashed"
    );

    // The in-cluster controller (the Deployment's pods are simulated: a `capstan server` with
    // the same arguments stands in for them).
    let cache = tmp.path().join("cache");
    let mut server = Server::start(
        &kubeconfig,
        &cache,
        &["--namespace", "capstan", "--no-install-crd"],
    );
    let stdout = server.0.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut announced = Vec::new();
    while !announced
        .iter()
        .any(|l: &String| l.starts_with("capstan: metrics on"))
    {
        announced.push(
            lines
                .next()
                .expect("the server announces itself")
                .expect("line"),
        );
    }
    assert!(
        !announced.iter().any(|l| l.contains("password")),
        "the users existed: no new password, none in the pod's log: {announced:?}"
    );
    std::thread::spawn(move || for _ in lines {});

    let apps: Api<Application> = Api::namespaced(client.clone(), "capstan");
    let app = wait_for_app(
        &apps,
        "capstan",
        "the installation Synced and Healthy",
        |a| {
            let (sync, health, revision) = sync_of(a);
            sync == "Synced" && health == "Healthy" && revision == first
        },
    )
    .await;
    // Git, the printed YAML and the cluster agree: nothing had to be applied.
    let status = app.status.expect("status");
    assert!(
        status.operation_state.is_none(),
        "{:?}",
        status.operation_state
    );
    assert_eq!(status.resources.len(), 8, "{:?}", status.resources);

    // An upgrade is a commit.
    repo.write(
        "capstan/install.yaml",
        &install(&["--image", "example.invalid/capstan:2"]),
    );
    let second = repo.commit("Capstan 2");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "capstan");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let d = deployments
            .get("capstan-controller")
            .await
            .expect("Deployment");
        if image_of(&d) == "example.invalid/capstan:2" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upgrade was never rolled out: {}",
            image_of(&d)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let app = wait_for_app(&apps, "capstan", "the upgrade Synced and Healthy", |a| {
        let (sync, health, revision) = sync_of(a);
        sync == "Synced" && health == "Healthy" && revision == second
    })
    .await;
    let history = app.status.expect("status").history;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].revision, second);

    // Dropping the CRD and the namespace from Git and syncing with prune removes neither:
    // either would take Capstan (and every Application) with it.
    let trimmed: String = install(&["--image", "example.invalid/capstan:2"])
        .split("---\n")
        .filter(|doc| {
            !doc.contains("kind: CustomResourceDefinition")
                && !doc.starts_with("apiVersion: v1\nkind: Namespace")
        })
        .map(|doc| format!("---\n{doc}"))
        .collect();
    assert!(!trimmed.contains("kind: Namespace\n"), "{trimmed}");
    repo.write("capstan/install.yaml", &trimmed);
    let third = repo.commit("no CRD, no namespace");
    // All that is left to do is pruning, which automated sync does not: it leaves the
    // application OutOfSync, and does not sync again and again either.
    wait_for_app(&apps, "capstan", "the commit compared", |a| {
        let (sync, _, revision) = sync_of(a);
        revision == third && sync == "OutOfSync" && a.operation.is_none()
    })
    .await;
    let pruned = ok(
        capstan(
            &kubeconfig,
            &[
                "app",
                "sync",
                "capstan",
                "--prune",
                "--wait",
                "--timeout",
                "2m",
            ],
        ),
        "app sync --prune",
    );
    assert!(pruned.contains("Succeeded"), "{pruned}");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    assert!(
        crds.get_opt("applications.capstan.dev")
            .await
            .expect("get")
            .is_some(),
        "the CRD was pruned"
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = namespaces
        .get("capstan")
        .await
        .expect("the namespace is still there");
    assert!(
        ns.metadata.deletion_timestamp.is_none(),
        "the namespace is being deleted"
    );
    assert!(apps.get_opt("capstan").await.expect("get").is_some());
    assert!(
        deployments
            .get_opt("capstan-controller")
            .await
            .expect("get")
            .is_some()
    );

    // Deleting the Application (no cascade, no finalizer) leaves the installation running.
    ok(
        capstan(&kubeconfig, &["app", "delete", "capstan"]),
        "app delete capstan",
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while apps.get_opt("capstan").await.expect("get").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Application stays"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        deployments
            .get_opt("capstan-controller")
            .await
            .expect("get")
            .is_some(),
        "deleting the Application deleted the controller"
    );
    assert!(
        crds.get_opt("applications.capstan.dev")
            .await
            .expect("get")
            .is_some(),
        "deleting the Application deleted the CRD"
    );
    drop(server);
}
