//! SSH through the `ssh` program: a private key in a 0600 temporary file that lives only as long
//! as one operation, and strict host key checking.

use std::{ffi::OsString, io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use crate::secret::Secret;

/// The temporary files of one SSH operation and the command line gix runs. Dropping it deletes
/// the key (the temporary directory is removed with everything in it).
pub(crate) struct SshSession {
    /// Held for its `Drop`, which deletes the key.
    #[cfg_attr(not(test), allow(dead_code))]
    dir: tempfile::TempDir,
    /// The ssh command gix starts (through `sh -c`), its arguments quoted.
    pub command: OsString,
}

impl SshSession {
    /// Where the private key lives while this session exists.
    #[cfg(test)]
    pub fn key_path(&self) -> std::path::PathBuf {
        self.dir.path().join("id")
    }
}

/// Write `private_key` (and `known_hosts`, if given) into a fresh private temporary directory
/// outside the cache, and build the command: `program -i KEY -o IdentitiesOnly=yes
/// -o BatchMode=yes -o UserKnownHostsFile=… -o StrictHostKeyChecking=yes|accept-new`.
///
/// Without `known_hosts`, `cache_known_hosts` (a file in the cache holding public host keys
/// only) is used, so hosts accepted with `accept_new` stay pinned across operations.
pub(crate) fn prepare(
    program: &Path,
    private_key: &Secret,
    known_hosts: Option<&str>,
    accept_new: bool,
    cache_known_hosts: &Path,
) -> std::io::Result<SshSession> {
    let dir = tempfile::Builder::new().prefix("capstan-ssh-").tempdir()?;
    let key_path = dir.path().join("id");
    write_private(&key_path, private_key.expose())?;
    let hosts_path = match known_hosts {
        Some(lines) => {
            let p = dir.path().join("known_hosts");
            write_private(&p, lines)?;
            p
        }
        None => cache_known_hosts.to_path_buf(),
    };
    let command = command_line(program, &key_path, &hosts_path, accept_new);
    Ok(SshSession { dir, command })
}

/// Creates `path` (which must not exist yet) readable by its owner only, holding `text` with
/// its last line terminated: OpenSSH refuses a key whose last line is not.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        file.write_all(b"\n")?;
    }
    file.sync_all()
}

/// The command line, each word single-quoted for the shell gix runs it through.
pub(crate) fn command_line(
    program: &Path,
    key: &Path,
    known_hosts: &Path,
    accept_new: bool,
) -> OsString {
    let strict = if accept_new { "accept-new" } else { "yes" };
    let words = [
        program.display().to_string(),
        "-i".into(),
        key.display().to_string(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o".into(),
        format!("StrictHostKeyChecking={strict}"),
    ]
    .into_iter()
    .chain(liveness());
    let quoted: Vec<String> = words.map(|w| shell_quote(&w)).collect();
    quoted.join(" ").into()
}

/// The command line for an ssh URL without a key: the user's agent or default keys, still with
/// strict host key checking against the cache's `ssh_known_hosts` and no prompts.
pub(crate) fn command_line_without_key(program: &Path, known_hosts: &Path) -> OsString {
    let words = [
        program.display().to_string(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
    ]
    .into_iter()
    .chain(liveness());
    let quoted: Vec<String> = words.map(|w| shell_quote(&w)).collect();
    quoted.join(" ").into()
}

/// Give up on an unreachable or silent server instead of holding the repository's lock forever.
fn liveness() -> [String; 6] {
    [
        "-o".into(),
        "ConnectTimeout=30".into(),
        "-o".into(),
        "ServerAliveInterval=15".into(),
        "-o".into(),
        "ServerAliveCountMax=4".into(),
    ]
}

fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_file_is_private_and_removed_after_use() {
        let cache = tempfile::tempdir().unwrap();
        let session = prepare(
            Path::new("ssh"),
            &Secret::new(
                "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----",
            ),
            Some("example.com ssh-ed25519 AAAA"),
            false,
            &cache.path().join("ssh_known_hosts"),
        )
        .unwrap();
        let key = session.key_path();
        let meta = std::fs::metadata(&key).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(
            std::fs::read_to_string(&key)
                .unwrap()
                .ends_with("KEY-----\n")
        );
        assert!(
            !key.starts_with(cache.path()),
            "the key must not be written into the cache"
        );
        let cmd = session.command.to_string_lossy().into_owned();
        assert!(cmd.starts_with("'ssh' '-i' '"), "{cmd}");
        assert!(cmd.contains("'StrictHostKeyChecking=yes'"), "{cmd}");
        assert!(cmd.contains("'IdentitiesOnly=yes'"), "{cmd}");
        assert!(!cmd.contains("BEGIN"), "{cmd}");
        let hosts = session.dir.path().join("known_hosts");
        assert_eq!(
            std::fs::read_to_string(hosts).unwrap(),
            "example.com ssh-ed25519 AAAA\n"
        );
        drop(session);
        assert!(
            !key.exists(),
            "the key file must be deleted after the operation"
        );
    }

    #[test]
    fn accept_new_uses_the_cache_known_hosts() {
        let cmd = command_line(
            Path::new("/usr/bin/ssh"),
            Path::new("/tmp/k"),
            Path::new("/var/cache/it's/ssh_known_hosts"),
            true,
        );
        let cmd = cmd.to_string_lossy();
        assert!(cmd.contains("'StrictHostKeyChecking=accept-new'"), "{cmd}");
        assert!(
            cmd.contains(r"'UserKnownHostsFile=/var/cache/it'\''s/ssh_known_hosts'"),
            "{cmd}"
        );
    }
}
