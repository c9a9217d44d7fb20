//! `neox-data samples`: build (or reuse) GPT-NeoX's training sample index
//! for a shard and show what each sample holds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, ValueEnum};
use neox_indexed::samples::{GptDataset, IndexOrigin, IndexSpec, SampleIdx, Split};
use neox_indexed::{IndexedDataset, prefix_of};
use neox_tokenize::{Tokenizer, TokenizerKind, TokenizerSpec};
use serde::Serialize;

/// Answers "what exactly does training step k see?". For one split of a
/// shard, builds the doc / sample / shuffle index exactly as GPT-NeoX's
/// `GPT2Dataset` does (numpy's `RandomState(seed)`, the same epochs and
/// shuffles, bit for bit), writes it as GPT-NeoX's cache files next to the
/// data (`{prefix}_{split}_indexmap_{N}ns_{S}sl_{seed}s_packedpi_ac_*.npy`,
/// which GPT-NeoX itself then reuses, and vice versa), and prints statistics
/// and the token ids of the first samples in training order.
///
/// A cache that does not match the data (other sizes, dtypes, counts) is
/// rebuilt with a warning. Sample `i` of a run with global batch B is served
/// at step `i / B`: `--start $((k * B)) --show B` prints step k's batch.
///
/// Example: `neox-data samples --data-path data/enron/enron_text_document
/// --seq-length 2048 --num-samples 64 --show 2`
#[derive(Debug, Args)]
pub struct SamplesArgs {
    /// The shard: its prefix (`data/enron/enron_text_document`) or either of
    /// its files.
    #[arg(long, value_name = "PREFIX")]
    pub data_path: PathBuf,
    /// Tokens per sample (GPT-NeoX's `seq_length`); each sample holds one
    /// more token, the last label.
    #[arg(long, value_name = "S")]
    pub seq_length: u32,
    /// Samples the split must provide (GPT-NeoX: `train_iters * train_batch_size`
    /// for train); the index covers as many epochs as that needs.
    #[arg(long, value_name = "N")]
    pub num_samples: u64,
    /// The seed of numpy's `RandomState` (GPT-NeoX's `seed`).
    #[arg(long, default_value_t = 1234)]
    pub seed: u32,
    /// Train / valid / test weights over the documents, as GPT-NeoX's `split`.
    #[arg(long, default_value = "969,30,1")]
    pub split: String,
    /// Which split to index.
    #[arg(long, value_enum, default_value_t = Which::Train)]
    pub which: Which,
    /// How documents are packed into samples. Only `packed` (GPT-NeoX's
    /// default, with allow_chopped) exists here; GPT-NeoX's
    /// `pack_until_overflow` and `unpacked` are not implemented yet.
    #[arg(long, value_enum, default_value_t = PackImpl::Packed)]
    pub pack_impl: PackImpl,
    /// Print the first K samples (in training order) from `--start`.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub show: usize,
    /// First sample to print.
    #[arg(long, value_name = "I", default_value_t = 0)]
    pub start: usize,
    /// With --show: at most this many ids of each sample (0: all S+1).
    #[arg(long, value_name = "M", default_value_t = 0)]
    pub show_tokens: usize,
    /// Where to keep the index files (default: next to the data, as GPT-NeoX).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// With --show: decode each sample's ids to text with this tokenizer
    /// (GPT-NeoX's names, e.g. CharLevelTokenizer, GPT2BPETokenizer, HFTokenizer).
    #[arg(long, value_name = "KIND", value_parser = super::tokenize::parse_kind)]
    pub tokenizer_type: Option<TokenizerKind>,
    /// The tokenizer's vocabulary file (see `neox-data tokenize --help`).
    #[arg(long, value_name = "FILE", requires = "tokenizer_type")]
    pub vocab_file: Option<PathBuf>,
    /// GPT-2's `merges.txt` (GPT2BPETokenizer).
    #[arg(long, value_name = "FILE", requires = "tokenizer_type")]
    pub merge_file: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A split of the documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// The first range (`train` in the cache names).
    Train,
    /// The second range (`valid`).
    Valid,
    /// The third range (`test`).
    Test,
}

/// GPT-NeoX's `pack_impl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PackImpl {
    /// Documents concatenated and cut into samples of S+1 tokens.
    Packed,
}

#[derive(Debug, Serialize)]
struct Report {
    prefix: PathBuf,
    split: String,
    documents: [usize; 2],
    seq_length: u32,
    seed: u32,
    num_samples_asked: u64,
    tokens_per_epoch: u64,
    epochs: u32,
    samples_built: u64,
    samples_served: usize,
    sample_idx_dtype: &'static str,
    shuffle_idx_dtype: &'static str,
    index: &'static str,
    rebuilt_because: Option<String>,
    seconds: f64,
    cache_files: [PathBuf; 3],
    shown: Vec<Shown>,
}

