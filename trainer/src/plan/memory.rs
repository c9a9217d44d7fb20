//! Bytes per rank for a parallel layout: parameters, gradients and optimizer
//! state as DeepSpeed keeps them (ZeRO stages partition them over the
//! data-parallel ranks: 1 the optimizer state, 2 also the gradients, 3 also
//! the parameters), and activations as Korthikanti et al. 2022 ("Reducing
//! Activation Recomputation in Large Transformer Models", section 4) count
//! them, with and without activation checkpointing, for the micro batches a
//! pipeline stage holds at once.

use serde::Serialize;

use super::params::{ParamTensor, Place};
use crate::dist::comm::compressed::padded_len;
use crate::dist::pipeline_parallel::partition::partition;
use crate::dist::zero::Partition;
use crate::dist::{PartitionMethod, Stage};
use crate::model::ModelConfig;

/// The numeric precision of training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Fp16,
    Bf16,
}

/// Who keeps the weights in mixed precision (the same in fp32: 4-byte
/// weights and gradients, 8 bytes of Adam moments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Keeper {
    /// neox-train: f32 parameters (the master weights) and gradients, the
    /// passes on a half-precision copy of the parameters.
    NeoxTrain,
    /// GPT-NeoX with DeepSpeed: half-precision parameters and gradients, the
    /// fp32 master weights part of the optimizer state.
    DeepSpeed,
}

/// Bytes per parameter of each kind of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StateBytes {
    /// Weights (and, for neox-train in mixed precision, their half copy).
    pub params: u64,
    pub grads: u64,
    /// Adam's two fp32 moments, and DeepSpeed's fp32 master weights.
    pub optimizer: u64,
}

impl Precision {
    pub fn state_bytes(self, keeper: Keeper) -> StateBytes {
        match (self, keeper) {
            (Precision::Fp32, _) => StateBytes {
                params: 4,
                grads: 4,
                optimizer: 8,
            },
            (_, Keeper::NeoxTrain) => StateBytes {
                params: 4 + 2,
                grads: 4,
                optimizer: 8,
            },
            (_, Keeper::DeepSpeed) => StateBytes {
                params: 2,
                grads: 2,
                optimizer: 12,
            },
        }
    }

    /// Bytes per activation element.
    pub fn activation_bytes(self) -> u64 {
        match self {
            Precision::Fp32 => 4,
            Precision::Fp16 | Precision::Bf16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
        }
    }
}

/// A parallel layout and the settings that decide memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Layout {
    /// Pipeline stages (`pipe_parallel_size`, at least 1).
    pub pp: usize,
    /// Data-parallel ranks.
    pub dp: usize,
    /// Tensor-parallel ranks (`model_parallel_size`).
    pub tp: usize,
    /// `zero_optimization.stage`, 0 to 3.
    pub zero: u8,
    /// ZeRO-Offload (`zero_optimization.offload_optimizer`): the optimizer
    /// state in host memory instead of the device's.
    pub offload: bool,
    /// `optimizer.type: OneBitAdam`: each data-parallel rank also keeps its
    /// compression errors (with more than one rank).
    pub onebit: bool,
    pub precision: Precision,
    pub keeper: Keeper,
    /// `checkpoint_activations`.
    pub checkpoint_activations: bool,
    /// `checkpoint_num_layers`: layers between two checkpoints.
    pub checkpoint_num_layers: usize,
    /// `partition_activations`: checkpoints cut over the tensor-parallel ranks.
    pub partition_activations: bool,
    /// `train_micro_batch_size_per_gpu`.
    pub micro_batch: usize,
    /// `gradient_accumulation_steps`.
    pub grad_accum: usize,
}

impl Layout {
    /// Ranks in all: pp x dp x tp.
    pub fn world(&self) -> usize {
        self.pp * self.dp * self.tp
    }

    /// Samples per optimizer step.
    pub fn global_batch(&self) -> usize {
        self.micro_batch * self.grad_accum * self.dp
    }
}

/// What the fullest rank holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RankMemory {
    /// The pipeline stage of the fullest rank.
    pub stage: usize,
    /// Transformer layers on that stage.
    pub layers: usize,
    /// Parameters on that stage's tensor-parallel rank (before ZeRO).
    pub stage_params: u64,
    /// Parameters whose optimizer state this rank owns under ZeRO (all without).
    pub owned_params: u64,
    pub params: u64,
    pub grads: u64,
    /// Optimizer state on the device (none with ZeRO-Offload), 1-bit Adam's
    /// compression errors included.
    pub optimizer: u64,
    /// 1-bit Adam's compression errors: per tensor the worker's error over
    /// the padded tensor and the server's over this rank's chunk of it.
    pub onebit_errors: u64,
    /// Optimizer state in host memory (ZeRO-Offload's).
    pub host_optimizer: u64,
    /// Activations when every layer keeps its own (no checkpointing).
    pub activations_full: u64,
    /// Activations with checkpointing every `checkpoint_num_layers` layers.
    pub activations_checkpointed: u64,
    /// Micro batches whose activations the stage holds at once.
    pub in_flight: usize,
    /// `params + grads + optimizer` and the activations the layout chooses.
    pub total: u64,
}

