//! One rank's share of a GPT-NeoX model: the parts of its pipeline stage
//! (embedding, transformer layers, final norm, output layer), each split over
//! its tensor-parallel group. With one stage and one tensor-parallel rank it
//! computes exactly what [`GptNeox`] computes, with the same operations.
//!
//! A tied output layer on a last stage that is not also the first holds a
//! copy of the embedding (DeepSpeed's `TiedLayerSpec`): the pipeline sums the
//! two copies' gradients, so that they stay identical.

use burn::module::{Module, Param};
use burn::nn::{Dropout, Embedding, Linear};
use burn::tensor::{Int, Tensor, backend::Backend};

use super::pipeline_parallel::Stage;
use super::tensor_parallel::layers::{Shard, vocab_embed, vocab_rows};
use super::tensor_parallel::{
    SplitError, TpGroup, TpLayer, TpOps, check_divisible, vocab_parallel_cross_entropy,
};
use crate::model::attention::Context;
use crate::model::{GptNeox, ModelConfig, Norm, PosEmb, position};

/// What a stage takes in: tokens (the first stage) or the previous stage's hidden states.
pub enum StageInput<B: Backend> {
    Tokens(Tensor<B, 2, Int>),
    Hidden(Tensor<B, 3>),
}

/// This rank's share of a GPT-NeoX model. Field names follow [`GptNeox`]'s.
#[derive(Module, Debug)]
pub struct GptShard<B: Backend> {
    /// Rows `rank * v / tp ..` of the embedding: on the first stage, and on
    /// the last when the output layer is tied to it.
    pub embed_in: Option<Embedding<B>>,
    pub embed_pos: Option<Embedding<B>>,
    pub embed_dropout: Dropout,
    /// This stage's transformer layers.
    pub layers: Vec<TpLayer<B>>,
    pub final_layer_norm: Option<Norm<B>>,
    /// Columns `rank * v / tp ..` of an untied output layer (last stage).
    pub embed_out: Option<Linear<B>>,
    #[module(skip)]
    pub config: ModelConfig,
    #[module(skip)]
    pub stage: Stage,
    #[module(skip)]
    shard: Shard,
    #[module(skip)]
    group: TpGroup,
}

impl<B: TpOps> GptShard<B> {
    /// Share `shard` of stage `stage` of `model`, computed with `group` (of
    /// `shard.size` ranks, or alone to only cut the weights).
    pub fn new(
        model: &GptNeox<B>,
        stage: Stage,
        shard: Shard,
        group: TpGroup,
    ) -> Result<Self, SplitError> {
        let config = model.config.clone();
        check_divisible(&config, shard.size)?;
        let tied_head = stage.head && config.tied_embeddings;
        let layers = model.layers[stage.layers.clone()]
            .iter()
            .map(|layer| TpLayer::split(layer, &config, shard))
            .collect();
        let embed_out = match (&model.embed_out, stage.head) {
            (Some(out), true) => Some(Linear {
                weight: Param::from_tensor(shard.cols(out.weight.val()).detach()),
                bias: None,
            }),
            _ => None,
        };
        Ok(GptShard {
            embed_in: (stage.embed || tied_head).then(|| vocab_rows(&model.embed_in, shard)),
            embed_pos: model.embed_pos.clone().filter(|_| stage.embed),
            embed_dropout: model.embed_dropout.clone(),
            layers,
            final_layer_norm: stage.norm.then(|| model.final_layer_norm.clone()),
            embed_out,
            config,
            stage,
            shard,
            group,
        })
    }

    /// The whole model, split over `group` (one pipeline stage).
    pub fn split(model: &GptNeox<B>, group: TpGroup) -> Result<Self, SplitError> {
        let shard = Shard {
            rank: group.rank(),
            size: group.size(),
        };
        Self::new(model, Stage::whole(model.layers.len()), shard, group)
    }

    pub fn group(&self) -> &TpGroup {
        &self.group
    }

