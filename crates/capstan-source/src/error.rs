//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong with a Git source. Every variant names the repository URL (with
/// credentials stripped) and, where there is one, the revision, commit or path; none carries a
/// secret.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The repository URL could not be parsed or uses an unsupported scheme.
    #[error("invalid repository URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given, with any password removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The cache directory could not be created, read or written.
    #[error("cache I/O error at {}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The remote refused our credentials or demanded some we did not give.
    #[error("authentication failed for {url}: {message}")]
    Authentication {
        /// The repository URL (no credentials).
        url: String,
        /// What the transport said.
        message: String,
    },
    /// Listing the remote's refs or fetching from it failed.
    #[error("fetching {url} failed: {message}")]
    Fetch {
        /// The repository URL (no credentials).
        url: String,
        /// What the transport said.
        message: String,
    },
    /// The revision names no branch, tag or commit of the repository.
    #[error("revision {revision:?} not found in {url}: {reason}")]
    RevisionNotFound {
        /// The repository URL (no credentials).
        url: String,
        /// The revision as asked for.
        revision: String,
        /// What was looked for.
        reason: String,
    },
    /// The revision is malformed (e.g. a semver constraint that does not parse) or ambiguous.
    #[error("invalid revision {revision:?} for {url}: {reason}")]
    InvalidRevision {
        /// The repository URL (no credentials).
        url: String,
        /// The revision as asked for.
        revision: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A commit is not in the local object store (resolve it first) or is not a commit.
    #[error("commit {commit} of {url}: {reason}")]
    Commit {
        /// The repository URL (no credentials).
        url: String,
        /// The commit id as asked for.
        commit: String,
        /// What went wrong.
        reason: String,
    },
    /// A path given to [`RepoCache::path_tree_id`](crate::RepoCache::path_tree_id) is not a
    /// relative path inside the repository.
    #[error("invalid path {path:?} in {url}: {reason}")]
    InvalidPath {
        /// The repository URL (no credentials).
        url: String,
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading the object store or writing a tree failed, or the tree holds an entry that cannot
    /// be written safely (a name like `..`).
    #[error("repository {url}: {message}")]
    Repository {
        /// The repository URL (no credentials).
        url: String,
        /// What went wrong.
        message: String,
    },
}

impl SourceError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SourceError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Render a gix error with its whole chain on one line, so the cause (e.g. "HTTP 404") is not lost
/// behind a generic "Transport handshake failed".
pub(crate) fn gix_message(err: &gix::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in err.iter_errors() {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p == &text) {
            parts.push(text);
        }
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}
