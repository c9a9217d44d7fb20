//! Files that are complete or absent: the workspace's one helper
//! (`neox_fsio`), under the names the trainer's modules use.

use std::path::{Path, PathBuf};

pub use neox_fsio::{sync_dir, write_atomic};

/// A temporary name beside `path` (same folder, so the rename is atomic),
/// recognisable as this process's (`.{name}.{pid}-{unique}.neox-tmp`).
pub fn temp_beside(path: &Path) -> PathBuf {
    neox_fsio::temp_path(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"{}").unwrap();
        write_atomic(&path, b"[1]").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"[1]");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(
            neox_fsio::TempName::parse(&temp_beside(&path).file_name().unwrap().to_string_lossy())
                .is_some()
        );
    }
}
