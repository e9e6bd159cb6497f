//! The manifest cache: rendered object lists keyed by a hash of everything that determines
//! them (the caller's key — repository and commit or tree hash —, the source options, the
//! render context and the tool versions). Bounded in memory (least recently used out, by
//! entry count and by bytes) and optionally on disk (oldest files out, by bytes).

use crate::Tool;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Bounds of the manifest cache.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Most entries kept in memory.
    pub max_entries: usize,
    /// Most bytes (serialized JSON size) kept in memory.
    pub max_bytes: usize,
    /// Directory of the on-disk cache; `None` keeps the cache in memory only.
    pub disk_dir: Option<PathBuf>,
    /// Most bytes kept on disk.
    pub max_disk_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: 4096,
            max_bytes: 256 * 1024 * 1024,
            disk_dir: None,
            max_disk_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// A cache key: the SHA-256 of the inputs.
pub(crate) type Key = [u8; 32];

/// Hashes the inputs; each part is length-prefixed so that no two inputs collide by
/// concatenation.
pub(crate) fn key(parts: &[&[u8]]) -> Key {
    let mut hasher = Sha256::new();
    hasher.update(b"capstan-render-cache-v1");
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

#[derive(Serialize, Deserialize)]
struct DiskEntry {
    tool: Tool,
    objects: Vec<Value>,
}

struct Entry {
    objects: Arc<Vec<Value>>,
    tool: Tool,
    bytes: usize,
    last_used: u64,
}

#[derive(Default)]
struct Lru {
    map: HashMap<Key, Entry>,
    clock: u64,
    bytes: usize,
}

/// The cache. Cheap to share: all state is behind one mutex held only for map operations.
pub(crate) struct ManifestCache {
    config: CacheConfig,
    memory: Mutex<Lru>,
}

impl ManifestCache {
    pub(crate) fn new(config: CacheConfig) -> Self {
        ManifestCache {
            config,
            memory: Mutex::new(Lru::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // A panic while holding the lock leaves a consistent map (each operation completes or
        // does nothing), so a poisoned lock is still usable.
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks a key up: memory first, then disk (a disk hit is promoted to memory).
    pub(crate) fn get(&self, key: &Key) -> Option<(Arc<Vec<Value>>, Tool)> {
        {
            let mut lru = self.lock();
            lru.clock += 1;
            let now = lru.clock;
            if let Some(entry) = lru.map.get_mut(key) {
                entry.last_used = now;
                return Some((Arc::clone(&entry.objects), entry.tool));
            }
        }
        let dir = self.config.disk_dir.as_ref()?;
        let path = dir.join(hex::encode(key));
        let bytes = std::fs::read(&path).ok()?;
        // A corrupt or foreign file is a miss, not an error: the render simply runs again.
        let entry: DiskEntry = serde_json::from_slice(&bytes).ok()?;
        let objects = Arc::new(entry.objects);
        self.insert_memory(*key, Arc::clone(&objects), entry.tool, bytes.len());
        Some((objects, entry.tool))
    }

    /// Stores a render result.
    pub(crate) fn put(&self, key: Key, objects: Arc<Vec<Value>>, tool: Tool) {
        let serialized = serde_json::to_vec(&DiskEntry {
            tool,
            objects: objects.as_ref().clone(),
        });
        let Ok(serialized) = serialized else {
            return;
        };
        self.insert_memory(key, objects, tool, serialized.len());
        if let Some(dir) = &self.config.disk_dir
            && let Err(e) = self.write_disk(dir, &key, &serialized)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "manifest cache: cannot write to disk");
        }
    }

    fn insert_memory(&self, key: Key, objects: Arc<Vec<Value>>, tool: Tool, bytes: usize) {
        if bytes > self.config.max_bytes || self.config.max_entries == 0 {
            return;
        }
        let mut lru = self.lock();
        lru.clock += 1;
        let now = lru.clock;
        if let Some(old) = lru.map.insert(
            key,
            Entry {
                objects,
                tool,
                bytes,
                last_used: now,
            },
        ) {
            lru.bytes -= old.bytes;
        }
        lru.bytes += bytes;
        while lru.map.len() > self.config.max_entries || lru.bytes > self.config.max_bytes {
            let Some(oldest) = lru
                .map
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some(e) = lru.map.remove(&oldest) {
                lru.bytes -= e.bytes;
            }
        }
    }

    fn write_disk(&self, dir: &std::path::Path, key: &Key, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        // Write then rename, so a concurrent reader never sees half a file.
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, bytes)?;
        tmp.persist(dir.join(hex::encode(key)))
            .map_err(|e| e.error)?;
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = std::fs::read_dir(dir)?
            .flatten()
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                if !meta.is_file() {
                    return None;
                }
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        if total <= self.config.max_disk_bytes {
            return Ok(());
        }
        files.sort();
        for (_, len, path) in files {
            if total <= self.config.max_disk_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
        Ok(())
    }

    /// Entries currently in memory.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn objs(n: usize) -> Arc<Vec<Value>> {
        Arc::new(vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x".repeat(n)}});
            1
        ])
    }

    #[test]
    fn least_recently_used_entry_goes_first() {
        let cache = ManifestCache::new(CacheConfig {
            max_entries: 2,
            ..CacheConfig::default()
        });
        let (a, b, c) = (key(&[b"a"]), key(&[b"b"]), key(&[b"c"]));
        cache.put(a, objs(1), Tool::Directory);
        cache.put(b, objs(1), Tool::Directory);
        assert!(cache.get(&a).is_some()); // a is now more recent than b
        cache.put(c, objs(1), Tool::Directory);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&b).is_none());
        assert!(cache.get(&a).is_some());
        assert!(cache.get(&c).is_some());
    }

    #[test]
    fn byte_bound_and_disk_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let config = CacheConfig {
            max_entries: 100,
            max_bytes: 300,
            disk_dir: Some(dir.path().to_path_buf()),
            max_disk_bytes: 10_000,
        };
        let cache = ManifestCache::new(config.clone());
        let (a, b) = (key(&[b"a"]), key(&[b"b"]));
        cache.put(a, objs(150), Tool::Helm);
        cache.put(b, objs(150), Tool::Helm);
        assert_eq!(
            cache.len(),
            1,
            "two ~220-byte entries do not fit in 300 bytes"
        );
        // A fresh cache over the same directory finds both on disk.
        let again = ManifestCache::new(config);
        let (got, tool) = again.get(&a).expect("on disk");
        assert_eq!(tool, Tool::Helm);
        assert_eq!(got, objs(150));
        assert!(again.get(&b).is_some());
    }

    #[test]
    fn keys_do_not_collide_by_concatenation() {
        assert_ne!(key(&[b"ab", b"c"]), key(&[b"a", b"bc"]));
    }
}
