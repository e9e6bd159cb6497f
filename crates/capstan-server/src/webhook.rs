//! `POST /api/webhook`: Git push notifications from GitHub, GitLab and Gitea, which refresh the
//! applications that follow the pushed repository and ref at once instead of at their next
//! periodic refresh.
//!
//! The route needs no session; every delivery is verified instead, against the secret of its
//! provider in the Secret named by [`crate::Config::webhook_secret`] (keys `github`, `gitlab`,
//! `gitea`), read at request time so a rotated secret takes effect on the next delivery:
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`;
//! - GitLab: `X-Gitlab-Token` equal to the secret;
//! - Gitea: `X-Gitea-Signature: <hex HMAC-SHA256 of the body>`.
//!
//! A provider without a configured secret is refused (401): nothing is ever accepted unverified.
//! All comparisons are constant-time.
//!
//! Matching follows Argo CD's webhook handler: an application is refreshed when its
//! `spec.source.repoURL` names the same repository as one of the payload's URLs (see
//! [`normalize_repo_url`]) and its `targetRevision` follows the pushed ref (see
//! [`revision_matches`]). Refreshing is the `capstan.dev/refresh: normal` annotation the
//! controller already reacts to, audited with a `WebhookRefresh` Event on the application.
//! An application annotated `capstan.dev/manifest-generate-paths` (or Argo CD's
//! `argocd.argoproj.io/manifest-generate-paths`) is refreshed only when the push's commits
//! list a changed file under one of its paths (see [`paths_match`]). The matching
//! applications are refreshed a bounded number at a time, not one after another.

use crate::AppState;
use crate::cache::Filter;
use crate::error::ApiError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use capstan_api::annotations as ann;
use capstan_api::application::Application;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Refresh requests (annotation patch and audit Event) a delivery has in flight at once.
const REFRESH_CONCURRENCY: usize = 16;

/// Default name of the Secret holding the webhook secrets (in the controller's namespace).
pub const DEFAULT_SECRET_NAME: &str = "capstan-webhook";

/// Largest accepted payload. GitHub caps its own deliveries at 25 MB, but a push payload that
/// large only lists commits we do not read; a small cap bounds the HMAC work of a flood.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The Event reason recorded on each refreshed application.
pub const AUDIT_REASON: &str = "WebhookRefresh";

/// A Git hosting service that sends push webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// GitHub (and GitHub Enterprise).
    GitHub,
    /// GitLab.
    GitLab,
    /// Gitea (and Forgejo, which sends the same headers).
    Gitea,
}

impl Provider {
    /// The provider's key in the webhook Secret, also its name in responses and logs.
    pub fn key(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
            Provider::Gitea => "gitea",
        }
    }

    /// The provider of a delivery and its event name, from the request headers.
    ///
    /// Gitea also sends `X-GitHub-Event` for compatibility, so its own header is looked at
    /// first.
    pub fn detect(headers: &HeaderMap) -> Option<(Provider, String)> {
        [
            ("x-gitea-event", Provider::Gitea),
            ("x-gitlab-event", Provider::GitLab),
            ("x-github-event", Provider::GitHub),
        ]
        .into_iter()
        .find_map(|(name, provider)| {
            let event = headers.get(name)?.to_str().ok()?;
            Some((provider, event.trim().to_string()))
        })
    }
}

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    /// None of the providers' event headers is present.
    #[error(
        "not a GitHub, GitLab or Gitea webhook: none of the X-GitHub-Event, X-Gitlab-Event, X-Gitea-Event headers is set"
    )]
    UnknownProvider,
    /// The Secret or its key for this provider is missing or empty.
    #[error(
        "no {provider} webhook secret is configured (key `{provider}` of Secret {namespace}/{secret}); unverified deliveries are refused"
    )]
    NoSecret {
        /// Provider key.
        provider: &'static str,
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        secret: String,
    },
    /// The signature or token header is absent.
    #[error("the {header} header is missing")]
    Unsigned {
        /// The header the provider signs with.
        header: &'static str,
    },
    /// The signature or token does not match the configured secret.
    #[error("the {header} header does not match the configured secret")]
    BadSignature {
        /// The header that was checked.
        header: &'static str,
    },
    /// The payload is not what the provider sends.
    #[error("payload: {0}")]
    Malformed(String),
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        let status = match e {
            WebhookError::UnknownProvider | WebhookError::Malformed(_) => StatusCode::BAD_REQUEST,
            WebhookError::NoSecret { .. }
            | WebhookError::Unsigned { .. }
            | WebhookError::BadSignature { .. } => StatusCode::UNAUTHORIZED,
        };
        ApiError::new(status, e.to_string())
    }
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// Equality whose running time depends only on the lengths, so that a forger learns nothing
/// from timing about how much of a signature or token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, WebhookError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(WebhookError::Unsigned { header: name })
}

fn hmac_matches(secret: &[u8], body: &[u8], hex_signature: &str) -> bool {
    match hex::decode(hex_signature) {
        Ok(given) => constant_time_eq(&hmac_sha256(secret, body), &given),
        Err(_) => false,
    }
}

/// Checks a delivery's signature (GitHub, Gitea) or token (GitLab) against `secret`.
pub fn verify(
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
) -> Result<(), WebhookError> {
    let (name, ok) = match provider {
        Provider::GitHub => {
            let name = "x-hub-signature-256";
            let value = header(headers, name)?;
            let ok = value
                .strip_prefix("sha256=")
                .is_some_and(|sig| hmac_matches(secret, body, sig));
            (name, ok)
        }
        Provider::GitLab => {
            let name = "x-gitlab-token";
            let value = header(headers, name)?;
            (name, constant_time_eq(value.as_bytes(), secret))
        }
        Provider::Gitea => {
            let name = "x-gitea-signature";
            let value = header(headers, name)?;
            (name, hmac_matches(secret, body, value))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(WebhookError::BadSignature { header: name })
    }
}

/// The ref a push moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushedRef {
    /// `refs/heads/<name>`.
    Branch(String),
    /// `refs/tags/<name>`.
    Tag(String),
}

/// What a verified push says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Every URL the payload gives for the repository (web, HTTPS clone, SSH clone).
    pub repo_urls: Vec<String>,
    /// The pushed ref.
    pub pushed: PushedRef,
    /// The repository's default branch, when the payload says.
    pub default_branch: Option<String>,
    /// The ref as sent (`refs/heads/main`).
    pub full_ref: String,
    /// The files the push's commits added, modified or removed (paths from the repository
    /// root, normalized: no leading `/`, no `.` or `..` segments), or `None` when the payload lists none (a tag push, a payload without commits).
    pub changed_files: Option<Vec<String>>,
}

/// A verified delivery, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// GitHub's `ping`, sent when a hook is created.
    Ping,
    /// A push of a branch or tag.
    Push(Push),
    /// An event that refreshes nothing (with the reason, for the response).
    Ignored(String),
}

/// Parses a verified payload of `provider` for `event` (the event header's value).
pub fn parse(provider: Provider, event: &str, body: &[u8]) -> Result<Delivery, WebhookError> {
    let is_push = match provider {
        Provider::GitHub if event == "ping" => return Ok(Delivery::Ping),
        Provider::GitHub | Provider::Gitea => event == "push",
        Provider::GitLab => event == "Push Hook" || event == "Tag Push Hook",
    };
    if !is_push {
        return Ok(Delivery::Ignored(format!(
            "{} event {event:?} is not a push",
            provider.key()
        )));
    }
    let payload: Value = serde_json::from_slice(body)
        .map_err(|e| WebhookError::Malformed(format!("not valid JSON: {e}")))?;
    if !payload.is_object() {
        return Err(WebhookError::Malformed("expected a JSON object".into()));
    }
    let full_ref = payload["ref"]
        .as_str()
        .ok_or_else(|| WebhookError::Malformed("field `ref` is missing or not a string".into()))?
        .to_string();
    let (repo_field, url_fields): (&str, [&str; 3]) = match provider {
        Provider::GitHub | Provider::Gitea => ("repository", ["html_url", "clone_url", "ssh_url"]),
        Provider::GitLab => ("project", ["web_url", "git_http_url", "git_ssh_url"]),
    };
    let repo = payload
        .get(repo_field)
        .filter(|r| r.is_object())
        .ok_or_else(|| {
            WebhookError::Malformed(format!("field `{repo_field}` is missing or not an object"))
        })?;
    let repo_urls: Vec<String> = url_fields
        .iter()
        .filter_map(|f| repo[*f].as_str())
        .filter(|u| !u.trim().is_empty())
        .map(String::from)
        .collect();
    if repo_urls.is_empty() {
        return Err(WebhookError::Malformed(format!(
            "none of {} is set in `{repo_field}`",
            url_fields
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let default_branch = repo["default_branch"]
        .as_str()
        .filter(|b| !b.is_empty())
        .map(String::from);
    let pushed = if let Some(branch) = full_ref.strip_prefix("refs/heads/") {
        PushedRef::Branch(branch.to_string())
    } else if let Some(tag) = full_ref.strip_prefix("refs/tags/") {
        PushedRef::Tag(tag.to_string())
    } else {
        return Ok(Delivery::Ignored(format!(
            "ref {full_ref:?} is neither a branch nor a tag"
        )));
    };
    Ok(Delivery::Push(Push {
        repo_urls,
        pushed,
        default_branch,
        full_ref,
        changed_files: changed_files(&payload),
    }))
}

/// The files listed by the payload's `commits[].added/modified/removed` (the same fields for
/// GitHub, GitLab and Gitea), in [`normalize_path`]'s form and deduplicated; `None` when no commit lists any file, since then
/// the payload says nothing about what changed.
fn changed_files(payload: &Value) -> Option<Vec<String>> {
    let mut files = std::collections::BTreeSet::new();
    for commit in payload["commits"].as_array().into_iter().flatten() {
        for field in ["added", "modified", "removed"] {
            for file in commit[field].as_array().into_iter().flatten() {
                if let Some(f) = file.as_str().map(normalize_path).filter(|f| !f.is_empty()) {
                    files.insert(f);
                }
            }
        }
    }
    (!files.is_empty()).then(|| files.into_iter().collect())
}

/// Whether a push that changed `changed` (repository-relative paths without `.`, `..` or
/// empty segments, as [`Push::changed_files`] holds them) concerns an application at
/// `app_path` whose manifest-generate-paths annotation is `annotation` (see
/// [`ann::MANIFEST_GENERATE_PATHS`]): a changed file equal to or under one of the listed paths.
/// Without the annotation, or without a list of changed files, every push concerns it.
pub fn paths_match(annotation: Option<&str>, app_path: &str, changed: Option<&[String]>) -> bool {
    let (Some(annotation), Some(changed)) = (annotation, changed) else {
        return true;
    };
    let mut any_path = false;
    for item in annotation
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        any_path = true;
        let joined = match item.strip_prefix('/') {
            Some(absolute) => absolute.to_string(),
            None => format!("{app_path}/{item}"),
        };
        let dir = normalize_path(&joined);
        if dir.is_empty()
            || changed.iter().any(|f| {
                f.strip_prefix(dir.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
        {
            return true;
        }
    }
    // An annotation naming no path at all limits nothing.
    !any_path
}

/// `a/./b/../c/` → `a/c`: the repository-relative form of a path (`..` above the root stops
/// at the root).
fn normalize_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// A repository URL reduced to `host/path`, lower case, without scheme, user, port, trailing
/// `/` or `.git`, so that the HTTPS, SSH and scp-like (`git@host:org/repo.git`) spellings of one
/// repository are equal.
///
/// This is deliberately not `capstan_source::RepoUrl::cache_key` (nor the credential lookup's
/// `capstan_controller::creds::template_prefix`, built on it): those identify a fetch endpoint,
/// where scheme, SSH user, non-default port, path case and the scp-like relative path
/// (`host:org/repo`, key `ssh://host/~/org/repo`) versus the absolute `ssh://host/org/repo` all
/// matter (they can reach different repositories, and credentials must not cross them). Here
/// the question is which repository a hosting service reported, under all its spellings: an
/// application following the SSH URL must hear about a push reported with the HTTPS URL, and
/// the services treat owner and repository names case-insensitively (as Argo CD's webhook
/// does). The rule must also be total: it reads any string, where `RepoUrl::parse` refuses
/// some and resolves a relative path against the working directory, which means nothing for a
/// push. (The server does not depend on capstan-source either: DESIGN.md's arrows.)
pub fn normalize_repo_url(url: &str) -> String {
    let url = url.trim();
    let (authority, path) = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/').unwrap_or((rest, "")),
        None => match url.split_once(':') {
            // scp-like syntax: the colon comes before any slash.
            Some((authority, path)) if !authority.contains('/') => (authority, path),
            _ => ("", url),
        },
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let path = path.trim_matches('/');
    let path = path
        .strip_suffix(".git")
        .unwrap_or(path)
        .trim_end_matches('/');
    format!("{}/{}", host.to_lowercase(), path.to_lowercase())
}

