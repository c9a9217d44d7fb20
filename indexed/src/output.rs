//! Output that appears only when complete: files are written under temporary
//! names in the destination folder, synced, then renamed into place.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::error::{Error, Result};

/// A file being written under a temporary name next to its final path.
/// Dropping it deletes the temporary file.
pub(crate) struct PendingFile {
    pub tmp: NamedTempFile,
    pub path: PathBuf,
}

impl PendingFile {
    /// Start `path` as `.{name}.XXXXXX.tmp` in the same folder, creating the
    /// folder if needed.
    pub fn create(path: &Path) -> Result<Self> {
        let dir = parent_dir(path);
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create folder", e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        #[cfg(unix)]
        builder.permissions(shard_permissions());
        let tmp = builder
            .tempfile_in(dir)
            .map_err(|e| Error::io(path, "create temporary file", e))?;
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

/// Shards are data to share (a cluster's other users, a Slurm job's other
/// nodes): readable by all as the umask allows, not tempfile's private 0600.
#[cfg(unix)]
fn shard_permissions() -> fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    fs::Permissions::from_mode(0o644)
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
        f.tmp
            .as_file()
            .sync_all()
            .map_err(|e| Error::io(&f.path, "sync", e))?;
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
            .persist(&path)
            .map_err(|e| Error::io(&path, "rename into place", e.error))?;
        sync_dir(&path)?;
    }
    Ok(())
}

fn sync_dir(path: &Path) -> Result<()> {
    let dir = parent_dir(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, "sync folder", e))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
