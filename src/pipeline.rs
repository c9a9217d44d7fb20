//! The one read -> tokenize -> write chain, used by `neox-data tokenize` and
//! `neox-data prepare`.
//!
//! Documents are read (and decompressed, and parsed) on a thread of their
//! own, grouped into batches, encoded on `workers` threads, and written in
//! input order by the calling thread into one `{prefix}_{key}_document.{bin,idx}`
//! pair per key, exactly as GPT-NeoX's `tools/datasets/preprocess_data.py`
//! writes them. A bounded number of batches is in flight at any moment, so
//! memory does not grow with the corpus.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use neox_datasets::read::{Document, ReadError, ReadOptions, documents};
use neox_indexed::{DType, IndexedWriter, WriteSummary};
use neox_tokenize::{Tokenizer, ordered_map};

/// Documents per batch, at most.
const BATCH_DOCUMENTS: usize = 256;
/// Text bytes per batch, about (a batch closes once it holds this much).
const BATCH_BYTES: usize = 256 * 1024;
/// Batches in flight per worker.
const IN_FLIGHT_PER_WORKER: usize = 4;

/// What to tokenize, and how.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Input files or directories (see `neox_datasets::read`).
    pub inputs: Vec<PathBuf>,
    /// The JSON keys (Parquet columns) to tokenize; one output per key.
    pub keys: Vec<String>,
    /// Outputs are `{output_prefix}_{key}_document.{bin,idx}`.
    pub output_prefix: PathBuf,
    /// Append the tokenizer's end-of-document id to every document.
    pub append_eod: bool,
    /// Encoding threads (at least 1).
    pub workers: usize,
    /// Stop after this many documents have been read.
    pub max_docs: Option<u64>,
    /// Make a malformed line fatal instead of counting and skipping it.
    pub strict: bool,
    /// The most bytes one document may hold (see `neox_datasets::read::ReadOptions`).
    pub max_document_bytes: u64,
}

impl PipelineConfig {
    /// The defaults of `preprocess_data.py` (key `text`, no EOD) with one
    /// worker per core.
    pub fn new(inputs: Vec<PathBuf>, output_prefix: impl Into<PathBuf>) -> Self {
        Self {
            inputs,
            keys: vec!["text".to_string()],
            output_prefix: output_prefix.into(),
            append_eod: false,
            workers: default_workers(),
            max_docs: None,
            strict: false,
            max_document_bytes: neox_datasets::read::DEFAULT_MAX_DOCUMENT_BYTES,
        }
    }

    /// The output prefix for one key: `{output_prefix}_{key}_document`.
    pub fn key_prefix(&self, key: &str) -> PathBuf {
        let mut prefix = OsString::from(self.output_prefix.as_os_str());
        prefix.push(format!("_{key}_document"));
        prefix.into()
    }
}

/// One worker per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Where the pipeline is, for progress displays.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    /// Documents read and encoded (written, or dropped as empty).
    pub documents: u64,
    /// Malformed lines skipped.
    pub malformed: u64,
    /// UTF-8 bytes of text encoded.
    pub text_bytes: u64,
    /// Tokens written (over all keys, EOD included).
    pub tokens: u64,
    /// Bytes of the input files read (as stored on disk).
    pub input_bytes: u64,
    /// Total bytes of the input files.
    pub input_total: u64,
    /// Time since the start.
    pub elapsed: Duration,
}

/// Receives progress and warnings while the pipeline runs.
pub trait Reporter {
    /// Called after each batch is written.
    fn progress(&mut self, progress: &Progress);
    /// A malformed line or row was skipped.
    fn malformed(&mut self, error: &ReadError);
}

/// A reporter that reports nothing.
pub struct Silent;

impl Reporter for Silent {
    fn progress(&mut self, _: &Progress) {}
    fn malformed(&mut self, _: &ReadError) {}
}

