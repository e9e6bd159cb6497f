//! Test harness: an in-process devcluster with the Application CRD, and the API server over
//! real HTTP on a free port.

use capstan_api::application::{
    Application, ApplicationDestination, ApplicationSource, ApplicationSpec,
};
use capstan_server::{Config, Server};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::oneshot;

pub struct Env {
    pub cluster: devcluster::DevCluster,
    pub client: kube::Client,
    pub server: Server,
    pub base: String,
    pub metrics_base: String,
    pub http: reqwest::Client,
    pub admin_password: String,
    stop: Option<oneshot::Sender<()>>,
    /// The controller whose manifests handle the server uses (never run: the tests play the
    /// controller by writing status), and its cache directory.
    _controller: Option<capstan_controller::Controller>,
    _cache: tempfile::TempDir,
}

pub fn app(name: &str) -> Application {
    Application::new(
        "capstan",
        name,
        ApplicationSpec {
            project: "default".into(),
            source: ApplicationSource {
                repo_url: format!("https://git.example/{name}.git"),
                target_revision: "main".into(),
                path: "deploy".into(),
                ..ApplicationSource::default()
            },
            destination: ApplicationDestination {
                server: Some("https://kubernetes.default.svc".into()),
                name: None,
                namespace: "demo".into(),
            },
            ..ApplicationSpec::default()
        },
    )
}

impl Env {
    pub async fn start() -> Env {
        Self::start_with(true).await
    }

    /// `watch`: false starts the server without its Application watch (the cache is seeded
    /// by the test).
    pub async fn start_with(watch: bool) -> Env {
        Self::start_full(watch, true).await
    }

    /// A server given no controller handle, as `capstan server` runs without an in-process
    /// controller.
    pub async fn start_without_controller() -> Env {
        Self::start_full(true, false).await
    }

    async fn start_full(watch: bool, with_controller: bool) -> Env {
        let cluster = capstan_testkit::start_cluster(&["capstan", "demo"]).await;
        let client = cluster.client();
        // The diff and desired manifests come from the controller's manifests handle; the
        // controller itself is not run.
        let cache = tempfile::tempdir().expect("cache dir");
        let controller = with_controller.then(|| {
            capstan_controller::Controller::new(
                client.clone(),
                capstan_controller::Config {
                    cache_dir: cache.path().to_path_buf(),
                    ..capstan_controller::Config::default()
                },
            )
            .expect("controller builds")
        });
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            insecure_cookies: true,
            controller: controller
                .as_ref()
                .map(|c| capstan_controller::manifests::Handle::from(c.shared())),
            ..Config::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let server = if watch {
            capstan_server::serve(config, client.clone(), shutdown).await
        } else {
            capstan_server::serve_unwatched(config, client.clone(), shutdown).await
        }
        .expect("server starts");
        let admin_password = server
            .initial_admin_password
            .clone()
            .expect("first start generates the admin password");
        let base = format!("http://{}", server.addr);
        let metrics_base = format!("http://{}", server.metrics_addr.expect("metrics listener"));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let env = Env {
            cluster,
            client,
            server,
            base,
            metrics_base,
            http,
            admin_password,
            stop: Some(stop),
            _controller: controller,
            _cache: cache,
        };
        if watch {
            env.wait_ready().await;
        }
        env
    }

    pub async fn wait_ready(&self) {
        for _ in 0..600 {
            let r = self
                .http
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server never ready");
    }

    pub fn apps(&self) -> Api<Application> {
        Api::namespaced(self.client.clone(), "capstan")
    }

    /// Creates an Application and waits until the server's cache has it.
    pub async fn create_app(&self, app: &Application) -> Application {
        let created = self
            .apps()
            .create(&PostParams::default(), app)
            .await
            .expect("application created");
        self.wait_cached(app.name(), |_| true).await;
        created
    }

    /// Writes status (the controller's job; the tests play the controller) and waits until the
    /// server's cache has seen it.
    pub async fn set_status(&self, name: &str, status: Value) {
        self.apps()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .expect("status written");
        let want = self
            .apps()
            .get(name)
            .await
            .unwrap()
            .metadata
            .resource_version;
        self.wait_cached(name, |a| a.metadata.resource_version == want)
            .await;
    }

    pub async fn wait_cached(&self, name: &str, ok: impl Fn(&Application) -> bool) {
        for _ in 0..600 {
            if self
                .server
                .cache
                .get("capstan", name)
                .is_some_and(|a| ok(&a))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("application {name} never reached the server's cache");
    }

    pub async fn login(&self, user: &str, password: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/api/v1/session", self.base))
            .json(&json!({"username": user, "password": password}))
            .send()
            .await
            .unwrap()
    }

    /// Logs in and returns the bearer token.
    pub async fn token(&self, user: &str, password: &str) -> String {
        let r = self.login(user, password).await;
        assert_eq!(r.status(), 200, "login of {user}");
        let body: Value = r.json().await.unwrap();
        body["token"].as_str().unwrap().to_string()
    }

    pub async fn admin(&self) -> String {
        self.token("admin", &self.admin_password.clone()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, token: &str, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }

    pub async fn send(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let r = self
            .http
            .request(method, self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.wait().await;
        self.cluster.shutdown().await;
    }
}

/// A route path with its parameters filled in.
pub fn concrete(path: &str, ns: &str, name: &str) -> String {
    path.replace("{namespace}", ns).replace("{name}", name)
}
