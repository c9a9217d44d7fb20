//! A corpus described by data: the built-ins and catalog-file entries are all this.

use serde::{Deserialize, Serialize};

use neox_datasets::{DataDownloader, KnownFigures, RemoteFile};

/// A corpus given by its name, files and known figures; the default steps
/// (download, read by file name, tokenize) do the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Corpus {
    /// Name on the command line and of its folder.
    pub name: String,
    /// One line for `neox-data list`.
    #[serde(default)]
    pub description: String,
    /// Its files: plain URLs (`urls`) ...
    #[serde(default)]
    pub urls: Vec<String>,
    /// ... or files with their sizes and checksums (`files`); both may be given.
    #[serde(default)]
    pub files: Vec<RemoteFile>,
    /// Reader format when the file names do not say it (e.g. `jsonl.zst`, `tar.gz`, `parquet`).
    #[serde(default)]
    pub format: Option<String>,
    /// JSON keys holding the text (default `["text"]`).
    #[serde(default = "default_keys")]
    pub jsonl_keys: Vec<String>,
    /// Published figures (`known = { documents = 100, text_bytes = 12345 }`).
    #[serde(default)]
    pub known: KnownFigures,
}

fn default_keys() -> Vec<String> {
    vec!["text".to_string()]
}

impl Corpus {
    /// A corpus with these URLs and nothing else known.
    pub fn new(name: &str, description: &str, urls: impl IntoIterator<Item = String>) -> Corpus {
        Corpus {
            name: name.to_string(),
            description: description.to_string(),
            urls: urls.into_iter().collect(),
            files: Vec::new(),
            format: None,
            jsonl_keys: default_keys(),
            known: KnownFigures::default(),
        }
    }

    /// With published figures.
    pub fn known(mut self, known: KnownFigures) -> Corpus {
        self.known = known;
        self
    }
}

impl DataDownloader for Corpus {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn files(&self) -> Vec<RemoteFile> {
        self.urls
            .iter()
            .map(RemoteFile::new)
            .chain(self.files.iter().cloned())
            .collect()
    }

    fn known(&self) -> KnownFigures {
        self.known.clone()
    }

    fn jsonl_keys(&self) -> Vec<String> {
        self.jsonl_keys.clone()
    }

    fn format(&self) -> Option<String> {
        self.format.clone()
    }
}