    /// Which tensor-parallel share this is.
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// This stage's output: hidden states `[b, t, h]`, or on the last stage
    /// this rank's logits `[b, t, v / tp]` (vocabulary `rank * v / tp ..`).
    pub fn forward_stage(&self, input: StageInput<B>) -> Tensor<B, 3> {
        let x = self.input(input);
        let [_, t, _] = x.dims();
        let ctx = self.context(t, &x.device());
        let x = self.run_layers(0..self.layers.len(), x, &ctx);
        self.finish(x)
    }

    /// The first layer's input: the embedding of tokens `[b, t]` (the first
    /// stage), or the previous stage's hidden states.
    pub fn input(&self, input: StageInput<B>) -> Tensor<B, 3> {
        match input {
            StageInput::Hidden(x) => x,
            StageInput::Tokens(tokens) => self.embed(tokens),
        }
    }

    /// What this stage's layers share over `t` tokens: mask and position tables.
    pub fn context(&self, t: usize, device: &B::Device) -> Context<B> {
        let c = &self.config;
        Context {
            mask: crate::model::attention::causal_mask(t, c.sliding_window_width, device),
            rotary: (c.pos_emb == PosEmb::Rotary && !self.layers.is_empty())
                .then(|| position::rotary_tables(t, c.rotary_dims(), c.rotary_emb_base, device)),
            alibi: (c.pos_emb == PosEmb::Alibi && !self.layers.is_empty())
                .then(|| position::alibi_bias(c.num_attention_heads, t, device)),
        }
    }

    /// This stage's layers `range` (indices into [`GptShard::layers`]) on `x`.
    pub fn run_layers(
        &self,
        range: std::ops::Range<usize>,
        x: Tensor<B, 3>,
        ctx: &Context<B>,
    ) -> Tensor<B, 3> {
        self.layers[range]
            .iter()
            .fold(x, |x, layer| layer.forward(x, ctx, &self.group))
    }

    /// The stage's output from its last layer's output: the final norm when
    /// the stage holds it, then on the last stage this rank's logits.
    pub fn finish(&self, mut x: Tensor<B, 3>) -> Tensor<B, 3> {
        if let Some(norm) = &self.final_layer_norm {
            x = norm.forward(x);
        }
        if !self.stage.head {
            return x;
        }
        // On `[b t, hidden]`, as the unsplit model computes it.
        let [b, t, hidden] = x.dims();
        let x = B::copy_to_tp(x, &self.group).reshape([b * t, hidden]);
        let logits = match (&self.embed_out, &self.embed_in) {
            (Some(out), _) => out.forward(x),
            (None, Some(embed)) => x.matmul(embed.weight.val().transpose()),
            (None, None) => x,
        };
        let v = logits.dims()[1];
        logits.reshape([b, t, v])
    }

    /// The embedding of tokens `[b, t]` (the first stage).
    fn embed(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let c = &self.config;
        let [_, t] = tokens.dims();
        let device = tokens.device();
        let Some(embed_in) = &self.embed_in else {
            // Only a first stage is given tokens, and it holds the embedding.
            return Tensor::zeros([tokens.dims()[0], t, c.hidden_size], &device);
        };
        let mut x = vocab_embed(embed_in, tokens, self.shard, &self.group);
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
                let table = position::sinusoidal_table::<B>(t, c.hidden_size, &device);
                let dtype = x.dtype();
                x = x + table.cast(dtype).unsqueeze();
            }
            PosEmb::Rotary | PosEmb::Alibi | PosEmb::None => {}
        }
        self.embed_dropout.forward(x)
    }

    /// This share without its layers: what the embedding and the stage's
    /// end need (for recomputing pieces of a pass).
    pub fn without_layers(&self) -> Self {
        let mut shell = self.clone();
        shell.layers = Vec::new();
        shell
    }

    /// This rank's logits `[b, t, v / tp]` for tokens `[b, t]` (one stage only).
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward_stage(StageInput::Tokens(tokens))
    }

    /// Mean next-token cross entropy of this (last) stage's logits over the
    /// whole vocabulary.
    pub fn loss_of(&self, logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        vocab_parallel_cross_entropy(logits, targets, &self.group)
    }

    /// Mean next-token cross entropy (one stage only).
    pub fn loss(&self, inputs: Tensor<B, 2, Int>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        self.loss_of(self.forward(inputs), targets)
    }
}
