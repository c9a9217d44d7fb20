//! `neox-data prepare NAME`: download, verify, tokenize and write a corpus.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use neox_datasets::download::{Fetcher, Progress};
use neox_registry::Registry;
use neox_registry::manifest::{Manifest, ShardOf};

use neox_tokenize::{TokenizerKind, TokenizerSpec};

use crate::prepare::{Outcome, PrepareOptions, TokenizeSettings, prepare};

/// Arguments of `neox-data prepare`.
///
/// Example: `neox-data prepare enron` writes
/// `data/enron/enron_text_document.{bin,idx}` and a manifest beside them.
/// Many original hosts are gone: `--mirror URL` fetches the same file names from elsewhere.
#[derive(Debug, Args)]
#[command(
    long_about = "Download, verify, tokenize and write a registered corpus, as GPT-NeoX's \
    prepare_data.py does: {data-dir}/{name}/{name}_text_document.{bin,idx} (GPT-2 BPE, EOD \
    appended), with a manifest beside it ({prefix}.manifest.json).\n\n\
    Examples:\n  \
    neox-data prepare enron\n  \
    neox-data prepare enron --mirror http://my.mirror/data/\n  \
    neox-data prepare pile --mirror /mnt/pile/train --shard 3/30\n  \
    neox-data prepare my_corpus --catalog corpora.toml\n\n\
    Downloads resume (HTTP range requests), retry connection errors and 5xx, and are \
    refused when their size or SHA-256 differs from the declared one. A finished \
    prepare is not redone (unless --force); an interrupted one resumes."
)]
pub struct PrepareArgs {
    /// The corpus (see `neox-data list`).
    pub name: String,

    /// Folder of prepared datasets; the corpus goes to `{data-dir}/{name}/`.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// A catalog file (TOML, or JSON by extension) declaring more corpora.
    #[arg(long, env = "NEOX_CATALOG")]
    pub catalog: Option<PathBuf>,

    /// Fetch the corpus's files from this base URL or folder instead; files keep their names.
    #[arg(long, env = "NEOX_DATA_MIRROR")]
    pub mirror: Option<String>,

    /// Fetch these files instead of the corpus's own (repeatable; http(s)://, file:// or a path).
    #[arg(long = "url", value_name = "URL")]
    pub urls: Vec<String>,

    /// Require this SHA-256 for the file of this name, e.g. for a mirror that
    /// carries a different copy (repeatable; replaces the registry's size and checksum).
    #[arg(long = "sha256", value_name = "FILE=HEX", value_parser = parse_pin)]
    pub pins: Vec<(String, String)>,

    /// Prepare only part K of N (1-based; parts are runs of whole files, in order),
    /// as `{name}-shard-K-of-N_text_document`; `neox-data merge` of parts 1..N in
    /// order gives exactly what preparing the whole corpus gives.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<ShardOf>,

    /// Download and prepare again even if already done.
    #[arg(long)]
    pub force: bool,

    /// Tokenizer: GPT2BPETokenizer (GPT-NeoX's default, built in), HFTokenizer,
    /// HFGPT2Tokenizer, SPMTokenizer, CharLevelTokenizer or TiktokenTokenizer.
    #[arg(long, default_value = "GPT2BPETokenizer", value_parser = parse_kind)]
    pub tokenizer_type: TokenizerKind,

    /// The tokenizer's vocabulary file (see `neox-data tokenize --help`);
    /// without it the built-in files are used.
    #[arg(long)]
    pub vocab_file: Option<PathBuf>,

    /// GPT-2's merges.txt (GPT2BPETokenizer, with --vocab-file).
    #[arg(long)]
    pub merge_file: Option<PathBuf>,

    /// Encoding threads (default: one per core). The output is the same for any value.
    #[arg(long)]
    pub workers: Option<usize>,

    /// Files downloaded at the same time (multi-file corpora).
    #[arg(long, default_value_t = 4)]
    pub parallel_downloads: usize,

    /// Retries of a failing transfer (connection errors, 5xx), with doubling waits;
    /// failures are counted in a row: an attempt that gets the file further starts afresh.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,

    /// First wait between retries, in seconds (doubles each time, at most 60).
    #[arg(long, default_value_t = 1.0)]
    pub retry_wait: f64,

    /// The most bytes one document (a JSON line, a .txt file, an archive
    /// member) may hold, decompressed; a longer one stops the run, naming
    /// the file and offset (a guard against corrupt input and gzip/zip bombs).
    #[arg(long, env = "NEOX_MAX_DOCUMENT_BYTES", default_value_t = neox_datasets::read::DEFAULT_MAX_DOCUMENT_BYTES)]
    pub max_document_bytes: u64,
}

fn parse_kind(s: &str) -> Result<TokenizerKind, String> {
    s.parse()
        .map_err(|e: neox_tokenize::TokenizerError| e.to_string())
}

fn parse_pin(s: &str) -> Result<(String, String), String> {
    let (name, hex) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected FILE=HEX, e.g. enron_emails.jsonl.zst=3a7f…"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("`{hex}`: a SHA-256 is 64 hex digits"));
    }
    Ok((name.to_string(), hex.to_ascii_lowercase()))
}

