//! The GPT-NeoX model: embeddings, a stack of transformer layers (sequential or
//! parallel residual), a final norm and the output layer (tied or untied).

pub mod activations;
pub mod attention;
pub mod cache;
pub mod fused;
pub mod init;
pub mod loss;
pub mod mlp;
pub mod norm;
pub mod position;
pub mod sparse;

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding, Linear};
use burn::tensor::{Int, Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

pub use activations::Activation;
pub use attention::{Attention, Context};
pub use cache::KvCache;
pub use init::InitMethod;
pub use loss::{LossBackend, TrainBackend, cross_entropy};
pub use mlp::Mlp;
pub use norm::{Norm, NormKind};
pub use position::{PosEmb, TableCache};
pub use sparse::{AttentionKind, SparsityConfig};

/// The model's shape and options, in GPT-NeoX's terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub num_layers: usize,
    pub hidden_size: usize,
    pub num_attention_heads: usize,
    pub seq_length: usize,
    pub max_position_embeddings: usize,
    /// Padded vocabulary (rows of the embedding and output layers).
    pub vocab_size: usize,
    pub norm: NormKind,
    pub norm_eps: f64,
    pub pos_emb: PosEmb,
    pub rotary_pct: f64,
    pub rotary_emb_base: f64,
    pub gpt_j_residual: bool,
    pub tied_embeddings: bool,
    pub activation: Activation,
    /// Width of the MLP's inner layer (the input of `dense_4h_to_h`).
    pub intermediate_size: usize,
    pub init_method: InitMethod,
    pub output_layer_init_method: InitMethod,
    pub init_method_std: f64,
    pub hidden_dropout: f64,
    pub attention_dropout: f64,
    pub use_bias_in_attn_linear: bool,
    pub use_bias_in_mlp: bool,
    pub use_bias_in_norms: bool,
    /// Key/value heads (`num_kv_heads`): fewer than `num_attention_heads` for
    /// grouped-query attention, 1 for multi-query; `None` for one per head.
    #[serde(default)]
    pub num_kv_heads: Option<usize>,
    /// `sliding_window_width`: a token attends to itself and the `w` tokens before it.
    #[serde(default)]
    pub sliding_window_width: Option<usize>,
    /// `gpt_j_tied`: with `gpt_j_residual`, one norm (`input_layernorm`) feeds
    /// both attention and MLP.
    #[serde(default)]
    pub gpt_j_tied: bool,
    /// `opt_pos_emb_offset`: learned positions are looked up at `p + offset`.
    #[serde(default)]
    pub opt_pos_emb_offset: usize,
    /// Each layer's attention (`attention_config`, expanded); empty: all global.
    #[serde(default)]
    pub attention_config: Vec<AttentionKind>,
    /// The block-sparse layouts' options, for the sparse layers.
    #[serde(default)]
    pub sparsity_config: SparsityConfig,
}

/// A tiny model with GPT-NeoX's defaults for every option (for tests and
/// struct-update syntax).
impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            num_layers: 2,
            hidden_size: 64,
            num_attention_heads: 4,
            seq_length: 16,
            max_position_embeddings: 16,
            vocab_size: 128,
            norm: NormKind::LayerNorm,
            norm_eps: 1e-5,
            pos_emb: PosEmb::Learned,
            rotary_pct: 1.0,
            rotary_emb_base: 10000.0,
            gpt_j_residual: false,
            tied_embeddings: true,
            activation: Activation::Gelu,
            intermediate_size: 256,
            init_method: InitMethod::Normal,
            output_layer_init_method: InitMethod::ScaledNormal,
            init_method_std: 0.02,
            hidden_dropout: 0.0,
            attention_dropout: 0.0,
            use_bias_in_attn_linear: true,
            use_bias_in_mlp: true,
            use_bias_in_norms: true,
            num_kv_heads: None,
            sliding_window_width: None,
            gpt_j_tied: false,
            opt_pos_emb_offset: 0,
            attention_config: Vec::new(),
            sparsity_config: SparsityConfig::default(),
        }
    }
}

