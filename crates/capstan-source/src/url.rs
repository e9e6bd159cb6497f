//! Repository URLs: parsed, stripped of credentials, normalised into a cache key.

use std::{ffi::OsStr, fmt, hash::Hash, os::unix::ffi::OsStrExt, path::PathBuf, str::FromStr};

use sha2::{Digest, Sha256};

use crate::{SourceError, secret::Secret};

/// The transport a [`RepoUrl`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// A local path or `file://` URL (served by a local `git upload-pack`).
    File,
    /// `git://` (the unauthenticated git daemon protocol).
    Git,
    /// `http://`.
    Http,
    /// `https://`.
    Https,
    /// `ssh://` or scp-like `user@host:path`.
    Ssh,
}

/// A parsed, normalised repository URL.
///
/// Accepted forms: an absolute or relative local path, `file://`, `git://`, `http(s)://`,
/// `ssh://` and scp-like `user@host:path`. A relative path is made absolute against the current
/// directory when parsed. A user name and password embedded in an http(s) URL are taken out of
/// the URL and kept as a [`Secret`]; they are used when a call passes [`Credentials::None`](crate::Credentials::None).
///
/// `Display` (and every error message) shows the URL without any password. Two URLs that differ
/// only in the case of scheme or host, a default port, a trailing `/` or `.git` share one cache
/// entry (equality and hashing use that normalised key).
#[derive(Clone)]
pub struct RepoUrl {
    scheme: Scheme,
    /// The URL handed to gix: never contains a password (nor an http user name).
    connect: gix::Url,
    display: String,
    key: String,
    embedded: Option<(String, Secret)>,
}

impl RepoUrl {
    /// Parse and normalise `input`. Errors name the input (without a password) and the reason.
    pub fn parse(input: &str) -> Result<RepoUrl, SourceError> {
        let trimmed = input.trim();
        let invalid = |reason: String| SourceError::InvalidUrl {
            url: redact(trimmed),
            reason,
        };
        if trimmed.is_empty() {
            return Err(invalid("the URL is empty".into()));
        }
        if trimmed.chars().any(|c| c.is_control()) {
            return Err(invalid("the URL contains control characters".into()));
        }
        // gix keeps an upper-case scheme as an unknown helper protocol; schemes are case-insensitive.
        let lowered;
        let trimmed = match trimmed.find("://") {
            Some(i) if trimmed[..i].bytes().any(|b| b.is_ascii_uppercase()) => {
                lowered = format!("{}{}", trimmed[..i].to_ascii_lowercase(), &trimmed[i..]);
                lowered.as_str()
            }
            _ => trimmed,
        };
        let mut url = gix::url::parse(trimmed).map_err(|e| invalid(e.to_string()))?;
        let scheme = match &url.scheme {
            gix::url::Scheme::File => Scheme::File,
            gix::url::Scheme::Git => Scheme::Git,
            gix::url::Scheme::Http => Scheme::Http,
            gix::url::Scheme::Https => Scheme::Https,
            gix::url::Scheme::Ssh => Scheme::Ssh,
            other => return Err(invalid(format!("unsupported scheme {other:?}"))),
        };
        let mut embedded = None;
        match scheme {
            Scheme::File => {
                if url.host().is_some() || url.user().is_some() || url.port.is_some() {
                    return Err(invalid(
                        "a file URL cannot name a host, user or port (use file:///absolute/path)"
                            .into(),
                    ));
                }
                let path = PathBuf::from(OsStr::from_bytes(url.path.as_slice()));
                if path.as_os_str().is_empty() {
                    return Err(invalid("the path is empty".into()));
                }
                let abs = std::path::absolute(&path)
                    .map_err(|e| invalid(format!("cannot make the path absolute: {e}")))?;
                url.path = abs.as_os_str().as_bytes().into();
                url.serialize_alternative_form = false;
            }
            Scheme::Git | Scheme::Http | Scheme::Https | Scheme::Ssh => {
                if url.host().is_none_or(str::is_empty) {
                    return Err(invalid("the URL names no host".into()));
                }
                if url.path.is_empty() || url.path.as_slice() == b"/" {
                    return Err(invalid("the URL names no repository path".into()));
                }
            }
        }
        match scheme {
            Scheme::Http | Scheme::Https => {
                let user = url.set_user(None);
                let password = url.set_password(None);
                if let (Some(user), Some(password)) = (user, password) {
                    embedded = Some((
                        percent_decode(&user),
                        Secret::new(percent_decode(&password)),
                    ));
                }
            }
            Scheme::Ssh | Scheme::Git => {
                if url.password().is_some() {
                    return Err(invalid(format!(
                        "a password in a {} URL is not supported; pass credentials instead",
                        if scheme == Scheme::Ssh { "ssh" } else { "git" }
                    )));
                }
            }
            Scheme::File => {}
        }
        let display = url.to_bstring().to_string();
        let key = normalise(&url, scheme);
        Ok(RepoUrl {
            scheme,
            connect: url,
            display,
            key,
            embedded,
        })
    }

