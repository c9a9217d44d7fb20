//! `neox-train --check`: what a configuration will train and whether it fits,
//! before any GPU hour is spent.
//!
//! - [`params`]: every parameter tensor from the config (counts, tensor-parallel
//!   cuts, pipeline places).
//! - [`memory`]: bytes per rank for a layout (ZeRO, precision, activations).
//! - [`data`]: shards, tokens, samples and epochs per split (no indexing).
//! - [`fit`]: the fit on a device and the smallest changes that would fit.
//! - `render`: the plan as text (`--check`); JSON is its serde form (`--check --json`).

pub mod data;
pub mod fit;
pub mod memory;
pub mod params;
mod render;

use std::path::{Path, PathBuf};

use neox_indexed::samples::SplitSamples;
use serde::Serialize;
use serde_yaml_ng::Value;

use crate::config::yaml::{Resolved, Source, show};
use crate::config::{NeoxArgs, Unimplemented};
use crate::dist::ZeroStage;
use crate::error::ConfigError;
pub use data::DataPlan;
pub use fit::{Fit, Support, parse_size};
pub use memory::{Keeper, Layout, Precision, RankMemory};
pub use params::Counts;
pub use render::bytes as render_bytes;

/// Everything `--check` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The config files, in merge order.
    pub files: Vec<PathBuf>,
    /// Each option as resolved, with its source.
    pub config: Vec<Resolved>,
    pub model: ModelPlan,
    pub data: DataSection,
    pub layout: Layout,
    /// What this build can run.
    pub support: Support,
    /// Features the config asks for that this build cannot run yet.
    pub cannot_run: Vec<String>,
    /// The fullest rank as neox-train keeps it.
    pub memory: RankMemory,
    /// The same layout's fullest rank as GPT-NeoX with DeepSpeed keeps it.
    pub deepspeed_total: u64,
    pub fit: Option<Fit>,
    pub notes: Notes,
}

/// The model's size and cost.
#[derive(Debug, Clone, Serialize)]
pub struct ModelPlan {
    pub num_layers: usize,
    pub hidden_size: usize,
    pub num_attention_heads: usize,
    pub seq_length: usize,
    pub vocab_size: usize,
    pub tied_embeddings: bool,
    pub params: Counts,
    /// Forward and backward, no recomputation.
    pub flops_per_token: f64,
    /// Tokens per optimizer step: global batch x seq_length.
    pub tokens_per_step: u64,
    pub flops_per_step: f64,
    /// With the layers' forward run again for activation checkpointing.
    pub flops_per_step_recomputed: f64,
}

/// The data, when the config names any.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum DataSection {
    /// No `data_path` or `train_data_paths`.
    None,
    /// The shards could not be read.
    Unreadable {
        error: String,
    },
    Read(DataPlan),
}

/// The notes and refusals about options.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Notes {
    /// Options whose values would change the run and are not implemented:
    /// the run stops on them unless `--allow-unimplemented`.
    pub refused: Vec<Refusal>,
    /// GPT-NeoX options this trainer does not act on, changing nothing computed.
    pub not_acted_on: Vec<NotActedOn>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub key: String,
    pub file: PathBuf,
    pub value: String,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NotActedOn {
    pub key: String,
    pub file: PathBuf,
}

/// What to plan for besides the config.
#[derive(Debug, Clone)]
pub struct Request {
    pub files: Vec<PathBuf>,
    /// Ranks in all (pp x dp x tp).
    pub world_size: usize,
    /// The device's memory, for the fit section.
    pub device_memory: Option<u64>,
}

