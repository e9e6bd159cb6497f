//! The integration tests, one binary: each file a module, each test its own process under nextest.
//! One binary links the dependencies once, where one per file linked them once per file.

mod common;

mod cache;
mod crd;
mod creds;
mod delete;
mod refresh;
mod restart;
mod rollback;
mod selective;
mod shards;
mod sync;
mod waves;