impl RankMemory {
    /// The activations the layout keeps.
    pub fn activations(&self, layout: &Layout) -> u64 {
        if layout.checkpoint_activations {
            self.activations_checkpointed
        } else {
            self.activations_full
        }
    }
}

/// Whether pipeline stage `stage` holds tensor `t`. A tied embedding sits
/// on the first stage and, as the output layer, on the last.
fn holds(t: &ParamTensor, model: &ModelConfig, stage: &Stage) -> bool {
    match t.place {
        Place::Embedding => {
            stage.embed
                || (stage.head && model.tied_embeddings && t.name == "gpt_neox.embed_in.weight")
        }
        Place::Layer(i) => stage.layers.contains(&i),
        Place::FinalNorm => stage.norm,
        Place::Output => stage.head,
    }
}

/// The fullest rank's memory for `layout` with GPT-NeoX's default pipeline
/// cut (`pipe_partition_method: type:transformer|mlp`).
pub fn per_rank(model: &ModelConfig, tensors: &[ParamTensor], layout: &Layout) -> RankMemory {
    per_rank_with(model, tensors, layout, &PartitionMethod::gpt_neox_default())
}

/// The fullest rank's memory for `layout` (the stage with the largest total;
/// under ZeRO, the data-parallel rank owning the largest share), the pipeline
/// cut by `method` as DeepSpeed cuts GPT-NeoX's.
pub fn per_rank_with(
    model: &ModelConfig,
    tensors: &[ParamTensor],
    layout: &Layout,
    method: &PartitionMethod,
) -> RankMemory {
    let tp = layout.tp;
    let sum = |keep: &dyn Fn(&Place) -> bool| -> usize {
        tensors
            .iter()
            .filter(|t| keep(&t.place))
            .map(|t| t.numel_per_rank(tp) as usize)
            .sum()
    };
    // GPT-NeoX's pipeline items: embedding, a function, the layers, a
    // function, the final norm, the output layer (the embedding when tied).
    let embedding = sum(&|p| *p == Place::Embedding);
    let layer = sum(&|p| *p == Place::Layer(0));
    let norm = sum(&|p| *p == Place::FinalNorm);
    let output = if model.tied_embeddings {
        embedding
    } else {
        sum(&|p| *p == Place::Output)
    };
    let l = model.num_layers;
    let item = |i: usize| match i {
        0 => embedding,
        i if (2..l + 2).contains(&i) => layer,
        i if i == l + 3 => norm,
        i if i == l + 4 => output,
        _ => 0,
    };
    partition(method, l, layout.pp.max(1), item)
        .iter()
        .map(|stage| stage_memory(model, tensors, layout, stage))
        .max_by_key(|m| (m.total, std::cmp::Reverse(m.stage)))
        .unwrap_or_else(|| stage_memory(model, tensors, layout, &Stage::whole(l)))
}

fn stage_memory(
    model: &ModelConfig,
    tensors: &[ParamTensor],
    layout: &Layout,
    stage: &Stage,
) -> RankMemory {
    let pp = stage.count;
    let sizes: Vec<usize> = tensors
        .iter()
        .filter(|t| holds(t, model, stage))
        .map(|t| t.numel_per_rank(layout.tp) as usize)
        .collect();
    let stage_params: u64 = sizes.iter().map(|&s| s as u64).sum();
    // neox-train's ZeRO cuts at parameter boundaries (dist::zero): the
    // fullest data-parallel rank owns the largest range.
    let owned = Partition::new(&sizes, layout.dp.max(1))
        .counts()
        .into_iter()
        .max()
        .unwrap_or(0) as u64;
    let p = layout.precision;
    let held = |from_stage: u8| {
        if layout.zero >= from_stage {
            owned
        } else {
            stage_params
        }
    };
    let bytes = p.state_bytes(layout.keeper);
    let params = held(3) * bytes.params;
    let grads = held(2) * bytes.grads;
    let onebit_errors = match layout.onebit && layout.dp > 1 {
        true => sizes
            .iter()
            .map(|&s| {
                let worker = padded_len(s, layout.dp);
                4 * (worker + worker / layout.dp) as u64
            })
            .sum(),
        false => 0,
    };
    let (optimizer, host_optimizer) = match layout.offload {
        true => (onebit_errors, held(1) * bytes.optimizer),
        false => (held(1) * bytes.optimizer + onebit_errors, 0),
    };
    let layers = stage.layers.len();
    let in_flight = if pp > 1 {
        (pp - stage.index).min(layout.grad_accum.max(1))
    } else {
        1
    };
    let act = Activations::new(model, layout);
    let head = if stage.head { act.head() } else { 0.0 };
    let full = in_flight as f64 * layers as f64 * act.layer() + head;
    let c = layout.checkpoint_num_layers.max(1);
    let checkpoints = layers.div_ceil(c);
    let checkpointed = in_flight as f64 * checkpoints as f64 * act.checkpoint()
        + c.min(layers) as f64 * act.layer()
        + head;
    let mut m = RankMemory {
        stage: stage.index,
        layers,
        stage_params,
        owned_params: held(1),
        params,
        grads,
        optimizer,
        onebit_errors,
        host_optimizer,
        activations_full: full.round() as u64,
        activations_checkpointed: checkpointed.round() as u64,
        in_flight,
        total: 0,
    };
    m.total = params + grads + optimizer + m.activations(layout);
    m
}

