//! The fused QKV output `[b t, (h + 2 kv) d]` split into queries
//! `[b, h, t, d]`, keys and values `[b, kv, t, d]` (the layout in
//! [`crate::model::attention`]'s doc), with one backward step.
//!
//! The forward pass is the plain view ops (a reshape, a `narrow` and a
//! `swap_dims` per part: no copy). Under autodiff, though, each `narrow`'s
//! backward allocates a zero tensor the size of the whole QKV output and
//! writes its part's gradient into it, and the three are summed: three
//! full-size allocations and zero fills, and two full-size additions per
//! layer and step. Here the parts' gradients are collected and written once,
//! each into its own columns of one fresh buffer (columns of a part without
//! a gradient are zeros).
//!
//! The graph: an identity node over the QKV output, whose three children
//! are the parts. Their backward steps run first (a child is deeper than its
//! parent) and hand their gradients to the shared slot; the identity's step
//! then writes the buffer and registers it as the gradient of the QKV
//! output. Each value is written as `g + 0`, the plain sum's bits (a `-0`
//! becomes `+0`), so the gradient is the plain ops' bit for bit.

use std::sync::{Arc, Mutex, PoisonError};

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::{Shape, Tensor};
use rayon::prelude::*;

use super::{AdTensor, CHUNK, FlexTensor, Route, from_autodiff, same_route, tensor};

/// `qkv` `[b t, (h + 2 kv) d]` as queries `[b, h, t, d]`, keys and values
/// `[b, kv, t, d]`: views, with one fused backward step under autodiff over
/// flex in f32; else the plain view ops.
pub fn split_heads<B: Backend>(
    qkv: Tensor<B, 2>,
    [b, t]: [usize; 2],
    h: usize,
    kv: usize,
    d: usize,
) -> [Tensor<B, 4>; 3] {
    let dims = Dims { b, t, h, kv, d };
    // Shapes the plain ops refuse are theirs to refuse; empty ones have
    // nothing to fuse.
    let fits = kv > 0 && h.is_multiple_of(kv) && qkv.dims() == [b * t, dims.width()];
    if !fits || b * t * d == 0 {
        return views(qkv, dims);
    }
    match Route::<B>::of(qkv.into_primitive().tensor()) {
        Route::Autodiff(x) => autodiff(x, dims).map(|x| tensor(from_autodiff::<B>(x))),
        x => views(tensor(same_route(x)), dims),
    }
}

/// The heads' sizes: batch `b`, sequence `t`, `h` query heads and `kv`
/// key/value heads of `d` features.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    h: usize,
    kv: usize,
    d: usize,
}

impl Dims {
    /// Features of a row of the QKV output.
    fn width(self) -> usize {
        (self.h + 2 * self.kv) * self.d
    }

    /// Heads of part `p` (0 queries, 1 keys, 2 values).
    fn heads(self, p: usize) -> usize {
        if p == 0 { self.h } else { self.kv }
    }

    /// The first column of head `j` of part `p` in a row of the QKV output:
    /// `[q, k, v]` per head when `kv == h`, else `[all q | all k | all v]`.
    fn column(self, p: usize, j: usize) -> usize {
        let Dims { h, kv, d, .. } = self;
        if kv == h {
            (3 * j + p) * d
        } else {
            [0, h * d, (h + kv) * d][p] + j * d
        }
    }
}

/// The plain view ops.
fn views<B: Backend>(qkv: Tensor<B, 2>, Dims { b, t, h, kv, d }: Dims) -> [Tensor<B, 4>; 3] {
    if kv == h {
        let qkv = qkv.reshape([b, t, h, 3 * d]);
        let part = |i: usize| qkv.clone().narrow(3, i * d, d).swap_dims(1, 2);
        [part(0), part(1), part(2)]
    } else {
        let qkv = qkv.reshape([b, t, (h + 2 * kv) * d]);
        let q = qkv.clone().narrow(2, 0, h * d).reshape([b, t, h, d]);
        let k = qkv.clone().narrow(2, h * d, kv * d).reshape([b, t, kv, d]);
        let v = qkv.narrow(2, (h + kv) * d, kv * d).reshape([b, t, kv, d]);
        [q, k, v].map(|x| x.swap_dims(1, 2))
    }
}

