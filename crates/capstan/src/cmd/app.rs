//! `capstan app …`: Applications through the Kubernetes API, like kubectl (kubeconfig-based).
//! Every verb is a request written onto the Application; the controller carries it out.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use capstan_api::application::{
    Application, ApplicationDestination, ApplicationSource, ApplicationSpec, SyncOperation,
    SyncPolicy, SyncPolicyAutomated,
};
use capstan_controller::ops;
use kube::api::{Api, ListParams, Patch, PatchParams};
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
        /// Wait for the sync to finish, showing its progress.
        #[arg(long)]
        wait: bool,
        /// Longest wait.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Wait until an Application is synced/healthy.
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
            wait,
            timeout,
        } => {
            ops::request_sync(
                &api,
                &name,
                SyncOperation {
                    revision,
                    prune,
                    dry_run,
                    ..SyncOperation::default()
                },
                &ops::current_user(),
            )
            .await?;
            println!("sync of {name} requested");
            if wait {
                return wait_operation(&api, &name, timeout).await;
            }
            Ok(0)
        }
        Verb::Wait {
            name,
            health,
            sync,
            timeout,
        } => {
            let what = ops::WaitFor {
                synced: sync || !health,
                healthy: health,
                operation: true,
            };
            let app = ops::wait(&api, &name, what, timeout).await?;
            println!("{}", row(&app, false).join("  "));
            Ok(0)
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
            let id = ops::rollback(&api, &name, id, &ops::current_user())
                .await?
                .id;
            println!(
                "rollback of {name} to history entry {id} requested; the application will be locked"
            );
            wait_operation(&api, &name, Duration::from_secs(300)).await
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

/// Waits for the requested operation to finish, printing each progress message once.
async fn wait_operation(
    api: &Api<Application>,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<u8> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    let mut picked_up = false;
    loop {
        let app = ops::get(api, name).await?;
        let state = app.status.as_ref().and_then(|s| s.operation_state.clone());
        if app.operation.is_none() {
            picked_up = true;
        }
        if let Some(s) = &state {
            let line = format!("{}: {}", s.phase, s.message);
            if line != last {
                println!("{line}");
                last = line;
            }
            if picked_up && s.phase != capstan_api::application::PHASE_RUNNING {
                if let Some(result) = &s.sync_result {
                    for r in &result.resources {
                        println!(
                            "  {:<10} {} {}/{} {}",
                            r.status, r.kind, r.namespace, r.name, r.message
                        );
                    }
                }
                return Ok(if s.phase == capstan_api::application::PHASE_SUCCEEDED {
                    0
                } else {
                    1
                });
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for the operation on {name}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
