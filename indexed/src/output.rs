//! Output that appears only when complete: files are written under temporary
//! names in the destination folder, synced, then renamed into place.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use neox_fsio::{AtomicFile, parent_dir};

use crate::error::{Error, Result};

/// A file being written under a temporary name next to its final path
/// (`neox_fsio`'s `.{name}.{pid}-{unique}.neox-tmp`, locked while open).
/// Dropping it deletes the temporary file.
pub(crate) struct PendingFile {
    pub tmp: AtomicFile,
    pub path: PathBuf,
}

impl PendingFile {
    /// Start `path` in the same folder, creating the folder if needed.
    pub fn create(path: &Path) -> Result<Self> {
        let dir = parent_dir(path);
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create folder", e))?;
        let tmp =
            AtomicFile::create(path).map_err(|e| Error::io(path, "create temporary file", e))?;
        Ok(PendingFile {
            tmp,
            path: path.to_path_buf(),
        })
    }
}

impl Write for PendingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}

/// An unnamed scratch file in `near`'s folder, gone when closed (or on a crash).
pub(crate) fn scratch_file(near: &Path) -> Result<File> {
    let dir = parent_dir(near);
    tempfile::tempfile_in(dir).map_err(|e| Error::io(dir, "create scratch file", e))
}

/// Sync both files and move them into place: the old `.idx` goes first and the
/// new one last, so that at every instant the prefix is either the old
/// dataset, an `.idx`-less (unreadable) one, or the complete new one.
pub(crate) fn commit(bin: PendingFile, idx: PendingFile) -> Result<()> {
    for f in [&bin, &idx] {
        f.tmp.sync().map_err(|e| Error::io(&f.path, "sync", e))?;
    }
    match fs::remove_file(&idx.path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(Error::io(&idx.path, "remove the previous file", e));
        }
        _ => {}
    }
    for f in [bin, idx] {
        let path = f.path;
        f.tmp
            .persist()
            .map_err(|e| Error::io(&path, "rename into place", e))?;
    }
    Ok(())
}
