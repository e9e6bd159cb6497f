//! Scale-out on Kubernetes itself: the applications are split into shards, and each shard is
//! reconciled by exactly one replica at a time, the one holding the shard's `Lease`
//! (`coordination.k8s.io/v1`) in the controller's namespace.
//!
//! - An application's shard is a stable hash of `namespace/name` modulo the shard count
//!   ([`shard_of`]): every replica computes the same assignment without talking to the others.
//! - Each replica also renews a *member* Lease of its own. The live members decide the fair
//!   share, `ceil(shards / members)`: a replica holding more releases the excess (a newcomer
//!   gets work within a few retry periods), one holding fewer takes free or expired shards. With
//!   one shard this is plain leader election: one active replica, the others on standby.
//! - Expiry is judged as client-go's leader election judges it, by the observer's own clock: a
//!   lease is expired when its record has not changed for its `leaseDurationSeconds` since this
//!   replica first saw it that way. Clocks of different machines are never compared.
//! - A holder renews every retry period and gives a shard up locally when it could not renew
//!   for `renew_deadline`, which is shorter than the lease duration: it stops (its reconciles of
//!   the shard are dropped, see [`Claim::lost`]) before anyone else may take the shard over. An
//!   interrupted sync leaves `status.operationState` Running and the next owner resumes it, as a
//!   restarted controller does.
//! - Every lease carries the shard count of its holder (annotation `capstan.dev/shards`); a
//!   replica configured with another count takes no shard while a lease of the old count is
//!   held, so two partitions of the applications do not run at once while `--shards` changes.
//!   The check is made before taking a shard, not atomically with it: two replicas of different
//!   counts that both see no lease held, and take one in the same retry, both work until one of
//!   their leases is released.
//! - A replica that stops cleanly releases its leases (holder cleared) so that the others take
//!   over at their next retry instead of after the lease duration.
//!
//! [`kube-lease-manager`](https://crates.io/crates/kube-lease-manager) manages one lease per
//! task with wall-clock expiry and no view of when the last renewal succeeded; sharding needs
//! the renew deadline (to stop before a successor starts) and decisions over all shards at once,
//! so the lease protocol is written here, over plain `Api<Lease>` with resourceVersion
//! preconditions.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

use capstan_api::annotations::{CONTROLLER_LEASE as LEASE_LABEL, SHARDS as SHARDS_ANNOTATION};

use crate::metrics::Recorder;

/// [`CONTROLLER_LEASE`](capstan_api::annotations::CONTROLLER_LEASE) value of a shard lease.
pub const KIND_SHARD: &str = "shard";
/// [`CONTROLLER_LEASE`](capstan_api::annotations::CONTROLLER_LEASE) value of a member lease.
pub const KIND_MEMBER: &str = "member";

/// The label selector of the shard leases.
fn shard_lease_selector() -> String {
    format!("{LEASE_LABEL}={KIND_SHARD}")
}

/// Who holds each shard now, from the shard leases in `api`'s namespace (shards nobody holds are
/// left out).
pub async fn holders(api: &Api<Lease>) -> Result<BTreeMap<u32, String>, kube::Error> {
    let list = api
        .list(&ListParams::default().labels(&shard_lease_selector()))
        .await?;
    Ok(list
        .items
        .iter()
        .filter_map(|l| {
            let shard = shard_of_lease(l.metadata.name.as_deref()?)?;
            Some((shard, holder_of(l)?.to_string()))
        })
        .collect())
}

/// How a replica takes part in sharding.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Number of shards the applications are split into (at least 1). Every replica must be
    /// given the same number.
    pub shards: u32,
    /// This replica's name in the leases' `holderIdentity`; unique per replica (a pod name).
    pub identity: String,
    /// Namespace of the leases.
    pub namespace: String,
    /// How long a lease stays valid after its last renewal (Kubernetes' default: 15 s).
    pub lease_duration: Duration,
    /// A holder that could not renew for this long stops working on the shard (10 s); shorter
    /// than `lease_duration`, so it has stopped before anyone may take over.
    pub renew_deadline: Duration,
    /// How often leases are renewed and free ones looked for (2 s).
    pub retry_period: Duration,
}

