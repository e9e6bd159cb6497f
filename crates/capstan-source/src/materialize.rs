//! Writing a Git tree to disk read-only, with a check that no symlink leads out of it.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::PermissionsExt,
    path::Path,
};

use gix::{ObjectId, objs::tree::EntryKind};

/// Symlinks may chain; beyond this many hops one is treated as escaping (the kernel gives up at 40).
const MAX_LINK_HOPS: usize = 40;

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

/// Write the tree `tree_id` of `repo` into the (not yet existing) directory `dest`: files 0444
/// (0555 when executable), directories 0555, symlinks as symlinks. Submodule entries become empty
/// directories, as in a checkout without `--recurse-submodules`.
///
/// A symlink whose target is absolute, or which (following other symlinks of the tree) would
/// lead outside the tree, is not created: its path is returned instead, sorted. So every symlink
/// on disk resolves inside the tree, and a renderer that confines itself to the tree's root by
/// canonicalizing paths cannot be led out of it.
pub(crate) fn write_tree(
    repo: &gix::Repository,
    tree_id: ObjectId,
    dest: &Path,
) -> Result<Vec<String>, WriteError> {
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
    for (path, item) in &items {
        let full = dest.join(path);
        match item {
            Item::Dir => {
                std::fs::create_dir(&full).map_err(|e| io(&full, e))?;
                dirs.push(full);
            }
            Item::File { id, executable } => {
                let object = repo
                    .find_object(*id)
                    .map_err(|e| WriteError::Tree(format!("reading blob {id} for {path}: {e}")))?;
                std::fs::write(&full, &object.data).map_err(|e| io(&full, e))?;
                let mode = if *executable { 0o555 } else { 0o444 };
                std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| io(&full, e))?;
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
    Ok(skipped)
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

/// Remove a (possibly read-only) directory tree we created, e.g. a half-written temporary one.
pub(crate) fn force_remove(path: &Path) -> std::io::Result<()> {
    fn make_writable(p: &Path) -> std::io::Result<()> {
        let meta = std::fs::symlink_metadata(p)?;
        if meta.is_dir() {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
            for entry in std::fs::read_dir(p)? {
                make_writable(&entry?.path())?;
            }
        }
        Ok(())
    }
    match make_writable(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    }
    std::fs::remove_dir_all(path)
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
