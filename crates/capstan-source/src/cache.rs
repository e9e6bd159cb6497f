//! The repository cache: one bare object store per repository, refreshed on demand.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use gix::{
    ObjectId,
    protocol::{handshake::Ref, transport::client::blocking_io},
    remote::Direction,
};

use crate::{
    SourceError,
    error::gix_message,
    materialize,
    revision::{self, Advertised, Lookup, LookupError, RefTarget},
    secret::{Credentials, TOKEN_USERNAME},
    ssh,
    url::{RepoUrl, Scheme},
};

/// What kind of revision a `targetRevision` turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RevisionKind {
    /// `HEAD` or the empty revision: the remote's default branch.
    Head,
    /// A branch (`main`, `refs/heads/main`).
    Branch,
    /// A tag (lightweight or annotated; annotated tags are peeled to their commit).
    Tag,
    /// A full or abbreviated commit id.
    Commit,
    /// A semver constraint, resolved to the highest matching tag.
    Semver,
}

/// A resolved revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The commit id, 40 lower-case hex digits.
    pub commit: String,
    /// What the revision resolved through: the full ref name (`refs/heads/main`,
    /// `refs/tags/v1.2.3`; for `HEAD` the branch it points to), or the commit id for a SHA.
    pub revision: String,
    /// The kind of revision that was asked for.
    pub kind: RevisionKind,
    /// Whether this call downloaded objects from the remote. `false` when the remote's refs were
    /// unchanged since the last check (or a concurrent call already fetched them).
    pub fetched: bool,
}

/// A commit's tree materialized on disk, read-only and shared by every caller.
///
/// The handle keeps the tree on disk: while it (or a clone) lives, [`RepoCache::prune`] of the
/// cache that returned it does not delete the directory. Hold it for as long as `root` is read
/// (e.g. for the whole of a render), and drop it afterwards. Two handles are equal when they
/// name the same tree.
#[derive(Clone, Debug)]
pub struct Tree {
    /// The directory holding the files (`<cache>/trees/<tree-id>`). Never write into it.
    pub root: PathBuf,
    /// The Git tree id, which the directory is named after.
    pub tree_id: String,
    /// Symlinks of the tree that were not created because they point outside it (absolute, or
    /// climbing above the root, possibly through other links). Paths relative to `root`. A
    /// renderer asked to read one of them should report it rather than "file not found".
    pub skipped_symlinks: Vec<String>,
    /// The in-use registration; shared by clones, released when the last one drops.
    _hold: Arc<Hold>,
}

impl PartialEq for Tree {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root
            && self.tree_id == other.tree_id
            && self.skipped_symlinks == other.skipped_symlinks
    }
}

impl Eq for Tree {}

/// How the trees of one cache are being used, by tree id.
type Uses = Mutex<HashMap<String, TreeUse>>;

#[derive(Debug)]
struct TreeUse {
    /// Live [`Hold`]s (one per `materialize` call whose `Tree` has not been dropped).
    holders: usize,
    /// When it was last materialized or released.
    last_used: SystemTime,
    /// When this process last set the directory's mtime (the use record a restart finds).
    touched: Option<Instant>,
}

/// A registration of one tree as in use; see [`Tree`].
struct Hold {
    uses: Arc<Uses>,
    id: String,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold").field("tree", &self.id).finish()
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut uses = lock(&self.uses);
        if let Some(u) = uses.get_mut(&self.id) {
            u.holders = u.holders.saturating_sub(1);
            u.last_used = SystemTime::now();
        }
    }
}

/// A tree's directory mtime is refreshed at most this often by `materialize`: it is what tells
/// a restarted process (or another one sharing the directory) that the tree was in use, and a
/// minute of imprecision is nothing against ages of an hour.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Leftovers of writes younger than this are never removed by `prune`, whatever its
/// `max_unused`: a materialization (of this process or another) may still be writing them.
const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

/// Every fetch adds a pack to a bare repository, each lookup of an object searches every pack's
/// index, and gix's object store holds a bounded number of indices ([`STORE_SLOTS`]; its default,
/// 32, made the 33rd fetch of a process fail with "too few index slots"). So a repository with
/// this many packs is repacked into one before the next fetch (git's own `gc.autoPackLimit` is
/// 50).
const PACK_LIMIT: usize = 32;

/// Index slots of each repository's object store, at least: room for [`PACK_LIMIT`] packs, the
/// pack a repack writes, and indices still held by readers while their packs are replaced.
const STORE_SLOTS: usize = 256;

/// A store that cannot be repacked is reopened when fewer than this many of its slots are free.
const SLOT_MARGIN: usize = 16;

/// After a repack failed, the fetches of the next this-long do not try again (a `git repack` of
/// a large repository is expensive, and a repository that cannot be repacked now, out of disk or
/// damaged, mostly cannot a minute later); the periodic prune still does.
const REPACK_BACKOFF: Duration = Duration::from_secs(600);

/// Suffix of the file beside a tree that lists its skipped symlinks.
const SIDECAR_SUFFIX: &str = ".skipped-symlinks";

/// What [`RepoCache::prune`] did.
#[derive(Debug, Default)]
pub struct PruneReport {
    /// Materialized trees deleted.
    pub trees_removed: u64,
    /// Trees left on disk (recently used or held).
    pub trees_kept: u64,
    /// Of the trees kept, those held by a live [`Tree`] handle at the time.
    pub trees_in_use: u64,
    /// Blobs deleted from the store because no tree links them any more.
    pub blobs_removed: u64,
    /// Blobs left in the store.
    pub blobs_kept: u64,
    /// Leftover temporary files and directories (of crashed or failed writes) deleted.
    pub temporaries_removed: u64,
    /// File content bytes freed (blobs and unshared files; directories and symlinks not counted).
    pub bytes_freed: u64,
    /// Bare repositories whose packs (one per fetch) were consolidated into one.
    pub repositories_repacked: u64,
    /// Entries that could not be removed (each names its path); they are retried next time.
    pub failures: Vec<SourceError>,
}

/// Counters for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Remote ref listings (the "has it changed?" round trips).
    pub remote_checks: u64,
    /// Fetches: ref listings that found changed refs (or objects missing) and went on to the
    /// fetch phase. A pack is downloaded only when objects are missing, which
    /// [`Resolved::fetched`] reports.
    pub fetches: u64,
    /// Trees written to disk by [`RepoCache::materialize`].
    pub trees_written: u64,
    /// File contents written into the blob store by [`RepoCache::materialize`] (every other
    /// file of a written tree is a hard link to a blob written before).
    pub blobs_written: u64,
    /// Repositories repacked into one pack (before a fetch, or by a prune).
    pub repacks: u64,
}

