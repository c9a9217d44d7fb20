//! What can go wrong while loading a tokenizer or encoding a text.

use std::path::PathBuf;

/// An error from loading a tokenizer or from encoding.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A tokenizer file could not be read.
    #[error("cannot read tokenizer file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A tokenizer file was read but its content is not what was expected.
    #[error("invalid tokenizer file {path}: {reason}")]
    Invalid {
        /// The file (or the name of a built-in tokenizer).
        path: PathBuf,
        /// What was expected.
        reason: String,
    },
    /// The tokenizer kind needs a file that was not given.
    #[error("{kind} needs {what}")]
    MissingFile {
        /// The tokenizer kind.
        kind: &'static str,
        /// Which file, in words (e.g. "--merge-file (GPT-2's merges.txt)").
        what: &'static str,
    },
    /// The tokenizer has no end-of-document token.
    #[error("{what} has no end-of-document token {token:?}")]
    NoEod {
        /// The tokenizer, in words.
        what: String,
        /// The token looked for.
        token: &'static str,
    },
    /// An unknown tokenizer type or tiktoken encoding name.
    #[error("unknown {what} {name:?}; expected one of: {expected}")]
    Unknown {
        /// "tokenizer type" or "tiktoken encoding".
        what: &'static str,
        /// The name given.
        name: String,
        /// The accepted names.
        expected: String,
    },
    /// The tokenizer failed on a text.
    #[error("encoding failed: {0}")]
    Encode(String),
    /// The tokenizer failed on ids (e.g. one outside its vocabulary).
    #[error("decoding failed: {0}")]
    Decode(String),
    /// `--engine fast` was asked for a tokenizer the fast BPE engine does not
    /// reproduce exactly (the reason says what).
    #[error("--engine fast: {0}")]
    FastEngine(String),
}
