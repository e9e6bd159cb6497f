//! Kubernetes events on Applications (`events.k8s.io/v1`): every sync start, finish and failure,
//! rollback, lock and unlock, naming who started it. Notes never contain Secret values (they
//! carry operation messages, which name objects and API errors only).

use capstan_api::application::{Application, OperationInitiator};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

use crate::Shared;

/// Writes events as one reporting component. Each event is its own object (not aggregated
/// into a series as kube's recorder does), so that every operation keeps its own note.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    controller: String,
    instance: String,
}

/// A recorder reporting as `controller`.
pub fn recorder(client: kube::Client, controller: &str) -> Recorder {
    Recorder {
        client,
        controller: format!("capstan.dev/{controller}"),
        instance: std::env::var("HOSTNAME").unwrap_or_else(|_| controller.to_string()),
    }
}

impl Recorder {
    /// The same recorder reporting as `instance` (`reportingInstance`): the replica's identity
    /// when several replicas share the applications, so an event says which one acted.
    pub fn with_instance(mut self, instance: &str) -> Self {
        self.instance = instance.to_string();
        self
    }
}

/// `automated` or the user name.
pub fn initiator(by: &OperationInitiator) -> String {
    if by.automated {
        "automated sync".to_string()
    } else if by.username.is_empty() {
        "unknown user".to_string()
    } else {
        by.username.clone()
    }
}

/// Publishes an event on `app` with `recorder`; a failure is logged, never fatal (events are a
/// record, not part of the reconcile).
pub async fn publish(
    recorder: &Recorder,
    app: &Application,
    warning: bool,
    reason: &str,
    note: String,
) {
    let namespace = app.namespace().to_string();
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", app.name())),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        type_: Some(if warning { "Warning" } else { "Normal" }.to_string()),
        reason: Some(reason.to_string()),
        action: Some(reason.to_string()),
        // The events API limits notes to 1 kB.
        note: Some(note.chars().take(1000).collect()),
        reporting_controller: Some(recorder.controller.clone()),
        reporting_instance: Some(recorder.instance.clone()),
        regarding: Some(ObjectReference {
            api_version: Some(capstan_api::application::API_VERSION.to_string()),
            kind: Some(capstan_api::application::KIND.to_string()),
            name: Some(app.name().to_string()),
            namespace: Some(namespace.clone()),
            uid: app.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(recorder.client.clone(), &namespace);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::warn!(app = app.name(), reason, error = %e, "cannot record an event");
    }
}

/// Publishes an event with the controller's recorder.
pub async fn emit(shared: &Shared, app: &Application, warning: bool, reason: &str, note: String) {
    publish(&shared.recorder, app, warning, reason, note).await;
}
