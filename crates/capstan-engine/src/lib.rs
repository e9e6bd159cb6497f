//! Capstan's engine: the pure judgement at the centre of the GitOps loop.
//!
//! No I/O, no clock, no async: every function here takes values and returns values, so it can be
//! tested exhaustively and runs for every object on every refresh.
//!
//! - [`health`]: built-in health checks and the application roll-up.
//! - [`lua`]: custom health checks in sandboxed Lua 5.1.
//! - [`diff`]: normalization and desired-vs-live comparison, with Secret masking.
//! - [`plan`]: the ordered sync plan (phases, waves, hooks, prune).

pub mod diff;
pub mod health;
pub mod lua;
pub mod plan;
