//! Where the end-to-end tests find `../shared` (the offline corpus,
//! tokenizers and GPT-NeoX reference fixtures).

use std::path::PathBuf;

/// `$NEOX_SHARED`, else `shared/` beside the clone; fails with a clear
/// message when it is not there.
pub fn shared() -> PathBuf {
    let dir = std::env::var_os("NEOX_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared")));
    assert!(
        dir.join("fixtures/neox-reference").is_dir() && dir.join("data").is_dir(),
        "{} is missing or incomplete: these tests need the shared folder beside the clone (or NEOX_SHARED naming it)",
        dir.display()
    );
    dir
}

/// A tokenizer file of the shared folder, as a command-line argument.
#[allow(dead_code)] // not every test binary uses it
pub fn tokenizer_file(name: &str) -> String {
    shared()
        .join("tokenizers")
        .join(name)
        .to_string_lossy()
        .into_owned()
}
