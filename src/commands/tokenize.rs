//! `neox-data tokenize`: GPT-NeoX's `tools/datasets/preprocess_data.py`, as a
//! drop-in (same flags, same output bytes), streaming and parallel.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use neox_tokenize::{EngineChoice, Tokenizer, TokenizerKind, TokenizerSpec};

use crate::pipeline::{self, PipelineConfig, Summary};
use crate::progress::ProgressReporter;

/// Arguments of `neox-data tokenize`.
///
/// Example (GPT-2, the shared e-mail corpus):
///
///   neox-data tokenize --input mail.jsonl.zst --output-prefix data/mail \
///     --tokenizer-type GPT2BPETokenizer --append-eod
///
/// writes data/mail_text_document.bin and .idx, byte for byte what GPT-NeoX's
/// preprocess_data.py writes with the same flags.
#[derive(Debug, Args)]
#[command(
    long_about = "Tokenize local files into {prefix}_{key}_document.{bin,idx}, the \
    Megatron/GPT-NeoX mmap format, byte for byte what GPT-NeoX's \
    tools/datasets/preprocess_data.py writes with the same flags.\n\n\
    Inputs: .jsonl, .jsonl.zst, .jsonl.gz, .json.gz (a document per line, text under \
    each --jsonl-keys key), .txt (a document per file), .tar, .tar.gz, .jsonl.zst.tar, \
    .zip (a document per member, or per line of members named .jsonl*), .parquet \
    (a document per row, the text in the column named by the key), or directories of \
    them. Empty documents are dropped. Malformed lines are reported and skipped \
    (--strict: fatal)."
)]
pub struct TokenizeArgs {
    /// Input files or directories, comma-separated (as GPT-NeoX's `--input`).
    #[arg(long, required = true, value_delimiter = ',')]
    pub input: Vec<PathBuf>,

    /// Keys to tokenize, space-separated; one output per key.
    #[arg(long, num_args = 1.., default_value = "text")]
    pub jsonl_keys: Vec<String>,

    /// Number of documents expected (only for the progress display, as in GPT-NeoX).
    #[arg(long)]
    pub num_docs: Option<u64>,

    /// Stop after this many documents.
    #[arg(long)]
    pub max_docs: Option<u64>,

    /// Tokenizer: GPT2BPETokenizer, HFTokenizer, HFGPT2Tokenizer,
    /// SPMTokenizer, CharLevelTokenizer or TiktokenTokenizer (any case).
    #[arg(long, value_parser = parse_kind)]
    pub tokenizer_type: TokenizerKind,

    /// GPT-2's vocab.json (GPT2BPETokenizer), a tokenizer.json (HFTokenizer),
    /// a tokenizer directory or tokenizer.json (HFGPT2Tokenizer), a
    /// SentencePiece .model file (SPMTokenizer), or an encoding name such as
    /// cl100k_base (TiktokenTokenizer). Without it,
    /// GPT2BPETokenizer and HFGPT2Tokenizer use the built-in GPT-2 files and
    /// HFTokenizer the built-in GPT-NeoX-20B tokenizer.
    #[arg(long)]
    pub vocab_file: Option<PathBuf>,

    /// GPT-2's merges.txt (GPT2BPETokenizer, with --vocab-file).
    #[arg(long)]
    pub merge_file: Option<PathBuf>,

    /// Which implementation encodes the byte-level BPE tokenizers
    /// (GPT2BPETokenizer, HFTokenizer, HFGPT2Tokenizer): `auto` uses the fast
    /// built-in BPE engine when it reproduces the tokenizer exactly (GPT-2,
    /// GPT-NeoX-20B and most tokenizer.json files of that family) and the
    /// Hugging Face `tokenizers` library otherwise; `fast` insists on the fast
    /// engine; `tokenizers` always uses the library. The ids are the same.
    #[arg(long, default_value = "auto", value_parser = parse_engine)]
    pub engine: EngineChoice,

    /// Append the end-of-document token to every document.
    #[arg(long)]
    pub append_eod: bool,

    /// Not supported: ftfy has no Rust port. Fix the text first (e.g. with
    /// Python's ftfy) and tokenize the result.
    #[arg(long)]
    pub ftfy: bool,

