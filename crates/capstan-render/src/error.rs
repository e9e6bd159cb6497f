//! Render errors. Every variant names the file, field or tool it is about; none carries values
//! that came from Helm values or secrets (only paths, keys and tool messages).

use std::path::PathBuf;
use std::time::Duration;

/// Why a render failed. A failed render never returns a partial list of objects.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A path given in the options (or referenced by a tool's input) leaves the repository.
    #[error("{what} {path:?} is outside the repository: {reason}")]
    PathEscape {
        /// Which input held the path (`source path`, `valueFiles`, `jsonnet lib`, a
        /// kustomization field …).
        what: String,
        /// The path as written.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// A path that must exist does not.
    #[error("{what} {path:?} does not exist in the repository")]
    NotFound {
        /// Which input held the path.
        what: String,
        /// The path as written.
        path: String,
    },
    /// A YAML or JSON document could not be parsed.
    #[error("{file}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Parse {
        /// File (relative to the repository, or a template name).
        file: String,
        /// 1-based line, when the parser knows it.
        line: Option<usize>,
        /// Parser message.
        message: String,
    },
    /// A document parsed but is not a usable Kubernetes object.
    #[error("{file}: {message}")]
    Manifest {
        /// File (relative to the repository, or a template name).
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// An option value is invalid.
    #[error("invalid option {field}: {message}")]
    InvalidOption {
        /// Field path, e.g. `kustomize.images[0]`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The tool needed for this source is not available.
    #[error("{tool} is not available: {reason}")]
    ToolUnavailable {
        /// Tool name.
        tool: &'static str,
        /// What was looked for.
        reason: String,
    },
    /// Kustomize failed.
    #[error("kustomize build failed: {0}")]
    Kustomize(String),
    /// Helm failed (chart load, values, template error).
    #[error("helm: {0}")]
    Helm(String),
    /// Jsonnet evaluation failed.
    #[error("jsonnet {file}: {message}")]
    Jsonnet {
        /// File, relative to the repository.
        file: String,
        /// The evaluator's message with its stack trace.
        message: String,
    },
    /// A Helm chart dependency could not be fetched.
    #[error("chart dependency {name}: {message}")]
    Dependency {
        /// Dependency name.
        name: String,
        /// What failed.
        message: String,
    },
    /// A tool run took longer than its limit.
    #[error("{tool} timed out after {after:?}")]
    Timeout {
        /// Tool name.
        tool: String,
        /// The limit.
        after: Duration,
    },
    /// A tool produced more output than allowed.
    #[error("{tool} output exceeds the limit of {limit} bytes")]
    OutputTooLarge {
        /// Tool name.
        tool: String,
        /// The limit.
        limit: usize,
    },
    /// A file system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl RenderError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RenderError::Io {
            path: path.into(),
            source,
        }
    }
}
