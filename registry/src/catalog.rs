//! Catalog files: corpora declared without code, in TOML or JSON.
//!
//! ```toml
//! [[corpus]]
//! name = "my_mail"
//! description = "Our support mailbox"
//! urls = ["https://example.org/mail/part-0.jsonl.zst"]
//! files = [{ url = "https://example.org/mail/part-1.jsonl.zst", size = 1234, sha256 = "..." }]
//! jsonl_keys = ["text"]
//! format = "jsonl.zst"              # only when the file names do not say it
//! known = { documents = 1000 }      # optional published figures
//! ```
//!
//! JSON: `{"corpus": [{"name": ..., ...}]}`, same fields.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Corpus;

/// A catalog file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file cannot be read.
    #[error("{path}: cannot read the catalog")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a valid catalog.
    #[error("{path}: not a valid catalog ({kind}): {message}")]
    Parse {
        path: PathBuf,
        kind: &'static str,
        message: String,
    },
    /// An entry is unusable.
    #[error("{path}: corpus `{name}`: {problem}")]
    Entry {
        path: PathBuf,
        name: String,
        problem: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    corpus: Vec<Corpus>,
}

/// Read the corpora declared in `path` (`.json` is JSON, anything else TOML).
pub fn load(path: &Path) -> Result<Vec<Corpus>, CatalogError> {
    let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let parsed: CatalogFile = if is_json {
        serde_json::from_str(&text).map_err(|e| CatalogError::Parse {
            path: path.to_path_buf(),
            kind: "JSON",
            message: e.to_string(),
        })?
    } else {
        toml::from_str(&text).map_err(|e| CatalogError::Parse {
            path: path.to_path_buf(),
            kind: "TOML",
            message: e.to_string(),
        })?
    };
    for corpus in &parsed.corpus {
        let problem = entry_problem(corpus);
        if let Some(problem) = problem {
            return Err(CatalogError::Entry {
                path: path.to_path_buf(),
                name: corpus.name.clone(),
                problem,
            });
        }
    }
    Ok(parsed.corpus)
}

fn entry_problem(corpus: &Corpus) -> Option<String> {
    if !valid_name(&corpus.name) {
        return Some(
            "a name must be non-empty and use only letters, digits, `-`, `_` and `.` (it names a folder)"
                .into(),
        );
    }
    if corpus.urls.is_empty() && corpus.files.is_empty() {
        return Some("no `urls` or `files` given".into());
    }
    if corpus.jsonl_keys.is_empty() {
        return Some("`jsonl_keys` is empty".into());
    }
    for file in &corpus.files {
        if let Some(sum) = &file.sha256
            && (sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Some(format!("{}: sha256 must be 64 hex digits", file.url));
        }
    }
    None
}

/// Whether `name` can name a folder safely.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use neox_datasets::DataDownloader;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("neox-catalog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn toml_and_json_catalogs() {
        let sum = "a".repeat(64);
        let toml = write(
            "c.toml",
            &format!(
                r#"
[[corpus]]
name = "mail"
urls = ["https://example.org/a.jsonl.zst"]
files = [{{ url = "https://example.org/b.jsonl", size = 10, sha256 = "{sum}" }}]
jsonl_keys = ["body"]
known = {{ documents = 7 }}
"#
            ),
        );
        let corpora = load(&toml).unwrap();
        assert_eq!(corpora.len(), 1);
        let c = &corpora[0];
        assert_eq!(c.files().len(), 2);
        assert_eq!(c.files()[1].size, Some(10));
        assert_eq!(c.jsonl_keys(), vec!["body"]);
        assert_eq!(c.known().documents, Some(7));

        let json = write(
            "c.json",
            r#"{"corpus": [{"name": "j", "urls": ["/tmp/x.jsonl"], "format": "jsonl"}]}"#,
        );
        let corpora = load(&json).unwrap();
        assert_eq!(corpora[0].format(), Some("jsonl".to_string()));
        assert_eq!(corpora[0].jsonl_keys(), vec!["text"]);
    }

    #[test]
    fn bad_catalogs_are_refused_with_the_reason() {
        let typo = write("typo.toml", "[[corpus]]\nname = \"x\"\nurl = [\"a\"]\n");
        let e = load(&typo).unwrap_err().to_string();
        assert!(e.contains("typo.toml") && e.contains("url"), "{e}");

        let escape = write(
            "escape.toml",
            "[[corpus]]\nname = \"../x\"\nurls = [\"a\"]\n",
        );
        let e = load(&escape).unwrap_err().to_string();
        assert!(e.contains("names a folder"), "{e}");

        let empty = write("empty.toml", "[[corpus]]\nname = \"x\"\n");
        assert!(load(&empty).unwrap_err().to_string().contains("no `urls`"));

        let sum = write(
            "sum.json",
            r#"{"corpus": [{"name": "x", "files": [{"url": "a", "sha256": "zz"}]}]}"#,
        );
        assert!(
            load(&sum)
                .unwrap_err()
                .to_string()
                .contains("64 hex digits")
        );

        let missing = Path::new("/nonexistent/catalog.toml");
        assert!(
            load(missing)
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/catalog.toml")
        );
    }
}
