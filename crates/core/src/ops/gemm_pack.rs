//! Packing for the AVX-512 GEMM (`gemm_avx512`): weight rows into k-major panels of `NR` outputs,
//! token rows into k-major tiles of `MR` rows. Both are transposes; done element by element the
//! weight pack alone took ~15 % of the GEMM's time (a strided gather per float), so whole 16 × 16
//! blocks go through zmm registers (four shuffle stages, ~0.4 instructions per float) and only the
//! edges are scalar.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]

use super::mat_ref::MatRef;

/// `dst[kk * nr_stride + j] = rows[j * k + kk]` for the `rows.len() / k` (≤ `nr_stride`) rows.
/// Safety: the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_panel(rows: &[f32], k: usize, nr_stride: usize, dst: &mut [f32]) {
    let nr = rows.len() / k;
    assert!(nr <= nr_stride && dst.len() >= k * nr_stride);
    let full_k = k / 16 * 16;
    let mut j0 = 0;
    while j0 + 16 <= nr {
        for kk0 in (0..full_k).step_by(16) {
            let src = std::array::from_fn(|i| rows.as_ptr().add((j0 + i) * k + kk0));
            let cols = transpose16(src);
            for (c, col) in cols.iter().enumerate() {
                std::arch::x86_64::_mm512_storeu_ps(dst.as_mut_ptr().add((kk0 + c) * nr_stride + j0), *col);
            }
        }
        scalar_panel(rows, k, nr_stride, dst, j0..j0 + 16, full_k..k);
        j0 += 16;
    }
    scalar_panel(rows, k, nr_stride, dst, j0..nr, 0..k);
}

fn scalar_panel(
    rows: &[f32],
    k: usize,
    nr_stride: usize,
    dst: &mut [f32],
    js: std::ops::Range<usize>,
    ks: std::ops::Range<usize>,
) {
    for kk in ks {
        for j in js.clone() {
            dst[kk * nr_stride + j] = rows[j * k + kk];
        }
    }
}

/// `tile[kk * mr_stride + r] = x[r0 + r, kk]` for the rows `r0..` that exist (at most `mr_stride`),
/// zero for the rest. Safety: the CPU has AVX-512F; `x` is checked (`MatRef::check`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_tokens(x: MatRef, r0: usize, mr_stride: usize, tile: &mut [f32]) {
    use std::arch::x86_64::*;
    let k = x.cols;
    let mr = mr_stride.min(x.rows - r0);
    assert!(mr_stride <= 16 && tile.len() >= k * mr_stride);
    if x.col_stride == 1 {
        let full_k = k / 16 * 16;
        let zeros = [0f32; 16];
        // Rows past `mr` read a zero row, so the padding lanes come out zero.
        let src: [*const f32; 16] =
            std::array::from_fn(|i| if i < mr { x.data.as_ptr().add((r0 + i) * x.row_stride) } else { zeros.as_ptr() });
        let mask = ((1u32 << mr_stride) - 1) as u16;
        for kk0 in (0..full_k).step_by(16) {
            let at = std::array::from_fn(|i| if i < mr { src[i].add(kk0) } else { src[i] });
            for (c, col) in transpose16(at).iter().enumerate() {
                _mm512_mask_storeu_ps(tile.as_mut_ptr().add((kk0 + c) * mr_stride), mask, *col);
            }
        }
        for kk in full_k..k {
            for r in 0..mr_stride {
                tile[kk * mr_stride + r] = if r < mr { x.data[(r0 + r) * x.row_stride + kk] } else { 0.0 };
            }
        }
    } else {
        // Strided views (the scan's column-major output): a k step's rows are close together, so
        // gather by k step.
        for (kk, step) in tile.chunks_exact_mut(mr_stride).take(k).enumerate() {
            let base = kk * x.col_stride + r0 * x.row_stride;
            for (r, d) in step.iter_mut().enumerate() {
                *d = if r < mr { x.data[base + r * x.row_stride] } else { 0.0 };
            }
        }
    }
}

/// The 16 × 16 block whose row i is the 16 floats at `src[i]`, transposed: `out[c][i] = src[i][c]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn transpose16(src: [*const f32; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    let r: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(src[i]));
    // Within 128-bit lanes: pairs of rows interleaved, then groups of four rows per column.
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // u[4g + c] = column (4L + c) of rows 4g..4g+4, in lane L.
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let (g, c) = (i / 4, i % 4);
        let (a, b) = (t[4 * g + c / 2], t[4 * g + 2 + c / 2]);
        if c % 2 == 0 {
            _mm512_shuffle_ps::<0x44>(a, b)
        } else {
            _mm512_shuffle_ps::<0xEE>(a, b)
        }
    });
    // Across lanes: v[c] (c < 4) holds columns c, c + 8 of rows 0..8; v[4 + c] columns c + 4,
    // c + 12; v[8..16] the same for rows 8..16.
    let v: [__m512; 16] = std::array::from_fn(|i| {
        let (half, lo_hi, c) = (i / 8, (i / 4) % 2, i % 4);
        let (a, b) = (u[8 * half + c], u[8 * half + 4 + c]);
        if lo_hi == 0 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xDD>(a, b)
        }
    });
    std::array::from_fn(|c| {
        let (a, b) = (v[c % 8], v[8 + c % 8]);
        if c < 8 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xDD>(a, b)
        }
    })
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn avx512() -> bool {
        if crate::ops::simd_level() != crate::ops::SimdLevel::Avx512 {
            crate::ops::kernel_tests::skip("gemm_pack", "AVX-512");
            return false;
        }
        true
    }

    #[test]
    fn panel_packing_matches_the_scalar_transpose() {
        if !avx512() {
            return;
        }
        for &(nr, k) in &[(32usize, 768usize), (32, 50), (17, 33), (16, 16), (5, 7), (32, 15)] {
            let rows: Vec<f32> = (0..nr * k).map(|i| i as f32 * 0.5 - 3.0).collect();
            let mut want = vec![-1f32; k * 32];
            scalar_panel(&rows, k, 32, &mut want, 0..nr, 0..k);
            let mut got = vec![-1f32; k * 32];
            unsafe { pack_panel(&rows, k, 32, &mut got) };
            assert_eq!(got, want, "{nr}x{k}");
        }
    }

    #[test]
    fn token_packing_matches_the_scalar_transpose_and_zero_pads() {
        if !avx512() {
            return;
        }
        for &(m, k, r0) in &[(40usize, 768usize, 12usize), (40, 37, 36), (5, 16, 0), (13, 100, 12)] {
            let data: Vec<f32> = (0..m * k + 3).map(|i| i as f32 * 0.25 + 1.0).collect();
            for view in [
                MatRef { data: &data, rows: m, cols: k, row_stride: k, col_stride: 1 },
                MatRef { data: &data[3..], rows: m, cols: k, row_stride: 1, col_stride: m },
            ] {
                let mut got = vec![f32::NAN; k * 12];
                unsafe { pack_tokens(view, r0, 12, &mut got) };
                for kk in 0..k {
                    for r in 0..12 {
                        let want =
                            if r0 + r < m { view.data[(r0 + r) * view.row_stride + kk * view.col_stride] } else { 0.0 };
                        assert_eq!(got[kk * 12 + r], want, "{m}x{k} from row {r0}: k {kk} row {r}");
                    }
                }
            }
        }
    }
}
