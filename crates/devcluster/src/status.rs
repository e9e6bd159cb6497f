//! API errors rendered as `kind: Status` objects, the way every Kubernetes client expects them.

use serde_json::{Value, json};

use crate::registry::ResourceInfo;

/// One cause of an `Invalid` error.
#[derive(Clone, Debug)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, …
    pub reason: &'static str,
    /// JSON path of the field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// An error answered to the client with a Status body.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `Conflict`, …).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `details` of the Status, if any.
    pub details: Option<Value>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.reason, self.code, self.message)
    }
}

fn details(info: &ResourceInfo, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": info.resource});
    if !info.group.is_empty() {
        d["group"] = json!(info.group);
    }
    d
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 404 for a named object.
    pub fn not_found(info: &ResourceInfo, name: &str) -> ApiError {
        ApiError {
            details: Some(details(info, name)),
            ..ApiError::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", info.group_resource()),
            )
        }
    }

    /// 404 for a path that names nothing served.
    pub fn no_route(path: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 409 AlreadyExists.
    pub fn already_exists(info: &ResourceInfo, name: &str) -> ApiError {
        ApiError {
            details: Some(details(info, name)),
            ..ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", info.group_resource()),
            )
        }
    }

    /// 409 Conflict for a stale resourceVersion.
    pub fn conflict(info: &ResourceInfo, name: &str, why: &str) -> ApiError {
        ApiError {
            details: Some(details(info, name)),
            ..ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": {why}",
                    info.group_resource()
                ),
            )
        }
    }

    /// 409 Conflict with a free-form message (apply conflicts).
    pub fn conflict_message(
        info: &ResourceInfo,
        name: &str,
        message: String,
        causes: Vec<Cause>,
    ) -> ApiError {
        let mut d = details(info, name);
        if !causes.is_empty() {
            d["causes"] = causes_json(&causes);
        }
        ApiError {
            details: Some(d),
            ..ApiError::new(409, "Conflict", message)
        }
    }

    /// 422 Invalid with causes.
    pub fn invalid(info: &ResourceInfo, name: &str, causes: Vec<Cause>) -> ApiError {
        let list: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let message = if list.len() == 1 {
            format!("{} \"{name}\" is invalid: {}", info.kind, list[0])
        } else {
            format!("{} \"{name}\" is invalid: [{}]", info.kind, list.join(", "))
        };
        let mut d = json!({"name": name, "kind": info.kind, "causes": causes_json(&causes)});
        if !info.group.is_empty() {
            d["group"] = json!(info.group);
        }
        ApiError {
            details: Some(d),
            ..ApiError::new(422, "Invalid", message)
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "Forbidden", message)
    }

    /// 410 Gone / Expired: the resourceVersion is older than the kept history.
    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    /// 415 for an unknown request content type.
    pub fn unsupported_media_type(ct: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({ct}) - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml"
            ),
        )
    }

    /// 406 for an Accept header the server cannot satisfy.
    pub fn not_acceptable(message: impl Into<String>) -> ApiError {
        ApiError::new(406, "NotAcceptable", message)
    }

    /// 413 for a body above the limit.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 500 for a failure of the server itself (the store refused a write).
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    /// The Status object.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

fn causes_json(causes: &[Cause]) -> Value {
    Value::Array(
        causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect(),
    )
}

/// A cause for an invalid field value.
pub fn cause(field: &str, message: impl Into<String>) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: field.into(),
        message: message.into(),
    }
}
