//! Resolution, change detection, coalescing and materialization against real repositories on
//! disk (served by a local `git upload-pack`, as for any file path or file:// URL).

use crate::support;

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::Path,
    sync::{Arc, Barrier},
};

use capstan_source::{Credentials, RepoCache, RepoUrl, RevisionKind, SourceError};
use support::{Repo, git};

struct Fixture {
    _tmp: tempfile::TempDir,
    repo: Repo,
    url: RepoUrl,
    cache: RepoCache,
    /// Commits by name.
    c: BTreeMap<&'static str, String>,
}

/// main: c1 (tags `light`, annotated `v1.0.0`) - c2 (annotated `v1.2.0`, branch `feature`)
///       - c3 (`v1.9.0`) - c4 (`v2.0.0-rc.1`, HEAD)
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(&tmp.path().join("origin"));
    let mut c = BTreeMap::new();
    c.insert(
        "c1",
        repo.commit(&[("app/deploy.yaml", "kind: Deployment\n")], "c1"),
    );
    repo.git(&["tag", "light"]);
    repo.git(&["tag", "-a", "v1.0.0", "-m", "release 1.0.0"]);
    c.insert(
        "c2",
        repo.commit(&[("app/svc.yaml", "kind: Service\n")], "c2"),
    );
    repo.git(&["tag", "-a", "v1.2.0", "-m", "release 1.2.0"]);
    repo.git(&["branch", "feature"]);
    c.insert(
        "c3",
        repo.commit(&[("app/cm.yaml", "kind: ConfigMap\n")], "c3"),
    );
    repo.git(&["tag", "v1.9.0"]);
    c.insert("c4", repo.commit(&[("README.md", "hello\n")], "c4"));
    repo.git(&["tag", "v2.0.0-rc.1"]);
    let url = RepoUrl::parse(repo.path.to_str().unwrap()).unwrap();
    let cache = RepoCache::new(tmp.path().join("cache")).unwrap();
    Fixture {
        _tmp: tmp,
        repo,
        url,
        cache,
        c,
    }
}

#[test]
fn revisions_of_every_kind_resolve_to_commits() {
    let f = fixture();
    let none = Credentials::None;
    let check = |rev: &str, commit: &str, kind: RevisionKind, revision: &str| {
        let r = f
            .cache
            .resolve(&f.url, &none, rev)
            .unwrap_or_else(|e| panic!("{rev:?}: {e}"));
        assert_eq!(r.commit, f.c[commit], "{rev:?}");
        assert_eq!(r.kind, kind, "{rev:?}");
        assert_eq!(r.revision, revision, "{rev:?}");
    };
    check("main", "c4", RevisionKind::Branch, "refs/heads/main");
    check("feature", "c2", RevisionKind::Branch, "refs/heads/feature");
    check(
        "refs/heads/feature",
        "c2",
        RevisionKind::Branch,
        "refs/heads/feature",
    );
    check("light", "c1", RevisionKind::Tag, "refs/tags/light");
    // Annotated tags are peeled to the commit, not the tag object.
    check("v1.0.0", "c1", RevisionKind::Tag, "refs/tags/v1.0.0");
    let tag_object = f.repo.git(&["rev-parse", "v1.0.0"]);
    assert_ne!(
        tag_object, f.c["c1"],
        "the fixture must really have an annotated tag"
    );
    check("v1.2.0", "c2", RevisionKind::Tag, "refs/tags/v1.2.0");
    check("", "c4", RevisionKind::Head, "refs/heads/main");
    check("HEAD", "c4", RevisionKind::Head, "refs/heads/main");
    check(&f.c["c2"], "c2", RevisionKind::Commit, &f.c["c2"]);
    check(
        &f.c["c2"].to_uppercase(),
        "c2",
        RevisionKind::Commit,
        &f.c["c2"],
    );
    check(&f.c["c3"][..8], "c3", RevisionKind::Commit, &f.c["c3"]);
    check(">=1.2.0 <2", "c3", RevisionKind::Semver, "refs/tags/v1.9.0");
    check("1.x", "c3", RevisionKind::Semver, "refs/tags/v1.9.0");
    check("~1.2", "c2", RevisionKind::Semver, "refs/tags/v1.2.0");
    check("<1.2", "c1", RevisionKind::Semver, "refs/tags/v1.0.0");
    // Pre-releases only when the constraint names one.
    check("*", "c3", RevisionKind::Semver, "refs/tags/v1.9.0");
    check(
        ">=2.0.0-rc.0",
        "c4",
        RevisionKind::Semver,
        "refs/tags/v2.0.0-rc.1",
    );
}

