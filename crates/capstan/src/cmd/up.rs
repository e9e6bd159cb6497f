//! `capstan up`: the whole product on this machine, in one process — the embedded cluster, the
//! controller, the HTTP API and web UI, a local Git repository of examples and Applications
//! deploying them.
//!
//! Order matters for "nothing half-done": everything that can fail on the user's machine
//! without a cluster (the UI port, `git`, the Kustomize and Helm tools, the example manifests)
//! is checked before the cluster starts, so a missing tool ends in one clear message instead of
//! six Applications stuck with the same error.
//!
//! The examples are embedded in the binary (see `build.rs`), not looked up relative to the
//! current directory: `capstan up` then works from any directory and from an installed binary,
//! and the demo always matches the version of the controller that deploys it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use capstan_api::application::{self as appapi, Application};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/examples.rs"));
}

/// Field manager of the objects `capstan up` applies itself (the Applications, the RBAC).
const FIELD_MANAGER: &str = "capstan-up";

/// The service account the controller and API run as (the one `capstan install` creates).
const SERVICE_ACCOUNT: &str = "capstan";

/// Author and committer of the example repository's first commit.
const GIT_AUTHOR: &str = "capstan up";
const GIT_EMAIL: &str = "capstan-up@localhost";

/// Lifetime asked for the controller's service-account token. A new token is requested at
/// every start; a year covers any demo left running.
const TOKEN_SECONDS: i64 = 365 * 24 * 3600;

/// Arguments of `capstan up`.
///
/// Everything lives under `--data-dir` (default `.capstan`): the cluster state in `devcluster/`,
/// the kubeconfig in `kubeconfig`, the example repository in `examples/`, Git and manifest
/// caches in `cache/`. Running it again with the same directory resumes where it stopped.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory of everything `capstan up` keeps (cluster state, kubeconfig, example repository,
    /// caches).
    #[arg(long, default_value = ".capstan")]
    pub data_dir: PathBuf,
    /// Where to write the kubeconfig of the embedded cluster (default: DATA_DIR/kubeconfig).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Address of the web UI and HTTP API; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the embedded cluster's Kubernetes API; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub cluster_listen: SocketAddr,
    /// How often every application is compared with Git. Short by default so that a commit in
    /// the example repository shows up quickly.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub reconcile_interval: Duration,
    /// Run the controller with the cluster's admin credentials instead of the service account
    /// and RBAC that `capstan install` creates (the embedded cluster then enforces no RBAC).
    #[arg(long)]
    pub no_rbac: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    capstan_controller::parse_duration(s)
        .ok_or_else(|| format!("invalid duration {s:?} (expected e.g. 10s, 1m)"))
}

/// The paths under the data directory, absolute so that what is printed works from anywhere.
struct Layout {
    root: PathBuf,
    cluster: PathBuf,
    kubeconfig: PathBuf,
    repo: PathBuf,
    cache: PathBuf,
}

impl Layout {
    fn new(args: &Args) -> anyhow::Result<Layout> {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
        let root = std::fs::canonicalize(&args.data_dir)
            .with_context(|| format!("resolving the data directory {}", args.data_dir.display()))?;
        let kubeconfig = match &args.kubeconfig {
            Some(k) => std::path::absolute(k)
                .with_context(|| format!("resolving the kubeconfig path {}", k.display()))?,
            None => root.join("kubeconfig"),
        };
        Ok(Layout {
            cluster: root.join("devcluster"),
            repo: root.join("examples"),
            cache: root.join("cache"),
            kubeconfig,
            root,
        })
    }
}

