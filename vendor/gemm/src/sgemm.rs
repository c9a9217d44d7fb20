//! neox's patch: f32 products through matrixmultiply's packed AVX-512 /
//! AVX2 / FMA kernels, which reach 2-3x this crate's f32 throughput on the
//! AMD EPYC (Zen 4) machines neox is measured on (README.neox.md).
//!
//! Threads: the output is cut into one block of rows or columns per thread
//! (the larger side, so that the operand packed again for every block is the
//! smaller one), in whole 16 x 16 kernel tiles, each block computed alone.
//! The blocks do not change the result: every element is the same sequence
//! of multiply-adds in `k` order with the same `k` blocking (a shape's
//! property) whichever call computes it, and the partial tiles at the edges
//! stay where one call has them, so results are the same for any
//! `RAYON_NUM_THREADS` (neox's trainer/tests/threads.rs checks a training
//! step on 1 and 2 threads; the tests below check bits against one call).
//!
//! Layouts: matrixmultiply packs `lhs` with contiguous copies only when it
//! is column-major and `rhs` only when it is row-major; any other layout is
//! copied element by element, and `lhs` is packed again for every 1024
//! columns of the output (49 times for GPT-2's output layer). A row-major
//! `lhs` (every forward `x W`) or a transposed `rhs` (`dy W^T`, `q k^T`)
//! is therefore first transposed into a per-thread scratch buffer
//! (transpose.rs), all of it when it fits, else in slabs of `k` (multiples
//! of matrixmultiply's `k` block, so the sums keep their order and blocking:
//! a slab after the first adds to the output, exactly as matrixmultiply adds
//! one `k` block to the next).

use crate::Parallelism;

/// Smallest block (rows or columns).
const MIN_BLOCK: usize = 64;

/// matrixmultiply's blocking, the same for each of its f32 kernels
/// (`archparam::S_KC`, `S_NC`): `k` in blocks of `KC`, columns of the output
/// in blocks of `NC`. matrixmultiply lets `MATMUL_SGEMM_KC` / `_NC` change
/// them at build time: with other values the slabs below would no longer
/// end where its k blocks end, so a build that sets them must set these too
/// (`bit_identical_to_one_matrixmultiply_call` fails otherwise).
const KC: usize = 256;
const NC: usize = 1024;

/// Products below this many multiply-adds take matrixmultiply's own packing.
const SMALL: usize = 16 * 16 * 16;

/// How much of the operands is transposed at once.
#[derive(Clone, Copy)]
struct Limits {
    /// All of them when they have at most this many elements together...
    whole: usize,
    /// ... else slabs of `k` of about this many elements each.
    slab: usize,
}

/// 4 MiB whole, 1 MiB slabs: a slab is transposed just before
/// matrixmultiply packs it, while it is still in cache.
const LIMITS: Limits = Limits {
    whole: 1 << 20,
    slab: 1 << 18,
};

/// A matrix: its first element and its row and column strides. It may
/// cross to rayon's threads: the blocks write disjoint parts of the output.
#[derive(Clone, Copy)]
struct Mat<P> {
    ptr: P,
    rs: isize,
    cs: isize,
}
unsafe impl<P> Send for Mat<P> {}
unsafe impl<P> Sync for Mat<P> {}

impl Mat<*const f32> {
    fn at(self, row: usize, col: usize) -> Self {
        let ptr = self
            .ptr
            .wrapping_offset(row as isize * self.rs + col as isize * self.cs);
        Mat { ptr, ..self }
    }
}