/// The output for one key.
#[derive(Debug, Clone)]
pub struct KeyOutput {
    /// The key.
    pub key: String,
    /// `{output_prefix}_{key}_document`.
    pub prefix: PathBuf,
    /// What was written.
    pub written: WriteSummary,
    /// Documents with no text (or no tokens) under this key, not written.
    pub empty: u64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Documents read (each written under each key unless empty there).
    pub documents: u64,
    /// Malformed lines or rows skipped.
    pub malformed: u64,
    /// UTF-8 bytes of text encoded, over all keys.
    pub text_bytes: u64,
    /// Tokens written, over all keys.
    pub tokens: u64,
    /// Bytes of the input files read.
    pub input_bytes: u64,
    /// The token dtype of the shards.
    pub dtype: DType,
    /// One output per key, in the order of the keys.
    pub outputs: Vec<KeyOutput>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Read, tokenize and write: see the module documentation.
pub fn run(
    config: &PipelineConfig,
    tokenizer: &Tokenizer,
    reporter: &mut dyn Reporter,
) -> anyhow::Result<Summary> {
    let start = Instant::now();
    if config.keys.is_empty() {
        bail!("no --jsonl-keys given: at least one key is needed");
    }
    let eod = match (config.append_eod, tokenizer.eod()) {
        (true, None) => bail!(
            "--append-eod: {} has no <|endoftext|> token to append",
            tokenizer.description()
        ),
        (true, Some(eod)) => Some(eod),
        (false, _) => None,
    };
    let dtype = DType::for_vocab_size(tokenizer.vocab_size());
    let options = ReadOptions {
        keys: config.keys.clone(),
        max_document_bytes: config.max_document_bytes,
    };
    let docs = documents(&config.inputs, &options)?;
    let bytes_read = docs.bytes_read();
    let input_total = docs.total_bytes();

    let mut writers = Vec::with_capacity(config.keys.len());
    for key in &config.keys {
        let prefix = config.key_prefix(key);
        let writer = IndexedWriter::create(&prefix, dtype)
            .with_context(|| format!("cannot create the output {}", prefix.display()))?;
        writers.push((prefix, writer, 0u64));
    }

    let workers = config.workers.max(1);
    let batches = Batches::new(docs, config.max_docs);
    let mut progress = Progress {
        input_total,
        ..Progress::default()
    };
    ordered_map(
        batches,
        workers,
        workers * IN_FLIGHT_PER_WORKER,
        |batch| encode(batch, tokenizer, eod, config.keys.len()),
        |encoded: Encoded| {
            let mut tokens = encoded.tokens.as_slice();
            let mut lengths = encoded.lengths.chunks_exact(config.keys.len());
            for event in encoded.events {
                match event {
                    Event::Document => {
                        let lengths = lengths
                            .next()
                            .ok_or_else(|| anyhow!("internal: lengths out of step"))?;
                        for ((prefix, writer, empty), &len) in writers.iter_mut().zip(lengths) {
                            if len == 0 {
                                *empty += 1;
                                continue;
                            }
                            let (doc, rest) = tokens.split_at(len);
                            tokens = rest;
                            writer
                                .add_document(doc)
                                .with_context(|| format!("cannot write {}", prefix.display()))?;
                        }
                        progress.documents += 1;
                    }
                    Event::Malformed(error) => {
                        if config.strict {
                            return Err(
                                anyhow!(error).context("malformed input (--strict makes it fatal)")
                            );
                        }
                        progress.malformed += 1;
                        reporter.malformed(&error);
                    }
                    Event::Fatal(error) => return Err(error),
                }
            }
            progress.text_bytes += encoded.text_bytes;
            progress.tokens += encoded.tokens.len() as u64;
            progress.input_bytes = bytes_read.load(Ordering::Relaxed);
            progress.elapsed = start.elapsed();
            reporter.progress(&progress);
            Ok(())
        },
    )?;

    let mut outputs = Vec::with_capacity(writers.len());
    for ((prefix, writer, empty), key) in writers.into_iter().zip(&config.keys) {
        let written = writer
            .finish()
            .with_context(|| format!("cannot finish {}", prefix.display()))?;
        outputs.push(KeyOutput {
            key: key.clone(),
            prefix,
            written,
            empty,
        });
    }
    progress.input_bytes = bytes_read.load(Ordering::Relaxed);
    Ok(Summary {
        documents: progress.documents,
        malformed: progress.malformed,
        text_bytes: progress.text_bytes,
        tokens: progress.tokens,
        input_bytes: progress.input_bytes,
        dtype,
        outputs,
        elapsed: start.elapsed(),
    })
}

/// What the reader handed over, in order.
type Batch = Vec<Result<Document, ReadError>>;

/// The documents grouped into batches, up to `max_docs` documents; a fatal
/// read error ends the last batch.
struct Batches<I> {
    docs: I,
    remaining: Option<u64>,
    done: bool,
}

impl<I> Batches<I> {
    fn new(docs: I, max_docs: Option<u64>) -> Self {
        Self {
            docs,
            remaining: max_docs,
            done: false,
        }
    }
}

impl<I: Iterator<Item = Result<Document, ReadError>>> Iterator for Batches<I> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while !self.done && batch.len() < BATCH_DOCUMENTS && bytes < BATCH_BYTES {
            if self.remaining == Some(0) {
                self.done = true;
                break;
            }
            let Some(item) = self.docs.next() else {
                self.done = true;
                break;
            };
            match &item {
                Ok(doc) => {
                    bytes += doc.texts.iter().map(String::len).sum::<usize>();
                    if let Some(n) = &mut self.remaining {
                        *n -= 1;
                    }
                }
                Err(e) if !e.is_malformed() => self.done = true,
                Err(_) => {}
            }
            batch.push(item);
        }
        (!batch.is_empty()).then_some(batch)
    }
}

