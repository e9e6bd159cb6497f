//! devcluster: an embedded Kubernetes-compatible API server for development and tests.
//!
//! It knows nothing of Capstan: it is a Kubernetes API server, and Capstan is one of its clients.
//!
//! ```no_run
//! # async fn demo() -> Result<(), devcluster::Error> {
//! let cluster = devcluster::DevCluster::start(devcluster::Config::default()).await?;
//! let client = cluster.client(); // a kube::Client with admin rights
//! println!("export KUBECONFIG={}", cluster.kubeconfig_path().display());
//! cluster.shutdown().await;
//! # let _ = client; Ok(()) }
//! ```
//!
//! Access control: every request needs a bearer token (the kubeconfig's admin token, a
//! service-account token from the TokenRequest subresource, or a legacy token Secret's). With
//! [`Config::rbac`] the stored Roles, ClusterRoles and bindings decide what each may do; see
//! [`rbac`]. Reliability tests can make the server fail, slow down, cut watches or refuse writes
//! on purpose with [`Config::faults`], or at run time with `GET`/`PUT /devcluster/faults` (admin
//! token only); see [`faults`]. Impersonation headers (`kubectl --as`, `--as-group`) are honoured
//! after authentication, each part authorized as verb `impersonate`; see [`impersonation`].
//!
//! API behaviour worth knowing:
//!
//! - Events: `events.k8s.io/v1` and core/v1 Events are one storage, converted on the way in and
//!   out as Kubernetes does, so the simulated controllers' events are listed and watched through
//!   both; see [`events`].
//! - Field selectors: `metadata.name` and `metadata.namespace` everywhere, and the per-kind
//!   fields Kubernetes makes selectable (Pods' `spec.nodeName`, `status.phase`, …; Events'
//!   `involvedObject.*` / `regarding.*`, `reason`, `type`, …; Secrets' `type`; Namespaces'
//!   `status.phase`; ReplicaSets' `status.replicas`; Jobs' `status.successful`) on list and
//!   watch, with `=`, `==` and `!=`; an unknown label is a 400 (`field label not supported: X`).
//!   See [`validation::FieldSelector`].
//! - DELETE honours `propagationPolicy` (`Orphan`, `Foreground`, `Background`; body or query)
//!   and the deprecated `orphanDependents`: Orphan and Foreground set the `orphan` /
//!   `foregroundDeletion` finalizer and the deletionTimestamp, and the garbage collector
//!   (`sim/gc.rs`) finishes; without an option the object's own GC finalizer decides, else
//!   Background (the default of every kind served here). Namespaces delete their content
//!   themselves and ignore the policy.

pub mod api;
pub mod apply;
pub mod auth;
pub mod controllers;
pub mod defaults;
pub mod discovery;
pub mod events;
pub mod faults;
pub mod impersonation;
pub mod protobuf;
pub mod rbac;
pub mod registry;
pub mod server;
pub mod sim;
pub mod status;
pub mod store;
pub mod table;
pub mod tls;
pub mod validation;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;

