//! `capstan health FILE… [--lua-dir DIR] [-o json]`: the health of every object in manifest
//! files, as the controller would judge it.
//!
//! Files hold YAML or JSON documents (several per file, `---` separated); `List` documents such
//! as `kubectl get -o yaml` prints are unpacked. Every file is read and checked before anything is
//! printed, so a bad file gives an error and no partial table. Exit 0 when the health could be
//! assessed (whatever it is), 2 on an error.

use anyhow::{Context, bail};
use capstan_engine::health::{Health, HealthChecker};
use capstan_engine::lua::LuaScripts;
use serde::Serialize;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// An aligned table: KIND, NAMESPACE, NAME, HEALTH, MESSAGE.
    Table,
    /// A JSON list of {apiVersion, kind, namespace, name, health}.
    Json,
}

/// Arguments of `capstan health`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest files (YAML or JSON, multi-document).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Custom Lua health checks laid out as `<group>/<Kind>/health.lua` (core group: `core`;
    /// `_` is a wildcard).
    #[arg(long, value_name = "DIR")]
    pub lua_dir: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Output,
}

/// One line of the output.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    api_version: String,
    kind: String,
    namespace: Option<String>,
    name: String,
    /// `null` when no check applies (or the object opts out with ignore-healthcheck).
    health: Option<Health>,
}

/// Runs the subcommand and returns the process exit code.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let mut checker = HealthChecker::new();
    if let Some(dir) = &args.lua_dir {
        let scripts = LuaScripts::from_dir(dir)
            .with_context(|| format!("cannot load Lua health checks from {}", dir.display()))?;
        checker = checker.with_lua(scripts);
    }
    let mut objects = Vec::new();
    for file in &args.files {
        objects.extend(read_objects(file)?);
    }
    let rows: Vec<Row> = objects
        .iter()
        .map(|obj| Row {
            api_version: text(obj, "/apiVersion").unwrap_or_default().to_string(),
            kind: text(obj, "/kind").unwrap_or_default().to_string(),
            namespace: text(obj, "/metadata/namespace").map(str::to_string),
            name: name(obj).unwrap_or_default().to_string(),
            health: checker.assess(obj),
        })
        .collect();
    let rendered = match args.output {
        Output::Json => format!("{}\n", serde_json::to_string_pretty(&rows)?),
        Output::Table => table(&rows),
    };
    let mut out = std::io::stdout().lock();
    match out
        .write_all(rendered.as_bytes())
        .and_then(|()| out.flush())
    {
        // The reader (`| head`) has seen enough; that is not a failure of the command.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(e).context("cannot write to stdout"),
        Ok(()) => Ok(0),
    }
}

fn text<'a>(obj: &'a Value, pointer: &str) -> Option<&'a str> {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// `metadata.name`, or `metadata.generateName` for objects (typically hooks) named by the server.
fn name(obj: &Value) -> Option<&str> {
    text(obj, "/metadata/name").or_else(|| text(obj, "/metadata/generateName"))
}

/// Columns padded to their widest cell, like `kubectl get`; the message is last and unpadded.
fn table(rows: &[Row]) -> String {
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            let (status, message) = match &r.health {
                Some(h) => (
                    h.status.to_string(),
                    // One object, one line: multi-line messages are folded.
                    h.message
                        .as_deref()
                        .unwrap_or_default()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                None => ("-".to_string(), String::new()),
            };
            [
                r.kind.clone(),
                r.namespace.clone().unwrap_or_else(|| "-".to_string()),
                r.name.clone(),
                status,
                message,
            ]
        })
        .collect();
    let header = ["KIND", "NAMESPACE", "NAME", "HEALTH", "MESSAGE"].map(String::from);
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&cells) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&cells) {
        let mut line = String::new();
        for (w, cell) in widths.iter().zip(row) {
            line.push_str(&format!("{cell:<w$}   ", w = *w));
        }
        line.push_str(&row[4]);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Reads every object of a file (see [`capstan_render::manifest::parse_file`]) and checks that
/// each can be judged. Errors name the file and the document (and the line, from the YAML
/// parser).
fn read_objects(path: &Path) -> anyhow::Result<Vec<Value>> {
    let source =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    capstan_render::manifest::parse_file(&path.display().to_string(), &source)?
        .into_iter()
        .map(|found| {
            let what = format!("{}: {}", path.display(), found.place());
            check_object(found.object, &what)
        })
        .collect()
}

/// An object (a mapping, as `parse_file` guarantees) needs `apiVersion` and `kind` to be judged
/// at all, and a name to be reported.
fn check_object(value: Value, what: &str) -> anyhow::Result<Value> {
    for (pointer, field) in [("/apiVersion", "apiVersion"), ("/kind", "kind")] {
        if text(&value, pointer).is_none() {
            bail!("{what}: missing or non-string field {field}");
        }
    }
    if name(&value).is_none() {
        bail!("{what}: missing metadata.name (or metadata.generateName)");
    }
    Ok(value)
}
