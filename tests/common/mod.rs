//! Where the end-to-end tests find `../shared` (the offline corpus,
//! tokenizers and GPT-NeoX reference fixtures).

use std::path::PathBuf;

mod shared_dir;

/// The shared folder (see `shared_dir`); fails with a clear message when it
/// lacks the corpora.
pub fn shared() -> PathBuf {
    let dir = shared_dir::shared_dir();
    assert!(
        dir.join("fixtures/neox-reference").is_dir() && dir.join("data").is_dir(),
        "{} is incomplete: these tests need its data/ and fixtures/ (set NEOX_SHARED)",
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
