//! Repository credentials from Kubernetes Secrets in the controller's namespace.
//!
//! Two kinds of Secret are read, told apart by the label `capstan.dev/secret-type`:
//! - `repository`: the credentials of one repository, whose `url` key is compared with an
//!   Application's `repoURL` after normalisation (scheme and host case, default port, trailing
//!   `/` and `.git` do not matter);
//! - `repo-creds`: a credential template, used for every repository whose normalised URL starts
//!   with the template's `url` at a path boundary (`https://git.example.com/team` matches
//!   `https://git.example.com/team/app` but not `https://git.example.com/teammates`).
//!
//! Lookup takes the repository Secret first; a repository Secret that carries no credentials
//! (only `url`) falls through to the templates, as in Argo CD; among templates the longest
//! matching prefix wins.
//!
//! Keys, the same as Argo CD's: `url`, `username` + `password` (basic authentication; a
//! `password` without `username` is sent as a token), `token` (sent as basic authentication with
//! the user `x-access-token`), `sshPrivateKey` (ssh URLs only), `sshKnownHosts` (the trusted
//! `known_hosts` lines; when absent, the key `ssh_known_hosts` of the ConfigMap
//! [`KNOWN_HOSTS_CONFIGMAP`] in the same namespace) and `insecureIgnoreHostKey: "true"`.
//! Capstan honours the latter more strictly than Argo CD: a host key seen for the first time is
//! trusted and remembered (`StrictHostKeyChecking=accept-new`), a changed key is still refused.
//!
//! The Secrets are held in a reflector (one watch, filtered by the label), started on the first
//! lookup. Secret values never leave this module except inside [`capstan_source::Secret`], whose
//! `Debug`/`Display` print `***`; errors name the Secret and the key, never a value.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use capstan_source::{Credentials, RepoUrl, Scheme};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

/// The label that marks a Secret as repository credentials (and says which kind).
pub const SECRET_TYPE_LABEL: &str = "capstan.dev/secret-type";
/// [`SECRET_TYPE_LABEL`] value of the credentials of one repository.
pub const TYPE_REPOSITORY: &str = "repository";
/// [`SECRET_TYPE_LABEL`] value of a credential template matched by URL prefix.
pub const TYPE_REPO_CREDS: &str = "repo-creds";
/// The ConfigMap whose `ssh_known_hosts` key lists trusted SSH host keys, for Secrets without
/// an `sshKnownHosts` key.
pub const KNOWN_HOSTS_CONFIGMAP: &str = "capstan-ssh-known-hosts";
/// The key of [`KNOWN_HOSTS_CONFIGMAP`] that holds `known_hosts` lines.
pub const KNOWN_HOSTS_KEY: &str = "ssh_known_hosts";

