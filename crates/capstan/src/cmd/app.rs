//! `capstan app …`: Applications through the Kubernetes API, like kubectl (kubeconfig-based).
//! Every verb is a request written onto the Application; the controller carries it out.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use capstan_api::application::{
    Application, ApplicationDestination, ApplicationSource, ApplicationSpec, ApplicationStatus,
    Operation, PHASE_SUCCEEDED, SYNC_SYNCED, SyncOperation, SyncOperationResource, SyncPolicy,
    SyncPolicyAutomated,
};
use capstan_controller::ops;
use futures::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

/// Arguments of `capstan app`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kubeconfig (default: $KUBECONFIG, ~/.kube/config).
    #[arg(long, env = "KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the Applications.
    #[arg(long, short = 'n', default_value = capstan_api::application::DEFAULT_NAMESPACE, global = true)]
    pub namespace: String,
    /// What to do.
    #[command(subcommand)]
    pub verb: Verb,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Output {
    /// A table.
    #[default]
    Table,
    /// A wider table.
    Wide,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// `capstan app` verbs.
#[derive(Debug, clap::Subcommand)]
pub enum Verb {
    /// Create an Application.
    Create {
        /// Name.
        name: String,
        /// Repository URL.
        #[arg(long)]
        repo: String,
        /// Path in the repository.
        #[arg(long, default_value = ".")]
        path: String,
        /// Branch, tag, commit or semver range.
        #[arg(long, default_value = "HEAD")]
        revision: String,
        /// Destination namespace.
        #[arg(long, default_value = "default")]
        dest_namespace: String,
        /// Destination server.
        #[arg(long, default_value = capstan_api::application::IN_CLUSTER_SERVER)]
        dest_server: String,
        /// Sync automatically.
        #[arg(long)]
        auto_sync: bool,
        /// Revert drift (with --auto-sync).
        #[arg(long)]
        self_heal: bool,
        /// Prune objects removed from Git (with --auto-sync).
        #[arg(long)]
        prune: bool,
        /// Sync option `Key=Value` (repeatable).
        #[arg(long = "sync-option")]
        sync_options: Vec<String>,
        /// Helm values file of the chart (repeatable).
        #[arg(long = "helm-values")]
        helm_values: Vec<String>,
    },
    /// List Applications.
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show an Application.
    Get {
        /// Name.
        name: String,
        /// Ask for a refresh first and wait for it.
        #[arg(long)]
        refresh: bool,
        /// Ask for a hard refresh (no manifest cache) first.
        #[arg(long)]
        hard_refresh: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Objects that differ between Git and the cluster (exit 0: none, 1: some, 2: error).
    Diff(super::app_diff::Args),
    /// Sync an Application.
    Sync {
        /// Name.
        name: String,
        /// Revision to sync to.
        #[arg(long, default_value = "")]
        revision: String,
        /// Prune objects removed from Git.
        #[arg(long)]
        prune: bool,
        /// Plan and validate only.
        #[arg(long)]
        dry_run: bool,
        /// Sync only this object, `GROUP:KIND:NAME` or `GROUP:KIND:NAMESPACE/NAME` (GROUP empty
        /// for the core group, e.g. `:ConfigMap:settings`); repeatable. A selective sync runs no
        /// hooks and is not recorded in the history.
        #[arg(long = "resource", value_name = "GROUP:KIND:NAME", value_parser = SyncOperationResource::parse)]
        resources: Vec<SyncOperationResource>,
        /// Wait for the sync to finish, showing its progress (exit 0: Succeeded, 1: Failed or
        /// Error, 2: timeout or error).
        #[arg(long)]
        wait: bool,
        /// Longest wait.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Terminate the running operation (a requested one not yet started is withdrawn).
    TerminateOp {
        /// Name.
        name: String,
    },
    /// Wait until an Application is synced/healthy, showing progress (exit 0: done, 1: its
    /// operation failed, 2: timeout or error).
    Wait {
        /// Name.
        name: String,
        /// Wait for Healthy.
        #[arg(long)]
        health: bool,
        /// Wait for Synced.
        #[arg(long)]
        sync: bool,
        /// Longest wait.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Deployment history.
    History {
        /// Name.
        name: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Roll back to a history entry (default: the previous one) and lock.
    Rollback {
        /// Name.
        name: String,
        /// History id.
        id: Option<i64>,
    },
    /// Remove the lock set by a rollback.
    Unlock {
        /// Name.
        name: String,
    },
    /// Change an Application's sync policy.
    Set {
        /// Name.
        name: String,
        /// Turn automated sync on or off.
        #[arg(long)]
        auto_sync: Option<bool>,
        /// Turn self-heal on or off.
        #[arg(long)]
        self_heal: Option<bool>,
        /// Turn automated prune on or off.
        #[arg(long)]
        prune: Option<bool>,
        /// New target revision.
        #[arg(long)]
        revision: Option<String>,
    },
    /// Delete an Application.
    Delete {
        /// Name.
        name: String,
        /// Also delete its objects (adds the `capstan.dev/resources-finalizer` first).
        #[arg(long)]
        cascade: bool,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    capstan_controller::parse_duration(s)
        .ok_or_else(|| format!("invalid duration {s:?} (expected e.g. 30s, 3m, 1h)"))
}

fn print_value<T: serde::Serialize>(value: &T, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(value)?),
        _ => println!("{}", serde_json::to_string_pretty(value)?),
    }
    Ok(())
}

fn row(app: &Application, wide: bool) -> Vec<String> {
    let status = app.status.clone().unwrap_or_default();
    let mut cells = vec![
        app.name().to_string(),
        status
            .sync
            .as_ref()
            .map(|s| s.status.clone())
            .unwrap_or_else(|| "-".into()),
        status
            .health
            .as_ref()
            .map(|h| h.status.clone())
            .unwrap_or_else(|| "-".into()),
        status
            .sync
            .as_ref()
            .map(|s| s.revision.chars().take(8).collect())
            .unwrap_or_else(|| "-".into()),
        status
            .lock
            .as_ref()
            .map(|l| format!("locked@{}", l.revision.chars().take(8).collect::<String>()))
            .unwrap_or_else(|| "-".into()),
    ];
    if wide {
        cells.push(app.spec.source.repo_url.clone());
        cells.push(app.spec.source.path.clone());
        cells.push(app.spec.destination.namespace.clone());
    }
    cells
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Runs the subcommand and returns the process exit code.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let client = super::server::kube_client(args.kubeconfig.as_deref()).await?;
    let api: Api<Application> = Api::namespaced(client, &args.namespace);
    match args.verb {
        Verb::Create {
            name,
            repo,
            path,
            revision,
            dest_namespace,
            dest_server,
            auto_sync,
            self_heal,
            prune,
            sync_options,
            helm_values,
        } => {
            let automated = auto_sync.then_some(SyncPolicyAutomated {
                prune,
                self_heal,
                allow_empty: false,
            });
            let sync_policy =
                (automated.is_some() || !sync_options.is_empty()).then_some(SyncPolicy {
                    automated,
                    sync_options,
                    retry: None,
                });
            let spec = ApplicationSpec {
                project: "default".into(),
                source: ApplicationSource {
                    repo_url: repo,
                    target_revision: revision,
                    path,
                    helm: (!helm_values.is_empty()).then(|| json!({"valueFiles": helm_values})),
                    ..ApplicationSource::default()
                },
                destination: ApplicationDestination {
                    server: Some(dest_server),
                    name: None,
                    namespace: dest_namespace,
                },
                sync_policy,
                ignore_differences: Vec::new(),
                revision_history_limit: None,
            };
            ops::create(&api, &Application::new(&args.namespace, &name, spec)).await?;
            println!("application {name} created");
            Ok(0)
        }
        Verb::List { output } => {
            let list = api
                .list(&ListParams::default())
                .await
                .context("listing applications")?;
            match output {
                Output::Json | Output::Yaml => print_value(&list.items, output)?,
                _ => {
                    let wide = output == Output::Wide;
                    let mut header = vec!["NAME", "SYNC", "HEALTH", "REVISION", "LOCK"];
                    if wide {
                        header.extend(["REPO", "PATH", "DEST-NAMESPACE"]);
                    }
                    let rows: Vec<Vec<String>> = list.items.iter().map(|a| row(a, wide)).collect();
                    print_table(&header, &rows);
                }
            }
            Ok(0)
        }
        Verb::Get {
            name,
            refresh,
            hard_refresh,
            output,
        } => {
            if refresh || hard_refresh {
                let before = ops::get(&api, &name).await?;
                let seen = before.status.and_then(|s| s.reconciled_at);
                ops::refresh(&api, &name, hard_refresh).await?;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                loop {
                    let app = ops::get(&api, &name).await?;
                    let now = app.status.as_ref().and_then(|s| s.reconciled_at.clone());
                    let pending = app.annotation(capstan_api::annotations::REFRESH).is_some();
                    if !pending && now != seen || tokio::time::Instant::now() > deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            let app = ops::get(&api, &name).await?;
            match output {
                Output::Json | Output::Yaml => print_value(&app, output)?,
                _ => {
                    print_table(
                        &["NAME", "SYNC", "HEALTH", "REVISION", "LOCK"],
                        &[row(&app, false)],
                    );
                    let status = app.status.unwrap_or_default();
                    for c in &status.conditions {
                        println!("condition {}: {}", c.type_, c.message);
                    }
                    if let Some(op) = &status.operation_state {
                        println!("last operation: {} — {}", op.phase, op.message);
                    }
                    println!();
                    let rows: Vec<Vec<String>> = status
                        .resources
                        .iter()
                        .map(|r| {
                            vec![
                                if r.group.is_empty() {
                                    r.kind.clone()
                                } else {
                                    format!("{}/{}", r.group, r.kind)
                                },
                                r.namespace.clone(),
                                r.name.clone(),
                                r.status.clone(),
                                r.health
                                    .as_ref()
                                    .map(|h| h.status.clone())
                                    .unwrap_or_default(),
                                if r.requires_pruning {
                                    "requires pruning".into()
                                } else {
                                    String::new()
                                },
                            ]
                        })
                        .collect();
                    print_table(
                        &["KIND", "NAMESPACE", "NAME", "STATUS", "HEALTH", ""],
                        &rows,
                    );
                }
            }
            Ok(0)
        }
        Verb::Diff(diff) => super::app_diff::run(api, diff).await,
        Verb::Sync {
            name,
            revision,
            prune,
            dry_run,
            resources,
            wait,
            timeout,
        } => {
            let selected = resources.len();
            let written = ops::request_sync(
                &api,
                &name,
                SyncOperation {
                    revision,
                    prune,
                    dry_run,
                    resources,
                    ..SyncOperation::default()
                },
                &ops::current_user(),
            )
            .await?;
            if selected > 0 {
                println!("sync of {selected} selected resource(s) of {name} requested");
            } else {
                println!("sync of {name} requested");
            }
            if wait {
                return wait_operation(&api, &name, written.operation, timeout).await;
            }
            Ok(0)
        }
        Verb::TerminateOp { name } => {
            match ops::terminate(&api, &name).await? {
                ops::Terminated::Withdrawn => {
                    println!("the requested operation of {name} was withdrawn before it started")
                }
                ops::Terminated::Terminating => println!(
                    "the running operation of {name} is terminating; the controller stops it at its next step"
                ),
            }
            Ok(0)
        }
        Verb::Wait {
            name,
            health,
            sync,
            timeout,
        } => {
            let synced = sync || !health;
            ops::get(&api, &name).await?;
            let mut display = Progress::default();
            let outcome = follow(&api, &name, timeout, |app| {
                display.show(app);
                if ops::operation_busy(app) {
                    return None;
                }
                // An operation seen running that ends Failed or Error fails the wait.
                let failed = app
                    .status
                    .as_ref()
                    .and_then(|s| s.operation_state.as_ref())
                    .is_some_and(|s| s.phase != PHASE_SUCCEEDED);
                if display.saw_running && failed {
                    return Some(1);
                }
                let (sync_status, health_status) = sync_and_health(app.status.as_ref());
                let sync_ok = !synced || sync_status == SYNC_SYNCED;
                let health_ok = !health || health_status == "Healthy";
                (sync_ok && health_ok).then(|| {
                    println!("{}", row(app, false).join("  "));
                    0
                })
            })
            .await?;
            Ok(outcome)
        }
        Verb::History { name, output } => {
            let app = ops::get(&api, &name).await?;
            let history = app.status.map(|s| s.history).unwrap_or_default();
            match output {
                Output::Json | Output::Yaml => print_value(&history, output)?,
                _ => {
                    let rows: Vec<Vec<String>> = history
                        .iter()
                        .map(|h| {
                            vec![
                                h.id.to_string(),
                                h.deployed_at.clone(),
                                h.revision.chars().take(8).collect(),
                                h.source.path.clone(),
                                if h.initiated_by.automated {
                                    "automated".into()
                                } else {
                                    h.initiated_by.username.clone()
                                },
                            ]
                        })
                        .collect();
                    print_table(
                        &["ID", "DEPLOYED", "REVISION", "PATH", "INITIATED BY"],
                        &rows,
                    );
                }
            }
            Ok(0)
        }
        Verb::Rollback { name, id } => {
            let (entry, written) = ops::rollback(&api, &name, id, &ops::current_user()).await?;
            println!(
                "rollback of {name} to history entry {} requested; the application will be locked",
                entry.id
            );
            wait_operation(&api, &name, written.operation, Duration::from_secs(300)).await
        }
        Verb::Unlock { name } => {
            if ops::unlock(&api, &name, &ops::current_user()).await? {
                println!("application {name} unlocked");
            } else {
                println!("application {name} was not locked");
            }
            Ok(0)
        }
        Verb::Set {
            name,
            auto_sync,
            self_heal,
            prune,
            revision,
        } => {
            let app = ops::get(&api, &name).await?;
            let mut policy = app.spec.sync_policy.clone().unwrap_or_default();
            let mut automated = policy.automated.clone();
            if let Some(on) = auto_sync {
                automated = if on {
                    Some(automated.unwrap_or_default())
                } else {
                    None
                };
            }
            if let Some(a) = automated.as_mut() {
                if let Some(v) = self_heal {
                    a.self_heal = v;
                }
                if let Some(v) = prune {
                    a.prune = v;
                }
            } else if self_heal.is_some() || prune.is_some() {
                bail!("--self-heal and --prune need automated sync (--auto-sync=true)");
            }
            policy.automated = automated;
            let mut patch = json!({"spec": {"syncPolicy": policy}});
            if let Some(rev) = revision {
                patch["spec"]["source"] = json!({"targetRevision": rev});
            }
            api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .with_context(|| format!("updating application {name}"))?;
            println!("application {name} updated");
            Ok(0)
        }
        Verb::Delete { name, cascade } => {
            ops::delete(&api, &name, cascade).await?;
            if cascade {
                println!("application {name} deleted; the controller deletes its objects first");
            } else {
                println!("application {name} deleted (its objects stay)");
            }
            Ok(0)
        }
    }
}

/// Watches the Application `name` (a kube watch, no polling), calling `step` with each version
/// seen until it returns an exit code. At `timeout`, says so on stderr and returns 2.
async fn follow(
    api: &Api<Application>,
    name: &str,
    timeout: Duration,
    mut step: impl FnMut(&Application) -> Option<u8>,
) -> anyhow::Result<u8> {
    let deadline = tokio::time::Instant::now() + timeout;
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher(api.clone(), config).default_backoff());
    loop {
        let event = match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(event)) => event,
            Ok(None) => bail!("the watch of application {name} ended"),
            Err(_) => {
                let app = ops::get(api, name).await?;
                let status = app.status.as_ref();
                let (sync, health) = sync_and_health(status);
                eprintln!(
                    "error: timed out after {} waiting for application {name}: sync {sync}, health {health}, operation {}",
                    humantime(timeout),
                    status
                        .and_then(|s| s.operation_state.as_ref())
                        .map(|s| format!("{} ({})", s.phase, s.message))
                        .unwrap_or_else(|| "-".into())
                );
                return Ok(2);
            }
        };
        match event {
            Ok(watcher::Event::Apply(app) | watcher::Event::InitApply(app)) => {
                if let Some(code) = step(&app) {
                    return Ok(code);
                }
            }
            Ok(watcher::Event::Delete(_)) => bail!("application {name} was deleted"),
            Ok(_) => {}
            // The watcher re-establishes itself (with backoff); say why it is quiet.
            Err(e) => tracing::debug!(error = %e, "watching application {name}"),
        }
    }
}

/// The application's sync and health status as the progress and timeout lines show them (`-`
/// when the controller has not written one yet).
fn sync_and_health(status: Option<&ApplicationStatus>) -> (&str, &str) {
    let sync = status.and_then(|s| s.sync.as_ref());
    let health = status.and_then(|s| s.health.as_ref());
    (
        sync.map_or("-", |s| s.status.as_str()),
        health.map_or("-", |h| h.status.as_str()),
    )
}

fn humantime(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// The progress display: one line per change (not a redraw), so that it reads well in CI logs.
#[derive(Default)]
struct Progress {
    /// `phase: message` of the operation, as last printed.
    operation: String,
    /// Per object of the sync result: its result as last printed.
    results: HashMap<String, String>,
    /// Per object of the application: its health as last seen.
    health: HashMap<String, String>,
    /// `sync/health` of the application as last printed.
    app: String,
    /// Whether the operation was seen Running.
    saw_running: bool,
    /// Only changes are printed: the first version seen sets the baseline of health.
    primed: bool,
}

fn object_name(kind: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    }
}

impl Progress {
    /// Prints what changed in `app` since the last call.
    fn show(&mut self, app: &Application) {
        let status = app.status.as_ref();
        if let Some(state) = status.and_then(|s| s.operation_state.as_ref()) {
            if state.phase == capstan_api::application::PHASE_RUNNING {
                self.saw_running = true;
            }
            for r in state
                .sync_result
                .as_ref()
                .map(|r| r.resources.as_slice())
                .unwrap_or_default()
            {
                let key = format!(
                    "{}/{} {} {}",
                    r.group,
                    object_name(&r.kind, &r.namespace, &r.name),
                    r.sync_phase,
                    r.wave
                );
                let mut value = format!(
                    "  {:<12} {} ({} wave {})",
                    r.status,
                    object_name(&r.kind, &r.namespace, &r.name),
                    r.sync_phase,
                    r.wave
                );
                if !r.message.is_empty() {
                    value.push_str(&format!(": {}", r.message));
                }
                if self.results.get(&key) != Some(&value) {
                    println!("{value}");
                    self.results.insert(key, value);
                }
            }

            // The operation line after the results: the final result arrives with the final phase.
            let line = if state.message.is_empty() {
                state.phase.clone()
            } else {
                format!("{}: {}", state.phase, state.message)
            };
            if line != self.operation {
                println!("operation {line}");
                self.operation = line;
            }
        }
        for r in status.map(|s| s.resources.as_slice()).unwrap_or_default() {
            let Some(h) = &r.health else { continue };
            let key = format!(
                "{}/{}",
                r.group,
                object_name(&r.kind, &r.namespace, &r.name)
            );
            let value = match &h.message {
                Some(m) if !m.is_empty() => format!("{}: {m}", h.status),
                _ => h.status.clone(),
            };
            if self.health.get(&key) != Some(&value) {
                if self.primed {
                    println!(
                        "  {:<12} {} {value}",
                        "health",
                        object_name(&r.kind, &r.namespace, &r.name)
                    );
                }
                self.health.insert(key, value);
            }
        }
        self.primed = true;
        let (sync, health) = sync_and_health(status);
        let line = format!("application {}: sync {sync}, health {health}", app.name());
        if line != self.app {
            println!("{line}");
            self.app = line;
        }
    }
}

/// Waits for the requested operation (`expected`, as written; any when `None`) to finish,
/// printing its progress: phase and current wave, and per object its result and health as they
/// change. Exit code 0 when it Succeeded, 1 when it Failed or ended in Error, 2 on timeout.
async fn wait_operation(
    api: &Api<Application>,
    name: &str,
    expected: Option<Operation>,
    timeout: Duration,
) -> anyhow::Result<u8> {
    let mut display = Progress::default();
    follow(api, name, timeout, |app| {
        // The controller clears `operation` once it wrote the result: while it is still set, a
        // finished state is the previous operation's.
        let state = app.status.as_ref().and_then(|s| s.operation_state.as_ref());
        let ours = state.is_some_and(|s| {
            expected.as_ref().is_none_or(|e| &s.operation == e)
                && (app.operation.is_none() || ops::operation_busy_state(s))
        });
        if ours {
            display.show(app);
        }
        let state = state.filter(|_| ours && app.operation.is_none())?;
        if ops::operation_busy(app) {
            return None;
        }
        Some(if state.phase == PHASE_SUCCEEDED { 0 } else { 1 })
    })
    .await
}
