//! Activation checkpointing (GPT-NeoX's `checkpoint_activations`,
//! `checkpoint_num_layers`): a micro batch's forward pass keeps only the input
//! of each group of layers; the backward pass recomputes one group at a time.
//!
//! Burn has no checkpoint op, so this works on the whole pass: a forward pass
//! without a graph (detached parameters) records the groups' inputs; then,
//! from the last group to the first, each group runs again with a graph, from
//! its saved input made a leaf, and its backward pass is seeded with the
//! gradient its output received from the group after it by
//! `(y * g.detach()).sum().backward()` (exact: the seed of a sum is ones). The
//! output head (final norm, output layer, loss) and the embeddings are the
//! first and last pieces. Parameter gradients of the pieces are summed; at
//! most one group's activations are alive at a time. The gradients equal
//! those of the stored pass bit for bit (tests), except tied embeddings in
//! half precision: there each piece's half gradient is cast to f32 before
//! the two are added (more precise; the last bits differ).
//!
//! Dropout draws the same masks in the recomputation as in the first pass:
//! when the model has dropout, the backend RNG is reseeded before each piece
//! (from one draw per micro batch), in both passes. The masks differ from
//! those of a run without checkpointing, which draws them in one stream.

use std::ops::Range;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, ElementConversion, Int, Tensor};

use crate::model::{Context, GptNeox, Layer, TrainBackend, cross_entropy};
use crate::precision::MixedPrecision;

/// One micro batch through `model` with activation checkpointing every
/// `group` layers, in `precision`: returns its loss divided by `n` (the micro
/// batches' weight) and the gradients of that loss times `loss_scale`.
pub fn loss_and_grads<B: TrainBackend>(
    model: &GptNeox<B>,
    precision: &MixedPrecision,
    inputs: Tensor<B, 2, Int>,
    targets: Tensor<B, 2, Int>,
    n: usize,
    loss_scale: f64,
    group: usize,
) -> (f64, GradientsParams) {
    let device = inputs.device();
    let [_, t] = inputs.dims();
    let ctx = model.context(t, &device);
    let groups = groups(model.layers.len(), group);
    let masks = Reseed::<B>::new(&model.config, &device);
    // Piece 0 is the embeddings, piece i + 1 group i.
    let reseed = |piece: usize| masks.piece(piece);

    // The first pass, without a graph: the groups' inputs and the head's.
    let frozen = precision.cast(model.clone().no_grad());
    reseed(0);
    let x = frozen.embed(inputs.clone());
    let (saved, x) = forward_groups(x, groups.len(), |i, x| {
        reseed(i + 1);
        run(&frozen.layers[groups[i].clone()], x, &ctx)
    });
    let head_input = x.inner();
    drop(frozen);

    let mut accumulator = GradientsAccumulator::<GptNeox<B>>::new();
    let mut keep = |grads: B::Gradients| {
        accumulator.accumulate(model, GradientsParams::from_grads(grads, model));
    };
    // The head: final norm, output layer, loss.
    let x = Tensor::<B, 3>::from_inner(head_input).require_grad();
    let shell = precision.cast(without_layers(model));
    let loss = cross_entropy(shell.head(x.clone()), targets) / n as f64;
    let value = loss.clone().into_scalar().elem::<f64>();
    let loss = if loss_scale == 1.0 {
        loss
    } else {
        loss * loss_scale
    };
    let grads = loss.backward();
    let g = x
        .grad(&grads)
        .expect("the head's input is a leaf of its graph");
    keep(grads);
    // The groups, last to first.
    let run_group = |i: usize, x: Tensor<B, 3>| {
        let layers: Vec<Layer<B>> = model.layers[groups[i].clone()]
            .iter()
            .map(|layer| precision.cast(layer.clone()))
            .collect();
        reseed(i + 1);
        run(&layers, x, &ctx)
    };
    let g = backward_groups(saved, g, run_group, |l| l.backward(), &mut keep);
    // The embeddings.
    let shell = precision.cast(without_layers(model));
    reseed(0);
    keep(seeded(shell.embed(inputs), g).backward());
    (value, accumulator.grads())
}

