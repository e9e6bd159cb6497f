//! Test-only helpers shared by Capstan's integration tests. Never a normal dependency: every
//! crate lists it under `[dev-dependencies]`, and it is not published.
//!
//! It exists because the same harness code had been copied into many crates' `tests/`: a `git`
//! runner with a fixed identity, a repository committed on disk, temporary directories, a
//! devcluster with the namespaces and the Application CRD, waiting for an Application. One
//! copy keeps the tests' set-up identical and lets a fix land once.
//!
//! The helpers panic with a message naming what failed: that is how a test reports a broken
//! set-up, and none of them ever runs outside a test.
//!
//! - [`git`]: [`GitRepo`] (init, write, remove, commit returning the SHA, `file://` URL) and
//!   the bare [`git()`] runner.
//! - [`fs`]: [`temp_dir`] and [`copy_dir`].
//! - [`cluster`]: [`start_cluster`], [`install_application_crd`], [`create_namespaces`],
//!   [`wait_for_app`].
//! - [`manifests`]: [`parse_stream`] and [`sorted`], to compare rendered manifests.

pub mod cluster;
pub mod fs;
pub mod git;
pub mod manifests;

pub use cluster::{create_namespaces, install_application_crd, start_cluster, wait_for_app};
pub use fs::{copy_dir, temp_dir};
pub use git::{GitRepo, git};
pub use manifests::{parse_stream, sorted};
