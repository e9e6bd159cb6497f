//! Repositories over HTTP: `git http-backend` behind a test server with basic auth.

use crate::support;

use std::path::Path;

use capstan_source::{Credentials, ProtocolVersion, RepoCache, RepoUrl, Secret, SourceError};
use support::{GitHttpServer, Repo};

const USER: &str = "deployer";
const PASSWORD: &str = "pw-Zq8v1xK3-never-on-disk";

struct Setup {
    tmp: tempfile::TempDir,
    repo: Repo,
    server: GitHttpServer,
}

fn setup(auth: Option<(&str, &str)>) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(&tmp.path().join("served/app"));
    repo.commit(&[("deploy.yaml", "kind: Deployment\n")], "first");
    repo.git(&["tag", "-a", "v1.0.0", "-m", "one"]);
    let server = GitHttpServer::start(&tmp.path().join("served"), auth);
    Setup { tmp, repo, server }
}

fn basic() -> Credentials {
    Credentials::Basic {
        username: USER.into(),
        password: Secret::new(PASSWORD),
    }
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(path.display().to_string());
                }
            }
        }
    }
    hits
}

#[test]
fn anonymous_access_is_refused_when_auth_is_required() {
    let s = setup(Some((USER, PASSWORD)));
    let cache = RepoCache::new(s.tmp.path().join("cache")).unwrap();
    let url = RepoUrl::parse(&s.server.url("app")).unwrap();
    let err = cache.resolve(&url, &Credentials::None, "main").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SourceError::Authentication { .. }), "{msg}");
    assert!(msg.contains(&s.server.url("app")), "{msg}");
    assert!(
        s.server.log().iter().any(|r| r.status == 401),
        "{:?}",
        s.server.log()
    );

    let wrong = Credentials::Basic {
        username: USER.into(),
        password: Secret::new("wrong-password-123"),
    };
    let err = cache.resolve(&url, &wrong, "main").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SourceError::Authentication { .. }), "{msg}");
    assert!(!msg.contains("wrong-password-123"), "{msg}");
    assert_eq!(cache.stats().fetches, 0);
}

#[test]
fn basic_auth_fetches_and_the_password_never_reaches_the_cache() {
    let s = setup(Some((USER, PASSWORD)));
    let cache_dir = s.tmp.path().join("cache");
    let cache = RepoCache::new(&cache_dir).unwrap();
    let url = RepoUrl::parse(&s.server.url("app")).unwrap();

    let r = cache.resolve(&url, &basic(), "main").unwrap();
    assert!(r.fetched);
    assert_eq!(r.commit, s.repo.head());
    let tag = cache.resolve(&url, &basic(), "v1.0.0").unwrap();
    assert_eq!(tag.commit, s.repo.head());
    let tree = cache.materialize(&url, &r.commit).unwrap();
    assert_eq!(
        std::fs::read_to_string(tree.root.join("deploy.yaml")).unwrap(),
        "kind: Deployment\n"
    );

    // Credentials embedded in the URL work too, and are taken out of it.
    let embedded = RepoUrl::parse(&format!(
        "http://{USER}:{PASSWORD}@127.0.0.1:{}/app/",
        s.server.port
    ))
    .unwrap();
    assert_eq!(embedded, url, "same repository, same cache entry");
    assert!(!embedded.to_string().contains(PASSWORD));
    let again = cache
        .resolve(&embedded, &Credentials::None, "main")
        .unwrap();
    assert_eq!(again.commit, r.commit);

    let new = s.repo.commit(&[("svc.yaml", "kind: Service\n")], "second");
    let moved = cache.resolve(&url, &basic(), "main").unwrap();
    assert!(moved.fetched);
    assert_eq!(moved.commit, new);

    let hits = files_containing(&cache_dir, PASSWORD.as_bytes());
    assert!(hits.is_empty(), "password found in {hits:?}");
    // The test would notice: the needle is findable where it does exist.
    assert!(!files_containing(s.tmp.path(), b"kind: Service").is_empty());
}

