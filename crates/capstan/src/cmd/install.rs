//! `capstan install`: the YAML to run Capstan inside a cluster (CRD, namespace, RBAC,
//! Deployment), printed for `kubectl apply -f -`.

use serde_json::{Value, json};

/// Arguments of `capstan install`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Namespace of the controller (and of its Applications).
    #[arg(long, default_value = capstan_api::application::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Container image of the controller.
    #[arg(long, default_value = "ghcr.io/capstan/capstan:latest")]
    pub image: String,
}

/// The manifests, in apply order.
pub fn manifests(namespace: &str, image: &str) -> anyhow::Result<Vec<Value>> {
    let crd = serde_json::to_value(capstan_api::Application::crd())?;
    let labels =
        json!({"app.kubernetes.io/name": "capstan", "app.kubernetes.io/component": "controller"});
    Ok(vec![
        crd,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "capstan", "namespace": namespace}}),
        // The controller applies whatever the applications contain, of any kind, and watches
        // every kind it deploys: cluster-wide rights, as any GitOps agent needs.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "capstan-controller"},
        "rules": [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["get"]}
        ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "capstan-controller"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "capstan-controller"},
               "subjects": [{"kind": "ServiceAccount", "name": "capstan", "namespace": namespace}]}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "capstan-controller", "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": "capstan",
                    "containers": [{
                        "name": "capstan",
                        "image": image,
                        "args": ["server", "--namespace", namespace, "--no-install-crd",
                                 "--cache-dir", "/var/cache/capstan"],
                        "volumeMounts": [{"name": "cache", "mountPath": "/var/cache/capstan"}],
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}
                    }],
                    "volumes": [{"name": "cache", "emptyDir": {}}]
                }
            }
        }}),
    ])
}

/// Runs the subcommand and returns the process exit code.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let mut out = String::new();
    for m in manifests(&args.namespace, &args.image)? {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&m)?);
    }
    print!("{out}");
    Ok(0)
}