/// The Git wire protocol version to speak.
///
/// With V1 the ref advertisement comes with the first response, so an unchanged repository
/// costs exactly one round trip (one HTTP request). V2 needs a second request (`ls-refs`) but
/// lets the server filter the refs to branches and tags, which is smaller on hosts with many
/// other refs (pull request refs). The benchmark prints both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProtocolVersion {
    /// Protocol v1 (the default: one round trip per unchanged refresh).
    #[default]
    V1,
    /// Protocol v2.
    V2,
}

/// Per-repository state. The `state` mutex is held for the whole of a refresh, which is what
/// makes concurrent refreshes of one repository coalesce.
struct Slot {
    key: String,
    url_display: String,
    /// The open object store. Replaced (under the `state` lock) when it must be reopened with
    /// more index slots; readers take a handle and keep using it.
    store: Mutex<OpenStore>,
    state: Mutex<RefreshState>,
    /// When repacking before a fetch last failed (see [`REPACK_BACKOFF`]).
    repack_failed: Mutex<Option<Instant>>,
}

struct OpenStore {
    repo: gix::ThreadSafeRepository,
    /// The index slots it was opened with (see [`slots_for`]).
    slots: usize,
}

impl Slot {
    /// A handle on the current object store.
    fn repo(&self) -> gix::ThreadSafeRepository {
        lock(&self.store).repo.clone()
    }
}

#[derive(Default)]
struct RefreshState {
    /// The refs the remote advertised at the last successful check.
    advertised: Option<Advertised>,
    /// The last successful check: when it began asking the remote, when it finished, and with
    /// which credentials (memory only).
    last_check: Option<LastCheck>,
}

struct LastCheck {
    started: Instant,
    done: Instant,
    creds: Credentials,
}

/// The cache of repositories and materialized trees. `Send + Sync`: share one per process in an
/// `Arc`.
///
/// Layout under the directory given to [`RepoCache::new`]:
/// - `repos/<hash of the normalised URL>/`: a bare repository holding every branch and tag of
///   the remote (`refs/heads/*`, `refs/tags/*`). Its config never holds the URL or credentials;
///   the remote is anonymous and lives only in memory.
/// - `trees/<tree-id>/`: materialized trees, read-only (files 0444 or 0555, directories 0555).
///   Written into `trees/.tmp-*` and renamed, so a reader never sees half a tree. The mtime of
///   the directory is refreshed when the tree is used, for [`RepoCache::prune`].
/// - `trees/<tree-id>.skipped-symlinks`: the escaping symlinks left out of that tree, if any.
/// - `blobs/<blob-id>` (`blobs/<blob-id>.x` when executable): file contents, read-only; every
///   file of a tree is a hard link to one of them, so a file shared by many commits' trees is
///   written and stored once. A blob whose link count is 1 is used by no tree.
/// - `ssh_known_hosts`: host keys accepted with `accept_new_hosts` (public keys only).
pub struct RepoCache {
    dir: PathBuf,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    tree_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Which trees are held and when each was last used. Taken by `materialize` before it looks
    /// at the disk, and by `prune` while it decides about and moves away one tree.
    uses: Arc<Uses>,
    /// One prune at a time.
    pruning: Mutex<()>,
    remote_checks: AtomicU64,
    fetches: AtomicU64,
    trees_written: AtomicU64,
    blobs_written: AtomicU64,
    repacks: AtomicU64,
    tmp_counter: AtomicU64,
    protocol: ProtocolVersion,
    ssh_program: PathBuf,
    /// The `git` program that repacks repositories.
    git_program: PathBuf,
}

