//! The object store: one monotonic resourceVersion counter, objects kept as serialized JSON,
//! a bounded event history per resource type for watch resumption, and optional durability in
//! redb (every acknowledged write is committed before the caller gets its answer).
//!
//! Invariants:
//! - All writes go through [`Store::write`] under one mutex, so resourceVersions are assigned in
//!   commit order and the history, the broadcast to watchers and the disk see the same order.
//! - The disk write happens before the memory update: a write that fails to persist changes
//!   nothing and is reported to the client.
//! - Objects are stored as the exact bytes returned to clients (with `metadata.resourceVersion`
//!   set), so a list is a concatenation, not a re-serialization.
//! - For the types named with [`Store::keep_parsed`] (those the simulated controllers read on
//!   every change), objects keep a parsed *view* beside their bytes, shared behind an `Arc`: the
//!   very `Value` the writer serialized, without `metadata.managedFields`, so readers that do
//!   not need those ([`Stored::view`], [`Event::view`]) get it without parsing. Parsed JSON
//!   costs about nine times its size in memory (a `serde_json` map entry per field), and
//!   managedFields are half of it; only the API's write path reads them, and it parses the
//!   bytes. The views of the latest writes up to a budget of JSON bytes are kept
//!   ([`Store::set_parsed_budget`]); older objects are parsed when read.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::broadcast;

const OBJECTS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("objects");
const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// The watch event `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history and sent to watchers.
#[derive(Debug)]
pub struct Event {
    /// Storage key of the resource type ("apps/deployments").
    pub key: Arc<str>,
    /// Namespace ("" for cluster-scoped objects).
    pub namespace: Box<str>,
    /// Name.
    pub name: Box<str>,
    /// resourceVersion of this change.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (for a delete: the last state, with the delete's rv).
    pub bytes: Bytes,
    /// For a modification, the object before it: a watch with a selector turns a change that
    /// enters or leaves the selection into ADDED or DELETED, as Kubernetes does. Shared with
    /// the replaced version, so it costs no copy.
    pub prev: Option<Bytes>,
    /// The parsed view of the object after the change (see [`Stored::view`]) while anybody
    /// still holds it (the store does while it is the current version and within the budget).
    /// Weak, so that the history does not keep views of superseded versions alive.
    parsed: Weak<Value>,
}

impl Event {
    /// The object after the change without `metadata.managedFields`: shared with the store when
    /// still held, parsed from `bytes` otherwise.
    pub fn view(&self) -> Result<Arc<Value>, StoreError> {
        match self.parsed.upgrade() {
            Some(v) => Ok(v),
            None => parse_view(&self.bytes),
        }
    }
}

/// A stored object.
#[derive(Clone, Debug)]
pub struct Stored {
    /// Its resourceVersion.
    pub rv: u64,
    /// Its JSON.
    pub bytes: Bytes,
    /// Its parsed view (without managedFields), while it is among the latest writes of a type
    /// kept parsed.
    parsed: Option<Arc<Value>>,
}

/// Parses stored JSON. The bytes were produced by `serde_json` from a `Value`, so this cannot
/// fail short of memory corruption; a failure is still reported, not unwrapped.
fn parse(bytes: &[u8]) -> Result<Value, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The view of an object (see [`Stored::view`]): the object without `metadata.managedFields`.
pub(crate) fn into_view(mut v: Value) -> Arc<Value> {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.shift_remove("managedFields");
    }
    Arc::new(v)
}

fn parse_view(bytes: &[u8]) -> Result<Arc<Value>, StoreError> {
    parse(bytes).map(into_view)
}

impl Stored {
    /// An object known only by its bytes (no parsed form kept).
    pub fn new(rv: u64, bytes: Bytes) -> Stored {
        Stored {
            rv,
            bytes,
            parsed: None,
        }
    }

    /// The whole object, parsed from the bytes.
    pub fn value(&self) -> Result<Value, StoreError> {
        parse(&self.bytes)
    }

    /// The object without `metadata.managedFields`, for readers that need neither those nor
    /// a copy of their own: free while the store keeps the view, parsed from the bytes
    /// otherwise.
    pub fn view(&self) -> Result<Arc<Value>, StoreError> {
        match &self.parsed {
            Some(v) => Ok(v.clone()),
            None => parse_view(&self.bytes),
        }
    }
}

