//! What can go wrong while fetching a corpus file.

use std::path::PathBuf;

/// A failed fetch. Each variant names the file or URL and what was expected;
/// an underlying error is the `source()`, never repeated in the message.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The location is neither http(s)://, file:// nor a plain path.
    #[error(
        "{url}: unsupported scheme `{scheme}` (only http://, https://, file:// and local paths are accepted)"
    )]
    UnsupportedScheme { url: String, scheme: String },
    /// The location could not be parsed.
    #[error("{url}: not a valid URL: {reason}")]
    BadUrl { url: String, reason: String },
    /// The server answered with a status that retrying cannot fix (4xx).
    #[error("{url}: the server answered {status}; not retrying")]
    Status { url: String, status: u16 },
    /// Connection errors or 5xx answers persisted through every retry
    /// (`attempts` failed in a row, none getting further than the one before).
    #[error(
        "{url}: gave up after {attempts} attempts in a row without progress; last error: {last}"
    )]
    GaveUp {
        url: String,
        attempts: u32,
        last: String,
    },
    /// The file has a different size than the corpus declares.
    #[error("{path}: {actual} bytes, but {expected} bytes were expected; refusing to use it")]
    SizeMismatch {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    /// The file's SHA-256 differs from the one the corpus declares.
    #[error("{path}: SHA-256 {actual}, but {expected} was expected; refusing to use it")]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// A local source (file:// or a path) does not exist or cannot be read.
    #[error("{path}: cannot read the local source")]
    LocalSource {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Reading or writing a file in the data folder failed.
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl FetchError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> FetchError {
        let path = path.into();
        move |source| FetchError::Io { path, source }
    }
}
