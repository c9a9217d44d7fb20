//! A linear layer `y = x W + b` on rows `x` `[n, in]` as one op each way on
//! flex in f32: forward one GEMM and the bias added in place; backward
//! `dx = dy W^T`, `dW = x^T dy` (GEMMs reading the saved operands through
//! their strides, no transposed copies) and `db` the column sums of `dy`.
//!
//! The results are the plain ops' bit for bit (the same GEMM calls, the bias
//! added after the product, `db` summed row after row); what goes is memory
//! traffic: flex allocates each product's output zeroed and then copies it
//! into an aligned buffer (two passes over `[n, out]` before the GEMM writes
//! it, 100 MB for the GPT-2 vocabulary's logits of 512 tokens), and its
//! `linear` adds the bias as a separate op. Here every output is a fresh
//! buffer that the GEMM writes once.
//!
//! A weight gradient takes its weight's layout: a transposed view (the tied
//! output layer's `embed_in^T`) gets a transposed view of a contiguous
//! gradient, which the view's own backward step turns back into a
//! contiguous one.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Shape, Tensor};
use rayon::prelude::*;

use super::{
    AdTensor, CHUNK, FlexTensor, Route, flex_f32, from_autodiff, from_flex, same_route, tensor,
};

/// `layer` applied to rows `x` `[n, in]`: fused on flex in f32, else `Linear::forward`.
pub fn forward<B: Backend>(layer: &Linear<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    linear(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}

/// `x W + b` for rows `x` `[n, in]`, weight `[in, out]` (any strides), bias
/// `[out]`: fused on flex in f32, else Burn's `linear`.
pub fn linear<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 2> {
    let x = Route::<B>::of(x.into_primitive().tensor());
    let w = Route::<B>::of(weight.into_primitive().tensor());
    let b = bias.map(|b| Route::<B>::of(b.into_primitive().tensor()));
    let out = match (x, w, b) {
        (Route::Flex(x), Route::Flex(w), None) => from_flex::<B>(product_forward(&x, &w, None)),
        (Route::Flex(x), Route::Flex(w), Some(Route::Flex(b))) => {
            from_flex::<B>(product_forward(&x, &w, Some(&b)))
        }
        (Route::Autodiff(x), Route::Autodiff(w), None) => from_autodiff::<B>(autodiff(x, w, None)),
        (Route::Autodiff(x), Route::Autodiff(w), Some(Route::Autodiff(b))) => {
            from_autodiff::<B>(autodiff(x, w, Some(b)))
        }
        (x, w, b) => {
            return burn::tensor::module::linear(
                tensor(same_route(x)),
                tensor(same_route(w)),
                b.map(|b| tensor(same_route(b))),
            );
        }
    };
    tensor(out)
}

/// A matrix read through its layout: `[rows, cols]` at `data` with strides.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: isize,
    col_stride: isize,
}

impl<'a> View<'a> {
    fn of(t: &'a FlexTensor) -> Self {
        let layout = t.layout();
        let (shape, strides) = (layout.shape(), layout.strides());
        View {
            data: &t.storage::<f32>()[layout.start_offset()..],
            rows: shape[0],
            cols: shape[1],
            row_stride: strides[0],
            col_stride: strides[1],
        }
    }

