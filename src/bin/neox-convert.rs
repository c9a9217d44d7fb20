//! `neox-convert`: neox checkpoints to and from Hugging Face GPT-NeoX folders.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use neox::model_use::{Cpu, TokenizerArgs};
use neox_trainer::convert;
use neox_trainer::dist::PartitionMethod;
use neox_trainer::dist::reshard;
use neox_trainer::hf::{HfDtype, SaveOptions};

/// Convert between neox checkpoints and Hugging Face GPT-NeoX models.
///
///   neox-convert to-hf --checkpoint runs/125M --out hf/125M --dtype bf16 --config configs/125M.yml configs/enron.yml
///   neox-convert from-hf pythia-160m --out runs/pythia-160m
///
/// `to-hf` writes config.json, the weights (model.safetensors, or shards
/// model-0000N-of-M.safetensors with model.safetensors.index.json beyond
/// --max-shard-size) and, when the tokenizer is one of the `tokenizers`
/// kinds (HFTokenizer, GPT2BPETokenizer, HFGPT2Tokenizer), tokenizer.json
/// and tokenizer_config.json: the folder loads with transformers'
/// `GPTNeoXForCausalLM.from_pretrained` and `AutoTokenizer`.
/// `bos_token_id` / `eos_token_id` are the tokenizer's EOD, so that
/// `generate()` stops at the end of a document.
///
/// A split run's checkpoint (`SAVE_DIR/pp{P}-tp{T}/`) converts merged.
/// `reshard` cuts a checkpoint (split or not) for another pipeline x tensor
/// layout offline, optimizer state included, as a run at that layout saves
/// it (`neox-train` also reshards by itself when it loads one):
///
///   neox-convert reshard --checkpoint runs/split --out runs/one --pipe-parallel-size 1 --model-parallel-size 1
///
/// `from-hf` writes the model as the checkpoint `global_step0` of a `save`
/// folder (weights only, `latest` pointing at it). Train from it with
/// `load: SAVE_DIR` and `finetune: true` (a new run from these weights), or
/// `no_load_optim: true` (continue at its iteration, fresh optimizer state).
#[derive(Debug, Parser)]
#[command(name = "neox-convert", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A neox checkpoint to a Hugging Face GPT-NeoX folder.
    ToHf {
        /// The checkpoint folder (`save` of a run).
        #[arg(long, value_name = "SAVE_DIR")]
        checkpoint: PathBuf,
        /// The iteration to convert (`global_stepN`); default: the one `latest` names.
        #[arg(long, value_name = "N")]
        step: Option<u64>,
        /// The folder to write (created if needed).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The weights' dtype: f32, bf16 or f16.
        #[arg(long, value_name = "D", default_value = "f32")]
        dtype: HfDtype,
        /// Split the weights into shards of at most this many bytes
        /// (suffixes KB, MB, GB: powers of 1000, as transformers').
        #[arg(long, value_name = "SIZE", default_value = "5GB", value_parser = parse_size)]
        max_shard_size: u64,
        #[command(flatten)]
        tokenizer: TokenizerArgs,
    },
    /// A neox checkpoint (split or not) cut for another pipeline x tensor layout.
    Reshard {
        /// The checkpoint folder (`save` of a run).
        #[arg(long, value_name = "SAVE_DIR")]
        checkpoint: PathBuf,
        /// The iteration to convert (`global_stepN`); default: the newest.
        #[arg(long, value_name = "N")]
        step: Option<u64>,
        /// The checkpoint folder to write (`load` of the run that resumes it).
        #[arg(long, value_name = "SAVE_DIR")]
        out: PathBuf,
        /// Pipeline stages of the new layout.
        #[arg(long, value_name = "P", default_value_t = 1)]
        pipe_parallel_size: usize,
        /// Tensor-parallel ranks of the new layout.
        #[arg(long, value_name = "T", default_value_t = 1)]
        model_parallel_size: usize,
        /// How the layers are cut into stages (GPT-NeoX's `pipe_partition_method`;
        /// give the resuming run's, else it reshards again on load).
        #[arg(long, value_name = "M", default_value = "type:transformer|mlp")]
        pipe_partition_method: String,
    },
    /// A Hugging Face GPT-NeoX folder to a neox checkpoint.
    FromHf {
        /// The Hugging Face folder (config.json and model.safetensors or its shards).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// The checkpoint folder to write (`load` of the run that trains from it).
        #[arg(long, value_name = "SAVE_DIR")]
        out: PathBuf,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    let upper = s.trim().to_ascii_uppercase();
    let (digits, scale) = [("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1.0)]
        .iter()
        .find_map(|(suffix, scale)| upper.strip_suffix(suffix).map(|d| (d.trim(), *scale)))
        .unwrap_or((upper.as_str(), 1.0));
    match digits.parse::<f64>() {
        Ok(n) if n > 0.0 => Ok((n * scale) as u64),
        _ => Err(format!(
            "`{s}`: expected a size such as 5GB, 500MB or 1000000"
        )),
    }
}

fn main() -> ExitCode {
    neox::logging::init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let device = Default::default();
    match cli.command {
        Command::ToHf {
            checkpoint,
            step,
            out,
            dtype,
            max_shard_size,
            tokenizer,
        } => {
            let mut options = tokenizer.options()?;
            let tok = tokenizer.load(&mut options, None)?;
            let eod = tok.as_ref().and_then(|t| t.eod());
            let save = SaveOptions {
                dtype,
                max_shard_bytes: max_shard_size,
                bos_token_id: eod,
                eos_token_id: eod,
            };
            let exported =
                convert::checkpoint_to_hf::<Cpu>(&checkpoint, step, &out, &save, &device)
                    .context("converting to Hugging Face")?;
            let mut files = exported.files;
            match &tok {
                Some(tok) => match neox::model_use::write_hf_tokenizer(tok, &out)? {
                    Some(written) => files.extend(written),
                    None => tracing::warn!(
                        tokenizer = %tok.description(),
                        "this tokenizer kind has no Hugging Face tokenizer.json: none written"
                    ),
                },
                None => tracing::warn!(
                    "no tokenizer given (--config or --tokenizer-type): no tokenizer files written, \
                     and no bos/eos token ids"
                ),
            }
            println!(
                "converted {} (iteration {}) to {} ({}):",
                exported.checkpoint.display(),
                exported.iteration,
                out.display(),
                dtype.torch_name()
            );
            for file in files {
                println!("  {}", file.display());
            }
        }
        Command::Reshard {
            checkpoint,
            step,
            out,
            pipe_parallel_size,
            model_parallel_size,
            pipe_partition_method,
        } => {
            let method = PartitionMethod::parse(&pipe_partition_method)?;
            if out.canonicalize().ok() == Some(checkpoint.canonicalize()?) {
                anyhow::bail!(
                    "--out {} is the checkpoint being read: write the new layout elsewhere",
                    out.display()
                );
            }
            let saved = reshard::find(&checkpoint, step, true)?
                .with_context(|| format!("{}: no checkpoint here", checkpoint.display()))?;
            let layout = reshard::write(
                &saved,
                &out,
                pipe_parallel_size,
                model_parallel_size,
                &method,
            )
            .context("resharding")?;
            println!(
                "resharded {} (iteration {}) from {} to {layout} in {}",
                saved.folder().display(),
                saved.state.iteration,
                saved.layout_name(),
                out.display()
            );
        }
        Command::FromHf { dir, out } => {
            let written = convert::hf_to_checkpoint::<Cpu>(&dir, &out, &device)
                .context("converting from Hugging Face")?;
            println!(
                "wrote {} (latest); train from it with `load: {}` and `finetune: true` or `no_load_optim: true`",
                written.display(),
                out.display()
            );
        }
    }
    Ok(())
}
