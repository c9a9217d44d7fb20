//! Tensor parallelism (`model_parallel_size`), Megatron's: every rank of a
//! tensor-parallel group holds a share of each layer and the group computes
//! the layer together.
//!
//! [`TpGptNeox::split`] cuts an unsplit [`GptNeox`] (made from the run's seed,
//! so that TP=1 and TP=N start from the same weights) into this rank's share:
//! attention by heads, the MLP by its inner width, the embedding and output
//! layer by vocabulary (a tied output layer is the embedding's rows); norms and
//! position embeddings are replicated. The loss is the vocab-parallel cross
//! entropy ([`loss`]). The model file knows nothing of this: the split reads
//! its public fields and configuration.
//!
//! Dropout follows Megatron's seeding: the ranks of a group share one RNG
//! stream (same seed), so masks outside split regions agree; attention
//! dropout, inside them, keeps each rank's heads' part of one mask.

mod layers;
pub mod loss;
pub mod mappings;

use burn::module::{Module, Param};
use burn::nn::{Dropout, Embedding, Linear};
use burn::tensor::{Int, Tensor, backend::Backend};
use thiserror::Error;

pub use layers::{Shard, TpAttention, TpMlp};
pub use loss::vocab_parallel_cross_entropy;
pub use mappings::{TpGroup, TpOps};

use crate::model::attention::Context;
use crate::model::{GptNeox, ModelConfig, Norm, PosEmb, position};

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
    #[error("model_parallel_size {tp}: {what} is not implemented with tensor parallelism yet")]
    Unsupported { tp: usize, what: &'static str },
}

/// Checks that `config` splits evenly `tp` ways.
pub fn check_divisible(config: &ModelConfig, tp: usize) -> Result<(), SplitError> {
    for (what, used) in [
        ("num_kv_heads", config.num_kv_heads.is_some()),
        ("gpt_j_tied", config.gpt_j_residual && config.gpt_j_tied),
        (
            "sparse attention",
            config.attention_config.iter().any(|k| k.is_sparse()),
        ),
    ] {
        if used {
            return Err(SplitError::Unsupported { tp, what });
        }
    }
    let inner = config.intermediate_size;
    for (what, n) in [
        ("num_attention_heads", config.num_attention_heads),
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
}

impl<B: TpOps> TpLayer<B> {
    fn forward(&self, x: Tensor<B, 3>, ctx: &Context<B>, group: &TpGroup) -> Tensor<B, 3> {
        let attend = |x: Tensor<B, 3>| {
            let normed = self.input_layernorm.forward(x);
            self.hidden_dropout
                .forward(self.attention.forward(normed, ctx, group))
        };
        let feed = |x: Tensor<B, 3>| {
            let normed = self.post_attention_layernorm.forward(x);
            self.hidden_dropout.forward(self.mlp.forward(normed, group))
        };
        if self.parallel_residual {
            x.clone() + attend(x.clone()) + feed(x)
        } else {
            let x = x.clone() + attend(x);
            x.clone() + feed(x)
        }
    }
}

/// This rank's share of a GPT-NeoX model. Field names follow [`GptNeox`]'s.
#[derive(Module, Debug)]
pub struct TpGptNeox<B: Backend> {
    /// Rows `rank * v / tp ..` of the embedding.
    pub embed_in: Embedding<B>,
    pub embed_pos: Option<Embedding<B>>,
    pub embed_dropout: Dropout,
    pub layers: Vec<TpLayer<B>>,
    pub final_layer_norm: Norm<B>,
    /// Columns `rank * v / tp ..` of the output layer; `None` when tied.
    pub embed_out: Option<Linear<B>>,
    #[module(skip)]
    pub config: ModelConfig,
    #[module(skip)]
    group: TpGroup,
    #[module(skip)]
    shard: Shard,
}

impl<B: TpOps> TpGptNeox<B> {
    /// This rank's share of `model` in `group`.
    pub fn split(model: &GptNeox<B>, group: TpGroup) -> Result<Self, SplitError> {
        let shard = Shard {
            rank: group.rank(),
            size: group.size(),
        };
        Self::shard(model, shard, group)
    }

    /// Share `shard` of `model`, computed with `group` (of `shard.size` ranks,
    /// or alone to only cut the weights: converting checkpoints, tests).
    pub fn shard(model: &GptNeox<B>, shard: Shard, group: TpGroup) -> Result<Self, SplitError> {
        let config = model.config.clone();
        check_divisible(&config, shard.size)?;
        let layers = model
            .layers
            .iter()
            .map(|layer| TpLayer {
                input_layernorm: layer.input_layernorm.clone(),
                post_attention_layernorm: layer.post_attention_layernorm.clone(),
                attention: TpAttention::split(&layer.attention, config.num_attention_heads, shard),
                mlp: TpMlp::split(&layer.mlp, config.activation, shard),
                hidden_dropout: layer.hidden_dropout.clone(),
                parallel_residual: config.gpt_j_residual,
            })
            .collect();
        let embed_out = model.embed_out.as_ref().map(|out| Linear {
            weight: Param::from_tensor(shard.cols(out.weight.val()).detach()),
            bias: None,
        });
        Ok(TpGptNeox {
            embed_in: layers::vocab_rows(&model.embed_in, shard),
            embed_pos: model.embed_pos.clone(),
            embed_dropout: model.embed_dropout.clone(),
            layers,
            final_layer_norm: model.final_layer_norm.clone(),
            embed_out,
            config,
            group,
            shard,
        })
    }

    pub fn group(&self) -> &TpGroup {
        &self.group
    }

    /// Which share of the unsplit model this is.
    pub fn shard_of(&self) -> Shard {
        self.shard
    }

    /// This rank's logits `[b, t, v / tp]` (vocabulary `rank * v / tp ..`) for tokens `[b, t]`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, t] = tokens.dims();
        let device = tokens.device();
        let c = &self.config;
        let group = &self.group;
        let mut x = layers::vocab_embed(&self.embed_in, tokens, self.shard, group);
        match c.pos_emb {
            PosEmb::Learned => {
                if let Some(pos) = &self.embed_pos {
                    let offset = c.opt_pos_emb_offset as i64;
                    let positions = Tensor::<B, 1, Int>::arange(offset..offset + t as i64, &device)
                        .unsqueeze::<2>();
                    x = x + pos.forward(positions);
                }
            }
            PosEmb::Sinusoidal => {
                x = x + position::sinusoidal_table(t, c.hidden_size, &device).unsqueeze();
            }
            PosEmb::Rotary | PosEmb::Alibi | PosEmb::None => {}
        }
        let x = self.embed_dropout.forward(x);
        let ctx = Context {
            mask: crate::model::attention::causal_mask(t, c.sliding_window_width, &device),
            rotary: (c.pos_emb == PosEmb::Rotary)
                .then(|| position::rotary_tables(t, c.rotary_dims(), c.rotary_emb_base, &device)),
            alibi: (c.pos_emb == PosEmb::Alibi)
                .then(|| position::alibi_bias(c.num_attention_heads, t, &device)),
        };
        let x = self
            .layers
            .iter()
            .fold(x, |x, layer| layer.forward(x, &ctx, group));
        let x = B::copy_to_tp(self.final_layer_norm.forward(x), group);
        match &self.embed_out {
            Some(out) => out.forward(x),
            None => x.matmul(self.embed_in.weight.val().transpose().unsqueeze()),
        }
    }

    /// Mean next-token cross entropy over the whole vocabulary.
    pub fn loss(&self, inputs: Tensor<B, 2, Int>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        vocab_parallel_cross_entropy(self.forward(inputs), targets, &self.group)
    }
}
