//! The source cache of a running controller stays bounded: trees of revisions no application
//! uses any more are pruned, the deployed revision keeps working.

use crate::common;

use capstan_api::application::SyncPolicyAutomated;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trees_of_revisions_no_longer_used_are_pruned_from_the_cache() {
    let env = Env::start_with(|config| {
        config.cache_max_unused = Duration::from_secs(1);
        config.cache_prune_interval = Duration::from_secs(1);
    })
    .await;
    let first = env.commit(
        &[("app/cm.yaml", Some(&cm_yaml("settings", "one")))],
        "first",
    );
    env.create_app(
        "pruned",
        env.spec(
            "app",
            Some(SyncPolicyAutomated {
                prune: false,
                self_heal: false,
                allow_empty: false,
            }),
        ),
    )
    .await;
    env.until("pruned", "Synced at the first commit", |a| {
        sync_status(a) == "Synced" && revision(a) == first
    })
    .await;
    let trees = env.cache_dir().join("git").join("trees");
    let first_tree = trees.join(
        env.repo
            .git(&["rev-parse", &format!("{first}^{{tree}}")])
            .trim(),
    );
    assert!(
        first_tree.is_dir(),
        "the first commit's tree is materialized at {}",
        first_tree.display()
    );

    let second = env.commit(
        &[("app/cm.yaml", Some(&cm_yaml("settings", "two")))],
        "second",
    );
    env.until("pruned", "Synced at the second commit", |a| {
        sync_status(a) == "Synced" && health(a) == "Healthy" && revision(a) == second
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while first_tree.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the unused tree {} was never pruned",
            first_tree.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Pruning never breaks the application: it keeps refreshing (its interval is 1 s) and
    // follows the next commit.
    let third = env.commit(
        &[("app/cm.yaml", Some(&cm_yaml("settings", "three")))],
        "third",
    );
    env.until("pruned", "Synced at the third commit", |a| {
        sync_status(a) == "Synced" && health(a) == "Healthy" && revision(a) == third
    })
    .await;
    let cm = env.cm("settings").await.expect("the ConfigMap is deployed");
    assert_eq!(
        cm.data.and_then(|d| d.get("key").cloned()).as_deref(),
        Some("three")
    );
}