impl ModelConfig {
    /// GPT-NeoX's MLP width (`ParallelMLP`): `intermediate_size`, else
    /// `int(expansion_factor x hidden)`, else 4 x hidden; gated activations
    /// (geglu, reglu, swiglu, bilinear, glu) take `int(2/3)` of it and feed
    /// half to `dense_4h_to_h`. GPT-NeoX rounds the
    /// width of `dense_h_to_4h` up to a multiple of `2 x multiple_of` and the
    /// input of `dense_4h_to_h` up to `multiple_of`. Returns the latter, or why
    /// the two layers would not fit together (GPT-NeoX fails on a shape there).
    pub fn ffn_size(
        hidden: usize,
        activation: Activation,
        intermediate_size: Option<usize>,
        expansion_factor: Option<f64>,
        multiple_of: usize,
    ) -> Result<usize, String> {
        let ffn = match (intermediate_size, expansion_factor) {
            (Some(_), Some(_)) => {
                return Err("set `intermediate_size` or `expansion_factor`, not both".into());
            }
            (Some(size), None) => size,
            (None, Some(factor)) => (factor * hidden as f64) as usize,
            (None, None) => 4 * hidden,
        };
        let m = multiple_of.max(1);
        let gated = activation.is_gated();
        let (ffn, ffn_in) = if gated {
            (ffn * 2 / 3, ffn * 2 / 3 / 2)
        } else {
            (ffn, ffn)
        };
        let h_to_4h = ffn.div_ceil(2 * m) * 2 * m;
        let inner = ffn_in.div_ceil(m) * m;
        let expected = if gated { 2 * inner } else { inner };
        if inner == 0 {
            Err(format!("gives an MLP width of 0 for hidden size {hidden}"))
        } else if h_to_4h != expected {
            Err(format!(
                "gives dense_h_to_4h {h_to_4h} outputs but dense_4h_to_h {inner} inputs \
                 (GPT-NeoX rounds them to multiples of 2 x and 1 x mlp_multiple_of {m}): \
                 choose intermediate_size or mlp_multiple_of so that they fit"
            ))
        } else {
            Ok(inner)
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Key/value heads: `num_kv_heads`, else one per attention head.
    pub fn kv_heads(&self) -> usize {
        self.num_kv_heads.unwrap_or(self.num_attention_heads)
    }

    /// Outputs of `query_key_value`: queries for every head, keys and values
    /// for every key/value head.
    pub fn qkv_size(&self) -> usize {
        self.hidden_size + 2 * self.kv_heads() * self.head_dim()
    }

    /// Outputs of `dense_h_to_4h` (twice the MLP width when gated).
    pub fn h_to_4h_size(&self) -> usize {
        if self.activation.is_gated() {
            2 * self.intermediate_size
        } else {
            self.intermediate_size
        }
    }

    /// Dims of each head that rotary embeddings rotate.
    pub fn rotary_dims(&self) -> usize {
        (self.head_dim() as f64 * self.rotary_pct) as usize
    }

    /// Model FLOPs per trained token (forward + backward, no recomputation):
    /// `72 L h^2 (1 + s / 6h + V / 12 L h)` over `s` tokens per sample.
    pub fn train_flops_per_token(&self) -> f64 {
        let (l, h) = (self.num_layers as f64, self.hidden_size as f64);
        let (s, v) = (self.seq_length as f64, self.vocab_size as f64);
        72.0 * l * h * h * (1.0 + s / (6.0 * h) + v / (12.0 * l * h))
    }

    /// The attention of layer `i`.
    pub fn attention_kind(&self, i: usize) -> AttentionKind {
        self.attention_config
            .get(i)
            .copied()
            .unwrap_or(AttentionKind::Global)
    }

    /// The block layout of every layer (`None` for dense ones), or why
    /// DeepSpeed would refuse the sparse ones.
    pub fn sparse_layouts(&self) -> Result<Vec<Option<sparse::BlockLayout>>, String> {
        let kinds: Vec<AttentionKind> = (0..self.num_layers)
            .map(|i| self.attention_kind(i))
            .collect();
        sparse::layer_layouts(
            &kinds,
            &self.sparsity_config,
            self.num_attention_heads,
            self.seq_length,
        )
    }

    /// Builds a freshly initialised model (deterministic for a seeded backend).
    /// Sparse layers need a valid layout: a configuration read by
    /// [`crate::NeoxArgs`] has one; here an invalid one leaves the layer dense
    /// and says so in the log.
    pub fn init<B: Backend>(&self, device: &B::Device) -> GptNeox<B> {
        let (h, l) = (self.hidden_size, self.num_layers);
        let std = self.init_method.std(self.init_method_std, l, h);
        let out_std = self
            .output_layer_init_method
            .std(self.init_method_std, l, h);
        let norm = || Norm::new(self.norm, h, self.norm_eps, self.use_bias_in_norms, device);
        let ffn_out = self.h_to_4h_size();
        let layouts = self.sparse_layouts().unwrap_or_else(|why| {
            tracing::error!("sparse attention: {why}; its layers attend densely");
            vec![None; l]
        });
        let layers = layouts
            .into_iter()
            .map(|layout| Layer {
                input_layernorm: norm(),
                post_attention_layernorm: norm(),
                attention: Attention::new(
                    init::linear(
                        h,
                        self.qkv_size(),
                        std,
                        self.use_bias_in_attn_linear,
                        device,
                    ),
                    init::linear(h, h, out_std, self.use_bias_in_attn_linear, device),
                    DropoutConfig::new(self.attention_dropout).init(),
                    self.num_attention_heads,
                    self.kv_heads(),
                )
                .with_layout(layout),
                mlp: Mlp::new(
                    init::linear(h, ffn_out, std, self.use_bias_in_mlp, device),
                    init::linear(
                        self.intermediate_size,
                        h,
                        out_std,
                        self.use_bias_in_mlp,
                        device,
                    ),
                    self.activation,
                ),
                hidden_dropout: DropoutConfig::new(self.hidden_dropout).init(),
                parallel_residual: self.gpt_j_residual,
                tied_norms: self.gpt_j_residual && self.gpt_j_tied,
            })
            .collect();
        GptNeox {
            embed_in: init::embedding(self.vocab_size, h, std, device),
            embed_pos: (self.pos_emb == PosEmb::Learned)
                .then(|| init::embedding(self.max_position_embeddings, h, std, device)),
            embed_dropout: DropoutConfig::new(self.hidden_dropout).init(),
            layers,
            final_layer_norm: norm(),
            embed_out: (!self.tied_embeddings)
                .then(|| init::linear(h, self.vocab_size, std, false, device)),
            config: self.clone(),
            tables: TableCache::default(),
        }
    }
}

/// One transformer layer.
#[derive(Module, Debug)]
pub struct Layer<B: Backend> {
    pub input_layernorm: Norm<B>,
    pub post_attention_layernorm: Norm<B>,
    pub attention: Attention<B>,
    pub mlp: Mlp<B>,
    pub hidden_dropout: Dropout,
    #[module(skip)]
    parallel_residual: bool,
    /// `gpt_j_tied`: `input_layernorm` also feeds the MLP (GPT-NeoX keeps
    /// `post_attention_layernorm`, unused).
    #[module(skip)]
    tied_norms: bool,
}

impl<B: Backend> Layer<B> {
    pub fn forward(&self, x: Tensor<B, 3>, ctx: &Context<B>) -> Tensor<B, 3> {
        let attend = |x: Tensor<B, 3>| {
            let normed = self.input_layernorm.forward(x);
            self.hidden_dropout
                .forward(self.attention.forward(normed, ctx))
        };
        let feed = |x: Tensor<B, 3>| self.feed(x);
        // Each sum as `branch + x`: the same bits as `x + branch`, and flex
        // adds into the branch's fresh output instead of a new buffer.
        if self.parallel_residual {
            // GPT-J: x + attn(ln1(x)) + mlp(ln2(x)).
            attend(x.clone()) + x.clone() + feed(x)
        } else {
            let x = attend(x.clone()) + x;
            feed(x.clone()) + x
        }
    }

    /// The MLP branch: `mlp(ln2(x))` (`ln1` with tied GPT-J norms).
    fn feed(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let normed = if self.tied_norms {
            self.input_layernorm.forward(x)
        } else {
            self.post_attention_layernorm.forward(x)
        };
        self.hidden_dropout.forward(self.mlp.forward(normed))
    }

    /// [`Layer::forward`] for new positions after the cached ones (see
    /// [`Attention::forward_cached`]).
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        ctx: &Context<B>,
        kv: &mut Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    ) -> Tensor<B, 3> {
        let normed = self.input_layernorm.forward(x.clone());
        let attended = self
            .hidden_dropout
            .forward(self.attention.forward_cached(normed, ctx, kv));
        if self.parallel_residual {
            x.clone() + attended + self.feed(x)
        } else {
            let x = x + attended;
            x.clone() + self.feed(x)
        }
    }
}

/// The GPT-NeoX language model. Field names follow Hugging Face's `GPTNeoX*`.
#[derive(Module, Debug)]
pub struct GptNeox<B: Backend> {
    pub embed_in: Embedding<B>,
    /// Learned position embeddings (`pos_emb: learned`).
    pub embed_pos: Option<Embedding<B>>,
    pub embed_dropout: Dropout,
    pub layers: Vec<Layer<B>>,
    pub final_layer_norm: Norm<B>,
    /// The output layer; `None` when tied to `embed_in`.
    pub embed_out: Option<Linear<B>>,
    #[module(skip)]
    pub config: ModelConfig,
    /// Position tables and the causal mask, built once per length.
    #[module(skip)]
    pub tables: TableCache,
}

impl<B: Backend> GptNeox<B> {
    /// Logits `[b, t, vocab]` for tokens `[b, t]`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, t] = tokens.dims();
        let ctx = self.context(t, &tokens.device());
        let x = self.embed(tokens);
        let x = self
            .layers
            .iter()
            .fold(x, |x, layer| layer.forward(x, &ctx));
        self.head(x)
    }

