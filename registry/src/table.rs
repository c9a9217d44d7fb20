//! The table `neox-data list` shows: every corpus with its sizes, documents
//! and tokens, measured where a manifest exists, published figures otherwise.

use std::path::Path;

use serde::Serialize;

use crate::{Manifest, Registry};

/// Where a row's figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Figures {
    /// Measured while preparing the whole corpus.
    Measured,
    /// Measured over the shards prepared so far (`done` of `count`).
    Shards { done: u32, count: u32 },
    /// Published figures; the corpus is not prepared here.
    Known,
}

/// One corpus in the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Corpus name.
    pub name: String,
    /// Description from the registry (empty when unregistered).
    pub description: String,
    /// Whether the registry knows it (false: only a manifest in the data folder).
    pub registered: bool,
    /// Number of source files.
    pub files: usize,
    /// Bytes of source files as downloaded.
    pub compressed_bytes: Option<u64>,
    /// Bytes of text.
    pub text_bytes: Option<u64>,
    /// Documents.
    pub documents: Option<u64>,
    /// Tokens.
    pub tokens: Option<u64>,
    /// Tokenizer of the measured figures.
    pub tokenizer: Option<String>,
    /// Where the figures come from.
    pub figures: Figures,
    /// Where published figures are published (none for measured ones).
    pub source: Option<String>,
    /// What published figures describe exactly, or why one is missing.
    pub note: Option<String>,
}

/// Rows for every registered corpus, then prepared datasets the registry does not know.
pub fn rows(registry: &Registry, data_dir: &Path) -> Vec<Row> {
    let mut rows: Vec<Row> = registry
        .iter()
        .map(|corpus| {
            let known = corpus.known();
            let published = Row {
                name: corpus.name().to_string(),
                description: corpus.description().to_string(),
                registered: true,
                files: corpus.files().len(),
                compressed_bytes: known.compressed_bytes,
                text_bytes: known.text_bytes,
                documents: known.documents,
                tokens: known.tokens,
                tokenizer: None,
                figures: Figures::Known,
                source: known.source,
                note: known.note,
            };
            measured(corpus.name(), data_dir).map_or(published, |m| Row {
                description: corpus.description().to_string(),
                ..m
            })
        })
        .collect();
    if let Ok(entries) = std::fs::read_dir(data_dir) {
        let mut extra: Vec<Row> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|name| registry.get(name).is_none())
            .filter_map(|name| measured(&name, data_dir))
            .map(|row| Row {
                registered: false,
                ..row
            })
            .collect();
        extra.sort_by(|a, b| a.name.cmp(&b.name));
        rows.extend(extra);
    }
    rows
}

/// Figures from the manifests in `{data_dir}/{name}/`: the whole-corpus one if
/// present and intact, else the sum over intact shard manifests.
fn measured(name: &str, data_dir: &Path) -> Option<Row> {
    let folder = data_dir.join(name);
    let manifests: Vec<Manifest> = Manifest::all_in(&folder)
        .into_iter()
        .filter(|m| m.corpus == name && m.outputs_present(&folder))
        .collect();
    let whole: Vec<&Manifest> = manifests
        .iter()
        .filter(|m| m.shard.is_none())
        .take(1)
        .collect();
    let (chosen, figures) = if whole.is_empty() {
        let count = manifests
            .iter()
            .filter_map(|m| m.shard)
            .map(|s| s.count)
            .max()?;
        let shards: Vec<&Manifest> = manifests
            .iter()
            .filter(|m| m.shard.is_some_and(|s| s.count == count))
            .collect();
        let done = u32::try_from(shards.len()).unwrap_or(u32::MAX);
        (shards, Figures::Shards { done, count })
    } else {
        (whole, Figures::Measured)
    };
    let sum = |f: fn(&Manifest) -> u64| Some(chosen.iter().map(|m| f(m)).sum());
    Some(Row {
        name: name.to_string(),
        description: String::new(),
        registered: true,
        files: chosen.iter().map(|m| m.sources.len()).sum(),
        compressed_bytes: sum(|m| m.compressed_bytes),
        text_bytes: sum(|m| m.text_bytes),
        documents: sum(|m| m.documents),
        tokens: sum(|m| m.tokens),
        tokenizer: chosen.first().map(|m| m.tokenizer.clone()),
        figures,
        source: None,
        note: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{OutputRecord, ShardOf};

    fn prepared(dir: &Path, prefix: &str, shard: Option<ShardOf>, docs: u64) -> Manifest {
        let folder = dir.join("enron");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(format!("{prefix}.bin")), [0u8; 4]).unwrap();
        let m = Manifest {
            corpus: "enron".into(),
            prefix: prefix.into(),
            shard,
            sources: vec![],
            compressed_bytes: 5,
            downloaded_bytes: 5,
            text_bytes: 50,
            documents: docs,
            tokens: docs * 10,
            tokenizer: "GPT2BPETokenizer".into(),
            dtype: "u16".into(),
            outputs: vec![OutputRecord {
                file: format!("{prefix}.bin"),
                bytes: 4,
                sha256: String::new(),
            }],
            seconds: 1.0,
            finished_unix: 0,
            neox_version: String::new(),
        };
        m.write(&Manifest::path_for(&folder, prefix)).unwrap();
        m
    }

    #[test]
    fn known_then_shards_then_measured() {
        let dir = std::env::temp_dir().join(format!("neox-table-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let registry = Registry::with_builtins();
        let enron = |dir: &Path| {
            rows(&registry, dir)
                .into_iter()
                .find(|r| r.name == "enron")
                .unwrap()
        };

        let row = enron(&dir);
        assert_eq!(row.figures, Figures::Known);
        assert_eq!(
            row.documents,
            registry.get("enron").unwrap().known().documents
        );

        let shard = |index| Some(ShardOf { index, count: 3 });
        prepared(&dir, "enron-shard-1-of-3_text_document", shard(1), 4);
        prepared(&dir, "enron-shard-2-of-3_text_document", shard(2), 6);
        let row = enron(&dir);
        assert_eq!(row.figures, Figures::Shards { done: 2, count: 3 });
        assert_eq!(row.documents, Some(10));
        assert_eq!(row.tokens, Some(100));

        prepared(&dir, "enron_text_document", None, 11);
        let row = enron(&dir);
        assert_eq!(row.figures, Figures::Measured);
        assert_eq!(row.documents, Some(11));

        // A dataset whose outputs are gone is not counted.
        std::fs::remove_file(dir.join("enron/enron_text_document.bin")).unwrap();
        assert_eq!(enron(&dir).figures, Figures::Shards { done: 2, count: 3 });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
