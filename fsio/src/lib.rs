//! Files that are complete or absent, for every crate of the workspace.
//!
//! A writer never writes its output in place: it writes a temporary file in
//! the same folder, syncs it, renames it over the output and syncs the folder
//! ([`AtomicFile`], [`write_atomic`]). The temporary file's name says whose it
//! is, `.{output}.{pid}-{unique}.neox-tmp` ([`TempName`]), and its writer holds
//! an exclusive lock on it for as long as it is open. A process killed midway
//! leaves the file but not the lock, so the next run can tell a leftover from
//! a live concurrent writer's file and remove only the former
//! ([`remove_stale`], [`leftovers`]).

mod atomic;
mod name;
mod sweep;

pub use atomic::{AtomicFile, sync_dir, write_atomic};
pub use name::{TempName, temp_path};
pub use sweep::{Leftover, Reclaimed, human, leftovers, remove_stale};

/// The folder holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &std::path::Path) -> &std::path::Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    }
}
