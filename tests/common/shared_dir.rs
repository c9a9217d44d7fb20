//! The one locator of the shared folder (offline corpora, tokenizers and
//! GPT-NeoX reference fixtures) for every crate's tests and benches; include
//! it with `#[path = ".../tests/common/shared_dir.rs"] mod shared_dir;`.

use std::path::{Path, PathBuf};

/// `$NEOX_SHARED`, else the nearest `shared/` beside the including crate or
/// one of its ancestors that holds the reference fixtures (so a clone, a
/// crate inside it and a git worktree elsewhere all find it). Panics with a
/// clear message when there is none: the tests that call it need it.
pub fn shared_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NEOX_SHARED") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.is_dir(),
            "NEOX_SHARED names {}, which is not a folder",
            dir.display()
        );
        return dir;
    }
    let start = Path::new(env!("CARGO_MANIFEST_DIR"));
    start
        .ancestors()
        .map(|a| a.join("shared"))
        .find(|s| s.join("fixtures/neox-reference").is_dir())
        .unwrap_or_else(|| {
            panic!(
                "no shared folder (with fixtures/neox-reference) beside {} or above it: \
                 set NEOX_SHARED to it",
                start.display()
            )
        })
}
