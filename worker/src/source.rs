//! The Source: which versions exist under a model's base path. Like TF Serving's
//! `FileSystemStoragePathSource`, children whose names parse as int64 are versions
//! (leading zeros allowed: `00000123` is 123); everything else is ignored.

use std::io;
use std::path::{Path, PathBuf};

/// One version directory found under a base path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionDir {
    pub version: i64,
    pub path: PathBuf,
}

/// Parses a directory name as a version number (digits only, as `SimpleAtoi` on a
/// directory name does in practice).
pub fn parse_version(name: &str) -> Option<i64> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse::<i64>().ok()
}

/// Lists the version directories under `base_path`, sorted by version. When two names
/// parse to the same number, the later one in sorted order wins (TF Serving warns).
pub fn list_versions(base_path: &Path) -> io::Result<Vec<VersionDir>> {
    let mut found = std::collections::BTreeMap::new();
    let mut names: Vec<_> = std::fs::read_dir(base_path)?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in names {
        if let Some(version) = parse_version(&name) {
            // The joined path stays inside base_path: `name` is a plain digit string.
            found.insert(version, base_path.join(&name));
        }
    }
    Ok(found
        .into_iter()
        .map(|(version, path)| VersionDir { version, path })
        .collect())
}

/// What a version directory holds, file by file (relative path, size, modification
/// time), to tell a complete version from one still being copied in: the same
/// fingerprint at two looks means it has stopped changing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint(Vec<(PathBuf, u64, Option<std::time::SystemTime>)>);

/// Fingerprints `dir` recursively (following symbolic links, as a load would).
pub fn fingerprint(dir: &Path) -> io::Result<Fingerprint> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            let meta = std::fs::metadata(&path)?;
            if meta.is_dir() {
                pending.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
                files.push((rel, meta.len(), meta.modified().ok()));
            }
        }
    }
    files.sort();
    Ok(Fingerprint(files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_children_are_versions() {
        let dir = std::env::temp_dir().join(format!("tfgate-source-{}", std::process::id()));
        for d in ["1", "00000123", "abc", "7x", "-3"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("5"), b"a file, not a version").unwrap();
        let versions: Vec<i64> = list_versions(&dir)
            .unwrap()
            .iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(versions, vec![1, 123]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fingerprints_change_while_a_version_is_copied_in() {
        let dir = std::env::temp_dir().join(format!("tfgate-fp-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("variables")).unwrap();
        std::fs::write(dir.join("saved_model.pb"), b"graph").unwrap();
        let a = fingerprint(&dir).unwrap();
        assert_eq!(a, fingerprint(&dir).unwrap(), "nothing changed");
        std::fs::write(dir.join("variables/variables.index"), b"i").unwrap();
        let b = fingerprint(&dir).unwrap();
        assert_ne!(a, b, "a new file");
        std::fs::write(dir.join("variables/variables.index"), b"index").unwrap();
        assert_ne!(b, fingerprint(&dir).unwrap(), "a file grew");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parses_like_simple_atoi_on_dir_names() {
        assert_eq!(parse_version("0042"), Some(42));
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("99999999999999999999"), None);
    }
}
