//! The attention's scale, bias, mask and softmax as one op: forward
//! `p = softmax(where(mask, -inf, s / divisor + bias))` over the last
//! dimension, backward `ds = p (g - sum(g p)) / divisor` (zero where masked).
//! The plain ops (divide, add, mask fill, and softmax as max, subtract, exp,
//! sum, divide under autodiff) are about a dozen passes over the scores each
//! way.
//!
//! The forward pass is the plain ops' arithmetic on flex (whose softmax
//! multiplies by `1 / sum` of a row summed in order): on flex alone the
//! result is theirs bit for bit. Under autodiff the plain softmax is Burn's
//! decomposition (`exp / sum`, the sum vectorised), so values and gradients
//! differ from the plain ops' in the last bits (within 1e-6 in the test).
//!
//! Each row is computed alone (and rows in tasks of a fixed size), so the
//! result does not depend on the thread count.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorMetadata};
use rayon::prelude::*;

use super::{
    AdTensor, CHUNK, FlexTensor, Route, flex_f32, from_autodiff, from_flex, inner_flex, same_route,
    tensor,
};

/// Softmax over the last dimension of `scores / divisor + bias`
/// (`[b, h, t, s]`), entries where `mask` (`[m, t, s]`, `m` 1 or `h`) is
/// true left out (probability 0). `bias` (`[h, t, s]`, ALiBi) is a constant:
/// no gradient flows to it. Fused on flex in f32, else `plain(scores)`.
pub fn masked_softmax<B: Backend>(
    scores: Tensor<B, 4>,
    divisor: f64,
    mask: Tensor<B, 3, Bool>,
    bias: Option<Tensor<B, 3>>,
    plain: impl FnOnce(Tensor<B, 4>) -> Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [_, h, t, s] = scores.dims();
    let [m, mt, ms] = mask.dims();
    let fits = (m == 1 || m == h) && (mt, ms) == (t, s);
    // Empty scores (no keys or no queries) have nothing to fuse.
    let empty = t == 0 || s == 0;
    if !fits || empty || bias.as_ref().is_some_and(|b| b.dims() != [h, t, s]) {
        return plain(scores);
    }
    let x = Route::<B>::of(scores.into_primitive().tensor());
    let bias = bias.map(|b| Route::<B>::of(b.into_primitive().tensor()));
    let spec = |bias: Option<FlexTensor>| Spec {
        mask: inner_flex(mask.into_primitive()).to_contiguous(),
        mask_rows: m * t,
        bias: bias.map(|b| b.to_contiguous()),
        bias_rows: h * t,
        divisor: divisor as f32,
    };
    let out = match (x, bias) {
        (Route::Flex(x), None) => from_flex::<B>(forward(&x, &spec(None))),
        (Route::Flex(x), Some(Route::Flex(b))) => from_flex::<B>(forward(&x, &spec(Some(b)))),
        (Route::Autodiff(x), None) => from_autodiff::<B>(autodiff(x, spec(None))),
        (Route::Autodiff(x), Some(Route::Autodiff(b))) => {
            from_autodiff::<B>(autodiff(x, spec(Some(b.primitive))))
        }
        (x, _) => return plain(tensor(same_route(x))),
    };
    tensor(out)
}

/// The mask (rows of `s` bytes, non-zero where left out), the bias, the
/// number of rows of each (row `r` of the scores takes their row
/// `r % rows`) and the divisor.
#[derive(Debug, Clone)]
struct Spec {
    mask: FlexTensor,
    mask_rows: usize,
    bias: Option<FlexTensor>,
    bias_rows: usize,
    divisor: f32,
}

/// Rows per parallel task for rows of `s` elements.
fn task_rows(s: usize) -> usize {
    (CHUNK / s.max(1)).max(1)
}

/// One row: `p` from the scores `x`, where `hidden` is non-zero for
/// left-out entries, with `bias` added after the division.
fn softmax_row(x: &[f32], hidden: &[u8], bias: Option<&[f32]>, divisor: f32, p: &mut [f32]) {
    let mut max = f32::NEG_INFINITY;
    for (j, (p, &v)) in p.iter_mut().zip(x).enumerate() {
        *p = match bias {
            Some(bias) => v / divisor + bias[j],
            None => v / divisor,
        };
        if hidden[j] == 0 {
            max = max.max(*p);
        }
    }
    if max == f32::NEG_INFINITY {
        // Every entry left out: the plain ops' mask fill gives equal scores.
        p.fill(1.0 / p.len() as f32);
        return;
    }
    let mut sum = 0.0f32;
    for (p, &m) in p.iter_mut().zip(hidden) {
        *p = if m == 0 { (*p - max).exp() } else { 0.0 };
        sum += *p;
    }
    let inv = 1.0 / sum;
    for p in p.iter_mut() {
        *p *= inv;
    }
}

