//! Where a corpus file comes from: an http(s) URL or a local file.

use std::path::PathBuf;

use reqwest::Url;

use super::FetchError;

/// A parsed file location. Only these schemes exist; anything else is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `http://` or `https://`.
    Http(Url),
    /// `file://` URL or a plain path.
    Local(PathBuf),
}

impl Source {
    /// Parse `location`: `http(s)://...`, `file:///...` or a path.
    pub fn parse(location: &str) -> Result<Source, FetchError> {
        let Some((scheme, _)) = location.split_once("://") else {
            return Ok(Source::Local(PathBuf::from(location)));
        };
        let bad = |reason: String| FetchError::BadUrl {
            url: location.to_string(),
            reason,
        };
        match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => Url::parse(location)
                .map(Source::Http)
                .map_err(|e| bad(e.to_string())),
            "file" => Url::parse(location)
                .map_err(|e| bad(e.to_string()))?
                .to_file_path()
                .map(Source::Local)
                .map_err(|()| bad("not an absolute local path".into())),
            _ => Err(FetchError::UnsupportedScheme {
                url: location.to_string(),
                scheme: scheme.to_string(),
            }),
        }
    }
}

/// The last path segment of a URL or path, without query or fragment:
/// the name a downloaded file keeps on disk and on a mirror.
pub fn file_name_of(location: &str) -> &str {
    let end = location.find(['?', '#']).unwrap_or(location.len());
    let path = location[..end].trim_end_matches('/');
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// `name` made unique to `location`: `{12 hex digits of its SHA-256}-{name}`,
/// for a file whose name another file of the same corpus also has (the name
/// stays at the end, so the format still follows from it).
pub fn distinct_name(location: &str, name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = super::verify::hex(&Sha256::digest(location.as_bytes()));
    format!("{}-{name}", &digest[..12])
}

/// `location`'s file under the mirror `base` (a URL or a folder): files keep their names.
pub fn mirrored(base: &str, location: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), file_name_of(location))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert!(matches!(
            Source::parse("https://example.org/a.jsonl.zst"),
            Ok(Source::Http(_))
        ));
        assert_eq!(
            Source::parse("file:///tmp/a.jsonl").ok(),
            Some(Source::Local(PathBuf::from("/tmp/a.jsonl")))
        );
        assert_eq!(
            Source::parse("data/a.jsonl").ok(),
            Some(Source::Local(PathBuf::from("data/a.jsonl")))
        );
        let err = Source::parse("ftp://example.org/a").unwrap_err();
        assert!(
            err.to_string().contains("unsupported scheme `ftp`"),
            "{err}"
        );
        assert!(matches!(
            Source::parse("http://[::1"),
            Err(FetchError::BadUrl { .. })
        ));
    }

    #[test]
    fn names_and_mirrors() {
        assert_eq!(
            file_name_of("http://eaidata.bmk.sh/data/enron_emails.jsonl.zst?x=1"),
            "enron_emails.jsonl.zst"
        );
        assert_eq!(
            mirrored(
                "http://127.0.0.1:8000/",
                "https://the-eye.eu/public/AI/pile/train/07.jsonl.zst"
            ),
            "http://127.0.0.1:8000/07.jsonl.zst"
        );
        assert_eq!(
            mirrored("/mnt/corpora", "http://h/x.zip"),
            "/mnt/corpora/x.zip"
        );
        let a = distinct_name("http://h/a/data.jsonl", "data.jsonl");
        let b = distinct_name("http://h/b/data.jsonl", "data.jsonl");
        assert_ne!(a, b);
        assert!(
            a.ends_with("-data.jsonl") && a.len() == "data.jsonl".len() + 13,
            "{a}"
        );
        assert_eq!(a, distinct_name("http://h/a/data.jsonl", "data.jsonl"));
    }
}
