//! The simulated status as kube-rs clients read it: every object the controllers write
//! deserializes into the typed k8s-openapi structs, and kube-runtime's `await_condition` sees
//! a Deployment become Available and a Job complete.

use std::time::Duration;

use devcluster::{Config, DevCluster};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Endpoints, Event, Namespace, Pod, Service};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::wait::await_condition;
use serde_json::json;

fn has_condition(conds: Option<&Vec<(String, String)>>, ty: &str) -> bool {
    conds.is_some_and(|c| c.iter().any(|(t, s)| t == ty && s == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_clients_read_simulated_status() {
    let c = DevCluster::start(Config::default()).await.unwrap();
    let client = c.client();
    let pp = PostParams::default();
    Api::<Namespace>::all(client.clone())
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "apps"}})).unwrap(),
        )
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "apps");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {"containers": [{"name": "api", "image": "api:1", "ports": [{"containerPort": 80}]}]},
            },
        },
    }))
    .unwrap();
    deployments.create(&pp, &d).await.unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "apps");
    let j: Job = serde_json::from_value(json!({
        "metadata": {"name": "once"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "w", "image": "busybox:1"}]}}},
    }))
    .unwrap();
    jobs.create(&pp, &j).await.unwrap();
    Api::<Service>::namespaced(client.clone(), "apps")
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "api"},
                "spec": {"type": "LoadBalancer", "selector": {"app": "api"}, "ports": [{"port": 80}]}}))
            .unwrap(),
        )
        .await
        .unwrap();
    Api::<StatefulSet>::namespaced(client.clone(), "apps")
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "db"}, "spec": {
                "serviceName": "db", "replicas": 2,
                "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{"name": "db", "image": "db:1"}]}}}}))
            .unwrap(),
        )
        .await
        .unwrap();
    Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), "apps")
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "api"}, "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
                "minReplicas": 1, "maxReplicas": 3}}))
            .unwrap(),
        )
        .await
        .unwrap();

    let available = |d: Option<&Deployment>| {
        let conds = d
            .and_then(|d| d.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .map(|cs| {
                cs.iter()
                    .map(|c| (c.type_.clone(), c.status.clone()))
                    .collect::<Vec<_>>()
            });
        has_condition(conds.as_ref(), "Available")
            && d.and_then(|d| d.status.as_ref())
                .and_then(|s| s.available_replicas)
                == Some(2)
    };
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(deployments.clone(), "api", available),
    )
    .await
    .expect("the deployment becomes Available within a minute")
    .unwrap();
    let complete = |j: Option<&Job>| {
        let conds = j
            .and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .map(|cs| {
                cs.iter()
                    .map(|c| (c.type_.clone(), c.status.clone()))
                    .collect::<Vec<_>>()
            });
        has_condition(conds.as_ref(), "Complete")
    };
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(jobs.clone(), "once", complete),
    )
    .await
    .expect("the job completes within a minute")
    .unwrap();

    // Everything written by the simulation parses as the typed structs.
    let lp = ListParams::default();
    let pods = Api::<Pod>::namespaced(client.clone(), "apps")
        .list(&ListParams::default().labels("app=api"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 2);
    for p in &pods.items {
        let status = p.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let cs = &status.container_statuses.as_ref().unwrap()[0];
        assert!(cs.ready);
        assert_eq!(cs.restart_count, 0);
        assert!(
            cs.state
                .as_ref()
                .unwrap()
                .running
                .as_ref()
                .unwrap()
                .started_at
                .is_some()
        );
        assert!(status.pod_ip.is_some());
        assert!(status.host_ip.is_some());
    }
    let rss = Api::<ReplicaSet>::namespaced(client.clone(), "apps")
        .list(&lp)
        .await
        .unwrap();
    assert_eq!(rss.items.len(), 1);
    assert_eq!(
        rss.items[0].status.as_ref().unwrap().ready_replicas,
        Some(2)
    );
    let events = Api::<Event>::namespaced(client.clone(), "apps")
        .list(&lp)
        .await
        .unwrap();
    assert!(events.items.iter().any(|e| {
        e.reason.as_deref() == Some("ScalingReplicaSet")
            && e.involved_object.kind.as_deref() == Some("Deployment")
            && e.source.as_ref().and_then(|s| s.component.as_deref())
                == Some("deployment-controller")
    }));
    let eps = Api::<Endpoints>::namespaced(client.clone(), "apps")
        .get("api")
        .await
        .unwrap();
    let addresses = eps.subsets.unwrap()[0]
        .addresses
        .clone()
        .unwrap_or_default();
    assert_eq!(addresses.len(), 2);
    let svc = Api::<Service>::namespaced(client.clone(), "apps")
        .get("api")
        .await
        .unwrap();
    let ingress = svc.status.unwrap().load_balancer.unwrap().ingress.unwrap();
    assert!(ingress[0].ip.is_some());
    let sts = Api::<StatefulSet>::namespaced(client.clone(), "apps")
        .get("db")
        .await
        .unwrap();
    assert!(
        sts.status
            .unwrap()
            .update_revision
            .unwrap()
            .starts_with("db-")
    );
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), "apps")
        .get("api")
        .await
        .unwrap();
    let hs = hpa.status.unwrap();
    assert_eq!(hs.desired_replicas, 2);
    assert!(
        hs.conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "AbleToScale")
    );
    let job = jobs.get("once").await.unwrap();
    assert_eq!(job.status.unwrap().succeeded, Some(1));
    c.shutdown().await;
}
