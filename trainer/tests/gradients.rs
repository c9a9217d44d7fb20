//! Autodiff gradients agree with central finite differences on tiny models,
//! for every architectural option: along a random direction per parameter,
//! `(L(p + e d) - L(p - e d)) / 2e` matches `<dL/dp, d>`.

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use neox_trainer::model::{Activation, GptNeox, InitMethod, ModelConfig, NormKind, PosEmb};

type Ad = Autodiff<Flex>;

fn tiny(pos_emb: PosEmb) -> ModelConfig {
    ModelConfig {
        num_layers: 2,
        hidden_size: 16,
        num_attention_heads: 2,
        seq_length: 6,
        max_position_embeddings: 6,
        vocab_size: 11,
        norm: NormKind::LayerNorm,
        norm_eps: 1e-5,
        pos_emb,
        rotary_pct: 0.5,
        rotary_emb_base: 10000.0,
        gpt_j_residual: false,
        tied_embeddings: false,
        activation: Activation::Gelu,
        intermediate_size: 32,
        init_method: InitMethod::Normal,
        output_layer_init_method: InitMethod::ScaledNormal,
        init_method_std: 0.3,
        hidden_dropout: 0.0,
        attention_dropout: 0.0,
        use_bias_in_attn_linear: true,
        use_bias_in_mlp: true,
        use_bias_in_norms: true,
        ..ModelConfig::default()
    }
}

/// The direction for a parameter: a fixed pseudo-random tensor of its shape
/// (made here, not by the backend's process-wide RNG, so parallel tests agree).
fn direction<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n as u64)
        .map(|i| {
            let h = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            h as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Moves parameter `target` by `eps` along its direction.
struct Perturb {
    target: ParamId,
    eps: f64,
}

impl<B: Backend> ModuleMapper<B> for Perturb {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if param.id != self.target {
            return param;
        }
        let value = param.val();
        let d = direction::<B, D>(value.dims(), &value.device());
        Param::from_tensor(value + d * self.eps)
    }
}

/// Every parameter's id with `<grad, direction>`.
struct Directional<'a> {
    grads: &'a GradientsParams,
    found: Vec<(ParamId, Vec<usize>, f64)>,
}

impl ModuleVisitor<Ad> for Directional<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Ad, D>>) {
        let grad = self
            .grads
            .get::<Flex, D>(param.id)
            .expect("every parameter has a gradient");
        let d = direction::<Flex, D>(grad.dims(), &grad.device());
        let dot = (grad * d).sum().into_scalar() as f64;
        self.found
            .push((param.id, param.val().dims().to_vec(), dot));
    }
}

fn loss_of(
    model: &GptNeox<Flex>,
    inputs: &Tensor<Flex, 2, Int>,
    targets: &Tensor<Flex, 2, Int>,
) -> f64 {
    model.loss(inputs.clone(), targets.clone()).into_scalar() as f64
}

fn check(config: ModelConfig) {
    let device = Default::default();
    let model: GptNeox<Ad> = config.init(&device);
    let ids: Vec<i64> = (0..2 * config.seq_length as i64)
        .map(|i| (i * 7 + 3) % 11)
        .collect();
    let targets: Vec<i64> = (0..2 * config.seq_length as i64)
        .map(|i| (i * 5 + 1) % 11)
        .collect();
    let shape = [2, config.seq_length];
    let inputs_ad = Tensor::<Ad, 2, Int>::from_data(TensorData::new(ids.clone(), shape), &device);
    let targets_ad =
        Tensor::<Ad, 2, Int>::from_data(TensorData::new(targets.clone(), shape), &device);
    let grads = GradientsParams::from_grads(model.loss(inputs_ad, targets_ad).backward(), &model);
    let mut directional = Directional {
        grads: &grads,
        found: Vec::new(),
    };
    model.visit(&mut directional);
    assert!(!directional.found.is_empty());

    let inner = model.valid();
    let inputs = Tensor::<Flex, 2, Int>::from_data(TensorData::new(ids, shape), &device);
    let targets = Tensor::<Flex, 2, Int>::from_data(TensorData::new(targets, shape), &device);
    let eps = 1e-3;
    for (id, dims, analytic) in directional.found {
        let plus = inner.clone().map(&mut Perturb { target: id, eps });
        let minus = inner.clone().map(&mut Perturb {
            target: id,
            eps: -eps,
        });
        let numeric =
            (loss_of(&plus, &inputs, &targets) - loss_of(&minus, &inputs, &targets)) / (2.0 * eps);
        let tolerance = 2e-3 + 2e-2 * analytic.abs().max(numeric.abs());
        assert!(
            (numeric - analytic).abs() < tolerance,
            "{:?} param {dims:?}: finite difference {numeric} vs autodiff {analytic}",
            config.pos_emb
        );
    }
}

#[test]
fn rotary_sequential_layernorm_gelu() {
    check(tiny(PosEmb::Rotary));
}

#[test]
fn learned_parallel_rmsnorm_swiglu_tied() {
    let mut c = tiny(PosEmb::Learned);
    c.gpt_j_residual = true;
    c.norm = NormKind::RmsNorm;
    c.norm_eps = 1e-6;
    c.activation = Activation::Swiglu;
    c.intermediate_size = 16;
    c.tied_embeddings = true;
    check(c);
}

#[test]
fn alibi_sinusoidal_and_none() {
    check(tiny(PosEmb::Alibi));
    check(tiny(PosEmb::Sinusoidal));
    let mut c = tiny(PosEmb::None);
    c.use_bias_in_attn_linear = false;
    c.use_bias_in_mlp = false;
    check(c);
}

#[test]
fn grouped_query_sliding_window_and_other_activations() {
    let mut c = tiny(PosEmb::Rotary);
    c.num_attention_heads = 4;
    c.num_kv_heads = Some(2);
    c.sliding_window_width = Some(2);
    c.activation = Activation::Geglu;
    c.intermediate_size = 16;
    check(c.clone());
    c.num_kv_heads = Some(1);
    c.activation = Activation::Mish;
    c.intermediate_size = 32;
    check(c.clone());
    c.activation = Activation::GeluTanh;
    c.pos_emb = PosEmb::Alibi;
    check(c);
}
