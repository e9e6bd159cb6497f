//! RBAC figures, side by side in one run: the cost of one authorization decision for a service
//! account with 10 and with 10,000 other bindings in the cluster (the index makes it depend on
//! the caller's own bindings, not on the cluster's), the cost of catching up after a binding
//! change, and a GET over HTTPS as that service account with RBAC on vs the same GET on a
//! cluster without RBAC.
//!
//! Run: `cargo bench -p devcluster --bench rbac`. Timings only ever go here, never in tests.

use std::collections::HashMap;
use std::time::Instant;

use devcluster::api::{self, Op};
use devcluster::auth::Attributes;
use devcluster::{Config, DevCluster, State};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

fn op(state: &State, group: &str, resource: &str, ns: Option<&str>) -> Op {
    Op {
        info: state
            .registry
            .get(group, "v1", resource)
            .expect("built-in resource"),
        namespace: ns.map(String::from),
        name: None,
        subresource: None,
        query: HashMap::new(),
        manager: "bench".into(),
        manager_explicit: true,
    }
}

fn create(state: &State, group: &str, resource: &str, ns: Option<&str>, obj: Value) {
    api::create(state, &op(state, group, resource, ns), obj).expect("created");
}

/// Namespace `app`, a configmap, service account `app/reader` allowed to get configmaps,
/// and `others` more Roles and RoleBindings for other service accounts.
fn populate(state: &State, others: usize) {
    create(
        state,
        "",
        "namespaces",
        None,
        json!({"metadata": {"name": "app"}}),
    );
    create(
        state,
        "",
        "serviceaccounts",
        Some("app"),
        json!({"metadata": {"name": "reader"}}),
    );
    create(
        state,
        "",
        "configmaps",
        Some("app"),
        json!({"metadata": {"name": "c"}, "data": {"k": "v"}}),
    );
    let rbac = "rbac.authorization.k8s.io";
    let role = |name: &str| {
        json!({"metadata": {"name": name}, "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
            {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"], "verbs": ["*"]}]})
    };
    let binding = |name: &str, role: &str, sa: &str| {
        json!({"metadata": {"name": name},
            "roleRef": {"apiGroup": rbac, "kind": "Role", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": "app"}]})
    };
    create(state, rbac, "roles", Some("app"), role("reader"));
    create(
        state,
        rbac,
        "rolebindings",
        Some("app"),
        binding("reader", "reader", "reader"),
    );
    for i in 0..others {
        create(state, rbac, "roles", Some("app"), role(&format!("r{i}")));
        create(
            state,
            rbac,
            "rolebindings",
            Some("app"),
            binding(&format!("b{i}"), &format!("r{i}"), &format!("sa{i}")),
        );
    }
}

/// Nanoseconds per decision, allowed and denied.
fn decisions(state: &State, n: u32) -> (f64, f64) {
    let user = devcluster::rbac::service_account_info("app", "reader");
    let attrs = |verb| Attributes {
        user: &user,
        verb,
        group: "",
        resource: "configmaps",
        subresource: "",
        namespace: "app",
        name: "c",
    };
    let (get, delete) = (attrs("get"), attrs("delete"));
    assert!(state.authorizer.authorize(&get).is_ok());
    assert!(state.authorizer.authorize(&delete).is_err());
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(state.authorizer.authorize(std::hint::black_box(&get))).ok();
    }
    let allowed = t.elapsed().as_nanos() as f64 / f64::from(n);
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(state.authorizer.authorize(std::hint::black_box(&delete))).ok();
    }
    (allowed, t.elapsed().as_nanos() as f64 / f64::from(n))
}

async fn reader_client(cluster: &DevCluster) -> kube::Client {
    let sas: Api<ServiceAccount> = Api::namespaced(cluster.client(), "app");
    let tr = sas
        .create_token_request("reader", &PostParams::default(), &TokenRequest::default())
        .await
        .expect("token");
    let token = tr.status.expect("status").token;
    let yaml = devcluster::tls::kubeconfig_yaml(cluster.url(), cluster.ca_pem(), &token);
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).expect("kubeconfig");
    kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config"),
    )
    .expect("client")
}

/// Microseconds per sequential GET of one configmap.
async fn gets(client: kube::Client, n: u32) -> f64 {
    let api: Api<ConfigMap> = Api::namespaced(client, "app");
    api.get("c").await.expect("allowed");
    let t = Instant::now();
    for _ in 0..n {
        api.get("c").await.expect("allowed");
    }
    t.elapsed().as_micros() as f64 / f64::from(n)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let small = DevCluster::start(Config {
        rbac: true,
        ..Config::default()
    })
    .await
    .expect("start");
    populate(small.state(), 10);
    let large = DevCluster::start(Config {
        rbac: true,
        ..Config::default()
    })
    .await
    .expect("start");
    let t = Instant::now();
    populate(large.state(), 10_000);
    let populate_s = t.elapsed().as_secs_f64();
    let plain = DevCluster::start(Config::default()).await.expect("start");
    populate(plain.state(), 0);

    let n = 200_000;
    let (s_allow, s_deny) = decisions(small.state(), n);
    let (l_allow, l_deny) = decisions(large.state(), n);

    // Catching up: one binding change, then the next decision applies it.
    let rounds = 200u32;
    let mut catch_up_ns = 0u128;
    let user = devcluster::rbac::service_account_info("app", "reader");
    for i in 0..rounds {
        create(
            large.state(),
            "rbac.authorization.k8s.io",
            "rolebindings",
            Some("app"),
            json!({"metadata": {"name": format!("late{i}")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r1"},
                "subjects": [{"kind": "User", "name": format!("late{i}")}]}),
        );
        let attrs = Attributes {
            user: &user,
            verb: "get",
            group: "",
            resource: "configmaps",
            subresource: "",
            namespace: "app",
            name: "c",
        };
        let t = Instant::now();
        large.state().authorizer.authorize(&attrs).expect("allowed");
        catch_up_ns += t.elapsed().as_nanos();
    }

    let requests = 2000;
    let http_plain = gets(plain.client(), requests).await;
    let http_rbac = gets(reader_client(&large).await, requests).await;

    println!("RBAC authorization (devcluster, in-process decision, {n} iterations)");
    println!("  other bindings in the namespace |  allowed ns/decision | denied ns/decision");
    println!("  {:>31} | {:>20.0} | {:>18.0}", 10, s_allow, s_deny);
    println!("  {:>31} | {:>20.0} | {:>18.0}", 10_000, l_allow, l_deny);
    println!("  ratio 10,000 / 10 (allowed): {:.2}x", l_allow / s_allow);
    println!(
        "  first decision after a binding change (10,000 bindings): {:.0} ns (mean of {rounds})",
        catch_up_ns as f64 / f64::from(rounds)
    );
    println!("  populating 10,000 Roles + RoleBindings in-process: {populate_s:.2} s");
    println!("HTTPS GET of one configmap, sequential, {requests} requests");
    println!("  RBAC off, admin                         : {http_plain:.0} us/request");
    println!("  RBAC on, service account, 10,000 bindings: {http_rbac:.0} us/request");
    println!("  ratio: {:.2}x", http_rbac / http_plain);
    small.shutdown().await;
    large.shutdown().await;
    plain.shutdown().await;
}
