//! The errors of this crate: each names the file and what is wrong with it.

use std::io;
use std::path::{Path, PathBuf};

use crate::DType;

/// Everything that can go wrong reading, writing or merging shards.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error on a file.
    #[error("{}: {action}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done (`open`, `write`, `rename`, ...).
        action: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// A file that is not a valid `MMIDIDX` shard.
    #[error("{}: {problem}", path.display())]
    Corrupt {
        /// The `.idx` or `.bin` file.
        path: PathBuf,
        /// What is wrong.
        problem: Corruption,
    },
    /// A sequence index past the end of the dataset.
    #[error("{}: sequence {index} does not exist: the dataset has {len} sequences", path.display())]
    SequenceOutOfRange {
        /// The `.bin` file.
        path: PathBuf,
        /// The index asked for.
        index: usize,
        /// The number of sequences.
        len: usize,
    },
    /// A document index past the last document.
    #[error("{}: document {index} does not exist: the dataset has {len} documents", path.display())]
    DocumentOutOfRange {
        /// The `.idx` file.
        path: PathBuf,
        /// The index asked for.
        index: usize,
        /// The number of documents.
        len: usize,
    },
    /// A slice reaching past the end of its sequence.
    #[error(
        "{}: tokens {offset}..{offset}+{length} of sequence {index} do not exist: it has {size} tokens",
        path.display()
    )]
    SliceOutOfRange {
        /// The `.bin` file.
        path: PathBuf,
        /// The sequence.
        index: usize,
        /// First token asked for.
        offset: usize,
        /// Number of tokens asked for.
        length: usize,
        /// Tokens in the sequence.
        size: usize,
    },
    /// A token id too large for the shard's dtype.
    #[error(
        "{}: token id {token} (token {position} of sequence {sequence}) does not fit {dtype}, whose largest id is {}",
        path.display(),
        dtype.max_token()
    )]
    TokenOutOfRange {
        /// The `.bin` being written.
        path: PathBuf,
        /// The token id.
        token: u32,
        /// Its position in the sequence.
        position: u64,
        /// The sequence being written.
        sequence: u64,
        /// The dtype of the shard.
        dtype: DType,
    },
    /// A sequence with more tokens than the `.idx` can record (`i32` sizes).
    #[error(
        "{}: sequence {sequence} has more than {} tokens, the most an .idx can record",
        path.display(),
        i32::MAX
    )]
    SequenceTooLong {
        /// The `.bin` being written.
        path: PathBuf,
        /// The sequence.
        sequence: u64,
    },
    /// Shards of different dtypes cannot be merged.
    #[error(
        "{} holds {found} tokens but {} holds {expected}: shards of different dtypes cannot be merged",
        path.display(),
        first.display()
    )]
    DtypeMismatch {
        /// The first input, whose dtype the output takes.
        first: PathBuf,
        /// Its dtype.
        expected: DType,
        /// The input that differs.
        path: PathBuf,
        /// Its dtype.
        found: DType,
    },
    /// Inputs that together need offsets past what an `.idx` holds.
    #[error(
        "merge into {}: the inputs together exceed the i64 byte offsets and counts an .idx holds",
        output.display()
    )]
    MergeTooLarge {
        /// The output prefix.
        output: PathBuf,
    },
    /// `merge` called without inputs.
    #[error("merge into {}: no input prefixes given", output.display())]
    NoInputs {
        /// The output prefix.
        output: PathBuf,
    },
}

