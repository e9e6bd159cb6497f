//! Benchmark: the no-change refresh of a repository (local path and over HTTP with basic auth,
//! protocol v1 and v2, beside `git ls-remote` doing the same job), the cost of materializing
//! a tree (cold, and the shared warm path), and for a 3,000-file tree: materializing it into an
//! empty cache vs a commit changing one file of a tree already there (blob store), and pruning.
//! Prints a table; run with `cargo bench -p capstan-source --bench source`.

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use capstan_source::{Credentials, ProtocolVersion, RepoCache, RepoUrl, Secret};
use support::{GitHttpServer, Repo};

struct Row {
    what: String,
    iterations: usize,
    median: Duration,
    mean: Duration,
    note: String,
}

fn measure(iterations: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    f(); // warm-up
    let mut times: Vec<Duration> = (0..iterations)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    let mean = times.iter().sum::<Duration>() / iterations as u32;
    (times[iterations / 2], mean)
}

fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn main() {
    let tmp = tempfile::tempdir().expect("temp dir");
    // `cargo bench -p capstan-source --bench source -- big-tree` runs only the 3,000-file part.
    if std::env::args().any(|a| a == "big-tree") {
        print_rows(big_tree(tmp.path()));
        return;
    }
    let repo = Repo::init(&tmp.path().join("served/app"));
    // A repository of a realistic GitOps size: 20 apps × 10 manifests, 30 commits, 10 tags.
    for c in 0..30 {
        let files: Vec<(String, String)> = (0..20)
            .flat_map(|app| {
                (0..10).map(move |m| {
                    (
                        format!("apps/app{app}/manifest{m}.yaml"),
                        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app{app}-{m}\ndata:\n  rev: \"{c}\"\n"),
                    )
                })
            })
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        repo.commit(&refs, &format!("commit {c}"));
        if c % 3 == 0 {
            repo.git(&["tag", &format!("v1.{c}.0")]);
        }
    }
    let server = GitHttpServer::start(&tmp.path().join("served"), Some(("bench", "bench-pw")));
    let creds = Credentials::Basic {
        username: "bench".into(),
        password: Secret::new("bench-pw"),
    };
    let mut rows = Vec::new();

    // Local path.
    let local = RepoUrl::parse(repo.path.to_str().expect("utf-8 temp path")).expect("url");
    let cache = RepoCache::new(tmp.path().join("cache-local")).expect("cache");
    cache
        .resolve(&local, &Credentials::None, "main")
        .expect("first resolve");
    let before = cache.stats();
    let n = 50;
    let (median, mean) = measure(n, || {
        let r = cache
            .resolve(&local, &Credentials::None, "main")
            .expect("resolve");
        assert!(!r.fetched);
    });
    let after = cache.stats();
    rows.push(Row {
        what: "no-change refresh, local path (v1)".into(),
        iterations: n,
        median,
        mean,
        note: format!(
            "{} ref listings, {} fetches over {} refreshes",
            after.remote_checks - before.remote_checks,
            after.fetches - before.fetches,
            n + 1
        ),
    });
    let (median, mean) = measure(n, || {
        repo.git(&["ls-remote", repo.path.to_str().expect("utf-8")]);
    });
    rows.push(Row {
        what: "  reference: git ls-remote, local path".into(),
        iterations: n,
        median,
        mean,
        note: "a process per refresh".into(),
    });

    // HTTP with basic auth, both protocol versions.
    let http = RepoUrl::parse(&server.url("app")).expect("url");
    for version in [ProtocolVersion::V1, ProtocolVersion::V2] {
        let cache = RepoCache::new(tmp.path().join(format!("cache-http-{version:?}")))
            .expect("cache")
            .with_protocol(version);
        cache.resolve(&http, &creds, "main").expect("first resolve");
        let requests_before = server.requests();
        let fetches_before = cache.stats().fetches;
        let n = 30;
        let (median, mean) = measure(n, || {
            let r = cache.resolve(&http, &creds, ">=1.0.0 <2").expect("resolve");
            assert!(!r.fetched);
        });
        let requests = server.requests() - requests_before;
        rows.push(Row {
            what: format!("no-change refresh, HTTP+basic auth ({version:?})"),
            iterations: n,
            median,
            mean,
            note: format!(
                "{:.2} HTTP requests per refresh, {} fetches",
                requests as f64 / (n + 1) as f64,
                cache.stats().fetches - fetches_before
            ),
        });
    }
    let authed = format!("http://bench:bench-pw@127.0.0.1:{}/app", server.port);
    let requests_before = server.requests();
    let (median, mean) = measure(30, || {
        repo.git(&["-c", "protocol.version=2", "ls-remote", &authed]);
    });
    rows.push(Row {
        what: "  reference: git ls-remote, HTTP (v2)".into(),
        iterations: 30,
        median,
        mean,
        note: format!(
            "{:.2} HTTP requests per call",
            (server.requests() - requests_before) as f64 / 31.0
        ),
    });

    // Materialize: cold (a new cache directory each time, objects fetched beforehand) and warm.
    let n = 10;
    let caches: Vec<RepoCache> = (0..=n)
        .map(|i| {
            let c = RepoCache::new(tmp.path().join(format!("cache-mat-{i}"))).expect("cache");
            c.resolve(&local, &Credentials::None, "main")
                .expect("resolve");
            c
        })
        .collect();
    let commit = repo.head();
    let mut next = caches.iter();
    let (median, mean) = measure(n, || {
        let c = next.next().expect("one cache per iteration");
        c.materialize(&local, &commit).expect("materialize");
    });
    rows.push(Row {
        what: "materialize, cold (200 files, 21 dirs)".into(),
        iterations: n,
        median,
        mean,
        note: "files written and linked into the blob store, renamed".into(),
    });
    let warm = &caches[0];
    let (median, mean) = measure(200, || {
        warm.materialize(&local, &commit).expect("materialize");
    });
    rows.push(Row {
        what: "materialize, already on disk".into(),
        iterations: 200,
        median,
        mean,
        note: "shared tree, nothing written".into(),
    });
    let checkout = tmp.path().join("checkout");
    let mut i = 0;
    let (median, mean) = measure(n, || {
        i += 1;
        let dir = checkout.join(i.to_string());
        std::fs::create_dir_all(&dir).expect("dir");
        let archive = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "git -C '{}' archive HEAD | tar -x -C '{}'",
                repo.path.display(),
                dir.display()
            ))
            .status()
            .expect("git archive");
        assert!(archive.success());
    });
    rows.push(Row {
        what: "  reference: git archive | tar -x".into(),
        iterations: n,
        median,
        mean,
        note: "two processes, no chmod".into(),
    });

    rows.extend(big_tree(tmp.path()));
    print_rows(rows);
}