impl Plan {
    /// Plans `args` (read for `grid(args).data_parallel(world)` ranks, its
    /// vocabulary known) for `request`.
    pub fn new(args: &NeoxArgs, request: &Request) -> Result<Plan, ConfigError> {
        let grid = Grid::of(args)?;
        let dp = grid.data_parallel(request.world_size)?;
        let t = &args.training;
        let layout = Layout {
            pp: grid.pp,
            dp,
            tp: grid.tp,
            zero: t.zero_stage.number() as u8,
            offload: args.optim.offload,
            onebit: args.optim.onebit.is_some(),
            precision: match args.precision.precision {
                crate::precision::Precision::Fp32 => Precision::Fp32,
                crate::precision::Precision::Fp16 => Precision::Fp16,
                crate::precision::Precision::Bf16 => Precision::Bf16,
            },
            keeper: Keeper::NeoxTrain,
            checkpoint_activations: flag(args, "checkpoint_activations")?,
            checkpoint_num_layers: number(args, "checkpoint_num_layers")?.unwrap_or(1).max(1),
            partition_activations: flag(args, "partition_activations")?,
            micro_batch: t.micro_batch_size,
            grad_accum: t.gradient_accumulation_steps,
        };
        let m = &args.model;
        let tensors = params::tensors(m);
        let counts = Counts::of(&tensors, m.num_layers);
        let tokens_per_step = (layout.global_batch() * m.seq_length) as u64;
        let flops = params::Flops::of(m, &tensors);
        let flops_per_token = flops.per_token;
        let recomputed = flops.per_token + flops.recompute_per_token;
        let model = ModelPlan {
            num_layers: m.num_layers,
            hidden_size: m.hidden_size,
            num_attention_heads: m.num_attention_heads,
            seq_length: m.seq_length,
            vocab_size: m.vocab_size,
            tied_embeddings: m.tied_embeddings,
            params: counts,
            flops_per_token,
            tokens_per_step,
            flops_per_step: flops_per_token * tokens_per_step as f64,
            flops_per_step_recomputed: recomputed * tokens_per_step as f64,
        };
        let support = support(args);
        let cut = &t.pipe_partition_method;
        let memory = memory::per_rank_with(m, &tensors, &layout, cut);
        let deepspeed = Layout {
            keeper: Keeper::DeepSpeed,
            ..layout
        };
        let deepspeed_total = memory::per_rank_with(m, &tensors, &deepspeed, cut).total;
        let fit = request
            .device_memory
            .map(|bytes| fit::check(m, &tensors, &layout, cut, bytes, &support));
        Ok(Plan {
            files: request.files.clone(),
            config: args.provenance.clone(),
            model,
            data: data_section(args, &layout),
            cannot_run: cannot_run(&layout, &support, args),
            layout,
            support,
            memory,
            deepspeed_total,
            fit,
            notes: notes(args),
        })
    }

    /// The plan as text for a person.
    pub fn to_text(&self) -> String {
        render::text(self)
    }

    /// The plan as JSON for scripts.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// `pipe_parallel_size` x `model_parallel_size`, as the config sets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grid {
    pub pp: usize,
    pub tp: usize,
    /// The file that set `model_parallel_size` (or `pipe_parallel_size`), for messages.
    file: PathBuf,
}

impl Grid {
    /// GPT-NeoX's `pipe_parallel_size` (0 and 1: one stage) and `model_parallel_size`.
    pub fn of(args: &NeoxArgs) -> Result<Grid, ConfigError> {
        let file = ["model_parallel_size", "pipe_parallel_size"]
            .iter()
            .find_map(|k| value(args, k).map(|(_, f)| f.to_path_buf()))
            .unwrap_or_default();
        Ok(Grid {
            pp: args.training.pipe_parallel_size.max(1),
            tp: args.training.model_parallel_size.max(1),
            file,
        })
    }

    /// The data-parallel ranks of `world` ranks, or why pp x tp does not divide it.
    pub fn data_parallel(&self, world: usize) -> Result<usize, ConfigError> {
        let cell = self.pp * self.tp;
        if world == 0 || !world.is_multiple_of(cell) {
            return Err(ConfigError::BadValue {
                file: self.file.clone(),
                key: "model_parallel_size".into(),
                message: format!(
                    "pipe_parallel_size {} x model_parallel_size {} = {cell} does not divide \
                     the {world} rank(s) of the run",
                    self.pp, self.tp
                ),
            });
        }
        Ok(world / cell)
    }
}

/// The memory of `device` when it is a CUDA GPU this build can ask (the
/// driver's total, `cuDeviceTotalMem`); `None` otherwise.
#[cfg(feature = "cuda")]
pub fn device_memory(device: crate::device::Device) -> Option<u64> {
    let crate::device::Device::Cuda(n) = device else {
        return None;
    };
    let ordinal = i32::try_from(n).ok()?;
    // cudarc panics when it cannot load libcuda: that is "unknown" here.
    std::panic::catch_unwind(move || {
        use cudarc::driver::result;
        result::init().ok()?;
        let dev = result::device::get(ordinal).ok()?;
        // SAFETY: `dev` was just returned by `cuDeviceGet`.
        let bytes = unsafe { result::device::total_mem(dev) }.ok()?;
        Some(bytes as u64)
    })
    .ok()
    .flatten()
}

/// The memory of `device`: unknown in a build without CUDA.
#[cfg(not(feature = "cuda"))]
pub fn device_memory(_device: crate::device::Device) -> Option<u64> {
    None
}

