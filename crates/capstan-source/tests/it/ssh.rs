//! SSH URLs through a stand-in `ssh` program: it records the arguments gix passes (and the key
//! file as it exists during the operation), then runs the remote command locally, so the whole
//! gix ssh transport is exercised without an sshd.

use crate::support;

use std::{os::unix::fs::PermissionsExt, path::Path};

use capstan_source::{Credentials, RepoCache, RepoUrl, Secret, SourceError};
use support::Repo;

const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END OPENSSH PRIVATE KEY-----";

/// A fake `ssh`: logs its arguments one per line to `<log>.args`, the key's mode and content to
/// `<log>.key`, then runs the remote command (the words after the host) with `sh -c`, as sshd
/// would.
fn fake_ssh(dir: &Path) -> std::path::PathBuf {
    let log = dir.join("ssh-log");
    let script = dir.join("fake-ssh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
log='{log}'
printf '%s\n' "$@" > "$log.args"
prev=""
for a in "$@"; do
  if [ "$prev" = "-i" ]; then stat -c '%a' "$a" > "$log.key"; cat "$a" >> "$log.key"; echo "$a" > "$log.keypath"; fi
  prev="$a"
done
# Like ssh: skip options, take the host, join the rest into the remote command.
while [ $# -gt 0 ]; do
  case "$1" in
    -i|-o) shift 2 ;;
    -p*) shift ;;
    *) break ;;
  esac
done
shift
exec sh -c "$*"
"#,
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn ssh_runs_with_a_private_temporary_key_and_strict_host_checking() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(&tmp.path().join("origin"));
    let head = repo.commit(&[("a.yaml", "kind: ConfigMap\n")], "one");
    let cache_dir = tmp.path().join("cache");
    let cache = RepoCache::new(&cache_dir)
        .unwrap()
        .with_ssh_program(fake_ssh(tmp.path()));
    let url = RepoUrl::parse(&format!(
        "ssh://git@git.example.invalid:2222{}",
        repo.path.display()
    ))
    .unwrap();
    let creds = Credentials::Ssh {
        private_key: Secret::new(KEY),
        known_hosts: Some(
            "[git.example.invalid]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey".into(),
        ),
        accept_new_hosts: false,
    };
    let r = cache.resolve(&url, &creds, "main").unwrap();
    assert_eq!(r.commit, head);
    assert!(r.fetched);

    let args = std::fs::read_to_string(tmp.path().join("ssh-log.args")).unwrap();
    let args: Vec<&str> = args.lines().collect();
    for expected in [
        "-i",
        "IdentitiesOnly=yes",
        "BatchMode=yes",
        "StrictHostKeyChecking=yes",
        "-p2222",
        "git@git.example.invalid",
    ] {
        assert!(args.contains(&expected), "{expected} missing in {args:?}");
    }
    let hosts_arg = args
        .iter()
        .find_map(|a| a.strip_prefix("UserKnownHostsFile="))
        .expect("known hosts option");
    assert!(!Path::new(hosts_arg).starts_with(&cache_dir), "{hosts_arg}");
    assert!(args.contains(&"git-upload-pack"), "{args:?}");

    let key_log = std::fs::read_to_string(tmp.path().join("ssh-log.key")).unwrap();
    assert!(
        key_log.starts_with("600\n"),
        "key mode during the operation: {key_log}"
    );
    assert!(
        key_log.contains("c2VjcmV0LWtleS1tYXRlcmlhbA=="),
        "{key_log}"
    );
    let key_path = std::fs::read_to_string(tmp.path().join("ssh-log.keypath")).unwrap();
    assert!(
        !Path::new(key_path.trim()).exists(),
        "the key file is deleted afterwards"
    );
    assert!(!Path::new(key_path.trim()).starts_with(&cache_dir));
    assert!(
        !Path::new(hosts_arg).exists(),
        "the known_hosts copy is deleted afterwards"
    );

    // Nothing of the key in the cache.
    let out = std::process::Command::new("grep")
        .args([
            "-r",
            "-l",
            "c2VjcmV0LWtleS1tYXRlcmlhbA==",
            cache_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Asking to accept new hosts switches the policy and pins keys in the cache's file.
    let accept = Credentials::Ssh {
        private_key: Secret::new(KEY),
        known_hosts: None,
        accept_new_hosts: true,
    };
    let again = cache.resolve(&url, &accept, "main").unwrap();
    assert!(!again.fetched);
    let args = std::fs::read_to_string(tmp.path().join("ssh-log.args")).unwrap();
    assert!(args.contains("StrictHostKeyChecking=accept-new"), "{args}");
    let pinned = cache_dir.join("ssh_known_hosts");
    assert!(
        args.contains(&format!("UserKnownHostsFile={}", pinned.display())),
        "{args}"
    );
}

#[test]
fn scp_like_urls_use_ssh_and_wrong_credentials_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(&tmp.path().join("origin"));
    let head = repo.commit(&[("a.yaml", "x: 1\n")], "one");
    let cache = RepoCache::new(tmp.path().join("cache"))
        .unwrap()
        .with_ssh_program(fake_ssh(tmp.path()));
    let url = RepoUrl::parse(&format!("git@host.invalid:{}", repo.path.display())).unwrap();
    let creds = Credentials::Ssh {
        private_key: Secret::new(KEY),
        known_hosts: None,
        accept_new_hosts: false,
    };
    assert_eq!(cache.resolve(&url, &creds, "HEAD").unwrap().commit, head);
    let args = std::fs::read_to_string(tmp.path().join("ssh-log.args")).unwrap();
    assert!(args.lines().any(|l| l == "git@host.invalid"), "{args}");

    let err = cache
        .resolve(
            &url,
            &Credentials::Basic {
                username: "u".into(),
                password: Secret::new("p"),
            },
            "HEAD",
        )
        .unwrap_err();
    assert!(matches!(err, SourceError::Authentication { .. }), "{err}");
}
