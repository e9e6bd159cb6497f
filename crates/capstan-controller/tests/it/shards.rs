//! Several replicas share the applications through shard Leases: each application is synced
//! by the replica holding its shard and by no other; a newcomer gets its share; a crashed
//! replica's shards are taken over after the lease expires and its interrupted sync is resumed
//! with one history entry; a replica that stops cleanly hands over at once; replicas that
//! disagree on the shard count never work at the same time.

use crate::common;

use capstan_api::application::SyncPolicyAutomated;
use capstan_controller::Controller;
use capstan_controller::shard::{self, ShardConfig};
use capstan_testkit::temp_dir;
use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::oneshot;

const NS: &str = "capstan";

/// One controller replica in this process, with a cache of its own.
struct Replica {
    identity: String,
    task: Option<tokio::task::JoinHandle<()>>,
    stop: Option<oneshot::Sender<()>>,
    _cache: tempfile::TempDir,
}

impl Replica {
    fn start(env: &Env, identity: &str, shards: u32) -> Replica {
        let cache = temp_dir("replica-cache");
        let mut config = env.config(cache.path().to_path_buf());
        config.sharding = Some(ShardConfig {
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(200),
            ..ShardConfig::new(shards, identity, NS)
        });
        let controller = Controller::new(env.client.clone(), config).expect("controller");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(controller.run_until(async {
            let _ = stopped.await;
        }));
        Replica {
            identity: identity.to_string(),
            task: Some(task),
            stop: Some(stop),
            _cache: cache,
        }
    }

    /// A clean stop: returns once the replica stopped reconciling and released its leases.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("the replica stops without panicking");
        }
    }

    /// A crash: everything stops at once, nothing is released.
    fn crash(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Shard → holder, for the shard leases that have one.
async fn holders(client: &kube::Client) -> BTreeMap<u32, String> {
    shard::holders(&Api::namespaced(client.clone(), NS))
        .await
        .expect("list leases")
}

async fn until_holders(
    client: &kube::Client,
    what: &str,
    pred: impl Fn(&BTreeMap<u32, String>) -> bool,
) -> BTreeMap<u32, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = holders(client).await;
        if pred(&now) {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}; shard holders: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count_of(holders: &BTreeMap<u32, String>, who: &str) -> usize {
    holders.values().filter(|h| *h == who).count()
}

/// The first name `prefix-N` whose application falls in `shard` of `shards`.
fn app_in_shard(prefix: &str, shard: u32, shards: u32, skip: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .filter(|name| shard::shard_of(NS, name, shards) == shard)
        .nth(skip)
        .expect("names never run out")
}

/// (reason, reportingInstance) of the events on the application, oldest first.
async fn events_of(client: &kube::Client, app: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let mut list: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(app))
        .collect();
    list.sort_by_key(|e| {
        e.metadata
            .resource_version
            .clone()
            .unwrap_or_default()
            .parse::<u64>()
            .unwrap_or(0)
    });
    list.into_iter()
        .map(|e| {
            (
                e.reason.unwrap_or_default(),
                e.reporting_instance.unwrap_or_default(),
            )
        })
        .collect()
}

/// Replica a alone until it holds all `shards` (an even number), then replica b, which gets
/// its fair share: a releases half of them and b takes them. Returns both and the split.
async fn a_then_b(env: &Env, shards: u32) -> (Replica, Replica, BTreeMap<u32, String>) {
    let a = Replica::start(env, "replica-a", shards);
    until_holders(&env.client, "a alone to hold every shard", |h| {
        count_of(h, "replica-a") == shards as usize
    })
    .await;
    let b = Replica::start(env, "replica-b", shards);
    let half = shards as usize / 2;
    let split = until_holders(&env.client, "half of the shards each", |h| {
        count_of(h, "replica-a") == half && count_of(h, "replica-b") == half
    })
    .await;
    (a, b, split)
}

/// An event of [`events_of`] as a pair of `&str`, to compare with literals.
fn pair(event: Option<&(String, String)>) -> Option<(&str, &str)> {
    event.map(|(reason, instance)| (reason.as_str(), instance.as_str()))
}

