//! SelfSubjectAccessReview (`authorization.k8s.io/v1`, create only): "may I?" for the caller,
//! answered by the server's authorizer. This is what `kubectl auth can-i` asks.

use serde_json::{Value, json};

use crate::State;
use crate::api::Reply;
use crate::auth::{Attributes, UserInfo};
use crate::status::ApiError;

/// Serves `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`. Every authenticated
/// user may ask (the default `system:basic-user` grant); the review is not stored.
pub fn self_subject_access_review(
    state: &State,
    user: &UserInfo,
    content_type: &str,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let mut review =
        super::proto::decode(content_type, body, super::proto::self_subject_access_review)?;
    if !review.is_object() {
        return Err(ApiError::bad_request(
            "the SelfSubjectAccessReview must be a JSON object",
        ));
    }
    match review.get("kind").and_then(Value::as_str) {
        None | Some("SelfSubjectAccessReview") => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind of the object ({k}) does not match SelfSubjectAccessReview"
            )));
        }
    }
    let spec = review.get("spec").cloned().unwrap_or(Value::Null);
    let text = |v: Option<&Value>, f: &str| {
        v.and_then(|o| o.get(f))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let decision = match (
        spec.get("resourceAttributes").filter(|v| v.is_object()),
        spec.get("nonResourceAttributes").filter(|v| v.is_object()),
    ) {
        (Some(ra), None) => {
            let (verb, group, resource, sub, ns, name) = (
                text(Some(ra), "verb"),
                text(Some(ra), "group"),
                text(Some(ra), "resource"),
                text(Some(ra), "subresource"),
                text(Some(ra), "namespace"),
                text(Some(ra), "name"),
            );
            let attrs = Attributes {
                user,
                verb: &verb,
                group: &group,
                resource: &resource,
                subresource: &sub,
                namespace: &ns,
                name: &name,
            };
            state.authorizer.authorize(&attrs)
        }
        (None, Some(na)) => {
            let (verb, path) = (text(Some(na), "verb"), text(Some(na), "path"));
            if state.rbac.enforced() {
                state.rbac.check_path(user, &verb, &path)
            } else {
                Ok(())
            }
        }
        _ => {
            return Err(ApiError {
                code: 422,
                reason: "Invalid",
                message: "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified".into(),
                details: Some(json!({"group": "authorization.k8s.io", "kind": "SelfSubjectAccessReview",
                    "causes": [{"reason": "FieldValueInvalid", "field": "spec.resourceAttributes",
                        "message": "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified"}]})),
            });
        }
    };
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectAccessReview");
    if !review.get("metadata").is_some_and(Value::is_object) {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    review["status"] = match decision {
        Ok(()) => json!({"allowed": true, "reason": "RBAC: allowed"}),
        Err(why) if why.is_empty() => json!({"allowed": false}),
        Err(why) => json!({"allowed": false, "reason": why}),
    };
    if !state.rbac.enforced()
        && let Some(s) = review.get_mut("status")
    {
        s["reason"] = json!("every authenticated user is allowed (RBAC is off)");
    }
    Ok(Reply {
        code: 201,
        body: bytes::Bytes::from(review.to_string()),
        warnings: Vec::new(),
        object: None,
    })
}
