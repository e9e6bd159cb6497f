//! Real Git repositories on disk, made with the `git` CLI as a user would make them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The author and committer of every test commit, so no test depends on the machine's Git
/// configuration (there may be none).
pub const IDENTITY_NAME: &str = "t";
/// The e-mail address that goes with [`IDENTITY_NAME`].
pub const IDENTITY_EMAIL: &str = "t@example.invalid";

/// Runs `git args…` in `dir` with the fixed test identity and returns its standard output,
/// trimmed. The machine's system and global Git configuration are not read (a developer's
/// `commit.gpgsign` or hooks path must not change what a test commits).
///
/// # Panics
/// When git cannot be run or exits unsuccessfully; the message carries the arguments and
/// git's standard error.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", IDENTITY_NAME)
        .env("GIT_AUTHOR_EMAIL", IDENTITY_EMAIL)
        .env("GIT_COMMITTER_NAME", IDENTITY_NAME)
        .env("GIT_COMMITTER_EMAIL", IDENTITY_EMAIL)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap_or_else(|e| panic!("git {args:?} in {}: {e}", dir.display()));
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A working-tree Git repository on branch `main`, kept on disk where the test put it (the
/// test's temporary directory removes it).
#[derive(Debug, Clone)]
pub struct GitRepo {
    dir: PathBuf,
}

impl GitRepo {
    /// Makes `dir` (and its parents) if needed and initialises a repository there on branch
    /// `main`. Files already in `dir` stay, uncommitted.
    pub fn init(dir: impl Into<PathBuf>) -> GitRepo {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        git(&dir, &["init", "-q", "-b", "main"]);
        GitRepo { dir }
    }

    /// The working tree.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The repository as a `file://` URL, the form an Application's `repoURL` takes.
    pub fn url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    /// Runs `git args…` in the working tree (see [`git()`]).
    pub fn git(&self, args: &[&str]) -> String {
        git(&self.dir, args)
    }

    /// Writes `text` to `rel` (a path inside the working tree), making its directories.
    pub fn write(&self, rel: &str, text: &str) -> &GitRepo {
        let path = self.dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        }
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        self
    }

    /// Deletes the file `rel` from the working tree (the next [`commit`](Self::commit)
    /// records the deletion).
    pub fn remove(&self, rel: &str) -> &GitRepo {
        let path = self.dir.join(rel);
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
        self
    }

    /// Stages everything in the working tree, commits it with `message` and returns the new
    /// commit's SHA.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.head()
    }

    /// The SHA `HEAD` points at.
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_carry_the_fixed_identity_and_return_the_head_sha() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = GitRepo::init(tmp.path().join("nested/repo"));
        let first = repo.write("app/cm.yaml", "a: 1\n").commit("first");
        assert_eq!(first.len(), 40, "{first}");
        assert_eq!(repo.git(&["rev-parse", "main"]), first);
        assert_eq!(
            repo.git(&["log", "-1", "--format=%an <%ae> / %cn <%ce>"]),
            "t <t@example.invalid> / t <t@example.invalid>"
        );

        let second = repo
            .remove("app/cm.yaml")
            .write("b.yaml", "b\n")
            .commit("second");
        assert_ne!(second, first);
        assert_eq!(
            repo.git(&["ls-tree", "-r", "--name-only", "HEAD"]),
            "b.yaml"
        );
        assert_eq!(repo.git(&["rev-parse", "HEAD~1"]), first);
    }

    #[test]
    fn only_the_repository_s_own_configuration_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = GitRepo::init(tmp.path().join("repo"));
        let config = repo.git(&["config", "--list", "--show-origin"]);
        assert!(!config.is_empty());
        for line in config.lines() {
            assert!(line.starts_with("file:.git/config\t"), "{line}");
        }
    }

    #[test]
    fn the_url_is_a_file_url_git_can_clone() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = GitRepo::init(tmp.path().join("src"));
        let sha = repo.write("x", "x\n").commit("x");
        assert!(repo.url().starts_with("file:///"), "{}", repo.url());
        git(tmp.path(), &["clone", "-q", &repo.url(), "copy"]);
        assert_eq!(git(&tmp.path().join("copy"), &["rev-parse", "HEAD"]), sha);
    }

    #[test]
    #[should_panic(expected = "git [\"rev-parse\", \"no-such-ref\"]")]
    fn a_failing_git_command_panics_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = GitRepo::init(tmp.path());
        repo.git(&["rev-parse", "no-such-ref"]);
    }
}
