//! Temporary directories and fixture copies.

use std::path::Path;

/// A fresh directory under the system's temporary directory, removed when the value is
/// dropped; `tag` goes into its name so a leftover one (a killed test) says whose it was.
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("capstan-{tag}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("creating a temporary directory for {tag}: {e}"))
}

/// Copies the tree `src` to `dst` (made if missing). A symbolic link is copied as the file it
/// points to.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap_or_else(|e| panic!("creating {}: {e}", dst.display()));
    let entries =
        std::fs::read_dir(src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let kind = entry
            .file_type()
            .unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
        if kind.is_dir() {
            copy_dir(&from, &to);
        } else {
            std::fs::copy(&from, &to)
                .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_nested_files_and_the_temp_dir_goes_away_on_drop() {
        let tmp = temp_dir("fs-test");
        let kept = tmp.path().to_path_buf();
        assert!(
            kept.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("capstan-fs-test-")
        );
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        std::fs::write(src.join("top.txt"), "top").unwrap();
        std::fs::write(src.join("a/b/deep.txt"), "deep").unwrap();
        copy_dir(&src, &tmp.path().join("dst"));
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("dst/top.txt")).unwrap(),
            "top"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("dst/a/b/deep.txt")).unwrap(),
            "deep"
        );
        drop(tmp);
        assert!(!kept.exists());
    }
}