/// Korthikanti et al.'s activation counts for one micro batch, in bytes.
struct Activations {
    /// `s b h`.
    sbh: f64,
    /// `s b v`.
    sbv: f64,
    /// `5 a s / h`.
    attention: f64,
    tp: f64,
    /// Bytes per element over the paper's 2.
    scale: f64,
    partition: bool,
}

impl Activations {
    fn new(model: &ModelConfig, layout: &Layout) -> Self {
        let (s, b) = (model.seq_length as f64, layout.micro_batch as f64);
        let (h, a) = (model.hidden_size as f64, model.num_attention_heads as f64);
        Activations {
            sbh: s * b * h,
            sbv: s * b * model.vocab_size as f64,
            attention: 5.0 * a * s / h,
            tp: layout.tp.max(1) as f64,
            scale: layout.precision.activation_bytes() as f64 / 2.0,
            partition: layout.partition_activations,
        }
    }

    /// One transformer layer, tensor parallel without sequence parallelism:
    /// `s b h (10 + 24 / t + 5 a s / (h t))` (34 + 5as/h at t = 1).
    fn layer(&self) -> f64 {
        self.sbh * (10.0 + 24.0 / self.tp + self.attention / self.tp) * self.scale
    }

    /// One checkpoint, a layer's input `2 s b h`, cut over the
    /// tensor-parallel ranks with `partition_activations`.
    fn checkpoint(&self) -> f64 {
        let t = if self.partition { self.tp } else { 1.0 };
        2.0 * self.sbh * self.scale / t
    }

