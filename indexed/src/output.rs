//! Output that appears only when complete: files are written under temporary
//! names in the destination folder, synced, then renamed into place.
//! Large files are handed to the disk as they are written, so that the
//! sync at the end has little left to wait for.

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

/// Bytes of a [`Buffered`] file after which the disk is asked to start
/// writing them out.
const WRITEBACK: u64 = 8 << 20;

/// A [`PendingFile`] written through a buffer that the caller fills
/// directly (no copy from an encoding buffer into a writer's). Every
/// [`WRITEBACK`] bytes, the disk is asked to start writing what was written
/// (without waiting for it), so that `commit`'s sync finds little left to do
/// instead of the whole file.
pub(crate) struct Buffered {
    pub file: PendingFile,
    /// Bytes not yet written; [`flush_if_full`](Self::flush_if_full) writes
    /// them once they reach the capacity.
    pub buf: Vec<u8>,
    capacity: usize,
    written: u64,
    writeback_from: u64,
}

impl Buffered {
    pub fn new(file: PendingFile, capacity: usize) -> Self {
        Self {
            file,
            buf: Vec::with_capacity(capacity),
            capacity,
            written: 0,
            writeback_from: 0,
        }
    }

    /// Write the buffer out if it holds its capacity or more.
    pub fn flush_if_full(&mut self) -> io::Result<()> {
        if self.buf.len() >= self.capacity {
            self.flush()?;
        }
        Ok(())
    }

    /// Write the buffer out.
    pub fn flush(&mut self) -> io::Result<()> {
        self.file.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        if self.written - self.writeback_from >= WRITEBACK {
            start_writeback(
                self.file.tmp.file(),
                self.writeback_from,
                self.written - self.writeback_from,
            );
            self.writeback_from = self.written;
        }
        Ok(())
    }

    /// The file, everything written to it.
    pub fn into_inner(mut self) -> io::Result<PendingFile> {
        self.flush()?;
        Ok(self.file)
    }
}

/// Ask the kernel to start writing `len` bytes of `file` from `offset` to
/// the disk, without waiting. A hint: errors show at the sync that follows.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open for the call's duration; the call
    // reads no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File, _: u64, _: u64) {}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffered_file_holds_every_byte_written_past_several_writebacks() {
        let dir = tempfile::tempdir().unwrap();
        let file = PendingFile::create(&dir.path().join("out.bin")).unwrap();
        let mut out = Buffered::new(file, 4096);
        let mut expected = Vec::new();
        let mut i = 0u32;
        while (expected.len() as u64) < 2 * WRITEBACK + 12345 {
            let bytes = i.to_le_bytes();
            out.buf.extend_from_slice(&bytes);
            expected.extend_from_slice(&bytes);
            out.flush_if_full().unwrap();
            assert!(out.buf.len() < 4096 + 4);
            i += 1;
        }
        let file = out.into_inner().unwrap();
        assert_eq!(std::fs::read(file.tmp.temp_path()).unwrap(), expected);
    }
}
