//! Fetching corpus files into a data folder: http(s) streamed to disk with
//! resume (range requests validated by `If-Range`), retries with backoff on
//! connection errors and 5xx answers, size and SHA-256 verification; `file://`
//! URLs and local paths are verified and used in place.
//!
//! On disk, beside the destination `F`:
//! - `F.part` and `F.part.json`: an unfinished download and its validators;
//! - `F.download.json`: the record of a finished, verified download.
//!
//! A file is only ever renamed to `F` after it has been verified, so a
//! half-downloaded or corrupt file is never mistaken for the corpus.

mod error;
mod http;
mod lock;
mod progress;
mod record;
mod source;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use error::FetchError;
pub use lock::FolderLock;
pub use progress::{Progress, Silent};
pub use record::{DownloadRecord, beside, write_atomically};
pub use source::{Source, distinct_name, file_name_of, mirrored};
pub use verify::{measure, same_checksum};

use crate::downloader::RemoteFile;

/// A file ready to be read, and how it got there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Where the verified file lies.
    pub path: PathBuf,
    /// Where it came from.
    pub url: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its lower-case hex SHA-256.
    pub sha256: String,
    /// Bytes transferred over the network by this fetch (0 when cached or local).
    pub transferred: u64,
    /// How it was obtained.
    pub how: Obtained,
}

/// How a [`Fetched`] file was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Obtained {
    /// Downloaded now (possibly resuming an earlier partial download).
    Downloaded,
    /// Already in the data folder from an earlier run, and still matching its record.
    Cached,
    /// A local file (`file://` or a path), used in place.
    Local,
}

/// Downloads with retries and verification.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::blocking::Client,
    retries: u32,
    backoff: Duration,
    progress: Arc<dyn Progress>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher with 5 retries, 1 s initial backoff (doubling, at most 60 s),
    /// a 30 s connect timeout and a 120 s stall timeout.
    pub fn new() -> Result<Fetcher, FetchError> {
        let client = reqwest::blocking::Client::builder()
            .user_agent(concat!("neox-data/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            // In the blocking client this bounds each read: a stalled transfer fails and is retried.
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| FetchError::BadUrl {
                url: String::new(),
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Fetcher {
            client,
            retries: 5,
            backoff: Duration::from_secs(1),
            progress: Arc::new(Silent),
        })
    }

    /// Retry a failing transfer `retries` times, waiting `backoff`, then twice that, ...
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> Fetcher {
        self.retries = retries;
        self.backoff = backoff;
        self
    }

    /// Report transfers to `progress`.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Fetcher {
        self.progress = progress;
        self
    }

    /// Make `file` available at `dest` (a path in the data folder), verified
    /// against its declared size and checksum. Local sources are verified and
    /// used where they are; `dest` is then untouched.
    pub fn fetch(&self, file: &RemoteFile, dest: &Path) -> Result<Fetched, FetchError> {
        match Source::parse(&file.url)? {
            Source::Local(path) => fetch_local(file, path),
            Source::Http(url) => self.fetch_http(file, url, dest),
        }
    }

    fn fetch_http(
        &self,
        file: &RemoteFile,
        url: reqwest::Url,
        dest: &Path,
    ) -> Result<Fetched, FetchError> {
        let record_path = beside(dest, ".download.json");
        if dest.exists() {
            match check_cached(file, dest, &record_path) {
                Ok(fetched) => return Ok(fetched),
                Err(why) => {
                    tracing::warn!("{}: {why}; downloading it again", dest.display());
                    record::remove_if_present(dest);
                    record::remove_if_present(&record_path);
                }
            }
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(FetchError::io(parent))?;
        }
        let part = beside(dest, ".part");
        let transferred = http::download(self, &url, &part)?;
        let (size, sha256) = measure(&part).map_err(FetchError::io(&part))?;
        if let Err(e) = verify_facts(file, &part, size, &sha256) {
            record::remove_if_present(&part);
            record::remove_if_present(&beside(&part, ".json"));
            return Err(e);
        }
        std::fs::rename(&part, dest).map_err(FetchError::io(dest))?;
        neox_fsio::sync_dir(dest).map_err(FetchError::io(dest))?;
        record::remove_if_present(&beside(&part, ".json"));
        let rec = DownloadRecord {
            url: file.url.clone(),
            origin: file.origin.clone(),
            size,
            sha256: sha256.clone(),
        };
        record::store(&record_path, &rec)?;
        Ok(Fetched {
            path: dest.to_path_buf(),
            url: file.url.clone(),
            size,
            sha256,
            transferred,
            how: Obtained::Downloaded,
        })
    }
}

