//! LayerNorm and RMSNorm over the last dimension as one op each way:
//! forward `y = (x - mean) / std * w + b` (RMSNorm: no mean, `std` the root
//! mean square); backward `dx = (g w - mean(g w) - x^ mean(g w x^)) / std`,
//! `dw = sum(g x^)`, `db = sum(g)` over the rows. The plain ops are about a
//! dozen passes each way, mostly single-threaded.
//!
//! Rows are split into blocks of a size fixed by the row width; the weight
//! and bias gradients are summed per block and the blocks' sums added in
//! block order, so the result does not depend on the thread count.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::{Shape, Tensor, TensorMetadata};
use rayon::prelude::*;

use super::{
    AdTensor, CHUNK, FlexTensor, Route, flex_f32, from_autodiff, from_flex, same_route, tensor,
};

/// The normalisation's kind and epsilon.
#[derive(Debug, Clone, Copy)]
pub struct NormSpec {
    /// LayerNorm (subtract the mean) or RMSNorm (not).
    pub center: bool,
    pub eps: f64,
}

/// `x` `[.., h]` normalised over its last dimension, scaled by `weight` `[h]`
/// and shifted by `bias` `[h]`: fused on flex in f32, else `plain` (which
/// gets the same arguments back).
pub fn norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    bias: Option<Tensor<B, 1>>,
    spec: NormSpec,
    plain: impl FnOnce(Tensor<B, D>, Tensor<B, 1>, Option<Tensor<B, 1>>) -> Tensor<B, D>,
) -> Tensor<B, D> {
    let x = Route::<B>::of(x.into_primitive().tensor());
    let w = Route::<B>::of(weight.into_primitive().tensor());
    let b = bias.map(|b| Route::<B>::of(b.into_primitive().tensor()));
    let out = match (x, w, b) {
        (Route::Flex(x), Route::Flex(w), None) => from_flex::<B>(forward(&x, &w, None, spec).0),
        (Route::Flex(x), Route::Flex(w), Some(Route::Flex(b))) => {
            from_flex::<B>(forward(&x, &w, Some(&b), spec).0)
        }
        (Route::Autodiff(x), Route::Autodiff(w), None) => {
            from_autodiff::<B>(autodiff(x, w, None, spec))
        }
        (Route::Autodiff(x), Route::Autodiff(w), Some(Route::Autodiff(b))) => {
            from_autodiff::<B>(autodiff(x, w, Some(b), spec))
        }
        (x, w, b) => {
            return plain(
                tensor(same_route(x)),
                tensor(same_route(w)),
                b.map(|b| tensor(same_route(b))),
            );
        }
    };
    tensor(out)
}

/// Rows per parallel block for rows of `h` elements (fixed by `h` alone).
fn block_rows(h: usize) -> usize {
    (CHUNK / h.max(1)).max(1)
}

/// Sum of `xs` in a fixed order (16 running sums, then theirs).
fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = xs.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// `(mean, std)` of one row: the mean (0 without centring) and
/// `sqrt(var + eps)` (the root mean square without centring).
fn row_stats(row: &[f32], spec: NormSpec) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = if spec.center { sum(row) / n } else { 0.0 };
    let mut acc = [0.0f32; 16];
    let chunks = row.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            let d = v - mean;
            *a += d * d;
        }
    }
    let sq = acc.iter().sum::<f32>() + rest.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>();
    let var = sq / n;
    (mean, (var + spec.eps as f32).sqrt())
}

