//! The exact (erf) GELU as one op: `x (1 + erf(x / sqrt 2)) / 2` forward,
//! `g (cdf(x) + x pdf(x))` backward, each one multi-threaded pass (the plain
//! ops are five passes forward and about ten backward, single-threaded).

use std::f32::consts::{FRAC_1_SQRT_2, PI, SQRT_2};

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;

use super::{AdTensor, CHUNK, FlexTensor, Route, flex_f32, from_autodiff, from_flex};

/// Exact GELU, `F.gelu`: fused on flex in f32, else `plain`.
pub fn gelu<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    plain: impl FnOnce(Tensor<B, D>) -> Tensor<B, D>,
) -> Tensor<B, D> {
    let out = match Route::<B>::of(x.into_primitive().tensor()) {
        Route::Flex(x) => from_flex::<B>(forward(&x)),
        Route::Autodiff(x) => from_autodiff::<B>(autodiff(x)),
        Route::Plain(x) => return plain(Tensor::from_primitive(TensorPrimitive::Float(x))),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// `x (erf(x / sqrt 2) + 1) / 2`, in the plain ops' order of rounding.
fn value(x: f32) -> f32 {
    x * (libm::erff(x / SQRT_2) + 1.0) * 0.5
}

/// `d gelu / dx = (erf(x / sqrt 2) + 1) / 2 + x exp(-x^2 / 2) / sqrt(2 pi)`.
fn slope(x: f32) -> f32 {
    let frac_1_sqrt_2pi = FRAC_1_SQRT_2 / PI.sqrt();
    (libm::erff(x / SQRT_2) + 1.0) * 0.5 + x * (-0.5 * x * x).exp() * frac_1_sqrt_2pi
}

fn forward(x: &FlexTensor) -> FlexTensor {
    let x = x.to_contiguous();
    let input = x.storage::<f32>();
    let out = input
        .par_iter()
        .with_min_len(CHUNK)
        .map(|&v| value(v))
        .collect();
    flex_f32(out, x.shape())
}

fn backward(x: &FlexTensor, grad: &FlexTensor) -> FlexTensor {
    let (x, grad) = (x.to_contiguous(), grad.to_contiguous());
    let out = x
        .storage::<f32>()
        .par_iter()
        .zip(grad.storage::<f32>().par_iter())
        .with_min_len(CHUNK)
        .map(|(&v, &g)| g * slope(v))
        .collect();
    flex_f32(out, x.shape())
}

#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| backward(&x, &grad));
    }
}

fn autodiff(x: AdTensor) -> AdTensor {
    match GeluBackward
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let out = forward(&x.primitive);
            prep.finish(x.primitive, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&x.primitive)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::activations;
    use burn::backend::Autodiff;
    use burn::tensor::TensorData;

    type Ad = Autodiff<Flex>;

    fn input<B: Backend>(n: usize, device: &B::Device) -> Tensor<B, 2> {
        let values: Vec<f32> = (0..n * 7)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 90.0)
            .collect();
        Tensor::from_data(TensorData::new(values, [n, 7]), device)
    }

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    /// Values equal the plain ops bit for bit; gradients agree with autodiff
    /// through the plain ops (erf's derivative) within rounding. Enough rows
    /// to span several parallel chunks.
    #[test]
    fn matches_the_plain_ops_in_value_and_gradient() {
        let device = Default::default();
        let n = 3 * CHUNK / 7;
        let fused = values(gelu(input::<Flex>(n, &device), |_| unreachable!()));
        let plain = values(activations::gelu_plain(input::<Flex>(n, &device)));
        assert_eq!(fused, plain);

        let x = input::<Ad>(n, &device).require_grad();
        let y = gelu(x.clone(), |_| unreachable!());
        let weights = input::<Ad>(n, &device).flip([0]);
        let grads = (y.clone() * weights.clone()).sum().backward();
        let fused_grad = values(x.grad(&grads).unwrap());
        assert_eq!(values(y), plain);

        let x = input::<Ad>(n, &device).require_grad();
        let grads = (activations::gelu_plain(x.clone()) * weights)
            .sum()
            .backward();
        let plain_grad = values(x.grad(&grads).unwrap());
        for (a, b) in fused_grad.iter().zip(&plain_grad) {
            assert!((a - b).abs() <= 2e-6 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn other_dtypes_take_the_plain_ops() {
        let device = Default::default();
        let x = input::<Flex>(2, &device).cast(burn::tensor::FloatDType::F16);
        let mut called = false;
        let out = gelu(x, |x| {
            called = true;
            x
        });
        assert!(called);
        assert_eq!(out.dtype(), burn::tensor::DType::F16);
    }
}
