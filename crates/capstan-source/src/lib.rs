//! Git sources for Capstan: parse repository URLs, resolve a `targetRevision` to a commit, keep
//! one bare object store per repository, and materialize commit trees read-only on disk.
//!
//! Everything here is blocking (gix's blocking network client); async callers wrap the calls in
//! `spawn_blocking`. One [`RepoCache`] is meant to be shared by every application of a process
//! (`Arc<RepoCache>`): repositories are fetched once for all of them, concurrent refreshes of one
//! repository coalesce into one network operation, and a refresh of an unchanged repository costs
//! one round trip (the advertised refs) and no fetch.
//!
//! Credentials are passed in per call ([`Credentials`]), held in [`Secret`]s that never print,
//! handed to gix through an in-process credential callback (HTTP) or a temporary key file that is
//! deleted after the operation (SSH), and never written into the cache directory.
//!
//! Policies worth knowing when wiring this in:
//! - Credentials over plain `http://` are refused by gix in release builds ("Will not send
//!   credentials in clear text"); use https. (Test builds allow it for the local test server.)
//! - [`Credentials::Token`] is sent as basic auth with the user name `x-access-token`.
//! - SSH runs the `ssh` program with `BatchMode=yes`, `IdentitiesOnly=yes` and
//!   `StrictHostKeyChecking=yes` (or `accept-new` when asked); it never prompts.
//! - The user's and system's git configuration are never read (no credential helpers, no
//!   `insteadOf`, no prompts): behaviour depends only on the arguments.
//! - A materialized tree never contains a symlink that resolves outside it: such links are left
//!   out and listed in [`Tree::skipped_symlinks`].
//! - Semver constraints follow Helm/Argo CD spelling (`>=1.2.0 <2`, `1.x`, `~1.2`, `a - b`,
//!   `||`); a pre-release tag matches only when a comparator names a pre-release of the same
//!   `major.minor.patch` (the `semver` crate's rule, stricter than Masterminds').
//! - Materialized trees share file contents: each file is a read-only hard link into the cache's
//!   blob store, so a new commit changing one file writes one file.
//! - Trees and blobs are evicted only by [`RepoCache::prune`], which a long-running process calls
//!   periodically; a tree held by a live [`Tree`] handle is never deleted. The bare object stores
//!   are not evicted (they stay until the cache directory is removed).

mod cache;
mod error;
mod materialize;
mod revision;
mod secret;
mod ssh;
mod url;

pub use cache::{
    CacheStats, ProtocolVersion, PruneReport, RepoCache, Resolved, RevisionKind, Tree,
};
pub use error::SourceError;
pub use secret::{Credentials, Secret};
pub use url::{RepoUrl, Scheme};

/// Makes ring the process's rustls crypto provider unless one is installed already.
///
/// gix's HTTPS transport (reqwest with `rustls-no-provider`) brings no provider of its own, so
/// that only ring, which kube uses, is linked; reqwest then needs a process-wide default before
/// it builds a client. Every connection calls this, so callers need not; calling it again, or
/// after another part of the process installed ring, does nothing.
pub fn ensure_crypto_provider() {
    // An error only means a provider is installed already, which is all reqwest needs.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