/// The parts' gradients, handed from their backward steps to the identity's.
type Slot = Arc<Mutex<[Option<FlexTensor>; 3]>>;

fn lock(slot: &Slot) -> std::sync::MutexGuard<'_, [Option<FlexTensor>; 3]> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The gradient of the QKV output `[b t, (h + 2 kv) d]` from its parts'
/// (`[b, heads, t, d]`, any strides): one fresh buffer, every value written
/// once, rows in tasks of a fixed size.
fn gather(parts: [Option<FlexTensor>; 3], dims: Dims) -> FlexTensor {
    let Dims { b, t, d, .. } = dims;
    let width = dims.width();
    // Each part as a buffer with rows of `d` contiguous values.
    let grads = parts.map(|g| {
        g.map(|g| {
            let strides = g.layout().strides();
            if strides[3] == 1 && strides.iter().all(|&s| s >= 0) {
                g
            } else {
                g.to_contiguous()
            }
        })
    });
    // Each as its values from the first and its strides over `[b, heads, t]`.
    let parts = grads.each_ref().map(|g| {
        g.as_ref().map(|g| {
            let (layout, s) = (g.layout(), g.layout().strides());
            let at = [s[0] as usize, s[1] as usize, s[2] as usize];
            (&g.storage::<f32>()[layout.start_offset()..], at)
        })
    });
    let len = b * t * width;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let rows = (CHUNK / width).max(1);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(rows * width)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (r, row) in chunk.chunks_mut(width).enumerate() {
                let (i, k) = ((task * rows + r) / t, (task * rows + r) % t);
                for (p, part) in parts.iter().enumerate() {
                    for j in 0..dims.heads(p) {
                        let c = dims.column(p, j);
                        let dst = &mut row[c..c + d];
                        match part {
                            Some((g, [s0, s1, s2])) => {
                                let at = i * s0 + j * s1 + k * s2;
                                let src = &g[at..at + d];
                                for (y, &x) in dst.iter_mut().zip(src) {
                                    y.write(x + 0.0);
                                }
                            }
                            None => {
                                for y in dst {
                                    y.write(0.0);
                                }
                            }
                        }
                    }
                }
            }
        });
    // SAFETY: the parts' heads tile every row's `width` columns (`column`),
    // so every one of the `len` values was written above.
    unsafe { out.set_len(len) };
    super::flex_f32(out, Shape::new([b * t, width]))
}

/// A part's step: its gradient, handed on.
#[derive(Debug)]
struct PartBackward(usize);

impl Backward<Flex, 1> for PartBackward {
    type State = Slot;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        lock(&ops.state)[self.0] = Some(grad);
    }
}

/// The identity's step: the parts' gradients written into one buffer.
#[derive(Debug)]
struct GatherBackward;

impl Backward<Flex, 1> for GatherBackward {
    type State = (Slot, Dims);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (slot, dims) = ops.state;
        let parts = std::mem::take(&mut *lock(&slot));
        let [parent] = ops.parents;
        if let Some(node) = parent {
            grads.register::<Flex>(node.id, gather(parts, dims));
        }
    }
}