/// The output and each row's `(mean, std)`.
fn forward(
    x: &FlexTensor,
    w: &FlexTensor,
    b: Option<&FlexTensor>,
    spec: NormSpec,
) -> (FlexTensor, Vec<(f32, f32)>) {
    let shape = x.shape();
    let h = shape[shape.num_dims() - 1];
    let (x, w) = (x.to_contiguous(), w.to_contiguous());
    let b = b.map(FlexTensor::to_contiguous);
    let (input, w) = (x.storage::<f32>(), w.storage::<f32>());
    let b = b.as_ref().map(|b| b.storage::<f32>());
    let mut out = vec![0.0f32; input.len()];
    let mut stats = vec![(0.0f32, 0.0f32); input.len() / h.max(1)];
    let rows = block_rows(h);
    out.par_chunks_mut(rows * h)
        .zip(input.par_chunks(rows * h))
        .zip(stats.par_chunks_mut(rows))
        .for_each(|((out, input), stats)| {
            for ((y, x), s) in out.chunks_mut(h).zip(input.chunks(h)).zip(stats) {
                let (mean, std) = row_stats(x, spec);
                *s = (mean, std);
                match b {
                    Some(b) => {
                        for (((y, x), w), b) in y.iter_mut().zip(x).zip(w).zip(b) {
                            *y = (x - mean) / std * w + b;
                        }
                    }
                    None => {
                        for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
                            *y = (x - mean) / std * w;
                        }
                    }
                }
            }
        });
    (flex_f32(out, shape), stats)
}

/// What the backward pass keeps: input, weight, row statistics.
#[derive(Debug, Clone)]
struct Saved {
    x: FlexTensor,
    w: FlexTensor,
    stats: Vec<(f32, f32)>,
    center: bool,
}

/// `dx`, and `(dw, db)` summed over the rows.
fn backward(saved: &Saved, grad: &FlexTensor) -> (FlexTensor, Vec<f32>, Vec<f32>) {
    let shape = saved.x.shape();
    let h = shape[shape.num_dims() - 1];
    let (x, w, g) = (
        saved.x.to_contiguous(),
        saved.w.to_contiguous(),
        grad.to_contiguous(),
    );
    let (x, w, g) = (x.storage::<f32>(), w.storage::<f32>(), g.storage::<f32>());
    let mut dx = vec![0.0f32; x.len()];
    let rows = block_rows(h);
    let n = h as f32;
    let partial: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(rows * h)
        .zip(x.par_chunks(rows * h))
        .zip(g.par_chunks(rows * h))
        .zip(saved.stats.par_chunks(rows))
        .map(|(((dx, x), g), stats)| {
            let (mut dw, mut db) = (vec![0.0f32; h], vec![0.0f32; h]);
            // Per row: x^, g w and g w x^.
            let (mut xhat, mut gw, mut gwx) = (vec![0.0f32; h], vec![0.0f32; h], vec![0.0f32; h]);
            for (((dx, x), g), &(mean, std)) in dx
                .chunks_mut(h)
                .zip(x.chunks(h))
                .zip(g.chunks(h))
                .zip(stats)
            {
                for i in 0..h {
                    xhat[i] = (x[i] - mean) / std;
                    gw[i] = g[i] * w[i];
                    gwx[i] = gw[i] * xhat[i];
                    dw[i] += g[i] * xhat[i];
                    db[i] += g[i];
                }
                let mean_gw = if saved.center { sum(&gw) / n } else { 0.0 };
                let mean_gwx = sum(&gwx) / n;
                for i in 0..h {
                    dx[i] = (gw[i] - mean_gw - xhat[i] * mean_gwx) / std;
                }
            }
            (dw, db)
        })
        .collect();
    let (mut dw, mut db) = (vec![0.0f32; h], vec![0.0f32; h]);
    for (pw, pb) in partial {
        for i in 0..h {
            dw[i] += pw[i];
            db[i] += pb[i];
        }
    }
    (flex_f32(dx, shape), dw, db)
}

#[derive(Debug)]
struct NormBackward;

impl Backward<Flex, 3> for NormBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let [x, w, b] = ops.parents;
        let h = ops.state.w.shape().num_elements();
        let (dx, dw, db) = backward(&ops.state, &grad);
        if let Some(node) = x {
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = w {
            grads.register::<Flex>(node.id, flex_f32(dw, Shape::new([h])));
        }
        if let Some(node) = b {
            grads.register::<Flex>(node.id, flex_f32(db, Shape::new([h])));
        }
    }
}

