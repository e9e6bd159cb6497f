//! The integration tests, one binary: each file a module, each test its own process under nextest.
//! One binary links the dependencies once, where one per file linked them once per file.

mod common;

mod events_and_selectors;
mod faults;
mod fidelity;
mod kube_rs;
mod kubectl;
mod persistence;
mod rbac;
mod sim_deployment;
mod sim_gc;
mod sim_kube_rs;
mod sim_workloads;
