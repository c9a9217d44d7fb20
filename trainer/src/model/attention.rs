//! Causal self-attention with GPT-NeoX's fused `query_key_value`: its output
//! features are laid out per head as `[q, k, v]` (`3 x head_dim` each).

use burn::module::Module;
use burn::nn::{Dropout, Linear};
use burn::tensor::{Bool, Tensor, activation, backend::Backend};

use super::position::apply_rotary;

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
}

impl<B: Backend> Attention<B> {
    pub fn new(
        query_key_value: Linear<B>,
        dense: Linear<B>,
        attention_dropout: Dropout,
        heads: usize,
    ) -> Self {
        Attention {
            query_key_value,
            dense,
            attention_dropout,
            heads,
        }
    }

    pub fn forward(&self, x: Tensor<B, 3>, ctx: &Context<B>) -> Tensor<B, 3> {
        let [b, t, hidden] = x.dims();
        let (h, d) = (self.heads, hidden / self.heads);
        let qkv = self.query_key_value.forward(x).reshape([b, t, h, 3 * d]);
        let part = |i: usize| qkv.clone().narrow(3, i * d, d).swap_dims(1, 2);
        let (mut q, mut k, v) = (part(0), part(1), part(2));
        if let Some((cos, sin)) = &ctx.rotary {
            q = apply_rotary(q, cos, sin);
            k = apply_rotary(k, cos, sin);
        }
        let mut scores = q.matmul(k.swap_dims(2, 3)) / (d as f64).sqrt();
        if let Some(alibi) = &ctx.alibi {
            scores = scores + alibi.clone();
        }
        let mask = ctx.mask.clone().unsqueeze::<4>().expand([b, h, t, t]);
        let scores = scores.mask_fill(mask, f32::MIN);
        let probs = self
            .attention_dropout
            .forward(activation::softmax(scores, 3));
        let context = probs.matmul(v).swap_dims(1, 2).reshape([b, t, hidden]);
        self.dense.forward(context)
    }
}
