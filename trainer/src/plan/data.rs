//! What the run will read: the shards, and for each split the samples it
//! asks for and the epochs that takes, by the formulas GPT-NeoX's sample
//! index uses. Nothing is indexed: only the `.idx` headers and sequence sizes
//! are read (memory-mapped), and whether the index caches already exist is
//! looked up by their names.

use std::path::PathBuf;

use neox_indexed::IndexedDataset;
use neox_indexed::samples::{
    CachePaths, IndexSpec, Split, SplitSamples, num_epochs, tokens_per_epoch, total_samples,
    weighted_num_samples,
};
use serde::Serialize;

use crate::config::DataSource;

/// One `.bin/.idx` shard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shard {
    pub prefix: PathBuf,
    /// Sequences (GPT-NeoX's documents).
    pub documents: u64,
    pub tokens: u64,
    pub bin_bytes: u64,
}

/// One dataset's part in one split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Part {
    pub prefix: PathBuf,
    /// The documents of this split.
    pub documents: u64,
    /// Tokens in those documents: one epoch.
    pub tokens_per_epoch: u64,
    /// Samples asked of this dataset.
    pub samples: u64,
    /// Epochs over its documents that the samples take.
    pub epochs: u32,
    /// Samples those epochs hold.
    pub samples_held: u64,
    /// Whether GPT-NeoX's index cache for it exists already.
    pub index_cached: bool,
}

/// One split: the samples the run asks for, and its datasets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitPlan {
    pub name: &'static str,
    pub samples: u64,
    pub parts: Vec<Part>,
}

/// The data section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataPlan {
    pub shards: Vec<Shard>,
    pub splits: Vec<SplitPlan>,
}

const NAMES: [&str; 3] = ["train", "valid", "test"];

/// What a split asks of one shard: (shard index, documents, samples).
type Wanted = (usize, std::ops::Range<usize>, u64);

/// The index in `shards` of the shard at `prefix`, opened once.
fn open(shards: &mut Vec<(Shard, IndexedDataset)>, prefix: &PathBuf) -> Result<usize, String> {
    if let Some(i) = shards.iter().position(|(s, _)| &s.prefix == prefix) {
        return Ok(i);
    }
    let data = IndexedDataset::open(prefix).map_err(|e| with_causes(&e))?;
    let shard = Shard {
        prefix: prefix.clone(),
        documents: data.len() as u64,
        tokens: data.num_tokens(),
        bin_bytes: data.bin_bytes(),
    };
    shards.push((shard, data));
    Ok(shards.len() - 1)
}

/// Reads the shards' sizes and sizes each split as GPT-NeoX would for
/// `counts` samples; an error says which shard could not be read and why.
pub fn plan(
    source: &DataSource,
    seq_length: usize,
    seed: u64,
    counts: SplitSamples,
) -> Result<DataPlan, String> {
    let seq =
        u32::try_from(seq_length).map_err(|_| format!("seq_length {seq_length} is too large"))?;
    let seed =
        u32::try_from(seed).map_err(|_| format!("seed {seed} does not fit numpy's RandomState"))?;
    let mut shards: Vec<(Shard, IndexedDataset)> = Vec::new();
    let mut wanted: Vec<(usize, Vec<Wanted>)> = Vec::new();
    match source {
        DataSource::Split { prefix, split } => {
            let i = open(&mut shards, prefix)?;
            let ranges = Split::parse(split, shards[i].1.len()).map_err(|e| e.to_string())?;
            for s in 0..3 {
                let documents = ranges.range(s);
                if !documents.is_empty() {
                    wanted.push((s, vec![(i, documents, counts.get(s))]));
                }
            }
        }
        DataSource::Paths { train, valid, test } => {
            for (s, parts) in [train, valid, test].into_iter().enumerate() {
                if parts.is_empty() {
                    continue;
                }
                let weights: Vec<f64> = parts.iter().map(|(_, w)| *w).collect();
                let (_, asked) =
                    weighted_num_samples(&weights, counts.get(s)).map_err(|e| e.to_string())?;
                let mut list = Vec::new();
                for ((prefix, _), n) in parts.iter().zip(asked) {
                    let i = open(&mut shards, prefix)?;
                    list.push((i, 0..shards[i].1.len(), n));
                }
                wanted.push((s, list));
            }
        }
    }
    let mut splits = Vec::new();
    for (s, list) in wanted {
        let blended = list.len() > 1 || matches!(source, DataSource::Paths { .. });
        let mut parts = Vec::new();
        for (k, (i, documents, samples)) in list.into_iter().enumerate() {
            let (shard, data) = &shards[i];
            let sizes = data.sizes().to_vec();
            let tokens = tokens_per_epoch(&sizes, documents.clone()).map_err(|e| e.to_string())?;
            let epochs = num_epochs(tokens, seq, samples)
                .map_err(|e| format!("{}: {e}", shard.prefix.display()))?;
            let name = if blended {
                format!("{}_{k}", NAMES[s])
            } else {
                NAMES[s].to_string()
            };
            let spec = IndexSpec {
                documents: documents.clone(),
                seq_length: seq,
                num_samples: Some(samples),
                num_epochs: None,
                seed,
            };
            parts.push(Part {
                prefix: shard.prefix.clone(),
                documents: documents.len() as u64,
                tokens_per_epoch: tokens,
                samples,
                epochs,
                samples_held: total_samples(epochs, tokens, seq),
                index_cached: CachePaths::new(&shard.prefix, None, &name, &spec).all_exist(),
            });
        }
        splits.push(SplitPlan {
            name: NAMES[s],
            samples: counts.get(s),
            parts,
        });
    }
    Ok(DataPlan {
        shards: shards.into_iter().map(|(s, _)| s).collect(),
        splits,
    })
}