fn print_rows(rows: Vec<Row>) {
    println!();
    println!(
        "{:<46} {:>6} {:>12} {:>12}  note",
        "operation", "iters", "median µs", "mean µs"
    );
    println!("{}", "-".repeat(120));
    for r in rows {
        println!(
            "{:<46} {:>6} {:>12} {:>12}  {}",
            r.what,
            r.iterations,
            micros(r.median),
            micros(r.mean),
            r.note
        );
    }
}

/// A 3,000-file repository (100 directories of 30 manifests) as in `capstan bench scale`:
/// materialized fresh (empty cache: every file written) beside a new commit that changes one
/// file of a tree already materialized (every other file a link to its blob), then a prune.
fn big_tree(tmp: &std::path::Path) -> Vec<Row> {
    let repo = Repo::init(&tmp.join("big"));
    let files: Vec<(String, String)> = (0..100)
        .flat_map(|app| {
            (0..30).map(move |m| {
                (
                    format!("apps/app{app:03}/manifest{m:02}.yaml"),
                    format!(
                        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app{app}-{m}\ndata:\n  key: \"{}\"\n",
                        "x".repeat(200 + m)
                    ),
                )
            })
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let base = repo.commit(&refs, "3,000 files");
    let n = 10;
    // Commit i changes one file of commit i-1 (a different one each time).
    let changed: Vec<String> = (0..=n)
        .map(|i| {
            let path = format!("apps/app{i:03}/manifest00.yaml");
            repo.commit(
                &[(path.as_str(), &format!("changed: \"{i}\"\n"))],
                "one file",
            )
        })
        .collect();
    let url = RepoUrl::parse(repo.path.to_str().expect("utf-8 temp path")).expect("url");
    let resolved = |dir: &str| {
        let cache = RepoCache::new(tmp.join(dir)).expect("cache");
        cache
            .resolve(&url, &Credentials::None, "main")
            .expect("resolve");
        cache
    };
    let mut rows = Vec::new();

    let fresh: Vec<RepoCache> = (0..=n)
        .map(|i| resolved(&format!("big-fresh-{i}")))
        .collect();
    let mut next = fresh.iter();
    let (fresh_median, mean) = measure(n, || {
        let c = next.next().expect("one cache per iteration");
        c.materialize(&url, &base).expect("materialize");
    });
    let written = fresh[0].stats().blobs_written;
    rows.push(Row {
        what: "materialize 3,000 files, empty cache".into(),
        iterations: n,
        median: fresh_median,
        mean,
        note: format!("{written} blobs written per tree"),
    });

    let cache = resolved("big-incremental");
    let first = cache.materialize(&url, &base).expect("materialize");
    drop(first);
    let before = cache.stats();
    let mut next = changed.iter();
    let (one_median, mean) = measure(n, || {
        let commit = next.next().expect("one commit per iteration");
        cache.materialize(&url, commit).expect("materialize");
    });
    let after = cache.stats();
    rows.push(Row {
        what: "materialize 3,000 files, one changed".into(),
        iterations: n,
        median: one_median,
        mean,
        note: format!(
            "{} trees, {} blobs written; {:.1}x faster than empty cache (median)",
            after.trees_written - before.trees_written,
            after.blobs_written - before.blobs_written,
            fresh_median.as_secs_f64() / one_median.as_secs_f64()
        ),
    });

    // Reference for the prune: the shell removing one such tree (a hard-linked copy of the last
    // one, so that it frees as little as a pruned tree does).
    let last = cache
        .materialize(&url, changed.last().expect("commits"))
        .expect("materialize");
    let copy = tmp.join("big-rm-reference");
    let shell = |script: String| {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .status()
            .expect("sh");
        assert!(status.success());
    };
    shell(format!(
        "cp -al '{}' '{}'",
        last.root.display(),
        copy.display()
    ));
    drop(last);
    let started = Instant::now();
    shell(format!(
        "chmod -R u+w '{0}' && rm -rf '{0}'",
        copy.display()
    ));
    let rm = started.elapsed();

    let started = Instant::now();
    let report = cache.prune(Duration::ZERO).expect("prune");
    let took = started.elapsed();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    rows.push(Row {
        what: "prune all trees of the above".into(),
        iterations: 1,
        median: took,
        mean: took,
        note: format!(
            "{} trees, {} blobs, {} KiB; {:.1} ms per tree",
            report.trees_removed,
            report.blobs_removed,
            report.bytes_freed / 1024,
            took.as_secs_f64() * 1e3 / report.trees_removed.max(1) as f64
        ),
    });
    rows.push(Row {
        what: "  reference: chmod -R u+w && rm -rf, one tree".into(),
        iterations: 1,
        median: rm,
        mean: rm,
        note: "hard-linked copy of one tree above".into(),
    });
    rows
}
