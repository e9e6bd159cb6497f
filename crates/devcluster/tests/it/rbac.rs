//! RBAC and service-account tokens, driven by kube-rs and the real kubectl: a restricted
//! service account is refused what its Role does not grant and allowed what it does.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{kubectl, kubectl_bin, kubectl_ok};
use devcluster::{Config, DevCluster};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

const SETUP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: team}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: team}
data: {a: "1"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: other}
data: {a: "2"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: configmap-reader, namespace: team}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader-reads, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-reader}
subjects:
- {kind: ServiceAccount, name: reader, namespace: team}
"#;

fn cluster_role(name: &str, resource: &str, verbs: &str) -> String {
    format!(
        "{{apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRole, metadata: {{name: {name}}}, \
         rules: [{{apiGroups: [\"\"], resources: [\"{resource}\"], verbs: [{verbs}]}}]}}"
    )
}

/// A binding (in namespace `team` for a RoleBinding) of a ClusterRole to one subject.
fn binding(kind: &str, name: &str, role: &str, subject: &str) -> String {
    let ns = if kind == "RoleBinding" {
        ", namespace: team"
    } else {
        ""
    };
    format!(
        "{{apiVersion: rbac.authorization.k8s.io/v1, kind: {kind}, metadata: {{name: {name}{ns}}}, \
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}, \
         subjects: [{subject}]}}"
    )
}

struct Env {
    cluster: DevCluster,
    dir: tempfile::TempDir,
    kubectl: PathBuf,
}

impl Env {
    fn admin_kc(&self) -> &Path {
        self.cluster.kubeconfig_path()
    }

    /// A kubeconfig and a kube client that authenticate with `token`.
    async fn as_token(&self, name: &str, token: &str) -> (PathBuf, kube::Client) {
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        let yaml =
            devcluster::tls::kubeconfig_yaml(self.cluster.url(), self.cluster.ca_pem(), token);
        std::fs::write(&path, &yaml).unwrap();
        let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        (path, kube::Client::try_from(cfg).unwrap())
    }

    async fn admin(&self, args: &[&str], stdin: Option<&str>) -> String {
        kubectl_ok(&self.kubectl, self.admin_kc(), args, stdin).await
    }
}

async fn start(data_dir: Option<PathBuf>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(Config {
        rbac: true,
        data_dir,
        kubeconfig: Some(dir.path().join("admin.kubeconfig")),
        ..Config::default()
    })
    .await
    .unwrap();
    Env {
        cluster,
        dir,
        kubectl: kubectl_bin("kubectl"),
    }
}

async fn token_for(client: kube::Client, ns: &str, sa: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(client, ns);
    let tr = sas
        .create_token_request(
            sa,
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("TokenRequest is served");
    let status = tr.status.expect("the TokenRequest has a status");
    assert!(status.expiration_timestamp.0 > k8s_openapi::jiff::Timestamp::now());
    status.token
}

/// The API error of a refused call.
/// Asserts that a kubectl run failed with `message` in its stderr.
fn assert_refused(r: &common::Run, message: &str) {
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains(message), "{}", r.stderr);
}

