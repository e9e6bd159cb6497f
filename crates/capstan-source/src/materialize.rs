//! Writing a Git tree to disk read-only, with a check that no symlink leads out of it, and the
//! blob store its files are hard links into.

use std::{
    collections::{HashMap, HashSet},
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use gix::{ObjectId, objs::tree::EntryKind};

/// Symlinks may chain; beyond this many hops one is treated as escaping (the kernel gives up at 40).
const MAX_LINK_HOPS: usize = 40;

/// Suffix of an executable blob's name in the store: the mode belongs to the inode, so the same
/// content is stored once as 0444 and once as 0555 when a tree holds it both ways.
const EXECUTABLE_SUFFIX: &str = ".x";

/// One entry of the flattened tree.
enum Item {
    Dir,
    File { id: ObjectId, executable: bool },
    Link { target: Vec<u8> },
}

/// Why a tree could not be written.
pub(crate) enum WriteError {
    /// Reading an object failed, or the tree is malformed or hostile.
    Tree(String),
    /// Writing to disk failed.
    Io(std::path::PathBuf, std::io::Error),
}

/// What writing a tree did.
pub(crate) struct Written {
    /// Symlinks left out because they lead outside the tree, sorted.
    pub skipped_symlinks: Vec<String>,
    /// Files whose content was not in the blob store and had to be read from the object store
    /// and written.
    pub blobs_written: u64,
}

/// Whether `name` is a hex object id (SHA-1 or SHA-256): a tree directory's name, or a blob's
/// without its suffix.
pub(crate) fn is_object_id(name: &str) -> bool {
    matches!(name.len(), 40 | 64) && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `name` is the name of a blob in the store (see [`blob_name`]).
pub(crate) fn is_blob_name(name: &str) -> bool {
    is_object_id(name.strip_suffix(EXECUTABLE_SUFFIX).unwrap_or(name))
}

/// The name of a blob in the store: its id, plus a suffix when executable.
fn blob_name(id: &ObjectId, executable: bool) -> String {
    if executable {
        format!("{id}{EXECUTABLE_SUFFIX}")
    } else {
        id.to_string()
    }
}

/// Write the tree `tree_id` of `repo` into the (not yet existing) directory `dest`: files 0444
/// (0555 when executable), directories 0555, symlinks as symlinks. Submodule entries become empty
/// directories, as in a checkout without `--recurse-submodules`.
///
/// Every file is a hard link to its blob in the blob store `blobs` (`<cache>/blobs`, on the
/// file system of the trees: a hard link cannot cross one), written there (from the object
/// store) only when absent: a tree that differs from an earlier one in a few files costs one
/// `link()` per unchanged file and no decompression. Sharing an inode between trees is safe
/// because every link is read-only. A blob linked the maximum number of times (or a store on
/// another file system) makes that file a private copy instead.
///
/// A symlink whose target is absolute, or which (following other symlinks of the tree) would
/// lead outside the tree, is not created: its path is listed in
/// [`Written::skipped_symlinks`] instead. So every symlink
/// on disk resolves inside the tree, and a renderer that confines itself to the tree's root by
/// canonicalizing paths cannot be led out of it.
pub(crate) fn write_tree(
    repo: &gix::Repository,
    tree_id: ObjectId,
    dest: &Path,
    blobs: &Path,
) -> Result<Written, WriteError> {
    let mut items: Vec<(String, Item)> = Vec::new();
    collect(repo, tree_id, "", &mut items, 0)?;

    let links: HashMap<&str, &[u8]> = items
        .iter()
        .filter_map(|(path, item)| match item {
            Item::Link { target } => Some((path.as_str(), target.as_slice())),
            _ => None,
        })
        .collect();
    let escaping: HashSet<&str> = links
        .iter()
        .filter(|(path, target)| {
            let parent: Vec<String> = path.split('/').map(str::to_owned).collect::<Vec<_>>();
            let parent = &parent[..parent.len() - 1];
            resolve_inside(&links, parent.to_vec(), target, 0).is_none()
        })
        .map(|(path, _)| *path)
        .collect();

    let io = |p: &Path, e: std::io::Error| WriteError::Io(p.to_owned(), e);
    std::fs::create_dir(dest).map_err(|e| io(dest, e))?;
    let mut dirs = vec![dest.to_owned()];
    let mut blobs_written = 0;
    for (path, item) in &items {
        let full = dest.join(path);
        match item {
            Item::Dir => {
                std::fs::create_dir(&full).map_err(|e| io(&full, e))?;
                dirs.push(full);
            }
            Item::File { id, executable } => {
                if place_file(repo, *id, *executable, path, &full, blobs)? {
                    blobs_written += 1;
                }
            }
            Item::Link { target } => {
                if escaping.contains(path.as_str()) {
                    continue;
                }
                // Non-UTF-8 targets were counted as escaping above, so this conversion holds.
                let target = String::from_utf8_lossy(target).into_owned();
                std::os::unix::fs::symlink(&target, &full).map_err(|e| io(&full, e))?;
            }
        }
    }
    // Directories last and deepest first, so each is still writable while its entries are created.
    for dir in dirs.iter().rev() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555))
            .map_err(|e| io(dir, e))?;
    }
    let mut skipped: Vec<String> = escaping.into_iter().map(str::to_owned).collect();
    skipped.sort();
    Ok(Written {
        skipped_symlinks: skipped,
        blobs_written,
    })
}

