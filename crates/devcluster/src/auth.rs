//! Authentication (bearer tokens) and the authorization step of the request path.
//!
//! The server asks an [`Authorizer`] about every resource request after authenticating it; the
//! default allows everything to every authenticated user. RBAC plugs in here by implementing the
//! trait over the stored Role/RoleBinding objects.

use std::collections::HashMap;
use std::sync::RwLock;

/// Who is making a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// User name, e.g. "admin".
    pub name: String,
    /// Groups, e.g. "system:masters".
    pub groups: Vec<String>,
}

/// What a request wants to do, in the terms RBAC rules use.
#[derive(Debug)]
pub struct Attributes<'a> {
    /// The authenticated user.
    pub user: &'a UserInfo,
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: &'a str,
    /// API group ("" for core).
    pub group: &'a str,
    /// Resource (plural).
    pub resource: &'a str,
    /// Subresource ("" if none).
    pub subresource: &'a str,
    /// Namespace ("" for cluster-scoped or all-namespace requests).
    pub namespace: &'a str,
    /// Object name ("" for collections).
    pub name: &'a str,
}

/// Decides whether a request may proceed.
pub trait Authorizer: Send + Sync {
    /// `Ok(())` to allow; `Err(reason)` to refuse with 403 (the reason may be empty).
    fn authorize(&self, attrs: &Attributes<'_>) -> Result<(), String>;
}

/// Allows every authenticated request.
#[derive(Debug, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _attrs: &Attributes<'_>) -> Result<(), String> {
        Ok(())
    }
}

/// Static bearer tokens.
#[derive(Debug, Default)]
pub struct TokenAuthenticator {
    tokens: RwLock<HashMap<String, UserInfo>>,
}

impl TokenAuthenticator {
    /// Registers a token for a user (later tokens for other users can be added at run time).
    pub fn add(&self, token: &str, user: UserInfo) {
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_string(), user);
    }

    /// The user of a token, if it is known.
    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }
}
