//! Tensor parallelism (`model_parallel_size`), Megatron's: every rank of a
//! tensor-parallel group holds a share of each layer and the group computes
//! the layer together.
//!
//! [`TpLayer::split`] and the functions of [`layers`] cut the layers of an
//! unsplit [`crate::model::GptNeox`] (made from the run's seed, so that TP=1
//! and TP=N start from the same weights) into this rank's share: attention by
//! heads (with grouped queries, by query and key/value heads; a sparse
//! layer with its heads' part of the block layout), the MLP by its inner width, the embedding and output layer by
//! vocabulary (a tied output layer is the embedding's rows); norms and
//! position embeddings are replicated. The loss is the vocab-parallel cross
//! entropy ([`loss`]). The model file knows nothing of this: the split reads
//! its public fields and configuration. [`crate::dist::shard::GptShard`]
//! assembles a rank's layers into its share of the model.
//!
//! Dropout follows Megatron's seeding: the ranks of a group share one RNG
//! stream (same seed), so masks outside split regions agree; attention
//! dropout, inside them, keeps each rank's heads' part of one mask. This
//! holds for ranks that are processes: burn-flex's RNG is one mutex shared
//! by the whole process, so ranks on threads draw from one stream in
//! whatever order they interleave, and their masks differ; tests that run
//! ranks on threads set dropout to 0.

pub mod layers;
pub mod loss;
pub mod mappings;

use burn::module::Module;
use burn::nn::Dropout;
use burn::tensor::{Tensor, backend::Backend};
use thiserror::Error;

pub use layers::{Shard, TpAttention, TpMlp};
pub use loss::vocab_parallel_cross_entropy;
pub use mappings::{TpGroup, TpOps};

use crate::model::attention::Context;
use crate::model::{Layer, ModelConfig, Norm};

/// Why a model cannot be split `tp` ways.
#[derive(Debug, Error, PartialEq)]
pub enum SplitError {
    #[error(
        "model_parallel_size {tp}: {what} ({n}) is not a multiple of it; choose a size that divides it"
    )]
    Indivisible {
        tp: usize,
        what: &'static str,
        n: usize,
    },
}

/// Checks that `config` splits evenly `tp` ways: heads, key/value heads
/// (GPT-NeoX divides them too, copying none across ranks), vocabulary and
/// MLP width.
pub fn check_divisible(config: &ModelConfig, tp: usize) -> Result<(), SplitError> {
    let inner = config.intermediate_size;
    for (what, n) in [
        ("num_attention_heads", config.num_attention_heads),
        ("num_kv_heads", config.kv_heads()),
        ("the padded vocabulary", config.vocab_size),
        ("the MLP's inner width", inner),
    ] {
        if !n.is_multiple_of(tp) {
            return Err(SplitError::Indivisible { tp, what, n });
        }
    }
    Ok(())
}

/// One transformer layer, split.
#[derive(Module, Debug)]
pub struct TpLayer<B: Backend> {
    pub input_layernorm: Norm<B>,
    pub post_attention_layernorm: Norm<B>,
    pub attention: TpAttention<B>,
    pub mlp: TpMlp<B>,
    pub hidden_dropout: Dropout,
    #[module(skip)]
    parallel_residual: bool,
    /// `gpt_j_tied`: `input_layernorm` also feeds the MLP.
    #[module(skip)]
    tied_norms: bool,
}

impl<B: TpOps> TpLayer<B> {
    /// Share `shard` of `layer` of a model of `config`.
    pub fn split(layer: &Layer<B>, config: &ModelConfig, shard: Shard) -> Self {
        TpLayer {
            input_layernorm: layer.input_layernorm.clone(),
            post_attention_layernorm: layer.post_attention_layernorm.clone(),
            attention: TpAttention::split(&layer.attention, config, shard),
            mlp: TpMlp::split(&layer.mlp, config.activation, shard),
            hidden_dropout: layer.hidden_dropout.clone(),
            parallel_residual: config.gpt_j_residual,
            tied_norms: config.gpt_j_residual && config.gpt_j_tied,
        }
    }

    pub fn forward(&self, x: Tensor<B, 3>, ctx: &Context<B>, group: &TpGroup) -> Tensor<B, 3> {
        let attend = |x: Tensor<B, 3>| {
            let normed = self.input_layernorm.forward(x);
            self.hidden_dropout
                .forward(self.attention.forward(normed, ctx, group))
        };
        let feed = |x: Tensor<B, 3>| {
            let norm = if self.tied_norms {
                &self.input_layernorm
            } else {
                &self.post_attention_layernorm
            };
            self.hidden_dropout
                .forward(self.mlp.forward(norm.forward(x), group))
        };
        if self.parallel_residual {
            x.clone() + attend(x.clone()) + feed(x)
        } else {
            let x = x.clone() + attend(x);
            x.clone() + feed(x)
        }
    }
}
