//! `capstan install`: Capstan inside a cluster (CRD, namespace, RBAC, Deployment, Service),
//! printed for Git and `kubectl apply`, or applied directly with `--apply`. With
//! `--self-manage` the output also holds an Application `capstan` whose source is the very
//! place the output is committed to: from then on Capstan manages its own installation from Git
//! (an upgrade is a commit that changes the image).

use std::path::PathBuf;

use anyhow::Context;
use capstan_api::annotations as ann;
use capstan_api::tracking::TrackingId;
use capstan_controller::compare::gvk_of;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

/// The name of the Application that manages Capstan's own installation (`--self-manage`).
pub const SELF_APP: &str = "capstan";

/// Arguments of `capstan install`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Namespace of the controller (and of its Applications).
    #[arg(long, default_value = capstan_api::application::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Container image of the controller.
    #[arg(long, default_value = "ghcr.io/capstan/capstan:latest")]
    pub image: String,
    /// Controller replicas. They share the applications through Leases (see --shards); with
    /// one shard, one replica works and the others stand by.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub replicas: u32,
    /// Shards the applications are split into among the replicas (`capstan server --shards`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub shards: u32,
    /// Add an Application `capstan` that keeps this installation equal to --path of --repo:
    /// commit this command's output there and Capstan manages itself from Git.
    #[arg(long, requires_all = ["repo", "path"])]
    pub self_manage: bool,
    /// Repository the installation is committed to (with --self-manage).
    #[arg(long, requires = "self_manage")]
    pub repo: Option<String>,
    /// Directory of --repo holding the installation (with --self-manage).
    #[arg(long, requires = "self_manage")]
    pub path: Option<String>,
    /// Branch, tag or commit of --repo to follow (with --self-manage).
    #[arg(long, default_value = "HEAD")]
    pub revision: String,
    /// Apply to the cluster (server-side apply, field manager `capstan`) instead of printing,
    /// and create the `admin` user, printing its password once.
    #[arg(long)]
    pub apply: bool,
    /// Kubeconfig of the cluster for --apply (default: $KUBECONFIG, ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

/// What to install.
#[derive(Debug, Clone)]
pub struct Install {
    /// Namespace of the controller and its Applications.
    pub namespace: String,
    /// Controller image.
    pub image: String,
    /// Deployment replicas.
    pub replicas: u32,
    /// `capstan server --shards`.
    pub shards: u32,
    /// Where the installation lives in Git, when Capstan manages it.
    pub self_managed: Option<SelfManaged>,
}

/// The Git home of a self-managed installation.
#[derive(Debug, Clone)]
pub struct SelfManaged {
    /// Repository URL (as the Application's `repoURL`).
    pub repo: String,
    /// Directory in the repository.
    pub path: String,
    /// Revision followed.
    pub revision: String,
}

impl Install {
    /// The installation of `namespace` with one replica of `image`, not self-managed.
    pub fn new(namespace: &str, image: &str) -> Self {
        Install {
            namespace: namespace.to_string(),
            image: image.to_string(),
            replicas: 1,
            shards: 1,
            self_managed: None,
        }
    }

    fn from_args(args: &Args) -> anyhow::Result<Self> {
        let self_managed = match (args.self_manage, &args.repo, &args.path) {
            (true, Some(repo), Some(path)) => {
                let url = capstan_source::RepoUrl::parse(repo).context("--repo")?;
                if url.has_embedded_password() {
                    // The URL goes into the Application, committed to Git and readable by all.
                    anyhow::bail!(
                        "--repo {url}: remove the password from the URL and store it with \
                         `capstan repo add {url} --username … --password-stdin`"
                    );
                }
                let path = path.trim_matches('/').to_string();
                if path.split('/').any(|part| part == "..") {
                    anyhow::bail!("--path {path:?}: must stay inside the repository (no `..`)");
                }
                Some(SelfManaged {
                    repo: repo.clone(),
                    path: if path.is_empty() { ".".into() } else { path },
                    revision: args.revision.clone(),
                })
            }
            _ => None,
        };
        Ok(Install {
            namespace: args.namespace.clone(),
            image: args.image.clone(),
            replicas: args.replicas,
            shards: args.shards,
            self_managed,
        })
    }
}