/// What is wrong with a corrupt, truncated or foreign shard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// Shorter than the fixed header.
    #[error("truncated: an .idx header needs {needed} bytes, file has {found}")]
    TruncatedHeader {
        /// Bytes a header needs.
        needed: u64,
        /// Bytes in the file.
        found: u64,
    },
    /// The older `TNTIDX` (Megatron "cached"/"lazy") index format.
    #[error(
        "this is an old-style TNTIDX index (Megatron's non-mmap 'cached'/'lazy' format), \
         not MMIDIDX; convert it with Megatron's tools first"
    )]
    OldTntIdx,
    /// Not an `MMIDIDX` file at all.
    #[error("wrong magic: expected \"MMIDIDX\\0\\0\", found {found:?}")]
    WrongMagic {
        /// The first bytes of the file, escaped.
        found: String,
    },
    /// A version other than 1.
    #[error("unsupported version {found}: only MMIDIDX version 1 exists")]
    WrongVersion {
        /// The version in the header.
        found: u64,
    },
    /// A dtype code that is not a supported token type.
    #[error(
        "unknown dtype code {code} at byte 17: expected 1 (uint8), 2 (int8), 3 (int16), \
         4 (int32), 5 (int64) or 8 (uint16); 6 and 7 are float types, never token ids"
    )]
    UnknownDtype {
        /// The code.
        code: u8,
    },
    /// Counts so large the file size overflows.
    #[error("header counts impossible: {sequences} sequences, {doc_idx_len} doc_idx entries")]
    ImpossibleCounts {
        /// N from the header.
        sequences: u64,
        /// D from the header.
        doc_idx_len: u64,
    },
    /// The `.idx` is shorter than the header's counts need.
    #[error(
        "truncated: header says {sequences} sequences and {doc_idx_len} doc_idx entries, \
         which needs 34+12*{sequences}+8*{doc_idx_len} = {needed} bytes, file has {found}"
    )]
    TruncatedIdx {
        /// N.
        sequences: u64,
        /// D.
        doc_idx_len: u64,
        /// Bytes needed.
        needed: u64,
        /// Bytes found.
        found: u64,
    },
    /// The `.idx` is longer than the header's counts say.
    #[error(
        "{extra} unexpected bytes after the end: header says {sequences} sequences and \
         {doc_idx_len} doc_idx entries, which needs {needed} bytes"
    )]
    TrailingIdx {
        /// N.
        sequences: u64,
        /// D.
        doc_idx_len: u64,
        /// Bytes needed.
        needed: u64,
        /// Bytes beyond.
        extra: u64,
    },
    /// A negative size.
    #[error("size of sequence {index} (byte {offset}) is negative: {size}")]
    NegativeSize {
        /// Sequence.
        index: u64,
        /// Byte offset of the size in the `.idx`.
        offset: u64,
        /// The value.
        size: i32,
    },
    /// The sizes add up past the largest byte offset a pointer can hold.
    #[error(
        "size of sequence {index} (byte {offset}) takes the .bin past byte {max}, \
         the largest offset an i64 pointer holds",
        max = i64::MAX
    )]
    OffsetOverflow {
        /// Sequence.
        index: u64,
        /// Byte offset of its size in the `.idx`.
        offset: u64,
    },
    /// A pointer that does not follow the previous sequence.
    #[error(
        "pointer of sequence {index} (byte {offset}) is {found}, expected {expected} \
         (where the previous sequence ends)"
    )]
    BadPointer {
        /// Sequence.
        index: u64,
        /// Byte offset of the pointer in the `.idx`.
        offset: u64,
        /// Value expected.
        expected: i64,
        /// Value found.
        found: i64,
    },
    /// The sizes need more tokens than the `.bin` holds.
    #[error(
        "truncated: the .idx sizes need {needed} bytes ({tokens} {dtype} tokens), \
         the .bin has {found}"
    )]
    TruncatedBin {
        /// Tokens the sizes add up to.
        tokens: u64,
        /// The dtype.
        dtype: DType,
        /// Bytes needed.
        needed: u64,
        /// Bytes in the `.bin`.
        found: u64,
    },
    /// The `.bin` holds more than the sizes account for.
    #[error(
        "{extra} unexpected bytes after the end: the .idx sizes account for {needed} bytes \
         ({tokens} {dtype} tokens)"
    )]
    TrailingBin {
        /// Tokens the sizes add up to.
        tokens: u64,
        /// The dtype.
        dtype: DType,
        /// Bytes accounted for.
        needed: u64,
        /// Bytes beyond.
        extra: u64,
    },
    /// `doc_idx` does not start at 0.
    #[error("doc_idx[0] (byte {offset}) is {found}, expected 0")]
    DocIdxStart {
        /// Byte offset in the `.idx`.
        offset: u64,
        /// Value found.
        found: i64,
    },
    /// A `doc_idx` entry below its predecessor or beyond the sequences.
    #[error(
        "doc_idx[{index}] (byte {offset}) is {found}: expected a value between \
         {previous} (doc_idx[{index}-1]) and {sequences} (the number of sequences)"
    )]
    DocIdxOrder {
        /// Entry.
        index: u64,
        /// Byte offset in the `.idx`.
        offset: u64,
        /// Value found.
        found: i64,
        /// Previous entry.
        previous: i64,
        /// N.
        sequences: u64,
    },
    /// `doc_idx` is empty (it always holds at least the leading 0).
    #[error("doc_idx is empty; it must at least hold the leading 0")]
    EmptyDocIdx,
}

impl Error {
    pub(crate) fn io(path: &Path, action: &'static str, source: io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, problem: Corruption) -> Self {
        Error::Corrupt {
            path: path.to_path_buf(),
            problem,
        }
    }

    /// The corruption, when this error is one.
    pub fn corruption(&self) -> Option<&Corruption> {
        match self {
            Error::Corrupt { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

/// This crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