/// The warning about a learning rate above its peak during warmup, if any.
pub fn overshoot_warning(args: &NeoxArgs) -> Option<String> {
    let o = args.schedule.warmup_overshoot(args.training.train_iters)?;
    Some(format!(
        "LEARNING RATE ABOVE ITS PEAK: warmup x lr_decay_iters is {:.3} iterations, under \
         one, so GPT-NeoX's warmup (lr x max(1, n) / warmup iterations) runs {} step(s) at up \
         to {:.3e}, {:.1}x the peak lr {:.3e}; raise `warmup` or `lr_decay_iters` to avoid it",
        o.warmup_iters,
        o.steps,
        o.max_lr,
        o.factor(),
        o.peak
    ))
}

/// The option's value and file, when set to something other than null.
fn value<'a>(args: &'a NeoxArgs, key: &str) -> Option<(&'a Value, &'a Path)> {
    let r = args.resolved(key)?;
    let file = match &r.source {
        Source::File(f) => f.as_path(),
        _ => Path::new(""),
    };
    (!r.value.is_null()).then_some((&r.value, file))
}

fn bad(file: &Path, key: &str, message: String) -> ConfigError {
    ConfigError::BadValue {
        file: file.to_path_buf(),
        key: key.into(),
        message,
    }
}

fn number(args: &NeoxArgs, key: &str) -> Result<Option<usize>, ConfigError> {
    let Some((v, file)) = value(args, key) else {
        return Ok(None);
    };
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| {
            bad(
                file,
                key,
                format!("expected a whole number, found {}", show(v)),
            )
        })
}

fn flag(args: &NeoxArgs, key: &str) -> Result<bool, ConfigError> {
    let Some((v, file)) = value(args, key) else {
        return Ok(false);
    };
    v.as_bool().ok_or_else(|| {
        bad(
            file,
            key,
            format!("expected true or false, found {}", show(v)),
        )
    })
}

/// Whether the trainer reads option `key` (rather than reporting or refusing it).
fn acts_on(args: &NeoxArgs, key: &str) -> bool {
    args.resolved(key).is_some()
        && !args.not_acted_on.iter().any(|(k, _)| k == key)
        && !args.unimplemented.iter().any(|u| u.key == key)
}

/// What this build runs, judged by the options its config reader acts on.
pub fn support(args: &NeoxArgs) -> Support {
    Support {
        tensor_parallel: acts_on(args, "model_parallel_size"),
        pipeline_parallel: acts_on(args, "pipe_parallel_size"),
        activation_checkpointing: acts_on(args, "checkpoint_activations"),
        max_zero: (0..=3u8)
            .filter(|s| ZeroStage::from_stage(u64::from(*s)).is_some())
            .max()
            .unwrap_or(0),
    }
}

fn cannot_run(layout: &Layout, support: &Support, args: &NeoxArgs) -> Vec<String> {
    let mut out = Vec::new();
    if layout.pp > 1 && !support.pipeline_parallel {
        out.push(format!(
            "pipeline parallelism (pipe_parallel_size: {})",
            layout.pp
        ));
    }
    if layout.tp > 1 && !support.tensor_parallel {
        out.push(format!(
            "tensor parallelism (model_parallel_size: {})",
            layout.tp
        ));
    }
    let half = ["precision", "fp16", "bf16"]
        .iter()
        .any(|k| acts_on(args, k));
    if layout.precision != Precision::Fp32 && !half {
        out.push(format!(
            "{} mixed precision (it trains in fp32: parameters, gradients and activations \
             take twice the bytes estimated here)",
            layout.precision.name()
        ));
    }
    if layout.checkpoint_activations && !support.activation_checkpointing {
        out.push(
            "activation checkpointing (it keeps every layer's activations: the estimate \
             without checkpointing applies)"
                .into(),
        );
    }
    out
}

fn data_section(args: &NeoxArgs, layout: &Layout) -> DataSection {
    let Some(source) = &args.data else {
        return DataSection::None;
    };
    let t = &args.training;
    let counts = match SplitSamples::for_run(
        t.train_iters,
        t.eval_interval,
        t.eval_iters,
        layout.global_batch() as u64,
    ) {
        Ok(c) => c,
        Err(e) => {
            return DataSection::Unreadable {
                error: e.to_string(),
            };
        }
    };
    match data::plan(source, args.model.seq_length, t.seed, counts) {
        Ok(plan) => DataSection::Read(plan),
        Err(error) => DataSection::Unreadable { error },
    }
}

fn notes(args: &NeoxArgs) -> Notes {
    Notes {
        refused: args
            .unimplemented
            .iter()
            .map(|u: &Unimplemented| Refusal {
                key: u.key.clone(),
                file: u.file.clone(),
                value: u.value.clone(),
                why: u.why.to_string(),
            })
            .collect(),
        not_acted_on: args
            .not_acted_on
            .iter()
            .map(|(key, file)| NotActedOn {
                key: key.clone(),
                file: file.clone(),
            })
            .collect(),
        warnings: overshoot_warning(args).into_iter().collect(),
    }
}