    /// The last stage's final norm and output layer inputs (`2 s b h` each)
    /// and the fp32 logits of the cross entropy (`4 s b v / t`).
    fn head(&self) -> f64 {
        4.0 * self.sbh * self.scale + 4.0 * self.sbv / self.tp
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::PosEmb;
    use crate::plan::params::tensors;

    pub(crate) fn model(layers: usize, h: usize, heads: usize, s: usize, v: usize) -> ModelConfig {
        ModelConfig {
            num_layers: layers,
            hidden_size: h,
            num_attention_heads: heads,
            seq_length: s,
            max_position_embeddings: s,
            vocab_size: v,
            pos_emb: PosEmb::Rotary,
            tied_embeddings: false,
            intermediate_size: 4 * h,
            ..ModelConfig::default()
        }
    }

    pub(crate) fn layout() -> Layout {
        Layout {
            pp: 1,
            dp: 1,
            tp: 1,
            zero: 0,
            offload: false,
            onebit: false,
            precision: Precision::Fp16,
            keeper: Keeper::DeepSpeed,
            checkpoint_activations: false,
            checkpoint_num_layers: 1,
            partition_activations: false,
            micro_batch: 1,
            grad_accum: 1,
        }
    }

    #[test]
    fn zero_stages_partition_as_deepspeed_does() {
        let m = model(4, 64, 4, 32, 128);
        let t = tensors(&m);
        let all: u64 = t.iter().map(ParamTensor::numel).sum();
        let at = |zero, dp| {
            per_rank(
                &m,
                &t,
                &Layout {
                    zero,
                    dp,
                    ..layout()
                },
            )
        };
        let plain = at(0, 4);
        assert_eq!(
            (plain.params, plain.grads, plain.optimizer),
            (2 * all, 2 * all, 12 * all)
        );
        let (one, two, three) = (at(1, 4), at(2, 4), at(3, 4));
        let owned = one.owned_params;
        assert!(owned >= all / 4 && owned < all / 4 + all / 10, "{owned}");
        assert_eq!(
            (one.params, one.grads, one.optimizer),
            (2 * all, 2 * all, 12 * owned)
        );
        assert_eq!((two.params, two.grads), (2 * all, 2 * owned));
        assert_eq!((three.params, three.grads), (2 * owned, 2 * owned));
        // One data-parallel rank: ZeRO changes nothing.
        assert_eq!(at(3, 1).total, at(0, 1).total);
        // neox-train keeps f32 weights and gradients and a half copy; ZeRO 1
        // partitions the Adam moments only.
        let ours = per_rank(
            &m,
            &t,
            &Layout {
                zero: 1,
                dp: 4,
                keeper: Keeper::NeoxTrain,
                ..layout()
            },
        );
        assert_eq!(
            (ours.params, ours.grads, ours.optimizer),
            (6 * all, 4 * all, 8 * owned)
        );
    }

    #[test]
    fn activations_follow_korthikanti() {
        // s 2048, b 1, h 4096, a 32, L 2: sbh (34 + 5as/h) per layer at t = 1.
        let m = model(2, 4096, 32, 2048, 64);
        let t = tensors(&m);
        let sbh = 2048.0 * 4096.0;
        let per_layer = sbh * (34.0 + 5.0 * 32.0 * 2048.0 / 4096.0);
        let head = 4.0 * sbh + 4.0 * 2048.0 * 64.0;
        let r = per_rank(&m, &t, &layout());
        assert_eq!(r.activations_full, (2.0 * per_layer + head) as u64);
        // Checkpointing: 2 layer inputs + one layer recomputed.
        assert_eq!(
            r.activations_checkpointed,
            (2.0 * 2.0 * sbh + per_layer + head) as u64
        );
        // Tensor parallel: sbh (10 + 24/t + 5as/(ht)).
        let tp = per_rank(&m, &t, &Layout { tp: 4, ..layout() });
        let per_layer_tp = sbh * (10.0 + 6.0 + 5.0 * 32.0 * 2048.0 / 4096.0 / 4.0);
        let head_tp = 4.0 * sbh + 2048.0 * 64.0;
        assert_eq!(tp.activations_full, (2.0 * per_layer_tp + head_tp) as u64);
        // fp32 doubles the paper's two-byte figures.
        let fp32 = per_rank(
            &m,
            &t,
            &Layout {
                precision: Precision::Fp32,
                ..layout()
            },
        );
        assert_eq!(
            fp32.activations_full,
            (4.0 * per_layer + 8.0 * sbh + 4.0 * 2048.0 * 64.0) as u64
        );
    }

    #[test]
    fn pipeline_stages_hold_their_layers_and_in_flight_micro_batches() {
        let m = model(8, 64, 4, 32, 1000);
        let t = tensors(&m);
        let whole = per_rank(&m, &t, &layout());
        let piped = Layout {
            pp: 4,
            grad_accum: 8,
            ..layout()
        };
        let stages = partition(&PartitionMethod::gpt_neox_default(), 8, 4, |_| 0);
        let first = stage_memory(&m, &t, &piped, &stages[0]);
        let last = stage_memory(&m, &t, &piped, &stages[3]);
        assert_eq!((first.in_flight, last.in_flight), (4, 1));
        // DeepSpeed's balanced cut of GPT-NeoX's items: every layer once.
        assert_eq!(stages.iter().map(|s| s.layers.len()).sum::<usize>(), 8);
        assert_eq!(first.layers, stages[0].layers.len());
        let layer: u64 = t
            .iter()
            .filter(|t| t.place == Place::Layer(0))
            .map(ParamTensor::numel)
            .sum();
        let layers = |s: usize| stages[s].layers.len() as u64;
        assert_eq!(first.stage_params, layers(0) * layer + 1000 * 64);
        assert_eq!(last.stage_params, layers(3) * layer + 2 * 64 + 1000 * 64);
        assert!(per_rank(&m, &t, &piped).total < whole.total);
        // Cut uniformly, GPT-NeoX's 13 items give the first stage the embedding
        // and 2 layers, the last only the norm and the output layer.
        let uniform = partition(&PartitionMethod::Uniform, 8, 4, |_| 0);
        assert_eq!(uniform[0].layers, 0..2);
        assert_eq!(uniform[2].layers, 5..8);
        assert!(uniform[3].layers.is_empty() && uniform[3].head);
        // The first stage holds 4 micro batches of its layers.
        let a = Activations::new(&m, &piped);
        assert_eq!(
            first.activations_full,
            (4.0 * layers(0) as f64 * a.layer()).round() as u64
        );
    }
}
