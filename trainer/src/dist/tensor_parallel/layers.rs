//! The split layers of a tensor-parallel GPT-NeoX, Megatron's: a
//! column-parallel linear (output features split, its input copied to the
//! group) and a row-parallel one (input features split, outputs summed, bias
//! added once after); attention split by heads; the MLP split column then row;
//! the embedding split over the vocabulary. Each holds this rank's share of
//! the unsplit layer's weights, cut from it by [`Shard`].

use burn::module::{Module, Param};
use burn::nn::{Dropout, Embedding, Linear};
use burn::tensor::{Distribution, Int, Tensor, backend::Backend, module};

use super::mappings::{TpGroup, TpOps};
use crate::model::attention::{Context, attend, split_heads};
use crate::model::fused::linear;
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
fn row_forward<B: TpOps>(layer: &Linear<B>, x: Tensor<B, 2>, group: &TpGroup) -> Tensor<B, 2> {
    if group.size() == 1 {
        return linear::forward(layer, x);
    }
    let y = B::reduce_from_tp(module::linear(x, layer.weight.val(), None), group);
    match &layer.bias {
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

    /// As the unsplit [`Attention::forward`] (the same [`attend`]), on this
    /// rank's heads.
    pub fn forward(&self, x: Tensor<B, 3>, ctx: &Context<B>, group: &TpGroup) -> Tensor<B, 3> {
        let [b, t, hidden] = x.dims();
        let d = hidden / self.heads;
        let (first, h) = self.shard.part(self.heads);
        let kv = self.kv_heads / self.shard.size;
        let x = B::copy_to_tp(x, group);
        // On `[b t, hidden]`, as the unsplit model computes it.
        let qkv = linear::forward(&self.query_key_value, x.reshape([b * t, hidden]));
        let heads = split_heads(qkv, [b, t], h, kv, d);
        let dropout = |x| self.dropout(x, first);
        let context = attend(heads, ctx, first, self.layout.as_ref(), None, dropout);
        row_forward(&self.dense, context.reshape([b * t, h * d]), group).reshape([b, t, hidden])
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
        let h = linear::forward(&self.dense_h_to_4h, x);
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
