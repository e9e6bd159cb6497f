//! An in-process devcluster ready for Capstan: the Application CRD served, the namespaces made.

use capstan_api::application::{Application, GROUP, PLURAL};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::time::Duration;

/// The field manager the CRD is applied with (the controller's own install takes it over with
/// `force` if it runs too).
const FIELD_MANAGER: &str = "capstan-testkit";

/// How long a wait in this module gives the cluster or the controller. Generous: the machine
/// is shared and slow; a passing test never waits this long.
const PATIENCE: Duration = Duration::from_secs(120);

/// Starts a devcluster with the Application CRD established and `namespaces` created (Capstan's
/// own, `capstan`, is not implied: name it).
pub async fn start_cluster(namespaces: &[&str]) -> devcluster::DevCluster {
    let cluster = devcluster::DevCluster::start(devcluster::Config::default())
        .await
        .expect("devcluster starts");
    let client = cluster.client();
    install_application_crd(&client).await;
    create_namespaces(&client, namespaces).await;
    cluster
}

/// Applies the Application CRD and waits until the API server reports it `Established`, so
/// the next request can use the new resource.
pub async fn install_application_crd(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = format!("{PLURAL}.{GROUP}");
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&Application::crd()),
    )
    .await
    .unwrap_or_else(|e| panic!("applying the CRD {name}: {e}"));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let established = api
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("reading the CRD {name}: {e}"))
            .status
            .and_then(|s| s.conditions)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if established {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the CRD {name} is not Established after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates each namespace (each must not exist yet).
pub async fn create_namespaces(client: &Client, namespaces: &[&str]) {
    let api: Api<Namespace> = Api::all(client.clone());
    for name in namespaces {
        let mut ns = Namespace::default();
        ns.metadata.name = Some((*name).to_string());
        api.create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    }
}

/// Reads the Application `name` until `pred` holds and returns it. `what` says what is awaited;
/// when the wait gives up the panic message names it and shows the last object read.
pub async fn wait_for_app(
    apps: &Api<Application>,
    name: &str,
    what: &str,
    pred: impl Fn(&Application) -> bool,
) -> Application {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let app = apps
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("reading Application {name}: {e}"));
        if pred(&app) {
            return app;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}; last:\n{}",
            serde_json::to_string_pretty(&app).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::application::VERSION;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cluster_serves_applications_in_the_namespaces_asked_for() {
        let cluster = start_cluster(&["capstan", "demo"]).await;
        let client = cluster.client();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        for ns in ["capstan", "demo"] {
            assert!(namespaces.get_opt(ns).await.unwrap().is_some(), "{ns}");
        }
        let apps: Api<Application> = Api::namespaced(client.clone(), "capstan");
        let app: Application = serde_json::from_value(serde_json::json!({
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": "Application",
            "metadata": {"name": "web", "namespace": "capstan"},
            "spec": {
                "project": "default",
                "source": {"repoURL": "file:///nowhere", "targetRevision": "main", "path": "."},
                "destination": {"server": "https://kubernetes.default.svc", "namespace": "demo"}
            }
        }))
        .unwrap();
        apps.create(&PostParams::default(), &app).await.unwrap();
        let seen = wait_for_app(&apps, "web", "the created application", |a| {
            a.spec.source.repo_url == "file:///nowhere"
        })
        .await;
        assert_eq!(seen.spec.destination.namespace, "demo");
        // Installing again (as the controller does at start) is harmless.
        install_application_crd(&client).await;
    }
}