/// Lock a mutex even if a panicking thread poisoned it: the data behind our mutexes is replaced
/// whole on success, so a poisoned value is still a consistent earlier state.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RepoCache {
    /// Open (creating if needed) a cache in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, SourceError> {
        let dir = dir.into();
        for sub in ["repos", "trees", "blobs"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| SourceError::io(&p, e))?;
        }
        let dir = dir.canonicalize().map_err(|e| SourceError::io(&dir, e))?;
        Ok(RepoCache {
            dir,
            slots: Mutex::new(HashMap::new()),
            tree_locks: Mutex::new(HashMap::new()),
            uses: Arc::new(Mutex::new(HashMap::new())),
            pruning: Mutex::new(()),
            remote_checks: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            trees_written: AtomicU64::new(0),
            blobs_written: AtomicU64::new(0),
            repacks: AtomicU64::new(0),
            tmp_counter: AtomicU64::new(0),
            protocol: ProtocolVersion::default(),
            ssh_program: PathBuf::from("ssh"),
            git_program: PathBuf::from("git"),
        })
    }

    /// Speak this Git protocol version (default [`ProtocolVersion::V1`]).
    pub fn with_protocol(mut self, version: ProtocolVersion) -> Self {
        self.protocol = version;
        self
    }

    /// Use this program instead of `ssh` from `PATH` for ssh URLs. It receives OpenSSH's
    /// arguments (`-i`, `-o Option=value`, `-p PORT`, `[user@]host`, the remote command).
    pub fn with_ssh_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.ssh_program = program.into();
        self
    }

    /// Use this `git` program to repack repositories (default: `git` on the PATH). Without one,
    /// packs are not consolidated and the object store is reopened with more slots instead.
    pub fn with_git_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.git_program = program.into();
        self
    }

    /// The cache directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counters since this cache was created.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            remote_checks: self.remote_checks.load(Ordering::Relaxed),
            fetches: self.fetches.load(Ordering::Relaxed),
            trees_written: self.trees_written.load(Ordering::Relaxed),
            blobs_written: self.blobs_written.load(Ordering::Relaxed),
            repacks: self.repacks.load(Ordering::Relaxed),
        }
    }

    /// Resolve a targetRevision (branch, tag, full/short SHA, `HEAD`, `""` = `HEAD`, semver
    /// constraint over tags like `">=1.2.0 <2"`, `"1.x"`, `"~1.2"`) to a commit, fetching only
    /// when the remote's advertised refs changed. Concurrent calls for the same repository
    /// coalesce into one fetch.
    ///
    /// Every call but one asks the remote for its refs (one round trip), because branches move;
    /// the exception is a full commit id already in the cache, which is immutable and needs no
    /// network at all.
    pub fn resolve(
        &self,
        url: &RepoUrl,
        creds: &Credentials,
        revision: &str,
    ) -> Result<Resolved, SourceError> {
        self.resolve_since(url, creds, revision, Instant::now())
    }

    /// [`RepoCache::resolve`], but content with the remote's refs as seen by a check that
    /// began at or after `since`: a caller that only needs Git "as of" a moment (the moment a
    /// refresh was asked for, or a second ago for a periodic comparison) passes it, and the
    /// remote is asked again only when no such check was made. This is what spares a
    /// repository holding many applications one ref listing (for `file://`, one
    /// `git-upload-pack` process) per application per refresh. A `since` in the future or
    /// `Instant::now()` behaves exactly as [`RepoCache::resolve`].
    pub fn resolve_since(
        &self,
        url: &RepoUrl,
        creds: &Credentials,
        revision: &str,
        since: Instant,
    ) -> Result<Resolved, SourceError> {
        let entered = Instant::now();
        let slot = self.slot(url)?;
        let rev = revision.trim();

        if rev.len() == 40
            && rev.bytes().all(|b| b.is_ascii_hexdigit())
            && let Ok(id) = ObjectId::from_hex(rev.to_ascii_lowercase().as_bytes())
        {
            let repo = slot.repo().to_thread_local();
            if repo.has_object(id) {
                let commit = peel_to_commit(&repo, id, &slot.url_display, rev)?;
                return Ok(Resolved {
                    commit: commit.to_string(),
                    revision: commit.to_string(),
                    kind: RevisionKind::Commit,
                    fetched: false,
                });
            }
        }

        let (advertised, fetched) = {
            let mut state = lock(&slot.state);
            let coalesced = match (&state.last_check, &state.advertised) {
                // A check with the same credentials finished after this call began (it saw the
                // remote at a moment during this call, so its answer is as fresh as our own),
                // or began no earlier than the caller asked for.
                (Some(last), Some(adv))
                    if (last.done >= entered || last.started >= since) && last.creds == *creds =>
                {
                    Some(adv.clone())
                }
                _ => None,
            };
            match coalesced {
                Some(adv) => (adv, false),
                None => {
                    self.make_room(&slot, url);
                    let repo = slot.repo().to_thread_local();
                    let fetched = self.refresh(&repo, url, &slot.url_display, creds, &mut state)?;
                    let adv = state.advertised.clone().unwrap_or_default();
                    (adv, fetched)
                }
            }
        };

        // The store may have been reopened to make room for the fetch: read through the
        // current one.
        let repo = slot.repo().to_thread_local();
        let not_found = |reason: String| SourceError::RevisionNotFound {
            url: slot.url_display.clone(),
            revision: revision.to_owned(),
            reason,
        };
        let invalid = |reason: String| SourceError::InvalidRevision {
            url: slot.url_display.clone(),
            revision: revision.to_owned(),
            reason,
        };
        let (id, name, kind) = match revision::lookup(&advertised, rev) {
            Ok(Lookup::Ref { name, kind, target }) => (target, name, kind),
            Ok(Lookup::FullId(id)) => {
                if !repo.has_object(id) {
                    return Err(not_found(
                        "no such commit among the objects of the remote's branches and tags".into(),
                    ));
                }
                (id, id.to_string(), RevisionKind::Commit)
            }
            Ok(Lookup::ShortId(hex)) => {
                let prefix =
                    gix::hash::Prefix::from_hex(&hex).map_err(|e| invalid(e.to_string()))?;
                let found = repo
                    .objects
                    .lookup_prefix(prefix, None)
                    .map_err(|e| invalid(format!("looking up the abbreviated id failed: {e}")))?;
                match found {
                    Some(Ok(id)) => (id, id.to_string(), RevisionKind::Commit),
                    Some(Err(())) => {
                        return Err(invalid("the abbreviated commit id is ambiguous".into()));
                    }
                    None => {
                        return Err(not_found(
                            "no branch, tag or commit id (abbreviated) matches it".into(),
                        ));
                    }
                }
            }
            Err(LookupError::NotFound(reason)) => return Err(not_found(reason)),
            Err(LookupError::Invalid(reason)) => return Err(invalid(reason)),
        };
        let commit = peel_to_commit(&repo, id, &slot.url_display, revision)?;
        let revision_name = if kind == RevisionKind::Commit {
            commit.to_string()
        } else {
            name
        };
        Ok(Resolved {
            commit: commit.to_string(),
            revision: revision_name,
            kind,
            fetched,
        })
    }

    /// The commit's tree on disk, read-only, content-addressed by tree id, written once and
    /// shared. The commit must be in the cache already (resolve a revision first).
    ///
    /// The returned [`Tree`] keeps the directory from being pruned until it is dropped. Files
    /// are hard links into the cache's blob store, so a tree that differs from one written
    /// before in a few files costs a `link()` for each other file.
    pub fn materialize(&self, url: &RepoUrl, commit: &str) -> Result<Tree, SourceError> {
        let slot = self.existing_slot(url, commit)?;
        let repo = slot.repo().to_thread_local();
        let tree_id = commit_tree(&repo, &slot.url_display, commit)?;
        let id = tree_id.to_string();
        // Registered before the disk is looked at: from here on `prune` leaves this tree alone,
        // and a prune that came first has moved its directory away, so it is written anew.
        let (hold, touch) = self.hold(&id);
        let trees = self.dir.join("trees");
        let root = trees.join(&id);
        let sidecar = trees.join(format!("{id}{SIDECAR_SUFFIX}"));
        let finished = |root: PathBuf| -> Result<Tree, SourceError> {
            let skipped_symlinks = match std::fs::read_to_string(&sidecar) {
                Ok(text) => text.lines().map(str::to_owned).collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(SourceError::io(&sidecar, e)),
            };
            Ok(Tree {
                root,
                tree_id: id.clone(),
                skipped_symlinks,
                _hold: Arc::clone(&hold),
            })
        };
        if root.is_dir() {
            if touch {
                touch_dir(&root);
            }
            return finished(root);
        }

        let tree_lock = Arc::clone(lock(&self.tree_locks).entry(id.clone()).or_default());
        let result = {
            let _writing = lock(&tree_lock);
            if root.is_dir() {
                finished(root.clone())
            } else {
                self.write_tree(&repo, &slot.url_display, tree_id, &root, &sidecar)
                    .and_then(|()| finished(root.clone()))
            }
        };
        let mut locks = lock(&self.tree_locks);
        if Arc::strong_count(&tree_lock) == 2 {
            // Only the map and this call hold it: nobody waits, so forget it.
            locks.remove(&id);
        }
        result
    }

    /// The id of the tree (or blob) at `path` in `commit`, or `None` if nothing is there. `""`
    /// and `"."` name the root. The path must be relative and must not contain `..`.
    pub fn path_tree_id(
        &self,
        url: &RepoUrl,
        commit: &str,
        path: &str,
    ) -> Result<Option<String>, SourceError> {
        let slot = self.existing_slot(url, commit)?;
        let invalid = |reason: &str| SourceError::InvalidPath {
            url: slot.url_display.clone(),
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        if path.starts_with('/') {
            return Err(invalid("the path must be relative to the repository root"));
        }
        let mut parts = Vec::new();
        for comp in path.split('/') {
            match comp {
                "" | "." => {}
                ".." => return Err(invalid("the path must not contain '..'")),
                c => parts.push(c),
            }
        }
        let repo = slot.repo().to_thread_local();
        let tree_id = commit_tree(&repo, &slot.url_display, commit)?;
        if parts.is_empty() {
            return Ok(Some(tree_id.to_string()));
        }
        let tree = repo
            .find_tree(tree_id)
            .map_err(|e| SourceError::Repository {
                url: slot.url_display.clone(),
                message: format!("reading tree {tree_id}: {e}"),
            })?;
        let entry =
            tree.lookup_entry_by_path(parts.join("/"))
                .map_err(|e| SourceError::Repository {
                    url: slot.url_display.clone(),
                    message: format!("looking up {path:?} at {commit}: {}", gix_message(&e)),
                })?;
        Ok(entry.map(|e| e.object_id().to_string()))
    }

    /// The slot for `url`, opening or creating its bare repository on first use.
    fn slot(&self, url: &RepoUrl) -> Result<Arc<Slot>, SourceError> {
        let key = url.cache_key().to_owned();
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get(&key) {
            return Ok(Arc::clone(slot));
        }
        let path = self.dir.join("repos").join(url.dir_name());
        let store = if path.join("HEAD").exists() {
            open_store(&path, url)?
        } else {
            init_store(&self.dir.join("repos"), &path, url, &self.tmp_name())?
        };
        let slot = Arc::new(Slot {
            key: key.clone(),
            url_display: url.to_string(),
            store: Mutex::new(store),
            state: Mutex::new(RefreshState::default()),
            repack_failed: Mutex::new(None),
        });
        slots.insert(key, Arc::clone(&slot));
        Ok(slot)
    }

    /// The slot for `url` only if its store exists: materializing needs fetched objects.
    fn existing_slot(&self, url: &RepoUrl, commit: &str) -> Result<Arc<Slot>, SourceError> {
        if let Some(slot) = lock(&self.slots).get(url.cache_key()) {
            debug_assert_eq!(slot.key, url.cache_key());
            return Ok(Arc::clone(slot));
        }
        if !self
            .dir
            .join("repos")
            .join(url.dir_name())
            .join("HEAD")
            .exists()
        {
            return Err(SourceError::Commit {
                url: url.to_string(),
                commit: commit.to_owned(),
                reason: "the repository is not in the cache; resolve a revision first".into(),
            });
        }
        self.slot(url)
    }

    fn tmp_name(&self) -> String {
        self.scratch_name(".tmp")
    }

    /// `<prefix>-<pid>-<n>`: unique among the processes (and caches of one process) sharing the
    /// directory, and says who made it to someone looking at the disk.
    fn scratch_name(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{}-{}",
            std::process::id(),
            self.tmp_counter.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Register one more holder of tree `id`; also says whether its directory's mtime is due
    /// a refresh.
    fn hold(&self, id: &str) -> (Arc<Hold>, bool) {
        let mut uses = lock(&self.uses);
        let now = SystemTime::now();
        let u = uses.entry(id.to_owned()).or_insert(TreeUse {
            holders: 0,
            last_used: now,
            touched: None,
        });
        u.holders += 1;
        u.last_used = now;
        let touch = u.touched.is_none_or(|t| t.elapsed() >= TOUCH_EVERY);
        if touch {
            u.touched = Some(Instant::now());
        }
        let hold = Arc::new(Hold {
            uses: Arc::clone(&self.uses),
            id: id.to_owned(),
        });
        (hold, touch)
    }

    /// [`prune`](Self::prune), when the last prune through this method is older than `every`
    /// (a stamp file in the cache directory, written first, so that processes started meanwhile
    /// do not prune as well): for short-lived processes (`capstan render`, `capstan app diff`)
    /// that run no periodic prune. `None` when it was not due.
    pub fn prune_if_due(
        &self,
        every: Duration,
        max_unused: Duration,
    ) -> Result<Option<PruneReport>, SourceError> {
        let stamp = self.dir.join(".last-prune");
        let due = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .map_or(true, |t| t.elapsed().map_or(true, |age| age >= every));
        if !due {
            return Ok(None);
        }
        std::fs::write(&stamp, b"").map_err(|e| SourceError::io(&stamp, e))?;
        self.prune(max_unused).map(Some)
    }

    /// Delete what no one has used for `max_unused`: materialized trees not materialized, nor
    /// held by a live [`Tree`], for at least that long; then blobs that no tree links any more;
    /// and temporaries left by failed or crashed writes. Returns what was removed.
    ///
    /// Meant to be called periodically by a long-running process, from a blocking context
    /// (`spawn_blocking`): e.g. every 10 minutes with `max_unused` of one hour. The age must be
    /// well above the refresh interval, so that the trees of the revisions applications are
    /// deployed at (materialized again at every refresh) never age out; anything pruned too
    /// eagerly is only written again on its next use. The cost is a `stat` per tree and per
    /// blob, plus deleting what goes.
    ///
    /// Safety: a tree is only deleted when no [`Tree`] handle from *this* `RepoCache` holds it,
    /// and a materialization racing the prune either holds it first (the tree stays) or finds
    /// it gone and writes it again; so a renderer never sees a tree vanish under it. Handles of
    /// another `RepoCache` (or process) over the same directory are not seen: their trees are
    /// protected only by age (the directory's mtime is refreshed on every use, at most a minute
    /// late), so give every directory one `RepoCache` per process, shared. Leftovers of writes
    /// (`trees/.tmp-*`) are kept for at least an hour whatever `max_unused`.
    ///
    /// Only listing the `trees` or `blobs` directory is an error; entries that cannot be
    /// removed are listed in [`PruneReport::failures`] and retried at the next prune.
    ///
    /// The bare repositories under `repos/` are not deleted: each is bounded by its remote's
    /// history, and deleting one would mean a full clone on next use. Their packs (one per
    /// fetch) are consolidated before a fetch when there are too many; a repository that still
    /// has too many (its repack failed) is repacked here again, holding its refresh lock.
    pub fn prune(&self, max_unused: Duration) -> Result<PruneReport, SourceError> {
        let _one_at_a_time = lock(&self.pruning);
        let mut report = PruneReport::default();
        self.repack(&mut report);
        let now = SystemTime::now();
        let age_of = |time: SystemTime| now.duration_since(time).unwrap_or(Duration::ZERO);
        let trees = self.dir.join("trees");
        let blobs = self.dir.join("blobs");
        let mut on_disk = std::collections::HashSet::new();

        for entry in list(&trees)? {
            let (name, path) = (entry.0, entry.1);
            if name.starts_with('.') || name.ends_with(SIDECAR_SUFFIX) {
                prune_leftover(&name, &path, max_unused, &mut report);
                continue;
            }
            if !materialize::is_object_id(&name) {
                // Not ours to delete.
                continue;
            }
            on_disk.insert(name.clone());
            let modified = match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => meta.modified().unwrap_or(now),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    report.failures.push(SourceError::io(&path, e));
                    continue;
                }
            };
            let doomed = {
                let mut uses = lock(&self.uses);
                let used = uses.get(&name);
                if used.is_some_and(|u| u.holders > 0) {
                    report.trees_in_use += 1;
                    report.trees_kept += 1;
                    continue;
                }
                let last = used.map_or(modified, |u| u.last_used.max(modified));
                if age_of(last) < max_unused {
                    report.trees_kept += 1;
                    continue;
                }
                // Moved away under the lock, so no materialization can return it from now on;
                // deleted (slowly) after the lock is released.
                let doomed = trees.join(self.scratch_name(".del"));
                if let Err(e) = std::fs::rename(&path, &doomed) {
                    report.failures.push(SourceError::io(&path, e));
                    report.trees_kept += 1;
                    continue;
                }
                let sidecar = trees.join(format!("{name}{SIDECAR_SUFFIX}"));
                match std::fs::remove_file(&sidecar) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        report.failures.push(SourceError::io(&sidecar, e));
                    }
                    _ => {}
                }
                uses.remove(&name);
                doomed
            };
            report.trees_removed += 1;
            match materialize::force_remove(&doomed) {
                Ok(bytes) => report.bytes_freed += bytes,
                // Left as `.del-*`, which the next prune removes.
                Err(e) => report.failures.push(SourceError::io(&doomed, e)),
            }
        }

        // Forget the use records of trees that are neither on disk nor held (a materialization
        // that failed, or a tree removed by hand), so the map stays as small as the cache.
        lock(&self.uses).retain(|id, u| u.holders > 0 || on_disk.contains(id));

        for (name, path) in list(&blobs)? {
            if !materialize::is_blob_name(&name) {
                continue;
            }
            use std::os::unix::fs::MetadataExt;
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    report.failures.push(SourceError::io(&path, e));
                    continue;
                }
            };
            // A materialization linking this blob right now either got its link in first (the
            // count is 2 and it stays) or finds it gone and writes it again: removing a blob's
            // name never changes a tree's files, which are links of their own.
            if !meta.is_file() || meta.nlink() > 1 {
                report.blobs_kept += 1;
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    report.blobs_removed += 1;
                    report.bytes_freed += meta.len();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    report.failures.push(SourceError::io(&path, e));
                    report.blobs_kept += 1;
                }
            }
        }
        tracing::debug!(
            trees_removed = report.trees_removed,
            trees_kept = report.trees_kept,
            blobs_removed = report.blobs_removed,
            bytes_freed = report.bytes_freed,
            failures = report.failures.len(),
            "source cache pruned"
        );
        Ok(report)
    }

    /// Repacks the repositories of this cache that have [`PACK_LIMIT`] packs or more.
    fn repack(&self, report: &mut PruneReport) {
        let slots: Vec<Arc<Slot>> = lock(&self.slots).values().cloned().collect();
        for slot in slots {
            // No refresh of this repository (the only writer of packs) until the repack is done.
            let _no_fetch = lock(&slot.state);
            match repack_if_needed(&self.git_program, slot.repo().path(), &slot.url_display) {
                Ok(true) => {
                    self.repacks.fetch_add(1, Ordering::Relaxed);
                    report.repositories_repacked += 1;
                }
                Ok(false) => {}
                Err(e) => report.failures.push(e),
            }
        }
    }

    /// Before a fetch (which adds a pack), with the slot's refresh lock held: repacks the
    /// repository when it has [`PACK_LIMIT`] packs; when that is not possible (no `git`),
    /// reopens the store with slots for the packs on disk once they are about to run out, so
    /// fetching never fails for want of slots (lookups just get slower, one index per pack).
    /// A repack that failed is not tried again before [`REPACK_BACKOFF`] has passed.
    fn make_room(&self, slot: &Slot, url: &RepoUrl) {
        let git_dir = slot.repo().path().to_path_buf();
        let backing_off = lock(&slot.repack_failed).is_some_and(|t| t.elapsed() < REPACK_BACKOFF);
        let failure = if backing_off {
            "an earlier repack failed; not tried again yet".to_string()
        } else {
            match repack_if_needed(&self.git_program, &git_dir, &slot.url_display) {
                Ok(true) => {
                    self.repacks.fetch_add(1, Ordering::Relaxed);
                    *lock(&slot.repack_failed) = None;
                    return;
                }
                Ok(false) => return,
                Err(e) => {
                    *lock(&slot.repack_failed) = Some(Instant::now());
                    e.to_string()
                }
            }
        };
        tracing::debug!(error = %failure, "cannot consolidate the repository's packs");
        let packs = match count_packs(&git_dir) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "counting the repository's packs");
                return;
            }
        };
        if packs + SLOT_MARGIN < lock(&slot.store).slots {
            return;
        }
        match open_store(&git_dir, url) {
            Ok(store) => {
                tracing::warn!(
                    url = %slot.url_display,
                    packs,
                    slots = store.slots,
                    error = %failure,
                    "the repository cannot be repacked; reopened its object store with more slots"
                );
                *lock(&slot.store) = store;
            }
            Err(e) => tracing::warn!(error = %e, "reopening the object store"),
        }
    }

    fn write_tree(
        &self,
        repo: &gix::Repository,
        url: &str,
        tree_id: ObjectId,
        root: &Path,
        sidecar: &Path,
    ) -> Result<(), SourceError> {
        let tmp = self.dir.join("trees").join(self.tmp_name());
        let cleanup = |err: SourceError| {
            if let Err(e) = materialize::force_remove(&tmp) {
                tracing::warn!(path = %tmp.display(), error = %e, "could not remove a temporary tree");
            }
            err
        };
        let blobs = self.dir.join("blobs");
        let written = materialize::write_tree(repo, tree_id, &tmp, &blobs).map_err(|e| {
            cleanup(match e {
                materialize::WriteError::Tree(message) => SourceError::Repository {
                    url: url.to_owned(),
                    message: format!("materializing tree {tree_id}: {message}"),
                },
                materialize::WriteError::Io(path, source) => SourceError::Io { path, source },
            })
        })?;
        let skipped = written.skipped_symlinks;
        self.blobs_written
            .fetch_add(written.blobs_written, Ordering::Relaxed);
        if !skipped.is_empty() {
            tracing::warn!(%url, tree = %tree_id, links = ?skipped, "symlinks pointing outside the tree were not materialized");
            let mut text = skipped.join("\n");
            text.push('\n');
            std::fs::write(sidecar, text).map_err(|e| cleanup(SourceError::io(sidecar, e)))?;
        }
        match std::fs::rename(&tmp, root) {
            Ok(()) => {}
            // Another process won the race; its tree has the same content.
            Err(_) if root.is_dir() => {
                let _ = materialize::force_remove(&tmp);
            }
            Err(e) => return Err(cleanup(SourceError::io(root, e))),
        }
        self.trees_written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Ask the remote for its refs; fetch when they differ from the last check. Returns whether
    /// objects were downloaded. Holds the slot's state lock (the caller's `state`) throughout.
    fn refresh(
        &self,
        repo: &gix::Repository,
        url: &RepoUrl,
        url_display: &str,
        creds: &Credentials,
        state: &mut RefreshState,
    ) -> Result<bool, SourceError> {
        let started = Instant::now();
        let fetch_err = |message: String| SourceError::Fetch {
            url: url_display.to_owned(),
            message,
        };
        let gix_err = |e: gix::Error| {
            let message = gix_message(&e);
            if e.is_unauthenticated() || e.is_permission_denied() {
                SourceError::Authentication {
                    url: url_display.to_owned(),
                    message,
                }
            } else {
                SourceError::Fetch {
                    url: url_display.to_owned(),
                    message,
                }
            }
        };
        let bad_creds = |what: &str| SourceError::Authentication {
            url: url_display.to_owned(),
            message: format!(
                "{what} credentials cannot be used with a {:?} URL",
                url.scheme()
            ),
        };

        if let Some(path) = url.local_path() {
            // `git upload-pack` reports a missing repository only on its stderr; say it here.
            if !path.is_dir() {
                return Err(fetch_err(format!("{} is not a directory", path.display())));
            }
            if !path.join("HEAD").is_file() && !path.join(".git").exists() {
                return Err(fetch_err(format!(
                    "{} is not a Git repository",
                    path.display()
                )));
            }
        }

        // The account for HTTP(S), and the ssh session (temporary key file) for SSH.
        let mut account = None;
        let mut ssh_session = None;
        match (url.scheme(), creds) {
            (Scheme::Http | Scheme::Https, Credentials::Basic { username, password }) => {
                account = Some((username.clone(), password.expose().to_owned()));
            }
            (Scheme::Http | Scheme::Https, Credentials::Token(token)) => {
                account = Some((TOKEN_USERNAME.to_owned(), token.expose().to_owned()));
            }
            (Scheme::Http | Scheme::Https, Credentials::None) => {
                account = url
                    .embedded_credentials()
                    .map(|(user, pw)| (user.clone(), pw.expose().to_owned()));
            }
            (Scheme::Http | Scheme::Https, Credentials::Ssh { .. }) => {
                return Err(bad_creds("ssh"));
            }
            (
                Scheme::Ssh,
                Credentials::Ssh {
                    private_key,
                    known_hosts,
                    accept_new_hosts,
                },
            ) => {
                let session = ssh::prepare(
                    &self.ssh_program,
                    private_key,
                    known_hosts.as_deref(),
                    *accept_new_hosts,
                    &self.dir.join("ssh_known_hosts"),
                )
                .map_err(|e| fetch_err(format!("preparing the ssh key file: {e}")))?;
                ssh_session = Some(session);
            }
            (Scheme::Ssh, Credentials::None) => {}
            (Scheme::Ssh, Credentials::Basic { .. }) => return Err(bad_creds("basic")),
            (Scheme::Ssh, Credentials::Token(_)) => return Err(bad_creds("token")),
            // Local and git:// transports have no authentication; credentials are irrelevant.
            (Scheme::File | Scheme::Git, _) => {}
        }

        let ssh_command = match (&ssh_session, url.scheme()) {
            (Some(s), _) => Some(s.command.clone()),
            // No key: still strict host checking and no prompts, with the agent's or default keys.
            (None, Scheme::Ssh) => Some(ssh::command_line_without_key(
                &self.ssh_program,
                &self.dir.join("ssh_known_hosts"),
            )),
            _ => None,
        };
        // An https URL needs the process's TLS provider before gix builds its HTTP client.
        crate::ensure_crypto_provider();
        let transport = blocking_io::connect::connect(
            url.gix_url().clone(),
            blocking_io::connect::Options {
                version: match self.protocol {
                    ProtocolVersion::V1 => gix::protocol::transport::Protocol::V1,
                    ProtocolVersion::V2 => gix::protocol::transport::Protocol::V2,
                },
                ssh: blocking_io::ssh::connect::Options {
                    command: ssh_command,
                    disallow_shell: false,
                    kind: Some(blocking_io::ssh::ProgramKind::Ssh),
                },
                trace: false,
            },
        )
        .map_err(gix_err)?;

        let remote = repo
            .remote_at_without_url_rewrite(url.gix_url().clone())
            .and_then(|r| {
                r.with_refspecs(
                    ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
                    Direction::Fetch,
                )
            })
            .map_err(gix_err)?
            .with_fetch_tags(gix::remote::fetch::Tags::None);
        let mut connection = remote.to_connection_with_transport(transport);
        if let Some((username, password)) = &account {
            let identity = gix::sec::identity::Account {
                username: username.clone(),
                password: password.clone(),
                oauth_refresh_token: None,
            };
            // Sent with the first request, which saves the 401 round trip on every refresh.
            gix::protocol::transport::client::TransportWithoutIO::set_identity(
                connection.transport_mut(),
                identity.clone(),
            )
            .map_err(|e| fetch_err(format!("setting credentials on the transport: {e}")))?;
            connection.set_credentials(move |action| match action {
                gix::credentials::helper::Action::Get(ctx) => {
                    Ok(Some(gix::credentials::protocol::Outcome {
                        identity: identity.clone(),
                        next: ctx.into(),
                    }))
                }
                _ => Ok(None),
            });
        } else {
            // Never fall back to credential helpers or a terminal prompt.
            let refusal = if url.scheme() == Scheme::Ssh {
                "the SSH server denied access (is the private key authorized for this repository?)"
            } else {
                "the repository requires authentication and no credentials were given"
            };
            connection.set_credentials(move |action| match action {
                gix::credentials::helper::Action::Get(_) => {
                    Err(gix::error::unauthenticated(refusal).into())
                }
                _ => Ok(None),
            });
        }

        let head_spec = gix::refspec::parse("HEAD".into(), gix::refspec::parse::Operation::Fetch)
            .map_err(|e| fetch_err(format!("internal refspec: {e}")))?
            .to_owned();
        let prepare = connection
            .prepare_fetch(
                gix::progress::Discard,
                gix::remote::ref_map::Options {
                    extra_refspecs: vec![head_spec],
                    ..Default::default()
                },
            )
            .map_err(gix_err);
        self.remote_checks.fetch_add(1, Ordering::Relaxed);
        let prepare = prepare?;
        let advertised = advertised_refs(&prepare.ref_map().remote_refs);
        let unchanged = state.advertised.as_ref() == Some(&advertised);
        let all_present = advertised.objects().all(|id| repo.has_object(*id));
        if unchanged && all_present {
            drop(prepare);
            state.last_check = Some(LastCheck {
                started,
                done: Instant::now(),
                creds: creds.clone(),
            });
            return Ok(false);
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let outcome = prepare
            .with_write_packed_refs_only(true)
            .receive(gix::progress::Discard, &AtomicBool::new(false))
            .map_err(gix_err)?;
        drop(ssh_session);
        let fetched = matches!(outcome.status, gix::remote::fetch::Status::Change { .. });
        if let Some(missing) = advertised.objects().find(|id| !repo.has_object(**id)) {
            return Err(fetch_err(format!(
                "the remote advertised {missing} but the fetch did not bring it"
            )));
        }
        tracing::debug!(url = %url_display, fetched, refs = advertised.refs.len(), "repository refreshed");
        state.advertised = Some(advertised);
        state.last_check = Some(LastCheck {
            started,
            done: Instant::now(),
            creds: creds.clone(),
        });
        Ok(fetched)
    }
}

/// Repacks the bare repository at `git_dir` into one pack when it has [`PACK_LIMIT`] packs or
/// more, with the `git` program (`git repack -a -d`; the user's and system's configuration are
/// not read). The caller holds the repository's refresh lock, so no fetch writes a pack
/// meanwhile; readers keep working (gix finds the new pack when an old one is gone). Returns
/// whether it repacked.
fn repack_if_needed(git: &Path, git_dir: &Path, url_display: &str) -> Result<bool, SourceError> {
    let packs = count_packs(git_dir)?;
    if packs < PACK_LIMIT {
        return Ok(false);
    }
    let failed = |message: String| SourceError::Repository {
        url: url_display.to_owned(),
        message: format!("repacking its {packs} packs: {message}"),
    };
    let out = std::process::Command::new(git)
        .arg("--git-dir")
        .arg(git_dir)
        .args(["-c", "gc.auto=0", "repack", "-a", "-d", "-q"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => {
            tracing::info!(url = %url_display, packs, "repository repacked into one pack");
            Ok(true)
        }
        Ok(out) => Err(failed(format!(
            "git repack exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(failed(format!(
            "the git program ({}) is not there",
            git.display()
        ))),
        Err(e) => Err(failed(format!("running git: {e}"))),
    }
}

/// Remove a leftover entry of `trees/` if nobody can still be working on it: `.del-*` (a
/// deletion that failed or was interrupted), `.tmp-*` (a write that crashed) and a
/// `.skipped-symlinks` record without its tree (a write that failed at the last step). The
/// last two are only removed once older than `max_unused` and [`LEFTOVER_AGE`]: a
/// materialization (of any process) may be writing them right now.
fn prune_leftover(name: &str, path: &Path, max_unused: Duration, report: &mut PruneReport) {
    let remove = if name.starts_with(".del-") {
        // Only a prune makes these and removes them before it returns (removing one twice
        // at once, from two caches over one directory, is harmless).
        true
    } else if name.starts_with(".tmp-")
        || name
            .strip_suffix(SIDECAR_SUFFIX)
            .is_some_and(|tree| !path.with_file_name(tree).exists())
    {
        let age = std::fs::symlink_metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        age.is_some_and(|age| age >= max_unused.max(LEFTOVER_AGE))
    } else {
        false
    };
    if !remove {
        return;
    }
    match materialize::force_remove(path) {
        Ok(bytes) => {
            report.temporaries_removed += 1;
            report.bytes_freed += bytes;
        }
        Err(e) => report.failures.push(SourceError::io(path, e)),
    }
}

/// The entries of `dir` as (file name, path); names that are not UTF-8 are none of ours and
/// left out.
fn list(dir: &Path) -> Result<Vec<(String, PathBuf)>, SourceError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| SourceError::io(dir, e))? {
        let entry = entry.map_err(|e| SourceError::io(dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, entry.path()));
        }
    }
    Ok(out)
}