    fn transposed(self) -> Self {
        View {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

/// `lhs rhs` `[m, n]` in a new buffer, stored with row stride `row_stride`
/// and column stride `col_stride` (`n`, 1: row-major; 1, `m`: column-major).
/// The GEMM call is flex's for a 2-d matmul (so the products are flex's bit
/// for bit), with flex's threshold for threading.
fn product(lhs: View, rhs: View, row_stride: isize, col_stride: isize) -> Vec<f32> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    debug_assert_eq!(k, rhs.rows, "inner dimensions");
    let len = m * n;
    if k == 0 {
        return vec![0.0; len];
    }
    let parallelism = if m.saturating_mul(n).saturating_mul(k) >= 192 * 192 * 192 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    let mut out: Vec<f32> = Vec::with_capacity(len);
    // SAFETY: the operands' views stay within their storage (their layouts
    // say so); `out` has room for `m n` values at the given strides, and a
    // GEMM that does not read its destination (`read_dst` false) writes
    // every one of them, so all `len` values are initialised before `set_len`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.spare_capacity_mut().as_mut_ptr().cast::<f32>(),
            col_stride,
            row_stride,
            false,
            lhs.data.as_ptr(),
            lhs.col_stride,
            lhs.row_stride,
            rhs.data.as_ptr(),
            rhs.col_stride,
            rhs.row_stride,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
        out.set_len(len);
    }
    out
}

/// A new f32 flex tensor `[rows, cols]` over `values` stored with the given
/// strides: row-major (`[cols, 1]`) or column-major (`[1, rows]`).
fn flex_2d(values: Vec<f32>, rows: usize, cols: usize, strides: [isize; 2]) -> FlexTensor {
    if strides == [1, rows as isize] && cols != 1 {
        flex_f32(values, Shape::new([cols, rows])).transpose(0, 1)
    } else {
        flex_f32(values, Shape::new([rows, cols]))
    }
}

/// Rows of `out` values per parallel task of the bias add and its gradient.
fn rows_per_task(out: usize) -> usize {
    (CHUNK / out.max(1)).max(1)
}

fn product_forward(x: &FlexTensor, w: &FlexTensor, b: Option<&FlexTensor>) -> FlexTensor {
    let (x, w) = (View::of(x), View::of(w));
    let (n, out) = (x.rows, w.cols);
    let mut y = product(x, w, out as isize, 1);
    if let Some(b) = b {
        let b = b.to_contiguous();
        let b = b.storage::<f32>();
        y.par_chunks_mut(rows_per_task(out) * out).for_each(|rows| {
            for row in rows.chunks_exact_mut(out) {
                for (v, b) in row.iter_mut().zip(b) {
                    *v += *b;
                }
            }
        });
    }
    flex_2d(y, n, out, [out as isize, 1])
}

/// `dx = dy W^T` `[n, in]`.
fn grad_x(w: &FlexTensor, dy: &FlexTensor) -> FlexTensor {
    let (w, dy) = (View::of(w), View::of(dy));
    let (n, d_in) = (dy.rows, w.rows);
    flex_2d(
        product(dy, w.transposed(), d_in as isize, 1),
        n,
        d_in,
        [d_in as isize, 1],
    )
}

/// `dW = x^T dy` `[in, out]`, laid out as the weight is: column-major for a
/// transposed view (unit row stride), else row-major.
fn grad_w(x: &FlexTensor, w: &FlexTensor, dy: &FlexTensor) -> FlexTensor {
    let (x, dy) = (View::of(x), View::of(dy));
    let (d_in, d_out) = (x.cols, dy.cols);
    let weight = View::of(w);
    let strides = if weight.row_stride == 1 && weight.col_stride != 1 {
        [1, d_in as isize]
    } else {
        [d_out as isize, 1]
    };
    flex_2d(
        product(x.transposed(), dy, strides[0], strides[1]),
        d_in,
        d_out,
        strides,
    )
}

/// `db` `[out]`: the columns of `dy` summed row after row (flex's `sum_dim(0)`
/// order), in parallel over blocks of columns.
fn grad_b(dy: &FlexTensor) -> FlexTensor {
    let dy = dy.to_contiguous();
    let [n, out] = [dy.layout().shape()[0], dy.layout().shape()[1]];
    let rows = dy.storage::<f32>();
    let mut sums = vec![0.0f32; out];
    let block = (CHUNK / n.max(1)).clamp(16, out.max(16));
    sums.par_chunks_mut(block)
        .enumerate()
        .for_each(|(i, sums)| {
            let start = i * block;
            for row in rows.chunks_exact(out) {
                for (s, v) in sums.iter_mut().zip(&row[start..]) {
                    *s += *v;
                }
            }
        });
    flex_f32(sums, Shape::new([out]))
}

/// The saved operands: `x` for the weight's gradient, `W` for the input's.
#[derive(Debug)]
struct LinearBackward<const N: usize>;

impl<const N: usize> Backward<Flex, N> for LinearBackward<N> {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, w) = ops.state;
        let mut parents = ops.parents.into_iter();
        if let Some(node) = parents.next().flatten() {
            grads.register::<Flex>(node.id, grad_x(&w, &dy));
        }
        if let Some(node) = parents.next().flatten() {
            grads.register::<Flex>(node.id, grad_w(&x, &w, &dy));
        }
        if let Some(node) = parents.next().flatten() {
            grads.register::<Flex>(node.id, grad_b(&dy));
        }
    }
}

