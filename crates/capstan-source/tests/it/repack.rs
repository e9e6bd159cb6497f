//! A repository fetched many times in one process: each fetch adds a pack, gix's object store
//! holds a bounded number of pack indices (its default made the 33rd fetch fail with "too few
//! index slots"), and lookups search every pack. The cache keeps the pack count bounded by
//! repacking before a fetch, and every commit stays readable through the handles it had.

use crate::support;

use std::path::Path;
use std::time::Duration;

use capstan_source::{Credentials, RepoCache, RepoUrl};
use support::Repo;

fn packs(cache: &Path) -> usize {
    let mut count = 0;
    for repo in std::fs::read_dir(cache.join("repos")).expect("the cache has repositories") {
        let pack_dir = repo
            .expect("a repository entry")
            .path()
            .join("objects/pack");
        if let Ok(entries) = std::fs::read_dir(pack_dir) {
            count += entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
                .count();
        }
    }
    count
}

#[test]
fn a_hundred_fetches_keep_working_and_the_packs_stay_few() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = Repo::init(&tmp.path().join("origin"));
    let url = RepoUrl::parse(origin.path.to_str().unwrap()).unwrap();
    let cache_dir = tmp.path().join("cache");
    let cache = RepoCache::new(&cache_dir).unwrap();

    let mut commits = Vec::new();
    let mut most_packs = 0;
    for i in 0..100 {
        commits.push(origin.commit(
            &[(
                &format!("app/cm-{i}.yaml"),
                &format!("kind: ConfigMap\n# {i}\n"),
            )],
            &format!("commit {i}"),
        ));
        let resolved = cache
            .resolve(&url, &Credentials::None, "main")
            .unwrap_or_else(|e| panic!("fetch {i}: {e}"));
        assert_eq!(&resolved.commit, commits.last().unwrap());
        assert!(resolved.fetched, "fetch {i} brought the new commit");
        most_packs = most_packs.max(packs(&cache_dir));
        // Reading through the long-lived handle, also right after a repack replaced the packs.
        let tree = cache.materialize(&url, &commits[i / 2]).unwrap();
        let half = i / 2;
        let text = std::fs::read_to_string(tree.root.join(format!("app/cm-{half}.yaml"))).unwrap();
        assert_eq!(text, format!("kind: ConfigMap\n# {half}\n"));
    }
    let stats = cache.stats();
    assert_eq!(stats.fetches, 100);
    assert!(stats.repacks >= 2, "repacked along the way: {stats:?}");
    assert!(
        most_packs <= 33,
        "at most 33 packs at any time, saw {most_packs}"
    );

    // Every commit, first and last included, is still there.
    for (i, commit) in commits.iter().enumerate().step_by(33) {
        let tree = cache.materialize(&url, commit).unwrap();
        let text = std::fs::read_to_string(tree.root.join(format!("app/cm-{i}.yaml"))).unwrap();
        assert_eq!(text, format!("kind: ConfigMap\n# {i}\n"));
    }
    let last = cache.materialize(&url, commits.last().unwrap()).unwrap();
    assert!(last.root.join("app/cm-99.yaml").is_file());

    // A prune finds nothing more to consolidate below the limit.
    let report = cache.prune(Duration::from_secs(3600)).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.repositories_repacked, 0);
}

/// Without a `git` program to repack with, packs pile up (one per fetch) and the store is
/// reopened with more slots before they run out: fetching never fails for want of slots.
#[test]
fn without_git_to_repack_fetching_goes_on_past_the_store_slots() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = Repo::init(&tmp.path().join("origin"));
    let url = RepoUrl::parse(origin.path.to_str().unwrap()).unwrap();
    let cache_dir = tmp.path().join("cache");
    let cache = RepoCache::new(&cache_dir)
        .unwrap()
        .with_git_program(tmp.path().join("no-such-git"));

    // 256 slots at first (the minimum): go well past them.
    let mut commits = Vec::new();
    for i in 0..300 {
        commits.push(origin.commit(
            &[(&format!("cm-{i}.yaml"), &format!("# {i}\n"))],
            &format!("commit {i}"),
        ));
        let resolved = cache
            .resolve(&url, &Credentials::None, "main")
            .unwrap_or_else(|e| panic!("fetch {i}: {e}"));
        assert_eq!(&resolved.commit, commits.last().unwrap());
    }
    assert_eq!(cache.stats().repacks, 0);
    assert!(
        packs(&cache_dir) >= 300,
        "nothing repacked: {}",
        packs(&cache_dir)
    );
    for (i, commit) in commits.iter().enumerate().step_by(99) {
        let tree = cache.materialize(&url, commit).unwrap();
        let text = std::fs::read_to_string(tree.root.join(format!("cm-{i}.yaml"))).unwrap();
        assert_eq!(text, format!("# {i}\n"));
    }
    // A prune says why it could not consolidate them.
    let report = cache.prune(Duration::from_secs(3600)).unwrap();
    assert_eq!(report.repositories_repacked, 0);
    assert!(
        report
            .failures
            .iter()
            .any(|e| e.to_string().contains("no-such-git")),
        "{:?}",
        report.failures
    );
}

/// A `git` that is there but cannot repack (out of disk, a damaged repository) is not run again
/// before every fetch: one failed attempt, then fetching goes on without it.
#[test]
fn a_failing_repack_is_not_retried_at_every_fetch() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let origin = Repo::init(&tmp.path().join("origin"));
    let url = RepoUrl::parse(origin.path.to_str().unwrap()).unwrap();
    let calls = tmp.path().join("calls");
    let git = tmp.path().join("failing-git");
    std::fs::write(
        &git,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\necho 'fatal: out of disk' >&2\nexit 128\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&git, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cache_dir = tmp.path().join("cache");
    let cache = RepoCache::new(&cache_dir).unwrap().with_git_program(&git);

    // 32 packs call for a repack before the next fetch; 20 fetches more follow it.
    for i in 0..52 {
        let commit = origin.commit(
            &[(&format!("cm-{i}.yaml"), &format!("# {i}\n"))],
            &format!("commit {i}"),
        );
        let resolved = cache
            .resolve(&url, &Credentials::None, "main")
            .unwrap_or_else(|e| panic!("fetch {i}: {e}"));
        assert_eq!(resolved.commit, commit);
    }
    let attempts = std::fs::read_to_string(&calls).unwrap_or_default();
    assert_eq!(
        attempts.lines().filter(|l| l.contains("repack")).count(),
        1,
        "{attempts}"
    );
    assert_eq!(cache.stats().repacks, 0);
}
