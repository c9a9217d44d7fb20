//! Input formats, recognised by file name.

use std::path::Path;

/// How a file (or archive member) is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// JSON lines, plain.
    Jsonl,
    /// JSON lines, zstd-compressed.
    JsonlZst,
    /// JSON lines, gzip-compressed.
    JsonlGz,
    /// The whole file is one document.
    Txt,
    /// A tar archive; members read by name, or as `default` when the name says nothing.
    Tar {
        /// Whether the archive itself is gzip-compressed.
        gzip: bool,
        /// How to read members whose names match no format.
        default: Member,
    },
    /// A zip archive; members read by name, else whole as one document each.
    Zip,
    /// Parquet, the text in a column.
    Parquet,
}

/// How archive members whose names match no format are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Member {
    /// One document each.
    Raw,
    /// zstd JSON lines (lm_dataformat's `.jsonl.zst.tar`).
    JsonlZst,
}

impl Format {
    /// The name endings recognised, longest first where one ends another.
    pub const EXTENSIONS: [&'static str; 11] = [
        ".jsonl.zst.tar",
        ".jsonl.zst",
        ".jsonl.gz",
        ".json.gz",
        ".jsonl",
        ".txt",
        ".tar.gz",
        ".tgz",
        ".tar",
        ".zip",
        ".parquet",
    ];

    /// The format a file name says, if any.
    pub fn from_name(name: &str) -> Option<Format> {
        let ext = Self::EXTENSIONS.iter().find(|ext| name.ends_with(*ext))?;
        Some(match *ext {
            ".jsonl.zst.tar" => Format::Tar {
                gzip: false,
                default: Member::JsonlZst,
            },
            ".jsonl.zst" => Format::JsonlZst,
            ".jsonl.gz" | ".json.gz" => Format::JsonlGz,
            ".jsonl" => Format::Jsonl,
            ".txt" => Format::Txt,
            ".tar.gz" | ".tgz" => Format::Tar {
                gzip: true,
                default: Member::Raw,
            },
            ".tar" => Format::Tar {
                gzip: false,
                default: Member::Raw,
            },
            ".zip" => Format::Zip,
            _ => Format::Parquet,
        })
    }

    /// The format of a path, from its file name.
    pub fn from_path(path: &Path) -> Option<Format> {
        Self::from_name(&path.file_name()?.to_string_lossy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(Format::from_name("a.jsonl"), Some(Format::Jsonl));
        assert_eq!(Format::from_name("a.jsonl.zst"), Some(Format::JsonlZst));
        assert_eq!(Format::from_name("a.json.gz"), Some(Format::JsonlGz));
        assert_eq!(Format::from_name("a.jsonl.gz"), Some(Format::JsonlGz));
        assert_eq!(Format::from_name("a.txt"), Some(Format::Txt));
        assert_eq!(
            Format::from_name("pile.jsonl.zst.tar"),
            Some(Format::Tar {
                gzip: false,
                default: Member::JsonlZst
            })
        );
        assert_eq!(
            Format::from_name("a.tgz"),
            Some(Format::Tar {
                gzip: true,
                default: Member::Raw
            })
        );
        assert_eq!(Format::from_name("x.zip"), Some(Format::Zip));
        assert_eq!(Format::from_name("x.parquet"), Some(Format::Parquet));
        assert_eq!(Format::from_name("x.csv"), None);
        assert_eq!(Format::from_name("x.json"), None);
    }
}
