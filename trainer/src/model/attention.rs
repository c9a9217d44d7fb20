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
use burn::tensor::{Bool, FloatDType, Tensor, activation, backend::Backend};

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

    /// Queries `[b, heads, t, d]`, keys and values `[b, kv_heads, t, d]`.
    fn project(&self, x: Tensor<B, 3>) -> [Tensor<B, 4>; 3] {
        let [b, t, hidden] = x.dims();
        let (h, kv, d) = (self.heads, self.kv_heads, hidden / self.heads);
        // On `[b t, hidden]`: one matrix product (Burn's batched `linear`
        // sums `b` weight gradients).
        let qkv = self
            .query_key_value
            .forward(x.reshape([b * t, hidden]))
            .reshape([b, t, (h + 2 * kv) * d]);
        if kv == h {
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

    /// Key/value heads `[b, kv, t, d]` repeated for their query heads `[b, heads, t, d]`.
    fn repeat_kv(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, kv, t, d] = x.dims();
        if kv == self.heads {
            return x;
        }
        let rep = self.heads / kv;
        x.unsqueeze_dim::<5>(2)
            .expand([b, kv, rep, t, d])
            .reshape([b, self.heads, t, d])
    }

    pub fn forward(&self, x: Tensor<B, 3>, ctx: &Context<B>) -> Tensor<B, 3> {
        let [b, t, hidden] = x.dims();
        let (h, d) = (self.heads, hidden / self.heads);
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
            // GPT-NeoX's sparse layers: no ALiBi, dropout on the context.
            Some(layout) => {
                let hidden_blocks = layout.forbidden::<B>(t, &scores.device());
                mask = mask.bool_or(hidden_blocks.unsqueeze::<4>().expand([b, h, t, t]));
                let probs = activation::softmax(scores.mask_fill(mask, f32::MIN), 3).cast(dtype);
                let context = self.attention_dropout.forward(probs.matmul(v));
                let context = context.swap_dims(1, 2).reshape([b, t, hidden]);
                return self.dense.forward(context);
            }
            None => {
                if let Some(alibi) = &ctx.alibi {
                    scores = scores + alibi.clone();
                }
            }
        }
        let scores = scores.mask_fill(mask, f32::MIN);
        let probs = self
            .attention_dropout
            .forward(activation::softmax(scores, 3))
            .cast(dtype);
        let context = probs.matmul(v).swap_dims(1, 2).reshape([b * t, hidden]);
        self.dense.forward(context).reshape([b, t, hidden])
    }
}

impl<B: Backend> Attention<B> {
    /// [`Attention::forward`] for `t` new positions that follow the ones
    /// whose keys and values `kv` holds (`[b, kv_heads, T - t, d]`, `None`
    /// at the start); theirs are appended. `ctx` holds the new positions'
    /// rows over all `T` positions: mask `[t, T]`, rotary `[t, dims]`,
    /// ALiBi `[1, heads, t, T]` (see `super::cache`).
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        ctx: &Context<B>,
        kv: &mut Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    ) -> Tensor<B, 3> {
        let [b, t, hidden] = x.dims();
        let (h, d) = (self.heads, hidden / self.heads);
        let [mut q, mut k, v] = self.project(x);
        if let Some((cos, sin)) = &ctx.rotary {
            q = apply_rotary(q, cos, sin);
            k = apply_rotary(k, cos, sin);
        }
        let (k, v) = match kv.take() {
            Some((past_k, past_v)) => (
                Tensor::cat(vec![past_k, k], 2),
                Tensor::cat(vec![past_v, v], 2),
            ),
            None => (k, v),
        };
        *kv = Some((k.clone(), v.clone()));
        let total = k.dims()[2];
        let (k, v) = (self.repeat_kv(k), self.repeat_kv(v));
        let mut scores = q.matmul(k.swap_dims(2, 3)) / (d as f64).sqrt();
        let mut mask = ctx.mask.clone().unsqueeze::<4>().expand([b, h, t, total]);
        match &self.layout {
            Some(layout) => {
                let hidden_blocks =
                    layout
                        .forbidden::<B>(total, &scores.device())
                        .narrow(1, total - t, t);
                mask = mask.bool_or(hidden_blocks.unsqueeze::<4>().expand([b, h, t, total]));
                let probs = activation::softmax(scores.mask_fill(mask, f32::MIN), 3);
                let context = self.attention_dropout.forward(probs.matmul(v));
                let context = context.swap_dims(1, 2).reshape([b, t, hidden]);
                return self.dense.forward(context);
            }
            None => {
                if let Some(alibi) = &ctx.alibi {
                    scores = scores + alibi.clone();
                }
            }
        }
        let scores = scores.mask_fill(mask, f32::MIN);
        let probs = self
            .attention_dropout
            .forward(activation::softmax(scores, 3));
        let context = probs.matmul(v).swap_dims(1, 2).reshape([b, t, hidden]);
        self.dense.forward(context)
    }
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
