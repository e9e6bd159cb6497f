//! Jsonnet evaluation (jrsonnet) with imports confined to the repository.
//!
//! A jrsonnet `State` is single-threaded (reference counted), so one is built per file on the
//! calling thread; nothing Jsonnet-related is shared between renders.

use crate::RenderError;
use crate::manifest::flatten_value;
use crate::options::{JsonnetOptions, JsonnetVar};
use crate::paths::Tree;
use crate::process::Limits;
use jrsonnet_evaluator::manifest::JsonFormat;
use jrsonnet_evaluator::tla::TlaArg;
use jrsonnet_evaluator::trace::PathResolver;
use jrsonnet_evaluator::{
    AsPathLike, IStr, ImportResolver, SourcePath, State, apply_tla, error::ErrorKind,
};
use jrsonnet_gcmodule::Acyclic;
use jrsonnet_ir::{SourceFifo, SourceFile};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// Resolves imports relative to the importing file, then the library paths; refuses any file
/// whose canonical path is outside the repository root.
#[derive(Acyclic)]
struct ConfinedResolver {
    root: PathBuf,
    libs: Vec<PathBuf>,
}

fn runtime_error(message: String) -> jrsonnet_evaluator::Error {
    ErrorKind::RuntimeError(IStr::from(message.as_str())).into()
}