/// Runs the subcommand and returns the process exit code.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    capstan_controller::ensure_crypto_provider();
    check_port_free(args.listen)?;
    let layout = Layout::new(&args)?;

    let created_repo = ensure_examples_repo(&layout.repo)?;
    let repo_url = format!("file://{}", layout.repo.display());
    let apps = load_applications(&layout.repo, &repo_url)?;
    check_renders(&layout, &apps).await?;

    let cluster = devcluster::DevCluster::start(devcluster::Config {
        listen: args.cluster_listen,
        data_dir: Some(layout.cluster.clone()),
        kubeconfig: Some(layout.kubeconfig.clone()),
        rbac: !args.no_rbac,
        ..devcluster::Config::default()
    })
    .await
    .with_context(|| {
        format!(
            "starting the embedded cluster (state in {})",
            layout.cluster.display()
        )
    })?;
    let admin = cluster.client();

    capstan_controller::install_crd(&admin)
        .await
        .context("installing the Application CRD in the embedded cluster")?;
    install_rbac(&admin).await?;
    let controller_client = if args.no_rbac {
        admin.clone()
    } else {
        service_account_client(&admin, &layout.kubeconfig).await?
    };

    // One metrics handle: the controller records into it, the API serves it. The controller
    // exists before the API, which renders diffs with its caches.
    let metrics = capstan_server::Metrics::new();
    let controller = capstan_controller::Controller::new(
        controller_client.clone(),
        capstan_controller::Config {
            namespace: Some(appapi::DEFAULT_NAMESPACE.to_string()),
            reconcile_interval: args.reconcile_interval,
            cache_dir: layout.cache.clone(),
            recorder: std::sync::Arc::new(metrics.clone()),
            ..capstan_controller::Config::default()
        },
    )
    .context("starting the controller")?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = capstan_server::serve(
        capstan_server::Config {
            listen: args.listen,
            // The UI is served over plain http on this machine only.
            insecure_cookies: true,
            metrics,
            controller: Some(controller.shared().into()),
            ..capstan_server::Config::default()
        },
        controller_client.clone(),
        async move {
            let _ = stop_rx.await;
        },
    )
    .await
    .map_err(|e| match e {
        capstan_server::error::ServerError::Bind { addr, source, .. } => anyhow::anyhow!(
            "cannot serve the web UI on {addr}: {source}; choose another address with --listen \
             (e.g. --listen 127.0.0.1:8081)"
        ),
        other => anyhow::Error::new(other).context("starting the HTTP API and web UI"),
    })?;

    let controller_task = tokio::spawn(controller.run());

    apply_applications(&admin, &apps).await?;

    print_banner(
        &layout,
        server.addr,
        server.initial_admin_password.as_deref(),
        created_repo,
        args.reconcile_interval,
        !args.no_rbac,
    );

    let apps_api: Api<Application> = Api::namespaced(admin, appapi::DEFAULT_NAMESPACE);
    let outcome = tokio::select! {
        () = show_progress(apps_api, server.addr) => Ok(()),
        signal = super::devcluster::wait_for_signal() => signal,
    };

    eprintln!("capstan: shutting down");
    let _ = stop_tx.send(());
    if tokio::time::timeout(Duration::from_secs(10), server.wait())
        .await
        .is_err()
    {
        eprintln!("capstan: the HTTP server did not stop within 10s; leaving it");
    }
    controller_task.abort();
    let _ = controller_task.await;
    cluster.shutdown().await;
    outcome?;
    eprintln!("capstan: stopped (state kept in {})", layout.root.display());
    Ok(0)
}

/// Fails early, before anything starts, when the UI address is taken (the common case: a
/// second `capstan up`). The listener is released at once; the server binds it again.
fn check_port_free(addr: SocketAddr) -> anyhow::Result<()> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "{addr} is already in use (is another `capstan up` running?); choose another address \
             for the web UI with --listen, e.g. --listen 127.0.0.1:8081"
        ),
        Err(e) => bail!(
            "cannot listen on {addr} for the web UI: {e}; choose another address with --listen"
        ),
    }
}

/// Creates the example repository at `dir` from the embedded examples, unless it exists.
/// Returns whether it was created.
///
/// It is written in a sibling directory and renamed into place once committed, so an
/// interrupted first start leaves no half-made repository that a second start would trust.
fn ensure_examples_repo(dir: &Path) -> anyhow::Result<bool> {
    if dir.join(".git").exists() {
        return Ok(false);
    }
    if dir.exists() {
        bail!(
            "{} exists but is not a Git repository; move it away (capstan up creates it again) \
             or use another --data-dir",
            dir.display()
        );
    }
    let parent = dir
        .parent()
        .context("the example repository path has no parent directory")?;
    let partial = parent.join(".examples.partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing the leftover {}", partial.display()))?;
    }
    for (rel, bytes) in embedded::EXAMPLES {
        let path = partial.join(rel);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    git(&partial, &["init", "--quiet", "--initial-branch=main"])?;
    git(&partial, &["add", "--all"])?;
    git(
        &partial,
        &[
            "-c",
            "commit.gpgsign=false",
            "commit",
            "--quiet",
            "--no-verify",
            "--message",
            "Capstan examples\n\nCreated by `capstan up`: edit, commit, and Capstan deploys the commit.",
        ],
    )?;
    std::fs::rename(&partial, dir).with_context(|| {
        format!(
            "moving the new repository {} to {}",
            partial.display(),
            dir.display()
        )
    })?;
    Ok(true)
}

