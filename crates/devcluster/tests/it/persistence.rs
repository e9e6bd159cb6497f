//! With a data directory, the state survives a restart: objects, CRDs (served again), uids,
//! resourceVersions, and the resourceVersion sequence continues.

use devcluster::{Config, DevCluster};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

fn cfg(dir: &std::path::Path) -> Config {
    Config {
        data_dir: Some(dir.join("data")),
        kubeconfig: Some(dir.join("kubeconfig")),
        ..Config::default()
    }
}

fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    )
}

/// (kind/name, uid, resourceVersion) of everything written.
async fn snapshot(client: &kube::Client) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut push = |what: String, m: &kube::core::ObjectMeta| {
        out.push((
            what,
            m.uid.clone().unwrap(),
            m.resource_version.clone().unwrap(),
        ));
    };
    for n in Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        push(
            format!("ns/{}", n.metadata.name.clone().unwrap()),
            &n.metadata,
        );
    }
    for c in Api::<ConfigMap>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        push(
            format!("cm/{}", c.metadata.name.clone().unwrap()),
            &c.metadata,
        );
    }
    for s in Api::<Secret>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        push(
            format!("secret/{}", s.metadata.name.clone().unwrap()),
            &s.metadata,
        );
    }
    for d in Api::<Deployment>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        push(
            format!("deploy/{}", d.metadata.name.clone().unwrap()),
            &d.metadata,
        );
    }
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for c in crds.list(&ListParams::default()).await.unwrap() {
        push(
            format!("crd/{}", c.metadata.name.clone().unwrap()),
            &c.metadata,
        );
    }
    let widgets: Api<DynamicObject> = Api::all_with(client.clone(), &widget_resource());
    for w in widgets.list(&ListParams::default()).await.unwrap() {
        push(
            format!("widget/{}", w.metadata.name.clone().unwrap()),
            &w.metadata,
        );
    }
    out
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = DevCluster::start(cfg(dir.path())).await.unwrap();
    let client = first.client();
    let token = first.admin_token().to_string();
    let pp = PatchParams::apply("persist-test");
    Api::<Namespace>::all(client.clone())
        .patch(
            "keep",
            &pp,
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "keep"}}),
            ),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "keep");
    cms.patch(
        "settings",
        &pp,
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1"}})),
    )
    .await
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), "keep")
        .patch(
            "creds",
            &pp,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "data": {"p": "cGFzcw=="}})),
        )
        .await
        .unwrap();
    Api::<Deployment>::namespaced(client.clone(), "keep")
        .patch(
            "web",
            &pp,
            &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}})),
        )
        .await
        .unwrap();
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
        )),
    );
    crds.patch(
        "widgets.example.com",
        &pp,
        &Patch::Apply(json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                     "versions": [{"name": "v1", "served": true, "storage": true,
                                   "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})),
    )
    .await
    .unwrap();
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "keep", &widget_resource());
    widgets
        .patch(
            "gear",
            &pp,
            &Patch::Apply(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "gear"}, "spec": {"teeth": 12}})),
        )
        .await
        .unwrap();
    // An update, so that not every object sits at its creation rv.
    cms.patch(
        "settings",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"b": "2"}})),
    )
    .await
    .unwrap();
    let before = snapshot(&client).await;
    // The written objects plus the four system namespaces every cluster starts with.
    assert_eq!(before.len(), 10, "{before:?}");
    let max_rv: u64 = before
        .iter()
        .map(|(_, _, rv)| rv.parse::<u64>().unwrap())
        .max()
        .unwrap();
    first.shutdown().await;

    let second = DevCluster::start(cfg(dir.path())).await.unwrap();
    assert_eq!(
        second.admin_token(),
        token,
        "the admin token is kept with the data"
    );
    let client = second.client();
    let after = snapshot(&client).await;
    assert_eq!(before, after, "same objects, uids and resourceVersions");
    let w = Api::<DynamicObject>::namespaced_with(client.clone(), "keep", &widget_resource())
        .get("gear")
        .await
        .unwrap();
    assert_eq!(w.data["spec"]["teeth"], 12);
    let cm = Api::<ConfigMap>::namespaced(client.clone(), "keep")
        .get("settings")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["b"], "2");
    assert!(
        cm.metadata
            .managed_fields
            .unwrap()
            .iter()
            .any(|m| m.manager.as_deref() == Some("persist-test")),
        "managedFields persist"
    );

    // New writes continue the sequence.
    let created = Api::<ConfigMap>::namespaced(client.clone(), "keep")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "later"}})).unwrap(),
        )
        .await
        .unwrap();
    let rv: u64 = created.metadata.resource_version.unwrap().parse().unwrap();
    assert_eq!(rv, max_rv + 1);
    second.shutdown().await;

    // And a third start sees that write too.
    let third = DevCluster::start(cfg(dir.path())).await.unwrap();
    let later = Api::<ConfigMap>::namespaced(third.client(), "keep")
        .get("later")
        .await
        .unwrap();
    assert_eq!(later.metadata.resource_version.unwrap(), rv.to_string());
}
