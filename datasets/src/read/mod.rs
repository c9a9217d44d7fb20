//! Corpus files as a stream of documents.
//!
//! [`documents`] walks input files (or directories of them) and yields each
//! document with where it came from, following lm_dataformat's conventions
//! (what GPT-NeoX's `preprocess_data.py` reads with):
//!
//! | input | one document is |
//! |---|---|
//! | `.jsonl`, `.jsonl.zst`, `.jsonl.gz`, `.json.gz` | a line: a JSON object whose `text` (or each `--jsonl-keys` key) is a string, or a list of strings joined with `"\n\n"`; or a bare JSON string |
//! | `.txt` | the whole file (newlines read as Python's text mode does: `\r\n` and `\r` become `\n`) |
//! | `.tar`, `.tar.gz`/`.tgz`, `.jsonl.zst.tar`, `.zip` | each member: members named like one of the line formats above are read line by line (all members of a `.jsonl.zst.tar` are), others are one document each |
//! | `.parquet` | a row: the column named by the key (strings, or lists of strings joined with `"\n\n"`) |
//!
//! A directory stands for the files directly in it with one of these
//! extensions, in name order. Reading and decompression run on a thread of
//! their own, ahead of the consumer by at most a fixed number of documents.
//!
//! A line that is not what is expected (bad JSON, a missing key, a value
//! that is not text) is a [`ReadError::Malformed`]: the stream goes on after
//! it. Other errors (a file that cannot be opened, a corrupt compressed
//! stream, invalid UTF-8) end the stream.
//!
//! Memory stays bounded whatever the input: one JSON line, one `.txt` file
//! and one raw archive member may hold at most
//! [`ReadOptions::max_document_bytes`] (decompressed); past that, reading
//! stops with [`ReadError::TooLarge`], naming the file and offset. A gzip or
//! zip bomb (a small file that inflates to a huge line or member) is refused
//! that way instead of exhausting memory.

mod archive;
mod error;
mod format;
mod json_line;
mod json_scan;
mod lines;
mod parquet;
mod source;
mod stream;

pub use error::ReadError;
pub use format::Format;
pub use stream::{Documents, documents, expand_inputs};

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// One document: its text under each requested key, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// One text per key, in the order of the keys asked for; empty where the
    /// value is empty or null. Sources without keys (`.txt`, raw archive
    /// members) give the same text for every key.
    pub texts: Vec<String>,
    /// Where it came from.
    pub location: Location,
}

/// Where a document (or a malformed line) is in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The input file.
    pub file: Arc<Path>,
    /// The member of an archive, if the file is one.
    pub member: Option<Arc<str>>,
    /// The position inside the file or member.
    pub position: Position,
}

/// A position inside a file or archive member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The whole file or member is the document.
    Whole,
    /// A 1-based line number (line formats).
    Line(u64),
    /// A 1-based row number (Parquet).
    Row(u64),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(member) = &self.member {
            write!(f, " member {member}")?;
        }
        match self.position {
            Position::Whole => Ok(()),
            Position::Line(n) => write!(f, " line {n}"),
            Position::Row(n) => write!(f, " row {n}"),
        }
    }
}

/// The default limit on one document's bytes (a JSON line, a `.txt` file,
/// an archive member): 256 MiB, far above any real document (the Pile's
/// largest components average under 1 MiB a document), far below memory.
pub const DEFAULT_MAX_DOCUMENT_BYTES: u64 = 256 << 20;

/// What to read from each document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOptions {
    /// The JSON keys (Parquet columns) that hold text, `["text"]` by default.
    pub keys: Vec<String>,
    /// The most bytes one JSON line, `.txt` file or raw archive member may
    /// hold (decompressed); a longer one ends reading with [`ReadError::TooLarge`].
    pub max_document_bytes: u64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            keys: vec!["text".to_string()],
            max_document_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
        }
    }
}
