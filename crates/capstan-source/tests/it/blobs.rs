//! The blob store behind materialized trees (files shared between trees as hard links) and
//! pruning, against real repositories on disk.

use crate::support;

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
    sync::{
        Arc, Barrier,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use capstan_source::{Credentials, RepoCache, RepoUrl};
use support::Repo;

struct Fixture {
    _tmp: tempfile::TempDir,
    repo: Repo,
    url: RepoUrl,
    cache: RepoCache,
}

const SCRIPT: &str = "#!/bin/sh\necho render\n";

/// A repository whose first commit holds plain files in nested directories, an executable
/// script and a plain file with the script's exact content.
fn fixture() -> (Fixture, String) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(&tmp.path().join("origin"));
    let script = repo.path.join("bin/render.sh");
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    std::fs::write(&script, SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let first = repo.commit(
        &[
            ("app/deploy.yaml", "kind: Deployment\n"),
            ("app/svc.yaml", "kind: Service\n"),
            ("app/nested/cm.yaml", "kind: ConfigMap\n"),
            ("docs/render.sh.txt", SCRIPT),
            ("values.yaml", "replicas: 1\n"),
        ],
        "first",
    );
    let url = RepoUrl::parse(repo.path.to_str().unwrap()).unwrap();
    let cache = RepoCache::new(tmp.path().join("cache")).unwrap();
    (
        Fixture {
            _tmp: tmp,
            repo,
            url,
            cache,
        },
        first,
    )
}

impl Fixture {
    fn materialize_head(&self) -> capstan_source::Tree {
        let r = self
            .cache
            .resolve(&self.url, &Credentials::None, "main")
            .unwrap();
        self.cache.materialize(&self.url, &r.commit).unwrap()
    }
}

fn inode(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).unwrap().ino()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const UNCHANGED: [&str; 5] = [
    "app/deploy.yaml",
    "app/nested/cm.yaml",
    "bin/render.sh",
    "docs/render.sh.txt",
    "app/svc.yaml",
];

#[test]
fn a_commit_changing_one_file_shares_the_other_files_with_the_earlier_tree() {
    let (f, _) = fixture();
    let first = f.materialize_head();
    // Five distinct contents (the script and its plain copy share one), but mode is per inode:
    // six blobs.
    assert_eq!(f.cache.stats().blobs_written, 6);
    assert_ne!(
        inode(&first.root.join("bin/render.sh")),
        inode(&first.root.join("docs/render.sh.txt")),
        "an executable and a plain file never share an inode"
    );

    f.repo.commit(&[("values.yaml", "replicas: 2\n")], "scale");
    let second = f.materialize_head();
    assert_ne!(second.tree_id, first.tree_id);
    assert_eq!(f.cache.stats().trees_written, 2);
    assert_eq!(
        f.cache.stats().blobs_written,
        7,
        "only the changed file is written"
    );

    for path in UNCHANGED {
        let (a, b) = (first.root.join(path), second.root.join(path));
        assert_eq!(inode(&a), inode(&b), "{path} is shared");
        // Both trees and the blob store.
        assert_eq!(std::fs::metadata(&a).unwrap().nlink(), 3, "{path}");
    }
    assert_ne!(
        inode(&first.root.join("values.yaml")),
        inode(&second.root.join("values.yaml"))
    );
    assert_eq!(
        std::fs::read_to_string(first.root.join("values.yaml")).unwrap(),
        "replicas: 1\n"
    );
    assert_eq!(
        std::fs::read_to_string(second.root.join("values.yaml")).unwrap(),
        "replicas: 2\n"
    );
    // Read-only as before: shared inodes keep their modes.
    for tree in [&first, &second] {
        assert_eq!(mode(&tree.root.join("bin/render.sh")), 0o555);
        assert_eq!(mode(&tree.root.join("docs/render.sh.txt")), 0o444);
        assert_eq!(mode(&tree.root.join("values.yaml")), 0o444);
        assert_eq!(mode(&tree.root.join("app/nested")), 0o555);
        assert_eq!(mode(&tree.root), 0o555);
    }
    // The blob store holds complete, read-only contents under their ids, and no temporaries.
    let blobs = f.cache.dir().join("blobs");
    let script_id = f.repo.git(&["rev-parse", "HEAD:bin/render.sh"]);
    assert_eq!(names(&blobs).len(), 7, "{:?}", names(&blobs));
    assert_eq!(
        std::fs::read_to_string(blobs.join(format!("{script_id}.x"))).unwrap(),
        SCRIPT
    );
    assert_eq!(mode(&blobs.join(format!("{script_id}.x"))), 0o555);
    assert_eq!(mode(&blobs.join(&script_id)), 0o444);
}

#[test]
fn prune_removes_unused_trees_and_unlinked_blobs_but_not_what_is_held() {
    let (f, first_commit) = fixture();
    let first = f.materialize_head();
    let first_root = first.root.clone();
    f.repo.commit(&[("values.yaml", "replicas: 2\n")], "scale");
    let second = f.materialize_head();
    let held_elsewhere = second.clone();
    drop(second);

    // Recently used trees stay, held or not.
    let report = f.cache.prune(Duration::from_secs(3600)).unwrap();
    assert_eq!(
        (report.trees_removed, report.trees_kept, report.trees_in_use),
        (0, 2, 2)
    );
    assert_eq!((report.blobs_removed, report.blobs_kept), (0, 7));

    drop(first);
    let report = f.cache.prune(Duration::ZERO).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    // The first tree went; the second is held by a clone of its handle.
    assert_eq!(
        (report.trees_removed, report.trees_kept, report.trees_in_use),
        (1, 1, 1)
    );
    assert!(!first_root.exists());
    assert!(held_elsewhere.root.is_dir());
    // Only the old values.yaml was linked by the first tree alone.
    assert_eq!((report.blobs_removed, report.blobs_kept), (1, 6));
    assert_eq!(report.bytes_freed, "replicas: 1\n".len() as u64);
    let old_values = f
        .repo
        .git(&["rev-parse", &format!("{first_commit}:values.yaml")]);
    assert!(!f.cache.dir().join("blobs").join(old_values).exists());

    // What is left is intact: contents, modes, and the links to the blobs still there.
    let root = &held_elsewhere.root;
    assert_eq!(
        std::fs::read_to_string(root.join("values.yaml")).unwrap(),
        "replicas: 2\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("bin/render.sh")).unwrap(),
        SCRIPT
    );
    assert_eq!(mode(&root.join("bin/render.sh")), 0o555);
    assert_eq!(mode(&root.join("app/deploy.yaml")), 0o444);
    assert_eq!(mode(&root.join("app")), 0o555);
    for path in UNCHANGED {
        assert_eq!(
            std::fs::metadata(root.join(path)).unwrap().nlink(),
            2,
            "{path}"
        );
    }

    // The pruned tree is written again when asked for, from the blobs that are left plus the
    // one that went.
    let written = f.cache.stats();
    let again = f.cache.materialize(&f.url, &first_commit).unwrap();
    assert_eq!(again.root, first_root);
    assert_eq!(f.cache.stats().trees_written, written.trees_written + 1);
    assert_eq!(f.cache.stats().blobs_written, written.blobs_written + 1);
    assert_eq!(
        std::fs::read_to_string(again.root.join("values.yaml")).unwrap(),
        "replicas: 1\n"
    );
    assert_eq!(
        inode(&again.root.join("app/deploy.yaml")),
        inode(&root.join("app/deploy.yaml"))
    );

    // Once nothing holds anything, everything goes, and the store is empty.
    drop((again, held_elsewhere));
    let report = f.cache.prune(Duration::ZERO).unwrap();
    assert_eq!((report.trees_removed, report.trees_kept), (2, 0));
    assert_eq!((report.blobs_removed, report.blobs_kept), (7, 0));
    assert!(names(&f.cache.dir().join("trees")).is_empty());
    assert!(names(&f.cache.dir().join("blobs")).is_empty());
}

#[test]
fn a_restarted_process_prunes_by_the_last_use_recorded_on_disk() {
    let (f, _) = fixture();
    let tree = f.materialize_head();
    let root = tree.root.clone();
    drop(tree);
    // A tree last used two hours ago (as its directory's mtime records) and one used now.
    let old = SystemTime::now() - Duration::from_secs(2 * 3600);
    std::fs::File::open(&root)
        .unwrap()
        .set_modified(old)
        .unwrap();
    f.repo.commit(&[("values.yaml", "replicas: 2\n")], "scale");
    let recent = f.materialize_head();
    let recent_root = recent.root.clone();
    drop(recent);

    let restarted = RepoCache::new(f.cache.dir()).unwrap();
    let report = restarted.prune(Duration::from_secs(3600)).unwrap();
    assert_eq!((report.trees_removed, report.trees_kept), (1, 1));
    assert!(!root.exists());
    assert!(recent_root.is_dir());
    assert_eq!(report.blobs_removed, 1);
}

#[test]
fn prune_removes_leftovers_of_failed_writes_but_not_fresh_ones() {
    let (f, _) = fixture();
    let trees = f.cache.dir().join("trees");
    let blobs = f.cache.dir().join("blobs");
    // An interrupted deletion (read-only, as trees are) and a crashed writer's old tree.
    let interrupted = trees.join(".del-4194305-7");
    std::fs::create_dir_all(interrupted.join("sub")).unwrap();
    std::fs::write(interrupted.join("sub/file"), "12345").unwrap();
    for dir in [interrupted.join("sub"), interrupted.clone()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let crashed_tree = trees.join(".tmp-4194305-3");
    std::fs::create_dir(&crashed_tree).unwrap();
    std::fs::write(crashed_tree.join("half"), "abc").unwrap();
    std::fs::File::open(&crashed_tree)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(2 * 3600))
        .unwrap();
    // The record of skipped symlinks of a tree whose write failed at the last step, and one
    // whose tree is being written right now.
    let orphan = trees.join(format!("{}.skipped-symlinks", "ab".repeat(20)));
    std::fs::write(&orphan, "evil\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&orphan)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(2 * 3600))
        .unwrap();
    let being_written = trees.join(format!("{}.skipped-symlinks", "cd".repeat(20)));
    std::fs::write(&being_written, "evil\n").unwrap();
    // A fresh temporary of another process, which may still be writing it.
    let fresh = trees.join(".tmp-4194305-5");
    std::fs::create_dir(&fresh).unwrap();
    // Not ours at all, though unlinked elsewhere.
    let stranger = trees.join("README");
    std::fs::write(&stranger, "hands off").unwrap();
    let stranger_blob = blobs.join("notes.txt");
    std::fs::write(&stranger_blob, "hands off").unwrap();

    let report = f.cache.prune(Duration::ZERO).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.temporaries_removed, 3);
    assert_eq!(report.bytes_freed, 13);
    assert!(!interrupted.exists());
    assert!(!crashed_tree.exists());
    assert!(!orphan.exists());
    assert!(being_written.is_file());
    assert!(fresh.is_dir());
    assert!(stranger.is_file());
    assert!(stranger_blob.is_file());
}

#[test]
fn trees_read_while_pruning_concurrently_are_always_complete() {
    let (f, first) = fixture();
    let second = f.repo.commit(&[("values.yaml", "replicas: 2\n")], "scale");
    f.cache.resolve(&f.url, &Credentials::None, "main").unwrap();
    let cache = Arc::new(f.cache);
    let pruning = Arc::new(AtomicBool::new(true));
    let barrier = Arc::new(Barrier::new(3));
    // Readers materialize and read until the pruner is done, so the two always overlap.
    let readers: Vec<_> = [(first, "replicas: 1\n"), (second, "replicas: 2\n")]
        .into_iter()
        .map(|(commit, values)| {
            let (cache, barrier, pruning, url) = (
                Arc::clone(&cache),
                Arc::clone(&barrier),
                Arc::clone(&pruning),
                f.url.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                let mut rounds = 0;
                while pruning.load(Ordering::Relaxed) || rounds == 0 {
                    rounds += 1;
                    let tree = cache.materialize(&url, &commit).unwrap();
                    // While the handle lives, every file is there with its content.
                    for _ in 0..20 {
                        for (path, want) in [
                            ("values.yaml", values),
                            ("bin/render.sh", SCRIPT),
                            ("app/nested/cm.yaml", "kind: ConfigMap\n"),
                        ] {
                            let got = std::fs::read_to_string(tree.root.join(path))
                                .unwrap_or_else(|e| panic!("{path} in round {rounds}: {e}"));
                            assert_eq!(got, want, "{path}");
                            // Give the pruner every chance to run while the tree is held.
                            std::thread::yield_now();
                        }
                    }
                }
            })
        })
        .collect();
    barrier.wait();
    let mut removed = 0;
    for _ in 0..300 {
        let report = cache.prune(Duration::ZERO).unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        removed += report.trees_removed;
    }
    pruning.store(false, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }
    // Whatever the interleaving, a final prune leaves nothing, and no temporaries remain.
    let report = cache.prune(Duration::ZERO).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(names(&cache.dir().join("trees")).is_empty());
    assert!(names(&cache.dir().join("blobs")).is_empty());
    assert_eq!(
        cache.stats().trees_written,
        removed + report.trees_removed,
        "every tree written was removed exactly once"
    );
}
