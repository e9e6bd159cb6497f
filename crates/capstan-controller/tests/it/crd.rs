//! A CustomResourceDefinition and custom resources of the kind it defines in one application
//! (an operator installed with its resources), end to end on the devcluster: the custom
//! resources compare as Missing before the CRD exists, the sync applies the CRD first and then
//! them; a custom resource whose kind nobody defines stays a comparison error, nothing applied.

use crate::common;

use capstan_api::application::{Application, ResourceStatus, SyncPolicyAutomated};
use capstan_controller::ops;
use common::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::json;

/// A CRD of `kind` in group example.com with one served and stored version `v1` and a schema
/// that keeps whatever `spec` holds.
fn crd_yaml(kind: &str, plural: &str, scope: &str) -> String {
    format!(
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {plural}.example.com
spec:
  group: example.com
  scope: {scope}
  names:
    plural: {plural}
    singular: {singular}
    kind: {kind}
    listKind: {kind}List
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-preserve-unknown-fields: true
",
        singular = kind.to_ascii_lowercase()
    )
}

const WIDGET: &str = "apiVersion: example.com/v1
kind: Widget
metadata:
  name: blue
spec:
  color: blue
  size: 3
";

const GIZMO: &str = "apiVersion: example.com/v1
kind: Gizmo
metadata:
  name: cog
spec:
  teeth: 12
";

fn resource<'a>(app: &'a Application, kind: &str) -> &'a ResourceStatus {
    app.status
        .as_ref()
        .and_then(|s| s.resources.iter().find(|r| r.kind == kind))
        .unwrap_or_else(|| panic!("no {kind} in status.resources: {:?}", app.status))
}

fn comparison_error(app: &Application) -> Option<String> {
    app.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "ComparisonError")
            .map(|c| c.message.clone())
    })
}

fn custom_api(env: &Env, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("example.com", "v1", kind));
    match namespace {
        Some(ns) => Api::namespaced_with(env.client.clone(), ns, &ar),
        None => Api::all_with(env.client.clone(), &ar),
    }
}

