//! Files that are complete or absent: the workspace's one helper
//! (`neox_fsio`: a locked `.{name}.{pid}-{unique}.neox-tmp` beside the file,
//! fsync, rename, fsync of the folder), under the names the trainer uses.

pub use neox_fsio::{sync_dir, write_atomic};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"{}").unwrap();
        write_atomic(&path, b"[1]").unwrap();
        sync_dir(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"[1]");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
