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

mod cache;
mod error;
mod materialize;
mod revision;
mod secret;
mod ssh;
mod url;

pub use cache::{CacheStats, ProtocolVersion, RepoCache, Resolved, RevisionKind, Tree};
pub use error::SourceError;
pub use secret::{Credentials, Secret};
pub use url::{RepoUrl, Scheme};
