//! Incremental decoding: each layer's keys and values of the tokens seen so
//! far, so that a new token costs one position instead of the whole prefix.
//! [`GptNeox::forward_cached`] computes what [`GptNeox::forward`] computes
//! for the positions after the cached ones (the layers' `forward_cached`).

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use super::GptNeox;
use super::attention::Context;
use super::position::{self, PosEmb};

/// Keys and values `[b, kv_heads, T, head_dim]` of every layer, for `T` positions.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for a model of `layers` layers.
    pub fn new(layers: usize) -> Self {
        KvCache {
            layers: vec![None; layers],
            len: 0,
        }
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<B: Backend> GptNeox<B> {
    /// An empty cache for this model.
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.layers.len())
    }

    /// Logits `[b, t, vocab]` for `tokens` `[b, t]` at the positions after
    /// those in `cache`, whose keys and values are appended to it.
    pub fn forward_cached(
        &self,
        tokens: Tensor<B, 2, Int>,
        cache: &mut KvCache<B>,
    ) -> Tensor<B, 3> {
        let [_, t] = tokens.dims();
        let device = tokens.device();
        let c = &self.config;
        let start = cache.len;
        let total = start + t;
        let mut x = self.embed_in.forward(tokens);
        match c.pos_emb {
            PosEmb::Learned => {
                if let Some(pos) = &self.embed_pos {
                    let offset = (c.opt_pos_emb_offset + start) as i64;
                    let positions = Tensor::<B, 1, Int>::arange(offset..offset + t as i64, &device)
                        .unsqueeze::<2>();
                    x = x + pos.forward(positions);
                }
            }
            PosEmb::Sinusoidal => {
                let table = position::sinusoidal_table(total, c.hidden_size, &device);
                x = x + table.narrow(0, start, t).unsqueeze();
            }
            PosEmb::Rotary | PosEmb::Alibi | PosEmb::None => {}
        }
        let x = self.embed_dropout.forward(x);
        // Row i (position start + i) may not see keys after it, nor, with a
        // sliding window w, keys more than w before it.
        let window = c.sliding_window_width;
        let mask: Vec<bool> = (0..t)
            .flat_map(|i| {
                let p = start + i;
                (0..total).map(move |j| j > p || window.is_some_and(|w| j + w < p))
            })
            .collect();
        let ctx = Context {
            mask: Tensor::from_data(TensorData::new(mask, [t, total]), &device),
            rotary: (c.pos_emb == PosEmb::Rotary)
                .then(|| rotary_rows(start, t, c.rotary_dims(), c.rotary_emb_base, &device)),
            alibi: (c.pos_emb == PosEmb::Alibi)
                .then(|| alibi_rows(c.num_attention_heads, start, t, &device)),
        };
        let mut x = x;
        for (layer, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = layer.forward_cached(x, &ctx, kv);
        }
        cache.len = total;
        let x = self.final_layer_norm.forward(x);
        match &self.embed_out {
            Some(out) => out.forward(x),
            None => x.matmul(self.embed_in.weight.val().transpose().unsqueeze()),
        }
    }
}

/// Rows `start..start + t` of [`position::rotary_tables`], computed alone.
fn rotary_rows<B: Backend>(
    start: usize,
    t: usize,
    dims: usize,
    base: f64,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let half = dims / 2;
    let inv_freq: Vec<f64> = (0..half)
        .map(|i| 1.0 / base.powf((2 * i) as f64 / dims as f64))
        .collect();
    let mut cos = Vec::with_capacity(t * dims);
    let mut sin = Vec::with_capacity(t * dims);
    for p in start..start + t {
        for j in 0..dims {
            let angle = p as f64 * inv_freq[j % half];
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (
        Tensor::from_data(TensorData::new(cos, [t, dims]), device),
        Tensor::from_data(TensorData::new(sin, [t, dims]), device),
    )
}

/// Rows `start..start + t` of [`position::alibi_bias`] over `start + t` keys.
fn alibi_rows<B: Backend>(
    heads: usize,
    start: usize,
    t: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let total = start + t;
    let mut bias = Vec::with_capacity(heads * t * total);
    for slope in position::alibi_slopes(heads) {
        for i in start..total {
            for j in 0..total {
                bias.push((-slope * i.saturating_sub(j) as f64) as f32);
            }
        }
    }
    Tensor::from_data(TensorData::new(bias, [1, heads, t, total]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttentionKind, ModelConfig};
    use burn::backend::Flex;

    fn config(pos_emb: PosEmb, parallel: bool, tied: bool) -> ModelConfig {
        ModelConfig {
            num_layers: 2,
            hidden_size: 32,
            num_attention_heads: 4,
            seq_length: 16,
            max_position_embeddings: 16,
            vocab_size: 40,
            pos_emb,
            rotary_pct: 0.5,
            gpt_j_residual: parallel,
            tied_embeddings: tied,
            intermediate_size: 64,
            init_method_std: 0.3,
            ..ModelConfig::default()
        }
    }

    /// A prompt then one token at a time gives the logits of the whole
    /// sequence at once, for every kind of position, residual and attention.
    #[test]
    fn cached_steps_match_the_full_forward() {
        let device = Default::default();
        let ids: Vec<i64> = vec![3, 17, 5, 39, 0, 22, 8, 8, 31, 2, 14, 9, 1];
        let n = ids.len();
        let cases = [
            config(PosEmb::Rotary, true, false),
            config(PosEmb::Rotary, false, true),
            config(PosEmb::Learned, false, false),
            config(PosEmb::Sinusoidal, true, true),
            config(PosEmb::Alibi, false, false),
            config(PosEmb::None, true, false),
            ModelConfig {
                num_kv_heads: Some(2),
                sliding_window_width: Some(3),
                ..config(PosEmb::Rotary, false, false)
            },
            ModelConfig {
                num_kv_heads: Some(1),
                gpt_j_tied: true,
                ..config(PosEmb::Alibi, true, false)
            },
            ModelConfig {
                max_position_embeddings: 18,
                opt_pos_emb_offset: 2,
                ..config(PosEmb::Learned, false, true)
            },
            ModelConfig {
                attention_config: vec![AttentionKind::Local, AttentionKind::Global],
                sparsity_config: crate::model::SparsityConfig {
                    block: Some(2),
                    num_sliding_window_blocks: Some(3),
                    ..Default::default()
                },
                ..config(PosEmb::Rotary, false, false)
            },
        ];
        for config in cases {
            let model = config.init::<Flex>(&device);
            let all =
                Tensor::<Flex, 2, Int>::from_data(TensorData::new(ids.clone(), [1, n]), &device);
            let full = model
                .forward(all.clone())
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            let mut cache = model.new_cache();
            let mut got = model
                .forward_cached(all.clone().narrow(1, 0, 4), &mut cache)
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            for i in 4..n {
                let step = model.forward_cached(all.clone().narrow(1, i, 1), &mut cache);
                got.extend(step.into_data().to_vec::<f32>().unwrap());
            }
            assert_eq!(cache.len(), n);
            let diff = full
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(diff < 1e-5, "{config:?}: {diff}");
        }
    }
}
