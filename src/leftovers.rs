//! Temporary files that killed runs left in a dataset folder (see
//! `neox_fsio`): removed by the next run that writes there, shown by
//! `list` and `inspect` until then.

use std::path::{Path, PathBuf};

use neox_fsio::{Leftover, Reclaimed};

/// The temporary files in `folder` and the folders below it, stale or live.
pub fn in_folder(folder: &Path) -> Vec<Leftover> {
    folders(folder)
        .iter()
        .flat_map(|dir| neox_fsio::leftovers(dir).unwrap_or_default())
        .collect()
}

/// Remove the stale temporary files in `folder` and below (never a live
/// writer's), and say how much that reclaimed.
pub fn reclaim(folder: &Path) -> Reclaimed {
    let mut total = Reclaimed::default();
    for dir in folders(folder) {
        match neox_fsio::remove_stale(&dir, |_| true) {
            Ok(r) => total.add(r),
            Err(e) => tracing::warn!("{}: cannot clean up leftovers: {e}", dir.display()),
        }
    }
    if total.files > 0 {
        tracing::info!(
            "{}: removed {total} left by interrupted runs",
            folder.display()
        );
    }
    total
}

/// One line per leftover: path, size, and whose it is.
pub fn describe(l: &Leftover) -> String {
    let state = if l.live {
        format!("being written by process {}", l.name.pid)
    } else {
        format!(
            "left by process {}, which is gone; the next run removes it",
            l.name.pid
        )
    };
    format!(
        "{} ({}, {state})",
        l.path.display(),
        neox_fsio::human(l.bytes)
    )
}

/// `folder` and every folder below it (not following links).
fn folders(folder: &Path) -> Vec<PathBuf> {
    let mut all = vec![folder.to_path_buf()];
    let mut i = 0;
    while let Some(dir) = all.get(i).cloned() {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            all.extend(
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        i += 1;
    }
    all
}
