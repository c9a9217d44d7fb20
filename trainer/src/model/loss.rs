//! The language-model loss: mean next-token cross-entropy over the logits.
//!
//! With GPT-2's vocabulary the logits `[tokens, vocab]` are the largest
//! tensor of a small model. Written with tensor ops, `log_softmax` then a
//! gather costs about eleven passes over them under autodiff (each op's
//! output, and in the backward pass `ones * grad`, `exp` computed again,
//! a scatter into zeros, sums). Here the loss is one operation of the
//! backend ([`LossBackend`]): forward, one fused softmax `p` (kept for the
//! backward pass) and row maxima; backward, `(p - one_hot(target)) * grad`
//! written into `p` itself: one `[tokens, vocab]` tensor each way.
//!
//! A backend joins by `impl LossBackend for MyBackend {}` (the default
//! methods are its tensor ops); [`Autodiff`] over such a backend gets the
//! one-pass gradient. A vocabulary split over ranks (tensor parallelism)
//! needs the row maximum and sum over all ranks: see [`rows_from_softmax`].

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{FloatDType, Int, Shape, Tensor, TensorMetadata, TensorPrimitive};

/// A backend with the fused cross-entropy.
pub trait LossBackend: Backend {
    /// Per-row cross-entropy `[n]` of logits `[n, v]` against targets `[n]`.
    fn cross_entropy_rows(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        cross_entropy_forward::<Self>(logits, targets).0
    }
}

impl LossBackend for burn::backend::Flex {}

#[cfg(feature = "cuda")]
impl LossBackend for burn::backend::Cuda {}

/// A backend that trains: autodiff over a backend, both with the fused loss
/// (evaluation runs on the inner one).
pub trait TrainBackend: AutodiffBackend<InnerBackend: LossBackend> + LossBackend {}

impl<B: AutodiffBackend<InnerBackend: LossBackend> + LossBackend> TrainBackend for B {}

/// Mean cross-entropy of logits `[b, t, v]` against targets `[b, t]`, in f32
/// (half-precision logits are cast).
pub fn cross_entropy<B: LossBackend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
) -> Tensor<B, 1> {
    let [b, t, v] = logits.dims();
    let logits = logits.cast(FloatDType::F32).reshape([b * t, v]);
    cross_entropy_rows(logits, targets.reshape([b * t])).mean()
}

/// Per-row cross-entropy `[n]` of logits `[n, v]` against targets `[n]`.
pub fn cross_entropy_rows<B: LossBackend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let logits = logits.into_primitive().tensor();
    Tensor::from_primitive(TensorPrimitive::Float(B::cross_entropy_rows(
        logits,
        targets.into_primitive(),
    )))
}

/// The losses `[n]` and the softmax `p` `[n, v]` of logits `x` `[n, v]`.
/// `lse(x) = m + log(sum exp(x - m))` with `m` the row maximum, and the
/// softmax's largest entry is `exp(0) / sum exp(x - m)`, so
/// `loss = lse - x_target = m - x_target - log(max p)`: well conditioned
/// (`max p >= 1 / v`) and no pass over the logits beyond the softmax.
pub fn cross_entropy_forward<B: Backend>(
    x: FloatTensor<B>,
    targets: IntTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let shape = x.shape();
    let n = shape[0];
    let targets = B::int_reshape(targets, Shape::new([n, 1]));
    let p = B::softmax(x.clone(), 1);
    let target = B::float_gather(1, x.clone(), targets);
    let loss = rows_from_softmax::<B>(
        B::float_max_dim(x, 1),
        target,
        B::float_max_dim(p.clone(), 1),
    );
    (B::float_reshape(loss, Shape::new([n])), p)
}

/// `m - x_target - log(max p)`, each `[n, 1]`: the loss from the row maximum
/// of the logits, the target's logit and the row maximum of the softmax.
pub fn rows_from_softmax<B: Backend>(
    max: FloatTensor<B>,
    target: FloatTensor<B>,
    max_p: FloatTensor<B>,
) -> FloatTensor<B> {
    B::float_sub(B::float_sub(max, target), B::float_log(max_p))
}

