//! Causal self-attention with GPT-NeoX's fused `query_key_value`. With one
//! key/value head per head its output features are laid out per head as
//! `[q, k, v]` (`3 x head_dim` each); with fewer key/value heads (grouped- or
//! multi-query attention) as `[all q | all k | all v]`, and each key/value
//! head serves `heads / kv_heads` consecutive query heads (GPT-NeoX's
//! `gqa_project` and `repeat_interleave`).
//! The scores are masked and soft-maxed in f32 whatever the input's type
//! (GPT-NeoX's `attention_softmax_in_fp32`; its fused kernels accumulate in
//! f32 too).

use burn::module::Module;
use burn::nn::{Dropout, Linear};
use burn::tensor::{Bool, DType, FloatDType, Tensor, activation, backend::Backend};

use super::fused::linear;
use super::fused::softmax::masked_softmax;
use super::position::apply_rotary;
use super::sparse::BlockLayout;

/// What all layers share in one forward pass: the causal mask and position tables.
pub struct Context<B: Backend> {
    /// `[t, t]`, true where attention is forbidden (`j > i`).
    pub mask: Tensor<B, 2, Bool>,
    /// Rotary `cos`, `sin` tables `[t, rotary_dims]`.
    pub rotary: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
    /// ALiBi bias `[1, heads, t, t]`.
    pub alibi: Option<Tensor<B, 4>>,
}

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub query_key_value: Linear<B>,
    pub dense: Linear<B>,
    pub attention_dropout: Dropout,
    #[module(skip)]
    heads: usize,
    #[module(skip)]
    kv_heads: usize,
    /// A sparse layer's block layout (see [`super::sparse`]); `None`: dense.
    #[module(skip)]
    layout: Option<BlockLayout>,
}

/// `[t, t]`, true where attention is forbidden: keys after the query and, with
/// a sliding window `w`, keys more than `w` before it (GPT-NeoX's
/// `get_attn_mask`: `triu(tril(ones), -w)`).
pub fn causal_mask<B: Backend>(
    t: usize,
    sliding_window_width: Option<usize>,
    device: &B::Device,
) -> Tensor<B, 2, Bool> {
    let future = Tensor::<B, 2, Bool>::tril_mask([t, t], 0, device);
    match sliding_window_width {
        Some(w) if w < t => {
            // True where `j < i - w`.
            let past = Tensor::<B, 2, Bool>::triu_mask([t, t], -(w as i64), device);
            future.bool_or(past)
        }
        _ => future,
    }
}

impl<B: Backend> Attention<B> {
    pub fn new(
        query_key_value: Linear<B>,
        dense: Linear<B>,
        attention_dropout: Dropout,
        heads: usize,
        kv_heads: usize,
    ) -> Self {
        Attention {
            query_key_value,
            dense,
            attention_dropout,
            heads,
            kv_heads,
            layout: None,
        }
    }

    /// A sparse layer's block layout (`None`: dense).
    pub fn layout(&self) -> Option<&BlockLayout> {
        self.layout.as_ref()
    }

    /// The same attention restricted to a sparse block layout (or dense, `None`).
    pub fn with_layout(self, layout: Option<BlockLayout>) -> Self {
        Attention { layout, ..self }
    }

    pub fn forward(&self, x: Tensor<B, 3>, ctx: &Context<B>) -> Tensor<B, 3> {
        self.forward_with(x, ctx, None)
    }

    /// [`Attention::forward`] for `t` new positions that follow the ones
    /// whose keys and values `kv` holds (`[b, kv_heads, T - t, d]`, `None`
    /// at the start); theirs are appended. `ctx` holds the new positions'
    /// rows over all `T` positions: mask `[t, T]`, rotary `[t, dims]`,
    /// ALiBi `[1, heads, t, T]` (see `super::cache`).
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        ctx: &Context<B>,
        kv: &mut Option<KvPair<B>>,
    ) -> Tensor<B, 3> {
        self.forward_with(x, ctx, Some(kv))
    }

    fn forward_with(
        &self,
        x: Tensor<B, 3>,
        ctx: &Context<B>,
        cache: Option<&mut Option<KvPair<B>>>,
    ) -> Tensor<B, 3> {
        let [b, t, hidden] = x.dims();
        // On `[b t, hidden]`: one matrix product (Burn's batched `linear`
        // sums `b` weight gradients).
        let qkv = linear::forward(&self.query_key_value, x.reshape([b * t, hidden]));
        let heads = split_heads(qkv, [b, t], self.heads, self.kv_heads, hidden / self.heads);
        let dropout = |x| self.attention_dropout.forward(x);
        let context = attend(heads, ctx, 0, self.layout.as_ref(), cache, dropout);
        linear::forward(&self.dense, context.reshape([b * t, hidden])).reshape([b, t, hidden])
    }
}

/// One layer's cached keys and values `[b, kv_heads, T, d]`.
pub type KvPair<B> = (Tensor<B, 4>, Tensor<B, 4>);

// The fused QKV output split into query, key and value heads (views, with
// one fused backward step on flex).
pub use super::fused::heads::split_heads;