/// Record a use of the tree at `root` in its mtime, for prunes after a restart or by another
/// process. Best effort: failing only makes the tree look older than it is.
fn touch_dir(root: &Path) {
    let touched = std::fs::File::open(root).and_then(|dir| dir.set_modified(SystemTime::now()));
    if let Err(e) = touched {
        tracing::debug!(tree = %root.display(), error = %e, "could not record the tree's use");
    }
}

/// Turn gix's ref advertisement into our comparable map.
fn advertised_refs(refs: &[Ref]) -> Advertised {
    let mut adv = Advertised::default();
    for r in refs {
        let (name, target, symref) = match r {
            Ref::Peeled {
                full_ref_name,
                tag,
                object,
            } => (
                full_ref_name,
                RefTarget {
                    object: *tag,
                    peeled: *object,
                },
                None,
            ),
            Ref::Direct {
                full_ref_name,
                object,
            } => (
                full_ref_name,
                RefTarget {
                    object: *object,
                    peeled: *object,
                },
                None,
            ),
            Ref::Symbolic {
                full_ref_name,
                target,
                tag,
                object,
            } => (
                full_ref_name,
                RefTarget {
                    object: tag.unwrap_or(*object),
                    peeled: *object,
                },
                Some(target.to_string()),
            ),
            Ref::Unborn { .. } => continue,
        };
        let name = name.to_string();
        if name == "HEAD" {
            adv.head = Some((symref, target));
        } else if name.starts_with("refs/heads/") || name.starts_with("refs/tags/") {
            adv.refs.insert(name, target);
        }
    }
    // With protocol v1 a symbolic HEAD may arrive as a plain ref; name its branch if one matches
    // and the server did not say (prefer the conventional names when several match).
    if let Some((None, head)) = &adv.head {
        let candidates: Vec<&String> = adv
            .refs
            .iter()
            .filter(|(n, t)| n.starts_with("refs/heads/") && t.object == head.object)
            .map(|(n, _)| n)
            .collect();
        let pick = ["refs/heads/main", "refs/heads/master"]
            .into_iter()
            .find(|p| candidates.iter().any(|c| c.as_str() == *p))
            .map(str::to_owned)
            .or_else(|| (candidates.len() == 1).then(|| candidates[0].clone()));
        if let Some(name) = pick {
            let head = head.clone();
            adv.head = Some((Some(name), head));
        }
    }
    adv
}

