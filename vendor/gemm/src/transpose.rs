//! neox: a blocked transposition of f32 matrices, which brings an operand
//! into the layout matrixmultiply packs with contiguous copies (sgemm.rs).
//! AVX-512 in 16 x 16 tiles where the CPU has it (detected at run time),
//! plain 8 x 8 tiles elsewhere and at the edges. Only copies: the values are untouched.

/// Writes the `rows x cols` matrix at `src` (row `q` starts `q * ld_src`
/// elements after `src`, each row contiguous) transposed at `dst`:
/// `dst[p * ld_dst + q] = src[q * ld_src + p]` for `q < rows`, `p < cols`.
///
/// # Safety
/// `src` must be readable and `dst` writable at every index named above,
/// and the two must not overlap.
pub(crate) unsafe fn transpose(
    rows: usize,
    cols: usize,
    src: *const f32,
    ld_src: isize,
    dst: *mut f32,
    ld_dst: usize,
) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if std::is_x86_feature_detected!("avx512f") {
        return avx512::transpose(rows, cols, src, ld_src, dst, ld_dst);
    }
    tiles(rows, cols, src, ld_src, dst, ld_dst)
}

/// The portable transposition, in 8 x 8 tiles (each tile's rows share cache lines).
unsafe fn tiles(
    rows: usize,
    cols: usize,
    src: *const f32,
    ld_src: isize,
    dst: *mut f32,
    ld_dst: usize,
) {
    const TILE: usize = 8;
    for q0 in (0..rows).step_by(TILE) {
        for p0 in (0..cols).step_by(TILE) {
            for q in q0..rows.min(q0 + TILE) {
                let row = src.offset(q as isize * ld_src);
                for p in p0..cols.min(p0 + TILE) {
                    *dst.add(p * ld_dst + q) = *row.add(p);
                }
            }
        }
    }
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod avx512 {
    use core::arch::x86_64::*;

    /// [`super::transpose`]: whole 16 x 16 tiles in registers, the strips
    /// left at the bottom and right edges through the portable loop.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose(
        rows: usize,
        cols: usize,
        src: *const f32,
        ld_src: isize,
        dst: *mut f32,
        ld_dst: usize,
    ) {
        let (rows16, cols16) = (rows / 16 * 16, cols / 16 * 16);
        for q in (0..rows16).step_by(16) {
            for p in (0..cols16).step_by(16) {
                tile(
                    src.offset(q as isize * ld_src).add(p),
                    ld_src,
                    dst.add(p * ld_dst + q),
                    ld_dst,
                );
            }
        }
        let right = src.add(cols16);
        super::tiles(
            rows,
            cols - cols16,
            right,
            ld_src,
            dst.add(cols16 * ld_dst),
            ld_dst,
        );
        // `wrapping_offset`: with no rows left this points past the end
        // and is never read.
        let bottom = src.wrapping_offset(rows16 as isize * ld_src);
        super::tiles(
            rows - rows16,
            cols16,
            bottom,
            ld_src,
            dst.add(rows16),
            ld_dst,
        );
    }

    /// One 16 x 16 tile: 16 rows loaded, interleaved by 32 then 64 bits
    /// within 128-bit lanes, the lanes gathered in two rounds of
    /// `shuffle_f32x4`, 16 rows stored.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile(src: *const f32, ld_src: isize, dst: *mut f32, ld_dst: usize) {
        let r: [__m512; 16] =
            core::array::from_fn(|i| _mm512_loadu_ps(src.offset(i as isize * ld_src)));
        // t[2i], t[2i+1]: rows 2i and 2i+1 interleaved (columns 4l, 4l+1 / 4l+2, 4l+3 of lane l).
        let t: [__m512; 16] = core::array::from_fn(|i| {
            let (x, y) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_ps(x, y)
            } else {
                _mm512_unpackhi_ps(x, y)
            }
        });
        // u[4g + c]: column 4l + c of rows 4g..4g+4, in lane l.
        let u: [__m512; 16] = core::array::from_fn(|i| {
            let (g, c) = (i / 4, i % 4);
            // Rows (4g, 4g+1) and (4g+2, 4g+3), columns 4l + c (c / 2 picks lo or hi).
            let x = _mm512_castps_pd(t[4 * g + c / 2]);
            let y = _mm512_castps_pd(t[4 * g + 2 + c / 2]);
            let v = if c % 2 == 0 {
                _mm512_unpacklo_pd(x, y)
            } else {
                _mm512_unpackhi_pd(x, y)
            };
            _mm512_castpd_ps(v)
        });
        for c in 0..4 {
            // v: columns c, c + 8 (0x88) and c + 4, c + 12 (0xdd) of rows 0..8 / 8..16.
            let v0 = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
            let v1 = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
            let v2 = _mm512_shuffle_f32x4::<0xdd>(u[c], u[4 + c]);
            let v3 = _mm512_shuffle_f32x4::<0xdd>(u[8 + c], u[12 + c]);
            let row = |j: usize| dst.add(j * ld_dst);
            _mm512_storeu_ps(row(c), _mm512_shuffle_f32x4::<0x88>(v0, v1));
            _mm512_storeu_ps(row(c + 8), _mm512_shuffle_f32x4::<0xdd>(v0, v1));
            _mm512_storeu_ps(row(c + 4), _mm512_shuffle_f32x4::<0x88>(v2, v3));
            _mm512_storeu_ps(row(c + 12), _mm512_shuffle_f32x4::<0xdd>(v2, v3));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape around the tile sizes, with padded strides on both sides,
    /// through the detected path and the portable one.
    #[test]
    fn transposes_every_shape() {
        for rows in [1, 3, 8, 15, 16, 17, 31, 33, 64] {
            for cols in [1, 5, 8, 16, 19, 32, 40] {
                let (ld_src, ld_dst) = (cols + 3, rows + 5);
                let src: Vec<f32> = (0..rows * ld_src).map(|i| i as f32).collect();
                for portable in [false, true] {
                    let mut dst = vec![-1.0f32; cols * ld_dst];
                    unsafe {
                        let args = (
                            rows,
                            cols,
                            src.as_ptr(),
                            ld_src as isize,
                            dst.as_mut_ptr(),
                            ld_dst,
                        );
                        if portable {
                            tiles(args.0, args.1, args.2, args.3, args.4, args.5);
                        } else {
                            transpose(args.0, args.1, args.2, args.3, args.4, args.5);
                        }
                    }
                    for p in 0..cols {
                        for q in 0..ld_dst {
                            let want = if q < rows { src[q * ld_src + p] } else { -1.0 };
                            assert_eq!(
                                dst[p * ld_dst + q],
                                want,
                                "{rows}x{cols} portable={portable} [{p}, {q}]"
                            );
                        }
                    }
                }
            }
        }
    }
}
