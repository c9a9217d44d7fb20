//! What can go wrong while reading a corpus.

use std::path::PathBuf;

use super::Location;

/// An error while reading documents. An underlying error is this error's
/// `source()`, never repeated in its message (`{:#}` of an `anyhow` chain
/// prints each cause once).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// One line or row is not what was expected; reading goes on after it.
    #[error("{location}: malformed: {reason}")]
    Malformed {
        /// Where.
        location: Location,
        /// What was expected, and what was found.
        reason: String,
    },
    /// A file could not be opened or listed.
    #[error("cannot open {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file's name says nothing this reader knows how to read.
    #[error(
        "{path}: unknown input format; expected a name ending in {}",
        super::Format::EXTENSIONS.join(", ")
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// Reading or decompressing failed (e.g. a corrupt or truncated
    /// compressed stream).
    #[error("{file}{}: read error at compressed byte offset {offset}", member_suffix(.member))]
    Io {
        /// The file.
        file: PathBuf,
        /// The archive member, if any.
        member: Option<String>,
        /// How far into the file (its bytes on disk) reading had got.
        offset: u64,
        /// Why.
        source: std::io::Error,
    },
    /// Text that is not UTF-8.
    #[error("{location}: invalid UTF-8 at byte offset {offset} of the {what}")]
    InvalidUtf8 {
        /// Where.
        location: Location,
        /// Byte offset of the first invalid byte, in the decompressed file
        /// or member.
        offset: u64,
        /// "file" or "member".
        what: &'static str,
    },
    /// One document (a JSON line, a `.txt` file, an archive member) is
    /// longer than the limit: refused rather than read into memory.
    #[error(
        "{location}: a {what} longer than {limit} bytes (the limit on one document), from byte {offset} \
         of the {within} as decompressed; refusing it (a corrupt or hostile file? raise the limit with --max-document-bytes)"
    )]
    TooLarge {
        /// Where.
        location: Location,
        /// "line", "file" or "member".
        what: &'static str,
        /// "file" or "member": what `offset` counts in.
        within: &'static str,
        /// Where the document starts, in decompressed bytes of the file or member.
        offset: u64,
        /// The limit.
        limit: u64,
    },
    /// The reading thread stopped on a bug (a panic) before the end of the input.
    #[error("the reading thread failed before the end of the input (a bug: please report it)")]
    ReaderFailed,
    /// A Parquet file could not be read.
    #[error("{path}: Parquet: {reason}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn member_suffix(member: &Option<String>) -> String {
    member
        .as_ref()
        .map(|m| format!(" member {m}"))
        .unwrap_or_default()
}

impl ReadError {
    /// Whether reading goes on after this error (only a malformed line or row).
    pub fn is_malformed(&self) -> bool {
        matches!(self, ReadError::Malformed { .. })
    }
}
