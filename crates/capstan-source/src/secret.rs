//! Secret values and repository credentials.

use std::fmt;

/// A secret string (password, token, private key). `Debug` and `Display` print `***`, so a secret
/// cannot leak through logging, error messages or `{:?}` of a containing struct. The value is only
/// reachable through [`Secret::expose`], which makes every use greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself; call only where it is handed to the transport.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How to authenticate against a repository.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Credentials {
    /// Anonymous access (credentials embedded in an http(s) URL are still used, see [`RepoUrl`](crate::RepoUrl)).
    #[default]
    None,
    /// HTTP basic authentication.
    Basic {
        /// The user name.
        username: String,
        /// The password (or a personal access token used as password).
        password: Secret,
    },
    /// A token for HTTP(S). It is sent as basic authentication with the user name
    /// `x-access-token` and the token as password, which GitHub, GitLab, Gitea and Bitbucket
    /// Cloud accept.
    Token(Secret),
    /// SSH with a private key (OpenSSH format), through the `ssh` program.
    Ssh {
        /// The private key, written to a 0600 temporary file for the duration of one operation.
        private_key: Secret,
        /// `known_hosts` lines trusted for this repository. When `None`, the cache's own
        /// `ssh_known_hosts` file is used (filled only when `accept_new_hosts` is set).
        known_hosts: Option<String>,
        /// Trust a host key seen for the first time (`StrictHostKeyChecking=accept-new`) and
        /// remember it in the cache's `ssh_known_hosts`; a changed key is still refused.
        accept_new_hosts: bool,
    },
}

/// The user name that carries a [`Credentials::Token`] over HTTP basic authentication.
pub(crate) const TOKEN_USERNAME: &str = "x-access-token";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let creds = Credentials::Basic {
            username: "alice".into(),
            password: Secret::new("hunter2"),
        };
        let debug = format!("{creds:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("alice"), "{debug}");
        assert_eq!(Secret::new("hunter2").to_string(), "***");
        let ssh = Credentials::Ssh {
            private_key: Secret::new("-----BEGIN KEY-----abc"),
            known_hosts: None,
            accept_new_hosts: false,
        };
        assert!(!format!("{ssh:?}").contains("BEGIN"));
    }
}
