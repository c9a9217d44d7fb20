//! Small JSON side files kept next to downloads: what a finished file is, and
//! what a partial one was fetched from (so that it can be resumed safely).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::FetchError;

/// Written beside a finished download as `{file}.download.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DownloadRecord {
    /// Where the bytes came from.
    pub url: String,
    /// The URL the corpus names, when `url` was a mirror's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256.
    pub sha256: String,
}

impl DownloadRecord {
    /// Which file this is (see `RemoteFile::identity`).
    pub fn identity(&self) -> &str {
        self.origin.as_deref().unwrap_or(&self.url)
    }
}

/// Written beside a partial download as `{file}.part.json`: the validators
/// that make a range request safe (`If-Range`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartRecord {
    /// The URL the partial bytes came from.
    pub url: String,
    /// The server's `ETag`, if it sent one.
    pub etag: Option<String>,
    /// The server's `Last-Modified`, if it sent one.
    pub last_modified: Option<String>,
}

impl PartRecord {
    /// The `If-Range` validator: a strong ETag, else the date.
    pub fn validator(&self) -> Option<&str> {
        self.etag
            .as_deref()
            .filter(|e| !e.starts_with("W/"))
            .or(self.last_modified.as_deref())
    }
}

/// `path` with `suffix` appended to its file name.
pub fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Read a side file; `None` if it is missing or unreadable (then it is ignored).
pub fn load<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Write `value` as JSON to `path` atomically (temporary name, fsync, rename).
pub fn store<T: Serialize>(path: &Path, value: &T) -> Result<(), FetchError> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| FetchError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    write_atomically(path, &json).map_err(FetchError::io(path))
}

/// Write `bytes` to `path` atomically: the workspace's one helper, kept
/// under its old name here for the callers that use it.
pub use neox_fsio::write_atomic as write_atomically;

/// Remove a file that may not exist.
pub fn remove_if_present(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("{}: could not remove: {e}", path.display());
    }
}