/// Runs `git ARGS` in `dir` as the author "capstan up", whatever the user's Git identity.
fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", GIT_AUTHOR)
        .env("GIT_AUTHOR_EMAIL", GIT_EMAIL)
        .env("GIT_COMMITTER_NAME", GIT_AUTHOR)
        .env("GIT_COMMITTER_EMAIL", GIT_EMAIL)
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "git is not installed (not found on PATH): capstan up keeps the example applications \
             in a local Git repository; install git (scripts/setup does) and run it again"
        ),
        Err(e) => bail!("cannot run git: {e}"),
    };
    if !output.status.success() {
        bail!(
            "`git {}` in {} failed: {}",
            args.first().copied().unwrap_or_default(),
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// One Application manifest of `apps/`, with `spec.source.repoURL` pointing at the local
/// repository.
struct AppManifest {
    file: PathBuf,
    name: String,
    object: Value,
}

/// Reads `apps/*.yaml` of the example repository's working tree (so an Application the user
/// edited or removed there is respected at the next start).
fn load_applications(repo: &Path, repo_url: &str) -> anyhow::Result<Vec<AppManifest>> {
    let dir = repo.join("apps");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading the Applications directory {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading the Applications directory {}", dir.display()))?;
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"));
    files.sort();
    let mut apps = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let value: Value = serde::Deserialize::deserialize(doc).with_context(|| {
                format!("{}: document {} is not valid YAML", file.display(), i + 1)
            })?;
            if value.is_null() {
                continue;
            }
            apps.push(application_from(&file, value, repo_url)?);
        }
    }
    if apps.is_empty() {
        bail!("no Application manifests in {}", dir.display());
    }
    Ok(apps)
}

fn application_from(file: &Path, mut value: Value, repo_url: &str) -> anyhow::Result<AppManifest> {
    let at = file.display();
    let api_version = value.get("apiVersion").and_then(Value::as_str);
    let kind = value.get("kind").and_then(Value::as_str);
    if api_version != Some(appapi::API_VERSION) || kind != Some(appapi::KIND) {
        bail!(
            "{at}: expected apiVersion {} and kind {}, found {} {}",
            appapi::API_VERSION,
            appapi::KIND,
            api_version.unwrap_or("(none)"),
            kind.unwrap_or("(none)")
        );
    }
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .with_context(|| format!("{at}: metadata.name is missing"))?
        .to_string();
    match value.pointer("/metadata/namespace").and_then(Value::as_str) {
        None => value["metadata"]["namespace"] = json!(appapi::DEFAULT_NAMESPACE),
        Some(appapi::DEFAULT_NAMESPACE) => {}
        Some(other) => bail!(
            "{at}: Application {name} is in namespace {other}; capstan up runs the controller for \
             namespace {} only",
            appapi::DEFAULT_NAMESPACE
        ),
    }
    let source = value
        .pointer_mut("/spec/source")
        .and_then(Value::as_object_mut)
        .with_context(|| format!("{at}: Application {name} has no spec.source"))?;
    source.insert("repoURL".into(), json!(repo_url));
    Ok(AppManifest {
        file: file.to_path_buf(),
        name,
        object: value,
    })
}

/// Renders every example from the repository's working tree with the controller's renderer,
/// so that a missing Kustomize or Helm engine is reported once, clearly, before anything runs.
async fn check_renders(layout: &Layout, apps: &[AppManifest]) -> anyhow::Result<()> {
    let mut checks = Vec::new();
    for app in apps {
        let source = app
            .object
            .pointer("/spec/source")
            .cloned()
            .unwrap_or_default();
        let mut opts = json!({ "path": source.get("path").cloned().unwrap_or(json!("")) });
        for field in ["chart", "directory", "kustomize", "helm"] {
            if let Some(v) = source.get(field) {
                opts[field] = v.clone();
            }
        }
        let opts: capstan_render::SourceOptions =
            serde_json::from_value(opts).with_context(|| {
                format!(
                    "{}: spec.source of Application {} is invalid",
                    app.file.display(),
                    app.name
                )
            })?;
        let namespace = app
            .object
            .pointer("/spec/destination/namespace")
            .and_then(Value::as_str)
            .unwrap_or(appapi::DEFAULT_NAMESPACE)
            .to_string();
        let ctx = capstan_render::RenderContext {
            app_name: app.name.clone(),
            namespace,
            kube_version: None,
            api_versions: Vec::new(),
        };
        checks.push((app.name.clone(), app.file.clone(), opts, ctx));
    }
    let repo = layout.repo.clone();
    let scratch = layout.cache.join("scratch");
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let renderer = capstan_render::Renderer::new(capstan_render::RendererConfig {
            scratch_dir: Some(scratch),
            ..capstan_render::RendererConfig::default()
        })
        .context("setting up the renderer")?;
        for (name, file, opts, ctx) in checks {
            if let Err(e) = renderer.render(&repo, &opts, &ctx, None) {
                return Err(render_failure(&name, &file, e));
            }
        }
        Ok(())
    })
    .await
    .context("the render check panicked")?
}