fn autodiff(x: AdTensor, w: AdTensor, b: Option<AdTensor>, spec: NormSpec) -> AdTensor {
    // Without a bias, a constant stands in for its node (it never gets a gradient).
    let h = w.primitive.shape().num_elements();
    let b_node = match &b {
        Some(b) => b.node.clone(),
        None => AdTensor::new(flex_f32(vec![0.0; h], Shape::new([h]))).node,
    };
    let bias = b.map(|b| b.primitive);
    match NormBackward
        .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone(), b_node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (out, stats) = forward(&x.primitive, &w.primitive, bias.as_ref(), spec);
            let saved = Saved {
                x: x.primitive,
                w: w.primitive,
                stats,
                center: spec.center,
            };
            prep.finish(saved, out)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(forward(&x.primitive, &w.primitive, bias.as_ref(), spec).0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::norm::{Norm, NormKind};
    use burn::backend::Autodiff;
    use burn::module::Param;
    use burn::tensor::TensorData;

    type Ad = Autodiff<Flex>;

    fn input<B: Backend>(rows: usize, h: usize, device: &B::Device) -> Tensor<B, 3> {
        let values: Vec<f32> = (0..rows * h)
            .map(|i| ((i * 7919 % 1013) as f32 - 480.0) / 300.0 + (i / h) as f32 * 0.01)
            .collect();
        Tensor::from_data(TensorData::new(values, [1, rows, h]), device)
    }

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * scale,
                "[{i}] {x} vs {y} (largest {scale})"
            );
        }
    }

    /// A norm with a non-trivial scale and bias.
    fn norm_of<B: Backend>(kind: NormKind, h: usize, bias: bool, device: &B::Device) -> Norm<B> {
        let mut norm = Norm::new(kind, h, 1e-5, bias, device);
        let scale: Vec<f32> = (0..h).map(|i| 0.5 + (i % 7) as f32 * 0.1).collect();
        norm.weight = Param::from_tensor(Tensor::from_data(TensorData::new(scale, [h]), device));
        if norm.bias.is_some() {
            let shift: Vec<f32> = (0..h).map(|i| (i % 5) as f32 * 0.03 - 0.05).collect();
            norm.bias = Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(shift, [h]),
                device,
            )));
        }
        norm
    }

    /// Value and gradients (of x, weight, bias) of the fused norm against
    /// the plain ops, for both kinds, with and without bias, over several
    /// parallel blocks.
    #[test]
    fn matches_the_plain_ops_in_value_and_gradients() {
        let device = Default::default();
        let (rows, h) = (3 * block_rows(96) + 5, 96);
        for (kind, bias) in [
            (NormKind::LayerNorm, true),
            (NormKind::LayerNorm, false),
            (NormKind::RmsNorm, false),
        ] {
            let norm = norm_of::<Ad>(kind, h, bias, &device);
            let run = |plain: bool| {
                let x = input::<Ad>(rows, h, &device).require_grad();
                let y = if plain {
                    norm.forward_plain(x.clone())
                } else {
                    norm.forward(x.clone())
                };
                let weights = input::<Ad>(rows, h, &device).flip([1]);
                let grads = (y.clone() * weights).sum().backward();
                let mut out = vec![values(y), values(x.grad(&grads).unwrap())];
                out.push(values(norm.weight.val().grad(&grads).unwrap()));
                if let Some(b) = &norm.bias {
                    out.push(values(b.val().grad(&grads).unwrap()));
                }
                out
            };
            let (fused, plain) = (run(false), run(true));
            close(&fused[0], &plain[0], 1e-6);
            close(&fused[1], &plain[1], 1e-5);
            for (f, p) in fused[2..].iter().zip(&plain[2..]) {
                close(f, p, 1e-4);
            }
            // Without autodiff the forward pass is the same kernel.
            let inner = norm_of::<Flex>(kind, h, bias, &device);
            assert_eq!(
                values(inner.forward(input::<Flex>(rows, h, &device))),
                fused[0]
            );
        }
    }
}
