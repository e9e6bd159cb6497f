//! Local users, sessions and the login rate limit.
//!
//! Users live in the Secret [`USERS_SECRET`] of the controller namespace, one data key per user
//! (the key is the user name) holding `{"role": "admin"|"readonly", "passwordHash": "$argon2id$…"}`.
//! The Secret is read at each login, so users added or removed with `kubectl` take effect at
//! once, without a restart.
//!
//! Sessions are random 256-bit tokens kept in memory (only their SHA-256 is stored, so the
//! session table holds nothing a client could present). A restart of the server logs everybody
//! out. A token is accepted as a bearer token (CLI) or in the [`SESSION_COOKIE`] cookie (browser).

use crate::error::{ApiError, ServerError};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::http::StatusCode;
use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Name of the Secret holding the local users.
pub const USERS_SECRET: &str = "capstan-users";
/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "capstan_session";
/// Header a cookie-authenticated POST/PUT/DELETE must carry (any value): a cross-site form or
/// image cannot set it, and a cross-site script cannot send it without a CORS preflight, which
/// this server never grants.
pub const CSRF_HEADER: &str = "x-capstan-csrf";
/// The user created at first start.
pub const INITIAL_ADMIN: &str = "admin";

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Reads only: no action.
    Readonly,
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// User name.
    pub username: String,
    /// Role.
    pub role: Role,
}

/// A user as stored in the users Secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredUser {
    /// Role.
    pub role: Role,
    /// Argon2id hash in PHC string format.
    pub password_hash: String,
}

/// Fills `buf` from the operating system's random number generator.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), ServerError> {
    getrandom::fill(buf).map_err(|e| ServerError::Random(e.to_string()))
}

/// A random password of 24 letters and digits (~142 bits).
pub fn generate_password() -> Result<String, ServerError> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut out = String::with_capacity(24);
    let mut buf = [0u8; 64];
    while out.len() < 24 {
        random_bytes(&mut buf)?;
        // Rejection sampling keeps every character equally likely.
        let limit = 256 - 256 % ALPHABET.len();
        for b in buf {
            if usize::from(b) < limit && out.len() < 24 {
                out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

/// The argon2id hash (PHC string) of `password` with a random salt.
pub fn hash_password(password: &str) -> Result<String, ServerError> {
    let mut salt = [0u8; 16];
    random_bytes(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| ServerError::Random(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServerError::Users(format!("hashing a password: {e}")))
}

/// Whether `password` matches `hash`; a malformed hash matches nothing.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Whether `name` can be a user name (a Secret data key: letters, digits, `-`, `_`, `.`).
pub fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Adds or replaces a local user in the users Secret of `namespace` (creating the Secret when
/// missing).
pub async fn set_user(
    client: &kube::Client,
    namespace: &str,
    username: &str,
    password: &str,
    role: Role,
) -> Result<(), ServerError> {
    if !valid_username(username) {
        return Err(ServerError::Users(format!(
            "invalid user name {username:?}: use letters, digits, '-', '_' and '.'"
        )));
    }
    let stored = StoredUser {
        role,
        password_hash: hash_password(password)?,
    };
    let value = serde_json::to_vec(&stored)
        .map_err(|e| ServerError::Users(format!("encoding user {username}: {e}")))?;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&value);
    let patch = serde_json::json!({"data": {username: b64}});
    match api
        .patch(USERS_SECRET, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let secret = users_secret(namespace, BTreeMap::from([(username.to_string(), value)]));
            api.create(&PostParams::default(), &secret)
                .await
                .map(|_| ())
                .map_err(|source| ServerError::Kube {
                    what: format!("creating the Secret {namespace}/{USERS_SECRET}"),
                    source,
                })
        }
        Err(source) => Err(ServerError::Kube {
            what: format!("updating the Secret {namespace}/{USERS_SECRET}"),
            source,
        }),
    }
}

fn users_secret(namespace: &str, data: BTreeMap<String, Vec<u8>>) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(USERS_SECRET.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_string(),
                "capstan".to_string(),
            )])),
            ..Default::default()
        },
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        type_: Some("Opaque".to_string()),
        ..Default::default()
    }
}

/// Creates the users Secret with an `admin` user and a generated password when the Secret does
/// not exist; returns that password (the only time it is ever available in clear).
pub async fn bootstrap(
    client: &kube::Client,
    namespace: &str,
) -> Result<Option<String>, ServerError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let existing = api
        .get_opt(USERS_SECRET)
        .await
        .map_err(|source| ServerError::Kube {
            what: format!("reading the Secret {namespace}/{USERS_SECRET}"),
            source,
        })?;
    if existing.is_some() {
        return Ok(None);
    }
    let password = generate_password()?;
    let hash = tokio::task::spawn_blocking({
        let password = password.clone();
        move || hash_password(&password)
    })
    .await
    .map_err(|e| ServerError::Users(format!("hashing task: {e}")))??;
    let stored = StoredUser {
        role: Role::Admin,
        password_hash: hash,
    };
    let value = serde_json::to_vec(&stored)
        .map_err(|e| ServerError::Users(format!("encoding the admin user: {e}")))?;
    let secret = users_secret(
        namespace,
        BTreeMap::from([(INITIAL_ADMIN.to_string(), value)]),
    );
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(Some(password)),
        // Another server instance created it first: its password is the one shown.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(source) => Err(ServerError::Kube {
            what: format!("creating the Secret {namespace}/{USERS_SECRET}"),
            source,
        }),
    }
}