/// How long a lookup waits for the first list of Secrets (a controller just started).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why credentials could not be found.
#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    /// The Secrets could not be listed in time (the watch keeps retrying in the background).
    #[error(
        "the repository credential Secrets of namespace {namespace} are not loaded (cannot list Secrets labelled {SECRET_TYPE_LABEL})"
    )]
    NotReady {
        /// The controller's namespace.
        namespace: String,
    },
    /// A Secret is malformed. The message names the Secret and key, never a value.
    #[error("Secret {namespace}/{name}: {reason}")]
    Invalid {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading the known-hosts ConfigMap failed.
    #[error("reading ConfigMap {namespace}/{KNOWN_HOSTS_CONFIGMAP}: {source}")]
    KnownHosts {
        /// The controller's namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Repository credentials held in Secrets, looked up by repository URL.
pub struct CredStore {
    client: kube::Client,
    namespace: String,
    started: OnceLock<(Store<Secret>, tokio::task::JoinHandle<()>)>,
}

impl CredStore {
    /// A store of the credential Secrets in `namespace` (the controller's own namespace). Nothing
    /// is read until the first lookup.
    pub fn new(client: kube::Client, namespace: impl Into<String>) -> Self {
        CredStore {
            client,
            namespace: namespace.into(),
            started: OnceLock::new(),
        }
    }

    /// The namespace whose Secrets are read.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Starts the reflector on first use. Must run inside a Tokio runtime.
    fn store(&self) -> &Store<Secret> {
        let (store, _) = self.started.get_or_init(|| {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
            let config = watcher::Config::default().labels(&format!(
                "{SECRET_TYPE_LABEL} in ({TYPE_REPOSITORY},{TYPE_REPO_CREDS})"
            ));
            let (reader, writer) = reflector::store();
            let namespace = self.namespace.clone();
            let task = tokio::spawn(async move {
                reflector::reflector(writer, watcher(api, config))
                    .default_backoff()
                    .for_each(|event| {
                        if let Err(e) = event {
                            // kube errors carry no object bodies, so no Secret value here.
                            tracing::warn!(%namespace, error = %e, "watching repository credential Secrets");
                        }
                        futures::future::ready(())
                    })
                    .await;
            });
            (reader, task)
        });
        store
    }

    /// The credentials for `url`: the `repository` Secret of that URL, else the longest
    /// matching `repo-creds` template, else [`Credentials::None`]. Local (`file://`) repositories
    /// never need credentials and are answered without reading Secrets.
    pub async fn credentials_for(&self, url: &RepoUrl) -> Result<Credentials, CredsError> {
        if url.scheme() == Scheme::File {
            return Ok(Credentials::None);
        }
        let store = self.store();
        match tokio::time::timeout(READY_TIMEOUT, store.wait_until_ready()).await {
            Ok(Ok(())) => {}
            _ => {
                return Err(CredsError::NotReady {
                    namespace: self.namespace.clone(),
                });
            }
        }
        let secrets = store.state();
        match select(&secrets, url) {
            Some(secret) => self.credentials_from(secret, url).await,
            None => Ok(Credentials::None),
        }
    }

    async fn credentials_from(
        &self,
        secret: &Secret,
        url: &RepoUrl,
    ) -> Result<Credentials, CredsError> {
        let fields = Fields::of(secret)?;
        let parsed = fields.parse(url)?;
        match parsed {
            Parsed::Ready(creds) => Ok(creds),
            Parsed::SshNeedsKnownHosts {
                private_key,
                accept_new_hosts,
            } => {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
                let cm = api.get_opt(KNOWN_HOSTS_CONFIGMAP).await.map_err(|source| {
                    CredsError::KnownHosts {
                        namespace: self.namespace.clone(),
                        source,
                    }
                })?;
                let known_hosts = cm
                    .and_then(|c| c.data)
                    .and_then(|mut d| d.remove(KNOWN_HOSTS_KEY))
                    .filter(|s| !s.trim().is_empty());
                Ok(Credentials::Ssh {
                    private_key,
                    known_hosts,
                    accept_new_hosts,
                })
            }
        }
    }
}

impl Drop for CredStore {
    fn drop(&mut self) {
        if let Some((_, task)) = self.started.get() {
            task.abort();
        }
    }
}

/// The normalised prefix of a credential template URL, comparable with
/// [`RepoUrl::cache_key`]. A template URL names an organisation or a host rather than a
/// repository, which [`RepoUrl::parse`] refuses, so a path component is added for parsing and
/// taken off again.
///
/// Credentials follow the fetch endpoint, so this keeps the cache key's distinctions (scheme,
/// SSH user, port, path case): a token for `https://host/team` must not be offered to
/// `ssh://host/team/app` or `https://host/Team`. The webhook's `normalize_repo_url` in
/// capstan-server folds all of those on purpose, because it only asks which repository a push
/// names; the two are different rules, not one written twice.
pub fn template_prefix(template_url: &str) -> Option<String> {
    let trimmed = template_url.trim().trim_end_matches('/');
    let sep = if trimmed.ends_with(':') { "" } else { "/" };
    let probe = format!("{trimmed}{sep}capstan-probe");
    let parsed = RepoUrl::parse(&probe).ok()?;
    // A local path is not a prefix of remote repositories (and needs no credentials).
    if parsed.scheme() == Scheme::File {
        return None;
    }
    let key = parsed.cache_key().to_string();
    key.strip_suffix("/capstan-probe").map(str::to_string)
}

/// Whether `key` lies under `prefix` at a path boundary.
fn under_prefix(key: &str, prefix: &str) -> bool {
    match key.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
        None => false,
    }
}

fn label(secret: &Secret) -> Option<&str> {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SECRET_TYPE_LABEL))
        .map(String::as_str)
}

/// Picks the Secret for `url` (see the module documentation for the order).
fn select<'a>(secrets: &'a [Arc<Secret>], url: &RepoUrl) -> Option<&'a Secret> {
    let key = url.cache_key();
    let mut sorted: Vec<&Secret> = secrets.iter().map(Arc::as_ref).collect();
    // Deterministic when two Secrets claim the same URL: the first by name wins.
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let exact = sorted.iter().copied().find(|s| {
        label(s) == Some(TYPE_REPOSITORY)
            && raw(s, "url")
                .and_then(|u| RepoUrl::parse(&u).ok())
                .is_some_and(|u| u.cache_key() == key)
    });
    if let Some(secret) = exact
        && Fields::of(secret).is_ok_and(|f| f.has_credentials())
    {
        return Some(secret);
    }
    // An exact Secret that is malformed must still report its error rather than be skipped.
    if let Some(secret) = exact
        && Fields::of(secret).is_err()
    {
        return Some(secret);
    }
    sorted
        .iter()
        .copied()
        .filter(|s| label(s) == Some(TYPE_REPO_CREDS))
        .filter_map(|s| {
            let prefix = template_prefix(&raw(s, "url")?)?;
            under_prefix(key, &prefix).then_some((prefix.len(), s))
        })
        // max_by_key keeps the last of equals; iterate reversed so the first by name wins.
        .rev()
        .max_by_key(|(len, _)| *len)
        .map(|(_, s)| s)
        .or(exact)
}