/// Key/value heads `[b, kv, t, d]` repeated for the `h` query heads they
/// serve, `h / kv` consecutive ones each: `[b, h, t, d]`.
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, h: usize) -> Tensor<B, 4> {
    let [b, kv, t, d] = x.dims();
    if kv == h {
        return x;
    }
    x.unsqueeze_dim::<5>(2)
        .expand([b, kv, h / kv, t, d])
        .reshape([b, h, t, d])
}

/// Attention after the q/k/v projections, for the model's layer and for a
/// tensor-parallel rank's heads alike: queries `[b, h, t, d]`, keys and
/// values `[b, kv, t, d]` of `h` consecutive heads of the layer starting at
/// `first` (their ALiBi slopes), with these heads' part of a sparse layer's
/// block `layout`. Rotary embeddings, then (with a `cache`) the new keys
/// and values appended to the cached ones, the scaled scores masked (ALiBi
/// added to a dense layer's) and soft-maxed in f32 whatever the compute
/// type, `dropout` on the probabilities (on the context in a sparse layer:
/// GPT-NeoX's), the weighted sum of the values. Returns the context
/// `[b, t, h d]`.
pub fn attend<B: Backend>(
    [q, k, v]: [Tensor<B, 4>; 3],
    ctx: &Context<B>,
    first: usize,
    layout: Option<&BlockLayout>,
    cache: Option<&mut Option<KvPair<B>>>,
    dropout: impl Fn(Tensor<B, 4>) -> Tensor<B, 4>,
) -> Tensor<B, 3> {
    let [b, h, t, d] = q.dims();
    let dtype = v.dtype();
    let (mut q, mut k) = (q, k);
    if let Some((cos, sin)) = &ctx.rotary {
        let (cos, sin) = (cos.clone().cast(dtype), sin.clone().cast(dtype));
        q = apply_rotary(q, &cos, &sin);
        k = apply_rotary(k, &cos, &sin);
    }
    let (k, v) = match cache {
        Some(cache) => {
            let (k, v) = match cache.take() {
                Some((past_k, past_v)) => (
                    Tensor::cat(vec![past_k, k], 2),
                    Tensor::cat(vec![past_v, v], 2),
                ),
                None => (k, v),
            };
            *cache = Some((k.clone(), v.clone()));
            (k, v)
        }
        None => (k, v),
    };
    let total = k.dims()[2];
    let (k, v) = (repeat_kv(k, h), repeat_kv(v, h));
    let scores = q.matmul(k.swap_dims(2, 3));
    // f32 scores are divided in the softmax; half ones first, in their type.
    let scale = (d as f64).sqrt();
    let (scores, divisor) = if scores.dtype() == DType::F32 {
        (scores, scale)
    } else {
        ((scores / scale).cast(FloatDType::F32), 1.0)
    };
    let mut mask = ctx.mask.clone().unsqueeze::<3>();
    let mut bias = None;
    match layout {
        // GPT-NeoX's sparse layers: no ALiBi, dropout on the context.
        Some(layout) => {
            let mut hidden_blocks = layout.forbidden::<B>(total, &scores.device());
            if total > t {
                hidden_blocks = hidden_blocks.narrow(1, total - t, t);
            }
            mask = mask.expand([h, t, total]).bool_or(hidden_blocks);
        }
        None => {
            bias = ctx.alibi.as_ref().map(|alibi| {
                let alibi = if alibi.dims()[1] == h {
                    alibi.clone()
                } else {
                    alibi.clone().narrow(1, first, h)
                };
                alibi.reshape([h, t, total])
            });
        }
    }
    let plain = {
        let (mask, bias) = (mask.clone(), bias.clone());
        move |scores: Tensor<B, 4>| {
            let mut scores = if divisor == 1.0 {
                scores
            } else {
                scores / divisor
            };
            if let Some(bias) = bias {
                scores = scores + bias.unsqueeze();
            }
            let mask = mask.unsqueeze::<4>().expand([b, h, t, total]);
            activation::softmax(scores.mask_fill(mask, f32::MIN), 3)
        }
    };
    let probs = masked_softmax(scores, divisor, mask, bias, plain);
    let context = match layout {
        Some(_) => dropout(probs.cast(dtype).matmul(v)),
        None => dropout(probs).cast(dtype).matmul(v),
    };
    context.swap_dims(1, 2).reshape([b, t, h * d])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn sliding_window_keeps_the_token_and_w_before_it() {
        let mask = causal_mask::<Flex>(5, Some(2), &Default::default());
        let allowed: Vec<bool> = mask.bool_not().into_data().to_vec::<bool>().unwrap();
        let expected: Vec<bool> = (0..5)
            .flat_map(|i| (0..5).map(move |j| j <= i && i - j <= 2))
            .collect();
        assert_eq!(allowed, expected);
        // A window as wide as the sequence is plain causal attention.
        let wide = causal_mask::<Flex>(4, Some(4), &Default::default());
        let causal = causal_mask::<Flex>(4, None, &Default::default());
        assert_eq!(
            wide.into_data().to_vec::<bool>().unwrap(),
            causal.into_data().to_vec::<bool>().unwrap()
        );
    }
}