/// Create the file `full` (tree path `path`) as a link to its blob, writing the content from
/// the object store when the store lacks it. Returns whether the content had to be written.
fn place_file(
    repo: &gix::Repository,
    id: ObjectId,
    executable: bool,
    path: &str,
    full: &Path,
    blobs: &Path,
) -> Result<bool, WriteError> {
    let io = |p: &Path, e: std::io::Error| WriteError::Io(p.to_owned(), e);
    let blob = blobs.join(blob_name(&id, executable));
    match std::fs::hard_link(&blob, full) {
        Ok(()) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // ext4 allows 65,000 links per inode: a file common to very many trees gets copies.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::TooManyLinks | std::io::ErrorKind::CrossesDevices
            ) => {}
        Err(e) => return Err(io(full, e)),
    }
    let object = repo
        .find_object(id)
        .map_err(|e| WriteError::Tree(format!("reading blob {id} for {path}: {e}")))?;
    let mode = if executable { 0o555 } else { 0o444 };
    write_read_only(full, &object.data, mode).map_err(|e| io(full, e))?;
    // Published by linking the complete file under its id: the store never holds a partial
    // blob, and a new one is never seen with a single link, which is what `prune` takes for
    // "unused". A concurrent writer of the same blob may have published it first (same
    // content); then this tree keeps its own copy.
    match std::fs::hard_link(full, &blob) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        // The tree's file is complete; only sharing with later trees is lost.
        Err(e) => tracing::debug!(blob = %blob.display(), error = %e, "could not publish a blob"),
    }
    Ok(true)
}

/// Create `path` (which must not exist) holding `data`, with exactly `mode` whatever the umask.
fn write_read_only(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(data)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// Flatten the tree into `(path, item)` in pre-order (parents before children), refusing entry
/// names that could address anything outside the directory being written.
fn collect(
    repo: &gix::Repository,
    tree_id: ObjectId,
    prefix: &str,
    out: &mut Vec<(String, Item)>,
    depth: usize,
) -> Result<(), WriteError> {
    if depth > 256 {
        return Err(WriteError::Tree(format!(
            "tree nested deeper than 256 levels at {prefix:?}"
        )));
    }
    let tree = repo
        .find_tree(tree_id)
        .map_err(|e| WriteError::Tree(format!("reading tree {tree_id} at {prefix:?}: {e}")))?;
    let decoded = tree
        .decode()
        .map_err(|e| WriteError::Tree(format!("decoding tree {tree_id} at {prefix:?}: {e}")))?;
    let mut children = Vec::new();
    for entry in &decoded.entries {
        let name = std::str::from_utf8(entry.filename)
            .map_err(|_| WriteError::Tree(format!("entry name in {prefix:?} is not UTF-8")))?;
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(WriteError::Tree(format!(
                "unsafe entry name {name:?} in {prefix:?}"
            )));
        }
        let path = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        let id = entry.oid.to_owned();
        match entry.mode.kind() {
            EntryKind::Tree => {
                out.push((path.clone(), Item::Dir));
                children.push((id, path));
            }
            EntryKind::Blob => out.push((
                path,
                Item::File {
                    id,
                    executable: false,
                },
            )),
            EntryKind::BlobExecutable => out.push((
                path,
                Item::File {
                    id,
                    executable: true,
                },
            )),
            EntryKind::Link => {
                let object = repo
                    .find_object(id)
                    .map_err(|e| WriteError::Tree(format!("reading symlink {path}: {e}")))?;
                out.push((
                    path,
                    Item::Link {
                        target: object.data.clone(),
                    },
                ));
            }
            EntryKind::Commit => out.push((path, Item::Dir)),
        }
    }
    // Children after all siblings: fine for creation order (a directory exists before its entries).
    for (id, path) in children {
        collect(repo, id, &path, out, depth + 1)?;
    }
    Ok(())
}

