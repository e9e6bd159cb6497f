//! The unauthenticated git:// protocol, served by a real `git daemon`.

use crate::support;

use std::{
    io::Read,
    process::{Child, Command, Stdio},
};

use capstan_source::{Credentials, RepoCache, RepoUrl, Scheme};
use support::Repo;

/// Kills the daemon this test started when the test ends, passed or failed.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn git_protocol_repositories_resolve_and_refresh() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(&tmp.path().join("served/app"));
    let first = repo.commit(&[("a.yaml", "kind: ConfigMap\n")], "one");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The daemon binary itself: `git daemon` would run it as a child that outlives a kill.
    let exec_path = support::git(tmp.path(), &["--exec-path"]);
    let mut child = Command::new(std::path::Path::new(&exec_path).join("git-daemon"))
        .args([
            "--export-all",
            "--reuseaddr",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={}", tmp.path().join("served").display()),
            "--informative-errors",
            "--verbose",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The daemon says "Ready to rumble" on stderr once it listens.
    let mut stderr = child.stderr.take().unwrap();
    let _daemon = Daemon(child);
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("Ready to rumble") {
        let n = stderr.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "git daemon exited: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    // Keep draining its log so the daemon never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));

    let url = RepoUrl::parse(&format!("git://127.0.0.1:{port}/app")).unwrap();
    assert_eq!(url.scheme(), Scheme::Git);
    let cache = RepoCache::new(tmp.path().join("cache")).unwrap();
    let r = cache.resolve(&url, &Credentials::None, "main").unwrap();
    assert_eq!((r.commit.as_str(), r.fetched), (first.as_str(), true));
    assert!(
        !cache
            .resolve(&url, &Credentials::None, "main")
            .unwrap()
            .fetched
    );
    let second = repo.commit(&[("b.yaml", "kind: Secret\n")], "two");
    let r = cache.resolve(&url, &Credentials::None, "HEAD").unwrap();
    assert_eq!((r.commit.as_str(), r.fetched), (second.as_str(), true));
    let tree = cache.materialize(&url, &second).unwrap();
    assert_eq!(
        std::fs::read_to_string(tree.root.join("b.yaml")).unwrap(),
        "kind: Secret\n"
    );
}
