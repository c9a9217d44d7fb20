//! A CPU training step gives the same bits on one thread as on two: the
//! fused kernels (`model::fused`) and the matrix products (the patched
//! `gemm`, vendor/gemm) split their work in pieces fixed by the shapes, never
//! by the thread count.

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use neox_trainer::model::{Activation, GptNeox, ModelConfig, NormKind, PosEmb};

type Ad = Autodiff<Flex>;

/// Large enough that every product and kernel splits into several pieces
/// (output layer 256 x 128 x 4096, MLP 256 x 128 x 512, several norm blocks).
fn config() -> ModelConfig {
    ModelConfig {
        num_layers: 2,
        hidden_size: 128,
        num_attention_heads: 4,
        seq_length: 64,
        max_position_embeddings: 64,
        vocab_size: 4096,
        norm: NormKind::LayerNorm,
        pos_emb: PosEmb::Rotary,
        rotary_pct: 0.25,
        gpt_j_residual: true,
        tied_embeddings: false,
        activation: Activation::Gelu,
        intermediate_size: 512,
        init_method_std: 0.05,
        ..ModelConfig::default()
    }
}

struct Collect<'a> {
    grads: &'a GradientsParams,
    found: Vec<Vec<f32>>,
}

impl ModuleVisitor<Ad> for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Ad, D>>) {
        if let Some(grad) = self.grads.get::<Flex, D>(param.id) {
            self.found.push(grad.into_data().to_vec().unwrap());
        }
    }
}

/// The loss and every parameter's gradient of one step, on `threads` threads.
fn step(model: &GptNeox<Ad>, threads: usize) -> (f32, Vec<Vec<f32>>) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let device = Default::default();
        let (b, t, v) = (4, 64, config().vocab_size as i64);
        let ids = |shift: i64| {
            let values: Vec<i64> = (0..(b * t) as i64)
                .map(|i| (i * 7919 + shift) % v)
                .collect();
            Tensor::<Ad, 2, Int>::from_data(TensorData::new(values, [b, t]), &device)
        };
        let loss = model.loss(ids(0), ids(1));
        let grads = GradientsParams::from_grads(loss.backward(), model);
        let mut collect = Collect {
            grads: &grads,
            found: Vec::new(),
        };
        model.visit(&mut collect);
        (loss.into_scalar(), collect.found)
    })
}

#[test]
fn one_and_two_threads_train_bit_for_bit_alike() {
    let device = Default::default();
    Ad::seed(&device, 7);
    let model: GptNeox<Ad> = config().init(&device);
    let (loss1, grads1) = step(&model, 1);
    let (loss2, grads2) = step(&model, 2);
    assert!(loss1.is_finite());
    assert_eq!(grads1.len(), grads2.len());
    assert!(grads1.len() >= 20, "{} gradients", grads1.len());
    assert_eq!(loss1.to_bits(), loss2.to_bits());
    for (i, (a, b)) in grads1.iter().zip(&grads2).enumerate() {
        assert!(
            a == b,
            "parameter {i}: gradients differ between 1 and 2 threads"
        );
    }
}
