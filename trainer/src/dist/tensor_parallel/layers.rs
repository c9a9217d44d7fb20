//! The split layers of a tensor-parallel GPT-NeoX, Megatron's: a
//! column-parallel linear (output features split, its input copied to the
//! group) and a row-parallel one (input features split, outputs summed, bias
//! added once after); attention split by heads; the MLP split column then row;
//! the embedding split over the vocabulary. Each holds this rank's share of
//! the unsplit layer's weights, cut from it by [`Shard`].

use burn::module::{Module, Param};
use burn::nn::{Dropout, Embedding, Linear};
use burn::tensor::{Distribution, FloatDType, Int, Tensor, activation, backend::Backend, module};

use super::mappings::{TpGroup, TpOps};
use crate::model::attention::Context;
use crate::model::position::apply_rotary;
use crate::model::sparse::BlockLayout;
use crate::model::{Activation, Attention, Mlp, ModelConfig};

/// This rank's share of a dimension of `n` split `size` ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub size: usize,
}

impl Shard {
    /// The start and length of this rank's part of `n` (a multiple of `size`).
    pub fn part(&self, n: usize) -> (usize, usize) {
        let len = n / self.size;
        (self.rank * len, len)
    }

    /// This rank's columns (output features) of a weight `[in, out]`, or of a bias.
    pub fn cols<B: Backend, const D: usize>(&self, t: Tensor<B, D>) -> Tensor<B, D> {
        let n = t.dims()[D - 1];
        let (start, len) = self.part(n);
        t.narrow(D - 1, start, len)
    }

    /// This rank's rows (input features) of a weight `[in, out]`.
    pub fn rows<B: Backend>(&self, t: Tensor<B, 2>) -> Tensor<B, 2> {
        let (start, len) = self.part(t.dims()[0]);
        t.narrow(0, start, len)
    }

    /// This rank's part of each of the `k` equal blocks of the last dimension
    /// (SwiGLU's `[x, gate]`), concatenated.
    pub fn blocks<B: Backend, const D: usize>(&self, t: Tensor<B, D>, k: usize) -> Tensor<B, D> {
        let block = t.dims()[D - 1] / k;
        self.segments(t, &vec![block; k])
    }

    /// This rank's part of each segment of the last dimension, the segments
    /// `sizes` long one after another (grouped-query attention's
    /// `[queries | keys | values]`), concatenated.
    pub fn segments<B: Backend, const D: usize>(
        &self,
        t: Tensor<B, D>,
        sizes: &[usize],
    ) -> Tensor<B, D> {
        let mut start = 0;
        let parts = sizes
            .iter()
            .map(|&len| {
                let part = self.cols(t.clone().narrow(D - 1, start, len));
                start += len;
                part
            })
            .collect();
        Tensor::cat(parts, D - 1)
    }
}

/// A fresh parameter from a (detached) slice of another.
fn param<B: Backend, const D: usize>(t: Tensor<B, D>) -> Param<Tensor<B, D>> {
    Param::from_tensor(t.detach())
}

/// A linear layer keeping this rank's part of each segment (`sizes`) of
/// its output features.
fn column_linear<B: Backend>(linear: &Linear<B>, shard: Shard, sizes: &[usize]) -> Linear<B> {
    Linear {
        weight: param(shard.segments(linear.weight.val(), sizes)),
        bias: linear
            .bias
            .as_ref()
            .map(|b| param(shard.segments(b.val(), sizes))),
    }
}

/// A linear layer keeping this rank's input features, and the whole bias.
fn row_linear<B: Backend>(linear: &Linear<B>, shard: Shard) -> Linear<B> {
    Linear {
        weight: param(shard.rows(linear.weight.val())),
        bias: linear.bias.as_ref().map(|b| param(b.val())),
    }
}

/// `x W` for a row-parallel `linear`: partial products summed over the
/// group, then the bias.
fn row_forward<B: TpOps, const D: usize>(
    linear: &Linear<B>,
    x: Tensor<B, D>,
    group: &TpGroup,
) -> Tensor<B, D> {
    if group.size() == 1 {
        return linear.forward(x);
    }
    let y = B::reduce_from_tp(module::linear(x, linear.weight.val(), None), group);
    match &linear.bias {
        Some(b) => y + b.val().unsqueeze(),
        None => y,
    }
}