    /// The first layer's input `[b, t, hidden]`: token (and position)
    /// embeddings after dropout.
    pub fn embed(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, t] = tokens.dims();
        let device = tokens.device();
        let c = &self.config;
        let mut x = self.embed_in.forward(tokens);
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
                let key = [t as u64, c.hidden_size as u64, 0];
                let table = self.tables.get::<B, _>("sinusoidal", key, &device, || {
                    position::sinusoidal_table::<B>(t, c.hidden_size, &device)
                });
                let dtype = x.dtype();
                x = x + table.cast(dtype).unsqueeze();
            }
            PosEmb::Rotary | PosEmb::Alibi | PosEmb::None => {}
        }
        self.embed_dropout.forward(x)
    }

    /// What every layer of a pass over `t` tokens shares: mask and position
    /// tables, built once per length (see [`TableCache`]).
    pub fn context(&self, t: usize, device: &B::Device) -> Context<B> {
        let c = &self.config;
        let tables = &self.tables;
        let (t64, dims, base) = (t as u64, c.rotary_dims(), c.rotary_emb_base);
        let heads = c.num_attention_heads;
        let window = c.sliding_window_width.map_or(u64::MAX, |w| w as u64);
        Context {
            mask: tables.get::<B, _>("causal mask", [t64, window, 0], device, || {
                attention::causal_mask(t, c.sliding_window_width, device)
            }),
            rotary: (c.pos_emb == PosEmb::Rotary).then(|| {
                let key = [t64, dims as u64, base.to_bits()];
                tables.get::<B, _>("rotary", key, device, || {
                    position::rotary_tables::<B>(t, dims, base, device)
                })
            }),
            alibi: (c.pos_emb == PosEmb::Alibi).then(|| {
                tables.get::<B, _>("alibi", [t64, heads as u64, 0], device, || {
                    position::alibi_bias::<B>(heads, t, device)
                })
            }),
        }
    }

    /// Logits `[b, t, vocab]` from the last layer's output: final norm, output
    /// layer. The output layer runs on `[b t, hidden]`: one matrix product,
    /// and in the backward pass one weight gradient instead of `b` summed ones.
    pub fn head(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, hidden] = x.dims();
        let x = self.final_layer_norm.forward(x).reshape([b * t, hidden]);
        let logits = match &self.embed_out {
            Some(out) => fused::linear::forward(out, x),
            None => fused::linear::linear(x, self.embed_in.weight.val().transpose(), None),
        };
        let vocab = logits.dims()[1];
        logits.reshape([b, t, vocab])
    }

    /// Mean next-token cross-entropy of `inputs` predicting `targets` (both `[b, t]`).
    pub fn loss(&self, inputs: Tensor<B, 2, Int>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1>
    where
        B: LossBackend,
    {
        cross_entropy(self.forward(inputs), targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn ffn_size_follows_gpt_neox_parallel_mlp() {
        let ffn = ModelConfig::ffn_size;
        // GPT-NeoX's Llama configs: hidden 4096 / 8192, swiglu, mlp_multiple_of 256.
        assert_eq!(
            ffn(4096, Activation::Swiglu, Some(32768), None, 256),
            Ok(11008)
        );
        assert_eq!(
            ffn(8192, Activation::Swiglu, Some(86016), None, 256),
            Ok(28672)
        );
        // The default multiple is 1: two thirds of 4h, halved, no rounding to 256.
        assert_eq!(ffn(64, Activation::Swiglu, None, None, 1), Ok(85));
        assert_eq!(ffn(64, Activation::Gelu, None, None, 1), Ok(256));
        assert_eq!(ffn(64, Activation::Gelu, None, Some(2.5), 1), Ok(160));
        assert_eq!(ffn(64, Activation::Gelu, Some(100), None, 1), Ok(100));
        // Widths GPT-NeoX's two layers disagree on, and contradictory options.
        let err = ffn(128, Activation::Swiglu, None, None, 1).unwrap_err();
        assert!(err.contains("342") && err.contains("170"), "{err}");
        assert!(ffn(64, Activation::Gelu, Some(101), None, 1).is_err());
        assert!(ffn(64, Activation::Gelu, Some(100), Some(2.0), 1).is_err());
        assert!(ffn(64, Activation::Gelu, None, Some(0.001), 1).is_err());
    }

    #[test]
    fn sinusoidal_positions_ignore_rotary_emb_base() {
        let device = Default::default();
        let config = ModelConfig {
            num_layers: 1,
            hidden_size: 8,
            num_attention_heads: 2,
            seq_length: 4,
            max_position_embeddings: 4,
            vocab_size: 5,
            pos_emb: PosEmb::Sinusoidal,
            intermediate_size: 16,
            init_method_std: 0.5,
            ..ModelConfig::default()
        };
        let tokens = || Tensor::<Flex, 2, Int>::from_data([[1, 2, 3, 4]], &device);
        let model = config.init::<Flex>(&device);
        let base = model.forward(tokens()).into_data();
        let mut other = model.clone();
        other.config.rotary_emb_base = 500.0;
        other.forward(tokens()).into_data().assert_eq(&base, true);
    }

    fn tokens(device: &burn::backend::flex::FlexDevice) -> Tensor<Flex, 2, Int> {
        Tensor::from_data([[1, 2, 3, 4, 0, 2], [4, 4, 1, 0, 3, 2]], device)
    }

    /// `gpt_j_tied` is GPT-J's layer with `post_attention_layernorm` replaced
    /// by `input_layernorm`.
    #[test]
    fn gpt_j_tied_feeds_the_mlp_from_the_input_norm() {
        let device = Default::default();
        let config = ModelConfig {
            vocab_size: 5,
            seq_length: 6,
            max_position_embeddings: 6,
            gpt_j_residual: true,
            gpt_j_tied: true,
            init_method_std: 0.5,
            ..ModelConfig::default()
        };
        let tied = config.init::<Flex>(&device);
        let mut untied = tied.clone();
        for layer in untied.layers.iter_mut() {
            assert!(layer.tied_norms);
            layer.tied_norms = false;
            layer.post_attention_layernorm = layer.input_layernorm.clone();
        }
        let a = tied.forward(tokens(&device)).into_data();
        untied
            .forward(tokens(&device))
            .into_data()
            .assert_eq(&a, true);
        // The tied model never reads its second norm; the untied one does.
        let shift = |norm: &mut Norm<Flex>| norm.weight = norm.weight.clone().map(|w| w + 0.25);
        let (mut tied, mut untied) = (tied, untied);
        shift(&mut tied.layers[0].post_attention_layernorm);
        shift(&mut untied.layers[0].post_attention_layernorm);
        tied.forward(tokens(&device))
            .into_data()
            .assert_eq(&a, true);
        let c = untied.forward(tokens(&device)).into_data();
        assert_ne!(c.to_vec::<f32>().unwrap(), a.to_vec::<f32>().unwrap());
    }

    /// `opt_pos_emb_offset` looks learned positions up `offset` rows further.
    #[test]
    fn opt_pos_emb_offset_shifts_learned_positions() {
        let device = Default::default();
        let config = ModelConfig {
            vocab_size: 5,
            seq_length: 6,
            max_position_embeddings: 8,
            opt_pos_emb_offset: 2,
            init_method_std: 0.5,
            ..ModelConfig::default()
        };
        let shifted = config.init::<Flex>(&device);
        let mut plain = shifted.clone();
        plain.config.opt_pos_emb_offset = 0;
        let pos = plain.embed_pos.as_mut().unwrap();
        pos.weight = pos.weight.clone().map(|w| {
            let n = w.dims()[0];
            w.narrow(0, 2, n - 2)
        });
        let a = shifted.forward(tokens(&device)).into_data();
        let b = plain.forward(tokens(&device)).into_data();
        a.assert_eq(&b, true);
    }
}