/// A batch, encoded: the tokens of its documents (key after key, document
/// after document) and their lengths, with the events in input order.
struct Encoded {
    tokens: Vec<u32>,
    /// One length per key per document (0: empty, not written).
    lengths: Vec<usize>,
    events: Vec<Event>,
    text_bytes: u64,
}

enum Event {
    Document,
    Malformed(ReadError),
    Fatal(anyhow::Error),
}

fn encode(batch: Batch, tokenizer: &Tokenizer, eod: Option<u32>, keys: usize) -> Encoded {
    let mut out = Encoded {
        tokens: Vec::new(),
        lengths: Vec::with_capacity(batch.len() * keys),
        events: Vec::with_capacity(batch.len()),
        text_bytes: 0,
    };
    for item in batch {
        let doc = match item {
            Ok(doc) => doc,
            Err(e) if e.is_malformed() => {
                out.events.push(Event::Malformed(e));
                continue;
            }
            Err(e) => {
                out.events.push(Event::Fatal(e.into()));
                break;
            }
        };
        for text in &doc.texts {
            let before = out.tokens.len();
            // GPT-NeoX drops empty documents (lm_dataformat filters them).
            if !text.is_empty() {
                if let Err(e) = tokenizer.encode(text, &mut out.tokens) {
                    out.events.push(Event::Fatal(
                        anyhow!(e).context(format!("{}: cannot tokenize", doc.location)),
                    ));
                    return out;
                }
                out.text_bytes += text.len() as u64;
            }
            // A text without tokens is dropped too, EOD or not.
            if out.tokens.len() > before {
                out.tokens.extend(eod);
            }
            out.lengths.push(out.tokens.len() - before);
        }
        out.events.push(Event::Document);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use neox_tokenize::{Engine, TokenizerError, TokenizerKind};

    /// An encoder that fails on one document: by panicking or by an error.
    struct Faulty {
        panic: bool,
    }

    impl Engine for Faulty {
        fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
            if text == "doc 700" {
                if self.panic {
                    panic!("encoder bug on {text:?}");
                }
                return Err(TokenizerError::Encode(format!("cannot encode {text:?}")));
            }
            out.extend(text.bytes().map(u32::from));
            Ok(())
        }
    }

    /// Run the pipeline over 2,000 one-line documents with a faulty encoder
    /// on 3 workers; the error it ends with, within 60 s (a panicking worker
    /// used to hang the run, or, once every batch was drawn, to crash it).
    fn run_faulty(panic: bool) -> String {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("docs.jsonl");
        let lines: String = (0..2000)
            .map(|i| format!("{{\"text\": \"doc {i}\"}}\n"))
            .collect();
        std::fs::write(&input, lines).unwrap();
        let mut config = PipelineConfig::new(vec![input], dir.path().join("out"));
        config.workers = 3;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let tokenizer = Tokenizer::from_engine(
                TokenizerKind::CharLevel,
                "faulty",
                Box::new(Faulty { panic }),
                256,
                Some(0),
            );
            let result = run(&config, &tokenizer, &mut Silent);
            let _ = tx.send(result.map(|_| ()).map_err(|e| format!("{e:#}")));
            drop(dir);
        });
        let result = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the pipeline hung on a faulty encoder");
        result.expect_err("a faulty encoder must fail the run")
    }

    #[test]
    fn a_panicking_encoder_thread_ends_the_run_with_an_error() {
        let err = run_faulty(true);
        assert!(
            err.contains("panicked") && err.contains("encoder bug on \"doc 700\""),
            "{err}"
        );
    }

    #[test]
    fn a_failing_encoder_ends_the_run_with_an_error_naming_the_document() {
        let err = run_faulty(false);
        assert!(
            err.contains("cannot encode \"doc 700\"") && err.contains("line 701"),
            "{err}"
        );
    }

    #[test]
    fn key_prefixes_follow_gpt_neox() {
        let config = PipelineConfig::new(vec![], "out/mail");
        assert_eq!(
            config.key_prefix("text"),
            PathBuf::from("out/mail_text_document")
        );
    }
}