    /// The transport this URL uses.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The normalised key that identifies the repository in the cache (no credentials).
    ///
    /// It names a fetch endpoint, so it keeps apart what can reach a different repository or
    /// need different credentials: the scheme, an SSH user, a non-default port, the case of the
    /// path, and an scp-like path relative to the login directory (`ssh://host/~/org/repo`)
    /// from an absolute one. The webhook's `normalize_repo_url` in capstan-server is a
    /// different rule on purpose: it asks which hosting-service repository a push names, across
    /// the HTTPS and SSH spellings and case-insensitively, and must accept any string.
    pub fn cache_key(&self) -> &str {
        &self.key
    }

    /// The cache directory name: the hex SHA-256 of [`cache_key`](Self::cache_key), so it never
    /// depends on credentials and never needs escaping.
    pub fn dir_name(&self) -> String {
        let digest = Sha256::digest(self.key.as_bytes());
        hex::encode(&digest[..16])
    }

    /// Whether the URL as written carried a password (`https://user:password@host/…`): it is
    /// used for the fetch but never shown, and must not be copied anywhere it could be read.
    pub fn has_embedded_password(&self) -> bool {
        self.embedded.is_some()
    }

    /// For a local repository, its absolute path.
    pub fn local_path(&self) -> Option<PathBuf> {
        (self.scheme == Scheme::File)
            .then(|| PathBuf::from(OsStr::from_bytes(self.connect.path.as_slice())))
    }

    pub(crate) fn gix_url(&self) -> &gix::Url {
        &self.connect
    }

    pub(crate) fn embedded_credentials(&self) -> Option<&(String, Secret)> {
        self.embedded.as_ref()
    }
}

impl FromStr for RepoUrl {
    type Err = SourceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RepoUrl::parse(s)
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl fmt::Debug for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoUrl({:?})", self.display)
    }
}

impl PartialEq for RepoUrl {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for RepoUrl {}

impl Hash for RepoUrl {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

/// The key that makes `HTTPS://Example.com:443/org/repo.git/` and `https://example.com/org/repo`
/// one repository: lower-case scheme and host, no default port, no trailing `/` or `.git`.
fn normalise(url: &gix::Url, scheme: Scheme) -> String {
    let path = url.path.to_string();
    let mut path = path.trim_end_matches('/');
    if let Some(stripped) = path.strip_suffix(".git") {
        path = stripped;
    }
    let path = path.trim_end_matches('/');
    let (name, default_port) = match scheme {
        Scheme::File => return format!("file://{path}"),
        Scheme::Git => ("git", 9418),
        Scheme::Http => ("http", 80),
        Scheme::Https => ("https", 443),
        Scheme::Ssh => ("ssh", 22),
    };
    let host = url.host().unwrap_or_default().to_ascii_lowercase();
    let port = match url.port {
        Some(p) if p != default_port => format!(":{p}"),
        _ => String::new(),
    };
    let user = match (scheme, url.user()) {
        (Scheme::Ssh, Some(u)) => format!("{u}@"),
        _ => String::new(),
    };
    // scp-like paths are relative to the login directory ("host:org/repo"); keep that distinct
    // from the absolute "ssh://host/org/repo".
    let sep = if path.starts_with('/') { "" } else { "/~/" };
    format!("{name}://{user}{host}{port}{sep}{path}")
}

/// Remove a password from a URL-ish string for error messages, without parsing it.
fn redact(input: &str) -> String {
    if let Some(scheme_end) = input.find("://") {
        let rest = &input[scheme_end + 3..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            return format!("{}://{}{}", &input[..scheme_end], masked, &rest[at..]);
        }
    }
    input.to_owned()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_of_one_https_repository_share_a_key() {
        let a = RepoUrl::parse("https://Example.COM/org/repo.git").unwrap();
        let b = RepoUrl::parse("HTTPS://example.com:443/org/repo/").unwrap();
        let c = RepoUrl::parse("https://example.com/org/repo").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.dir_name(), c.dir_name());
        assert_eq!(a.cache_key(), "https://example.com/org/repo");
        assert_ne!(
            a,
            RepoUrl::parse("https://example.com:8443/org/repo").unwrap()
        );
        assert_ne!(a, RepoUrl::parse("http://example.com/org/repo").unwrap());
    }

