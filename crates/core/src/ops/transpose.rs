//! 16 × 16 f32 tile transposes. The selective scan works on a channel block's state as `[N][CB]`
//! lanes while the model keeps it `[E, N]`; with N = 16 every block's state and `A` are 16 × 16
//! tiles to turn over on the way in and out. Element by element (LLVM made scalar moves and
//! scatters of them) that was most of a decode step's scan, ~10 % of a Mamba-130M decode at 2
//! threads; on AVX-512 a tile is 64 shuffles.

/// Whether [`transpose16`] runs here (this run's SIMD level is AVX-512).
pub(crate) fn available() -> bool {
    cfg!(target_arch = "x86_64") && super::simd_level() == super::SimdLevel::Avx512
}

/// `dst[c * dst_stride + r] = src[r * src_stride + c]` for r, c in 0..16.
/// Safety: [`available`]; `src` holds 16 rows of 16 values `src_stride` apart, `dst` likewise.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn transpose16(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
    use std::arch::x86_64::*;
    let mut r: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(src.add(i * src_stride)));
    // Within each 128-bit lane L, after these two steps r[4g + c] holds rows 4g..4g+4 of column 4L + c.
    let mut t = [_mm512_setzero_ps(); 16];
    for p in 0..8 {
        t[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
        t[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
    }
    for g in 0..4 {
        let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        r[4 * g] = _mm512_shuffle_ps::<0x44>(a, c);
        r[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(a, c);
        r[4 * g + 2] = _mm512_shuffle_ps::<0x44>(b, d);
        r[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(b, d);
    }
    // Then the 128-bit lanes: t[c] = columns c and 8 + c of rows 0..8 (even lanes), t[4 + c] the
    // odd lanes (columns 4 + c, 12 + c); t[8..] the same for rows 8..16.
    for h in 0..2 {
        for c in 0..4 {
            let (a, b) = (r[8 * h + c], r[8 * h + 4 + c]);
            t[8 * h + c] = _mm512_shuffle_f32x4::<0x88>(a, b);
            t[8 * h + 4 + c] = _mm512_shuffle_f32x4::<0xDD>(a, b);
        }
    }
    for c in 0..8 {
        let (a, b) = (t[c], t[8 + c]);
        // c < 4: columns c and 8 + c; c ≥ 4: columns c and 8 + c as well (4 + (c − 4), 12 + (c − 4)).
        _mm512_storeu_ps(dst.add(c * dst_stride), _mm512_shuffle_f32x4::<0x88>(a, b));
        _mm512_storeu_ps(dst.add((8 + c) * dst_stride), _mm512_shuffle_f32x4::<0xDD>(a, b));
    }
}

/// `dst[c * rows + r] = src[r * cols + c]`: a whole row-major matrix turned over, by 16 × 16 tiles
/// where [`available`] and both sides are multiples of 16, element by element otherwise.
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    let len = rows.checked_mul(cols).expect("transpose: size overflows");
    assert!(src.len() >= len && dst.len() >= len, "transpose: buffers shorter than {rows} × {cols}");
    #[cfg(target_arch = "x86_64")]
    if available() && rows.is_multiple_of(16) && cols.is_multiple_of(16) {
        for r in (0..rows).step_by(16) {
            for c in (0..cols).step_by(16) {
                // SAFETY: AVX-512 checked; rows r..r+16 and columns c..c+16 lie inside both buffers.
                unsafe { transpose16(src.as_ptr().add(r * cols + c), cols, dst.as_mut_ptr().add(c * rows + r), rows) };
            }
        }
        return;
    }
    for r in 0..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

#[cfg(test)]
mod whole_matrix_tests {
    #[test]
    fn transpose_turns_any_matrix_over() {
        for (rows, cols) in [(64, 128), (32, 48), (5, 7), (16, 3)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.25 - 3.0).collect();
            let mut dst = vec![f32::NAN; rows * cols];
            super::transpose(&src, rows, cols, &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(dst[c * rows + r], src[r * cols + c], "{rows} × {cols}: row {r} column {c}");
                }
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    #[test]
    fn transpose16_turns_every_tile_over() {
        if !super::available() {
            eprintln!("SKIPPED transpose16_turns_every_tile_over: this CPU's SIMD level is not AVX-512");
            return;
        }
        let (src_stride, dst_stride) = (19usize, 23usize);
        let src: Vec<f32> = (0..16 * src_stride).map(|i| i as f32 * 0.5 - 7.0).collect();
        let mut dst = vec![f32::NAN; 16 * dst_stride];
        // SAFETY: AVX-512 checked; both buffers hold 16 rows of their strides.
        unsafe { super::transpose16(src.as_ptr(), src_stride, dst.as_mut_ptr(), dst_stride) };
        for r in 0..16 {
            for c in 0..16 {
                assert_eq!(dst[c * dst_stride + r], src[r * src_stride + c], "row {r} column {c}");
            }
        }
    }
}