/// The first pass over `count` groups of layers, without a graph (`x` and
/// the model it runs are untracked): `run(i, x)` is group `i`. Returns each
/// group's input and the last group's output.
pub fn forward_groups<B: AutodiffBackend>(
    mut x: Tensor<B, 3>,
    count: usize,
    mut run: impl FnMut(usize, Tensor<B, 3>) -> Tensor<B, 3>,
) -> (Vec<Tensor<B::InnerBackend, 3>>, Tensor<B, 3>) {
    let mut saved = Vec::with_capacity(count);
    for i in 0..count {
        saved.push(x.clone().inner());
        x = run(i, x);
    }
    (saved, x)
}

/// The groups' backward passes, last to first: group `i` runs again by
/// `run(i, x)` from its `saved` input made a leaf, and `backward` takes the
/// scalar whose backward pass gives its output the gradient `g` (the next
/// group's input's); `keep` receives each pass's gradients. Returns the
/// gradient of the first group's input (`g` itself when there are none).
pub fn backward_groups<B: AutodiffBackend>(
    mut saved: Vec<Tensor<B::InnerBackend, 3>>,
    mut g: Tensor<B::InnerBackend, 3>,
    mut run: impl FnMut(usize, Tensor<B, 3>) -> Tensor<B, 3>,
    mut backward: impl FnMut(Tensor<B, 1>) -> B::Gradients,
    mut keep: impl FnMut(B::Gradients),
) -> Tensor<B::InnerBackend, 3> {
    for i in (0..saved.len()).rev() {
        let input = saved.pop().expect("one saved input per group");
        let x = Tensor::<B, 3>::from_inner(input).require_grad();
        let y = run(i, x.clone());
        let grads = backward(seeded(y, g));
        g = x
            .grad(&grads)
            .expect("a group's input is a leaf of its graph");
        keep(grads);
    }
    g
}

/// Layer ranges of `group` layers each (the last may be shorter).
pub fn groups(layers: usize, group: usize) -> Vec<Range<usize>> {
    let group = group.max(1);
    (0..layers)
        .step_by(group)
        .map(|start| start..(start + group).min(layers))
        .collect()
}

fn run<B: Backend>(layers: &[Layer<B>], x: Tensor<B, 3>, ctx: &Context<B>) -> Tensor<B, 3> {
    layers.iter().fold(x, |x, layer| layer.forward(x, ctx))
}

/// A scalar whose backward pass gives `y` the gradient `g`.
pub fn seeded<B: AutodiffBackend>(y: Tensor<B, 3>, g: Tensor<B::InnerBackend, 3>) -> Tensor<B, 1> {
    (y * Tensor::from_inner(g)).sum()
}

/// `model` without its layers: what the embeddings and the head need.
fn without_layers<B: Backend>(model: &GptNeox<B>) -> GptNeox<B> {
    let mut shell = model.clone();
    shell.layers = Vec::new();
    shell
}

/// The same dropout masks in a piece's recomputation as in its first pass:
/// when the model has dropout, the backend RNG is reseeded before each piece
/// from one seed per micro batch (drawn from the RNG, which the loop seeds
/// per step).
pub struct Reseed<B: Backend> {
    base: Option<u64>,
    device: B::Device,
}

impl<B: Backend> Reseed<B> {
    /// Draws this micro batch's seed when `config` has dropout.
    pub fn new(config: &crate::model::ModelConfig, device: &B::Device) -> Self {
        let dropout = config.hidden_dropout > 0.0 || config.attention_dropout > 0.0;
        Reseed {
            base: dropout.then(|| draw_seed::<B>(device)),
            device: device.clone(),
        }
    }

