//! End-to-end harness: a devcluster in-process, a Git repository made with the `git` CLI, and
//! the controller running in-process against the cluster.

use capstan_api::application::{
    Application, ApplicationDestination, ApplicationSource, ApplicationSpec, SyncPolicy,
    SyncPolicyAutomated,
};
use capstan_controller::{Config, Controller, install_crd};
use capstan_testkit::{GitRepo, create_namespaces, temp_dir, wait_for_app};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use std::path::PathBuf;
use std::time::Duration;

pub struct Env {
    /// Held so the cluster lives as long as the test's environment.
    _cluster: devcluster::DevCluster,
    pub client: kube::Client,
    pub repo: GitRepo,
    pub apps: Api<Application>,
    _dirs: Vec<tempfile::TempDir>,
    controller: Option<tokio::task::JoinHandle<()>>,
    cache: PathBuf,
    tweak: fn(&mut Config),
}

impl Env {
    pub async fn start() -> Env {
        Self::start_with(|_| {}).await
    }

    /// Like [`Env::start`], with `tweak` applied to the controller's configuration (at every
    /// start of the controller).
    pub async fn start_with(tweak: fn(&mut Config)) -> Env {
        let mut env = Self::start_idle(tweak).await;
        env.start_controller();
        env
    }

    /// The cluster, the CRD and the repository, no controller yet (tests that run replicas of
    /// their own).
    pub async fn start_idle(tweak: fn(&mut Config)) -> Env {
        let cluster = devcluster::DevCluster::start(devcluster::Config::default())
            .await
            .expect("devcluster starts");
        let client = cluster.client();
        // The controller's own CRD install, not the testkit's: it is what a deployment runs.
        install_crd(&client).await.expect("CRD installs");
        create_namespaces(&client, &["capstan", "demo"]).await;
        let repo_dir = temp_dir("controller-repo");
        let cache_dir = temp_dir("controller-cache");
        let repo = GitRepo::init(repo_dir.path().join("repo"));
        Env {
            apps: Api::namespaced(client.clone(), "capstan"),
            _cluster: cluster,
            client,
            repo,
            cache: cache_dir.path().to_path_buf(),
            _dirs: vec![repo_dir, cache_dir],
            controller: None,
            tweak,
        }
    }

    /// The controller settings of these tests, caching under `cache_dir`.
    pub fn config(&self, cache_dir: PathBuf) -> Config {
        let mut config = Config {
            reconcile_interval: Duration::from_secs(2),
            self_heal_backoff: Duration::from_millis(200),
            wave_timeout: Duration::from_secs(60),
            cache_dir,
            ..Config::default()
        };
        (self.tweak)(&mut config);
        config
    }

    pub fn start_controller(&mut self) {
        let config = self.config(self.cache.clone());
        let controller = Controller::new(self.client.clone(), config).expect("controller");
        self.controller = Some(tokio::spawn(controller.run()));
    }

    pub fn stop_controller(&mut self) {
        if let Some(handle) = self.controller.take() {
            handle.abort();
        }
    }

    /// Writes files (path → content; `None` deletes, if present) and commits them, even when
    /// nothing changed; returns the commit.
    pub fn commit(&self, files: &[(&str, Option<&str>)], message: &str) -> String {
        for (path, content) in files {
            match content {
                Some(text) => {
                    self.repo.write(path, text);
                }
                None if self.repo.path().join(path).exists() => {
                    self.repo.remove(path);
                }
                None => {}
            }
        }
        self.repo.git(&["add", "-A"]);
        self.repo
            .git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.repo.head()
    }

    pub fn spec(&self, path: &str, automated: Option<SyncPolicyAutomated>) -> ApplicationSpec {
        ApplicationSpec {
            project: "default".into(),
            source: ApplicationSource {
                repo_url: self.repo.path().display().to_string(),
                target_revision: "main".into(),
                path: path.into(),
                ..ApplicationSource::default()
            },
            destination: ApplicationDestination {
                server: Some("https://kubernetes.default.svc".into()),
                name: None,
                namespace: "demo".into(),
            },
            sync_policy: automated.map(|a| SyncPolicy {
                automated: Some(a),
                ..SyncPolicy::default()
            }),
            ignore_differences: Vec::new(),
            revision_history_limit: None,
        }
    }

    pub async fn create_app(&self, name: &str, spec: ApplicationSpec) {
        let mut app = Application::new("capstan", name, spec);
        app.metadata.annotations = Some(
            [(
                capstan_api::annotations::REFRESH_INTERVAL.to_string(),
                "1s".to_string(),
            )]
            .into(),
        );
        self.apps
            .create(&PostParams::default(), &app)
            .await
            .expect("create app");
    }