/// The manifests, in apply order.
pub fn manifests(install: &Install) -> anyhow::Result<Vec<Value>> {
    let namespace = install.namespace.as_str();
    // The CRD carries Prune=false itself (pruning it would delete every Application); so does
    // the namespace, whose pruning would delete the controller.
    let crd = serde_json::to_value(capstan_api::Application::crd())?;
    let labels =
        json!({"app.kubernetes.io/name": "capstan", "app.kubernetes.io/component": "controller"});
    let args = vec![
        "server".to_string(),
        "--namespace".into(),
        namespace.into(),
        // The CRD is part of this installation, applied (and kept) from here.
        "--no-install-crd".into(),
        "--cache-dir".into(),
        "/var/cache/capstan".into(),
        "--listen".into(),
        "0.0.0.0:8080".into(),
        "--metrics-listen".into(),
        "0.0.0.0:8081".into(),
        "--shards".into(),
        install.shards.to_string(),
    ];
    let mut out = vec![
        crd,
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": namespace,
                            "annotations": {ann::SYNC_OPTIONS: "Prune=false"}}}),
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
            "replicas": install.replicas,
            // Leases make an overlap of old and new pods safe: the new one waits for the
            // shards the old one releases when it is stopped.
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": "capstan",
                    "terminationGracePeriodSeconds": 30,
                    "containers": [{
                        "name": "capstan",
                        "image": install.image,
                        "args": args,
                        // The replica's identity in the leases.
                        "env": [{"name": "POD_NAME",
                                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "ports": [{"name": "http", "containerPort": 8080},
                                  {"name": "metrics", "containerPort": 8081}],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                          "periodSeconds": 20},
                        "securityContext": {"allowPrivilegeEscalation": false,
                                            "readOnlyRootFilesystem": true,
                                            "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "cache", "mountPath": "/var/cache/capstan"},
                                         {"name": "tmp", "mountPath": "/tmp"}],
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}
                    }],
                    "volumes": [{"name": "cache", "emptyDir": {}},
                                {"name": "tmp", "emptyDir": {}}]
                }
            }
        }}),
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "capstan-server", "namespace": namespace, "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                      {"name": "metrics", "port": 8081, "targetPort": "metrics"}]
        }}),
    ];
    if let Some(home) = &install.self_managed {
        out.push(json!({"apiVersion": capstan_api::application::API_VERSION,
        "kind": capstan_api::application::KIND,
        "metadata": {"name": SELF_APP, "namespace": namespace},
        "spec": {
            "project": "default",
            "source": {"repoURL": home.repo, "targetRevision": home.revision, "path": home.path},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": namespace},
            // Self-heal: Git wins over hand edits of the installation. No automated prune: an
            // object dropped from Git is only deleted by a sync a person asks for with prune.
            "syncPolicy": {"automated": {"selfHeal": true, "prune": false}}
        }}));
    }
    Ok(out)
}

