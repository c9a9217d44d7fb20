//! GPT-NeoX's rotary embedding (rotate halves of the first `r` dims of each
//! head) as one op: forward `y = x cos + rotate_half(x) sin`, backward its
//! transpose `dx = g cos - rotate_half(g sin)`. The plain ops (two narrows, a
//! negation, two concatenations, two products and a sum, and as much again
//! backward) copy the head several times; this reads the strided `q`/`k`
//! view of the fused `query_key_value` output in place.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::backend::Backend;
use burn::tensor::{Shape, Tensor, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;

use super::{AdTensor, CHUNK, FlexTensor, Route, flex_f32, from_autodiff, from_flex, same_route};

/// `x` `[b, h, t, d]` with its first `r` dims of each head rotated by the
/// tables `cos`, `sin` `[t, r]`: fused on flex in f32, else `plain(x)`.
pub fn rotary<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
    plain: impl FnOnce(Tensor<B, 4>) -> Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [_, _, t, d] = x.dims();
    let [tc, r] = cos.dims();
    if tc != t || r > d || r % 2 != 0 || sin.dims() != [t, r] {
        return plain(x);
    }
    let route = |t: &Tensor<B, 2>| Route::<B>::of(t.clone().into_primitive().tensor());
    let out = match (
        Route::<B>::of(x.into_primitive().tensor()),
        route(cos),
        route(sin),
    ) {
        (Route::Flex(x), Route::Flex(cos), Route::Flex(sin)) => {
            from_flex::<B>(forward(&x, &Tables::new(cos, sin)))
        }
        (Route::Autodiff(x), Route::Autodiff(cos), Route::Autodiff(sin)) => {
            from_autodiff::<B>(autodiff(x, Tables::new(cos.primitive, sin.primitive)))
        }
        (x, _, _) => {
            return plain(Tensor::from_primitive(TensorPrimitive::Float(same_route(
                x,
            ))));
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// The `cos` and `sin` tables `[t, r]`, contiguous.
#[derive(Debug, Clone)]
struct Tables {
    cos: FlexTensor,
    sin: FlexTensor,
}

impl Tables {
    fn new(cos: FlexTensor, sin: FlexTensor) -> Self {
        Tables {
            cos: cos.to_contiguous(),
            sin: sin.to_contiguous(),
        }
    }
}

/// Rows `[b h t]` of `d` elements of `x`: the buffer and each row's start,
/// read in place when the rows are contiguous (any strides above them).
fn rows(x: &FlexTensor) -> (FlexTensor, Vec<usize>) {
    let shape = x.shape();
    let [b, h, t] = [shape[0], shape[1], shape[2]];
    let layout = x.layout();
    let strides = layout.strides();
    let x = if strides[3] == 1 && strides[..3].iter().all(|&s| s >= 0) {
        x.clone()
    } else {
        x.to_contiguous()
    };
    let (layout, strides) = (x.layout(), x.layout().strides());
    let start = layout.start_offset();
    let starts = (0..b * h * t)
        .map(|row| {
            let (i, j, k) = (row / (h * t), row / t % h, row % t);
            start + i * strides[0] as usize + j * strides[1] as usize + k * strides[2] as usize
        })
        .collect();
    (x, starts)
}

/// Applies the rotation (or its transpose, `sign = -1`) to every row of `x`.
fn rotate(x: &FlexTensor, tables: &Tables, sign: f32) -> FlexTensor {
    let shape = x.shape();
    let (t, d) = (shape[2], shape[3]);
    let r = tables.cos.shape()[1];
    let half = r / 2;
    let (x, starts) = rows(x);
    let (input, cos, sin) = (
        x.storage::<f32>(),
        tables.cos.storage::<f32>(),
        tables.sin.storage::<f32>(),
    );
    let mut out = vec![0.0f32; starts.len() * d];
    let task = (CHUNK / d.max(1)).max(1);
    out.par_chunks_mut(task * d)
        .zip(starts.par_chunks(task))
        .enumerate()
        .for_each(|(n, (out, starts))| {
            for (k, (y, &start)) in out.chunks_mut(d).zip(starts).enumerate() {
                let x = &input[start..start + d];
                let pos = (n * task + k) % t;
                let (c, s) = (&cos[pos * r..(pos + 1) * r], &sin[pos * r..(pos + 1) * r]);
                if sign > 0.0 {
                    // y = x cos + [-x2, x1] sin
                    for j in 0..half {
                        y[j] = x[j] * c[j] + -x[j + half] * s[j];
                        y[j + half] = x[j + half] * c[j + half] + x[j] * s[j + half];
                    }
                } else {
                    // dx = g cos + [g2 sin2, -g1 sin1]
                    for j in 0..half {
                        y[j] = x[j] * c[j] + x[j + half] * s[j + half];
                        y[j + half] = x[j + half] * c[j + half] + -x[j] * s[j];
                    }
                }
                y[r..].copy_from_slice(&x[r..]);
            }
        });
    flex_f32(out, Shape::new([shape[0], shape[1], t, d]))
}

fn forward(x: &FlexTensor, tables: &Tables) -> FlexTensor {
    rotate(x, tables, 1.0)
}

#[derive(Debug)]
struct RotaryBackward;

impl Backward<Flex, 1> for RotaryBackward {
    type State = Tables;

    fn backward(self, ops: Ops<Tables, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let tables = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            rotate(&grad, &tables, -1.0)
        });
    }
}

fn autodiff(x: AdTensor, tables: Tables) -> AdTensor {
    match RotaryBackward
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let out = forward(&x.primitive, &tables);
            prep.finish(tables, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&x.primitive, &tables)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::position::{apply_rotary_plain, rotary_tables};
    use burn::backend::Autodiff;
    use burn::tensor::TensorData;

    type Ad = Autodiff<Flex>;

    /// A `[b, t, h, 3 d]` tensor whose middle third, as `[b, h, t, d]`, is a
    /// strided view like the attention's keys.
    fn keys<B: Backend>(
        b: usize,
        t: usize,
        h: usize,
        d: usize,
        device: &B::Device,
    ) -> Tensor<B, 4> {
        let values: Vec<f32> = (0..b * t * h * 3 * d)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 200.0)
            .collect();
        Tensor::<B, 4>::from_data(TensorData::new(values, [b, t, h, 3 * d]), device)
    }

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    /// Values equal the plain ops bit for bit, gradients within rounding,
    /// for a partial and a full rotation, on a strided view.
    #[test]
    fn matches_the_plain_ops_in_value_and_gradient() {
        let device = Default::default();
        let (b, t, h, d) = (2, 37, 3, 16);
        for r in [4, 16] {
            let (cos, sin) = rotary_tables::<Ad>(t, r, 10000.0, &device);
            let run = |fused: bool| {
                let qkv = keys::<Ad>(b, t, h, d, &device).require_grad();
                let k = qkv.clone().narrow(3, d, d).swap_dims(1, 2);
                let y = if fused {
                    rotary(k, &cos, &sin, |_| unreachable!())
                } else {
                    apply_rotary_plain(k, &cos, &sin)
                };
                let weights = keys::<Ad>(b, t, h, d, &device)
                    .narrow(3, 0, d)
                    .swap_dims(1, 2);
                let grads = (y.clone() * weights).sum().backward();
                (values(y), values(qkv.grad(&grads).unwrap()))
            };
            let ((y, dx), (y0, dx0)) = (run(true), run(false));
            assert_eq!(y, y0);
            for (a, b) in dx.iter().zip(&dx0) {
                assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
            }
            let (cos, sin) = rotary_tables::<Flex>(t, r, 10000.0, &device);
            let k = keys::<Flex>(b, t, h, d, &device)
                .narrow(3, d, d)
                .swap_dims(1, 2);
            assert_eq!(values(rotary(k, &cos, &sin, |_| unreachable!())), y);
        }
    }
}