/// A render error of an example in the words a newcomer needs: which tool is missing and how
/// to get it.
fn render_failure(name: &str, file: &Path, e: capstan_render::RenderError) -> anyhow::Error {
    match e {
        capstan_render::RenderError::ToolUnavailable {
            tool: "helm",
            reason,
        } => anyhow::anyhow!(
            "the example application {name} is a Helm chart, and Helm's engine is missing \
             ({reason}). Run scripts/setup (it installs the helm-python-sdk wheel that carries \
             libhelm_c), or put `helm` on PATH, then run capstan up again"
        ),
        capstan_render::RenderError::ToolUnavailable {
            tool: "kustomize",
            reason,
        } => anyhow::anyhow!(
            "the example application {name} is a Kustomize overlay, and neither `kubectl` nor \
             `kustomize` is on PATH ({reason}). Install kubectl, then run capstan up again"
        ),
        other => anyhow::anyhow!(
            "the example application {name} ({}) does not render: {other}",
            file.display()
        ),
    }
}

/// Applies the namespace, service account and RBAC that `capstan install` prints (the CRD is
/// installed by the caller; the in-cluster Deployment and its Service are this process).
async fn install_rbac(admin: &kube::Client) -> anyhow::Result<()> {
    let install = super::install::Install::new(appapi::DEFAULT_NAMESPACE, "unused");
    let rbac: Vec<Value> = super::install::manifests(&install)?
        .into_iter()
        .filter(|m| {
            matches!(
                m.get("kind").and_then(Value::as_str),
                Some("Namespace" | "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding")
            )
        })
        .collect();
    super::install::apply(admin, &rbac)
        .await
        .context("applying the RBAC of `capstan install`")
}

/// A client that authenticates as the `capstan` service account (a fresh TokenRequest token)
/// against the cluster of `kubeconfig`.
async fn service_account_client(
    admin: &kube::Client,
    kubeconfig: &Path,
) -> anyhow::Result<kube::Client> {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), appapi::DEFAULT_NAMESPACE);
    let request: TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": { "expirationSeconds": TOKEN_SECONDS }
    }))
    .context("building the TokenRequest")?;
    let granted = accounts
        .create_token_request(SERVICE_ACCOUNT, &PostParams::default(), &request)
        .await
        .with_context(|| {
            format!(
                "requesting a token for the service account {}/{SERVICE_ACCOUNT}",
                appapi::DEFAULT_NAMESPACE
            )
        })?;
    let token = granted
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .context("the cluster answered the TokenRequest without a token")?;
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading the kubeconfig {}", kubeconfig.display()))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .with_context(|| format!("using the kubeconfig {}", kubeconfig.display()))?;
    // Same server and CA, another identity: only the bearer token changes.
    config.auth_info = serde_json::from_value(json!({ "token": token }))
        .context("building the service account's credentials")?;
    kube::Client::try_from(config).context("building the service account's client")
}

