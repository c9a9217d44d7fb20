//! The manifest written next to prepared shards: where the data came from,
//! how big it is, what was made of it. `neox-data list` reads these.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name suffix of manifests: `{prefix}.manifest.json`.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

/// One source file of a prepared dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// Where it was fetched from.
    pub url: String,
    /// Its size in bytes (as downloaded, compressed).
    pub bytes: u64,
    /// Its SHA-256 (hex).
    pub sha256: String,
}

/// One output file (`.bin` or `.idx`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// File name, relative to the manifest's folder.
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 (hex).
    pub sha256: String,
}

/// Which part of a corpus a manifest covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardOf {
    /// 1-based part number.
    pub index: u32,
    /// Number of parts.
    pub count: u32,
}

/// Everything recorded about one prepared dataset (or one shard of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Corpus name.
    pub corpus: String,
    /// Output prefix relative to the manifest's folder (e.g. `enron_text_document`).
    pub prefix: String,
    /// The part of the corpus, when prepared with `--shard K/N`.
    pub shard: Option<ShardOf>,
    /// Source files.
    pub sources: Vec<SourceRecord>,
    /// Bytes of source files (compressed, as stored).
    pub compressed_bytes: u64,
    /// Bytes transferred over the network by the run that finished it.
    pub downloaded_bytes: u64,
    /// Bytes of document text read.
    pub text_bytes: u64,
    /// Documents written (empty ones are dropped).
    pub documents: u64,
    /// Tokens written, EOD included.
    pub tokens: u64,
    /// Tokenizer description.
    pub tokenizer: String,
    /// Token dtype in the `.bin` (`u16` or `i32`).
    pub dtype: String,
    /// The `.bin` and `.idx`.
    pub outputs: Vec<OutputRecord>,
    /// Wall time of preparation, seconds.
    pub seconds: f64,
    /// When it finished, seconds since the Unix epoch.
    pub finished_unix: u64,
    /// The neox version that wrote it.
    pub neox_version: String,
}

/// A manifest could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// File-system error.
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not a manifest.
    #[error("{path}: not a valid manifest: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Manifest {
    /// `{folder}/{prefix}.manifest.json`.
    pub fn path_for(folder: &Path, prefix: &str) -> PathBuf {
        folder.join(format!("{prefix}{MANIFEST_SUFFIX}"))
    }

    /// Read one manifest.
    pub fn read(path: &Path) -> Result<Manifest, ManifestError> {
        let bytes = std::fs::read(path).map_err(|source| ManifestError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ManifestError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Write it to `path` atomically (temporary file, fsync, rename).
    pub fn write(&self, path: &Path) -> Result<(), ManifestError> {
        let io = |source| ManifestError::Io {
            path: path.to_path_buf(),
            source,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        neox_fsio::write_atomic(path, &json).map_err(io)
    }

    /// Whether the outputs it lists are all present with their recorded sizes.
    pub fn outputs_present(&self, folder: &Path) -> bool {
        self.outputs
            .iter()
            .all(|o| std::fs::metadata(folder.join(&o.file)).is_ok_and(|m| m.len() == o.bytes))
    }

    /// All readable manifests in `folder`, sorted by prefix (unreadable ones are skipped).
    pub fn all_in(folder: &Path) -> Vec<Manifest> {
        let Ok(entries) = std::fs::read_dir(folder) else {
            return Vec::new();
        };
        let mut found: Vec<Manifest> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(MANIFEST_SUFFIX))
            .filter_map(|e| Manifest::read(&e.path()).ok())
            .collect();
        found.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(prefix: &str, shard: Option<ShardOf>) -> Manifest {
        Manifest {
            corpus: "enron".into(),
            prefix: prefix.into(),
            shard,
            sources: vec![SourceRecord {
                url: "http://h/enron_emails.jsonl.zst".into(),
                bytes: 10,
                sha256: "ab".into(),
            }],
            compressed_bytes: 10,
            downloaded_bytes: 10,
            text_bytes: 100,
            documents: 3,
            tokens: 30,
            tokenizer: "GPT2BPETokenizer".into(),
            dtype: "u16".into(),
            outputs: vec![OutputRecord {
                file: format!("{prefix}.bin"),
                bytes: 60,
                sha256: "cd".into(),
            }],
            seconds: 0.5,
            finished_unix: 1,
            neox_version: "0.1.0".into(),
        }
    }

    #[test]
    fn round_trip_and_scan() {
        let dir = std::env::temp_dir().join(format!("neox-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let m = sample("enron_text_document", None);
        let path = Manifest::path_for(&dir, &m.prefix);
        m.write(&path).unwrap();
        assert_eq!(Manifest::read(&path).unwrap(), m);
        assert!(!m.outputs_present(&dir));
        std::fs::write(dir.join("enron_text_document.bin"), [0u8; 60]).unwrap();
        assert!(m.outputs_present(&dir));
        std::fs::write(dir.join("junk.manifest.json"), b"{").unwrap();
        assert_eq!(Manifest::all_in(&dir), vec![m]);
        let e = Manifest::read(&dir.join("junk.manifest.json")).unwrap_err();
        assert!(e.to_string().contains("junk.manifest.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
