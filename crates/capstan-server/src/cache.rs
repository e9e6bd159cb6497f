//! The in-memory application cache: every Application, fed by a kube-runtime watch, so that a
//! list request filters and pages over memory instead of calling the API server (10,000
//! applications list in about a millisecond). Each change is also published on a broadcast
//! channel, which the server-sent-events stream forwards to clients.

use capstan_api::application::{Application, Lock, ResourceStatus};
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use tokio::sync::broadcast;

/// The key of an application: namespace and name.
pub type AppKey = (String, String);

/// What a list view shows of one application.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppSummary {
    /// Namespace of the Application.
    pub namespace: String,
    /// Name of the Application.
    pub name: String,
    /// Project (`default` when empty).
    pub project: String,
    /// `spec.source.repoURL`.
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    /// `spec.source.path`.
    pub path: String,
    /// `spec.source.targetRevision`.
    pub target_revision: String,
    /// `spec.destination.server` or `.name`.
    pub destination: String,
    /// `spec.destination.namespace`.
    pub destination_namespace: String,
    /// `status.sync.status` (`Unknown` before the first reconcile).
    pub sync: String,
    /// `status.sync.revision`.
    pub revision: String,
    /// `status.health.status` (`Unknown` before the first reconcile).
    pub health: String,
    /// `status.health.message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_message: Option<String>,
    /// Automated sync on.
    pub auto_sync: bool,
    /// The lock, when rolled back and not yet unlocked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<Lock>,
    /// The requested or last operation's progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationSummary>,
    /// `status.reconciledAt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconciled_at: Option<String>,
    /// Number of objects in `status.resources`.
    pub resource_count: usize,
}

/// Progress of an application's operation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationSummary {
    /// `Requested` (written, not yet picked up), `Running`, `Succeeded`, `Failed`, `Error`,
    /// `Terminating`.
    pub phase: String,
    /// Progress or outcome in words.
    pub message: String,
    /// Who asked (empty for automated syncs).
    pub initiated_by: String,
    /// Objects the sync has handled so far.
    pub resources_done: usize,
    /// Start (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// End (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

impl AppSummary {
    /// The summary of `app`.
    pub fn of(app: &Application) -> Self {
        let status = app.status.as_ref();
        let spec = &app.spec;
        let state = status.and_then(|s| s.operation_state.as_ref());
        let running = state.is_some_and(|s| s.phase == "Running");
        let operation = match (&app.operation, state) {
            (Some(op), _) if !running => Some(OperationSummary {
                phase: "Requested".into(),
                message: String::new(),
                initiated_by: op.initiated_by.username.clone(),
                resources_done: 0,
                started_at: None,
                finished_at: None,
            }),
            (_, Some(state)) => Some(OperationSummary {
                phase: state.phase.clone(),
                message: state.message.clone(),
                initiated_by: state.operation.initiated_by.username.clone(),
                resources_done: state.sync_result.as_ref().map_or(0, |r| r.resources.len()),
                started_at: Some(state.started_at.clone()),
                finished_at: state.finished_at.clone(),
            }),
            _ => None,
        };
        AppSummary {
            namespace: app.namespace().to_string(),
            name: app.name().to_string(),
            project: if spec.project.is_empty() {
                "default".into()
            } else {
                spec.project.clone()
            },
            repo_url: spec.source.repo_url.clone(),
            path: spec.source.path.clone(),
            target_revision: spec.source.target_revision.clone(),
            destination: spec
                .destination
                .server
                .clone()
                .or_else(|| spec.destination.name.clone())
                .unwrap_or_default(),
            destination_namespace: spec.destination.namespace.clone(),
            sync: status
                .and_then(|s| s.sync.as_ref())
                .map_or_else(|| "Unknown".into(), |s| s.status.clone()),
            revision: status
                .and_then(|s| s.sync.as_ref())
                .map(|s| s.revision.clone())
                .unwrap_or_default(),
            health: status
                .and_then(|s| s.health.as_ref())
                .map_or_else(|| "Unknown".into(), |h| h.status.clone()),
            health_message: status
                .and_then(|s| s.health.as_ref())
                .and_then(|h| h.message.clone()),
            auto_sync: spec
                .sync_policy
                .as_ref()
                .is_some_and(|p| p.automated.is_some()),
            lock: app.lock().cloned(),
            operation,
            reconciled_at: status.and_then(|s| s.reconciled_at.clone()),
            resource_count: status.map_or(0, |s| s.resources.len()),
        }
    }
}

/// One change of the cache, as published to the event stream.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Change {
    /// A new application.
    Added {
        /// Its summary.
        application: Arc<AppSummary>,
    },
    /// An application whose summary changed (status, operation progress, spec).
    Updated {
        /// Its new summary.
        application: Arc<AppSummary>,
    },
    /// The sync status or health of an application's objects changed.
    Resources {
        /// Namespace of the Application.
        namespace: String,
        /// Name of the Application.
        name: String,
        /// `status.resources`.
        resources: Arc<Vec<ResourceStatus>>,
    },
    /// An application was deleted.
    Deleted {
        /// Namespace of the Application.
        namespace: String,
        /// Name of the Application.
        name: String,
    },
}