    /// Before piece `i` (in both passes).
    pub fn piece(&self, i: usize) {
        if let Some(base) = self.base {
            B::seed(&self.device, base.wrapping_add(i as u64));
        }
    }
}

/// A seed drawn from the backend RNG.
fn draw_seed<B: Backend>(device: &B::Device) -> u64 {
    Tensor::<B, 1>::random([2], Distribution::Default, device)
        .into_data()
        .iter::<f32>()
        .fold(0u64, |acc, v| acc.rotate_left(32) ^ u64::from(v.to_bits()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::ParamLayout;
    use crate::model::{ModelConfig, PosEmb};
    use crate::precision::{Precision, PrecisionConfig};
    use burn::backend::{Autodiff, Flex};
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::TensorData;

    type Ad = Autodiff<Flex>;

    /// Every parameter's gradient, flat, in visiting order.
    fn flat(model: &GptNeox<Ad>, grads: &GradientsParams) -> Vec<f32> {
        struct Read<'a>(&'a GradientsParams, Vec<f32>);
        impl ModuleVisitor<Ad> for Read<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Ad, D>>) {
                let g = self
                    .0
                    .get::<Flex, D>(param.id)
                    .expect("every parameter has a gradient");
                self.1.extend(g.into_data().iter::<f32>());
            }
        }
        let mut read = Read(grads, Vec::new());
        model.visit(&mut read);
        read.1
    }

    fn tokens(shift: i64) -> Tensor<Ad, 2, Int> {
        let v: Vec<i64> = (0..16).map(|i| (i * 7 + shift) % 40).collect();
        Tensor::from_data(TensorData::new(v, [2, 8]), &Default::default())
    }

    #[test]
    fn recomputed_gradients_equal_stored_ones() {
        let device = Default::default();
        for (pos_emb, tied, precision) in [
            (PosEmb::Rotary, false, Precision::Fp32),
            (PosEmb::Learned, true, Precision::Fp32),
            (PosEmb::Rotary, false, Precision::Bf16),
        ] {
            let config = ModelConfig {
                num_layers: 3,
                hidden_size: 32,
                num_attention_heads: 4,
                seq_length: 8,
                max_position_embeddings: 8,
                vocab_size: 40,
                pos_emb,
                tied_embeddings: tied,
                intermediate_size: 64,
                init_method_std: 0.2,
                ..ModelConfig::default()
            };
            <Ad as Backend>::seed(&device, 5);
            let model = config.init::<Ad>(&device);
            ParamLayout::of::<Ad, _>(&model);
            let mp = MixedPrecision::new(&PrecisionConfig {
                precision,
                ..PrecisionConfig::default()
            });
            let loss = mp.cast(model.clone()).loss(tokens(0), tokens(1)) / 2.0;
            let want_loss = loss.clone().into_scalar().elem::<f64>();
            let want = flat(
                &model,
                &GradientsParams::from_grads((loss * 8.0).backward(), &model),
            );
            for group in [1, 2, 3] {
                let (value, grads) =
                    loss_and_grads(&model, &mp, tokens(0), tokens(1), 2, 8.0, group);
                assert_eq!(value, want_loss, "{pos_emb:?} {precision:?} group {group}");
                // Bit for bit: the same operations on the same values, the
                // gradients summed in the same order (measured; 1e-6 was the goal).
                assert_eq!(
                    flat(&model, &grads),
                    want,
                    "{pos_emb:?} {precision:?} group {group}"
                );
            }
        }
    }

    #[test]
    fn groups_cover_the_layers_in_order() {
        assert_eq!(groups(5, 2), [0..2, 2..4, 4..5]);
        assert_eq!(groups(4, 1), [0..1, 1..2, 2..3, 3..4]);
        assert_eq!(groups(3, 8), vec![0..3]);
        assert_eq!(groups(2, 0), [0..1, 1..2]);
        assert!(groups(0, 1).is_empty());
    }
}