struct Session {
    user: User,
    expires: Instant,
}

/// Login rate limit: at most `max_failures` failed logins per (user name, client address) in
/// `window`.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Failures allowed in the window.
    pub max_failures: usize,
    /// The window.
    pub window: Duration,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            max_failures: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// Users, sessions and login failures.
pub struct Auth {
    client: kube::Client,
    namespace: String,
    ttl: Duration,
    limit: RateLimit,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    failures: Mutex<HashMap<(String, IpAddr), VecDeque<Instant>>>,
    /// Verified against when the user does not exist, so that an unknown name takes as long
    /// to refuse as a wrong password.
    dummy_hash: String,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Auth {
    /// Sessions of `ttl`, users read from `namespace`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        ttl: Duration,
        limit: RateLimit,
    ) -> Result<Self, ServerError> {
        Ok(Auth {
            client,
            namespace: namespace.to_string(),
            ttl,
            limit,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            dummy_hash: hash_password(&generate_password()?)?,
        })
    }

    /// Session lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    async fn stored_user(&self, username: &str) -> Result<Option<StoredUser>, ApiError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = api.get_opt(USERS_SECRET).await.map_err(|e| {
            ApiError::kube(
                &format!("reading the users Secret {}/{USERS_SECRET}", self.namespace),
                e,
            )
        })?;
        let Some(bytes) = secret
            .and_then(|s| s.data)
            .and_then(|mut d| d.remove(username))
        else {
            return Ok(None);
        };
        match serde_json::from_slice::<StoredUser>(&bytes.0) {
            Ok(user) => Ok(Some(user)),
            Err(e) => {
                // The entry's content is a hash, but keep it out of the log anyway.
                tracing::warn!(
                    user = username,
                    error = %e,
                    "unreadable entry in the users Secret {}/{USERS_SECRET}",
                    self.namespace
                );
                Ok(None)
            }
        }
    }

    /// Seconds until `(username, ip)` may try again, when it is over the limit.
    fn throttled(&self, key: &(String, IpAddr)) -> Option<u64> {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let window = self.limit.window;
        let entry = failures.get_mut(key)?;
        while entry
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            entry.pop_front();
        }
        if entry.len() < self.limit.max_failures {
            return None;
        }
        let oldest = *entry.front()?;
        let wait = window.saturating_sub(now.duration_since(oldest));
        Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
    }

    fn record_failure(&self, key: (String, IpAddr)) {
        let now = Instant::now();
        let window = self.limit.window;
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() > 10_000 {
            // Bound the table under a spray of names: forget the stale entries.
            failures.retain(|_, v| v.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        failures.entry(key).or_default().push_back(now);
    }

    /// Checks a user name and password; on success opens a session and returns its token.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        ip: IpAddr,
    ) -> Result<(String, User), ApiError> {
        let key = (username.to_lowercase(), ip);
        if let Some(seconds) = self.throttled(&key) {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed logins for {username}; retry in {seconds} s"),
            );
            e.retry_after = Some(seconds.max(1));
            return Err(e);
        }
        let stored = if valid_username(username) {
            self.stored_user(username).await?
        } else {
            None
        };
        let hash = stored
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |u| u.password_hash.clone());
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .unwrap_or(false);
        let Some(stored) = stored.filter(|_| ok) else {
            self.record_failure(key);
            return Err(ApiError::unauthorized("invalid user name or password"));
        };
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        let mut raw = [0u8; 32];
        random_bytes(&mut raw)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let user = User {
            username: username.to_string(),
            role: stored.role,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(
            digest(&token),
            Session {
                user: user.clone(),
                expires: now + self.ttl,
            },
        );
        Ok((token, user))
    }

    /// The user of a live session.
    pub fn authenticate(&self, token: &str) -> Option<User> {
        let key = digest(token);
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        match sessions.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.user.clone()),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends a session; whether it existed.
    pub fn logout(&self, token: &str) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&digest(token))
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_password() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "correct hors"));
        assert!(!verify_password("not a hash", "correct horse"));
        let other = hash_password("correct horse").unwrap();
        assert_ne!(hash, other, "salts differ");
    }

    #[test]
    fn generated_passwords_are_long_and_distinct() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.len(), 24);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn usernames_are_secret_keys() {
        assert!(valid_username("ann.o-k_1"));
        assert!(!valid_username(""));
        assert!(!valid_username("a/b"));
        assert!(!valid_username("a b"));
    }
}
