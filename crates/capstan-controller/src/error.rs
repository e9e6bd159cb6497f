//! The controller's errors. Messages name the application, object, file or field concerned and
//! never contain a Secret value.

/// What went wrong in the controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A kind the cluster does not serve.
    #[error("{api_version} {kind} is not served by the cluster: {reason}")]
    UnknownKind {
        /// The apiVersion asked for.
        api_version: String,
        /// The kind.
        kind: String,
        /// Discovery's answer.
        reason: String,
    },
    /// A watch that could not be started.
    #[error("cannot watch {kind}: {reason}")]
    Watch {
        /// The kind.
        kind: String,
        /// Why.
        reason: String,
    },
    /// A Kubernetes API call failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The cause.
        source: kube::Error,
    },
    /// The Application itself is invalid.
    #[error("{0}")]
    InvalidSpec(String),
    /// A request refused because of the application's state (locked, an operation already in
    /// progress, no previous deployment, …).
    #[error("{0}")]
    Refused(String),
    /// What a request names does not exist (the application, a history entry).
    #[error("{0}")]
    NotFound(String),
    /// Anything else with a message.
    #[error("{0}")]
    Other(String),
}

impl ControllerError {
    /// Wraps a kube error with what was being done.
    pub fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        ControllerError::Kube {
            what: what.into(),
            source,
        }
    }
}