impl Change {
    /// The SSE event name of the change.
    pub fn event_name(&self) -> &'static str {
        match self {
            Change::Added { .. } => "added",
            Change::Updated { .. } => "updated",
            Change::Resources { .. } => "resources",
            Change::Deleted { .. } => "deleted",
        }
    }
}

struct Entry {
    app: Arc<Application>,
    summary: Arc<AppSummary>,
    resources: Arc<Vec<ResourceStatus>>,
    /// Lower-cased `namespace/name repoURL`, what `search` matches.
    haystack: String,
}

impl Entry {
    fn new(app: Application) -> Self {
        let summary = Arc::new(AppSummary::of(&app));
        let resources = Arc::new(
            app.status
                .as_ref()
                .map(|s| s.resources.clone())
                .unwrap_or_default(),
        );
        let haystack = format!(
            "{}/{} {}",
            summary.namespace, summary.name, summary.repo_url
        )
        .to_lowercase();
        Entry {
            app: Arc::new(app),
            summary,
            resources,
            haystack,
        }
    }
}

struct Inner {
    apps: RwLock<BTreeMap<AppKey, Entry>>,
    changes: broadcast::Sender<Change>,
    ready: AtomicBool,
}

/// The application cache. Clones share it.
#[derive(Clone)]
pub struct AppCache(Arc<Inner>);

/// List filters (all optional; all given ones must hold).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Project equals one of these (comma separated in the query).
    pub projects: Vec<String>,
    /// Sync status equals one of these.
    pub sync: Vec<String>,
    /// Health status equals one of these.
    pub health: Vec<String>,
    /// Case-insensitive substring of `namespace/name` or the repository URL.
    pub search: Option<String>,
    /// Only this namespace.
    pub namespace: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    /// The applications of the page, by namespace then name.
    pub items: Vec<Arc<AppSummary>>,
    /// Token of the next page (pass as `continue`), absent on the last page.
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
    /// Number of applications matching the filters, over all pages.
    pub total: usize,
}

impl Default for AppCache {
    fn default() -> Self {
        Self::new()
    }
}

impl AppCache {
    /// An empty cache, not ready until [`AppCache::replace_all`] (the watch's initial list).
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(4096);
        AppCache(Arc::new(Inner {
            apps: RwLock::new(BTreeMap::new()),
            changes,
            ready: AtomicBool::new(false),
        }))
    }

    /// Whether the initial list has been loaded.
    pub fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::Acquire)
    }

    /// Subscribes to changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.0.changes.subscribe()
    }

    /// Adds or replaces an application (a watch event), publishing what changed.
    pub fn upsert(&self, app: Application) {
        let key = (app.namespace().to_string(), app.name().to_string());
        let entry = Entry::new(app);
        let mut changes = Vec::with_capacity(2);
        {
            let mut apps = self.0.apps.write().unwrap_or_else(PoisonError::into_inner);
            match apps.get(&key) {
                None => changes.push(Change::Added {
                    application: Arc::clone(&entry.summary),
                }),
                Some(old) => {
                    if old.summary != entry.summary {
                        changes.push(Change::Updated {
                            application: Arc::clone(&entry.summary),
                        });
                    }
                    if old.resources != entry.resources {
                        changes.push(Change::Resources {
                            namespace: key.0.clone(),
                            name: key.1.clone(),
                            resources: Arc::clone(&entry.resources),
                        });
                    }
                }
            }
            apps.insert(key, entry);
        }
        for change in changes {
            // No subscriber is not an error.
            let _ = self.0.changes.send(change);
        }
    }

    /// Removes an application (a watch event).
    pub fn remove(&self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        let removed = self
            .0
            .apps
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key)
            .is_some();
        if removed {
            let _ = self.0.changes.send(Change::Deleted {
                namespace: key.0,
                name: key.1,
            });
        }
    }

    /// Replaces the whole content (the watch's initial list, or a relist after the watch was
    /// interrupted): publishes the differences and marks the cache ready.
    pub fn replace_all(&self, apps: Vec<Application>) {
        let fresh: std::collections::HashSet<AppKey> = apps
            .iter()
            .map(|a| (a.namespace().to_string(), a.name().to_string()))
            .collect();
        let gone: Vec<AppKey> = self
            .0
            .apps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .filter(|k| !fresh.contains(*k))
            .cloned()
            .collect();
        for (ns, name) in gone {
            self.remove(&ns, &name);
        }
        for app in apps {
            self.upsert(app);
        }
        self.0.ready.store(true, Ordering::Release);
    }

    /// The application, when known.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Application>> {
        self.0
            .apps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(namespace.to_string(), name.to_string()))
            .map(|e| Arc::clone(&e.app))
    }

    /// Number of applications.
    pub fn len(&self) -> usize {
        self.0
            .apps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether there is no application.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applications counted by (sync status, health status).
    pub fn counts(&self) -> BTreeMap<(String, String), u64> {
        let mut counts = BTreeMap::new();
        for e in self
            .0
            .apps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            *counts
                .entry((e.summary.sync.clone(), e.summary.health.clone()))
                .or_insert(0) += 1;
        }
        counts
    }

    /// One page of the applications matching `filter`, after the one named by `after` (a
    /// previous page's continue token), at most `limit` long.
    pub fn list(&self, filter: &Filter, limit: usize, after: Option<&AppKey>) -> Page {
        let search = filter.search.as_ref().map(|s| s.to_lowercase());
        let matches = |e: &Entry| {
            let s = &e.summary;
            (filter.projects.is_empty() || filter.projects.contains(&s.project))
                && (filter.sync.is_empty() || filter.sync.contains(&s.sync))
                && (filter.health.is_empty() || filter.health.contains(&s.health))
                && filter
                    .namespace
                    .as_ref()
                    .is_none_or(|ns| *ns == s.namespace)
                && search
                    .as_ref()
                    .is_none_or(|q| e.haystack.contains(q.as_str()))
        };
        let apps = self.0.apps.read().unwrap_or_else(PoisonError::into_inner);
        // The total counts every match; the page is taken from the ones after the token.
        let mut total = 0;
        let mut items = Vec::with_capacity(limit.min(1024));
        let mut last: Option<&AppKey> = None;
        let mut more = false;
        for (key, e) in apps.iter() {
            if !matches(e) {
                continue;
            }
            total += 1;
            if after.is_some_and(|a| key <= a) {
                continue;
            }
            if items.len() < limit {
                items.push(Arc::clone(&e.summary));
                last = Some(key);
            } else {
                more = true;
            }
        }
        let continue_token = if more { last.map(encode_token) } else { None };
        Page {
            items,
            continue_token,
            total,
        }
    }
}