impl ShardConfig {
    /// `shards` shards, Kubernetes' leader-election timings (15 s / 10 s / 2 s).
    pub fn new(shards: u32, identity: impl Into<String>, namespace: impl Into<String>) -> Self {
        ShardConfig {
            shards: shards.max(1),
            identity: identity.into(),
            namespace: namespace.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Checks the settings a person gives; the error names the offending one.
    pub fn validate(&self) -> Result<(), String> {
        if self.shards == 0 {
            return Err("the shard count must be at least 1".into());
        }
        if self.identity.trim().is_empty() {
            return Err("the replica identity must not be empty".into());
        }
        if self.lease_duration < Duration::from_secs(1) {
            return Err("the lease duration must be at least 1s".into());
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "the renew deadline ({:?}) must be shorter than the lease duration ({:?})",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period >= self.renew_deadline {
            return Err(format!(
                "the retry period ({:?}) must be shorter than the renew deadline ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }
}

/// This replica's identity when none is given: the pod's name (`POD_NAME`, set from the
/// downward API by `capstan install`'s Deployment), else the host name with a random suffix, so
/// that two processes on one host never share an identity.
pub fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.trim().is_empty()
    {
        return pod.trim().to_string();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "capstan".to_string());
    use std::hash::{BuildHasher, Hasher};
    let mut random = std::collections::hash_map::RandomState::new().build_hasher();
    random.write_u32(std::process::id());
    format!("{host}-{:08x}", random.finish() as u32)
}

/// The shard of the application `namespace/name` among `shards`: FNV-1a (64 bit) of
/// `namespace/name`, modulo `shards`. Fixed forever: replicas of different versions must agree.
pub fn shard_of(namespace: &str, name: &str, shards: u32) -> u32 {
    let key = namespace.bytes().chain([b'/']).chain(name.bytes());
    (capstan_api::names::fnv1a(key) % u64::from(shards.max(1))) as u32
}

/// Name prefix of the shard leases; the shard's index follows.
const SHARD_LEASE_PREFIX: &str = "capstan-controller-shard-";

/// Name of the lease of shard `index`.
pub fn shard_lease_name(index: u32) -> String {
    format!("{SHARD_LEASE_PREFIX}{index}")
}

/// The shard whose lease `name` is ([`shard_lease_name`] read back).
pub fn shard_of_lease(name: &str) -> Option<u32> {
    name.strip_prefix(SHARD_LEASE_PREFIX)?.parse().ok()
}

/// Name of the member lease of `identity`: a DNS-1123 rendering of it with a hash of the
/// exact identity, so that two identities never share a lease.
pub fn member_lease_name(identity: &str) -> String {
    // 26 + 28 + 10 = 63, the longest name a DNS label allows.
    capstan_api::names::generated_name("capstan-controller-member", identity, identity, 28)
}

/// Per shard: the epoch of this replica's current hold, `None` when not held. A new hold gets
/// a new epoch, so a reconcile that began under an earlier hold knows it was interrupted.
type Holds = Vec<Option<u64>>;

/// Which shards this replica holds now. Cheap to clone and to ask.
#[derive(Clone)]
pub struct Ownership {
    shards: u32,
    /// `None`: not sharding, every application is this replica's for ever.
    rx: Option<watch::Receiver<Holds>>,
}

/// A reconcile's hold on its application's shard, taken by [`Ownership::claim`].
pub struct Claim {
    shard: u32,
    epoch: u64,
    rx: Option<watch::Receiver<Holds>>,
}

/// Follows the shards held, for the task that reacts to their changes
/// ([`Ownership::follow`]).
pub struct Follower {
    rx: watch::Receiver<Holds>,
    last: Holds,
}

impl Ownership {
    /// Ownership of every application, for ever: a controller that does not shard.
    pub fn everything() -> Self {
        Ownership {
            shards: 1,
            rx: None,
        }
    }

    /// The shard of an application.
    pub fn shard_of(&self, namespace: &str, name: &str) -> u32 {
        shard_of(namespace, name, self.shards)
    }

    /// A claim on the application's shard when this replica holds it now. None once the
    /// lease manager is gone (it stopped, or failed): nobody renews the leases any more, so
    /// what it last held is no longer this replica's.
    pub fn claim(&self, namespace: &str, name: &str) -> Option<Claim> {
        let shard = self.shard_of(namespace, name);
        let epoch = match &self.rx {
            None => 0,
            Some(rx) if rx.has_changed().is_err() => return None,
            Some(rx) => (*rx.borrow()).get(shard as usize).copied().flatten()?,
        };
        Some(Claim {
            shard,
            epoch,
            rx: self.rx.clone(),
        })
    }

    /// A follower of the held shards, starting from now; `None` when not sharding (nothing
    /// ever changes).
    pub fn follow(&self) -> Option<Follower> {
        let rx = self.rx.clone()?;
        let last = rx.borrow().clone();
        Some(Follower { rx, last })
    }
}

impl Follower {
    /// Waits for the next change; returns the shards acquired and the shards lost since the
    /// previous call (a shard lost and taken again in between is in both). `None` once the
    /// manager is gone.
    pub async fn next(&mut self) -> Option<(Vec<u32>, Vec<u32>)> {
        self.rx.changed().await.ok()?;
        let now = self.rx.borrow_and_update().clone();
        let mut acquired = Vec::new();
        let mut lost = Vec::new();
        for (shard, (old, new)) in self.last.iter().zip(&now).enumerate() {
            if old != new {
                if old.is_some() {
                    lost.push(shard as u32);
                }
                if new.is_some() {
                    acquired.push(shard as u32);
                }
            }
        }
        self.last = now;
        Some((acquired, lost))
    }
}

impl Claim {
    /// Completes when the replica no longer holds the shard under this claim's hold (released,
    /// lost, or lost and taken again since, or the manager gone). Never completes while the
    /// hold lasts, nor at all when not sharding.
    pub async fn lost(self) {
        let Some(mut rx) = self.rx else {
            return std::future::pending().await;
        };
        loop {
            let held = (*rx.borrow_and_update())
                .get(self.shard as usize)
                .copied()
                .flatten();
            if held != Some(self.epoch) || rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// A lease as one replica sees it at one moment: the input of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// The shard, or `None` for a member lease.
    pub shard: Option<u32>,
    /// `spec.holderIdentity`, `None` when empty.
    pub holder: Option<String>,
    /// Unchanged for longer than its duration, as observed here.
    pub expired: bool,
    /// The shard count its holder partitions by.
    pub shards: Option<u32>,
}

/// What one replica should do with its shards, decided by [`decide`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Shards to take (free or expired).
    pub acquire: Vec<u32>,
    /// Held shards to give up (more than the fair share).
    pub release: Vec<u32>,
    /// Live members, this replica included.
    pub members: usize,
    /// Why nothing is taken although the fair share is not reached.
    pub waiting: Option<String>,
}

/// The pure part of a retry: given the leases as seen now and the shards held, which to take
/// and which to release.
pub fn decide(config: &ShardConfig, leases: &[LeaseView], held: &BTreeSet<u32>) -> Decision {
    let me = config.identity.as_str();
    // Members partitioning by another count are not counted: they take no shard while this
    // count's leases are held, so counting them would only leave shards unowned.
    let members = 1 + leases
        .iter()
        .filter(|l| l.shard.is_none() && !l.expired)
        .filter(|l| l.shards.is_none_or(|n| n == config.shards))
        .filter_map(|l| l.holder.as_deref())
        .filter(|h| *h != me)
        .collect::<BTreeSet<_>>()
        .len();
    let fair = (config.shards as usize).div_ceil(members);
    let mut decision = Decision {
        members,
        ..Decision::default()
    };
    if held.len() > fair {
        // The highest shards go first, so replicas converge on the same split.
        decision.release = held.iter().rev().take(held.len() - fair).copied().collect();
        return decision;
    }
    if held.len() == fair {
        return decision;
    }
    let by_shard: HashMap<u32, &LeaseView> = leases
        .iter()
        .filter_map(|l| l.shard.map(|s| (s, l)))
        .collect();
    if let Some(other) = leases.iter().find(|l| {
        l.shard.is_some()
            && !l.expired
            && l.holder.as_deref().is_some_and(|h| h != me)
            && l.shards.is_some_and(|n| n != config.shards)
    }) {
        decision.waiting = Some(format!(
            "replica {} holds a shard of {} shards, this replica is configured with {}: \
             taking none until the replicas agree",
            other.holder.as_deref().unwrap_or_default(),
            other.shards.unwrap_or_default(),
            config.shards
        ));
        return decision;
    }
    let free = (0..config.shards)
        .filter(|s| !held.contains(s))
        .filter(|s| {
            by_shard
                .get(s)
                .is_none_or(|l| l.holder.is_none() || l.expired || l.holder.as_deref() == Some(me))
        });
    decision.acquire = free.take(fair - held.len()).collect();
    decision
}

/// What this replica remembers of a lease between retries.
struct Seen {
    resource_version: String,
    /// When the lease was first seen with this resourceVersion (this replica's clock).
    since: Instant,
}

/// A shard held by this replica.
struct Held {
    /// When the last renewal that succeeded was sent.
    renewed: Instant,
    lease: Lease,
}

/// Takes, renews and releases this replica's leases. Made by [`ShardManager::new`], driven by
/// [`ShardManager::run`] until [`ShardManager::release_all`].
pub struct ShardManager {
    api: Api<Lease>,
    config: ShardConfig,
    tx: watch::Sender<Holds>,
    seen: HashMap<String, Seen>,
    held: BTreeMap<u32, Held>,
    next_epoch: u64,
    waiting_logged: Option<String>,
    recorder: Arc<dyn Recorder>,
}

impl ShardManager {
    /// A manager holding nothing yet, and the [`Ownership`] handle that follows it.
    pub fn new(
        client: kube::Client,
        config: ShardConfig,
        recorder: Arc<dyn Recorder>,
    ) -> (Self, Ownership) {
        let (tx, rx) = watch::channel(vec![None; config.shards as usize]);
        let ownership = Ownership {
            shards: config.shards,
            rx: Some(rx),
        };
        let manager = ShardManager {
            api: Api::namespaced(client, &config.namespace),
            config,
            tx,
            seen: HashMap::new(),
            held: BTreeMap::new(),
            next_epoch: 1,
            waiting_logged: None,
            recorder,
        };
        (manager, ownership)
    }

    /// Retries for ever, every retry period.
    pub async fn run(&mut self) {
        loop {
            self.retry().await;
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// One retry, bounded by the earliest renew deadline of the shards held: a retry stuck on
    /// an unresponsive API server gives the shards up in time.
    pub async fn retry(&mut self) {
        let deadline = self
            .held
            .values()
            .map(|h| h.renewed + self.config.renew_deadline)
            .min()
            .unwrap_or_else(|| Instant::now() + self.config.lease_duration);
        let finished = tokio::time::timeout_at(deadline.into(), self.retry_inner())
            .await
            .is_ok();
        if !finished {
            tracing::warn!("the lease API did not answer in time");
        }
        self.drop_overdue(Instant::now());
    }

    /// Stops working on every shard, then releases the leases and removes the member lease,
    /// so that the other replicas take over at once.
    pub async fn release_all(&mut self) {
        let held = std::mem::take(&mut self.held);
        for shard in held.keys() {
            self.set_hold(*shard, None);
        }
        // The leases as they are now, not as last seen: a retry cut short by the stop may have
        // renewed a lease, or taken one this replica does not know it holds.
        let mut mine: BTreeMap<u32, Lease> = held.into_iter().map(|(s, h)| (s, h.lease)).collect();
        match self
            .api
            .list(&ListParams::default().labels(&shard_lease_selector()))
            .await
        {
            Ok(list) => {
                for lease in list.items {
                    let shard = lease.metadata.name.as_deref().and_then(shard_of_lease);
                    if let Some(shard) = shard
                        && holder_of(&lease) == Some(self.config.identity.as_str())
                    {
                        mine.insert(shard, lease);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing the shard leases to release them"),
        }
        for (shard, lease) in mine {
            self.release(shard, lease).await;
        }
        // By name, without a resourceVersion: nobody else writes this replica's member lease,
        // and the last copy seen may predate a renewal cut short by the stop.
        let name = member_lease_name(&self.config.identity);
        match self.api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => tracing::warn!(lease = %name, error = %e, "removing the member lease"),
        }
        self.record();
    }

    async fn retry_inner(&mut self) {
        let list = match self
            .api
            .list(&ListParams::default().labels(LEASE_LABEL))
            .await
        {
            Ok(list) => list.items,
            Err(e) => {
                tracing::warn!(error = %e, "listing the controller's leases");
                return;
            }
        };
        let now = Instant::now();
        self.observe(&list, now);
        self.renew_member(&list).await;
        self.renew_held(&list).await;
        let views = self.views(&list, now);
        let held: BTreeSet<u32> = self.held.keys().copied().collect();
        let decision = decide(&self.config, &views, &held);
        if decision.waiting != self.waiting_logged {
            if let Some(why) = &decision.waiting {
                tracing::warn!("{why}");
            }
            self.waiting_logged = decision.waiting.clone();
        }
        for shard in decision.release {
            if let Some(h) = self.held.remove(&shard) {
                self.set_hold(shard, None);
                tracing::info!(
                    shard,
                    members = decision.members,
                    "releasing a shard to another replica"
                );
                self.release(shard, h.lease).await;
            }
        }
        for shard in decision.acquire {
            let current = list
                .iter()
                .find(|l| l.metadata.name.as_deref() == Some(shard_lease_name(shard).as_str()));
            self.acquire(shard, current.cloned()).await;
        }
        self.collect_stale_members(&list, now).await;
        self.record();
    }

    fn record(&self) {
        self.recorder
            .shards_held(self.held.len(), self.config.shards as usize);
    }

    fn observe(&mut self, list: &[Lease], now: Instant) {
        let mut seen = HashMap::with_capacity(list.len());
        for lease in list {
            let (Some(name), Some(rv)) = (&lease.metadata.name, &lease.metadata.resource_version)
            else {
                continue;
            };
            let since = match self.seen.remove(name) {
                Some(s) if &s.resource_version == rv => s.since,
                _ => now,
            };
            seen.insert(
                name.clone(),
                Seen {
                    resource_version: rv.clone(),
                    since,
                },
            );
        }
        self.seen = seen;
    }

    fn expired(&self, lease: &Lease, now: Instant) -> bool {
        let duration = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.config.lease_duration, Duration::from_secs);
        let since = lease
            .metadata
            .name
            .as_ref()
            .and_then(|n| self.seen.get(n))
            .map_or(now, |s| s.since);
        now.duration_since(since) > duration
    }

    fn views(&self, list: &[Lease], now: Instant) -> Vec<LeaseView> {
        list.iter()
            .filter_map(|lease| {
                let labels = lease.metadata.labels.as_ref()?;
                let name = lease.metadata.name.as_deref()?;
                let shard = match labels.get(LEASE_LABEL).map(String::as_str) {
                    Some(KIND_MEMBER) => None,
                    Some(KIND_SHARD) => Some(shard_of_lease(name)?),
                    _ => return None,
                };
                Some(LeaseView {
                    shard,
                    holder: holder_of(lease).map(str::to_string),
                    expired: self.expired(lease, now),
                    shards: lease
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(SHARDS_ANNOTATION))
                        .and_then(|v| v.parse().ok()),
                })
            })
            .collect()
    }

    /// Writes this replica's member lease anew (holder, count, renewal), created when missing.
    async fn renew_member(&self, list: &[Lease]) {
        let name = member_lease_name(&self.config.identity);
        let mut lease = self.new_lease(&name, KIND_MEMBER);
        let current = list
            .iter()
            .find(|l| l.metadata.name.as_deref() == Some(name.as_str()));
        let result = match current {
            Some(current) => {
                lease.metadata.resource_version = current.metadata.resource_version.clone();
                self.api
                    .replace(&name, &PostParams::default(), &lease)
                    .await
            }
            None => self.api.create(&PostParams::default(), &lease).await,
        };
        if let Err(e) = result {
            tracing::debug!(lease = %name, error = %e, "renewing the member lease");
        }
    }

    async fn renew_held(&mut self, list: &[Lease]) {
        let shards: Vec<u32> = self.held.keys().copied().collect();
        for shard in shards {
            let name = shard_lease_name(shard);
            let Some(current) = list
                .iter()
                .find(|l| l.metadata.name.as_deref() == Some(name.as_str()))
            else {
                tracing::warn!(shard, "the shard's lease is gone: giving the shard up");
                self.lose(shard);
                continue;
            };
            if holder_of(current) != Some(self.config.identity.as_str()) {
                tracing::warn!(
                    shard,
                    holder = holder_of(current).unwrap_or_default(),
                    "the shard's lease was taken over: giving the shard up"
                );
                self.lose(shard);
                continue;
            }
            let mut lease = current.clone();
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.renew_time = Some(now_micro());
            let sent = Instant::now();
            match self
                .api
                .replace(&name, &PostParams::default(), &lease)
                .await
            {
                Ok(lease) => {
                    if let Some(h) = self.held.get_mut(&shard) {
                        h.renewed = sent;
                        h.lease = lease;
                    }
                }
                // Someone else wrote the lease since it was listed: the next retry sees who.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => tracing::warn!(shard, error = %e, "renewing the shard's lease"),
            }
        }
    }

    async fn acquire(&mut self, shard: u32, current: Option<Lease>) {
        let name = shard_lease_name(shard);
        let transitions = current
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.lease_transitions)
            .unwrap_or(0);
        let mut lease = match current {
            Some(current) => {
                let mut lease = self.new_lease(&name, KIND_SHARD);
                lease.metadata.resource_version = current.metadata.resource_version;
                lease
            }
            None => self.new_lease(&name, KIND_SHARD),
        };
        if let Some(spec) = lease.spec.as_mut() {
            spec.lease_transitions = Some(transitions + 1);
        }
        let sent = Instant::now();
        let result = if lease.metadata.resource_version.is_some() {
            self.api
                .replace(&name, &PostParams::default(), &lease)
                .await
        } else {
            self.api.create(&PostParams::default(), &lease).await
        };
        match result {
            Ok(lease) => {
                let epoch = self.next_epoch;
                self.next_epoch += 1;
                tracing::info!(shard, identity = %self.config.identity, "acquired a shard");
                self.held.insert(
                    shard,
                    Held {
                        renewed: sent,
                        lease,
                    },
                );
                self.set_hold(shard, Some(epoch));
            }
            // Another replica was faster.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => tracing::warn!(shard, error = %e, "taking the shard's lease"),
        }
    }

    /// Clears the holder of a lease this replica holds. The copy kept here may be older than
    /// the lease (a renewal cut short by a stop may still have been written): on a conflict the
    /// lease is read again and, while it is still this replica's, released from that copy.
    async fn release(&self, shard: u32, mut lease: Lease) {
        let name = shard_lease_name(shard);
        for _ in 0..3 {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(now_micro());
            match self
                .api
                .replace(&name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => return,
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => {
                    // It expires by itself.
                    tracing::warn!(shard, error = %e, "releasing the shard's lease");
                    return;
                }
            }
            match self.api.get_opt(&name).await {
                Ok(Some(current)) if holder_of(&current) == Some(self.config.identity.as_str()) => {
                    lease = current;
                }
                // Someone else's now, or gone: nothing left to release.
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(shard, error = %e, "releasing the shard's lease");
                    return;
                }
            }
        }
    }

    /// Member leases nobody renewed for ten lease durations belong to replicas that are gone
    /// without a clean stop; they would otherwise pile up, one per pod ever run.
    async fn collect_stale_members(&self, list: &[Lease], now: Instant) {
        for lease in list {
            let is_member = lease
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LEASE_LABEL))
                .is_some_and(|k| k == KIND_MEMBER);
            let (Some(name), Some(rv)) = (&lease.metadata.name, &lease.metadata.resource_version)
            else {
                continue;
            };
            let stale = self
                .seen
                .get(name)
                .is_some_and(|s| now.duration_since(s.since) > self.config.lease_duration * 10);
            if !is_member || !stale || holder_of(lease) == Some(self.config.identity.as_str()) {
                continue;
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: Some(rv.clone()),
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            if self.api.delete(name, &dp).await.is_ok() {
                tracing::info!(lease = %name, "removed the member lease of a replica gone for good");
            }
        }
    }

    fn drop_overdue(&mut self, now: Instant) {
        let overdue: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, h)| now.duration_since(h.renewed) > self.config.renew_deadline)
            .map(|(s, _)| *s)
            .collect();
        for shard in overdue {
            tracing::warn!(
                shard,
                "the shard's lease could not be renewed within the renew deadline: giving the shard up"
            );
            self.lose(shard);
        }
    }

    fn lose(&mut self, shard: u32) {
        self.held.remove(&shard);
        self.set_hold(shard, None);
        self.record();
    }

    fn set_hold(&self, shard: u32, epoch: Option<u64>) {
        self.tx.send_if_modified(|holds| {
            let slot = &mut holds[shard as usize];
            let changed = *slot != epoch;
            *slot = epoch;
            changed
        });
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    fn new_lease(&self, name: &str, kind: &str) -> Lease {
        let now = now_micro();
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.config.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    LEASE_LABEL.to_string(),
                    kind.to_string(),
                )])),
                annotations: Some(BTreeMap::from([(
                    SHARDS_ANNOTATION.to_string(),
                    self.config.shards.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(self.duration_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..LeaseSpec::default()
            }),
        }
    }
}

fn holder_of(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(shards: u32, me: &str) -> ShardConfig {
        ShardConfig::new(shards, me, "capstan")
    }

    fn member(holder: &str, expired: bool) -> LeaseView {
        LeaseView {
            shard: None,
            holder: Some(holder.into()),
            expired,
            shards: None,
        }
    }

    fn shard(index: u32, holder: Option<&str>, expired: bool, shards: u32) -> LeaseView {
        LeaseView {
            shard: Some(index),
            holder: holder.map(str::to_string),
            expired,
            shards: Some(shards),
        }
    }

    #[test]
    fn the_assignment_is_fixed_and_spreads_applications() {
        // Fixed values (FNV-1a of `namespace/name`, computed apart from this code): a change
        // here would move applications between shards of replicas of different versions.
        assert_eq!(shard_of("capstan", "guestbook", 4), 1);
        assert_eq!(shard_of("capstan", "guestbook", 1_000_003), 98_178);
        assert_eq!(shard_of("demo", "web", 7), 5);
        assert_eq!(shard_of("capstan", "anything", 1), 0);
        let a = shard_of("capstan", "a", 1_000_003);
        let b = shard_of("capstan", "b", 1_000_003);
        assert_ne!(a, b);
        // namespace/name, not a concatenation that two apps could share.
        assert_ne!(
            shard_of("ab", "c", 1_000_003),
            shard_of("a", "bc", 1_000_003)
        );
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[shard_of("capstan", &format!("app-{i}"), 4) as usize] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven split: {counts:?}");
        }
    }

    #[test]
    fn member_lease_names_are_valid_and_distinct() {
        let a = member_lease_name("capstan-7d9f-abcde");
        let b = member_lease_name("Capstan_7D9F_ABCDE");
        assert!(a.starts_with("capstan-controller-member-capstan-7d9f-abcde-"));
        assert_ne!(a, b);
        for name in [
            a,
            b,
            member_lease_name("////"),
            member_lease_name(&"x".repeat(300)),
        ] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.ends_with('-'), "{name}");
        }
    }