/// The result of a successful [`Store::write`].
#[derive(Debug)]
pub struct Written {
    /// The new resourceVersion.
    pub rv: u64,
    /// The bytes stored (for a delete: the last state with the new rv).
    pub bytes: Bytes,
    /// The same object parsed, without `metadata.managedFields` (the value the caller passed
    /// in, with the new rv set).
    pub object: Arc<Value>,
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object exists and the write required it not to.
    #[error("already exists")]
    AlreadyExists,
    /// The object does not exist.
    #[error("not found")]
    NotFound,
    /// The object changed since the caller read it.
    #[error(
        "the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict,
    /// The disk refused the write.
    #[error("storage error: {0}")]
    Persist(String),
    /// A stored object could not be read back.
    #[error("stored object is corrupt: {0}")]
    Corrupt(String),
}

/// The precondition of a write.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// The object must not exist (create).
    Absent,
    /// The object must exist at exactly this resourceVersion.
    Rv(u64),
}

/// Where a watch starts.
pub enum WatchStart {
    /// With synthetic ADDED events for the current state, then live changes.
    Current,
    /// With every change after this resourceVersion.
    After(u64),
}

#[derive(Default)]
struct TypeState {
    objects: BTreeMap<(Box<str>, Box<str>), Stored>,
    history: VecDeque<Arc<Event>>,
    /// Changes after this rv are all in `history` (older ones were dropped or predate a restart).
    floor: u64,
    key: Option<Arc<str>>,
    /// Whether objects of this type keep their parsed form (see [`Store::keep_parsed`]).
    keep_parsed: bool,
}

/// One write whose parsed form is kept: type, (namespace, name), rv and JSON size.
type ParsedEntry = (Arc<str>, (Box<str>, Box<str>), u64, usize);

struct Inner {
    rv: u64,
    types: HashMap<String, TypeState>,
    /// The database, while open; `None` after [`Store::close`] for a durable store.
    db: Option<redb::Database>,
    /// The objects holding a parsed form, oldest write first.
    parsed_order: VecDeque<ParsedEntry>,
    /// Sum of the JSON sizes in `parsed_order`.
    parsed_bytes: usize,
    /// Limit of `parsed_bytes`.
    parsed_budget: usize,
}

/// The default budget of [`Store::set_parsed_budget`]: 16 MiB of JSON (about 70 MiB of views),
/// some 5,000 pods with their owners and services (figures in `benches/sim.rs`).
pub const DEFAULT_PARSED_BUDGET: usize = 16 << 20;

/// A started watch: events to send first, the receiver of later changes, and the rv at which
/// the receiver was subscribed.
pub type WatchStarted = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>, u64);

/// The store. Cheap to share behind an `Arc`.
pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<Event>>,
    durable: bool,
    history_limit: usize,
}

fn db_key(skey: &str, ns: &str, name: &str) -> String {
    format!("{skey}\u{0}{ns}\u{0}{name}")
}

fn persist_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Persist(e.to_string())
}