#[test]
fn unchanged_repository_is_not_fetched_again_and_a_new_commit_is() {
    let f = fixture();
    let first = f.cache.resolve(&f.url, &Credentials::None, "main").unwrap();
    assert!(first.fetched);
    assert_eq!(f.cache.stats().fetches, 1);

    let second = f.cache.resolve(&f.url, &Credentials::None, "main").unwrap();
    assert!(!second.fetched, "no new commit: no fetch");
    assert_eq!(second.commit, first.commit);
    let stats = f.cache.stats();
    assert_eq!((stats.remote_checks, stats.fetches), (2, 1));

    // Another revision of the same repository reuses the same object store.
    let tag = f
        .cache
        .resolve(&f.url, &Credentials::None, "v1.2.0")
        .unwrap();
    assert!(!tag.fetched);

    let c5 = f.repo.commit(&[("app/new.yaml", "kind: Secret\n")], "c5");
    let third = f.cache.resolve(&f.url, &Credentials::None, "main").unwrap();
    assert!(third.fetched, "a new commit is fetched");
    assert_eq!(third.commit, c5);
    assert_eq!(f.cache.stats().fetches, 2);

    // A moved tag (force-updated) is seen too.
    f.repo.git(&["tag", "-f", "light", &c5]);
    let light = f
        .cache
        .resolve(&f.url, &Credentials::None, "light")
        .unwrap();
    assert_eq!(light.commit, c5);
    assert!(
        !light.fetched,
        "the objects were already there; only the ref moved"
    );

    // A deleted branch is gone, even though the cache still has its objects.
    f.repo.git(&["branch", "-D", "feature"]);
    let err = f
        .cache
        .resolve(&f.url, &Credentials::None, "feature")
        .unwrap_err();
    assert!(matches!(err, SourceError::RevisionNotFound { .. }), "{err}");
}

#[test]
fn a_check_begun_since_the_given_moment_is_reused_and_an_older_one_is_not() {
    let f = fixture();
    let asked = std::time::Instant::now();
    let first = f.cache.resolve(&f.url, &Credentials::None, "main").unwrap();
    let checks = f.cache.stats().remote_checks;

    // A commit lands after the check: callers content with Git as of `asked` get the refs that
    // check saw, without asking the remote again, for any revision.
    let c5 = f.repo.commit(&[("app/new.yaml", "kind: Secret\n")], "c5");
    let reused = f
        .cache
        .resolve_since(&f.url, &Credentials::None, "main", asked)
        .unwrap();
    assert_eq!(reused.commit, first.commit);
    let tag = f
        .cache
        .resolve_since(&f.url, &Credentials::None, "v1.2.0", asked)
        .unwrap();
    assert_eq!(tag.commit, f.c["c2"]);
    assert_eq!(f.cache.stats().remote_checks, checks, "no new ref listing");

    // A caller asking for Git as of now gets the new commit.
    let now = f
        .cache
        .resolve_since(
            &f.url,
            &Credentials::None,
            "main",
            std::time::Instant::now(),
        )
        .unwrap();
    assert_eq!(now.commit, c5);
    assert_eq!(f.cache.stats().remote_checks, checks + 1);
}

#[test]
fn a_known_commit_id_needs_no_network() {
    let f = fixture();
    f.cache.resolve(&f.url, &Credentials::None, "main").unwrap();
    let before = f.cache.stats().remote_checks;
    let r = f
        .cache
        .resolve(&f.url, &Credentials::None, &f.c["c1"])
        .unwrap();
    assert_eq!(r.commit, f.c["c1"]);
    assert_eq!(
        f.cache.stats().remote_checks,
        before,
        "a commit id is immutable"
    );
}