    /// Polls the application until `pred` holds (bails out after two minutes with the last
    /// status, so a broken controller fails the test instead of hanging it).
    pub async fn until(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&Application) -> bool,
    ) -> Application {
        wait_for_app(
            &self.apps,
            name,
            &format!("application {name}: {what}"),
            pred,
        )
        .await
    }

    pub async fn until_cm(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(Option<&ConfigMap>) -> bool,
    ) -> Option<ConfigMap> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), "demo");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let cm = api.get_opt(name).await.expect("get cm");
            if pred(cm.as_ref()) {
                return cm;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("ConfigMap {name}: gave up waiting for {what}; last: {cm:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Where the controller caches Git repositories and trees.
    pub fn cache_dir(&self) -> &std::path::Path {
        &self.cache
    }

    pub async fn cm(&self, name: &str) -> Option<ConfigMap> {
        Api::<ConfigMap>::namespaced(self.client.clone(), "demo")
            .get_opt(name)
            .await
            .expect("get cm")
    }
}

pub fn sync_status(app: &Application) -> String {
    app.status
        .as_ref()
        .and_then(|s| s.sync.as_ref())
        .map(|s| s.status.clone())
        .unwrap_or_default()
}

pub fn health(app: &Application) -> String {
    app.status
        .as_ref()
        .and_then(|s| s.health.as_ref())
        .map(|s| s.status.clone())
        .unwrap_or_default()
}

pub fn revision(app: &Application) -> String {
    app.status
        .as_ref()
        .and_then(|s| s.sync.as_ref())
        .map(|s| s.revision.clone())
        .unwrap_or_default()
}

pub fn cm_yaml(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: \"{value}\"\n"
    )
}

pub fn svc_yaml(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector:\n    app: {name}\n  ports:\n  - port: 80\n    targetPort: 8080\n"
    )
}

pub fn cm_value(cm: Option<&ConfigMap>) -> Option<String> {
    cm.and_then(|c| c.data.as_ref())
        .and_then(|d| d.get("key").cloned())
}

// An Ingress stays Progressing until something sets its load balancer address (nothing does
// on the devcluster): a sync of this two-wave application waits in wave 0 until the test opens
// it with [`Env::open_wave_zero`].
const WAVE_ZERO_INGRESS: &str = "apiVersion: networking.k8s.io/v1
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

const WAVE_ONE_CONFIGMAP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: after\n  annotations:\n    capstan.dev/sync-wave: \"1\"\ndata:\n  key: v\n";

impl Env {
    fn ingresses(&self) -> kube::Api<kube::api::DynamicObject> {
        use kube::api::{ApiResource, GroupVersionKind};
        Api::namespaced_with(
            self.client.clone(),
            "demo",
            &ApiResource::from_gvk(&GroupVersionKind::gvk("networking.k8s.io", "v1", "Ingress")),
        )
    }

    /// Commits the two-wave application under `app/`, creates `name` (manual) over it,
    /// requests a sync and returns once that sync is Running and stuck in wave 0: the Ingress
    /// applied and waited for, the wave-1 ConfigMap `after` not applied.
    pub async fn start_a_sync_stuck_in_wave_zero(&self, name: &str) {
        self.commit(
            &[
                ("app/ingress.yaml", Some(WAVE_ZERO_INGRESS)),
                ("app/after.yaml", Some(WAVE_ONE_CONFIGMAP)),
            ],
            "two waves",
        );
        self.create_app(name, self.spec("app", None)).await;
        self.until(name, "the first comparison", |a| !sync_status(a).is_empty())
            .await;
        capstan_controller::ops::request_sync(&self.apps, name, Default::default(), "tester")
            .await
            .expect("sync requested");
        self.until(name, "the sync to be running", |a| {
            a.status
                .as_ref()
                .and_then(|s| s.operation_state.as_ref())
                .is_some_and(|o| o.phase == "Running")
        })
        .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self
            .ingresses()
            .get_opt("front")
            .await
            .expect("get")
            .is_none()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "Ingress never applied"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sets the Ingress's load balancer address: wave 0 becomes Healthy.
    pub async fn open_wave_zero(&self) {
        self.ingresses()
            .patch_status(
                "front",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(serde_json::json!(
                    {"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.7"}]}}}
                )),
            )
            .await
            .expect("load balancer set");
    }

    /// Waits for the sync started by [`Env::start_a_sync_stuck_in_wave_zero`] to finish after
    /// an interruption, and checks it ended as one successful sync with one history entry.
    pub async fn until_the_resumed_sync_succeeded(&self, name: &str) {
        let app = self
            .until(name, "the resumed sync to finish", |a| {
                a.status
                    .as_ref()
                    .and_then(|s| s.operation_state.as_ref())
                    .is_some_and(|o| o.phase != "Running")
                    && a.operation.is_none()
            })
            .await;
        let status = app.status.expect("status");
        let state = status.operation_state.expect("operation state");
        assert_eq!(state.phase, "Succeeded", "{}", state.message);
        assert_eq!(status.history.len(), 1, "{:?}", status.history);
        assert!(self.cm("after").await.is_some());
    }
}