impl Mat<*mut f32> {
    fn at(self, row: usize, col: usize) -> Self {
        let ptr = self
            .ptr
            .wrapping_offset(row as isize * self.rs + col as isize * self.cs);
        Mat { ptr, ..self }
    }
}

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
    if m == 0 || n == 0 {
        return;
    }
    let c_scale = if read_dst { alpha } else { 0.0 };
    let a = Mat {
        ptr: lhs,
        rs: lhs_rs,
        cs: lhs_cs,
    };
    let b = Mat {
        ptr: rhs,
        rs: rhs_rs,
        cs: rhs_cs,
    };
    let c = Mat {
        ptr: dst,
        rs: dst_rs,
        cs: dst_cs,
    };
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
        return product(m, n, k, a, b, c, beta, c_scale, LIMITS);
    }
    // Blocks of whole 16 x 16 kernel tiles: the ragged tiles stay where a
    // single call has them.
    let size = side.div_ceil(blocks).next_multiple_of(16);
    let block = move |i: usize| {
        let (start, len) = (i * size, size.min(side - i * size));
        unsafe {
            if rows {
                product(
                    len,
                    n,
                    k,
                    a.at(start, 0),
                    b,
                    c.at(start, 0),
                    beta,
                    c_scale,
                    LIMITS,
                )
            } else {
                product(
                    m,
                    len,
                    k,
                    a,
                    b.at(0, start),
                    c.at(0, start),
                    beta,
                    c_scale,
                    LIMITS,
                )
            }
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

/// `c := c_scale c + alpha a b` on one thread, with slow-to-pack operands
/// transposed first (see the top of this file).
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    m: usize,
    n: usize,
    k: usize,
    a: Mat<*const f32>,
    b: Mat<*const f32>,
    c: Mat<*mut f32>,
    alpha: f32,
    c_scale: f32,
    limits: Limits,
) {
    // matrixmultiply copies `a` contiguously when column-major, `b` when row-major.
    let slow_a = m > 1 && a.rs != 1 && a.cs == 1;
    let slow_b = n > 1 && b.cs != 1 && b.rs == 1;
    if !(slow_a || slow_b) || k == 0 || m.saturating_mul(n).saturating_mul(k) < SMALL {
        return mm(m, n, k, a, b, c, alpha, c_scale);
    }
    #[cfg(not(feature = "std"))]
    return mm(m, n, k, a, b, c, alpha, c_scale);
    #[cfg(feature = "std")]
    scratch::with(|scratch| {
        // A slab: `ks` of `k` (a multiple of KC unless all of `k`) by `nb` of `n`.
        let whole = slow_a as usize * m * k + slow_b as usize * k * n <= limits.whole;
        let (ks, nb) = if whole {
            (k, n)
        } else {
            let depth = |elements: usize| (elements / KC).max(1) * KC;
            let mut ks = k;
            if slow_a {
                ks = ks.min(depth(limits.slab / m));
            }
            if slow_b {
                ks = ks.min(depth(limits.slab / n.min(NC)));
            }
            // Columns: the output block a slab adds to stays small enough
            // to stay in cache between slabs.
            let nb = if slow_b {
                (limits.slab / ks / NC).max(1) * NC
            } else {
                4 * NC
            };
            (ks, nb.min(n))
        };
        let a_len = if slow_a {
            (m * ks).next_multiple_of(16)
        } else {
            0
        };
        let b_len = if slow_b { ks * nb } else { 0 };
        let (sa, sb) = scratch.split(a_len, b_len);
        for n0 in (0..n).step_by(nb) {
            let nb = nb.min(n - n0);
            for k0 in (0..k).step_by(ks) {
                let ks = ks.min(k - k0);
                let a = if slow_a {
                    crate::transpose::transpose(m, ks, a.at(0, k0).ptr, a.rs, sa, m);
                    Mat {
                        ptr: sa as *const f32,
                        rs: 1,
                        cs: m as isize,
                    }
                } else {
                    a.at(0, k0)
                };
                let b = if slow_b {
                    crate::transpose::transpose(nb, ks, b.at(k0, n0).ptr, b.cs, sb, nb);
                    Mat {
                        ptr: sb as *const f32,
                        rs: nb as isize,
                        cs: 1,
                    }
                } else {
                    b.at(k0, n0)
                };
                let scale = if k0 == 0 { c_scale } else { 1.0 };
                mm(m, nb, ks, a, b, c.at(0, n0), alpha, scale);
            }
        }
    })
}

/// `c := c_scale c + alpha a b`: one matrixmultiply call.
#[allow(clippy::too_many_arguments)]
unsafe fn mm(
    m: usize,
    n: usize,
    k: usize,
    a: Mat<*const f32>,
    b: Mat<*const f32>,
    c: Mat<*mut f32>,
    alpha: f32,
    c_scale: f32,
) {
    matrixmultiply::sgemm(
        m, k, n, alpha, a.ptr, a.rs, a.cs, b.ptr, b.rs, b.cs, c_scale, c.ptr, c.rs, c.cs,
    )
}

/// Each thread's scratch for transposed operands, kept between products
/// (allocated and faulted in once, grown when a larger one comes).
#[cfg(feature = "std")]
mod scratch {
    use std::cell::RefCell;

    pub(super) struct Scratch(Vec<f32>);

    std::thread_local! {
        static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch(Vec::new())) };
    }

    /// Runs `f` with this thread's scratch.
    pub(super) fn with(f: impl FnOnce(&mut Scratch)) {
        SCRATCH.with(|s| f(&mut s.borrow_mut()))
    }

    impl Scratch {
        /// Two disjoint buffers of `a` and `b` elements, each 64-byte aligned
        /// (`a` a multiple of 16).
        pub(super) fn split(&mut self, a: usize, b: usize) -> (*mut f32, *mut f32) {
            let need = a + b + 16;
            if self.0.len() < need {
                self.0 = vec![0.0; need];
            }
            let base = self.0.as_mut_ptr();
            // `align_offset` may answer "cannot" (usize::MAX): then no
            // shift (the loads and stores are unaligned anyway).
            let shift = base.align_offset(64);
            let base = base.wrapping_add(if shift < 16 { shift } else { 0 });
            (base, base.wrapping_add(a))
        }
    }
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
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    true,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    k as isize,
                    1,
                    2.0,
                    0.5,
                    Parallelism::Rayon(0),
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

    /// An operand stored row-major (`transposed`: stored `[cols, rows]`), in a
    /// buffer with a padded leading dimension.
    fn operand(rows: usize, cols: usize, transposed: bool, seed: u32) -> (Vec<f32>, isize, isize) {
        let (outer, inner) = if transposed {
            (cols, rows)
        } else {
            (rows, cols)
        };
        let ld = inner + 3;
        // Values with full mantissas, so that any change of order shows.
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let data = (0..outer * ld)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect();
        let (rs, cs) = if transposed {
            (1, ld as isize)
        } else {
            (ld as isize, 1)
        };
        (data, rs, cs)
    }

    /// Bit for bit what one matrixmultiply call on the operands as given
    /// computes, for each layout of both operands, scales, thread counts
    /// and slab limits small enough that every slab path runs, with `k`
    /// over several of matrixmultiply's `k` blocks and ragged shapes.
    /// With `read_dst` false every element of the destination is written
    /// and none is read: neox's fused linear layers hand `gemm::gemm` an
    /// uninitialised buffer on that promise. NaN in, the product out, for
    /// small, whole and sliced products on one and two threads.
    #[test]
    fn a_destination_it_does_not_read_is_written_whole() {
        for &(m, n, k) in &[(3, 5, 7), (16, 16, 16), (40, 1100, 600), (600, 40, 9)] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let (a, rsa, csa) = operand(m, k, ta, 3);
                let (b, rsb, csb) = operand(k, n, tb, 4);
                for parallelism in [Parallelism::None, Parallelism::Rayon(2)] {
                    let mut c = vec![f32::NAN; m * n];
                    unsafe {
                        crate::gemm::gemm(
                            m, n, k, c.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), csa, rsa,
                            b.as_ptr(), csb, rsb, 0.0, 1.0, false, false, false, parallelism,
                        );
                    }
                    for i in 0..m {
                        for j in 0..n {
                            let at = |x: &[f32], r: isize, c: isize| x[(r + c) as usize];
                            let dot: f32 = (0..k as isize)
                                .map(|l| at(&a, i as isize * rsa, l * csa) * at(&b, l * rsb, j as isize * csb))
                                .sum();
                            let got = c[i * n + j];
                            assert!(
                                (got - dot).abs() <= 1e-4 * (1.0 + dot.abs()),
                                "{m}x{n}x{k} ta={ta} tb={tb} [{i}, {j}]: {got} vs {dot}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bit_identical_to_one_matrixmultiply_call() {
        let tiny = Limits {
            whole: 3000,
            slab: 1000,
        };
        let shapes = [
            (1, 40, 300),
            (40, 1, 300),
            (16, 16, 16),
            (33, 17, 600),
            (130, 70, 513),
            (70, 1100, 290),
            (300, 2100, 520),
        ];
        for &(m, n, k) in &shapes {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let (a, rsa, csa) = operand(m, k, ta, 1);
                let (b, rsb, csb) = operand(k, n, tb, 2);
                for (read_dst, alpha, beta) in
                    [(false, 0.0, 1.0), (true, 1.0, 1.0), (true, 0.75, -1.25)]
                {
                    let start: Vec<f32> = (0..m * n).map(|i| (i % 11) as f32 * 0.1).collect();
                    let mut want = start.clone();
                    let c_scale = if read_dst { alpha } else { 0.0 };
                    unsafe {
                        matrixmultiply::sgemm(
                            m,
                            k,
                            n,
                            beta,
                            a.as_ptr(),
                            rsa,
                            csa,
                            b.as_ptr(),
                            rsb,
                            csb,
                            c_scale,
                            want.as_mut_ptr(),
                            n as isize,
                            1,
                        );
                    }
                    let run = |how: &str, f: &dyn Fn(*mut f32)| {
                        let mut c = start.clone();
                        f(c.as_mut_ptr());
                        let same = c.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "{m}x{n}x{k} ta={ta} tb={tb} read_dst={read_dst} alpha={alpha} beta={beta}: {how}");
                    };
                    let (am, bm) = (
                        Mat {
                            ptr: a.as_ptr(),
                            rs: rsa,
                            cs: csa,
                        },
                        Mat {
                            ptr: b.as_ptr(),
                            rs: rsb,
                            cs: csb,
                        },
                    );
                    run("small slabs", &|c| unsafe {
                        product(
                            m,
                            n,
                            k,
                            am,
                            bm,
                            Mat {
                                ptr: c,
                                rs: n as isize,
                                cs: 1,
                            },
                            beta,
                            c_scale,
                            tiny,
                        )
                    });
                    for threads in [1, 2, 3] {
                        run(&format!("{threads} thread(s)"), &|c| unsafe {
                            sgemm(
                                m,
                                n,
                                k,
                                c,
                                1,
                                n as isize,
                                read_dst,
                                a.as_ptr(),
                                csa,
                                rsa,
                                b.as_ptr(),
                                csb,
                                rsb,
                                alpha,
                                beta,
                                if threads == 1 {
                                    Parallelism::None
                                } else {
                                    Parallelism::Rayon(threads)
                                },
                            )
                        });
                    }
                }
            }
        }
    }
}