#[derive(Debug, Serialize)]
struct Shown {
    sample: usize,
    /// Row of sample_idx it comes from (after the shuffle).
    row: u64,
    /// (position in doc_idx, document, token offset) where it starts.
    starts_at: (i64, i64, i64),
    tokens: Vec<i64>,
    /// The ids decoded (with a tokenizer).
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// Run `neox-data samples`.
pub fn run(args: SamplesArgs) -> anyhow::Result<()> {
    let prefix = prefix_of(&args.data_path);
    let data = Arc::new(
        IndexedDataset::open(&prefix)
            .with_context(|| format!("cannot read shard {}", prefix.display()))?,
    );
    let split = Split::parse(&args.split, data.len())?;
    let (name, which) = match args.which {
        Which::Train => ("train", 0),
        Which::Valid => ("valid", 1),
        Which::Test => ("test", 2),
    };
    let documents = split.range(which);
    anyhow::ensure!(
        !documents.is_empty(),
        "split \"{}\" leaves no {name} documents out of {}",
        args.split,
        data.len()
    );
    let spec = IndexSpec {
        documents: documents.clone(),
        seq_length: args.seq_length,
        num_samples: Some(args.num_samples),
        num_epochs: None,
        seed: args.seed,
    };
    let started = Instant::now();
    let ds = GptDataset::open(name, data, spec, args.cache_dir.as_deref())
        .with_context(|| format!("cannot build the {name} index of {}", prefix.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let (origin, rebuilt_because) = match ds.origin() {
        IndexOrigin::Reused => ("reused", None),
        IndexOrigin::Built => ("built", None),
        IndexOrigin::Rebuilt { reason } => {
            tracing::warn!("the cached index did not match the data and was rebuilt: {reason}");
            ("rebuilt", Some(reason.clone()))
        }
    };
    let tokenizer = match args.tokenizer_type {
        Some(kind) => Some(
            Tokenizer::load(&TokenizerSpec {
                kind,
                vocab_file: args.vocab_file.clone(),
                merge_file: args.merge_file.clone(),
            })
            .context("loading the tokenizer for --show")?,
        ),
        None => None,
    };
    let index = ds.index();
    let mut shown = Vec::new();
    let end = args.start.saturating_add(args.show).min(ds.len());
    for sample in args.start..end {
        let mut tokens = ds
            .get(sample)
            .with_context(|| format!("cannot read sample {sample}"))?;
        if args.show_tokens > 0 {
            tokens.truncate(args.show_tokens);
        }
        let row = index.shuffle_idx.get(sample).unwrap_or_default();
        let (position, offset) = index.sample_idx.row(row as usize).unwrap_or_default();
        let doc = index
            .doc_idx
            .get(position as usize)
            .copied()
            .unwrap_or_default();
        let text = match &tokenizer {
            Some(tok) => {
                let ids: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
                Some(
                    tok.decode(&ids)
                        .with_context(|| format!("cannot decode sample {sample}"))?,
                )
            }
            None => None,
        };
        shown.push(Shown {
            sample,
            row,
            starts_at: (position, i64::from(doc), offset),
            tokens,
            text,
        });
    }
    let paths = ds.cache_paths();
    let report = Report {
        prefix,
        split: args.split.clone(),
        documents: [documents.start, documents.end],
        seq_length: args.seq_length,
        seed: args.seed,
        num_samples_asked: args.num_samples,
        tokens_per_epoch: index.tokens_per_epoch,
        epochs: index.num_epochs,
        samples_built: index.total_samples(),
        samples_served: ds.len(),
        sample_idx_dtype: match index.sample_idx {
            SampleIdx::I32(_) => "int32",
            SampleIdx::I64(_) => "int64",
        },
        shuffle_idx_dtype: if index.shuffle_idx.descr() == "<u4" {
            "uint32"
        } else {
            "int64"
        },
        index: origin,
        rebuilt_because,
        seconds,
        cache_files: [
            paths.doc_idx.clone(),
            paths.sample_idx.clone(),
            paths.shuffle_idx.clone(),
        ],
        shown,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report, name));
    }
    Ok(())
}

fn text(r: &Report, name: &str) -> String {
    let mut s = format!(
        "{} ({name} split of \"{}\")\n  documents        {}..{} ({} documents, {} tokens)\n  seq_length       {} (+1 label token per sample)\n  seed             {}\n  samples asked    {}\n  epochs           {}\n  samples built    {} (served: {}, GPT-NeoX's len())\n  dtypes           sample_idx {}, shuffle_idx {}\n  index            {} in {:.3} s\n",
        r.prefix.display(),
        r.split,
        r.documents[0],
        r.documents[1],
        r.documents[1] - r.documents[0],
        r.tokens_per_epoch,
        r.seq_length,
        r.seed,
        r.num_samples_asked,
        r.epochs,
        r.samples_built,
        r.samples_served,
        r.sample_idx_dtype,
        r.shuffle_idx_dtype,
        r.index,
        r.seconds,
    );
    if let Some(reason) = &r.rebuilt_because {
        s += &format!("  warning          the cache did not match the data: {reason}\n");
    }
    for f in &r.cache_files {
        s += &format!("  cache            {}\n", f.display());
    }
    for sh in &r.shown {
        let ids: Vec<String> = sh.tokens.iter().map(i64::to_string).collect();
        let (position, doc, offset) = sh.starts_at;
        s += &format!(
            "  sample {} (row {}, starts in document {doc} at token {offset}, doc_idx position {position}): {}\n",
            sh.sample,
            sh.row,
            ids.join(" ")
        );
        let more = (r.seq_length as usize + 1).saturating_sub(sh.tokens.len());
        if more > 0 {
            s.insert_str(s.len() - 1, &format!(" ... ({more} more)"));
        }
        if let Some(text) = &sh.text {
            s += &format!("    text: {text:?}\n");
        }
    }
    s
}