#[test]
fn token_is_sent_as_basic_auth() {
    let s = setup(Some(("x-access-token", "tok-abc123")));
    let cache = RepoCache::new(s.tmp.path().join("cache")).unwrap();
    let url = RepoUrl::parse(&s.server.url("app")).unwrap();
    let r = cache
        .resolve(&url, &Credentials::Token(Secret::new("tok-abc123")), "HEAD")
        .unwrap();
    assert_eq!(r.commit, s.repo.head());
    assert!(files_containing(&s.tmp.path().join("cache"), b"tok-abc123").is_empty());
}

#[test]
fn unchanged_refresh_is_one_round_trip_and_no_fetch() {
    let s = setup(Some((USER, PASSWORD)));
    let url = RepoUrl::parse(&s.server.url("app")).unwrap();
    for (version, round_trips) in [(ProtocolVersion::V1, 1), (ProtocolVersion::V2, 2)] {
        let cache = RepoCache::new(s.tmp.path().join(format!("cache-{version:?}")))
            .unwrap()
            .with_protocol(version);
        assert!(cache.resolve(&url, &basic(), "main").unwrap().fetched);
        let before = s.server.requests();
        let r = cache.resolve(&url, &basic(), "main").unwrap();
        assert!(!r.fetched);
        let log = s.server.log();
        assert_eq!(
            s.server.requests() - before,
            round_trips,
            "{version:?}: {:?}",
            &log[log.len() - (s.server.requests() - before)..]
        );
        assert!(
            log.iter().rev().take(round_trips).all(|r| r.status == 200),
            "{log:?}"
        );
        assert_eq!(cache.stats().fetches, 1);
    }
}

#[test]
fn unreachable_and_missing_repositories_say_so() {
    let s = setup(None);
    let cache = RepoCache::new(s.tmp.path().join("cache")).unwrap();
    let missing = RepoUrl::parse(&s.server.url("nope")).unwrap();
    let err = cache
        .resolve(&missing, &Credentials::None, "main")
        .unwrap_err()
        .to_string();
    assert!(err.contains(&s.server.url("nope")), "{err}");

    // Nothing listens on this port once the listener is dropped.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = RepoUrl::parse(&format!("http://127.0.0.1:{port}/app")).unwrap();
    let err = cache
        .resolve(&down, &Credentials::None, "main")
        .unwrap_err();
    assert!(matches!(err, SourceError::Fetch { .. }), "{err}");

    let anonymous = RepoUrl::parse(&s.server.url("app")).unwrap();
    let r = cache
        .resolve(&anonymous, &Credentials::None, "main")
        .unwrap();
    assert_eq!(r.commit, s.repo.head());
    let err = cache
        .resolve(
            &anonymous,
            &Credentials::Ssh {
                private_key: Secret::new("k"),
                known_hosts: None,
                accept_new_hosts: false,
            },
            "main",
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("ssh credentials cannot be used"), "{err}");
}

#[test]
fn applications_refreshing_together_share_one_fetch() {
    let s = setup(Some((USER, PASSWORD)));
    let cache = std::sync::Arc::new(RepoCache::new(s.tmp.path().join("cache")).unwrap());
    let url = RepoUrl::parse(&s.server.url("app")).unwrap();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(3));
    let handles: Vec<_> = ["main", "v1.0.0", ""]
        .into_iter()
        .map(|rev| {
            let (cache, barrier, url) = (cache.clone(), barrier.clone(), url.clone());
            std::thread::spawn(move || {
                barrier.wait();
                cache.resolve(&url, &basic(), rev)
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().unwrap().commit, s.repo.head());
    }
    assert_eq!(cache.stats().fetches, 1);
    let posts = s.server.log().iter().filter(|r| r.method == "POST").count();
    assert_eq!(posts, 1, "one pack negotiation: {:?}", s.server.log());
}
