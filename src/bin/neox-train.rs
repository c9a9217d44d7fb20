//! `neox-train`: train a GPT-NeoX model over prepared shards.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use neox_trainer::NeoxArgs;
use neox_trainer::device::Device;

/// Train a GPT-NeoX model on token shards made by `neox-data`.
///
/// Configuration is GPT-NeoX's YAML: give one or more files; they are merged in
/// order and option names may use `-` or `_`. Where GPT-NeoX refuses an option
/// set in two files, here the later file wins and the override is logged.
/// Typically a model file and a data file:
///
///   neox-train --config configs/cpu-tiny.yml configs/enron.yml
///
/// GPT-NeoX options that this trainer does not act on and that change nothing
/// computed (DeepSpeed's ZeRO, fusion kernels, logging services, ...) are listed
/// at start. Options whose value would change the model, the data or the
/// numerics and that are not implemented yet (fp16 enabled, num_kv_heads, ...)
/// stop the run, unless --allow-unimplemented. Unknown options and bad values
/// are refused with the file and option named. Metrics go to `log_dir` (else
/// `save`) as `metrics.jsonl`; checkpoints to `save`, resumed from `load`.
#[derive(Debug, Parser)]
#[command(name = "neox-train", version, verbatim_doc_comment)]
struct Args {
    /// GPT-NeoX YAML config files, merged in order.
    #[arg(long, short, required = true, num_args = 1..)]
    config: Vec<PathBuf>,

    /// Where to train: `cpu`, or `cuda:N` in a build with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    device: Device,

    /// Read the configs, print what would be trained and what is not acted on, and exit.
    #[arg(long)]
    check: bool,

    /// DeepSpeed's launcher appends `--local_rank=N`; LOCAL_RANK says the same.
    #[arg(
        long = "local_rank",
        alias = "local-rank",
        value_name = "N",
        hide = true
    )]
    #[allow(dead_code)] // for Placement::from_env, when the data-parallel mode lands
    local_rank: Option<usize>,

    /// Go on despite options that are not implemented yet and would change the
    /// run (e.g. `fp16: {enabled: true}` then trains in f32).
    #[arg(long)]
    allow_unimplemented: bool,
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
    let mut neox = NeoxArgs::from_files(&args.config).context("reading the configuration")?;
    for (name, file) in &neox.not_acted_on {
        tracing::warn!(option = %name, file = %file.display(), "GPT-NeoX option not acted on by neox-train");
    }
    if args.allow_unimplemented {
        for u in &neox.unimplemented {
            tracing::warn!("not implemented, going on without it (--allow-unimplemented): {u}");
        }
    } else {
        neox.refuse_unimplemented()
            .context("reading the configuration")?;
    }
    if let Some(o) = neox.schedule.warmup_overshoot(neox.training.train_iters) {
        tracing::warn!(
            "LEARNING RATE ABOVE ITS PEAK: warmup x lr_decay_iters is {:.3} iterations, under \
             one, so GPT-NeoX's warmup (lr x max(1, n) / warmup iterations) runs {} step(s) at up \
             to {:.3e}, {:.1}x the peak lr {:.3e}; raise `warmup` or `lr_decay_iters` to avoid it",
            o.warmup_iters,
            o.steps,
            o.max_lr,
            o.factor(),
            o.peak
        );
    }
    if neox.padded_vocab_size.is_none() {
        let vocab = tokenizer_vocab(&neox)?;
        neox.set_vocab_size(vocab);
    }
    let vocab = neox.vocab_size()?;
    let model = &neox.model;
    tracing::info!(
        layers = model.num_layers,
        hidden = model.hidden_size,
        heads = model.num_attention_heads,
        seq = model.seq_length,
        vocab,
        pos_emb = ?model.pos_emb,
        device = %args.device,
        "model"
    );
    if args.check {
        println!("{:#?}", neox);
        return Ok(());
    }
    let data = neox_trainer::data::open_splits(&neox).context("opening the training data")?;
    let summary = neox_trainer::device::train(&neox, &data, args.device).context("training")?;
    println!(
        "trained {} iterations{}; last valid loss {}; test loss {}",
        summary.iterations,
        summary
            .resumed_from
            .map(|i| format!(" (resumed at {i})"))
            .unwrap_or_default(),
        summary
            .last_valid_loss
            .map_or("-".into(), |l| format!("{l:.4}")),
        summary.test_loss.map_or("-".into(), |l| format!("{l:.4}")),
    );
    if let Some(path) = summary.metrics_path {
        println!("metrics: {}", path.display());
    }
    Ok(())
}

/// The unpadded vocabulary of the configured tokenizer, as GPT-NeoX takes it
/// (`tokenizer_type` is GPT-NeoX's default GPT2BPETokenizer when only
/// `vocab_file` and `merge_file` are given).
fn tokenizer_vocab(neox: &NeoxArgs) -> Result<usize> {
    let Some(kind) = &neox.tokenizer_type else {
        bail!(
            "the vocabulary size is unknown: set `padded_vocab_size`, `tokenizer_type`, or \
             `vocab_file` and `merge_file` (GPT-NeoX's default GPT2BPETokenizer)"
        );
    };
    let kind: neox_tokenize::TokenizerKind = kind
        .parse()
        .map_err(|e| anyhow::anyhow!("option `tokenizer_type`: {e}"))?;
    let spec = neox_tokenize::TokenizerSpec {
        kind,
        vocab_file: neox.vocab_file.clone(),
        merge_file: neox.merge_file.clone(),
    };
    let tokenizer = neox_tokenize::Tokenizer::load(&spec)
        .context("loading the tokenizer for its vocabulary size")?;
    Ok(tokenizer.vocab_size())
}
