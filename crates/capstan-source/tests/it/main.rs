//! The integration tests, one binary: each file a module, each test its own process under nextest.
//! One binary links the dependencies once, where one per file linked them once per file.

mod support;

mod blobs;
mod git_daemon;
mod http;
mod https;
mod local;
mod repack;
mod ssh;
