//! `neox-eval`: loss and perplexity of a trained model over token shards,
//! and zero-shot tasks from local files.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use neox::model_use::{ModelArgs, encode};
use neox_indexed::IndexedDataset;
use neox_indexed::samples::Split;
use neox_trainer::NeoxArgs;
use neox_trainer::config::DataSource;
use neox_trainer::eval::{self, StreamLoss};
use serde_json::json;

/// Evaluate a neox checkpoint or a Hugging Face GPT-NeoX model.
///
/// Loss and perplexity over token shards: every document of a shard
/// (--data-path), or of one split of a training config's data (--split
/// valid with --config: GPT-NeoX's held-out documents, all of them, in
/// order). The documents are read as one stream cut into windows of
/// seq_length + 1 tokens that share their boundary token, as training
/// samples are; the loss is the mean over all predicted tokens.
///
/// Zero-shot tasks from local files in lm-evaluation-harness's format:
/// `--task lambada --task-file lambada_test.jsonl` (one `{"text": ...}` a
/// line; the last word is predicted from the rest): accuracy (every token of
/// the word is the greedy choice) and perplexity (exp of minus the mean
/// log-likelihood of the words), as lm-evaluation-harness reports them.
///
///   neox-eval --hf pythia-160m --data-path data/enron/enron_text_document --json
///   neox-eval --checkpoint runs/tiny --config configs/cpu-tiny.yml configs/enron.yml --split valid
///   neox-eval --hf pythia-160m --task lambada --task-file lambada_test.jsonl
#[derive(Debug, Parser)]
#[command(name = "neox-eval", version, verbatim_doc_comment)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A token shard (its prefix, or either file).
    #[arg(long, value_name = "PREFIX", conflicts_with_all = ["split", "task"])]
    data_path: Option<PathBuf>,
    /// A split of the --config's data (`data_path` + `split`, or
    /// `valid_data_paths` / `test_data_paths`).
    #[arg(long, value_enum, requires = "config", conflicts_with = "task")]
    split: Option<Which>,
    /// A zero-shot task: `lambada` (also `lambada_openai`, `lambada_standard`).
    #[arg(long, value_name = "NAME", requires = "task_file")]
    task: Option<String>,
    /// The task's documents (lm-evaluation-harness's jsonl).
    #[arg(long, value_name = "F", requires = "task")]
    task_file: Option<PathBuf>,
    /// Tokens each window predicts (default: the model's seq_length).
    #[arg(long, value_name = "S")]
    seq_length: Option<usize>,
    /// Windows run at once.
    #[arg(long, value_name = "B", default_value_t = 4)]
    batch_size: usize,
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    Train,
    Valid,
    Test,
}

impl Which {
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        ["train", "valid", "test"][self.index()]
    }
}

fn main() -> ExitCode {
    neox::logging::init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let loaded = args.model.load()?;
    let model = &loaded.model;
    let result = if let (Some(task), Some(file)) = (&args.task, &args.task_file) {
        if !matches!(
            task.as_str(),
            "lambada" | "lambada_openai" | "lambada_standard"
        ) {
            bail!(
                "task `{task}`: only LAMBADA is implemented (lambada, lambada_openai, lambada_standard)"
            );
        }
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let mut scores = Vec::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let where_ = || format!("{} line {}", file.display(), i + 1);
            let doc: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}: expected a JSON object", where_()))?;
            let Some(text) = doc["text"].as_str() else {
                bail!("{}: expected a string field `text`", where_());
            };
            let Some((context, word)) = text.rsplit_once(' ') else {
                bail!("{}: the text has no space before a last word", where_());
            };
            // lm-evaluation-harness encodes the whole text and the context,
            // and scores the tokens after the context's.
            let tokenizer = loaded.tokenizer.as_ref();
            let whole = encode(tokenizer, &format!("{context} {word}"))?;
            let context_ids = encode(tokenizer, context)?;
            let continuation = &whole[context_ids.len().min(whole.len())..];
            if continuation.is_empty() {
                bail!(
                    "{}: the last word encodes to no tokens after the context",
                    where_()
                );
            }
            scores.push(
                eval::score_continuation(model, &context_ids, continuation).with_context(where_)?,
            );
        }
        if scores.is_empty() {
            bail!("{}: no documents", file.display());
        }
        let (accuracy, perplexity) = eval::lambada_metrics(&scores);
        json!({
            "model": loaded.source,
            "task": task,
            "task_file": file,
            "documents": scores.len(),
            "accuracy": accuracy,
            "perplexity": perplexity,
        })
    } else {
        let seq = args.seq_length.unwrap_or(model.config.seq_length);
        if seq == 0 || seq > model.config.seq_length {
            bail!(
                "--seq-length {seq}: expected 1 to the model's seq_length {}",
                model.config.seq_length
            );
        }
        let (what, ranges) = match (&args.data_path, args.split) {
            (Some(prefix), _) => {
                let ds = IndexedDataset::open(prefix)?;
                let docs = ds.num_documents();
                (
                    prefix.display().to_string(),
                    vec![(prefix.clone(), 0..docs)],
                )
            }
            (None, Some(which)) => {
                let neox = NeoxArgs::from_files(&args.model.tokenizer.config)
                    .context("reading the configuration")?;
                let ranges = match neox.data {
                    Some(DataSource::Split { prefix, split }) => {
                        let ds = IndexedDataset::open(&prefix)?;
                        let split = Split::parse(&split, ds.num_documents())
                            .with_context(|| format!("option `split` `{split}`"))?;
                        vec![(prefix, split.range(which.index()))]
                    }
                    Some(DataSource::Paths { train, valid, test }) => {
                        let paths = [train, valid, test][which.index()].clone();
                        let mut ranges = Vec::new();
                        for (prefix, _) in paths {
                            let docs = IndexedDataset::open(&prefix)?.num_documents();
                            ranges.push((prefix, 0..docs));
                        }
                        ranges
                    }
                    None => {
                        bail!("the configuration names no data (`data_path` or `*_data_paths`)")
                    }
                };
                (format!("{} split", which.name()), ranges)
            }
            (None, None) => {
                bail!("give --data-path PREFIX, --split with --config, or --task with --task-file")
            }
        };
        let mut stream = StreamLoss::new(model, seq, args.batch_size);
        let mut documents = 0;
        for (prefix, range) in &ranges {
            let ds = IndexedDataset::open(prefix)?;
            for d in range.clone() {
                for s in ds.document(d)? {
                    stream
                        .push(&ds.get(s)?.to_vec_u32())
                        .with_context(|| format!("{} document {d}", prefix.display()))?;
                }
                documents += 1;
            }
        }
        let totals = stream.finish();
        if totals.tokens == 0 {
            bail!("{what}: no tokens to predict");
        }
        json!({
            "model": loaded.source,
            "data": what,
            "documents": documents,
            "seq_length": seq,
            "tokens": totals.tokens,
            "loss": totals.loss(),
            "perplexity": totals.perplexity(),
        })
    };
    if args.json {
        println!("{result}");
    } else if let Some(map) = result.as_object() {
        for (k, v) in map {
            println!("{k}: {v}");
        }
    }
    Ok(())
}