    #[test]
    fn a_lone_replica_takes_every_free_shard() {
        let d = decide(&config(3, "a"), &[], &BTreeSet::new());
        assert_eq!(d.acquire, vec![0, 1, 2]);
        assert_eq!(d.members, 1);
        // An expired lease of a replica that died is free; a live one is not.
        let leases = [
            shard(0, Some("dead"), true, 3),
            shard(1, Some("b"), false, 3),
            member("b", false),
        ];
        let d = decide(&config(3, "a"), &leases, &BTreeSet::new());
        assert_eq!(d.members, 2);
        assert_eq!(d.acquire, vec![0, 2]);
    }

    #[test]
    fn replicas_split_the_shards_and_release_the_excess_to_a_newcomer() {
        // a holds all four; b joins: a's fair share is two, it gives up the highest two.
        let leases = [member("a", false), member("b", false)];
        let all: BTreeSet<u32> = (0..4).collect();
        let d = decide(&config(4, "a"), &leases, &all);
        assert_eq!(d.release, vec![3, 2]);
        assert!(d.acquire.is_empty());
        // b takes only what is free, never a live lease of a.
        let leases = [
            member("a", false),
            shard(0, Some("a"), false, 4),
            shard(1, Some("a"), false, 4),
            shard(2, None, false, 4),
            shard(3, None, false, 4),
        ];
        let d = decide(&config(4, "b"), &leases, &BTreeSet::new());
        assert_eq!(d.acquire, vec![2, 3]);
        // More replicas than shards: the extra ones stand by.
        let leases = [
            member("a", false),
            member("b", false),
            shard(0, Some("a"), false, 2),
            shard(1, Some("b"), false, 2),
        ];
        let d = decide(&config(2, "c"), &leases, &BTreeSet::new());
        assert_eq!(d.members, 3);
        assert!(d.acquire.is_empty() && d.release.is_empty());
    }