/// Self-attention over this rank's heads: GPT-NeoX's fused QKV is head-major
/// (`[heads, 3, head_dim]`), so whole heads are a contiguous column range;
/// with fewer key/value heads (`[all q | all k | all v]`) each rank keeps its
/// queries' part and its key/value heads' parts, `[q | k | v]`, as a rank of
/// GPT-NeoX holds them (which needs `num_kv_heads` divisible by the ranks:
/// GPT-NeoX does not copy key/value heads across ranks). A sparse layer keeps
/// its heads' part of the unsplit layer's block layout (DeepSpeed instead
/// draws one for a rank's number of heads and gives every rank rank 0's: the
/// same thing unless `different_layout_per_head`).
#[derive(Module, Debug)]
pub struct TpAttention<B: Backend> {
    pub query_key_value: Linear<B>,
    pub dense: Linear<B>,
    pub attention_dropout: Dropout,
    /// Heads of the unsplit layer.
    #[module(skip)]
    heads: usize,
    /// Key/value heads of the unsplit layer.
    #[module(skip)]
    kv_heads: usize,
    /// This rank's heads of a sparse layer's layout (`None`: dense).
    #[module(skip)]
    layout: Option<BlockLayout>,
    #[module(skip)]
    shard: Shard,
}

impl<B: TpOps> TpAttention<B> {
    pub fn split(attention: &Attention<B>, config: &ModelConfig, shard: Shard) -> Self {
        let (heads, kv_heads) = (config.num_attention_heads, config.kv_heads());
        let d = config.head_dim();
        let sizes = if kv_heads == heads {
            vec![config.qkv_size()]
        } else {
            vec![heads * d, kv_heads * d, kv_heads * d]
        };
        let (first, h) = shard.part(heads);
        TpAttention {
            query_key_value: column_linear(&attention.query_key_value, shard, &sizes),
            dense: row_linear(&attention.dense, shard),
            attention_dropout: attention.attention_dropout.clone(),
            heads,
            kv_heads,
            layout: attention.layout().map(|l| l.select_heads(first, h)),
            shard,
        }
    }

    /// Queries `[b, h, t, d]`, keys and values `[b, kv, t, d]` of this
    /// rank's `h` heads and `kv` key/value heads.
    fn project(&self, x: Tensor<B, 3>) -> [Tensor<B, 4>; 3] {
        let [b, t, hidden] = x.dims();
        let d = hidden / self.heads;
        let h = self.heads / self.shard.size;
        let kv = self.kv_heads / self.shard.size;
        // On `[b t, hidden]`, as the unsplit model computes it.
        let qkv = self
            .query_key_value
            .forward(x.reshape([b * t, hidden]))
            .reshape([b, t, (h + 2 * kv) * d]);
        if self.kv_heads == self.heads {
            let qkv = qkv.reshape([b, t, h, 3 * d]);
            let part = |i: usize| qkv.clone().narrow(3, i * d, d).swap_dims(1, 2);
            [part(0), part(1), part(2)]
        } else {
            let q = qkv.clone().narrow(2, 0, h * d).reshape([b, t, h, d]);
            let k = qkv.clone().narrow(2, h * d, kv * d).reshape([b, t, kv, d]);
            let v = qkv.narrow(2, (h + kv) * d, kv * d).reshape([b, t, kv, d]);
            [q, k, v].map(|x| x.swap_dims(1, 2))
        }
    }