/// Server-side applies the Applications (so a restart updates them instead of duplicating).
async fn apply_applications(admin: &kube::Client, apps: &[AppManifest]) -> anyhow::Result<()> {
    let api: Api<Application> = Api::namespaced(admin.clone(), appapi::DEFAULT_NAMESPACE);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for app in apps {
        api.patch(&app.name, &params, &Patch::Apply(&app.object))
            .await
            .with_context(|| {
                format!(
                    "creating the Application {} from {}",
                    app.name,
                    app.file.display()
                )
            })?;
    }
    Ok(())
}

fn print_banner(
    layout: &Layout,
    ui: SocketAddr,
    password: Option<&str>,
    created_repo: bool,
    interval: Duration,
    rbac: bool,
) {
    println!("Capstan is up.");
    println!();
    println!("  Web UI:        http://{ui}/");
    println!("  User:          admin");
    match password {
        Some(p) => println!("  Password:      {p}   (generated now and shown only this once)"),
        None => println!(
            "  Password:      (set at the first start; forgot it? kubectl -n {} delete secret {} and restart)",
            appapi::DEFAULT_NAMESPACE,
            capstan_server::auth::USERS_SECRET
        ),
    }
    println!(
        "  Kubernetes:    export KUBECONFIG={}",
        layout.kubeconfig.display()
    );
    println!(
        "  Example repo:  {}   ({}; edit, `git commit`, and Capstan deploys the commit within about {}s)",
        layout.repo.display(),
        if created_repo {
            "created now"
        } else {
            "yours since the first start"
        },
        interval.as_secs().max(1)
    );
    if rbac {
        println!(
            "  Controller:    service account {}/{SERVICE_ACCOUNT} with the RBAC of `capstan install`",
            appapi::DEFAULT_NAMESPACE
        );
    } else {
        println!("  Controller:    the cluster's admin credentials (--no-rbac)");
    }
    println!();
    println!(
        "Ctrl-C stops everything; the state stays in {}.",
        layout.root.display()
    );
    println!();
}

/// Prints a one-line summary of the Applications whenever it changes, forever (it keeps
/// reporting after everything is Healthy: a commit makes an application OutOfSync again).
async fn show_progress(api: Api<Application>, ui: SocketAddr) {
    let mut last = String::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut failing_since_print = false;
    loop {
        ticker.tick().await;
        let line = match api.list(&Default::default()).await {
            Ok(list) => {
                failing_since_print = false;
                summary(&list.items, ui)
            }
            Err(e) => {
                if !failing_since_print {
                    eprintln!("capstan: cannot list the Applications: {e}");
                    failing_since_print = true;
                }
                continue;
            }
        };
        if line != last {
            println!("{line}");
            last = line;
        }
    }
}