use crate::auth::{AllowAll, Authorizer, TokenAuthenticator, UserInfo};
use crate::registry::{Registry, resources_from_crd};
use crate::store::Store;

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding the listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificate generation or TLS setup failed.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The data directory could not be used.
    #[error("data directory: {0}")]
    Store(#[from] store::StoreError),
    /// Reading or writing a file of the data directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The kubeconfig could not be written.
    #[error("cannot write the kubeconfig {0}")]
    Kubeconfig(String),
    /// The kube client could not be built from the kubeconfig.
    #[error("cannot build a client: {0}")]
    Client(String),
    /// The fault injection configuration is invalid.
    #[error("fault injection: {0}")]
    Faults(#[from] faults::FaultError),
    /// The default RBAC roles could not be written.
    #[error("cannot write the default RBAC roles: {0}")]
    Rbac(String),
    /// The namespaces and objects every cluster has at start could not be written.
    #[error("cannot write the system namespaces: {0}")]
    SystemObjects(String),
}

/// Namespaces a real cluster has from its first start (kube-apiserver's system namespace
/// controller creates them).
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the system namespaces and the `kubernetes` Service in `default` where they are
/// missing; objects a persisted store already holds are left as they are.
fn bootstrap_system_objects(state: &State) -> Result<(), status::ApiError> {
    let op = |resource: &str, namespace: Option<&str>| {
        state
            .registry
            .get("", "v1", resource)
            .map(|info| api::Op {
                info,
                namespace: namespace.map(String::from),
                name: None,
                subresource: None,
                query: std::collections::HashMap::new(),
                manager: "kube-apiserver".into(),
                manager_explicit: true,
            })
            .ok_or_else(|| status::ApiError::internal(format!("{resource} are not served")))
    };
    let namespaces = op("namespaces", None)?;
    for name in SYSTEM_NAMESPACES {
        let obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match api::create(state, &namespaces, obj) {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    let services = op("services", Some("default"))?;
    let svc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.0.1",
            "clusterIPs": ["10.96.0.1"],
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
            "sessionAffinity": "None",
        },
    });
    match api::create(state, &services, svc) {
        Ok(_) => Ok(()),
        // Present, or `default` was deleted by hand earlier in a persisted store: either way
        // there is nothing to repair at start.
        Err(e) if e.code == 409 || e.code == 404 || e.code == 403 => Ok(()),
        Err(e) => Err(e),
    }
}

/// How to start a cluster.
#[derive(Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Keep state in this directory (durable, reloaded on start); `None` = in memory.
    pub data_dir: Option<PathBuf>,
    /// Write the kubeconfig here; `None` = a file in a private temporary directory (removed on
    /// shutdown).
    pub kubeconfig: Option<PathBuf>,
    /// Events kept per resource type for watch resumption; older resourceVersions get 410.
    pub history_limit: usize,
    /// Authorization step of every resource request (default: allow all authenticated users).
    /// Ignored when `rbac` is on.
    pub authorizer: Arc<dyn Authorizer>,
    /// Enforce RBAC over the stored Roles, ClusterRoles and bindings (see [`rbac`]).
    pub rbac: bool,
    /// Injected faults (see [`faults`]); the default injects nothing.
    pub faults: faults::FaultConfig,
    /// Simulated workload controllers and kubelet (pod ready delay, node count).
    pub sim: sim::SimConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: None,
            kubeconfig: None,
            history_limit: 1000,
            authorizer: Arc::new(AllowAll),
            rbac: false,
            faults: faults::FaultConfig::default(),
            sim: sim::SimConfig::default(),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("kubeconfig", &self.kubeconfig)
            .field("history_limit", &self.history_limit)
            .field("rbac", &self.rbac)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

/// Shared state of a running server.
pub struct State {
    /// Served resources.
    pub registry: Arc<Registry>,
    /// Objects.
    pub store: Store,
    /// Bearer tokens.
    pub authenticator: TokenAuthenticator,
    /// Authorization.
    pub authorizer: Arc<dyn Authorizer>,
    /// RBAC index and service-account tokens.
    pub rbac: Arc<rbac::Rbac>,
    /// Fault injection.
    pub faults: faults::Faults,
    /// `host:port` clients use (for `/api` discovery).
    pub server_address: String,
}

