//! The integration tests, one binary: each file a module, each test its own process under nextest.
//! One binary links the dependencies once, where one per file linked them once per file.

mod diff_equivalence;
mod diff_ignore;
mod diff_realistic;
mod diff_secret;
mod health_builtin;
mod lua_health;
mod plan_sync;