/// A local source: it must exist and match what is declared.
fn fetch_local(file: &RemoteFile, path: PathBuf) -> Result<Fetched, FetchError> {
    let (size, sha256) = measure(&path).map_err(|source| FetchError::LocalSource {
        path: path.clone(),
        source,
    })?;
    verify_facts(file, &path, size, &sha256)?;
    Ok(Fetched {
        path,
        url: file.url.clone(),
        size,
        sha256,
        transferred: 0,
        how: Obtained::Local,
    })
}

/// A file already at `dest` is used only if its record says it is complete
/// and it still matches that record and the declared facts.
fn check_cached(file: &RemoteFile, dest: &Path, record_path: &Path) -> Result<Fetched, String> {
    let rec: DownloadRecord = record::load(record_path)
        .ok_or_else(|| "no download record beside it, so it may be incomplete".to_string())?;
    let size = std::fs::metadata(dest).map_err(|e| e.to_string())?.len();
    if size != rec.size {
        return Err(format!(
            "{size} bytes on disk, but the download recorded {} bytes (truncated or changed)",
            rec.size
        ));
    }
    if let Some(expected) = file.size
        && expected != size
    {
        return Err(format!("{size} bytes, but the corpus declares {expected}"));
    }
    match &file.sha256 {
        Some(expected) if !same_checksum(expected, &rec.sha256) => {
            return Err(format!(
                "recorded SHA-256 {} differs from the declared {expected}",
                rec.sha256
            ));
        }
        // Without a checksum only the URL says which file this is: the
        // corpus's URL, whichever mirror served it.
        None if rec.identity() != file.identity() => {
            return Err(format!(
                "it was downloaded from {}, not from {}",
                rec.identity(),
                file.identity()
            ));
        }
        _ => {}
    }
    Ok(Fetched {
        path: dest.to_path_buf(),
        url: rec.url,
        size,
        sha256: rec.sha256,
        transferred: 0,
        how: Obtained::Cached,
    })
}

/// Compare measured size and checksum with the declared ones.
fn verify_facts(file: &RemoteFile, path: &Path, size: u64, sha256: &str) -> Result<(), FetchError> {
    if let Some(expected) = file.size
        && expected != size
    {
        return Err(FetchError::SizeMismatch {
            path: path.to_path_buf(),
            expected,
            actual: size,
        });
    }
    if let Some(expected) = &file.sha256
        && !same_checksum(expected, sha256)
    {
        return Err(FetchError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: expected.clone(),
            actual: sha256.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_sources_are_verified_and_used_in_place() {
        let dir = std::env::temp_dir().join(format!("neox-fetch-local-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.jsonl");
        std::fs::write(&path, b"abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let fetcher = Fetcher::new().unwrap();
        let unused = dir.join("never-written");

        let url = format!("file://{}", path.display());
        let got = fetcher
            .fetch(
                &RemoteFile::new(&url).with_size(3).with_sha256(abc),
                &unused,
            )
            .unwrap();
        assert_eq!(
            (got.path.as_path(), got.how, got.size),
            (path.as_path(), Obtained::Local, 3)
        );
        assert_eq!(got.sha256, abc);
        assert!(!unused.exists());

        let plain = path.display().to_string();
        let e = fetcher
            .fetch(&RemoteFile::new(&plain).with_size(4), &unused)
            .unwrap_err();
        assert!(
            matches!(
                e,
                FetchError::SizeMismatch {
                    expected: 4,
                    actual: 3,
                    ..
                }
            ),
            "{e}"
        );
        let e = fetcher
            .fetch(
                &RemoteFile::new(&plain).with_sha256("0".repeat(64)),
                &unused,
            )
            .unwrap_err();
        assert!(e.to_string().contains(abc), "{e}");
        let e = fetcher
            .fetch(
                &RemoteFile::new(dir.join("missing").display().to_string()),
                &unused,
            )
            .unwrap_err();
        assert!(matches!(e, FetchError::LocalSource { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