/// Whether a `targetRevision` reads like a semver constraint (`^1.2`, `~1`, `>=1.0 <2`, `1.x`,
/// `*`) rather than a tag or branch name.
fn is_semver_constraint(target: &str) -> bool {
    target.contains(['^', '~', '>', '<', '=', '*', '|'])
        || target
            .split(['.', ' ', '-'])
            .any(|part| part.eq_ignore_ascii_case("x"))
}

/// Whether a tag names a version (`v1.2.3`, `1.2`).
fn is_version_tag(tag: &str) -> bool {
    let t = tag.strip_prefix(['v', 'V']).unwrap_or(tag);
    t.starts_with(|c: char| c.is_ascii_digit())
}

/// Whether an application following `target_revision` must be refreshed for `push`:
/// - a branch push: the target is that branch (or `refs/heads/<branch>`), or `HEAD`/empty when
///   the branch is the default branch (or the payload does not name it: a needless refresh is
///   cheap, a missed one is not);
/// - a tag push: the target is that tag (or `refs/tags/<tag>`), or a semver constraint and the
///   tag names a version (the constraint may now resolve to it).
pub fn revision_matches(target_revision: &str, push: &Push) -> bool {
    let target = target_revision.trim();
    match &push.pushed {
        PushedRef::Branch(branch) => {
            target == branch
                || target.strip_prefix("refs/heads/") == Some(branch.as_str())
                || ((target.is_empty() || target == "HEAD")
                    && push.default_branch.as_ref().is_none_or(|d| d == branch))
        }
        PushedRef::Tag(tag) => {
            target == tag
                || target.strip_prefix("refs/tags/") == Some(tag.as_str())
                || (is_semver_constraint(target) && is_version_tag(tag))
        }
    }
}