fn automated() -> Option<SyncPolicyAutomated> {
    Some(SyncPolicyAutomated::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_shards_and_each_application_is_synced_by_its_shard_s_holder() {
    let env = Env::start_idle(|_| {}).await;
    let (a, b, split) = a_then_b(&env, 4).await;

    // Two applications per shard, so that both replicas have work.
    let names: Vec<String> = (0..4)
        .flat_map(|shard| (0..2).map(move |n| app_in_shard("shared", shard, 4, n)))
        .collect();
    let files: Vec<(String, String)> = names
        .iter()
        .map(|n| (format!("{n}/cm.yaml"), cm_yaml(&format!("{n}-cm"), "v1")))
        .collect();
    let files: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), Some(c.as_str())))
        .collect();
    env.commit(&files, "eight applications");
    for name in &names {
        env.create_app(name, env.spec(name, automated())).await;
    }
    for name in &names {
        env.until(name, "Synced and Healthy", |a| {
            sync_status(a) == "Synced" && health(a) == "Healthy"
        })
        .await;
    }
    let mut workers = BTreeSet::new();
    for name in &names {
        let holder = &split[&shard::shard_of(NS, name, 4)];
        let events = events_of(&env.client, name).await;
        assert!(
            events.iter().any(|(r, _)| r == "OperationCompleted"),
            "{name}: {events:?}"
        );
        for (reason, instance) in &events {
            assert_eq!(
                instance, holder,
                "{name} ({reason}) was handled by a replica that does not hold its shard"
            );
        }
        workers.insert(holder.clone());
    }
    assert_eq!(workers.len(), 2, "{workers:?}");
    // Nothing moved while they worked.
    assert_eq!(holders(&env.client).await, split);
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_replica_s_shard_is_taken_over_and_its_sync_resumed_once() {
    let env = Env::start_idle(|_| {}).await;
    let (a, b, split) = a_then_b(&env, 2).await;
    let shard_of_a = *split
        .iter()
        .find(|(_, h)| *h == "replica-a")
        .expect("a holds a shard")
        .0;
    let name = app_in_shard("resumable", shard_of_a, 2, 0);
    env.start_a_sync_stuck_in_wave_zero(&name).await;
    a.crash();
    assert!(
        env.cm("after").await.is_none(),
        "wave 1 before wave 0 was healthy"
    );
    env.open_wave_zero().await;

    // b takes a's shard once its lease has expired, and finishes the sync.
    until_holders(&env.client, "b to hold both shards", |h| {
        count_of(h, "replica-b") == 2
    })
    .await;
    env.until_the_resumed_sync_succeeded(&name).await;
    let events = events_of(&env.client, &name).await;
    assert_eq!(
        pair(events.first()),
        Some(("OperationStarted", "replica-a")),
        "{events:?}"
    );
    assert_eq!(
        pair(events.last()),
        Some(("OperationCompleted", "replica-b")),
        "{events:?}"
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_cleanly_hands_over_to_the_standby() {
    let env = Env::start_idle(|_| {}).await;
    let a = Replica::start(&env, "replica-a", 1);
    until_holders(&env.client, "a to lead", |h| {
        h.get(&0).map(String::as_str) == Some("replica-a")
    })
    .await;
    let b = Replica::start(&env, "replica-b", 1);
    env.commit(&[("web/cm.yaml", Some(&cm_yaml("web", "v1")))], "v1");
    env.create_app("web", env.spec("web", automated())).await;
    env.until("web", "Synced and Healthy", |a| {
        sync_status(a) == "Synced" && health(a) == "Healthy"
    })
    .await;
    let events = events_of(&env.client, "web").await;
    assert!(
        !events.is_empty() && events.iter().all(|(_, i)| i == "replica-a"),
        "the standby acted: {events:?}"
    );

    let identity = a.identity.clone();
    a.stop().await;
    // Released before stop() returned: no waiting for the lease to expire.
    assert_ne!(
        holders(&env.client).await.get(&0),
        Some(&identity),
        "the stopped replica still holds the shard"
    );
    until_holders(&env.client, "b to lead", |h| {
        h.get(&0).map(String::as_str) == Some("replica-b")
    })
    .await;
    let v2 = env.commit(&[("web/cm.yaml", Some(&cm_yaml("web", "v2")))], "v2");
    env.until("web", "the new commit deployed", |a| {
        revision(a) == v2 && sync_status(a) == "Synced"
    })
    .await;
    assert_eq!(
        cm_value(env.cm("web").await.as_ref()).as_deref(),
        Some("v2")
    );
    let events = events_of(&env.client, "web").await;
    assert_eq!(
        pair(events.last()),
        Some(("OperationCompleted", "replica-b")),
        "{events:?}"
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_disagree_on_the_shard_count_never_work_at_once() {
    let env = Env::start_idle(|_| {}).await;
    let old = Replica::start(&env, "replica-old", 2);
    until_holders(&env.client, "the old replica to hold both shards", |h| {
        count_of(h, "replica-old") == 2
    })
    .await;
    let new = Replica::start(&env, "replica-new", 3);
    // Let the new replica retry a few times: its member lease is renewed at every retry.
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), NS);
    let member = shard::member_lease_name("replica-new");
    let mut versions = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while versions.len() < 4 {
        if let Some(lease) = leases.get_opt(&member).await.expect("get lease") {
            versions.extend(lease.metadata.resource_version);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new replica never retried"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = holders(&env.client).await;
    assert_eq!(count_of(&now, "replica-old"), 2, "{now:?}");
    assert_eq!(count_of(&now, "replica-new"), 0, "{now:?}");

    // Once the old replica is gone, the new count takes over.
    old.stop().await;
    until_holders(
        &env.client,
        "the new replica to hold all three shards",
        |h| count_of(h, "replica-new") == 3,
    )
    .await;
    drop(new);
}