fn autodiff(x: AdTensor, w: AdTensor, b: Option<AdTensor>) -> AdTensor {
    match b {
        Some(b) => match LinearBackward::<3>
            .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone(), b.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = product_forward(&x.primitive, &w.primitive, Some(&b.primitive));
                prep.finish((x.primitive, w.primitive), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(product_forward(
                &x.primitive,
                &w.primitive,
                Some(&b.primitive),
            )),
        },
        None => match LinearBackward::<2>
            .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = product_forward(&x.primitive, &w.primitive, None);
                prep.finish((x.primitive, w.primitive), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(product_forward(&x.primitive, &w.primitive, None))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::tensor::TensorData;

    type Ad = Autodiff<Flex>;

    fn matrix<B: Backend>(
        rows: usize,
        cols: usize,
        seed: usize,
        device: &B::Device,
    ) -> Tensor<B, 2> {
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| (((i + seed) * 7919 % 1013) as f32 - 506.0) / 300.0)
            .collect();
        Tensor::from_data(TensorData::new(values, [rows, cols]), device)
    }

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    /// Rows spanning several parallel tasks, and an inner size above the
    /// GEMM's `k` block (so that the bias's place in the sum would show).
    const SHAPES: [(usize, usize, usize); 3] = [(3, 5, 7), (70, 300, 520), (600, 33, 40)];

    #[test]
    fn forward_equals_the_plain_linear_bit_for_bit() {
        let device = Default::default();
        for (n, d_in, d_out) in SHAPES {
            for bias in [false, true] {
                let x = matrix::<Flex>(n, d_in, 1, &device);
                let w = matrix::<Flex>(d_in, d_out, 2, &device);
                let b = bias.then(|| matrix::<Flex>(1, d_out, 3, &device).reshape([d_out]));
                let plain = burn::tensor::module::linear(x.clone(), w.clone(), b.clone());
                assert_eq!(values(linear(x, w, b)), values(plain), "{n}x{d_in}x{d_out}");
            }
        }
    }

    /// Under autodiff: the output and the gradients of input, weight and
    /// bias equal Burn's autodiff `linear` bit for bit, for a contiguous and
    /// a transposed (strided) input.
    #[test]
    fn gradients_equal_the_plain_linear_bit_for_bit() {
        let device = Default::default();
        for (n, d_in, d_out) in SHAPES {
            for (bias, transposed) in [(true, false), (false, false), (true, true)] {
                let run = |fused: bool| {
                    let x = if transposed {
                        matrix::<Ad>(d_in, n, 1, &device).require_grad()
                    } else {
                        matrix::<Ad>(n, d_in, 1, &device).require_grad()
                    };
                    let w = matrix::<Ad>(d_in, d_out, 2, &device).require_grad();
                    let b = matrix::<Ad>(1, d_out, 3, &device)
                        .reshape([d_out])
                        .require_grad();
                    let input = if transposed {
                        x.clone().transpose()
                    } else {
                        x.clone()
                    };
                    let bias = bias.then(|| b.clone());
                    let y = if fused {
                        linear(input, w.clone(), bias)
                    } else {
                        burn::tensor::module::linear(input, w.clone(), bias)
                    };
                    let seed = matrix::<Ad>(n, d_out, 4, &device);
                    let grads = (y.clone() * seed).sum().backward();
                    let grad_b = b.grad(&grads).map(values);
                    (
                        values(y),
                        values(x.grad(&grads).unwrap()),
                        values(w.grad(&grads).unwrap()),
                        grad_b,
                    )
                };
                assert!(run(true) == run(false), "{n}x{d_in}x{d_out} bias {bias}");
            }
        }
    }

    /// The tied output layer's `x E^T`: the table's gradient arrives
    /// contiguous and equals the plain product's.
    #[test]
    fn a_transposed_weight_gets_its_gradient_in_its_own_layout() {
        let device = Default::default();
        let (n, hidden, vocab) = (40, 300, 90);
        let run = |fused: bool| {
            let x = matrix::<Ad>(n, hidden, 1, &device).require_grad();
            let table = matrix::<Ad>(vocab, hidden, 2, &device).require_grad();
            let y = if fused {
                linear(x.clone(), table.clone().transpose(), None)
            } else {
                x.clone().matmul(table.clone().transpose())
            };
            let grads = (y * matrix::<Ad>(n, vocab, 4, &device)).sum().backward();
            let grad = table.grad(&grads).unwrap();
            let contiguous = grad.clone().into_primitive().tensor().is_contiguous();
            (values(x.grad(&grads).unwrap()), values(grad), contiguous)
        };
        let (fused, plain) = (run(true), run(false));
        assert_eq!(fused.0, plain.0);
        assert_eq!(fused.1, plain.1);
        assert!(fused.2, "the table's gradient is contiguous");
    }

    #[test]
    fn other_dtypes_take_the_plain_ops() {
        let device = Default::default();
        let half = |t: Tensor<Flex, 2>| t.cast(burn::tensor::FloatDType::F16);
        let x = half(matrix::<Flex>(4, 3, 1, &device));
        let w = half(matrix::<Flex>(3, 2, 2, &device));
        let y = linear(x.clone(), w.clone(), None);
        assert_eq!(y.dtype(), burn::tensor::DType::F16);
        y.into_data()
            .assert_eq(&burn::tensor::module::linear(x, w, None).into_data(), true);
    }
}
