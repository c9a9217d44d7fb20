//! A lock file in a dataset folder, so that two runs on one corpus never interleave.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::FetchError;

/// Held while a corpus folder is being worked on; released on drop (or when
/// the process dies: the operating system drops the lock with the file).
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
    path: PathBuf,
}

impl FolderLock {
    /// Lock `dir` (created if missing), waiting for another holder to finish.
    pub fn acquire(dir: &Path) -> Result<FolderLock, FetchError> {
        std::fs::create_dir_all(dir).map_err(FetchError::io(dir))?;
        let path = dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(FetchError::io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                tracing::info!(
                    "{}: another run holds this folder's lock; waiting for it to finish",
                    dir.display()
                );
                file.lock().map_err(FetchError::io(&path))?;
            }
            Err(TryLockError::Error(e)) => return Err(FetchError::io(&path)(e)),
        }
        Ok(FolderLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_for_the_first() {
        let dir = std::env::temp_dir().join(format!("neox-lock-{}", std::process::id()));
        let first = FolderLock::acquire(&dir).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.clone();
        let waiter = std::thread::spawn(move || {
            let _second = FolderLock::acquire(&d).unwrap();
            tx.send(()).unwrap();
        });
        // The second holder cannot get in while the first holds the lock.
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err()
        );
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        waiter.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