fn autodiff(qkv: AdTensor, dims: Dims) -> [AdTensor; 3] {
    let slot = Slot::default();
    let parts =
        views::<Flex>(tensor(qkv.primitive.clone()), dims).map(|x| x.into_primitive().tensor());
    let whole = match GatherBackward
        .prepare::<NoCheckpointing>([qkv.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((slot.clone(), dims), qkv.primitive),
        OpsKind::UnTracked(prep) => prep.finish(qkv.primitive),
    };
    let part = |p: usize, x| match PartBackward(p)
        .prepare::<NoCheckpointing>([whole.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(slot.clone(), x),
        OpsKind::UnTracked(prep) => prep.finish(x),
    };
    let [q, k, v] = parts;
    [part(0, q), part(1, k), part(2, v)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::tensor::{DType, FloatDType, TensorData};

    type Ad = Autodiff<Flex>;

    /// `(b, t, h, kv, d)`: one head per key/value head and grouped queries,
    /// one token and one sequence, and rows over several parallel tasks.
    const SHAPES: [(usize, usize, usize, usize, usize); 7] = [
        (1, 1, 4, 4, 8),
        (2, 5, 4, 4, 8),
        (2, 40, 8, 8, 16),
        (1, 7, 4, 2, 8),
        (3, 1, 6, 1, 4),
        (3, 50, 8, 2, 16),
        (1, 1, 2, 1, 2),
    ];

    /// Values with some `-0.0` among them.
    fn matrix<B: Backend, const D: usize>(
        shape: [usize; D],
        seed: usize,
        device: &B::Device,
    ) -> Tensor<B, D> {
        let n = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|i| match ((i + seed) * 7919) % 1013 {
                506 | 17 => -0.0,
                v => (v as f32 - 506.0) / 300.0,
            })
            .collect();
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    fn bits<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<u32> {
        let values: Vec<f32> = t.into_data().to_vec().unwrap();
        values.into_iter().map(f32::to_bits).collect()
    }

    /// The forward values, and under autodiff the gradient of `qkv` with
    /// the parts' gradients arriving contiguous (queries), transposed
    /// (keys) and from a product (values), or without one for the keys
    /// (`keys` false): bit for bit the plain view ops'.
    #[test]
    fn equals_the_plain_ops_bit_for_bit() {
        let device = Default::default();
        for (b, t, h, kv, d) in SHAPES {
            let dims = Dims { b, t, h, kv, d };
            let shape = [b * t, dims.width()];
            let x = matrix::<Flex, 2>(shape, 1, &device);
            let fused = split_heads(x.clone(), [b, t], h, kv, d).map(bits);
            assert_eq!(fused, views(x, dims).map(bits), "{dims:?}");
            for keys in [true, false] {
                let run = |fused: bool| {
                    let x = matrix::<Ad, 2>(shape, 1, &device).require_grad();
                    let [q, k, v] = if fused {
                        split_heads(x.clone(), [b, t], h, kv, d)
                    } else {
                        views(x.clone(), dims)
                    };
                    let out = [bits(q.clone()), bits(k.clone()), bits(v.clone())];
                    let mut loss = (q * matrix::<Ad, 4>([b, h, t, d], 2, &device)).sum();
                    if keys {
                        let w = matrix::<Ad, 4>([b, kv, d, t], 3, &device);
                        loss = loss + (k.swap_dims(2, 3) * w).sum();
                    }
                    let w = matrix::<Ad, 4>([b, kv, d, 3], 4, &device);
                    loss = loss + v.matmul(w).sum();
                    let grads = loss.backward();
                    (out, bits(x.grad(&grads).unwrap()))
                };
                assert!(run(true) == run(false), "{dims:?}, keys {keys}");
            }
        }
    }

    /// Without gradients (an untracked `qkv`), and in half precision, the
    /// parts are the plain views.
    #[test]
    fn untracked_and_half_precision_parts_are_the_plain_views() {
        let device = Default::default();
        let (b, t, h, kv, d) = SHAPES[3];
        let dims = Dims { b, t, h, kv, d };
        let x = matrix::<Ad, 2>([b * t, dims.width()], 1, &device);
        let fused = split_heads(x.clone(), [b, t], h, kv, d).map(bits);
        assert_eq!(fused, views(x.clone(), dims).map(bits));
        let half = x.cast(FloatDType::F16).require_grad();
        let parts = split_heads(half.clone(), [b, t], h, kv, d);
        assert!(parts.iter().all(|p| p.dtype() == DType::F16));
        let grads = parts.map(|p| p.sum()).into_iter().reduce(|a, b| a + b);
        let grad = half.grad(&grads.unwrap().backward()).unwrap();
        assert_eq!(grad.dtype(), DType::F16);
        let ones: Vec<f32> = grad.cast(FloatDType::F32).into_data().to_vec().unwrap();
        assert!(ones.iter().all(|&g| g == 1.0));
    }
}