/// A key of the Secret as text, `None` when absent or not UTF-8 (validated in [`Fields::of`]).
fn raw(secret: &Secret, key: &str) -> Option<String> {
    if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return String::from_utf8(bytes.0.clone()).ok();
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .cloned()
}

/// The credential keys of one Secret.
struct Fields {
    namespace: String,
    name: String,
    username: Option<String>,
    password: Option<capstan_source::Secret>,
    token: Option<capstan_source::Secret>,
    ssh_private_key: Option<capstan_source::Secret>,
    ssh_known_hosts: Option<String>,
    insecure_ignore_host_key: bool,
}

enum Parsed {
    Ready(Credentials),
    SshNeedsKnownHosts {
        private_key: capstan_source::Secret,
        accept_new_hosts: bool,
    },
}

impl Fields {
    fn of(secret: &Secret) -> Result<Fields, CredsError> {
        let namespace = secret.metadata.namespace.clone().unwrap_or_default();
        let name = secret.metadata.name.clone().unwrap_or_default();
        let invalid = |reason: String| CredsError::Invalid {
            namespace: namespace.clone(),
            name: name.clone(),
            reason,
        };
        let get = |key: &str| -> Result<Option<String>, CredsError> {
            if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) {
                return String::from_utf8(bytes.0.clone())
                    .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_string()))
                    .map_err(|_| invalid(format!("key {key} is not UTF-8 text")));
            }
            Ok(secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string()))
        };
        let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
        let insecure = match non_empty(get("insecureIgnoreHostKey")?).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(invalid(
                    "key insecureIgnoreHostKey must be \"true\" or \"false\"".into(),
                ));
            }
        };
        // A private key must keep its final newline: OpenSSH refuses a key without it.
        let ssh_private_key = non_empty(get("sshPrivateKey")?).map(|mut k| {
            k.push('\n');
            capstan_source::Secret::new(k)
        });
        Ok(Fields {
            username: non_empty(get("username")?),
            password: non_empty(get("password")?).map(capstan_source::Secret::new),
            token: non_empty(get("token")?).map(capstan_source::Secret::new),
            ssh_private_key,
            ssh_known_hosts: non_empty(get("sshKnownHosts")?),
            insecure_ignore_host_key: insecure,
            namespace,
            name,
        })
    }

    fn has_credentials(&self) -> bool {
        self.password.is_some() || self.token.is_some() || self.ssh_private_key.is_some()
    }

    fn invalid(&self, reason: impl Into<String>) -> CredsError {
        CredsError::Invalid {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            reason: reason.into(),
        }
    }

    fn parse(self, url: &RepoUrl) -> Result<Parsed, CredsError> {
        if url.scheme() == Scheme::Ssh {
            let Some(private_key) = self.ssh_private_key else {
                if self.has_credentials() {
                    return Err(self.invalid(format!(
                        "{url} is an ssh URL but the Secret has no sshPrivateKey (username/password and token are for http(s))"
                    )));
                }
                return Ok(Parsed::Ready(Credentials::None));
            };
            return Ok(match self.ssh_known_hosts {
                Some(known_hosts) => Parsed::Ready(Credentials::Ssh {
                    private_key,
                    known_hosts: Some(known_hosts),
                    accept_new_hosts: self.insecure_ignore_host_key,
                }),
                None => Parsed::SshNeedsKnownHosts {
                    private_key,
                    accept_new_hosts: self.insecure_ignore_host_key,
                },
            });
        }
        if self.ssh_private_key.is_some() && self.password.is_none() && self.token.is_none() {
            return Err(self.invalid(format!(
                "the Secret has an sshPrivateKey but {url} is not an ssh URL"
            )));
        }
        if let Some(token) = self.token {
            return Ok(Parsed::Ready(Credentials::Token(token)));
        }
        match (self.username, self.password) {
            (Some(username), Some(password)) => {
                Ok(Parsed::Ready(Credentials::Basic { username, password }))
            }
            // Argo CD's convention for access tokens: the password key alone.
            (None, Some(password)) => Ok(Parsed::Ready(Credentials::Token(password))),
            (Some(_), None) => Err(CredsError::Invalid {
                namespace: self.namespace,
                name: self.name,
                reason: "key username is set but password is missing".into(),
            }),
            (None, None) => Ok(Parsed::Ready(Credentials::None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(name: &str, kind: &str, pairs: &[(&str, &str)]) -> Arc<Secret> {
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some("capstan".into());
        s.metadata.labels = Some([(SECRET_TYPE_LABEL.to_string(), kind.to_string())].into());
        s.data = Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        );
        Arc::new(s)
    }

    fn url(u: &str) -> RepoUrl {
        RepoUrl::parse(u).unwrap()
    }

    fn pick<'a>(secrets: &'a [Arc<Secret>], u: &str) -> Option<&'a str> {
        select(secrets, &url(u)).and_then(|s| s.metadata.name.as_deref())
    }

    #[test]
    fn template_prefixes_are_normalised() {
        assert_eq!(
            template_prefix("HTTPS://Git.Example.com:443/Team/").as_deref(),
            Some("https://git.example.com/Team")
        );
        assert_eq!(
            template_prefix("https://git.example.com").as_deref(),
            Some("https://git.example.com")
        );
        assert_eq!(
            template_prefix("git@github.com:org").as_deref(),
            Some("ssh://git@github.com/~/org")
        );
        assert_eq!(template_prefix("not a url at all"), None);
    }

    #[test]
    fn exact_repository_wins_then_longest_template_at_a_path_boundary() {
        let secrets = vec![
            secret(
                "host",
                TYPE_REPO_CREDS,
                &[("url", "https://git.example.com")],
            ),
            secret(
                "team",
                TYPE_REPO_CREDS,
                &[("url", "https://git.example.com/team/"), ("password", "t")],
            ),
            secret(
                "app",
                TYPE_REPOSITORY,
                &[
                    ("url", "https://GIT.example.com/team/app.git"),
                    ("password", "a"),
                ],
            ),
            secret(
                "bare",
                TYPE_REPOSITORY,
                &[("url", "https://git.example.com/team/bare")],
            ),
        ];
        assert_eq!(
            pick(&secrets, "https://git.example.com/team/app"),
            Some("app")
        );
        assert_eq!(
            pick(&secrets, "https://git.example.com/team/other"),
            Some("team")
        );
        // No credentials in the repository Secret: the template supplies them.
        assert_eq!(
            pick(&secrets, "https://git.example.com/team/bare"),
            Some("team")
        );
        // "team" is not a prefix of "teammates" at a path boundary.
        assert_eq!(
            pick(&secrets, "https://git.example.com/teammates/x"),
            Some("host")
        );
        assert_eq!(pick(&secrets, "https://other.example.com/team/app"), None);
    }

    #[test]
    fn keys_map_to_credentials_without_showing_values() {
        let https = url("https://git.example.com/team/app");
        let parse = |pairs: &[(&str, &str)], u: &RepoUrl| {
            Fields::of(&secret("s", TYPE_REPOSITORY, pairs)).and_then(|f| f.parse(u))
        };
        match parse(&[("username", "bob"), ("password", "pw-1\n")], &https) {
            Ok(Parsed::Ready(Credentials::Basic { username, password })) => {
                assert_eq!(username, "bob");
                assert_eq!(password.expose(), "pw-1");
            }
            _ => panic!("basic expected"),
        }
        for pairs in [&[("token", "tk")][..], &[("password", "tk")][..]] {
            match parse(pairs, &https) {
                Ok(Parsed::Ready(Credentials::Token(t))) => assert_eq!(t.expose(), "tk"),
                _ => panic!("token expected for {pairs:?}"),
            }
        }
        let ssh = url("git@git.example.com:team/app.git");
        match parse(
            &[
                ("sshPrivateKey", "KEY"),
                ("sshKnownHosts", "git.example.com ssh-ed25519 AAAA"),
                ("insecureIgnoreHostKey", "true"),
            ],
            &ssh,
        ) {
            Ok(Parsed::Ready(Credentials::Ssh {
                private_key,
                known_hosts,
                accept_new_hosts,
            })) => {
                assert_eq!(private_key.expose(), "KEY\n");
                assert_eq!(
                    known_hosts.as_deref(),
                    Some("git.example.com ssh-ed25519 AAAA")
                );
                assert!(accept_new_hosts);
            }
            _ => panic!("ssh expected"),
        }
        assert!(matches!(
            parse(&[("sshPrivateKey", "KEY")], &ssh),
            Ok(Parsed::SshNeedsKnownHosts { .. })
        ));
        let err = parse(&[("password", "hunter2-secret")], &ssh)
            .err()
            .expect("password on ssh is refused")
            .to_string();
        assert!(
            err.contains("Secret capstan/s") && err.contains("sshPrivateKey"),
            "{err}"
        );
        assert!(!err.contains("hunter2-secret"), "{err}");
        let err = parse(&[("username", "bob")], &https)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("password is missing"), "{err}");
        let err = parse(&[("insecureIgnoreHostKey", "yes")], &ssh)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("insecureIgnoreHostKey"), "{err}");
    }
}