    /// Key/value heads `[b, kv, t, d]` repeated for their query heads: each
    /// serves `heads / kv_heads` consecutive ones, on every rank alike.
    fn repeat_kv(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, kv, t, d] = x.dims();
        let rep = self.heads / self.kv_heads;
        if rep == 1 {
            return x;
        }
        x.unsqueeze_dim::<5>(2)
            .expand([b, kv, rep, t, d])
            .reshape([b, kv * rep, t, d])
    }

    /// As the unsplit [`Attention::forward`], on this rank's heads: scores
    /// masked and soft-maxed in f32 whatever the compute type.
    pub fn forward(&self, x: Tensor<B, 3>, ctx: &Context<B>, group: &TpGroup) -> Tensor<B, 3> {
        let [b, t, hidden] = x.dims();
        let d = hidden / self.heads;
        let (first, h) = self.shard.part(self.heads);
        let x = B::copy_to_tp(x, group);
        let [mut q, mut k, v] = self.project(x);
        let dtype = v.dtype();
        if let Some((cos, sin)) = &ctx.rotary {
            let (cos, sin) = (cos.clone().cast(dtype), sin.clone().cast(dtype));
            q = apply_rotary(q, &cos, &sin);
            k = apply_rotary(k, &cos, &sin);
        }
        let (k, v) = (self.repeat_kv(k), self.repeat_kv(v));
        let mut scores = (q.matmul(k.swap_dims(2, 3)) / (d as f64).sqrt()).cast(FloatDType::F32);
        let mut mask = ctx.mask.clone().unsqueeze::<4>().expand([b, h, t, t]);
        match &self.layout {
            // GPT-NeoX's sparse layers: no ALiBi, dropout on the context
            // (its output layer on `[b, t, h d]`, as the unsplit one runs).
            Some(layout) => {
                let hidden_blocks = layout.forbidden::<B>(t, &scores.device());
                mask = mask.bool_or(hidden_blocks.unsqueeze::<4>().expand([b, h, t, t]));
                let probs = activation::softmax(scores.mask_fill(mask, f32::MIN), 3).cast(dtype);
                let context = self.dropout(probs.matmul(v), first);
                let context = context.swap_dims(1, 2).reshape([b, t, h * d]);
                row_forward(&self.dense, context, group)
            }
            None => {
                if let Some(alibi) = &ctx.alibi {
                    scores = scores + alibi.clone().narrow(1, first, h);
                }
                let probs = activation::softmax(scores.mask_fill(mask, f32::MIN), 3);
                let probs = self.dropout(probs, first).cast(dtype);
                let context = probs.matmul(v).swap_dims(1, 2).reshape([b * t, h * d]);
                row_forward(&self.dense, context, group).reshape([b, t, hidden])
            }
        }
    }

    /// Attention dropout, different on every rank as Megatron's model-parallel
    /// RNG makes it: the mask is drawn for all heads from the RNG the group
    /// shares (so that it stays in step) and this rank keeps its heads' part,
    /// which is also the mask the unsplit model draws.
    fn dropout(&self, x: Tensor<B, 4>, first: usize) -> Tensor<B, 4> {
        let p = self.attention_dropout.prob;
        if p == 0.0 || !B::ad_enabled(&x.device()) {
            return x;
        }
        let [b, h, t, e] = x.dims();
        let keep = Tensor::<B, 4>::random(
            [b, self.heads, t, e],
            Distribution::Bernoulli(1.0 - p),
            &x.device(),
        )
        .narrow(1, first, h)
        .cast(x.dtype());
        x * keep * (1.0 / (1.0 - p))
    }
}

/// Blocks of `dense_h_to_4h`'s outputs split each: SwiGLU's `[x, gate]`
/// halves are, so that every rank gates its own part.
pub fn mlp_blocks(activation: Activation) -> usize {
    if activation.is_gated() { 2 } else { 1 }
}

/// The feed-forward block split over its inner width.
#[derive(Module, Debug)]
pub struct TpMlp<B: Backend> {
    pub dense_h_to_4h: Linear<B>,
    pub dense_4h_to_h: Linear<B>,
    #[module(skip)]
    activation: Activation,
}

impl<B: TpOps> TpMlp<B> {
    pub fn split(mlp: &Mlp<B>, activation: Activation, shard: Shard) -> Self {
        TpMlp {
            dense_h_to_4h: column_linear(
                &mlp.dense_h_to_4h,
                shard,
                &vec![
                    mlp.dense_h_to_4h.weight.dims()[1] / mlp_blocks(activation);
                    mlp_blocks(activation)
                ],
            ),
            dense_4h_to_h: row_linear(&mlp.dense_4h_to_h, shard),
            activation,
        }
    }

    pub fn forward(&self, x: Tensor<B, 3>, group: &TpGroup) -> Tensor<B, 3> {
        let [b, t, hidden] = x.dims();
        let x = B::copy_to_tp(x, group).reshape([b * t, hidden]);
        let h = self.dense_h_to_4h.forward(x);
        row_forward(&self.dense_4h_to_h, self.activation.forward(h), group).reshape([b, t, hidden])
    }
}

/// This rank's rows of an embedding table `[vocab, hidden]`.
pub fn vocab_rows<B: Backend>(embedding: &Embedding<B>, shard: Shard) -> Embedding<B> {
    Embedding {
        weight: param(shard.rows(embedding.weight.val())),
    }
}

/// Vocab-parallel lookup: each rank looks up the tokens in its rows (zeros
/// for the others), and the group sums the parts.
pub fn vocab_embed<B: TpOps>(
    embedding: &Embedding<B>,
    tokens: Tensor<B, 2, Int>,
    shard: Shard,
    group: &TpGroup,
) -> Tensor<B, 3> {
    if group.size() == 1 {
        return embedding.forward(tokens);
    }
    let rows = embedding.weight.dims()[0];
    let start = (shard.rank * rows) as i64;
    let outside = tokens
        .clone()
        .lower_elem(start)
        .bool_or(tokens.clone().greater_equal_elem(start + rows as i64));
    let local = (tokens - start).mask_fill(outside.clone(), 0);
    let x = embedding.forward(local);
    let hidden = x.dims()[2];
    let [b, t] = outside.dims();
    let x = x.mask_fill(outside.unsqueeze_dim::<3>(2).expand([b, t, hidden]), 0.0);
    B::reduce_from_tp(x, group)
}
