//! The `DataDownloader` trait, in the spirit of GPT-NeoX's class of the same
//! name (`tools/datasets/corpora.py`): a corpus is a name, the files it is made
//! of (URLs, with sizes and checksums where known), what is known about it
//! (documents, bytes of text), how its text is found in each record, and
//! overridable steps. The chain download -> read -> tokenize -> write ->
//! record lives once, in the `neox` package (`neox::prepare`), never in a downloader.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::download::{FetchError, Fetched, Fetcher, file_name_of};

/// One file of a corpus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteFile {
    /// `http(s)://`, `file://` or a local path.
    pub url: String,
    /// Size in bytes, if known: a download of another size is refused.
    #[serde(default)]
    pub size: Option<u64>,
    /// Lower-case hex SHA-256, if known: a download with another is refused.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The URL the corpus names when `url` is a mirror's copy of it: which
    /// file this is, whichever mirror serves it (a cached download from any
    /// mirror of it is reused).
    #[serde(skip)]
    pub origin: Option<String>,
}

impl RemoteFile {
    /// A file known only by its location.
    pub fn new(url: impl Into<String>) -> RemoteFile {
        RemoteFile {
            url: url.into(),
            size: None,
            sha256: None,
            origin: None,
        }
    }

    /// Declare its size in bytes.
    pub fn with_size(mut self, size: u64) -> RemoteFile {
        self.size = Some(size);
        self
    }

    /// Declare its SHA-256 (hex).
    pub fn with_sha256(mut self, sha256: impl Into<String>) -> RemoteFile {
        self.sha256 = Some(sha256.into());
        self
    }

    /// The URL that says which file this is: the corpus's, not a mirror's.
    pub fn identity(&self) -> &str {
        self.origin.as_deref().unwrap_or(&self.url)
    }

    /// The name it keeps on disk and on mirrors: the last segment of its URL.
    pub fn file_name(&self) -> &str {
        file_name_of(&self.url)
    }
}

/// What is known about a whole corpus before preparing it (published figures),
/// and where that is published.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownFigures {
    /// Bytes of the files as downloaded.
    #[serde(default)]
    pub compressed_bytes: Option<u64>,
    /// Bytes of document text.
    #[serde(default)]
    pub text_bytes: Option<u64>,
    /// Number of documents.
    #[serde(default)]
    pub documents: Option<u64>,
    /// Number of tokens with GPT-NeoX's default tokenizer (GPT-2 BPE, EOD appended).
    #[serde(default)]
    pub tokens: Option<u64>,
    /// Where the figures are published.
    #[serde(default)]
    pub source: Option<String>,
    /// What the figures describe exactly, or why one is missing.
    #[serde(default)]
    pub note: Option<String>,
}

/// A corpus that `neox-data prepare NAME` can download and prepare.
///
/// Implement `name` and `files`; override the rest where the corpus needs it.
/// Register an implementation with `neox_registry::Registry::register`.
pub trait DataDownloader: Send + Sync {
    /// The name on the command line and of the folder `{data_dir}/{name}/`.
    fn name(&self) -> &str;

    /// One line for `neox-data list`.
    fn description(&self) -> &str {
        ""
    }

    /// The files, in order; documents are numbered in this order.
    fn files(&self) -> Vec<RemoteFile>;

    /// Published figures, shown by `neox-data list` until the corpus is prepared.
    fn known(&self) -> KnownFigures {
        KnownFigures::default()
    }

    /// JSON keys whose values are documents (jsonl formats); GPT-NeoX's default is `text`.
    fn jsonl_keys(&self) -> Vec<String> {
        vec!["text".to_string()]
    }

    /// Reader format when file names do not say it (e.g. `jsonl.zst`, `tar.gz`);
    /// `None`: each file's format follows from its name.
    fn format(&self) -> Option<String> {
        None
    }

    /// Download step: make `file` available at `dest`, verified.
    /// The default streams it with resume, retries and checks.
    fn download(
        &self,
        file: &RemoteFile,
        dest: &Path,
        fetcher: &Fetcher,
    ) -> Result<Fetched, FetchError> {
        fetcher.fetch(file, dest)
    }

    /// Preparation step between download and reading: turn a downloaded file
    /// into the files the readers take (the default: the file itself; readers
    /// understand jsonl, .zst, .gz, tar, zip and parquet as streams).
    fn unpack(&self, downloaded: &Fetched, _folder: &Path) -> Result<Vec<PathBuf>, FetchError> {
        Ok(vec![downloaded.path.clone()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tiny;

    impl DataDownloader for Tiny {
        fn name(&self) -> &str {
            "tiny"
        }
        fn files(&self) -> Vec<RemoteFile> {
            vec![RemoteFile::new("https://example.org/dir/tiny.jsonl.zst?download=1").with_size(3)]
        }
    }

    #[test]
    fn defaults_follow_gpt_neox() {
        let t = Tiny;
        assert_eq!(t.jsonl_keys(), vec!["text"]);
        assert_eq!(t.known(), KnownFigures::default());
        assert_eq!(t.files()[0].file_name(), "tiny.jsonl.zst");
        assert_eq!(t.files()[0].size, Some(3));
    }
}
