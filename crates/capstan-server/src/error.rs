//! Errors: [`ServerError`] for starting the server, [`ApiError`] for one request (rendered as a
//! JSON body `{"error": "…"}` with its status code).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        /// Which listener (`API`, `metrics`).
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The cluster refused or failed a request needed to start (the users Secret).
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The cause.
        source: kube::Error,
    },
    /// The users Secret holds something unreadable.
    #[error("{0}")]
    Users(String),
    /// The operating system's random number generator failed.
    #[error("random number generator: {0}")]
    Random(String),
}

/// An error answered to an HTTP request.
#[derive(Debug)]
pub struct ApiError {
    /// Status code.
    pub status: StatusCode,
    /// Message for the client (never a Secret value, never a stack of internals).
    pub message: String,
    /// Seconds after which to retry (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// A failed cluster request while doing `what`: the API server's own status code where it
    /// gave one (404, 409, 422), else 502.
    pub fn kube(what: &str, e: kube::Error) -> Self {
        match e {
            kube::Error::Api(status) => {
                let code = StatusCode::from_u16(status.code).unwrap_or(StatusCode::BAD_GATEWAY);
                let code = if code.is_server_error() || code == StatusCode::UNAUTHORIZED {
                    // The server's own credentials failing is not the client's 401.
                    StatusCode::BAD_GATEWAY
                } else {
                    code
                };
                Self::new(code, format!("{what}: {}", status.message))
            }
            other => Self::new(StatusCode::BAD_GATEWAY, format!("{what}: {other}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({"error": self.message}))).into_response();
        if let Some(seconds) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}