#[test]
fn concurrent_resolves_of_one_repository_share_one_fetch() {
    let f = fixture();
    let cache = Arc::new(f.cache);
    let threads = 4;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (cache, barrier) = (Arc::clone(&cache), Arc::clone(&barrier));
            // Each "application" spells the URL its own way; they are one repository.
            let url = if i % 2 == 0 {
                f.url.clone()
            } else {
                RepoUrl::parse(&format!("file://{}/", f.repo.path.display())).unwrap()
            };
            std::thread::spawn(move || {
                barrier.wait();
                cache.resolve(&url, &Credentials::None, "main")
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert!(results.iter().all(|r| r.commit == f.c["c4"]));
    assert_eq!(
        results.iter().filter(|r| r.fetched).count(),
        1,
        "{results:?}"
    );
    assert_eq!(cache.stats().fetches, 1);
    let repos = std::fs::read_dir(cache.dir().join("repos"))
        .unwrap()
        .count();
    assert_eq!(repos, 1, "one object store for one repository");
}

/// (path → (mode bits, content or link target)) of a directory, `.git` excluded.
fn snapshot(root: &Path) -> BTreeMap<String, (u32, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == ".git" {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, (0, format!("-> {target}")));
            } else if meta.is_dir() {
                out.insert(rel.clone(), (mode, "<dir>".into()));
                walk(root, &path, out);
            } else {
                out.insert(rel, (mode, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn materialized_tree_is_read_only_identical_and_written_once() {
    let f = fixture();
    let script = f.repo.path.join("bin/render.sh");
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("app/deploy.yaml", f.repo.path.join("inside")).unwrap();
    std::os::unix::fs::symlink("../app/svc.yaml", f.repo.path.join("app/up")).unwrap();
    std::os::unix::fs::symlink("../../../etc/passwd", f.repo.path.join("app/evil")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", f.repo.path.join("abs")).unwrap();
    // Through a link to the root's parent directory: lexically harmless, physically outside.
    std::os::unix::fs::symlink("..", f.repo.path.join("app/root")).unwrap();
    std::os::unix::fs::symlink("root/..", f.repo.path.join("app/sneaky")).unwrap();
    let commit = f.repo.commit(&[], "files of every mode");

    let r = f.cache.resolve(&f.url, &Credentials::None, "main").unwrap();
    assert_eq!(r.commit, commit);
    let tree = f.cache.materialize(&f.url, &r.commit).unwrap();
    assert_eq!(tree.tree_id, f.repo.git(&["rev-parse", "HEAD^{tree}"]));
    assert_eq!(tree.root, f.cache.dir().join("trees").join(&tree.tree_id));
    assert_eq!(tree.skipped_symlinks, vec!["abs", "app/evil", "app/sneaky"]);

    let got = snapshot(&tree.root);
    let mut want = snapshot(&f.repo.path);
    for skipped in &tree.skipped_symlinks {
        want.remove(skipped);
    }
    // Same paths, same content, same link targets.
    let strip = |m: &BTreeMap<String, (u32, String)>| -> BTreeMap<String, String> {
        m.iter().map(|(k, (_, v))| (k.clone(), v.clone())).collect()
    };
    assert_eq!(strip(&got), strip(&want));
    // Read-only modes, executable bit kept.
    assert_eq!(got["app/deploy.yaml"].0, 0o444);
    assert_eq!(got["bin/render.sh"].0, 0o555);
    assert_eq!(got["app"].0, 0o555);
    assert_eq!(
        std::fs::metadata(&tree.root).unwrap().permissions().mode() & 0o777,
        0o555
    );
    assert_eq!(
        std::fs::read_to_string(tree.root.join("inside")).unwrap(),
        "kind: Deployment\n"
    );
    assert_eq!(
        std::fs::read_to_string(tree.root.join("app/up")).unwrap(),
        "kind: Service\n"
    );

    // Written once: again, and from a second commit with the same tree, it is shared.
    let again = f.cache.materialize(&f.url, &r.commit).unwrap();
    assert_eq!(again, tree);
    let same_tree = f.repo.commit(&[], "empty commit, same tree");
    f.cache.resolve(&f.url, &Credentials::None, "main").unwrap();
    let shared = f.cache.materialize(&f.url, &same_tree).unwrap();
    assert_eq!(shared, tree);
    assert_eq!(f.cache.stats().trees_written, 1);

    // A restarted process (new cache over the same directory) finds the tree and its record.
    let restarted = RepoCache::new(f.cache.dir()).unwrap();
    assert_eq!(restarted.materialize(&f.url, &same_tree).unwrap(), tree);
    assert_eq!(restarted.stats().trees_written, 0);

    let leftovers: Vec<_> = std::fs::read_dir(f.cache.dir().join("trees"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn path_tree_ids_follow_git() {
    let f = fixture();
    f.cache.resolve(&f.url, &Credentials::None, "main").unwrap();
    let c3 = &f.c["c3"];
    let app = f.cache.path_tree_id(&f.url, c3, "app").unwrap();
    assert_eq!(
        app.as_deref(),
        Some(f.repo.git(&["rev-parse", &format!("{c3}:app")]).as_str())
    );
    let app_slash = f.cache.path_tree_id(&f.url, c3, "./app/").unwrap();
    assert_eq!(app_slash, app);
    let root = f.cache.path_tree_id(&f.url, c3, "").unwrap();
    assert_eq!(
        root.as_deref(),
        Some(
            f.repo
                .git(&["rev-parse", &format!("{c3}^{{tree}}")])
                .as_str()
        )
    );
    // Unchanged directory between commits: same id (what the manifest cache keys on).
    let c4 = &f.c["c4"];
    assert_eq!(f.cache.path_tree_id(&f.url, c4, "app").unwrap(), app);
    assert_eq!(
        f.cache.path_tree_id(&f.url, c3, "missing/dir").unwrap(),
        None
    );
    let err = f
        .cache
        .path_tree_id(&f.url, c3, "app/../..")
        .unwrap_err()
        .to_string();
    assert!(err.contains("'..'"), "{err}");
    let err = f
        .cache
        .path_tree_id(&f.url, c3, "/etc")
        .unwrap_err()
        .to_string();
    assert!(err.contains("relative"), "{err}");
}

#[test]
fn bad_input_gives_clear_errors() {
    let f = fixture();
    let err = f
        .cache
        .resolve(&f.url, &Credentials::None, "no-such-branch")
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SourceError::RevisionNotFound { .. }), "{msg}");
    assert!(
        msg.contains("\"no-such-branch\"") && msg.contains(&f.url.to_string()),
        "{msg}"
    );

    let err = f
        .cache
        .resolve(&f.url, &Credentials::None, ">=7")
        .unwrap_err()
        .to_string();
    assert!(err.contains("semver"), "{err}");

    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let err = f
        .cache
        .resolve(&f.url, &Credentials::None, unknown)
        .unwrap_err();
    assert!(matches!(err, SourceError::RevisionNotFound { .. }), "{err}");

    let err = f
        .cache
        .materialize(&f.url, unknown)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(unknown) && err.contains("not in the cache"),
        "{err}"
    );
    let err = f.cache.materialize(&f.url, "main").unwrap_err().to_string();
    assert!(err.contains("40-hex"), "{err}");

    let missing = RepoUrl::parse(f.repo.path.join("does-not-exist").to_str().unwrap()).unwrap();
    let err = f
        .cache
        .resolve(&missing, &Credentials::None, "main")
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SourceError::Fetch { .. }), "{msg}");
    assert!(
        msg.contains("does-not-exist") && msg.contains("not a directory"),
        "{msg}"
    );
    let plain = tempfile::tempdir().unwrap();
    let not_git = RepoUrl::parse(plain.path().to_str().unwrap()).unwrap();
    let err = f
        .cache
        .resolve(&not_git, &Credentials::None, "main")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a Git repository"), "{err}");

    let never = RepoUrl::parse("/nowhere/at/all").unwrap();
    let err = f
        .cache
        .materialize(&never, &f.c["c1"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("resolve a revision first"), "{err}");

    let err = RepoUrl::parse("https://").unwrap_err().to_string();
    assert!(err.contains("invalid repository URL"), "{err}");

    // An empty repository: no HEAD to resolve, said plainly.
    let empty = tempfile::tempdir().unwrap();
    git(empty.path(), &["init", "-q", "-b", "main"]);
    let empty_url = RepoUrl::parse(empty.path().to_str().unwrap()).unwrap();
    let err = f
        .cache
        .resolve(&empty_url, &Credentials::None, "")
        .unwrap_err()
        .to_string();
    assert!(err.contains("advertises no HEAD"), "{err}");
}

#[test]
fn concurrent_materializations_write_the_tree_once() {
    let f = fixture();
    let commit = f
        .cache
        .resolve(&f.url, &Credentials::None, "main")
        .unwrap()
        .commit;
    let cache = Arc::new(f.cache);
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (cache, barrier, url, commit) = (
                Arc::clone(&cache),
                Arc::clone(&barrier),
                f.url.clone(),
                commit.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                cache.materialize(&url, &commit)
            })
        })
        .collect();
    let trees: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert!(trees.iter().all(|t| t == &trees[0]));
    assert_eq!(cache.stats().trees_written, 1);
    assert_eq!(
        std::fs::read_to_string(trees[0].root.join("app/cm.yaml")).unwrap(),
        "kind: ConfigMap\n"
    );
}

#[test]
fn a_restarted_process_reuses_the_object_store_without_downloading() {
    let f = fixture();
    assert!(
        f.cache
            .resolve(&f.url, &Credentials::None, "main")
            .unwrap()
            .fetched
    );
    let restarted = RepoCache::new(f.cache.dir()).unwrap();
    let r = restarted
        .resolve(&f.url, &Credentials::None, "v1.2.0")
        .unwrap();
    assert_eq!(r.commit, f.c["c2"]);
    assert!(!r.fetched, "every advertised object is already on disk");
    assert!(
        !restarted
            .resolve(&f.url, &Credentials::None, "main")
            .unwrap()
            .fetched
    );
}