fn api_err<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> Box<kube::core::Status> {
    match r {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_service_account_is_refused_what_its_role_does_not_grant() {
    let env = start(None).await;
    env.admin(&["apply", "-f", "-"], Some(SETUP)).await;
    let token = token_for(env.cluster.client(), "team", "reader").await;
    let (kc, client) = env.as_token("reader", &token).await;

    // kube-rs: allowed where the Role grants, refused everywhere else.
    let team: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    assert_eq!(
        team.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    assert_eq!(team.get("settings").await.unwrap().data.unwrap()["a"], "1");
    let refused = api_err(
        team.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "new"}})).unwrap(),
        )
        .await,
    );
    assert_eq!((refused.code, refused.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        refused.message,
        "configmaps is forbidden: User \"system:serviceaccount:team:reader\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"team\""
    );
    let details = refused.details.as_ref().expect("details");
    assert_eq!(details.kind, "configmaps");
    let refused = api_err(team.delete("settings", &DeleteParams::default()).await);
    assert_eq!(refused.code, 403);
    assert!(
        refused
            .message
            .starts_with("configmaps \"settings\" is forbidden:"),
        "{}",
        refused.message
    );
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "other");
    assert_eq!(api_err(other.list(&ListParams::default()).await).code, 403);
    let all: Api<ConfigMap> = Api::all(client.clone());
    let refused = api_err(all.list(&ListParams::default()).await);
    assert!(
        refused.message.ends_with("at the cluster scope"),
        "{}",
        refused.message
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "team");
    assert_eq!(
        api_err(secrets.list(&ListParams::default()).await).code,
        403
    );
    // Discovery stays open to every authenticated user.
    assert!(client.apiserver_version().await.is_ok());
    kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery is allowed");

    // kubectl with a kubeconfig holding the token.
    let k = &env.kubectl;
    let out = kubectl_ok(
        k,
        &kc,
        &["-n", "team", "get", "configmaps", "-o", "name"],
        None,
    )
    .await;
    assert_eq!(out.trim(), "configmap/settings");
    let r = kubectl(
        k,
        &kc,
        &[
            "-n",
            "team",
            "create",
            "configmap",
            "x",
            "--from-literal=a=b",
        ],
        None,
    )
    .await;
    assert_refused(
        &r,
        "configmaps is forbidden: User \"system:serviceaccount:team:reader\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"team\"",
    );
    let r = kubectl(k, &kc, &["-n", "other", "get", "configmaps"], None).await;
    assert!(
        r.code != 0 && r.stderr.contains("Forbidden"),
        "{}",
        r.stderr
    );
    let r = kubectl(
        k,
        &kc,
        &["-n", "team", "delete", "configmap", "settings"],
        None,
    )
    .await;
    assert!(
        r.code != 0 && r.stderr.contains("Forbidden"),
        "{}",
        r.stderr
    );
    // kubectl auth can-i asks the server (SelfSubjectAccessReview).
    let yes = kubectl(
        k,
        &kc,
        &["auth", "can-i", "list", "configmaps", "-n", "team"],
        None,
    )
    .await;
    assert_eq!((yes.code, yes.stdout.trim()), (0, "yes"), "{}", yes.stderr);
    let no = kubectl(
        k,
        &kc,
        &["auth", "can-i", "create", "configmaps", "-n", "team"],
        None,
    )
    .await;
    assert_eq!((no.code, no.stdout.trim()), (1, "no"), "{}", no.stderr);
    let no = kubectl(
        k,
        &kc,
        &["auth", "can-i", "list", "configmaps", "-n", "other"],
        None,
    )
    .await;
    assert_eq!(no.stdout.trim(), "no");
    let yes = kubectl(k, &kc, &["auth", "can-i", "get", "/version"], None).await;
    assert_eq!(yes.stdout.trim(), "yes");
    // The admin is in system:masters: allowed everything, no binding needed.
    let yes = kubectl(
        k,
        env.admin_kc(),
        &["auth", "can-i", "delete", "nodes"],
        None,
    )
    .await;
    assert_eq!(yes.stdout.trim(), "yes");

    // A deleted binding revokes at once.
    env.admin(
        &["-n", "team", "delete", "rolebinding", "reader-reads"],
        None,
    )
    .await;
    assert_eq!(api_err(team.list(&ListParams::default()).await).code, 403);
    let r = kubectl(k, &kc, &["-n", "team", "get", "configmaps"], None).await;
    assert!(
        r.code != 0 && r.stderr.contains("Forbidden"),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_role_bindings_grant_everywhere_and_role_bindings_to_cluster_roles_do_not() {
    let env = start(None).await;
    env.admin(&["apply", "-f", "-"], Some(SETUP)).await;
    let token = token_for(env.cluster.client(), "team", "reader").await;
    let (_, client) = env.as_token("reader", &token).await;
    let pods_team: Api<Pod> = Api::namespaced(client.clone(), "team");
    let pods_other: Api<Pod> = Api::namespaced(client.clone(), "other");
    assert_eq!(
        api_err(pods_team.list(&ListParams::default()).await).code,
        403
    );

    // A RoleBinding to a ClusterRole grants it in the binding's namespace only.
    env.admin(
        &["apply", "-f", "-"],
        Some(&cluster_role("pod-viewer", "pods", "get, list, watch")),
    )
    .await;
    env.admin(
        &["apply", "-f", "-"],
        Some(&binding(
            "RoleBinding",
            "view-pods",
            "pod-viewer",
            "{kind: ServiceAccount, name: reader, namespace: team}",
        )),
    )
    .await;
    pods_team
        .list(&ListParams::default())
        .await
        .expect("granted in team");
    assert_eq!(
        api_err(pods_other.list(&ListParams::default()).await).code,
        403
    );
    let all: Api<Pod> = Api::all(client.clone());
    assert_eq!(api_err(all.list(&ListParams::default()).await).code, 403);

    // A ClusterRoleBinding grants it in every namespace and across all of them.
    env.admin(
        &["apply", "-f", "-"],
        Some(&binding(
            "ClusterRoleBinding",
            "view-pods-everywhere",
            "pod-viewer",
            "{kind: Group, name: \"system:serviceaccounts:team\", apiGroup: rbac.authorization.k8s.io}",
        )),
    )
    .await;
    pods_other
        .list(&ListParams::default())
        .await
        .expect("granted in other");
    all.list(&ListParams::default())
        .await
        .expect("granted across namespaces");
    // Still only what the role says.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "other");
    assert_eq!(api_err(cms.list(&ListParams::default()).await).code, 403);

    // Subresources are separate resources: pods/status needs its own rule.
    env.admin(
        &["apply", "-f", "-"],
        Some("{apiVersion: v1, kind: Pod, metadata: {name: p, namespace: team}, spec: {containers: [{name: c, image: nginx}]}}"),
    )
    .await;
    let refused = api_err(pods_team.get_status("p").await);
    assert!(
        refused
            .message
            .contains("cannot get resource \"pods/status\""),
        "{}",
        refused.message
    );
    env.admin(
        &["apply", "-f", "-"],
        Some(&cluster_role("status-reader", "pods/status", "get")),
    )
    .await;
    env.admin(
        &["apply", "-f", "-"],
        Some(&binding(
            "ClusterRoleBinding",
            "read-status",
            "status-reader",
            "{kind: ServiceAccount, name: reader, namespace: team}",
        )),
    )
    .await;
    pods_team
        .get_status("p")
        .await
        .expect("pods/status granted");

    env.admin(
        &["delete", "clusterrolebinding", "view-pods-everywhere"],
        None,
    )
    .await;
    assert_eq!(
        api_err(pods_other.list(&ListParams::default()).await).code,
        403
    );
    pods_team
        .list(&ListParams::default())
        .await
        .expect("the RoleBinding still grants team");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_authenticate_service_accounts_until_they_are_deleted() {
    let data = tempfile::tempdir().unwrap();
    let env = start(Some(data.path().to_path_buf())).await;
    env.admin(&["apply", "-f", "-"], Some(SETUP)).await;

    // kubectl create token uses the TokenRequest subresource.
    let token = env
        .admin(
            &["-n", "team", "create", "token", "reader", "--duration=1h"],
            None,
        )
        .await
        .trim()
        .to_string();
    let (kc, client) = env.as_token("reader", &token).await;
    let who = kubectl_ok(
        &env.kubectl,
        &kc,
        &["auth", "can-i", "list", "configmaps", "-n", "team"],
        None,
    )
    .await;
    assert_eq!(who.trim(), "yes");

    // Too short a lifetime is refused, as Kubernetes does; an unknown account is NotFound.
    let sas: Api<ServiceAccount> = Api::namespaced(env.cluster.client(), "team");
    let short = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(60),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(
        api_err(
            sas.create_token_request("reader", &PostParams::default(), &short)
                .await
        )
        .code,
        422
    );
    let none = TokenRequest::default();
    assert_eq!(
        api_err(
            sas.create_token_request("ghost", &PostParams::default(), &none)
                .await
        )
        .code,
        404
    );
    // The restricted account may not mint tokens.
    let own: Api<ServiceAccount> = Api::namespaced(client.clone(), "team");
    assert_eq!(
        api_err(
            own.create_token_request("reader", &PostParams::default(), &none)
                .await
        )
        .code,
        403
    );

    // A legacy token Secret is filled by the token controller and its token works.
    env.admin(
        &["apply", "-f", "-"],
        Some(
            r#"{"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                "metadata": {"name": "reader-token", "namespace": "team",
                  "annotations": {"kubernetes.io/service-account.name": "reader"}}}"#,
        ),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(env.cluster.client(), "team");
    let mut legacy = None;
    for _ in 0..200 {
        let s = secrets.get("reader-token").await.unwrap();
        if let Some(t) = s.data.as_ref().and_then(|d| d.get("token")) {
            let data = s.data.as_ref().unwrap();
            assert_eq!(data["namespace"].0, b"team");
            assert_eq!(
                String::from_utf8_lossy(&data["ca.crt"].0),
                env.cluster.ca_pem()
            );
            legacy = Some(String::from_utf8(t.0.clone()).unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let legacy = legacy.expect("the token controller fills the Secret");
    let (_, legacy_client) = env.as_token("legacy", &legacy).await;
    let cms: Api<ConfigMap> = Api::namespaced(legacy_client.clone(), "team");
    cms.list(&ListParams::default())
        .await
        .expect("the legacy token works");

    // Both kinds of token survive a restart with the same data directory.
    let url_dir = env.dir;
    env.cluster.shutdown().await;
    let env = Env {
        cluster: DevCluster::start(Config {
            rbac: true,
            data_dir: Some(data.path().to_path_buf()),
            kubeconfig: Some(url_dir.path().join("admin.kubeconfig")),
            ..Config::default()
        })
        .await
        .unwrap(),
        dir: url_dir,
        kubectl: env.kubectl,
    };
    for (name, t) in [("reader2", &token), ("legacy2", &legacy)] {
        let (_, c) = env.as_token(name, t).await;
        let cms: Api<ConfigMap> = Api::namespaced(c, "team");
        cms.list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("{name} works after a restart: {e}"));
    }

    // Deleting the service account ends both tokens: 401 Unauthorized.
    env.admin(&["-n", "team", "delete", "serviceaccount", "reader"], None)
        .await;
    for (name, t) in [("reader3", &token), ("legacy3", &legacy)] {
        let (_, c) = env.as_token(name, t).await;
        let cms: Api<ConfigMap> = Api::namespaced(c, "team");
        let e = api_err(cms.list(&ListParams::default()).await);
        assert_eq!(e.code, 401, "{name}: {}", e.message);
    }
    // A recreated account of the same name has a new uid: old TokenRequest tokens stay dead.
    env.admin(
        &["apply", "-f", "-"],
        Some("{apiVersion: v1, kind: ServiceAccount, metadata: {name: reader, namespace: team}}"),
    )
    .await;
    let (_, c) = env.as_token("reader4", &token).await;
    let cms: Api<ConfigMap> = Api::namespaced(c, "team");
    assert_eq!(api_err(cms.list(&ListParams::default()).await).code, 401);
    // A made-up token is refused too.
    let (_, c) = env.as_token("bogus", "not-a-token").await;
    let cms: Api<ConfigMap> = Api::namespaced(c, "team");
    assert_eq!(api_err(cms.list(&ListParams::default()).await).code, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_roles_exist_and_aggregate_like_kubernetes() {
    let env = start(None).await;
    env.admin(&["apply", "-f", "-"], Some(SETUP)).await;
    let names = env
        .admin(&["get", "clusterroles", "-o", "name"], None)
        .await;
    for want in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:discovery",
        "system:basic-user",
    ] {
        assert!(
            names
                .lines()
                .any(|l| l == format!("clusterrole.rbac.authorization.k8s.io/{want}")),
            "{want} missing from {names}"
        );
    }
    let bindings = env
        .admin(&["get", "clusterrolebindings", "-o", "name"], None)
        .await;
    assert!(bindings.contains("clusterrolebinding.rbac.authorization.k8s.io/cluster-admin"));

    // `edit` in one namespace: writes there, nothing elsewhere, no RBAC objects (admin only).
    env.admin(
        &["apply", "-f", "-"],
        Some(
            "{apiVersion: rbac.authorization.k8s.io/v1, kind: RoleBinding, \
              metadata: {name: reader-edits, namespace: team}, \
              roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}, \
              subjects: [{kind: ServiceAccount, name: reader, namespace: team}]}",
        ),
    )
    .await;
    let token = token_for(env.cluster.client(), "team", "reader").await;
    let (kc, client) = env.as_token("reader", &token).await;
    let team: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    team.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "mine"}})).unwrap(),
    )
    .await
    .expect("edit creates configmaps (aggregated from system:aggregate-to-edit)");
    team.get("settings")
        .await
        .expect("edit includes view (aggregated twice)");
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "other");
    assert_eq!(api_err(other.get("settings").await).code, 403);
    let k = &env.kubectl;
    let no = kubectl(
        k,
        &kc,
        &["auth", "can-i", "create", "roles", "-n", "team"],
        None,
    )
    .await;
    assert_eq!(no.stdout.trim(), "no");

    // A role labelled aggregate-to-view extends view, edit and admin. (Asked with a
    // SelfSubjectAccessReview from kube-rs: kubectl maps a resource unknown to discovery to
    // group "", as it does against any cluster.)
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let may_list_widgets = || async {
        let review: SelfSubjectAccessReview = serde_json::from_value(json!({
            "spec": {"resourceAttributes": {"namespace": "team", "verb": "list",
                "group": "example.com", "resource": "widgets"}}}))
        .unwrap();
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .unwrap();
        answer.status.expect("the review has a status").allowed
    };
    assert!(!may_list_widgets().await);
    env.admin(
        &["apply", "-f", "-"],
        Some(
            "{apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRole, \
              metadata: {name: widget-viewer, labels: {rbac.authorization.k8s.io/aggregate-to-view: \"true\"}}, \
              rules: [{apiGroups: [example.com], resources: [widgets], verbs: [get, list, watch]}]}",
        ),
    )
    .await;
    let mut aggregated = false;
    for _ in 0..200 {
        if may_list_widgets().await {
            aggregated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        aggregated,
        "the aggregation controller extended edit through view"
    );
    let view = env
        .admin(&["get", "clusterrole", "view", "-o", "json"], None)
        .await;
    assert!(view.contains("\"example.com\""), "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_is_authorized_and_then_runs_as_the_impersonated_identity() {
    let env = start(None).await;
    env.admin(&["apply", "-f", "-"], Some(SETUP)).await;
    let reader = "system:serviceaccount:team:reader";

    // The admin (system:masters) may impersonate; the request then runs as the service account.
    let out = env
        .admin(
            &[
                "--as",
                reader,
                "get",
                "configmaps",
                "-n",
                "team",
                "-o",
                "name",
            ],
            None,
        )
        .await;
    assert_eq!(out.trim(), "configmap/settings");
    let r = kubectl(
        &env.kubectl,
        env.admin_kc(),
        &["--as", reader, "get", "configmaps", "-n", "other"],
        None,
    )
    .await;
    assert_refused(
        &r,
        "configmaps is forbidden: User \"system:serviceaccount:team:reader\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"other\"",
    );
    let r = kubectl(
        &env.kubectl,
        env.admin_kc(),
        &[
            "--as",
            reader,
            "delete",
            "configmap",
            "settings",
            "-n",
            "team",
        ],
        None,
    )
    .await;
    assert!(r.stderr.contains("cannot delete resource"), "{}", r.stderr);

    // The service account's own token may not impersonate anyone.
    let token = token_for(env.cluster.client(), "team", "reader").await;
    let (kc, _) = env.as_token("reader", &token).await;
    let r = kubectl(
        &env.kubectl,
        &kc,
        &["--as", "admin", "get", "configmaps", "-n", "team"],
        None,
    )
    .await;
    assert_refused(
        &r,
        "users \"admin\" is forbidden: User \"system:serviceaccount:team:reader\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope",
    );
    let r = kubectl(
        &env.kubectl,
        &kc,
        &[
            "--as",
            "system:serviceaccount:other:default",
            "get",
            "configmaps",
            "-n",
            "other",
        ],
        None,
    )
    .await;
    assert!(
        r.stderr.contains(
            "serviceaccounts \"default\" is forbidden: User \"system:serviceaccount:team:reader\" cannot impersonate resource \"serviceaccounts\" in API group \"\" in the namespace \"other\""
        ),
        "{}",
        r.stderr
    );

    // Granted `impersonate` on the user jane only: as jane it runs with jane's (absent) rights,
    // and adding a group needs the groups permission too.
    env.admin(
        &["apply", "-f", "-"],
        Some(&format!(
            "{}\n---\n{}\n",
            "{apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRole, metadata: {name: impersonate-jane}, \
             rules: [{apiGroups: [\"\"], resources: [users], verbs: [impersonate], resourceNames: [jane]}]}",
            binding(
                "ClusterRoleBinding",
                "reader-impersonates-jane",
                "impersonate-jane",
                "{kind: ServiceAccount, name: reader, namespace: team}"
            )
        )),
    )
    .await;
    let r = kubectl(
        &env.kubectl,
        &kc,
        &["--as", "jane", "get", "configmaps", "-n", "team"],
        None,
    )
    .await;
    assert!(
        r.stderr
            .contains("User \"jane\" cannot list resource \"configmaps\""),
        "{}",
        r.stderr
    );
    let r = kubectl(
        &env.kubectl,
        &kc,
        &["--as", "bob", "get", "configmaps", "-n", "team"],
        None,
    )
    .await;
    assert!(
        r.stderr.contains("users \"bob\" is forbidden"),
        "{}",
        r.stderr
    );
    let r = kubectl(
        &env.kubectl,
        &kc,
        &[
            "--as",
            "jane",
            "--as-group",
            "system:masters",
            "get",
            "configmaps",
            "-n",
            "team",
        ],
        None,
    )
    .await;
    assert!(
        r.stderr.contains(
            "groups \"system:masters\" is forbidden: User \"system:serviceaccount:team:reader\" cannot impersonate resource \"groups\""
        ),
        "{}",
        r.stderr
    );
    // A group the admin impersonates is what RBAC sees: jane in system:masters may do anything.
    env.admin(
        &[
            "--as",
            "jane",
            "--as-group",
            "system:masters",
            "get",
            "secrets",
            "-n",
            "other",
        ],
        None,
    )
    .await;
    // jane alone is system:authenticated (the discovery roles let kubectl find the resources).
    let r = kubectl(
        &env.kubectl,
        env.admin_kc(),
        &["--as", "jane", "get", "secrets", "-n", "other"],
        None,
    )
    .await;
    assert!(
        r.stderr
            .contains("User \"jane\" cannot list resource \"secrets\""),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_without_rbac_applies_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(Config {
        kubeconfig: Some(dir.path().join("kubeconfig")),
        ..Config::default()
    })
    .await
    .unwrap();
    let bin = kubectl_bin("kubectl");
    let kc = cluster.kubeconfig_path();
    // Nothing checks the impersonation when RBAC is off, but the request runs as the
    // impersonated user: the fault-injection endpoint, for system:masters only, refuses jane
    // and serves her once she is impersonated with that group.
    kubectl_ok(&bin, kc, &["get", "--raw", "/devcluster/faults"], None).await;
    let r = kubectl(
        &bin,
        kc,
        &["--as", "jane", "get", "--raw", "/devcluster/faults"],
        None,
    )
    .await;
    assert_refused(&r, "User \"jane\" cannot get path \"/devcluster/faults\"");
    kubectl_ok(
        &bin,
        kc,
        &[
            "--as",
            "jane",
            "--as-group",
            "system:masters",
            "get",
            "--raw",
            "/devcluster/faults",
        ],
        None,
    )
    .await;
    // Resource requests work as the impersonated user.
    kubectl_ok(
        &bin,
        kc,
        &[
            "--as",
            "jane",
            "create",
            "configmap",
            "who",
            "-n",
            "default",
        ],
        None,
    )
    .await;
}