impl ConfinedResolver {
    fn check(&self, candidate: &Path) -> jrsonnet_evaluator::Result<Option<SourcePath>> {
        match candidate.canonicalize() {
            Ok(canonical) => {
                if !canonical.starts_with(&self.root) {
                    return Err(runtime_error(format!(
                        "import {} is outside the repository",
                        candidate.display()
                    )));
                }
                if !canonical.is_file() {
                    return Ok(None);
                }
                Ok(Some(SourcePath::new(SourceFile::new(canonical))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(runtime_error(format!(
                "import {}: {e}",
                candidate.display()
            ))),
        }
    }
}

impl ImportResolver for ConfinedResolver {
    fn resolve_from(
        &self,
        from: &SourcePath,
        path: &dyn AsPathLike,
    ) -> jrsonnet_evaluator::Result<SourcePath> {
        let path = path.as_path();
        let rel: &Path = path.as_ref();
        if rel.is_absolute() {
            return Err(runtime_error(format!(
                "import {}: absolute paths are not allowed",
                rel.display()
            )));
        }
        let base = match from.downcast_ref::<SourceFile>() {
            Some(file) => file.path().parent().map(Path::to_path_buf),
            None => None,
        }
        .unwrap_or_else(|| self.root.clone());
        if let Some(found) = self.check(&base.join(rel))? {
            return Ok(found);
        }
        for lib in &self.libs {
            if let Some(found) = self.check(&lib.join(rel))? {
                return Ok(found);
            }
        }
        Err(ErrorKind::ImportFileNotFound(from.clone(), path.to_owned()).into())
    }

    fn load_file_contents(&self, resolved: &SourcePath) -> jrsonnet_evaluator::Result<Vec<u8>> {
        // Inline code (TLAs and extVars given as code) arrives as an in-memory "fifo".
        if let Some(inline) = resolved.downcast_ref::<SourceFifo>() {
            return Ok(inline.1.to_vec());
        }
        let Some(file) = resolved.downcast_ref::<SourceFile>() else {
            return Err(runtime_error(format!("cannot load {resolved}")));
        };
        std::fs::read(file.path())
            .map_err(|e| runtime_error(format!("{}: {e}", file.path().display())))
    }
}

fn tla_arg(var: &JsonnetVar) -> TlaArg {
    if var.code {
        TlaArg::InlineCode(var.value.clone())
    } else {
        TlaArg::String(IStr::from(var.value.as_str()))
    }
}

/// Evaluates one `.jsonnet` file (canonical, inside the tree) to Kubernetes objects, on a
/// worker thread with a large stack (deep Jsonnet recursion needs one) so that the caller gets
/// a timeout. An evaluation cannot be interrupted: on timeout it finishes in the background
/// and its result is discarded.
pub(crate) fn evaluate_file(
    tree: &Tree,
    file: &Path,
    opts: Option<&JsonnetOptions>,
    limits: Limits,
) -> Result<Vec<serde_json::Value>, RenderError> {
    let (tree, file, opts) = (tree.clone(), file.to_path_buf(), opts.cloned());
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("capstan-jsonnet".into())
        .stack_size(JSONNET_STACK)
        .spawn(move || {
            let _ = tx.send(evaluate_blocking(
                &tree,
                &file,
                opts.as_ref(),
                limits.max_output,
            ));
        })
        .map_err(|e| RenderError::io("jsonnet worker thread", e))?;
    match rx.recv_timeout(limits.timeout) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(RenderError::Timeout {
            tool: "jsonnet".into(),
            after: limits.timeout,
        }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(RenderError::Jsonnet {
            file: "?".into(),
            message: "the evaluation thread stopped without a result".into(),
        }),
    }
}

/// Stack of the evaluation thread.
const JSONNET_STACK: usize = 64 * 1024 * 1024;

fn evaluate_blocking(
    tree: &Tree,
    file: &Path,
    opts: Option<&JsonnetOptions>,
    max_output: usize,
) -> Result<Vec<serde_json::Value>, RenderError> {
    let display = tree.display(file);
    let default = JsonnetOptions::default();
    let opts = opts.unwrap_or(&default);
    let mut libs = Vec::with_capacity(opts.libs.len());
    for (i, lib) in opts.libs.iter().enumerate() {
        libs.push(tree.resolve(tree.root(), lib, &format!("directory.jsonnet.libs[{i}]"))?);
    }
    let jsonnet_err = |e: jrsonnet_evaluator::Error| RenderError::Jsonnet {
        file: display.clone(),
        message: e.to_string().trim_end().to_string(),
    };

    let context =
        jrsonnet_stdlib::ContextInitializer::new(PathResolver::Relative(tree.root().to_path_buf()));
    for var in &opts.ext_vars {
        if var.code {
            context
                .add_ext_code(&var.name, &var.value)
                .map_err(jsonnet_err)?;
        } else {
            context.add_ext_str(
                IStr::from(var.name.as_str()),
                IStr::from(var.value.as_str()),
            );
        }
    }
    let mut builder = State::builder();
    builder.context_initializer(context);
    builder.import_resolver(ConfinedResolver {
        root: tree.root().to_path_buf(),
        libs,
    });
    let state = builder.build();
    // The thread-local "current state" is what `std.extVar` and TLA code evaluation read.
    let _guard = state.try_enter();
    // IStr's interior mutability is its interner's reference count; its hash and equality are
    // those of the string, so it is a sound key (and the type `apply_tla` takes).
    #[allow(clippy::mutable_key_type)]
    let tlas: HashMap<IStr, TlaArg> = opts
        .tlas
        .iter()
        .map(|v| (IStr::from(v.name.as_str()), tla_arg(v)))
        .collect();
    // The entry file is imported by its path relative to the root (the resolver's base for
    // the default source), so it goes through the same confinement as every import.
    let rel = file.strip_prefix(tree.root()).unwrap_or(file);
    let value = state
        .import_from(&SourcePath::default(), rel)
        .and_then(|v| apply_tla(&tlas, v))
        .map_err(jsonnet_err)?;
    let json = value.manifest(JsonFormat::minify()).map_err(jsonnet_err)?;
    if json.len() > max_output {
        return Err(RenderError::OutputTooLarge {
            tool: format!("jsonnet {display}"),
            limit: max_output,
        });
    }
    let parsed: serde_json::Value =
        serde_json::from_str(&json).map_err(|e| RenderError::Jsonnet {
            file: display.clone(),
            message: format!("output is not JSON: {e}"),
        })?;
    flatten_value(&display, parsed)
}
