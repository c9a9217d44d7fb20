//! `neox-data inspect`: describe a `.bin/.idx` shard.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use neox_indexed::{IndexedDataset, Lengths, Stats, prefix_of};
use serde::Serialize;

use crate::leftovers;

/// Arguments of `neox-data inspect` (the help text below is what `--help` shows).
#[derive(Debug, Args)]
#[command(
    after_help = "Opens the shard after checking every field of the .idx against the .bin \
(a corrupt, truncated or foreign shard is refused with the reason), then prints dtype, \
sequences, documents, tokens, file sizes and document lengths in tokens \
(min/mean/max, nearest-rank p50/p90/p99).\n\n\
Examples:\n  neox-data inspect data/enron/enron_text_document\n  \
neox-data inspect data/enron/enron_text_document.bin --json --show 2"
)]
pub struct InspectArgs {
    /// The shard: its prefix (`data/enron/enron_text_document`) or either of
    /// its files (`....bin`, `....idx`).
    pub prefix: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also print the first N sequences' token ids.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub show: usize,
    /// With --show: at most this many ids of each sequence.
    #[arg(long, value_name = "K", default_value_t = 16)]
    pub show_tokens: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    prefix: PathBuf,
    bin_path: PathBuf,
    idx_path: PathBuf,
    dtype: String,
    sequences: u64,
    documents: u64,
    tokens: u64,
    sequences_outside_documents: u64,
    bin_bytes: u64,
    idx_bytes: u64,
    document_tokens: Option<LengthReport>,
    shown: Vec<Shown>,
    /// Temporary files of this shard's outputs (and its caches) beside it.
    temporary_files: Vec<TempReport>,
}

#[derive(Debug, Serialize)]
struct TempReport {
    path: PathBuf,
    bytes: u64,
    pid: u32,
    /// A live process is writing it (else it is a killed run's leftover).
    live: bool,
    #[serde(skip)]
    line: String,
}

/// The temporary files beside `prefix` whose output's name starts with the prefix's.
fn temporary_files(prefix: &Path) -> Vec<TempReport> {
    let stem = prefix
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    neox_fsio::leftovers(neox_fsio::parent_dir(prefix))
        .unwrap_or_default()
        .into_iter()
        .filter(|l| l.name.target.starts_with(&stem))
        .map(|l| TempReport {
            line: leftovers::describe(&l),
            path: l.path,
            bytes: l.bytes,
            pid: l.name.pid,
            live: l.live,
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct LengthReport {
    min: u64,
    mean: f64,
    max: u64,
    p50: u64,
    p90: u64,
    p99: u64,
}

impl From<Lengths> for LengthReport {
    fn from(l: Lengths) -> Self {
        LengthReport {
            min: l.min,
            mean: l.mean,
            max: l.max,
            p50: l.p50,
            p90: l.p90,
            p99: l.p99,
        }
    }
}

#[derive(Debug, Serialize)]
struct Shown {
    index: usize,
    size: usize,
    tokens: Vec<u32>,
}

/// Run `neox-data inspect`.
pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let prefix = prefix_of(&args.prefix);
    let temporary = temporary_files(&prefix);
    let ds = IndexedDataset::open(&prefix).with_context(|| {
        let mut msg = format!("cannot read shard {}", prefix.display());
        for t in &temporary {
            msg += &format!("\n  temporary file {}", t.line);
        }
        msg
    })?;
    let stats = Stats::of(&ds);
    let mut shown = Vec::new();
    for index in 0..args.show.min(ds.len()) {
        let size = ds.size(index)?;
        let tokens = ds.get_slice(index, 0, size.min(args.show_tokens))?;
        shown.push(Shown {
            index,
            size,
            tokens: tokens.to_vec_u32(),
        });
    }
    let report = Report {
        bin_path: ds.bin_path().to_path_buf(),
        idx_path: ds.idx_path().to_path_buf(),
        prefix,
        dtype: stats.dtype.to_string(),
        sequences: stats.sequences,
        documents: stats.documents,
        tokens: stats.tokens,
        sequences_outside_documents: stats.sequences_outside_documents,
        bin_bytes: stats.bin_bytes,
        idx_bytes: stats.idx_bytes,
        document_tokens: stats.document_tokens.map(LengthReport::from),
        shown,
        temporary_files: temporary,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(())
}

fn text(r: &Report) -> String {
    let mut s = format!(
        "{}\n  dtype      {}\n  sequences  {}\n  documents  {}\n  tokens     {}\n  files      {} ({} bytes), {} ({} bytes)\n",
        r.prefix.display(),
        r.dtype,
        r.sequences,
        r.documents,
        r.tokens,
        r.bin_path.display(),
        r.bin_bytes,
        r.idx_path.display(),
        r.idx_bytes,
    );
    if r.sequences_outside_documents > 0 {
        s += &format!(
            "  warning    {} sequences lie after the last doc_idx entry, in no document \
             (GPT-NeoX's merge tool writes such files; `neox-data merge` does not)\n",
            r.sequences_outside_documents
        );
    }
    match &r.document_tokens {
        Some(l) => {
            s += &format!(
                "  document length (tokens)\n    min {}  mean {:.1}  max {}\n    p50 {}  p90 {}  p99 {}\n",
                l.min, l.mean, l.max, l.p50, l.p90, l.p99
            )
        }
        None => s += "  document length (tokens): no documents\n",
    }
    for sh in &r.shown {
        let ids: Vec<String> = sh.tokens.iter().map(u32::to_string).collect();
        let more = sh.size - sh.tokens.len();
        s += &format!(
            "  sequence {} ({} tokens): {}",
            sh.index,
            sh.size,
            ids.join(" ")
        );
        if more > 0 {
            s += &format!(" ... ({more} more)");
        }
        s += "\n";
    }
    for t in &r.temporary_files {
        s += &format!("  temporary  {}\n", t.line);
    }
    s
}