    /// Outputs are {prefix}_{key}_document.bin and .idx.
    #[arg(long)]
    pub output_prefix: PathBuf,

    /// Only `mmap` (GPT-NeoX's default) is written.
    #[arg(long, default_value = "mmap")]
    pub dataset_impl: String,

    /// Encoding threads (default: one per core). The output is the same for any value.
    #[arg(long)]
    pub workers: Option<usize>,

    /// Accepted for compatibility with preprocess_data.py; progress is shown by time.
    #[arg(long, hide = true)]
    pub log_interval: Option<u64>,

    /// Make a malformed line (bad JSON, a missing key, a value that is not
    /// text) fatal instead of reporting and skipping it.
    #[arg(long)]
    pub strict: bool,

    /// The most bytes one document (a JSON line, a .txt file, an archive
    /// member) may hold, decompressed; a longer one stops the run, naming
    /// the file and offset (a guard against corrupt input and gzip/zip bombs).
    #[arg(long, env = "NEOX_MAX_DOCUMENT_BYTES", default_value_t = neox_datasets::read::DEFAULT_MAX_DOCUMENT_BYTES)]
    pub max_document_bytes: u64,
}

fn parse_engine(s: &str) -> Result<EngineChoice, String> {
    s.parse()
        .map_err(|e: neox_tokenize::TokenizerError| e.to_string())
}

pub(crate) fn parse_kind(s: &str) -> Result<TokenizerKind, String> {
    s.parse()
        .map_err(|e: neox_tokenize::TokenizerError| e.to_string())
}

/// Run `neox-data tokenize`.
pub fn run(args: TokenizeArgs) -> anyhow::Result<()> {
    if args.ftfy {
        bail!(
            "--ftfy is not supported: ftfy (Python's mojibake fixer) has no Rust port, and \
             ignoring the flag would silently give different tokens than GPT-NeoX. Run \
             ftfy.fix_text over the corpus first, then tokenize it without --ftfy."
        );
    }
    if args.dataset_impl != "mmap" {
        bail!(
            "--dataset-impl {}: only mmap (GPT-NeoX's default) is written",
            args.dataset_impl
        );
    }
    let spec = TokenizerSpec {
        kind: args.tokenizer_type,
        vocab_file: args.vocab_file,
        merge_file: args.merge_file,
    };
    let tokenizer =
        Tokenizer::load_with_engine(&spec, args.engine).context("cannot load the tokenizer")?;
    tracing::info!(
        "tokenizer {} on the {}: vocab size {}, EOD {}",
        tokenizer.description(),
        tokenizer.engine_name(),
        tokenizer.vocab_size(),
        tokenizer
            .eod()
            .map_or("none".to_string(), |id| id.to_string())
    );
    let mut config = PipelineConfig::new(args.input, args.output_prefix);
    config.keys = args.jsonl_keys;
    config.append_eod = args.append_eod;
    config.max_docs = args.max_docs;
    config.strict = args.strict;
    config.max_document_bytes = args.max_document_bytes;
    if let Some(workers) = args.workers {
        if workers == 0 {
            bail!("--workers must be at least 1");
        }
        config.workers = workers;
    }
    let mut reporter = ProgressReporter::new(args.num_docs);
    let result = pipeline::run(&config, &tokenizer, &mut reporter);
    reporter.finish();
    print_summary(&result?);
    Ok(())
}

fn print_summary(s: &Summary) {
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    println!(
        "{} documents, {} tokens, {:.1} MB of text in {:.1} s ({:.2} MB/s, {:.0} tokens/s); dtype {:?}",
        s.documents,
        s.tokens,
        s.text_bytes as f64 / 1e6,
        secs,
        s.text_bytes as f64 / 1e6 / secs,
        s.tokens as f64 / secs,
        s.dtype
    );
    if s.malformed > 0 {
        println!("{} malformed lines skipped", s.malformed);
    }
    for out in &s.outputs {
        println!(
            "{}: {}.bin/.idx: {} documents, {} tokens{}",
            out.key,
            out.prefix.display(),
            out.written.documents,
            out.written.tokens,
            if out.empty > 0 {
                format!(" ({} empty documents dropped)", out.empty)
            } else {
                String::new()
            }
        );
    }
}
