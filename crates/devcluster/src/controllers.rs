//! Background loops that react to stored changes, the way controllers of a real control plane
//! do. Each one subscribes to the store's change feed and writes through the same API functions
//! as clients, so its writes get resourceVersions, events and managedFields like any other.
//!
//! Today: namespace finalization (a terminating namespace disappears once the last object in it
//! is gone). The simulated workload controllers, garbage collection and fault injection of the
//! next issue plug in here with [`spawn`]-style loops of their own.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::State;
use crate::store::EventType;

/// Starts the built-in controllers; they stop when `shutdown` turns true.
pub fn spawn(state: Arc<State>, sim: crate::sim::SimConfig, shutdown: watch::Receiver<bool>) {
    crate::sim::spawn(state.clone(), sim, shutdown.clone());
    tokio::spawn(namespace_finalizer(state, shutdown));
}

async fn namespace_finalizer(state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let mut events = state.store.subscribe_all();
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = shutdown.changed() => return,
        };
        let namespace = match event {
            Ok(e) if e.kind == EventType::Deleted && !e.namespace.is_empty() => {
                e.namespace.to_string()
            }
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Missed some changes: check every terminating namespace.
                for ns in terminating_namespaces(&state) {
                    crate::api::finish_namespace(&state, &ns);
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if terminating_namespaces(&state).contains(&namespace) {
            crate::api::finish_namespace(&state, &namespace);
        }
    }
}

fn terminating_namespaces(state: &State) -> Vec<String> {
    state
        .store
        .all_of("/namespaces")
        .into_iter()
        .filter_map(|s| s.value().ok())
        .filter(|v| v.pointer("/metadata/deletionTimestamp").is_some())
        .filter_map(|v| {
            v.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .collect()
}