fn init_store(
    repos: &Path,
    path: &Path,
    url: &RepoUrl,
    tmp_name: &str,
) -> Result<OpenStore, SourceError> {
    // Initialise beside and rename, so a crash never leaves a half-initialised store in place.
    let tmp = repos.join(tmp_name);
    let repo_err = |message: String| SourceError::Repository {
        url: url.to_string(),
        message,
    };
    gix::init_bare(&tmp)
        .map_err(|e| repo_err(format!("creating the object store: {}", gix_message(&e))))?;
    let config = tmp.join("config");
    let mut text = std::fs::read_to_string(&config).map_err(|e| SourceError::io(&config, e))?;
    // No reflogs (they would record remote names), and no background gc of a store we manage.
    text.push_str("[core]\n\tlogAllRefUpdates = false\n[gc]\n\tauto = 0\n");
    std::fs::write(&config, text).map_err(|e| SourceError::io(&config, e))?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_dir_all(&tmp);
        if !path.join("HEAD").exists() {
            return Err(SourceError::io(path, e));
        }
    }
    open_store(path, url)
}

/// The index slots a store is opened with when `packs` packs are on disk: twice as many, at
/// least [`STORE_SLOTS`] (what gix's `AsNeededByDiskState` computes from the same figures).
fn slots_for(packs: usize) -> usize {
    (packs * 2).max(STORE_SLOTS)
}

