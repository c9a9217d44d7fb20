//! neox's patch: f32 products through matrixmultiply's packed AVX2/FMA
//! kernels, which reach 2-2.5x this crate's f32 throughput on the AMD EPYC
//! (Zen 4) machines neox is measured on (72-76 vs 28-32 GFLOP/s per core on
//! 512 x 768 x 3072 and the GPT-2 output layer's shapes).
//!
//! Threads: the output is cut into one block of rows or columns per thread
//! (the larger side, so that the operand packed again for every block is the
//! smaller one), each block one matrixmultiply call. The blocks do not change
//! the result: every element is the same sequence of multiply-adds in `k`
//! order with the same `k` blocking (a shape's property) whichever call
//! computes it, and flex asks for `dst := lhs rhs` (scale 1, nothing read),
//! so results are the same for any `RAYON_NUM_THREADS` (neox's
//! trainer/tests/threads.rs checks a training step on 1 and 2 threads).

use crate::Parallelism;

/// Smallest block (rows or columns).
const MIN_BLOCK: usize = 64;

/// A pointer that may cross to rayon's threads: the blocks write disjoint
/// parts of the output.
#[derive(Clone, Copy)]
struct Ptr<T>(*mut T);
unsafe impl<T> Send for Ptr<T> {}
unsafe impl<T> Sync for Ptr<T> {}

/// `dst := alpha dst + beta lhs rhs` (`alpha dst` only when `read_dst`), as
/// `gemm::gemm` defines it, for `[m, k] x [k, n]` with any strides.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_cs: isize,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const f32,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const f32,
    rhs_cs: isize,
    rhs_rs: isize,
    alpha: f32,
    beta: f32,
    parallelism: Parallelism,
) {
    let c_scale = if read_dst { alpha } else { 0.0 };
    let call = |m: usize, n: usize, dst: *mut f32, lhs: *const f32, rhs: *const f32| unsafe {
        matrixmultiply::sgemm(
            m, k, n, beta, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, c_scale, dst, dst_rs, dst_cs,
        )
    };
    if m == 0 || n == 0 {
        return;
    }
    // Cut the larger side of the output.
    let (rows, side) = if m > n { (true, m) } else { (false, n) };
    let threads = match parallelism {
        Parallelism::None => 1,
        #[cfg(feature = "rayon")]
        Parallelism::Rayon(0) => rayon::current_num_threads(),
        #[cfg(feature = "rayon")]
        Parallelism::Rayon(n) => n,
    };
    let blocks = threads.min(side / MIN_BLOCK).max(1);
    if blocks == 1 {
        return call(m, n, dst, lhs, rhs);
    }
    let size = side.div_ceil(blocks);
    let (dst, lhs, rhs) = (Ptr(dst), Ptr(lhs as *mut f32), Ptr(rhs as *mut f32));
    let block = move |i: usize| {
        let (start, len) = (i * size, size.min(side - i * size));
        let (dst, lhs, rhs) = (dst, lhs, rhs);
        if rows {
            let at = start as isize;
            call(
                len,
                n,
                dst.0.wrapping_offset(at * dst_rs),
                lhs.0.wrapping_offset(at * lhs_rs),
                rhs.0,
            );
        } else {
            let at = start as isize;
            call(
                m,
                len,
                dst.0.wrapping_offset(at * dst_cs),
                lhs.0,
                rhs.0.wrapping_offset(at * rhs_cs),
            );
        }
    };
    let blocks = side.div_ceil(size);
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        (0..blocks).into_par_iter().for_each(block);
    }
    #[cfg(not(feature = "rayon"))]
    (0..blocks).for_each(block);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a plain triple loop, for transposed operands and shapes
    /// that split into blocks and leave a ragged last block.
    #[test]
    fn matches_a_plain_product() {
        for &(m, n, k) in &[(3, 5, 7), (130, 70, 33), (70, 530, 65), (600, 20, 9)] {
            let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 - 6.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 - 3.0).collect();
            // a stored [m, k] row-major, b stored [n, k] (transposed).
            let mut c = vec![1.0f32; m * n];
            unsafe {
                sgemm(
                    m, n, k, c.as_mut_ptr(), 1, n as isize, true, a.as_ptr(), 1, k as isize,
                    b.as_ptr(), k as isize, 1, 2.0, 0.5, Parallelism::Rayon(0),
                );
            }
            for i in 0..m {
                for j in 0..n {
                    let dot: f32 = (0..k).map(|l| a[i * k + l] * b[j * k + l]).sum();
                    assert_eq!(c[i * n + j], 2.0 + 0.5 * dot, "{m}x{n}x{k} [{i}, {j}]");
                }
            }
        }
    }
}