/// The configured secret of `provider`, or why there is none.
async fn secret_of(state: &AppState, provider: Provider) -> Result<Vec<u8>, ApiError> {
    let namespace = &state.config.namespace;
    let name = &state.config.webhook_secret;
    let missing = || WebhookError::NoSecret {
        provider: provider.key(),
        namespace: namespace.clone(),
        secret: name.clone(),
    };
    let api: Api<Secret> = Api::namespaced(state.client.clone(), namespace);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|e| ApiError::kube(&format!("reading Secret {namespace}/{name}"), e))?
        .ok_or_else(missing)?;
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(provider.key()))
        .map(|v| v.0.clone());
    let from_string = || {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(provider.key()))
            .map(|v| v.clone().into_bytes())
    };
    let mut value = from_data.or_else(from_string).ok_or_else(missing)?;
    // `echo secret | kubectl create secret --from-file` leaves a newline that the hosting
    // service never includes in its secret.
    while value.last().is_some_and(u8::is_ascii_whitespace) {
        value.pop();
    }
    if value.is_empty() {
        return Err(missing().into());
    }
    Ok(value)
}

/// Sets the refresh annotation on `ns/name` (unless a hard refresh is already pending, which
/// covers a normal one) and returns the application for its audit Event.
async fn request_refresh(
    state: &AppState,
    ns: &str,
    name: &str,
    current: Option<&str>,
) -> Result<Application, kube::Error> {
    let api: Api<Application> = Api::namespaced(state.client.clone(), ns);
    if current == Some("hard") {
        return api.get(name).await;
    }
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {ann::REFRESH: "normal"}}})),
    )
    .await
}