    #[test]
    fn a_dead_member_no_longer_counts() {
        let leases = [member("b", true), shard(1, Some("b"), true, 2)];
        let held = BTreeSet::from([0]);
        let d = decide(&config(2, "a"), &leases, &held);
        assert_eq!(d.members, 1);
        assert_eq!(d.acquire, vec![1]);
    }

    #[test]
    fn a_member_of_another_count_does_not_take_a_share() {
        // The old replica must not release a shard to a newcomer that cannot take it.
        let mut newcomer = member("new", false);
        newcomer.shards = Some(3);
        let d = decide(&config(2, "old"), &[newcomer], &BTreeSet::from([0, 1]));
        assert_eq!(d.members, 1);
        assert!(d.release.is_empty());
    }

    #[test]
    fn no_shard_is_taken_while_a_replica_partitions_by_another_count() {
        let leases = [member("old", false), shard(0, Some("old"), false, 2)];
        let d = decide(&config(3, "new"), &leases, &BTreeSet::new());
        assert!(d.acquire.is_empty());
        let why = d.waiting.expect("a reason");
        assert!(why.contains("old") && why.contains("2 shards"), "{why}");
        // Once the old replica's lease is released or expired, the new count takes over.
        let leases = [shard(0, None, false, 2)];
        let d = decide(&config(3, "new"), &leases, &BTreeSet::new());
        assert_eq!(d.acquire, vec![0, 1, 2]);
    }

