//! Locks on pieces of work in a data folder, so that two runs never do the
//! same piece at once: a lock file `{parent}/.{name}.lock` per piece (a
//! corpus's output, one download). Lock files sit beside the dataset folders,
//! so a run that fails before writing anything leaves no folder behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::FetchError;

/// Held while a piece of work is being done; released on drop (or when the
/// process dies: the operating system drops the lock with the file).
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
    path: PathBuf,
}

impl FolderLock {
    /// Lock the piece of work `name` (e.g. one output or one download) with
    /// the file `{parent}/.{name}.lock`, waiting for another holder to finish.
    pub fn named(parent: &Path, name: &str) -> Result<FolderLock, FetchError> {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        std::fs::create_dir_all(parent).map_err(FetchError::io(parent))?;
        let path = parent.join(format!(".{name}.lock"));
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
                    "{}: another run holds this lock; waiting for it to finish",
                    path.display()
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
        let base = std::env::temp_dir().join(format!("neox-lock-{}", std::process::id()));
        let dir = base.join("corpus");
        let first = FolderLock::named(&base, "corpus").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let b = base.clone();
        let waiter = std::thread::spawn(move || {
            let _second = FolderLock::named(&b, "corpus").unwrap();
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
        assert!(!dir.exists(), "locking must not create the folder");
        assert!(base.join(".corpus.lock").exists());

        // Locks of different names do not wait for each other.
        let _a = FolderLock::named(&base, "corpus-shard-1-of-2").unwrap();
        let _b = FolderLock::named(&base, "corpus-shard-2-of-2").unwrap();
        assert!(base.join(".corpus-shard-2-of-2.lock").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