/// What became of a delivery: the `result` label of `capstan_webhook_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A push refreshed at least one application.
    Refreshed,
    /// Verified, but nothing to refresh: a ping, another event, a push no application follows.
    Ignored,
    /// Refused for want of a valid signature or token (or of a configured secret).
    Unauthorized,
    /// Not a delivery Capstan understands: no provider header, a malformed payload.
    Invalid,
    /// Capstan failed: the secret could not be read or an application not refreshed.
    Error,
}

impl Outcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Refreshed => "refreshed",
            Outcome::Ignored => "ignored",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Invalid => "invalid",
            Outcome::Error => "error",
        }
    }
}

/// The handler of `POST /api/webhook`: handles the delivery and counts it by provider and
/// [`Outcome`].
pub(crate) async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (provider, outcome, response) = match Provider::detect(&headers) {
        None => (
            "unknown",
            Outcome::Invalid,
            Err(WebhookError::UnknownProvider.into()),
        ),
        Some((provider, event)) => match deliver(&state, provider, &event, &headers, &body).await {
            Ok((outcome, response)) => (provider.key(), outcome, Ok(response)),
            Err((outcome, e)) => (provider.key(), outcome, Err(e)),
        },
    };
    state
        .config
        .metrics
        .record_webhook(provider, outcome.label());
    response
}

