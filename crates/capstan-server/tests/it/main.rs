//! The integration tests, one binary: each file a module, each test its own process under nextest.
//! One binary links the dependencies once, where one per file linked them once per file.

mod common;
#[path = "ui_support/server.rs"]
mod ui_server;
#[path = "ui_support/webdriver.rs"]
mod webdriver;

mod api;
mod auth;
mod diff;
mod ui_accessibility;
mod ui_browser;
mod webhook;
mod webhook_e2e;