/// An error and its causes on one line.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use neox_indexed::{DType, IndexedWriter};

    fn shard(dir: &std::path::Path, docs: &[usize]) -> PathBuf {
        named(dir, "d", docs)
    }

    fn named(dir: &std::path::Path, name: &str, docs: &[usize]) -> PathBuf {
        let prefix = dir.join(format!("{name}_text_document"));
        let mut w = IndexedWriter::create(&prefix, DType::U16).unwrap();
        for &n in docs {
            w.add_document(&vec![1u32; n]).unwrap();
        }
        w.finish().unwrap();
        prefix
    }

    #[test]
    fn splits_count_epochs_as_the_index_would() {
        let dir = tempfile::tempdir().unwrap();
        // 10 documents of 100 tokens: split 8/1/1 documents.
        let prefix = shard(dir.path(), &[100; 10]);
        let source = DataSource::Split {
            prefix: prefix.clone(),
            split: "8,1,1".into(),
        };
        let counts = SplitSamples {
            train: 100,
            valid: 5,
            test: 0,
        };
        let plan = plan(&source, 16, 1234, counts).unwrap();
        assert_eq!(plan.shards[0].documents, 10);
        assert_eq!(plan.shards[0].tokens, 1000);
        let train = &plan.splits[0].parts[0];
        assert_eq!((train.documents, train.tokens_per_epoch), (8, 800));
        // 100 samples x 16 tokens + 1 = 1601 tokens: 3 epochs of 800.
        assert_eq!(train.epochs, 3);
        assert_eq!(train.samples_held, (3 * 800 - 1) / 16);
        assert!(!train.index_cached);
        let valid = &plan.splits[1].parts[0];
        assert_eq!((valid.tokens_per_epoch, valid.epochs), (100, 1));
        assert_eq!(plan.splits.len(), 3);
    }

    #[test]
    fn blends_ask_each_dataset_its_share_as_gpt_neox_does() {
        let dir = tempfile::tempdir().unwrap();
        let a = named(dir.path(), "a", &[100; 10]);
        let b = named(dir.path(), "b", &[50; 4]);
        let source = DataSource::Paths {
            train: vec![(a.clone(), 1.0), (b.clone(), 3.0)],
            valid: vec![(b.clone(), 1.0)],
            test: vec![],
        };
        let counts = SplitSamples {
            train: 200,
            valid: 10,
            test: 7,
        };
        let plan = plan(&source, 16, 1234, counts).unwrap();
        // Each shard listed once, though b serves two splits.
        assert_eq!(plan.shards.len(), 2);
        let names: Vec<&str> = plan.splits.iter().map(|s| s.name).collect();
        assert_eq!(names, ["train", "valid"]);
        let train = &plan.splits[0].parts;
        // 0.5% more than each share: ceil(200 x 0.25 x 1.005), ceil(200 x 0.75 x 1.005).
        assert_eq!((train[0].samples, train[1].samples), (51, 151));
        assert_eq!((train[0].documents, train[1].documents), (10, 4));
        // b: 151 x 16 + 1 tokens over 200 a epoch: 13 epochs.
        assert_eq!(train[1].epochs, 13);
        assert_eq!(plan.splits[1].parts[0].samples, 11);
    }

    #[test]
    fn missing_shards_are_named() {
        let source = DataSource::Split {
            prefix: "no/such/prefix".into(),
            split: "1".into(),
        };
        let counts = SplitSamples {
            train: 1,
            valid: 0,
            test: 0,
        };
        let err = plan(&source, 16, 1, counts).unwrap_err();
        assert!(err.contains("no/such/prefix"), "{err}");
    }
}
