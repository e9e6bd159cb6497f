//! The integration tests, one binary: each file a module, each test its own process under nextest.
//! One binary links the dependencies once, where one per file linked them once per file.

mod cli_app;
mod cli_app_diff;
mod cli_bench;
mod cli_diff;
mod cli_health;
mod cli_render;
mod cli_repo;
mod docs;
mod install;
mod up;