/// Resolve `target` as seen from the directory `base` (components from the tree root), following
/// the tree's own symlinks. Returns the resolved location, or `None` if it is absolute, not
/// UTF-8, climbs above the root at any point, or loops.
fn resolve_inside(
    links: &HashMap<&str, &[u8]>,
    base: Vec<String>,
    target: &[u8],
    hops: usize,
) -> Option<Vec<String>> {
    let target = std::str::from_utf8(target).ok()?;
    if target.starts_with('/') || target.is_empty() {
        return None;
    }
    let mut stack = base;
    for comp in target.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                stack.pop()?;
            }
            name => {
                stack.push(name.to_owned());
                let joined = stack.join("/");
                if let Some(next) = links.get(joined.as_str()) {
                    if hops >= MAX_LINK_HOPS {
                        return None;
                    }
                    stack.pop();
                    stack = resolve_inside(links, stack, next, hops + 1)?;
                }
            }
        }
    }
    Some(stack)
}

/// Remove a (possibly read-only) directory tree we created, e.g. a half-written temporary one or
/// a pruned tree. Returns the bytes of regular files that had no other link, i.e. whose space
/// this freed (content still linked from the blob store or another tree is not counted). A
/// path that is already gone is not an error.
pub(crate) fn force_remove(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    fn remove(p: &Path, depth: usize) -> std::io::Result<u64> {
        let meta = match std::fs::symlink_metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            other => other?,
        };
        let gone = |r: std::io::Result<()>| match r {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
        if !meta.is_dir() {
            let freed = if meta.is_file() && meta.nlink() == 1 {
                meta.len()
            } else {
                0
            };
            gone(std::fs::remove_file(p))?;
            return Ok(freed);
        }
        // Trees are at most 256 levels deep (`collect` refuses more); anything deeper was not
        // written by us, so stop rather than recurse without bound.
        if depth > 300 {
            return Err(std::io::Error::other(format!(
                "{} is nested too deeply to be a tree written by capstan",
                p.display()
            )));
        }
        // Entries of a read-only directory cannot be unlinked: make it writable first.
        gone(std::fs::set_permissions(
            p,
            std::fs::Permissions::from_mode(0o755),
        ))?;
        let mut freed = 0;
        let entries = match std::fs::read_dir(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            other => other?,
        };
        for entry in entries {
            freed += remove(&entry?.path(), depth + 1)?;
        }
        gone(std::fs::remove_dir(p))?;
        Ok(freed)
    }
    remove(path, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(links: &[(&str, &str)], which: &str) -> bool {
        let map: HashMap<&str, &[u8]> = links.iter().map(|(p, t)| (*p, t.as_bytes())).collect();
        let target = map[which];
        let mut parent: Vec<String> = which.split('/').map(str::to_owned).collect();
        parent.pop();
        resolve_inside(&map, parent, target, 0).is_some()
    }

    #[test]
    fn blob_names_are_recognised() {
        let id = ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").unwrap();
        assert!(is_blob_name(&blob_name(&id, false)));
        assert!(is_blob_name(&blob_name(&id, true)));
        assert_ne!(blob_name(&id, false), blob_name(&id, true));
        for other in [
            ".tmp-1-2",
            "README",
            "0123456789abcdef0123456789abcdef0123456.x",
            "",
        ] {
            assert!(!is_blob_name(other), "{other:?}");
        }
    }

    #[test]
    fn symlinks_are_resolved_through_the_tree() {
        assert!(check(&[("a", "b/c")], "a"));
        assert!(check(&[("dir/a", "../b")], "dir/a"));
        assert!(!check(&[("a", "../b")], "a"));
        assert!(!check(&[("a", "/etc/passwd")], "a"));
        assert!(!check(&[("dir/a", "../../etc")], "dir/a"));
        // Lexically "x/d/../.." is the root, but d points at the root already, so it escapes.
        assert!(!check(&[("x/d", ".."), ("x/e", "d/../..")], "x/e"));
        // A link to an escaping link escapes too.
        assert!(!check(&[("a", "b"), ("b", "../../x")], "a"));
        // Loops are refused.
        assert!(!check(&[("a", "b"), ("b", "a")], "a"));
        assert!(check(&[("a", "b"), ("b", "sub/file")], "a"));
    }
}