    #[test]
    fn credentials_are_taken_out_of_http_urls() {
        let u = RepoUrl::parse("https://bob:s%40cret@git.example.com/team/app.git").unwrap();
        let shown = u.to_string();
        assert!(!shown.contains("cret"), "{shown}");
        assert!(!shown.contains("bob"), "{shown}");
        assert!(!format!("{u:?}").contains("cret"));
        assert!(!u.gix_url().to_bstring().to_string().contains("cret"));
        let (user, pw) = u.embedded_credentials().unwrap();
        assert_eq!(user, "bob");
        assert_eq!(pw.expose(), "s@cret");
        assert_eq!(
            u,
            RepoUrl::parse("https://git.example.com/team/app").unwrap()
        );
    }

    #[test]
    fn ssh_and_scp_like_urls() {
        let scp = RepoUrl::parse("git@github.com:org/repo.git").unwrap();
        assert_eq!(scp.scheme(), Scheme::Ssh);
        assert_eq!(scp.cache_key(), "ssh://git@github.com/~/org/repo");
        let ssh = RepoUrl::parse("ssh://git@GitHub.com:22/org/repo.git").unwrap();
        assert_eq!(ssh.scheme(), Scheme::Ssh);
        assert_eq!(ssh.cache_key(), "ssh://git@github.com/org/repo");
        let port = RepoUrl::parse("ssh://git@host:2222/srv/repo").unwrap();
        assert_eq!(port.cache_key(), "ssh://git@host:2222/srv/repo");
        let err = RepoUrl::parse("ssh://git:pw@host/repo")
            .unwrap_err()
            .to_string();
        assert!(err.contains("password"), "{err}");
        assert!(!err.contains("pw@"), "{err}");
    }

    #[test]
    fn local_paths_and_file_urls_are_one_repository() {
        let dir = std::env::temp_dir();
        let p = RepoUrl::parse(dir.join("repo").to_str().unwrap()).unwrap();
        let f = RepoUrl::parse(&format!("file://{}", dir.join("repo").display())).unwrap();
        assert_eq!(p.scheme(), Scheme::File);
        assert_eq!(p, f);
        assert_eq!(p.local_path().unwrap(), dir.join("repo"));
        let rel = RepoUrl::parse("some/relative/repo").unwrap();
        assert!(rel.local_path().unwrap().is_absolute());
        assert!(RepoUrl::parse("git://example.com/project.git").is_ok());
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for (input, needle) in [
            ("", "empty"),
            ("https://", "invalid repository URL"),
            ("https://example.com/", "no repository path"),
            ("foo://example.com/x", "invalid repository URL"),
            ("https://exa mple.com/x\n", "invalid repository URL"),
        ] {
            let err = RepoUrl::parse(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
        let err = RepoUrl::parse("ftp://u:topsecret@host/x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("topsecret"), "{err}");
    }
}