/// Verifies, parses and acts on one delivery of `provider`.
async fn deliver(
    state: &AppState,
    provider: Provider,
    event: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Outcome, Response), (Outcome, ApiError)> {
    let secret = secret_of(state, provider).await.map_err(|e| {
        tracing::warn!(provider = provider.key(), reason = %e.message, "webhook refused");
        // A missing secret refuses the delivery; a failure to read it is ours.
        let outcome = if e.status == StatusCode::UNAUTHORIZED {
            Outcome::Unauthorized
        } else {
            Outcome::Error
        };
        (outcome, e)
    })?;
    verify(provider, headers, body, &secret).map_err(|e| {
        tracing::warn!(provider = provider.key(), reason = %e, "webhook refused");
        (Outcome::Unauthorized, e.into())
    })?;
    let push = match parse(provider, event, body).map_err(|e| (Outcome::Invalid, e.into()))? {
        Delivery::Ping => {
            let answer = json!({
                "provider": provider.key(), "event": event, "message": "pong", "refreshed": []
            });
            return Ok((Outcome::Ignored, Json(answer).into_response()));
        }
        Delivery::Ignored(why) => {
            let answer = json!({
                "provider": provider.key(), "event": event, "message": why, "refreshed": []
            });
            return Ok((Outcome::Ignored, Json(answer).into_response()));
        }
        Delivery::Push(push) => push,
    };
    let pushed: Vec<String> = push
        .repo_urls
        .iter()
        .map(|u| normalize_repo_url(u))
        .collect();
    // The cache holds every served application; its summaries carry repoURL and revision.
    let page = state.cache.list(&Filter::default(), usize::MAX, None);
    let changed = push.changed_files.as_deref();
    let matching: Vec<_> = page
        .items
        .iter()
        .filter(|a| pushed.contains(&normalize_repo_url(&a.repo_url)))
        .filter(|a| revision_matches(&a.target_revision, &push))
        // A push limited to some paths refreshes only the applications whose
        // manifest-generate-paths those paths touch.
        .filter_map(|a| {
            let app = state.cache.get(&a.namespace, &a.name);
            let annotations = app.as_ref().and_then(|x| x.metadata.annotations.as_ref());
            let limit = annotations.and_then(|m| {
                m.get(ann::MANIFEST_GENERATE_PATHS)
                    .or_else(|| m.get(ann::ARGOCD_MANIFEST_GENERATE_PATHS))
            });
            let path = app.as_ref().map_or("", |x| x.spec.source.path.as_str());
            paths_match(limit.map(String::as_str), path, changed).then(|| {
                let current = annotations.and_then(|m| m.get(ann::REFRESH).cloned());
                (a.namespace.clone(), a.name.clone(), current)
            })
        })
        .collect();
    let message = format!(
        "{} webhook: push to {} of {}",
        provider.key(),
        push.full_ref,
        push.repo_urls[0]
    );
    // Refreshes are independent requests to the API server: a bounded number at once, so a
    // push to a repository of many applications is not one round trip after another.
    let mut results: Vec<_> = futures::stream::iter(matching)
        .map(|(ns, name, current)| {
            let message = &message;
            async move {
                let result = match request_refresh(state, &ns, &name, current.as_deref()).await {
                    Ok(updated) => {
                        tracing::info!(application = %format!("{ns}/{name}"), "{message}");
                        crate::actions::audit(&state.client, &updated, AUDIT_REASON, message)
                            .await;
                        Ok(true)
                    }
                    // The application was deleted since the cache saw it: nothing to refresh.
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
                    Err(e) => {
                        tracing::error!(application = %format!("{ns}/{name}"), error = %e, "webhook refresh failed");
                        Err(e.to_string())
                    }
                };
                (name, result)
            }
        })
        .buffer_unordered(REFRESH_CONCURRENCY)
        .collect()
        .await;
    // Concurrent refreshes end in any order; the answer lists them (and the failures) in a
    // stable one.
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let mut refreshed = Vec::new();
    let mut failed = Vec::new();
    for (name, result) in results {
        match result {
            Ok(true) => refreshed.push(name),
            Ok(false) => {}
            Err(error) => failed.push(json!({"name": name, "error": error})),
        }
    }
    let refreshed_any = !refreshed.is_empty();
    let mut out = json!({
        "provider": provider.key(),
        "event": event,
        "ref": push.full_ref,
        "refreshed": refreshed,
    });
    if failed.is_empty() {
        let outcome = if refreshed_any {
            Outcome::Refreshed
        } else {
            Outcome::Ignored
        };
        Ok((outcome, Json(out).into_response()))
    } else {
        // Not 2xx, so the provider shows the delivery as failed and it can be redelivered;
        // refreshing twice is harmless.
        out["failed"] = Value::Array(failed);
        Ok((
            Outcome::Error,
            (StatusCode::BAD_GATEWAY, Json(out)).into_response(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 (short key) and 6 (key longer than the block).
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn urls_of_one_repository_normalise_alike() {
        let want = "github.com/acme/shop";
        for url in [
            "https://github.com/acme/shop.git",
            "https://GitHub.com/Acme/Shop/",
            "http://user:pw@github.com:443/acme/shop",
            "git@github.com:acme/shop.git",
            "ssh://git@github.com:22/acme/shop.git",
        ] {
            assert_eq!(normalize_repo_url(url), want, "{url}");
        }
        assert_ne!(normalize_repo_url("https://github.com/acme/shop-api"), want);
        assert_ne!(normalize_repo_url("https://gitlab.com/acme/shop"), want);
        assert_eq!(
            normalize_repo_url("git@gitlab.com:group/sub/proj.git"),
            normalize_repo_url("https://gitlab.com/group/sub/proj")
        );
        assert_eq!(
            normalize_repo_url("file:///tmp/repos/app.git"),
            normalize_repo_url("/tmp/repos/app")
        );
    }

    fn push(pushed: PushedRef, default_branch: Option<&str>) -> Push {
        Push {
            repo_urls: vec!["https://github.com/acme/shop".into()],
            pushed,
            default_branch: default_branch.map(String::from),
            full_ref: String::new(),
            changed_files: None,
        }
    }

    #[test]
    fn manifest_generate_paths_limit_a_push_to_the_apps_it_touches() {
        let files = vec![
            "apps/web/deploy.yaml".to_string(),
            "shared/base.yaml".to_string(),
        ];
        let changed = Some(files.as_slice());
        // No annotation, or no file list: every push concerns the app.
        assert!(paths_match(None, "apps/api", changed));
        assert!(paths_match(Some("."), "apps/api", None));
        // `.` is the app's own path; relative paths start there, `/` at the repository root.
        assert!(paths_match(Some("."), "apps/web", changed));
        assert!(!paths_match(Some("."), "apps/api", changed));
        assert!(paths_match(Some(".;../web"), "apps/api", changed));
        assert!(paths_match(Some("/shared"), "apps/api", changed));
        assert!(paths_match(Some("/shared/base.yaml"), "apps/api", changed));
        assert!(
            !paths_match(Some("/share"), "apps/api", changed),
            "a prefix of a name is no directory"
        );
        assert!(!paths_match(Some("/apps/api; /other"), "apps/web", changed));
        assert!(paths_match(Some("./"), "./apps/web/", changed));
        // The repository root covers everything.
        assert!(paths_match(Some("/"), "apps/api", changed));
        // An annotation that names no path limits nothing.
        assert!(paths_match(Some(" ; "), "apps/api", changed));
    }

    #[test]
    fn changed_files_are_read_from_every_commit() {
        let payload = json!({"commits": [
            {"added": ["a/new.yaml"], "modified": ["b/x.yaml"], "removed": []},
            {"added": [], "modified": ["b/x.yaml"], "removed": ["c/old.yaml"]},
            // Spelled otherwise, the same file: stored once, in the form paths_match compares.
            {"added": [], "modified": ["/b/./x.yaml", "c/../b/x.yaml"], "removed": ["."]},
        ]});
        assert_eq!(
            changed_files(&payload),
            Some(vec![
                "a/new.yaml".into(),
                "b/x.yaml".into(),
                "c/old.yaml".into()
            ])
        );
        assert_eq!(changed_files(&json!({"commits": []})), None);
        assert_eq!(changed_files(&json!({})), None);
    }

    #[test]
    fn revisions_follow_branches_default_branch_and_tags() {
        let main = push(PushedRef::Branch("main".into()), Some("main"));
        assert!(revision_matches("main", &main));
        assert!(revision_matches("refs/heads/main", &main));
        assert!(revision_matches("HEAD", &main));
        assert!(revision_matches("", &main));
        assert!(!revision_matches("release", &main));
        assert!(!revision_matches("v1.0.0", &main));
        let feature = push(PushedRef::Branch("feature".into()), Some("main"));
        assert!(!revision_matches("HEAD", &feature));
        assert!(revision_matches("feature", &feature));
        let unknown_default = push(PushedRef::Branch("feature".into()), None);
        assert!(revision_matches("HEAD", &unknown_default));
        let tag = push(PushedRef::Tag("v1.2.0".into()), Some("main"));
        assert!(revision_matches("v1.2.0", &tag));
        assert!(revision_matches("refs/tags/v1.2.0", &tag));
        assert!(revision_matches("^1.0", &tag));
        assert!(revision_matches("1.x", &tag));
        assert!(revision_matches(">=1.0.0 <2.0.0", &tag));
        assert!(!revision_matches("v1.1.0", &tag));
        assert!(!revision_matches("main", &tag));
        assert!(!revision_matches("HEAD", &tag));
        let named = push(PushedRef::Tag("nightly".into()), None);
        assert!(!revision_matches("^1.0", &named));
    }

    #[test]
    fn signatures_and_tokens_are_checked() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let sig = hex::encode(hmac_sha256(b"s3cret", body));
        let mut h = HeaderMap::new();
        h.insert(
            "x-hub-signature-256",
            HeaderValue::from_str(&format!("sha256={sig}")).unwrap(),
        );
        assert_eq!(verify(Provider::GitHub, &h, body, b"s3cret"), Ok(()));
        assert!(matches!(
            verify(Provider::GitHub, &h, body, b"other"),
            Err(WebhookError::BadSignature { .. })
        ));
        assert!(matches!(
            verify(Provider::GitHub, &h, b"tampered", b"s3cret"),
            Err(WebhookError::BadSignature { .. })
        ));
        // Gitea's header is the bare hex.
        assert!(matches!(
            verify(Provider::Gitea, &h, body, b"s3cret"),
            Err(WebhookError::Unsigned { .. })
        ));
        h.insert("x-gitea-signature", HeaderValue::from_str(&sig).unwrap());
        assert_eq!(verify(Provider::Gitea, &h, body, b"s3cret"), Ok(()));
        h.insert("x-gitlab-token", HeaderValue::from_static("s3cret"));
        assert_eq!(verify(Provider::GitLab, &h, body, b"s3cret"), Ok(()));
        assert!(verify(Provider::GitLab, &h, body, b"s3cret2").is_err());
        assert!(verify(Provider::GitLab, &h, body, b"s3cre").is_err());
    }

    #[test]
    fn gitea_is_told_apart_from_github() {
        let mut h = HeaderMap::new();
        h.insert("x-github-event", HeaderValue::from_static("push"));
        assert_eq!(
            Provider::detect(&h),
            Some((Provider::GitHub, "push".into()))
        );
        h.insert("x-gitea-event", HeaderValue::from_static("push"));
        assert_eq!(Provider::detect(&h), Some((Provider::Gitea, "push".into())));
        assert_eq!(Provider::detect(&HeaderMap::new()), None);
    }

    #[test]
    fn payloads_are_read_per_provider() {
        let gitlab = json!({
            "ref": "refs/tags/v2.0.0",
            "project": {"web_url": "https://gitlab.example/g/p", "git_http_url": "https://gitlab.example/g/p.git",
                        "git_ssh_url": "git@gitlab.example:g/p.git", "default_branch": "trunk"}
        });
        let Delivery::Push(p) = parse(
            Provider::GitLab,
            "Tag Push Hook",
            gitlab.to_string().as_bytes(),
        )
        .unwrap() else {
            panic!("a tag push");
        };
        assert_eq!(p.pushed, PushedRef::Tag("v2.0.0".into()));
        assert_eq!(p.repo_urls.len(), 3);
        assert_eq!(p.default_branch.as_deref(), Some("trunk"));
        assert!(matches!(
            parse(Provider::GitLab, "Merge Request Hook", b"{}"),
            Ok(Delivery::Ignored(_))
        ));
        assert_eq!(parse(Provider::GitHub, "ping", b"{}"), Ok(Delivery::Ping));
        let e = parse(Provider::GitHub, "push", b"{\"ref\": 1}").unwrap_err();
        assert!(e.to_string().contains("`ref`"), "{e}");
        let e = parse(
            Provider::Gitea,
            "push",
            br#"{"ref":"refs/heads/x","repository":{}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("html_url"), "{e}");
        let e = parse(Provider::GitHub, "push", b"{not json").unwrap_err();
        assert!(e.to_string().contains("JSON"), "{e}");
    }
}