/// "4/6 applications Synced+Healthy; waiting for podinfo-prod (OutOfSync, Progressing), …"
fn summary(apps: &[Application], ui: SocketAddr) -> String {
    let mut waiting = BTreeMap::new();
    for app in apps {
        let status = app.status.as_ref();
        let sync = status
            .and_then(|s| s.sync.as_ref())
            .map_or("Unknown", |s| s.status.as_str());
        let health = status
            .and_then(|s| s.health.as_ref())
            .map_or("Unknown", |h| h.status.as_str());
        if sync == appapi::SYNC_SYNCED && health == "Healthy" {
            continue;
        }
        let mut what = format!("{sync}, {health}");
        if let Some(c) = status.and_then(|s| s.conditions.first()) {
            let mut message: String = c.message.chars().take(160).collect();
            if message.len() < c.message.len() {
                message.push('…');
            }
            what.push_str(&format!(": {}: {message}", c.type_));
        }
        waiting.insert(app.metadata.name.clone().unwrap_or_default(), what);
    }
    let healthy = apps.len() - waiting.len();
    let total = apps.len();
    if waiting.is_empty() {
        return format!("{healthy}/{total} applications Synced+Healthy. See them at http://{ui}/");
    }
    let list: Vec<String> = waiting
        .iter()
        .map(|(name, what)| format!("{name} ({what})"))
        .collect();
    format!(
        "{healthy}/{total} applications Synced+Healthy; waiting for {}",
        list.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(yaml: &str) -> Value {
        serde_yaml_ng::from_str(yaml).expect("test YAML")
    }

    #[test]
    fn an_application_points_at_the_local_repository() {
        let app = application_from(
            Path::new("apps/a.yaml"),
            manifest(
                "apiVersion: capstan.dev/v1alpha1\nkind: Application\nmetadata: {name: a}\n\
                 spec: {source: {repoURL: https://example.com/x.git, path: p}}",
            ),
            "file:///tmp/repo",
        )
        .expect("valid");
        assert_eq!(app.name, "a");
        assert_eq!(app.object["spec"]["source"]["repoURL"], "file:///tmp/repo");
        assert_eq!(app.object["spec"]["source"]["path"], "p");
        assert_eq!(app.object["metadata"]["namespace"], "capstan");
    }

    #[test]
    fn a_bad_application_manifest_names_its_file_and_field() {
        let cases = [
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}",
                "expected apiVersion",
            ),
            (
                "apiVersion: capstan.dev/v1alpha1\nkind: Application\nmetadata: {}\nspec: {source: {}}",
                "metadata.name is missing",
            ),
            (
                "apiVersion: capstan.dev/v1alpha1\nkind: Application\nmetadata: {name: a, namespace: other}\nspec: {source: {}}",
                "namespace other",
            ),
            (
                "apiVersion: capstan.dev/v1alpha1\nkind: Application\nmetadata: {name: a}\nspec: {}",
                "has no spec.source",
            ),
        ];
        for (yaml, expected) in cases {
            let err = application_from(Path::new("apps/bad.yaml"), manifest(yaml), "file:///r")
                .err()
                .unwrap_or_else(|| panic!("{yaml} is refused"));
            let text = format!("{err:#}");
            assert!(text.starts_with("apps/bad.yaml: "), "{text}");
            assert!(text.contains(expected), "{text} should say {expected:?}");
        }
    }

    fn app(name: &str, sync: &str, health: &str, condition: Option<&str>) -> Application {
        serde_json::from_value(json!({
            "apiVersion": "capstan.dev/v1alpha1",
            "kind": "Application",
            "metadata": {"name": name, "namespace": "capstan"},
            "spec": {"source": {"repoURL": "file:///r", "path": "p"},
                     "destination": {"namespace": "n"}},
            "status": {
                "sync": {"status": sync},
                "health": {"status": health},
                "conditions": condition
                    .map(|m| vec![json!({"type": "ComparisonError", "message": m})])
                    .unwrap_or_default(),
            }
        }))
        .expect("a valid Application")
    }

    #[test]
    fn the_summary_counts_healthy_apps_and_says_why_others_wait() {
        let ui: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let line = summary(
            &[
                app("b", "Synced", "Healthy", None),
                app("a", "OutOfSync", "Missing", Some("rendering \"p\": boom")),
                app("c", "Synced", "Progressing", None),
            ],
            ui,
        );
        assert_eq!(
            line,
            "1/3 applications Synced+Healthy; waiting for a (OutOfSync, Missing: \
             ComparisonError: rendering \"p\": boom), c (Synced, Progressing)"
        );
        let line = summary(&[app("b", "Synced", "Healthy", None)], ui);
        assert_eq!(
            line,
            "1/1 applications Synced+Healthy. See them at http://127.0.0.1:8080/"
        );
    }

    #[test]
    fn the_embedded_examples_hold_the_applications_and_their_sources() {
        let paths: Vec<&str> = embedded::EXAMPLES.iter().map(|(p, _)| *p).collect();
        for expected in [
            "apps/guestbook-dev.yaml",
            "guestbook/overlays/prod/kustomization.yaml",
            "podinfo/Chart.yaml",
            "jsonnet-hello/main.jsonnet",
        ] {
            assert!(paths.contains(&expected), "{expected} in {paths:?}");
        }
        let on_disk = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/podinfo/Chart.yaml"),
        )
        .expect("read the chart");
        let embedded = embedded::EXAMPLES
            .iter()
            .find(|(p, _)| *p == "podinfo/Chart.yaml")
            .map(|(_, b)| *b);
        assert_eq!(embedded, Some(on_disk.as_slice()));
    }
}
