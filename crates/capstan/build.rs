//! Embeds the repository's `examples/` directory in the binary, so `capstan up` can create its
//! demo Git repository from any working directory (and from an installed binary), and so the
//! demo always matches the version of the binary that deploys it.
//!
//! Writes `$OUT_DIR/examples.rs`: `EXAMPLES: &[(&str, &[u8])]`, relative path and contents of
//! every file, sorted by path.

use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let examples = manifest_dir.join("../../examples");
    // Cargo scans a directory given here recursively, so adding, editing or removing an
    // example rebuilds the list.
    println!("cargo::rerun-if-changed={}", examples.display());
    let root = examples
        .canonicalize()
        .map_err(|e| format!("the examples directory {}: {e}", examples.display()))?;
    let mut files = Vec::new();
    collect(&root, &root, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(format!("no files under {}", root.display()).into());
    }
    let mut out = String::from("/// The files of `examples/`: path relative to it, contents.\n");
    out.push_str("pub static EXAMPLES: &[(&str, &[u8])] = &[\n");
    for (rel, abs) in &files {
        writeln!(out, "    ({rel:?}, include_bytes!({abs:?})),")?;
    }
    out.push_str("];\n");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("examples.rs"), out)?;
    Ok(())
}

/// Regular files under `dir`, as (path relative to `root` with `/` separators, absolute path).
/// A symlink is refused: the demo repository is written from these bytes, and a link could
/// point anywhere on the build machine.
fn collect(
    root: &Path,
    dir: &Path,
    files: &mut Vec<(String, String)>,
) -> Result<(), Box<dyn Error>> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if kind.is_symlink() {
            return Err(format!(
                "{} is a symlink; examples must be plain files",
                path.display()
            )
            .into());
        }
        if kind.is_dir() {
            collect(root, &path, files)?;
        } else if kind.is_file() {
            let rel = path.strip_prefix(root)?;
            let rel = rel
                .to_str()
                .ok_or_else(|| format!("{} is not a UTF-8 path", path.display()))?
                .replace(std::path::MAIN_SEPARATOR, "/");
            let abs = path
                .to_str()
                .ok_or_else(|| format!("{} is not a UTF-8 path", path.display()))?
                .to_string();
            files.push((rel, abs));
        }
    }
    Ok(())
}
