//! Confinement of every path a repository (or its Application) names to the repository tree.
//!
//! A path is accepted only if it is relative, its lexical form stays under the root, and its
//! canonical form (all symlinks resolved) stays under the canonical root. The lexical check
//! gives a clear message for `../../x`; the canonical check catches symlinks that point out.

use crate::RenderError;
use std::path::{Component, Path, PathBuf};

/// A repository tree with its canonical root.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    root: PathBuf,
}

impl Tree {
    /// Opens a tree; the root must exist and be a directory.
    pub(crate) fn new(root: &Path) -> Result<Self, RenderError> {
        let root = root.canonicalize().map_err(|e| RenderError::io(root, e))?;
        if !root.is_dir() {
            return Err(RenderError::NotFound {
                what: "repository tree".into(),
                path: root.display().to_string(),
            });
        }
        Ok(Tree { root })
    }

    /// The canonical root.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// A path inside the tree as it should appear in messages (relative to the root).
    pub(crate) fn display(&self, path: &Path) -> String {
        match path.strip_prefix(&self.root) {
            Ok(rel) if rel.as_os_str().is_empty() => ".".to_string(),
            Ok(rel) => rel.display().to_string(),
            Err(_) => path.display().to_string(),
        }
    }

    /// Whether a canonical path lies inside the tree.
    pub(crate) fn contains(&self, canonical: &Path) -> bool {
        canonical.starts_with(&self.root)
    }

    /// Resolves `rel` against `base` (a canonical directory inside the tree) to an existing,
    /// canonical path inside the tree. `what` names the input in errors.
    pub(crate) fn resolve(
        &self,
        base: &Path,
        rel: &str,
        what: &str,
    ) -> Result<PathBuf, RenderError> {
        let escape = |reason: &str| RenderError::PathEscape {
            what: what.to_string(),
            path: rel.to_string(),
            reason: reason.to_string(),
        };
        let rel_path = Path::new(rel);
        if rel_path.is_absolute() || rel.starts_with('/') || rel.starts_with('\\') {
            return Err(escape("absolute paths are not allowed"));
        }
        // Lexical walk from the root: `..` may go up, but never above the root.
        let base_rel = base
            .strip_prefix(&self.root)
            .map_err(|_| escape("the base directory is not inside the repository"))?;
        let mut parts: Vec<std::ffi::OsString> =
            base_rel.iter().map(|c| c.to_os_string()).collect();
        for component in rel_path.components() {
            match component {
                Component::Normal(c) => parts.push(c.to_os_string()),
                Component::CurDir => {}
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return Err(escape("`..` leads above the repository root"));
                    }
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(escape("absolute paths are not allowed"));
                }
            }
        }
        let mut lexical = self.root.clone();
        lexical.extend(parts);
        let canonical = match lexical.canonicalize() {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A dangling symlink is reported as missing; one that points out but exists is
                // caught below.
                return Err(RenderError::NotFound {
                    what: what.to_string(),
                    path: rel.to_string(),
                });
            }
            Err(e) => return Err(RenderError::io(lexical, e)),
        };
        if !self.contains(&canonical) {
            return Err(escape(&format!(
                "it resolves through a symlink to {}",
                canonical.display()
            )));
        }
        Ok(canonical)
    }
}

/// The relative path from directory `from` to `to` (both absolute and canonical).
pub(crate) fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to_parts: Vec<_> = to.components().collect();
    let common = from
        .iter()
        .zip(to_parts.iter())
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for part in &to_parts[common..] {
        out.push(part.as_os_str());
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_between_directories() {
        assert_eq!(
            relative_path(Path::new("/tmp/a/b"), Path::new("/work/x")),
            PathBuf::from("../../../work/x")
        );
        assert_eq!(
            relative_path(Path::new("/tmp/a"), Path::new("/tmp/a/c")),
            PathBuf::from("c")
        );
        assert_eq!(
            relative_path(Path::new("/tmp/a"), Path::new("/tmp/a")),
            PathBuf::from(".")
        );
    }

    #[test]
    fn resolve_refuses_escapes_and_accepts_inner_dotdot() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("repo/a/b")).unwrap();
        std::fs::write(dir.path().join("repo/a/v.yaml"), "x: 1").unwrap();
        std::fs::write(dir.path().join("outside.yaml"), "x: 1").unwrap();
        let tree = Tree::new(&dir.path().join("repo")).unwrap();
        let b = tree.resolve(tree.root(), "a/b", "p").unwrap();
        assert_eq!(
            tree.resolve(&b, "../v.yaml", "p").unwrap(),
            tree.root().join("a/v.yaml")
        );
        let err = tree
            .resolve(&b, "../../../outside.yaml", "valueFiles")
            .unwrap_err();
        assert!(
            err.to_string().contains("above the repository root"),
            "{err}"
        );
        let err = tree.resolve(&b, "/etc/passwd", "valueFiles").unwrap_err();
        assert!(err.to_string().contains("absolute paths"), "{err}");
        let err = tree.resolve(&b, "nope.yaml", "valueFiles").unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