impl Store {
    /// An in-memory store, or one backed by `dir/state.redb` (reloaded if present).
    pub fn open(dir: Option<&Path>, history_limit: usize) -> Result<Store, StoreError> {
        let (events, _) = broadcast::channel(16_384);
        let mut inner = Inner {
            rv: 0,
            types: HashMap::new(),
            db: None,
            parsed_order: VecDeque::new(),
            parsed_bytes: 0,
            parsed_budget: DEFAULT_PARSED_BUDGET,
        };
        inner.db = match dir {
            None => None,
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Persist(format!("cannot create {}: {e}", dir.display()))
                })?;
                let path = dir.join("state.redb");
                let db = redb::Database::create(&path).map_err(|e| {
                    StoreError::Persist(format!("cannot open {}: {e}", path.display()))
                })?;
                load(&db, &mut inner)?;
                Some(db)
            }
        };
        Ok(Store {
            durable: inner.db.is_some(),
            inner: Mutex::new(inner),
            events,
            history_limit: history_limit.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves `Inner` consistent before any call that may panic, so a
        // poisoned lock still guards valid data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current (latest assigned) resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// Reads one object.
    pub fn get(&self, skey: &str, ns: &str, name: &str) -> Option<Stored> {
        let inner = self.lock();
        inner
            .types
            .get(skey)?
            .objects
            .get(&(Box::from(ns), Box::from(name)))
            .cloned()
    }

    /// Lists objects of a type (of one namespace if given) in (namespace, name) order, starting
    /// after `after`, keeping those `keep` accepts, at most `limit`. Returns the current rv, the
    /// objects and, when the limit cut the list short, the key of the last one returned.
    #[allow(clippy::type_complexity)]
    pub fn list(
        &self,
        skey: &str,
        ns: Option<&str>,
        after: Option<(&str, &str)>,
        limit: Option<usize>,
        keep: &dyn Fn(&str, &str, &Bytes) -> bool,
    ) -> (u64, Vec<Stored>, Option<(String, String)>) {
        let inner = self.lock();
        let mut out = Vec::new();
        let Some(ts) = inner.types.get(skey) else {
            return (inner.rv, out, None);
        };
        use std::ops::Bound;
        let lower: Bound<(Box<str>, Box<str>)> = match (after, ns) {
            (Some((a_ns, a_name)), _) => Bound::Excluded((a_ns.into(), a_name.into())),
            (None, Some(ns)) => Bound::Included((ns.into(), "".into())),
            (None, None) => Bound::Unbounded,
        };
        let mut last: Option<(&str, &str)> = None;
        for ((ons, oname), st) in ts.objects.range((lower, Bound::Unbounded)) {
            if let Some(ns) = ns
                && &**ons != ns
            {
                break;
            }
            if !keep(ons, oname, &st.bytes) {
                continue;
            }
            if limit.is_some_and(|l| out.len() >= l) {
                let cont = last.map(|(a, b)| (a.to_string(), b.to_string()));
                return (inner.rv, out, cont);
            }
            out.push(st.clone());
            last = Some((ons, oname));
        }
        (inner.rv, out, None)
    }

    /// Names of the namespaced objects in `ns`, by storage key (for namespace deletion).
    pub fn keys_in_namespace(&self, ns: &str) -> Vec<(String, String)> {
        let inner = self.lock();
        let mut out = Vec::new();
        for (skey, ts) in &inner.types {
            for (ons, name) in ts.objects.keys() {
                if &**ons == ns {
                    out.push((skey.clone(), name.to_string()));
                }
            }
        }
        out
    }

    /// Keeps the parsed view of objects of the type `skey` written from now on (within the
    /// budget), so that [`Stored::view`] and [`Event::view`] cost nothing for them. For the
    /// types read on every change.
    pub fn keep_parsed(&self, skey: &str) {
        self.lock()
            .types
            .entry(skey.to_string())
            .or_default()
            .keep_parsed = true;
    }

    /// Sets how many bytes of JSON the kept views may stand for, together (0 keeps none); the
    /// oldest writes give theirs up first.
    pub fn set_parsed_budget(&self, json_bytes: usize) {
        let mut inner = self.lock();
        inner.parsed_budget = json_bytes;
        let evicted = inner.trim_parsed();
        drop(inner);
        drop(evicted);
    }

    /// Writes (`Some(object)`) or removes (`None`) an object under a precondition. Sets
    /// `metadata.resourceVersion` to the new rv, persists, records the event and tells watchers.
    /// Returns the new rv, the bytes stored and the object (for a delete: the last state with
    /// the new rv).
    pub fn write(
        &self,
        skey: &str,
        ns: &str,
        name: &str,
        expect: Expect,
        object: Option<Value>,
    ) -> Result<Written, StoreError> {
        let mut inner = self.lock();
        let new_rv = inner.rv + 1;
        let key = (Box::<str>::from(ns), Box::<str>::from(name));
        let current = inner.types.get(skey).and_then(|t| t.objects.get(&key));
        match (expect, current) {
            (Expect::Absent, Some(_)) => return Err(StoreError::AlreadyExists),
            (Expect::Rv(_), None) => return Err(StoreError::NotFound),
            (Expect::Rv(rv), Some(cur)) if cur.rv != rv => return Err(StoreError::Conflict),
            _ => {}
        }
        let prev = current.map(|c| c.bytes.clone());
        let (kind, bytes, object) = match object {
            Some(mut obj) => {
                set_rv(&mut obj, new_rv);
                let kind = if current.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                let mut v = serde_json::to_vec(&obj).map_err(persist_err)?;
                // The serializer grows its buffer by doubling; stored objects live long, so
                // the slack would be memory overhead per object.
                v.shrink_to_fit();
                (kind, Bytes::from(v), obj)
            }
            None => {
                // Invariant: `Expect::Rv` matched above, so `current` is Some for deletes; an
                // `Absent` delete is a caller bug and is refused as NotFound.
                let Some(cur) = current else {
                    return Err(StoreError::NotFound);
                };
                let mut last = cur.value()?;
                set_rv(&mut last, new_rv);
                let bytes = Bytes::from(serde_json::to_vec(&last).map_err(persist_err)?);
                (EventType::Deleted, bytes, last)
            }
        };
        let object = into_view(object);
        if self.durable && inner.db.is_none() {
            return Err(StoreError::Persist("the store is closed".into()));
        }
        if let Some(db) = &inner.db {
            let txn = db.begin_write().map_err(persist_err)?;
            {
                let mut t = txn.open_table(OBJECTS).map_err(persist_err)?;
                let k = db_key(skey, ns, name);
                if kind == EventType::Deleted {
                    t.remove(k.as_str()).map_err(persist_err)?;
                } else {
                    t.insert(k.as_str(), &bytes[..]).map_err(persist_err)?;
                }
                let mut m = txn.open_table(META).map_err(persist_err)?;
                m.insert("rv", new_rv).map_err(persist_err)?;
            }
            txn.commit().map_err(persist_err)?;
        }
        inner.rv = new_rv;
        let limit = self.history_limit;
        let budget = inner.parsed_budget;
        let ts = inner.types.entry(skey.to_string()).or_default();
        let type_key = ts.key.get_or_insert_with(|| Arc::from(skey)).clone();
        let keep = ts.keep_parsed && kind != EventType::Deleted && bytes.len() <= budget;
        if kind == EventType::Deleted {
            ts.objects.remove(&key);
        } else {
            ts.objects.insert(
                key.clone(),
                Stored {
                    rv: new_rv,
                    bytes: bytes.clone(),
                    parsed: keep.then(|| object.clone()),
                },
            );
        }
        let event = Arc::new(Event {
            key: type_key,
            namespace: key.0,
            name: key.1,
            rv: new_rv,
            kind,
            bytes: bytes.clone(),
            prev: if kind == EventType::Modified {
                prev
            } else {
                None
            },
            parsed: if keep {
                Arc::downgrade(&object)
            } else {
                Weak::new()
            },
        });
        ts.history.push_back(event.clone());
        while ts.history.len() > limit {
            if let Some(old) = ts.history.pop_front() {
                ts.floor = old.rv;
            }
        }
        if keep {
            inner
                .parsed_order
                .push_back((event.key.clone(), key_of(&event), new_rv, bytes.len()));
            inner.parsed_bytes += bytes.len();
        }
        let evicted = inner.trim_parsed();
        // Sent under the lock, so watchers see changes in rv order. No receivers is fine:
        // nobody is watching.
        let _ = self.events.send(event);
        // Freeing the evicted views is left for after the lock.
        drop(inner);
        drop(evicted);
        Ok(Written {
            rv: new_rv,
            bytes,
            object,
        })
    }

    /// Starts a watch on a type: returns the events to send first, and a receiver of everything
    /// after them. `Err(floor)` when `After(rv)` is older than the kept history.
    pub fn watch(&self, skey: &str, start: WatchStart) -> Result<WatchStarted, u64> {
        let mut inner = self.lock();
        let rx = self.events.subscribe();
        let current_rv = inner.rv;
        let ts = inner.types.entry(skey.to_string()).or_default();
        let type_key = ts.key.get_or_insert_with(|| Arc::from(skey)).clone();
        let initial = match start {
            WatchStart::Current => ts
                .objects
                .iter()
                .map(|((ns, name), st)| {
                    Arc::new(Event {
                        key: type_key.clone(),
                        namespace: ns.clone(),
                        name: name.clone(),
                        rv: st.rv,
                        kind: EventType::Added,
                        bytes: st.bytes.clone(),
                        prev: None,
                        parsed: st.parsed.as_ref().map_or_else(Weak::new, Arc::downgrade),
                    })
                })
                .collect(),
            WatchStart::After(rv) => {
                if rv < ts.floor && rv < current_rv {
                    return Err(ts.floor);
                }
                ts.history.iter().filter(|e| e.rv > rv).cloned().collect()
            }
        };
        Ok((initial, rx, current_rv))
    }

    /// Closes the database file (a durable store refuses writes afterwards), so that another
    /// store can open the same directory even while requests of this one are still draining.
    pub fn close(&self) {
        self.lock().db = None;
    }

    /// A receiver of every change of every type (for controllers).
    pub fn subscribe_all(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// Every stored object of a type (for reloading CRDs and controllers).
    pub fn all_of(&self, skey: &str) -> Vec<Stored> {
        self.list(skey, None, None, None, &|_, _, _| true).1
    }
}

fn key_of(event: &Event) -> (Box<str>, Box<str>) {
    (event.namespace.clone(), event.name.clone())
}

impl Inner {
    /// Takes the views of the oldest writes until the rest fit the budget; returns them, so
    /// that the caller frees them once it has released the lock.
    fn trim_parsed(&mut self) -> Vec<Arc<Value>> {
        let mut evicted = Vec::new();
        while self.parsed_bytes > self.parsed_budget {
            let Some((skey, key, rv, size)) = self.parsed_order.pop_front() else {
                break;
            };
            self.parsed_bytes -= size;
            // Only if it is still that version: a later write has its own entry.
            if let Some(st) = self
                .types
                .get_mut(&*skey)
                .and_then(|ts| ts.objects.get_mut(&key))
                && st.rv == rv
                && let Some(v) = st.parsed.take()
            {
                evicted.push(v);
            }
        }
        evicted
    }
}

fn set_rv(obj: &mut Value, rv: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

fn load(db: &redb::Database, inner: &mut Inner) -> Result<(), StoreError> {
    use redb::{ReadableDatabase, ReadableTable};
    let txn = db.begin_read().map_err(persist_err)?;
    let rv = match txn.open_table(META) {
        Ok(t) => t
            .get("rv")
            .map_err(persist_err)?
            .map(|g| g.value())
            .unwrap_or(0),
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(persist_err(e)),
    };
    inner.rv = rv;
    let table = match txn.open_table(OBJECTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(persist_err(e)),
    };
    for item in table.iter().map_err(persist_err)? {
        let (k, v) = item.map_err(persist_err)?;
        let key = k.value();
        let mut parts = key.splitn(3, '\u{0}');
        let (Some(skey), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(StoreError::Corrupt(format!("bad key {key:?}")));
        };
        let bytes = Bytes::copy_from_slice(v.value());
        let obj: Value = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("{key:?}: {e}")))?;
        let obj_rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let ts = inner.types.entry(skey.to_string()).or_default();
        ts.objects
            .insert((ns.into(), name.into()), Stored::new(obj_rv, bytes));
    }
    for ts in inner.types.values_mut() {
        ts.floor = rv;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rv_is_monotonic_and_preconditions_hold() {
        let s = Store::open(None, 3).unwrap();
        let a = json!({"metadata": {"name": "a"}});
        let rv1 = s
            .write("/cm", "ns", "a", Expect::Absent, Some(a.clone()))
            .unwrap()
            .rv;
        assert!(matches!(
            s.write("/cm", "ns", "a", Expect::Absent, Some(a.clone())),
            Err(StoreError::AlreadyExists)
        ));
        assert!(matches!(
            s.write("/cm", "ns", "a", Expect::Rv(rv1 + 5), Some(a.clone())),
            Err(StoreError::Conflict)
        ));
        let w = s
            .write("/cm", "ns", "a", Expect::Rv(rv1), Some(a.clone()))
            .unwrap();
        assert_eq!(w.rv, rv1 + 1);
        assert!(
            std::str::from_utf8(&w.bytes)
                .unwrap()
                .contains(&format!("\"{}\"", w.rv))
        );
        // History keeps 3 events: after 4 more writes the first ones are compacted.
        for _ in 0..4 {
            let cur = s.get("/cm", "ns", "a").unwrap().rv;
            s.write("/cm", "ns", "a", Expect::Rv(cur), Some(a.clone()))
                .unwrap();
        }
        assert!(s.watch("/cm", WatchStart::After(rv1)).is_err());
        let (events, _, _) = s
            .watch("/cm", WatchStart::After(s.current_rv() - 2))
            .unwrap();
        assert_eq!(events.len(), 2);
    }

    /// A kept type hands out the written `Value` itself (same allocation), current events share
    /// it, superseded ones fall back to parsing their own bytes, and an unkept type parses.
    #[test]
    fn kept_types_share_the_parsed_object() {
        let s = Store::open(None, 10).unwrap();
        let obj = |data: &str| {
            json!({
                "metadata": {"name": "a", "managedFields": [{"manager": "test"}]},
                "data": {"k": data},
            })
        };
        let before = s
            .write("/cm", "ns", "a", Expect::Absent, Some(obj("before")))
            .unwrap();
        // Written before the type was kept parsed: parsed on each read.
        let st = s.get("/cm", "ns", "a").unwrap();
        assert!(!Arc::ptr_eq(&st.view().unwrap(), &before.object));
        assert_eq!(st.view().unwrap()["data"]["k"], "before");

        s.keep_parsed("/cm");
        let mut rx = s.subscribe_all();
        let w = s
            .write("/cm", "ns", "a", Expect::Rv(st.rv), Some(obj("after")))
            .unwrap();
        let now = s.get("/cm", "ns", "a").unwrap();
        assert!(Arc::ptr_eq(&now.view().unwrap(), &w.object));
        assert_eq!(
            now.view().unwrap()["metadata"]["resourceVersion"],
            w.rv.to_string()
        );
        // The view leaves managedFields out; the bytes and the whole value keep them.
        assert!(w.object["metadata"].get("managedFields").is_none());
        let whole = now.value().unwrap();
        assert_eq!(whole["metadata"]["managedFields"][0]["manager"], "test");
        let mut stripped = whole.clone();
        stripped["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        assert_eq!(stripped, *w.object);
        assert!(
            std::str::from_utf8(&now.bytes)
                .unwrap()
                .contains("managedFields")
        );
        let ev = rx.try_recv().unwrap();
        assert!(Arc::ptr_eq(&ev.view().unwrap(), &w.object));

        // Superseded: the store let go of the old parsed form; the event parses its bytes.
        drop((w, now));
        s.write("/cm", "ns", "a", Expect::Rv(ev.rv), Some(obj("later")))
            .unwrap();
        assert_eq!(ev.view().unwrap()["data"]["k"], "after");

        // A type not kept parsed still answers, from its bytes.
        let other = s
            .write("/other", "ns", "b", Expect::Absent, Some(obj("x")))
            .unwrap();
        let st = s.get("/other", "ns", "b").unwrap();
        assert!(!Arc::ptr_eq(&st.view().unwrap(), &other.object));
        assert_eq!(st.view().unwrap()["data"]["k"], "x");
    }

    /// Only the latest writes within the budget keep their parsed form; the others are parsed
    /// when read, and read the same.
    #[test]
    fn the_parsed_budget_keeps_the_latest_writes() {
        let s = Store::open(None, 10).unwrap();
        s.keep_parsed("/cm");
        let obj = |name: &str| json!({"metadata": {"name": name}, "data": {"k": "v"}});
        let mut written = Vec::new();
        for name in ["a", "b", "c"] {
            written.push(
                s.write("/cm", "ns", name, Expect::Absent, Some(obj(name)))
                    .unwrap(),
            );
        }
        let kept = |name: &str, w: &Written| {
            let st = s.get("/cm", "ns", name).unwrap();
            assert_eq!(*st.view().unwrap(), *w.object);
            Arc::ptr_eq(&st.view().unwrap(), &w.object)
        };
        assert!(kept("a", &written[0]) && kept("b", &written[1]) && kept("c", &written[2]));

        // Room for two: the oldest write gives its parsed form up.
        let size = written[2].bytes.len();
        s.set_parsed_budget(2 * size);
        assert!(!kept("a", &written[0]) && kept("b", &written[1]) && kept("c", &written[2]));

        // A new write of "b" supersedes its old entry; "c" is then the oldest and goes.
        let b2 = s
            .write("/cm", "ns", "b", Expect::Rv(written[1].rv), Some(obj("b")))
            .unwrap();
        s.write("/cm", "ns", "d", Expect::Absent, Some(obj("d")))
            .unwrap();
        assert!(kept("b", &b2) && !kept("c", &written[2]));

        s.set_parsed_budget(0);
        assert!(!kept("b", &b2));
    }
}