fn forward(x: &FlexTensor, spec: &Spec) -> FlexTensor {
    let shape = x.shape();
    let s = shape[shape.num_dims() - 1];
    let x = x.to_contiguous();
    let input = x.storage::<f32>();
    let mask = spec.mask.storage::<u8>();
    let bias = spec.bias.as_ref().map(|b| b.storage::<f32>());
    let mut out = vec![0.0f32; input.len()];
    let rows = task_rows(s);
    out.par_chunks_mut(rows * s)
        .zip(input.par_chunks(rows * s))
        .enumerate()
        .for_each(|(task, (out, input))| {
            for (r, (p, x)) in out.chunks_mut(s).zip(input.chunks(s)).enumerate() {
                let row = task * rows + r;
                let i = row % spec.mask_rows;
                let bias = bias.map(|b| {
                    let k = row % spec.bias_rows;
                    &b[k * s..(k + 1) * s]
                });
                softmax_row(x, &mask[i * s..(i + 1) * s], bias, spec.divisor, p);
            }
        });
    flex_f32(out, shape)
}

fn backward(p: &FlexTensor, grad: &FlexTensor, spec: &Spec) -> FlexTensor {
    let shape = p.shape();
    let s = shape[shape.num_dims() - 1];
    let (p, g) = (p.to_contiguous(), grad.to_contiguous());
    let (p, g, mask) = (
        p.storage::<f32>(),
        g.storage::<f32>(),
        spec.mask.storage::<u8>(),
    );
    let mut out = vec![0.0f32; p.len()];
    let rows = task_rows(s);
    out.par_chunks_mut(rows * s)
        .zip(p.par_chunks(rows * s).zip(g.par_chunks(rows * s)))
        .enumerate()
        .for_each(|(task, (out, (p, g)))| {
            for (r, ((ds, p), g)) in out
                .chunks_mut(s)
                .zip(p.chunks(s))
                .zip(g.chunks(s))
                .enumerate()
            {
                let i = (task * rows + r) % spec.mask_rows;
                let hidden = &mask[i * s..(i + 1) * s];
                let dot: f32 = p.iter().zip(g).map(|(p, g)| p * g).sum();
                for (((ds, &p), &g), &m) in ds.iter_mut().zip(p).zip(g).zip(hidden) {
                    *ds = if m == 0 {
                        p * (g - dot) / spec.divisor
                    } else {
                        0.0
                    };
                }
            }
        });
    flex_f32(out, shape)
}

#[derive(Debug)]
struct SoftmaxBackward;

impl Backward<Flex, 1> for SoftmaxBackward {
    type State = (FlexTensor, Spec);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (p, spec) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            backward(&p, &grad, &spec)
        });
    }
}

