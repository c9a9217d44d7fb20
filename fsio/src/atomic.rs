//! Writing a file so that it is complete or absent: a locked temporary file
//! in the same folder, fsync, rename, fsync of the folder.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::name::temp_path;
use crate::parent_dir;
use crate::sweep::remove_stale;

/// A file being written under a temporary name beside its final path; it
/// becomes the final file only through [`AtomicFile::persist`]. Dropping it
/// unpersisted removes the temporary file; a process killed midway leaves
/// it, unlocked, for the next writer of the same output to remove.
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    temp: PathBuf,
    path: PathBuf,
    done: bool,
}

impl AtomicFile {
    /// Start writing `path` (its folder must exist). Leftovers of killed
    /// writers of the same output are removed first.
    pub fn create(path: &Path) -> io::Result<AtomicFile> {
        let target = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(target) = &target {
            match remove_stale(parent_dir(path), |t| t == target) {
                Ok(r) if r.files > 0 => {
                    tracing::info!("{}: removed {r} left by interrupted runs", path.display())
                }
                Ok(_) => {}
                Err(e) => tracing::debug!("{}: no cleanup of leftovers: {e}", path.display()),
            }
        }
        // A sweeper may catch the new file between its creation and our lock
        // and remove it as stale: then take another name.
        for _ in 0..16 {
            let temp = temp_path(path);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&temp)?;
            if let Err(e) = file.lock() {
                // No locks on this file system: sweepers then keep every file.
                tracing::debug!("{}: cannot lock: {e}", temp.display());
            }
            if is_still_at(&file, &temp) {
                return Ok(AtomicFile {
                    file,
                    temp,
                    path: path.to_path_buf(),
                    done: false,
                });
            }
        }
        Err(io::Error::other(format!(
            "{}: temporary files keep disappearing",
            path.display()
        )))
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The open temporary file, for writing (e.g. by `io::copy`).
    pub fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary path.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Flush the file's data and metadata to the disk.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Sync the file, rename it over the final path, sync the folder.
    pub fn persist(mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.sync_all()?;
        std::fs::rename(&self.temp, &self.path)?;
        self.done = true;
        sync_dir(&self.path)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(unix)]
fn is_still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn is_still_at(_: &File, path: &Path) -> bool {
    path.exists()
}

/// Write `bytes` to `path` atomically (see [`AtomicFile`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes)?;
    file.persist()
}

/// Sync the folder holding `path`, so that a rename into it survives a crash.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(parent_dir(path))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"{}").unwrap();
        write_atomic(&path, b"[1]").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"[1]");
        assert_eq!(names(dir.path()), ["a.json"]);
    }

    #[test]
    fn output_appears_only_on_persist_and_a_drop_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bin");
        let mut f = AtomicFile::create(&path).unwrap();
        f.write_all(b"abc").unwrap();
        assert!(!path.exists());
        let temp = f.temp_path().to_path_buf();
        assert!(temp.exists());
        assert!(crate::TempName::parse(&names(dir.path())[0]).is_some());
        drop(f);
        assert!(names(dir.path()).is_empty());

        let mut f = AtomicFile::create(&path).unwrap();
        f.write_all(b"abc").unwrap();
        f.persist().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        assert_eq!(names(dir.path()), ["x.bin"]);
    }

    #[test]
    fn a_missing_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_atomic(&dir.path().join("no/x"), b"").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
