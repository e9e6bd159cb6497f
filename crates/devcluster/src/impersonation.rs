//! User impersonation (`kubectl --as`, `--as-group`, `--as-uid`), as the Kubernetes API server
//! applies it after authentication and before anything else reads the identity.
//!
//! Headers: `Impersonate-User`, `Impersonate-Group` (repeatable), `Impersonate-Uid` and
//! `Impersonate-Extra-<key>` (repeatable; the key is percent-decoded and lower-cased). Each
//! asks the authorizer for verb `impersonate` on behalf of the authenticated caller:
//!
//! | header | resource (API group) | name | namespace |
//! |---|---|---|---|
//! | user `system:serviceaccount:NS:SA` | `serviceaccounts` (core) | SA | NS |
//! | any other user | `users` (core) | the user | — |
//! | group | `groups` (core) | the group | — |
//! | extra | `userextras/<key>` (authentication.k8s.io) | each value | — |
//! | uid | `uids` (authentication.k8s.io) | the uid | — |
//!
//! A refusal is a 403 worded as Kubernetes words it (`users "x" is forbidden: User "y" cannot
//! impersonate resource "users" in API group "" at the cluster scope`). With RBAC on, the
//! `system:masters` group may impersonate anyone and everyone else needs a role granting
//! `impersonate`; without RBAC the server's authorizer decides (the default allows every
//! authenticated user). Once allowed, the request runs as the impersonated user: its groups are
//! the requested ones (a service account without requested groups gets its fixed
//! `system:serviceaccounts` and `system:serviceaccounts:NS`), plus `system:authenticated`
//! unless `system:authenticated` or `system:unauthenticated` was requested.
//!
//! The uid and the extras are authorized like the rest but not carried further: nothing in the
//! devcluster (RBAC, access reviews) reads them.

use hyper::HeaderMap;

use crate::State;
use crate::auth::{Attributes, UserInfo};
use crate::rbac::{self, AUTHENTICATED};
use crate::status::ApiError;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";
const UNAUTHENTICATED: &str = "system:unauthenticated";
const ANONYMOUS: &str = "system:anonymous";

/// What the impersonation headers of a request ask for.
#[derive(Debug, Default, PartialEq)]
struct Request {
    user: Option<String>,
    groups: Vec<String>,
    uid: Option<String>,
    extras: Vec<(String, String)>,
}

fn value(name: &str, v: &hyper::header::HeaderValue) -> Result<String, ApiError> {
    v.to_str()
        .map(str::to_string)
        .map_err(|_| ApiError::bad_request(format!("the {name} header is not valid text")))
}

fn parse(headers: &HeaderMap) -> Result<Request, ApiError> {
    let mut req = Request::default();
    for (name, v) in headers {
        let name = name.as_str();
        if name == USER {
            req.user = Some(value(name, v)?);
        } else if name == GROUP {
            req.groups.push(value(name, v)?);
        } else if name == UID {
            req.uid = Some(value(name, v)?);
        } else if let Some(key) = name.strip_prefix(EXTRA_PREFIX) {
            // Extra keys may carry characters a header name cannot.
            let key = crate::server::percent_decode(key, false).to_ascii_lowercase();
            req.extras.push((key, value(name, v)?));
        }
    }
    Ok(req)
}

/// The identity a request runs as: `caller` itself without impersonation headers, or the
/// impersonated user once the caller has been allowed to impersonate every part of it.
pub fn apply(state: &State, headers: &HeaderMap, caller: UserInfo) -> Result<UserInfo, ApiError> {
    let req = parse(headers)?;
    let Some(user) = req.user.clone() else {
        if req.groups.is_empty() && req.uid.is_none() && req.extras.is_empty() {
            return Ok(caller);
        }
        let mut asked: Vec<String> = req
            .groups
            .iter()
            .map(|g| format!("{{Kind=Group Name={g}}}"))
            .collect();
        asked.extend(req.uid.iter().map(|u| format!("{{Kind=UID Name={u}}}")));
        asked.extend(
            req.extras
                .iter()
                .map(|(k, v)| format!("{{Kind=UserExtra/{k} Name={v}}}")),
        );
        return Err(ApiError::bad_request(format!(
            "requested [{}] without impersonating a user",
            asked.join(" ")
        )));
    };
    let check = |group: &str, resource: &str, sub: &str, namespace: &str, name: &str| {
        let attrs = Attributes {
            user: &caller,
            verb: "impersonate",
            group,
            resource,
            subresource: sub,
            namespace,
            name,
        };
        state
            .authorizer
            .authorize(&attrs)
            .map_err(|why| rbac::forbidden(&attrs, &why))
    };
    let mut groups = req.groups.clone();
    match service_account(&user) {
        Some((ns, sa)) => {
            check("", "serviceaccounts", "", ns, sa)?;
            if req.groups.is_empty() {
                // The groups a service account authenticates with (they already include
                // `system:authenticated`, which the check below then does not add again).
                groups = rbac::service_account_info(ns, sa).groups;
            }
        }
        None => check("", "users", "", "", &user)?,
    }
    for g in &req.groups {
        check("", "groups", "", "", g)?;
    }
    for (key, v) in &req.extras {
        check("authentication.k8s.io", "userextras", key, "", v)?;
    }
    if let Some(uid) = &req.uid {
        check("authentication.k8s.io", "uids", "", "", uid)?;
    }
    if user == ANONYMOUS {
        if !groups.iter().any(|g| g == UNAUTHENTICATED) {
            groups.push(UNAUTHENTICATED.into());
        }
    } else if !groups
        .iter()
        .any(|g| g == AUTHENTICATED || g == UNAUTHENTICATED)
    {
        groups.push(AUTHENTICATED.into());
    }
    Ok(UserInfo { name: user, groups })
}

/// `(namespace, name)` of a service account's user name.
fn service_account(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_read_as_kubectl_sends_them() {
        let mut h = HeaderMap::new();
        h.insert("Impersonate-User", "jane".parse().unwrap());
        h.append("Impersonate-Group", "dev".parse().unwrap());
        h.append("Impersonate-Group", "ops".parse().unwrap());
        h.insert("Impersonate-Extra-Acme.com%2Fproject", "x".parse().unwrap());
        let r = parse(&h).unwrap();
        assert_eq!(r.user.as_deref(), Some("jane"));
        assert_eq!(r.groups, ["dev", "ops"]);
        assert_eq!(
            r.extras,
            [("acme.com/project".to_string(), "x".to_string())]
        );
    }

    #[test]
    fn service_account_names() {
        assert_eq!(
            service_account("system:serviceaccount:ns:sa"),
            Some(("ns", "sa"))
        );
        assert_eq!(service_account("system:serviceaccount:ns"), None);
        assert_eq!(service_account("admin"), None);
    }
}