fn autodiff(x: AdTensor, spec: Spec) -> AdTensor {
    match SoftmaxBackward
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let p = forward(&x.primitive, &spec);
            prep.finish((p.clone(), spec), p)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&x.primitive, &spec)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attention::causal_mask;
    use crate::model::position::alibi_bias;
    use burn::backend::Autodiff;
    use burn::tensor::{DType, FloatDType, TensorData, activation};

    type Ad = Autodiff<Flex>;

    const HEADS: usize = 2;

    /// A mask `[m, t, s]` and a bias `[h, t, s]`.
    type Case<B> = (Tensor<B, 3, Bool>, Option<Tensor<B, 3>>);

    fn scores<B: Backend>(b: usize, t: usize, device: &B::Device) -> Tensor<B, 4> {
        let values: Vec<f32> = (0..b * HEADS * t * t)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 60.0)
            .collect();
        Tensor::from_data(TensorData::new(values, [b, HEADS, t, t]), device)
    }

    /// The attention's plain ops.
    fn plain<B: Backend>(
        s: Tensor<B, 4>,
        divisor: f64,
        mask: Tensor<B, 3, Bool>,
        bias: Option<Tensor<B, 3>>,
    ) -> Tensor<B, 4> {
        let dims = s.dims();
        let mut s = s / divisor;
        if let Some(bias) = bias {
            s = s + bias.unsqueeze();
        }
        activation::softmax(s.mask_fill(mask.unsqueeze::<4>().expand(dims), f32::MIN), 3)
    }

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    /// The masks and biases of a dense layer (causal, a sliding window,
    /// ALiBi) and of a sparse one (a different mask per head, a row with
    /// every key hidden).
    fn cases<B: Backend>(t: usize, device: &B::Device) -> Vec<Case<B>> {
        let causal = causal_mask::<B>(t, None, device).unsqueeze::<3>();
        let window = causal_mask::<B>(t, Some(5), device).unsqueeze::<3>();
        let alibi = alibi_bias::<B>(HEADS, t, device).squeeze_dim::<3>(0);
        let per_head: Vec<bool> = (0..HEADS * t * t)
            .map(|i| {
                let (h, r, c) = (i / (t * t), i / t % t, i % t);
                c > r || (h == 1 && (c + r) % 3 == 0) || (h == 0 && r == 7)
            })
            .collect();
        let per_head = Tensor::from_data(TensorData::new(per_head, [HEADS, t, t]), device);
        vec![
            (causal.clone(), None),
            (window, None),
            (causal, Some(alibi)),
            (per_head, None),
        ]
    }

    /// Probabilities and gradients against the plain ops under autodiff,
    /// over several parallel tasks; on flex alone, bit for bit.
    #[test]
    fn matches_the_plain_ops_in_value_and_gradient() {
        let device = Default::default();
        let (b, t, divisor) = (3, 40, 8f64.sqrt());
        let flex_cases = cases::<Flex>(t, &device);
        for (case, ((mask, bias), (flex_mask, flex_bias))) in cases::<Ad>(t, &device)
            .into_iter()
            .zip(flex_cases)
            .enumerate()
        {
            let run = |fused: bool| {
                let x = scores::<Ad>(b, t, &device).require_grad();
                let p = if fused {
                    masked_softmax(
                        x.clone(),
                        divisor,
                        mask.clone(),
                        bias.clone(),
                        |_| unreachable!(),
                    )
                } else {
                    plain(x.clone(), divisor, mask.clone(), bias.clone())
                };
                let weights = scores::<Ad>(b, t, &device).flip([3]);
                let grads = (p.clone() * weights).sum().backward();
                (values(p), values(x.grad(&grads).unwrap()))
            };
            let ((p, dx), (p0, dx0)) = (run(true), run(false));
            for (a, b) in p.iter().zip(&p0).chain(dx.iter().zip(&dx0)) {
                assert!((a - b).abs() <= 1e-6, "case {case}: {a} vs {b}");
            }
            let (mask, bias) = (flex_mask, flex_bias);
            let s = scores::<Flex>(b, t, &device);
            let fused = masked_softmax(
                s.clone(),
                divisor,
                mask.clone(),
                bias.clone(),
                |_| unreachable!(),
            );
            let fused = values(fused);
            assert_eq!(fused, values(plain(s, divisor, mask, bias)), "case {case}");
            // Autodiff's forward pass is flex's.
            assert_eq!(fused, p, "case {case}");
        }
    }

    /// Half precision, masks or biases of other shapes, and empty scores take
    /// the plain ops.
    #[test]
    fn other_types_and_shapes_take_the_plain_ops() {
        let device = Default::default();
        let (mask, bias) = cases::<Flex>(8, &device).swap_remove(2);
        let s = scores::<Flex>(1, 8, &device);
        let half = s.clone().cast(FloatDType::BF16);
        let p = masked_softmax(half, 2.0, mask.clone(), bias.clone(), |x| {
            assert_eq!(x.dtype(), DType::BF16);
            x
        });
        assert_eq!(p.dtype(), DType::BF16);
        let wide = causal_mask::<Flex>(9, None, &device).unsqueeze::<3>();
        let called = std::cell::Cell::new(0);
        let plain = |x| {
            called.set(called.get() + 1);
            x
        };
        masked_softmax(s.clone(), 2.0, wide, None, plain);
        let three_heads = mask.clone().repeat_dim(0, 3);
        masked_softmax(s.clone(), 2.0, three_heads, None, plain);
        let bias = bias.map(|b| b.narrow(0, 0, 1));
        masked_softmax(s, 2.0, mask, bias, plain);
        // No keys at all.
        let empty = Tensor::<Flex, 4>::zeros([1, 2, 3, 0], &device);
        let no_keys = Tensor::<Flex, 3, Bool>::empty([1, 3, 0], &device);
        masked_softmax(empty, 2.0, no_keys, None, plain);
        assert_eq!(called.get(), 4);
    }
}
