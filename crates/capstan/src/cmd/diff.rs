//! `capstan diff --desired FILE --live FILE [-o json]`: offline comparison of manifests.
//!
//! Both files hold YAML or JSON documents (several per file, `---` separated; `kind: List`
//! documents such as `kubectl get -o yaml` prints are unpacked). Objects are paired by group,
//! kind, namespace and name; a desired object without a namespace pairs with the live object of
//! the same group, kind and name. Exit codes follow `kubectl diff`: 0 no difference, 1
//! differences, 2 error.

use anyhow::{Context, bail};
use capstan_engine::diff::{DiffOptions, DiffStatus, ObjectDiff, diff, group_of};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Unified diffs of the objects that differ.
    Text,
    /// A JSON list with one result per object.
    Json,
}

/// Arguments of `capstan diff`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Desired manifests (rendered from Git).
    #[arg(long, value_name = "FILE")]
    pub desired: PathBuf,
    /// Live objects (as read from the cluster).
    #[arg(long, value_name = "FILE")]
    pub live: PathBuf,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: Output,
}

/// Runs the subcommand and returns the process exit code.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let desired = read_objects(&args.desired)?;
    let live = read_objects(&args.live)?;
    let results = compare(&desired, &live)?;
    let differs = results.iter().any(|r| r.status != DiffStatus::Synced);
    match args.output {
        Output::Json => {
            println!("{}", serde_json::to_string_pretty(&results)?);
        }
        Output::Text => {
            for r in results.iter().filter(|r| r.status != DiffStatus::Synced) {
                print!("{}", r.unified);
            }
        }
    }
    Ok(u8::from(differs))
}

/// Identity used to pair objects.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    group: String,
    kind: String,
    namespace: String,
    name: String,
}

fn key_of(obj: &Value, file: &Path, index: usize) -> anyhow::Result<Key> {
    let field = |ptr: &str| obj.pointer(ptr).and_then(Value::as_str).unwrap_or("");
    let (api_version, kind, name) = (
        field("/apiVersion"),
        field("/kind"),
        field("/metadata/name"),
    );
    if api_version.is_empty() || kind.is_empty() || name.is_empty() {
        bail!(
            "{}: object #{index} lacks apiVersion, kind or metadata.name",
            file.display()
        );
    }
    Ok(Key {
        group: group_of(api_version).to_string(),
        kind: kind.to_string(),
        namespace: field("/metadata/namespace").to_string(),
        name: name.to_string(),
    })
}

/// Pairs and compares the objects; desired order first, then live objects no longer desired.
fn compare(desired: &[(Value, Key)], live: &[(Value, Key)]) -> anyhow::Result<Vec<ObjectDiff>> {
    let opts = DiffOptions::default();
    let mut used = vec![false; live.len()];
    let mut results = Vec::with_capacity(desired.len().max(live.len()));
    for (i, (d, dk)) in desired.iter().enumerate() {
        if desired[..i].iter().any(|(_, k)| k == dk) {
            bail!(
                "desired {}/{} {}/{} appears more than once",
                dk.group,
                dk.kind,
                dk.namespace,
                dk.name
            );
        }
        let exact = (0..live.len()).find(|&j| !used[j] && live[j].1 == *dk);
        let loose = || {
            (0..live.len()).find(|&j| {
                let lk = &live[j].1;
                !used[j]
                    && dk.namespace.is_empty()
                    && (lk.group == dk.group && lk.kind == dk.kind && lk.name == dk.name)
            })
        };
        let matched = exact.or_else(loose);
        if let Some(j) = matched {
            used[j] = true;
        }
        let l = matched.map(|j| &live[j].0);
        results.push(diff(Some(d), l, &opts)?);
    }
    for (j, (l, _)) in live.iter().enumerate() {
        if !used[j] {
            results.push(diff(None, Some(l), &opts)?);
        }
    }
    Ok(results)
}

/// Reads every object of a YAML/JSON file (see [`capstan_render::manifest::parse_file`]) with
/// the identity it is paired by.
fn read_objects(path: &Path) -> anyhow::Result<Vec<(Value, Key)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    capstan_render::manifest::parse_file(&path.display().to_string(), &text)?
        .into_iter()
        .enumerate()
        .map(|(index, found)| {
            let key = key_of(&found.object, path, index)?;
            Ok((found.object, key))
        })
        .collect()
}