/// The tracking id `app` (in `namespace`) gives `manifest`, as its sync would.
fn tracking_id(namespace: &str, app: &str, manifest: &Value) -> Option<String> {
    let kind = gvk_of(manifest).ok()?;
    Some(
        TrackingId {
            app_namespace: namespace.to_string(),
            app_name: app.to_string(),
            group: kind.group,
            kind: kind.kind,
            namespace: str_at(manifest, "/metadata/namespace").to_string(),
            name: str_at(manifest, "/metadata/name").to_string(),
        }
        .to_string(),
    )
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Server-side applies `manifests` in order, as field manager `capstan` (the controller's, so
/// that a self-managing Application owns these fields as they are, without conflicts). A CRD is
/// awaited until Established before what follows, which may be of its kind.
pub async fn apply(client: &kube::Client, manifests: &[Value]) -> anyhow::Result<()> {
    let params = PatchParams::apply(ann::FIELD_MANAGER).force();
    for manifest in manifests {
        let name = str_at(manifest, "/metadata/name");
        let gvk = gvk_of(manifest).map_err(anyhow::Error::msg)?;
        let resource = ApiResource::from_gvk(&gvk);
        let api: Api<DynamicObject> = if manifest.pointer("/metadata/namespace").is_some() {
            Api::namespaced_with(
                client.clone(),
                str_at(manifest, "/metadata/namespace"),
                &resource,
            )
        } else {
            Api::all_with(client.clone(), &resource)
        };
        api.patch(name, &params, &Patch::Apply(manifest))
            .await
            .with_context(|| format!("applying the {} {name}", gvk.kind))?;
        if gvk.kind == "CustomResourceDefinition" {
            capstan_controller::wait_for_crd(
                &Api::<CustomResourceDefinition>::all(client.clone()),
                name,
            )
            .await?;
        }
    }
    Ok(())
}

/// Runs the subcommand and returns the process exit code.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let install = Install::from_args(&args)?;
    let mut manifests = manifests(&install)?;
    if !args.apply {
        let mut out = String::new();
        for m in manifests {
            out.push_str("---\n");
            out.push_str(&serde_yaml_ng::to_string(&m)?);
        }
        print!("{out}");
        return Ok(0);
    }
    let client = super::server::kube_client(args.kubeconfig.as_deref()).await?;
    if install.self_managed.is_some() {
        // Born tracked by the Application that manages them: its first comparison finds
        // them Synced, with nothing to apply.
        for m in &mut manifests {
            if let Some(id) = tracking_id(&install.namespace, SELF_APP, m) {
                m["metadata"]["annotations"][ann::TRACKING_ID] = Value::String(id);
            }
        }
    }
    apply(&client, &manifests).await?;
    let password = capstan_server::auth::bootstrap(&client, &install.namespace)
        .await
        .context("creating the admin user")?;
    println!(
        "Capstan is installed in namespace {ns}: {n} objects applied{managed}.",
        ns = install.namespace,
        n = manifests.len(),
        managed = if install.self_managed.is_some() {
            format!(", Application {SELF_APP} manages them from Git from now on")
        } else {
            String::new()
        }
    );
    match password {
        Some(password) => println!(
            "  User admin, password (shown only this once, stored hashed in Secret {}/{}): {password}",
            install.namespace,
            capstan_server::auth::USERS_SECRET
        ),
        None => println!(
            "  Users: the Secret {}/{} already exists and was left as it is.",
            install.namespace,
            capstan_server::auth::USERS_SECRET
        ),
    }
    println!(
        "  Web UI:   kubectl -n {} port-forward service/capstan-server 8080:80, then http://localhost:8080/",
        install.namespace
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_managed_installation_carries_its_application_and_protects_crd_and_namespace() {
        let install = Install {
            replicas: 2,
            shards: 3,
            self_managed: Some(SelfManaged {
                repo: "https://git.example.com/platform.git".into(),
                path: "capstan".into(),
                revision: "main".into(),
            }),
            ..Install::new("gitops", "example.invalid/capstan:1")
        };
        let all = manifests(&install).unwrap();
        let kinds: Vec<&str> = all.iter().map(|m| str_at(m, "/kind")).collect();
        assert_eq!(
            kinds,
            [
                "CustomResourceDefinition",
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Deployment",
                "Service",
                "Application"
            ]
        );
        for m in &all[..2] {
            assert_eq!(
                str_at(m, "/metadata/annotations/capstan.dev~1sync-options"),
                "Prune=false"
            );
        }
        let deployment = &all[5];
        assert_eq!(deployment["spec"]["replicas"], 2);
        let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
        let args: Vec<&str> = args
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(args.windows(2).any(|w| w == ["--shards", "3"]), "{args:?}");
        assert!(
            args.windows(2).any(|w| w == ["--namespace", "gitops"]),
            "{args:?}"
        );
        let app = &all[7];
        assert_eq!(str_at(app, "/metadata/namespace"), "gitops");
        assert_eq!(str_at(app, "/spec/source/path"), "capstan");
        assert_eq!(str_at(app, "/spec/destination/namespace"), "gitops");
        assert_eq!(
            tracking_id("gitops", SELF_APP, deployment).as_deref(),
            Some("gitops_capstan:apps/Deployment:gitops/capstan-controller")
        );
        assert_eq!(
            tracking_id("gitops", SELF_APP, &all[0]).as_deref(),
            Some(
                "gitops_capstan:apiextensions.k8s.io/CustomResourceDefinition:/applications.capstan.dev"
            )
        );
        // Without --self-manage there is no Application.
        let plain = manifests(&Install::new("capstan", "x")).unwrap();
        assert_eq!(plain.len(), 7);
    }

    #[test]
    fn a_path_out_of_the_repository_is_refused() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let parse = |extra: &[&str]| {
            let mut argv = vec![
                "capstan",
                "--self-manage",
                "--repo",
                "https://git.example.com/p.git",
            ];
            argv.extend_from_slice(extra);
            Install::from_args(&Cli::try_parse_from(argv).unwrap().args)
        };
        let err = parse(&["--path", "../elsewhere"]).unwrap_err();
        assert!(err.to_string().contains("--path"), "{err}");
        assert_eq!(
            parse(&["--path", "/capstan/"])
                .unwrap()
                .self_managed
                .unwrap()
                .path,
            "capstan"
        );
        for repo in ["https://", "https://admin:hunter2@git.example.com/p.git"] {
            let argv = ["capstan", "--self-manage", "--repo", repo, "--path", "x"];
            let err = Install::from_args(&Cli::try_parse_from(argv).unwrap().args).unwrap_err();
            let err = format!("{err:#}");
            assert!(err.contains("--repo"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}