/// How many packs the bare repository at `git_dir` has.
fn count_packs(git_dir: &Path) -> Result<usize, SourceError> {
    let pack_dir = git_dir.join("objects").join("pack");
    match std::fs::read_dir(&pack_dir) {
        Ok(entries) => Ok(entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
            .count()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(SourceError::io(&pack_dir, e)),
    }
}

fn open_store(path: &Path, url: &RepoUrl) -> Result<OpenStore, SourceError> {
    let packs = count_packs(path)?;
    // Isolated: never read the user's or system's git config (credential helpers, insteadOf,
    // proxies), so behaviour depends only on what callers pass in.
    let opts = gix::open::Options::isolated()
        .object_store_slots(gix::odb::store::init::Slots::AsNeededByDiskState {
            // A store left with many packs (by an older Capstan) still opens with room to spare.
            multiplier: 2.0,
            minimum: STORE_SLOTS,
        })
        .config_overrides([
            "committer.name=capstan",
            "committer.email=capstan@localhost",
        ]);
    let repo =
        gix::ThreadSafeRepository::open_opts(path, opts).map_err(|e| SourceError::Repository {
            url: url.to_string(),
            message: format!(
                "opening the object store {}: {}",
                path.display(),
                gix_message(&e)
            ),
        })?;
    Ok(OpenStore {
        repo,
        slots: slots_for(packs),
    })
}

fn peel_to_commit(
    repo: &gix::Repository,
    id: ObjectId,
    url: &str,
    revision: &str,
) -> Result<ObjectId, SourceError> {
    let err = |reason: String| SourceError::Commit {
        url: url.to_owned(),
        commit: id.to_string(),
        reason: format!("{reason} (revision {revision:?})"),
    };
    let object = repo
        .find_object(id)
        .map_err(|e| err(format!("not in the object store: {e}")))?;
    let commit = object
        .peel_to_commit()
        .map_err(|e| err(format!("does not name a commit: {}", gix_message(&e))))?;
    Ok(commit.id)
}

fn commit_tree(repo: &gix::Repository, url: &str, commit: &str) -> Result<ObjectId, SourceError> {
    let err = |reason: String| SourceError::Commit {
        url: url.to_owned(),
        commit: commit.to_owned(),
        reason,
    };
    let id = ObjectId::from_hex(commit.trim().to_ascii_lowercase().as_bytes())
        .map_err(|_| err("not a full 40-hex commit id".into()))?;
    let object = repo
        .find_object(id)
        .map_err(|_| err("not in the cache; resolve a revision that contains it first".into()))?;
    let commit = object
        .try_into_commit()
        .map_err(|e| err(format!("not a commit: {e}")))?;
    commit
        .tree_id()
        .map(|t| t.detach())
        .map_err(|e| err(format!("reading the commit: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<RepoCache>();
        shareable::<Resolved>();
        shareable::<Tree>();
    }
}