/// A running cluster. Dropping it stops the server (use [`DevCluster::shutdown`] to wait for it).
pub struct DevCluster {
    url: String,
    kubeconfig_path: PathBuf,
    temp_dir: Option<PathBuf>,
    token: String,
    ca_pem: String,
    client: kube::Client,
    state: Arc<State>,
    shutdown_tx: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn random_token() -> String {
    use rand::Rng;
    let mut bytes = [0u8; 24];
    rand::rng().fill(&mut bytes[..]);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn admin_token(data_dir: Option<&Path>) -> Result<String, Error> {
    let Some(dir) = data_dir else {
        return Ok(random_token());
    };
    let path = dir.join("admin-token");
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        Ok(_) => Err(Error::Io {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "the token file is empty"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let t = random_token();
            tls::write_atomically(&path, &t).map_err(|e| Error::Kubeconfig(e.to_string()))?;
            Ok(t)
        }
        Err(e) => Err(io(e)),
    }
}

impl DevCluster {
    /// Starts a cluster: opens (or creates) the store, serves again the CRDs it holds,
    /// generates the certificates, binds the listener, and writes the kubeconfig once the
    /// listener accepts connections.
    pub async fn start(config: Config) -> Result<DevCluster, Error> {
        // kube's rustls client needs a process-wide crypto provider when more than one is
        // compiled in (the workspace links both ring and aws-lc); ring is what we serve with.
        // An already installed provider is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = Store::open(config.data_dir.as_deref(), config.history_limit)?;
        let registry = Arc::new(Registry::new());
        for crd in store.all_of("apiextensions.k8s.io/customresourcedefinitions") {
            let v: Value = crd.value()?;
            if v.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            if let Ok(resources) = resources_from_crd(&v) {
                let name = v
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                registry.install_crd(name, resources);
            }
        }
        let token = admin_token(config.data_dir.as_deref())?;
        let tls = tls::generate(&[])?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Listen {
                addr: config.listen,
                source,
            })?;
        let local = listener.local_addr().map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
        let host = match local.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
            ip if ip.is_unspecified() => "[::1]".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        let server_address = format!("{host}:{}", local.port());
        let url = format!("https://{server_address}");
        let authenticator = TokenAuthenticator::default();
        authenticator.add(
            &token,
            UserInfo {
                name: "admin".into(),
                groups: vec!["system:masters".into(), "system:authenticated".into()],
            },
        );
        let faults = faults::Faults::new(config.faults.clone())?;
        let signing = match config.data_dir.as_deref() {
            Some(dir) => rbac::SigningKey::in_dir(dir)?,
            None => rbac::SigningKey::random(),
        };
        let rbac = Arc::new(rbac::Rbac::new(
            &store,
            config.rbac,
            signing,
            tls.ca_pem.clone(),
        ));
        let authorizer = if config.rbac {
            rbac.authorizer()
        } else {
            config.authorizer.clone()
        };
        let state = Arc::new(State {
            registry,
            store,
            authenticator,
            authorizer,
            rbac,
            faults,
            server_address,
        });
        state.rbac.attach(&state);
        if config.rbac {
            rbac::bootstrap(&state).map_err(|e| Error::Rbac(e.to_string()))?;
        }
        bootstrap_system_objects(&state).map_err(|e| Error::SystemObjects(e.to_string()))?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(server::serve(
            listener,
            tls.server_config.clone(),
            state.clone(),
            shutdown_rx.clone(),
        ));
        rbac::spawn_token_controller(state.clone(), shutdown_rx.clone());
        if config.rbac {
            rbac::spawn_aggregation(state.clone(), shutdown_rx.clone());
        }
        controllers::spawn(state.clone(), config.sim.clone(), shutdown_rx);

        let (kubeconfig_path, temp_dir) = match &config.kubeconfig {
            Some(p) => (p.clone(), None),
            None => {
                let dir = std::env::temp_dir().join(format!("devcluster-{}", uuid::Uuid::new_v4()));
                (dir.join("kubeconfig"), Some(dir))
            }
        };
        let yaml = tls::kubeconfig_yaml(&url, &tls.ca_pem, &token);
        // The listener is bound and its accept loop spawned: connections made from now on are
        // served, so the kubeconfig may appear.
        tls::write_atomically(&kubeconfig_path, &yaml)?;
        let kc =
            kube::config::Kubeconfig::from_yaml(&yaml).map_err(|e| Error::Client(e.to_string()))?;
        let kube_config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Client(e.to_string()))?;
        let client =
            kube::Client::try_from(kube_config).map_err(|e| Error::Client(e.to_string()))?;
        Ok(DevCluster {
            url,
            kubeconfig_path,
            temp_dir,
            token,
            ca_pem: tls.ca_pem,
            client,
            state,
            shutdown_tx,
            task: Some(task),
        })
    }

    /// A client with admin rights.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Path of the kubeconfig (works with kubectl and kube-rs).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> &str {
        &self.token
    }

    /// PEM of the CA that signed the serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server state, for in-process controllers and tests.
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Stops the server and waits until it no longer accepts connections and the data
    /// directory is released.
    pub async fn shutdown(mut self) {
        self.stop();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn stop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(task) = &self.task {
            task.abort();
        }
        self.state.store.close();
        if let Some(dir) = self.temp_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