    #[test]
    fn settings_are_checked() {
        assert!(config(1, "a").validate().is_ok());
        assert!(config(1, " ").validate().unwrap_err().contains("identity"));
        let mut c = config(2, "a");
        c.renew_deadline = c.lease_duration;
        assert!(c.validate().unwrap_err().contains("renew deadline"));
        let mut c = config(2, "a");
        c.retry_period = c.renew_deadline;
        assert!(c.validate().unwrap_err().contains("retry period"));
    }

    #[tokio::test]
    async fn a_claim_ends_when_its_hold_ends() {
        let (tx, rx) = watch::channel(vec![Some(1), None]);
        let ownership = Ownership {
            shards: 2,
            rx: Some(rx),
        };
        let (ns, name) = (0..100)
            .map(|i| ("capstan".to_string(), format!("app-{i}")))
            .find(|(ns, n)| ownership.shard_of(ns, n) == 0)
            .expect("an app of shard 0");
        let claim = ownership.claim(&ns, &name).expect("held");
        let lost = tokio::spawn(claim.lost());
        tokio::task::yield_now().await;
        assert!(!lost.is_finished());
        // Lost and taken again: the old claim still ends.
        tx.send_replace(vec![Some(2), None]);
        tokio::time::timeout(Duration::from_secs(5), lost)
            .await
            .expect("the claim ends")
            .expect("no panic");
        // Once the manager is gone, nothing is held any more.
        drop(tx);
        assert!(ownership.claim(&ns, &name).is_none());
        // An everything() ownership never loses its claim.
        let all = Ownership::everything();
        let claim = all.claim("capstan", "x").expect("always held");
        let never = tokio::time::timeout(Duration::from_millis(50), claim.lost()).await;
        assert!(never.is_err());
    }
}