/// The continue token of a key: `namespace/name` (both are DNS labels or subdomains, so `/`
/// cannot occur in them).
pub fn encode_token(key: &AppKey) -> String {
    format!("{}/{}", key.0, key.1)
}

/// The key named by a continue token.
pub fn decode_token(token: &str) -> Option<AppKey> {
    let (ns, name) = token.split_once('/')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .then(|| (ns.to_string(), name.to_string()))
}

/// Feeds `cache` from a watch of the Applications of `api` until the stream ends (never, short
/// of the task being dropped); watch errors are retried with backoff.
pub async fn run_watch(api: Api<Application>, cache: AppCache) {
    let mut initial: Vec<Application> = Vec::new();
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => initial.clear(),
            Ok(watcher::Event::InitApply(app)) => initial.push(app),
            Ok(watcher::Event::InitDone) => cache.replace_all(std::mem::take(&mut initial)),
            Ok(watcher::Event::Apply(app)) => cache.upsert(app),
            Ok(watcher::Event::Delete(app)) => cache.remove(app.namespace(), app.name()),
            Err(e) => tracing::warn!(error = %e, "watch of Applications failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::application::{ApplicationSpec, ApplicationStatus, HealthStatus};

    fn app(ns: &str, name: &str, health: &str) -> Application {
        let mut a = Application::new(ns, name, ApplicationSpec::default());
        a.spec.source.repo_url = format!("https://git.example/{name}.git");
        a.status = Some(ApplicationStatus {
            health: Some(HealthStatus {
                status: health.into(),
                message: None,
            }),
            ..ApplicationStatus::default()
        });
        a
    }

    #[test]
    fn pages_follow_each_other_without_gaps_or_repeats() {
        let cache = AppCache::new();
        cache.replace_all(
            (0..25)
                .map(|i| app("ns", &format!("a{i:02}"), "Healthy"))
                .collect(),
        );
        let mut seen = Vec::new();
        let mut token = None;
        loop {
            let after = token.as_deref().and_then(decode_token);
            let page = cache.list(&Filter::default(), 10, after.as_ref());
            assert_eq!(page.total, 25);
            seen.extend(page.items.iter().map(|s| s.name.clone()));
            match page.continue_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        let expected: Vec<String> = (0..25).map(|i| format!("a{i:02}")).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn upsert_publishes_only_real_changes() {
        let cache = AppCache::new();
        let mut rx = cache.subscribe();
        cache.upsert(app("ns", "a", "Progressing"));
        cache.upsert(app("ns", "a", "Progressing"));
        cache.upsert(app("ns", "a", "Healthy"));
        cache.remove("ns", "a");
        let names: Vec<&str> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|c| c.event_name())
            .collect();
        assert_eq!(names, ["added", "updated", "deleted"]);
    }

    #[test]
    fn filters_combine() {
        let cache = AppCache::new();
        cache.replace_all(vec![
            app("ns", "web", "Healthy"),
            app("ns", "api", "Degraded"),
            app("other", "web-2", "Degraded"),
        ]);
        let filter = Filter {
            health: vec!["Degraded".into()],
            search: Some("WEB".into()),
            ..Filter::default()
        };
        let page = cache.list(&filter, 10, None);
        let names: Vec<&str> = page.items.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["web-2"]);
        assert_eq!(decode_token("a/b"), Some(("a".into(), "b".into())));
        assert_eq!(decode_token("a/b/c"), None);
        assert_eq!(decode_token("nope"), None);
    }
}
