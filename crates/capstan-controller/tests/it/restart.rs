//! A controller stopped in the middle of a multi-wave sync resumes it when started again: the
//! sync finishes and history has exactly one entry for it.

use crate::common;

use common::*;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::json;

// An Ingress stays Progressing until something sets its load balancer address (nothing does
// on the devcluster): the sync waits in wave 0 until the test sets it.
const INGRESS: &str = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: front
  annotations:
    capstan.dev/sync-wave: \"0\"
spec:
  rules:
  - host: shop.example.invalid
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: web
            port:
              number: 80
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_interrupted_by_a_restart_finishes_with_one_history_entry() {
    let mut env = Env::start().await;
    env.commit(
        &[
            ("app/ingress.yaml", Some(INGRESS)),
            (
                "app/after.yaml",
                Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: after\n  annotations:\n    capstan.dev/sync-wave: \"1\"\ndata:\n  key: v\n"),
            ),
        ],
        "first",
    );
    env.create_app("resumable", env.spec("app", None)).await;
    env.until("resumable", "the first comparison", |a| {
        !sync_status(a).is_empty()
    })
    .await;
    capstan_controller::ops::request_sync(&env.apps, "resumable", Default::default(), "tester")
        .await
        .unwrap();
    // Wait until the sync is stuck waiting for wave 0 (the Ingress exists, wave 1 not yet).
    let ingresses: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        "demo",
        &ApiResource::from_gvk(&GroupVersionKind::gvk("networking.k8s.io", "v1", "Ingress")),
    );
    env.until("resumable", "the sync to be running", |a| {
        a.status
            .as_ref()
            .and_then(|s| s.operation_state.as_ref())
            .is_some_and(|o| o.phase == "Running")
    })
    .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while ingresses.get_opt("front").await.unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Ingress never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    env.stop_controller();
    assert!(
        env.cm("after").await.is_none(),
        "wave 1 applied before wave 0 was healthy"
    );

    // The load balancer arrives while no controller runs.
    ingresses
        .patch_status(
            "front",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.7"}]}}})),
        )
        .await
        .unwrap();
    env.start_controller();
    let app = env
        .until("resumable", "the resumed sync to finish", |a| {
            a.status
                .as_ref()
                .and_then(|s| s.operation_state.as_ref())
                .is_some_and(|o| o.phase != "Running")
                && a.operation.is_none()
        })
        .await;
    let status = app.status.unwrap();
    let state = status.operation_state.unwrap();
    assert_eq!(state.phase, "Succeeded", "{}", state.message);
    assert_eq!(status.history.len(), 1, "{:?}", status.history);
    assert!(env.cm("after").await.is_some());
    env.until("resumable", "Synced and Healthy", |a| {
        sync_status(a) == "Synced" && health(a) == "Healthy"
    })
    .await;
}
