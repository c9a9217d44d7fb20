//! Finding and removing the temporary files that killed runs left behind.
//! A temporary file whose lock nobody holds belongs to no live writer: it is
//! stale. One that is locked is being written right now and is left alone.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use crate::name::TempName;

/// A temporary file found in a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Where it is.
    pub path: PathBuf,
    /// The output it was for and the process that made it.
    pub name: TempName,
    /// Its size.
    pub bytes: u64,
    /// Whether a live process holds its lock (is writing it now).
    pub live: bool,
}

/// What a cleanup removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Files removed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl Reclaimed {
    /// Add another cleanup's figures.
    pub fn add(&mut self, other: Reclaimed) {
        self.files += other.files;
        self.bytes += other.bytes;
    }
}

impl std::fmt::Display for Reclaimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = if self.files == 1 { "" } else { "s" };
        write!(
            f,
            "{} temporary file{plural}, {}",
            self.files,
            human(self.bytes)
        )
    }
}

/// `21042000` -> `21.0 MB` (decimal units).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The temporary files in `dir` (not its sub-folders), stale or live, in name
/// order; none if `dir` does not exist.
pub fn leftovers(dir: &Path) -> io::Result<Vec<Leftover>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().and_then(TempName::parse) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let path = entry.path();
        let live = probe(&path).is_none();
        found.push(Leftover {
            path,
            name,
            bytes: meta.len(),
            live,
        });
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// Remove the stale temporary files in `dir` (not its sub-folders) whose
/// output name `target` accepts; live writers' files are never touched.
pub fn remove_stale(dir: &Path, target: impl Fn(&str) -> bool) -> io::Result<Reclaimed> {
    let mut reclaimed = Reclaimed::default();
    for leftover in leftovers(dir)? {
        if leftover.live || !target(&leftover.name.target) {
            continue;
        }
        // Hold the lock while removing, so that no writer can take the file meanwhile.
        let Some(_locked) = probe(&leftover.path) else {
            continue;
        };
        match std::fs::remove_file(&leftover.path) {
            Ok(()) => reclaimed.add(Reclaimed {
                files: 1,
                bytes: leftover.bytes,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(reclaimed)
}

/// The file opened and locked if nobody else holds its lock (it is stale);
/// `None` if a writer holds it, or if that cannot be told (then it is kept).
fn probe(path: &Path) -> Option<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .or_else(|_| File::open(path))
        .ok()?;
    match file.try_lock() {
        Ok(()) => Some(file),
        Err(TryLockError::WouldBlock) => None,
        Err(TryLockError::Error(e)) => {
            tracing::debug!("{}: cannot test its lock: {e}", path.display());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AtomicFile;
    use std::io::Write;

    /// A temporary file as a killed process leaves it: our name, no lock.
    fn orphan(dir: &Path, target: &str, pid: u32, bytes: usize) -> PathBuf {
        let path = dir.join(format!(".{target}.{pid}-1f.neox-tmp"));
        std::fs::write(&path, vec![7u8; bytes]).unwrap();
        path
    }

    #[test]
    fn stale_files_go_and_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // The live writer first: creating it removes stale files of its output.
        let mut live = AtomicFile::create(&d.join("x.bin")).unwrap();
        live.write_all(b"being written").unwrap();
        let a = orphan(d, "x.bin", 4_000_000, 100);
        let b = orphan(d, "y.idx", 4_000_001, 10);
        std::fs::write(d.join("x.bin"), b"out").unwrap();
        std::fs::write(d.join(".x.bin.ABCDEF.tmp"), b"not ours").unwrap();

        let found = leftovers(d).unwrap();
        assert_eq!(found.len(), 3, "{found:?}");
        let live_one = found.iter().find(|l| l.live).unwrap();
        assert_eq!(live_one.path, live.temp_path());
        assert_eq!(live_one.name.pid, std::process::id());

        let r = remove_stale(d, |t| t == "x.bin").unwrap();
        assert_eq!(
            r,
            Reclaimed {
                files: 1,
                bytes: 100
            }
        );
        assert!(!a.exists() && b.exists() && live.temp_path().exists());
        let r = remove_stale(d, |_| true).unwrap();
        assert_eq!(
            r,
            Reclaimed {
                files: 1,
                bytes: 10
            }
        );
        assert!(live.temp_path().exists());
        assert!(d.join(".x.bin.ABCDEF.tmp").exists());
        live.persist().unwrap();
        assert_eq!(std::fs::read(d.join("x.bin")).unwrap(), b"being written");
        assert_eq!(r.to_string(), "1 temporary file, 10 B");
        let r = Reclaimed {
            files: 2,
            bytes: 21_042_000,
        };
        assert_eq!(r.to_string(), "2 temporary files, 21.0 MB");
    }

    #[test]
    fn a_new_writer_removes_the_leftovers_of_its_own_output() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mine = orphan(d, "x.bin", 4_000_000, 5);
        let other = orphan(d, "z.bin", 4_000_000, 5);
        let f = AtomicFile::create(&d.join("x.bin")).unwrap();
        f.persist().unwrap();
        assert!(!mine.exists());
        assert!(other.exists());
    }

    #[test]
    fn a_file_whose_lock_is_held_is_left_alone() {
        // flock locks belong to an open file: a lock taken through another
        // open of it in this process competes as another process's would.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let path = orphan(d, "x.bin", 4_000_002, 3);
        let holder = File::options().write(true).open(&path).unwrap();
        holder.lock().unwrap();
        assert_eq!(remove_stale(d, |_| true).unwrap(), Reclaimed::default());
        assert!(leftovers(d).unwrap()[0].live);
        drop(holder);
        assert_eq!(remove_stale(d, |_| true).unwrap().files, 1);
        assert!(
            leftovers(dir.path().join("absent").as_path())
                .unwrap()
                .is_empty()
        );
    }
}