/// The gradient of the per-row losses: `(p - one_hot(targets)) * grad[:, None]`.
pub fn cross_entropy_backward<B: Backend>(
    p: FloatTensor<B>,
    targets: IntTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let n = p.shape()[0];
    let targets = B::int_reshape(targets, Shape::new([n, 1]));
    let minus_one = B::float_full(
        Shape::new([n, 1]),
        (-1.0f32).into(),
        &B::float_device(&p),
        p.dtype().into(),
    );
    let p = B::float_scatter_add(1, p, targets, minus_one);
    B::float_mul(p, B::float_reshape(grad, Shape::new([n, 1])))
}

impl<B: LossBackend, C: CheckpointStrategy> LossBackend for Autodiff<B, C> {
    fn cross_entropy_rows(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct CrossEntropy;

        impl<B: Backend> Backward<B, 1> for CrossEntropy {
            type State = (FloatTensor<B>, IntTensor<B>);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let (p, targets) = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| {
                    cross_entropy_backward::<B>(p, targets, grad)
                });
            }
        }

        match CrossEntropy
            .prepare::<C>([logits.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (loss, p) = cross_entropy_forward::<B>(logits.primitive, targets.clone());
                prep.finish((p, targets), loss)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::cross_entropy_rows(logits.primitive, targets))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;
    use burn::tensor::activation::log_softmax;

    type Ad = Autodiff<Flex>;

    fn logits<B: Backend>(device: &B::Device) -> Tensor<B, 3> {
        let values: Vec<f32> = (0..2 * 3 * 5)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.7)
            .collect();
        Tensor::from_data(TensorData::new(values, [2, 3, 5]), device)
    }

    fn targets<B: Backend>(device: &B::Device) -> Tensor<B, 2, Int> {
        Tensor::from_data([[0, 4, 2], [1, 1, 3]], device)
    }

    /// The loss and gradient as `-mean(log_softmax(x)[target])`.
    fn reference(device: &burn::tensor::Device<Ad>) -> (f32, Vec<f32>) {
        let x = logits::<Ad>(device).require_grad();
        let loss = log_softmax(x.clone().reshape([6, 5]), 1)
            .gather(1, targets::<Ad>(device).reshape([6, 1]))
            .mean()
            .neg();
        let grads = loss.backward();
        let grad = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
        (loss.into_scalar(), grad)
    }

    #[test]
    fn matches_log_softmax_in_value_and_gradient() {
        let device = Default::default();
        let x = logits::<Ad>(&device).require_grad();
        let loss = cross_entropy(x.clone(), targets(&device));
        let grads = loss.backward();
        let grad: Vec<f32> = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
        let (expected_loss, expected_grad) = reference(&device);
        assert!((loss.into_scalar() - expected_loss).abs() < 1e-6);
        for (a, b) in grad.iter().zip(&expected_grad) {
            assert!((a - b).abs() < 1e-7, "{grad:?} vs {expected_grad:?}");
        }
        // The gradient is (softmax - one hot) / rows: each row sums to 0.
        for row in grad.chunks(5) {
            assert!(row.iter().sum::<f32>().abs() < 1e-7);
        }
    }

    #[test]
    fn untracked_and_inner_backends_give_the_same_loss() {
        let device = Default::default();
        let tracked = cross_entropy(logits::<Ad>(&device).require_grad(), targets(&device));
        let untracked = cross_entropy(logits::<Ad>(&device), targets(&device));
        let inner = cross_entropy(logits::<Flex>(&device), targets(&device));
        let (tracked, untracked, inner) = (
            tracked.into_scalar(),
            untracked.into_scalar(),
            inner.into_scalar(),
        );
        assert_eq!(tracked, inner);
        assert_eq!(untracked, inner);
    }

    #[test]
    fn large_logits_stay_finite() {
        let device = Default::default();
        let x = Tensor::<Ad, 3>::from_data([[[1000.0, -1000.0, 0.0]]], &device).require_grad();
        let loss = cross_entropy(x.clone(), Tensor::from_data([[1]], &device));
        let grads = loss.backward();
        assert!((loss.into_scalar() - 2000.0).abs() < 1e-3);
        let grad: Vec<f32> = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
        assert_eq!(grad, [1.0, -1.0, 0.0]);
    }
}