fn parse_shard(s: &str) -> Result<ShardOf, String> {
    let bad = || format!("`{s}`: expected K/N with 1 <= K <= N, e.g. 2/8");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let index: u32 = k.trim().parse().map_err(|_| bad())?;
    let count: u32 = n.trim().parse().map_err(|_| bad())?;
    if index == 0 || index > count {
        return Err(bad());
    }
    Ok(ShardOf { index, count })
}

/// Run `neox-data prepare` over the built-in corpora (and `--catalog`).
pub fn run(args: PrepareArgs) -> anyhow::Result<()> {
    run_with(args, Registry::with_builtins())
}

/// Run `neox-data prepare` over `registry` (and `--catalog`).
pub fn run_with(args: PrepareArgs, mut registry: Registry) -> anyhow::Result<()> {
    if let Some(catalog) = &args.catalog {
        registry.load_catalog(catalog)?;
    }
    let Some(corpus) = registry.get(&args.name) else {
        bail!(
            "no corpus named `{}`; known: {} (declare more with --catalog FILE)",
            args.name,
            registry.names().join(", ")
        );
    };
    if !(args.retry_wait.is_finite() && args.retry_wait >= 0.0) {
        bail!(
            "--retry-wait {}: expected a number of seconds >= 0",
            args.retry_wait
        );
    }
    let fetcher = Fetcher::new()?
        .with_retries(args.retries, Duration::from_secs_f64(args.retry_wait))
        .with_progress(Arc::new(Bars::default()));
    let opts = PrepareOptions {
        data_dir: args.data_dir.clone(),
        urls: args.urls.clone(),
        mirror: args.mirror.clone(),
        pins: args.pins.clone(),
        shard: args.shard,
        force: args.force,
        tokenize: TokenizeSettings::load(
            &TokenizerSpec {
                kind: args.tokenizer_type,
                vocab_file: args.vocab_file.clone(),
                merge_file: args.merge_file.clone(),
            },
            match args.workers {
                Some(0) => bail!("--workers must be at least 1"),
                Some(n) => n,
                None => crate::pipeline::default_workers(),
            },
        )?,
        parallel_downloads: args.parallel_downloads.max(1),
        max_document_bytes: args.max_document_bytes,
    };
    match prepare(corpus.as_ref(), &opts, &fetcher)? {
        Outcome::AlreadyPrepared { manifest, path } => {
            println!(
                "{}: already prepared ({}); nothing to do (--force prepares it again)",
                manifest.corpus,
                path.display()
            );
            print_summary(&manifest);
        }
        Outcome::Prepared { manifest, path } => {
            println!("{}: prepared; manifest {}", manifest.corpus, path.display());
            print_summary(&manifest);
            let known = corpus.known().documents;
            if let Some(known) = known
                && args.shard.is_none()
                && known != manifest.documents
            {
                println!(
                    "note: the registry's published figure for {} is {known} documents; these files gave {}: \
                     they are not the files the registry describes (a different mirror copy?)",
                    manifest.corpus, manifest.documents
                );
            }
        }
    }
    Ok(())
}

fn print_summary(m: &Manifest) {
    println!(
        "  {} document(s), {} token(s) ({}, {}), {} bytes of text from {} bytes downloaded in {} file(s), {:.1} s",
        m.documents,
        m.tokens,
        m.tokenizer,
        m.dtype,
        m.text_bytes,
        m.compressed_bytes,
        m.sources.len(),
        m.seconds
    );
    for o in &m.outputs {
        println!("  {} {} bytes sha256 {}", o.file, o.bytes, o.sha256);
    }
}

/// Progress bars on a terminal (one per file being downloaded), log lines otherwise.
#[derive(Default)]
struct Bars {
    multi: MultiProgress,
    active: Mutex<HashMap<ThreadId, (ProgressBar, String, Instant, u64)>>,
}

impl Progress for Bars {
    fn start(&self, label: &str, done: u64, total: Option<u64>) {
        let bar = self.multi.add(ProgressBar::new(total.unwrap_or(0)));
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(label.to_string());
        bar.set_position(done);
        if done > 0 {
            tracing::info!("{label}: resuming at byte {done}");
        }
        if let Ok(mut active) = self.active.lock() {
            active.insert(
                std::thread::current().id(),
                (bar, label.to_string(), Instant::now(), 0),
            );
        }
    }

    fn advance(&self, bytes: u64) {
        if let Ok(mut active) = self.active.lock()
            && let Some((bar, _, _, n)) = active.get_mut(&std::thread::current().id())
        {
            bar.inc(bytes);
            *n += bytes;
        }
    }

    fn finish(&self) {
        let entry = self
            .active
            .lock()
            .ok()
            .and_then(|mut a| a.remove(&std::thread::current().id()));
        if let Some((bar, label, started, n)) = entry {
            bar.finish_and_clear();
            tracing::info!(
                "{label}: {n} bytes transferred in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_and_pin_syntax() {
        assert_eq!(parse_shard("2/8"), Ok(ShardOf { index: 2, count: 8 }));
        assert!(parse_shard("0/8").is_err());
        assert!(parse_shard("9/8").is_err());
        assert!(parse_shard("2").is_err());
        let hex = "AB".repeat(32);
        assert_eq!(
            parse_pin(&format!("a.zst={hex}")),
            Ok(("a.zst".to_string(), hex.to_ascii_lowercase()))
        );
        assert!(parse_pin("a.zst=12").unwrap_err().contains("64 hex"));
        assert!(parse_pin("a.zst").is_err());
    }
}