async fn crd_exists(env: &Env, name: &str) -> bool {
    Api::<CustomResourceDefinition>::all(env.client.clone())
        .get_opt(name)
        .await
        .expect("get CRD")
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_and_their_custom_resources_sync_in_one_application() {
    let env = Env::start().await;
    let first = env.commit(
        &[
            (
                "operator/widget-crd.yaml",
                Some(&crd_yaml("Widget", "widgets", "Namespaced")),
            ),
            (
                "operator/gizmo-crd.yaml",
                Some(&crd_yaml("Gizmo", "gizmos", "Cluster")),
            ),
            ("operator/widget.yaml", Some(WIDGET)),
            ("operator/gizmo.yaml", Some(GIZMO)),
        ],
        "an operator and its resources",
    );
    env.create_app("widgets", env.spec("operator", None)).await;

    // Before the sync the kinds are unknown to the cluster: the custom resources are Missing,
    // not a comparison error.
    let app = env
        .until("widgets", "OutOfSync at the first commit", |a| {
            sync_status(a) == "OutOfSync" && revision(a) == first
        })
        .await;
    assert_eq!(comparison_error(&app), None);
    assert_eq!(health(&app), "Missing");
    let widget = resource(&app, "Widget");
    assert_eq!(
        (widget.group.as_str(), widget.version.as_str()),
        ("example.com", "v1")
    );
    assert_eq!(
        (widget.namespace.as_str(), widget.name.as_str()),
        ("demo", "blue")
    );
    assert_eq!(widget.status, "OutOfSync");
    assert_eq!(
        widget.health.as_ref().map(|h| h.status.as_str()),
        Some("Missing")
    );
    // The CRD's scope decides: a cluster-scoped kind gets no namespace.
    let gizmo = resource(&app, "Gizmo");
    assert_eq!((gizmo.namespace.as_str(), gizmo.name.as_str()), ("", "cog"));
    assert_eq!(
        gizmo.health.as_ref().map(|h| h.status.as_str()),
        Some("Missing")
    );
    assert!(!crd_exists(&env, "widgets.example.com").await);

    ops::request_sync(&env.apps, "widgets", Default::default(), "tester")
        .await
        .unwrap();
    let app = env
        .until("widgets", "Synced and Healthy after the sync", |a| {
            a.operation.is_none()
                && sync_status(a) == "Synced"
                && health(a) == "Healthy"
                && a.status
                    .as_ref()
                    .and_then(|s| s.operation_state.as_ref())
                    .is_some_and(|o| o.phase == "Succeeded")
        })
        .await;
    let status = app.status.clone().unwrap();
    assert_eq!(status.resources.len(), 4, "{:?}", status.resources);
    assert!(status.resources.iter().all(|r| r.status == "Synced"));
    assert_eq!(status.history.len(), 1);
    assert_eq!(status.history[0].revision, first);
    // The CRDs were applied before the resources of their kinds.
    let applied: Vec<String> = status
        .operation_state
        .unwrap()
        .sync_result
        .unwrap()
        .resources
        .iter()
        .map(|r| r.kind.clone())
        .collect();
    let position = |kind: &str| applied.iter().position(|k| k == kind).unwrap();
    assert!(
        position("CustomResourceDefinition") < position("Widget")
            && position("CustomResourceDefinition") < position("Gizmo"),
        "{applied:?}"
    );

    let live = custom_api(&env, "Widget", Some("demo"))
        .get("blue")
        .await
        .expect("the Widget exists");
    assert_eq!(live.data["spec"], json!({"color": "blue", "size": 3}));
    assert_eq!(
        live.metadata
            .annotations
            .unwrap_or_default()
            .get(capstan_api::annotations::TRACKING_ID)
            .map(String::as_str),
        Some("capstan_widgets:example.com/Widget:demo/blue")
    );
    let cog = custom_api(&env, "Gizmo", None)
        .get("cog")
        .await
        .expect("the Gizmo exists");
    assert_eq!(cog.metadata.namespace, None);

    // From now on the kind is watched like any other: a hand edit shows as drift.
    custom_api(&env, "Widget", Some("demo"))
        .patch(
            "blue",
            &PatchParams::apply("kubectl-edit").force(),
            &Patch::Apply(json!({"apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "blue"}, "spec": {"size": 5}})),
        )
        .await
        .unwrap();
    let app = env
        .until("widgets", "OutOfSync after the edit", |a| {
            sync_status(a) == "OutOfSync"
        })
        .await;
    assert_eq!(resource(&app, "Widget").status, "OutOfSync");
    assert_eq!(resource(&app, "Gizmo").status, "Synced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_resource_no_crd_of_the_application_defines_is_a_comparison_error() {
    let env = Env::start().await;
    let thing_v2 = "apiVersion: example.com/v2\nkind: Thing\nmetadata:\n  name: second\n";
    env.commit(
        &[
            ("stray/cm.yaml", Some(&cm_yaml("stray-settings", "1"))),
            (
                "stray/gadget.yaml",
                Some("apiVersion: gadgets.example.com/v1\nkind: Gadget\nmetadata:\n  name: lost\n"),
            ),
            // The CRD serves v1 only: it does not define the v2 object.
            (
                "versions/thing-crd.yaml",
                Some(&crd_yaml("Thing", "things", "Namespaced")),
            ),
            ("versions/thing.yaml", Some(thing_v2)),
            ("versions/cm.yaml", Some(&cm_yaml("versions-settings", "1"))),
        ],
        "custom resources of kinds nobody defines",
    );
    let automated = || {
        Some(SyncPolicyAutomated {
            prune: true,
            self_heal: true,
            allow_empty: false,
        })
    };
    env.create_app("stray", env.spec("stray", automated()))
        .await;
    env.create_app("versions", env.spec("versions", automated()))
        .await;
    for (name, object, kind) in [
        ("stray", "Gadget lost", "gadgets.example.com/v1 Gadget"),
        ("versions", "Thing second", "example.com/v2 Thing"),
    ] {
        let app = env
            .until(name, "a ComparisonError", |a| comparison_error(a).is_some())
            .await;
        let message = comparison_error(&app).unwrap();
        assert!(
            message.contains(object) && message.contains(kind),
            "{name}: {message}"
        );
        let status = app.status.unwrap();
        assert_eq!(status.sync.unwrap().status, "Unknown");
        assert!(status.history.is_empty());
        assert!(status.operation_state.is_none());
    }
    // Nothing of either application was applied.
    assert!(env.cm("stray-settings").await.is_none());
    assert!(env.cm("versions-settings").await.is_none());
    assert!(!crd_exists(&env, "things.example.com").await);
}
