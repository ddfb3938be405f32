//! Conversions of the f16 KV cache: f32 → f16 as tokens are appended (round to nearest, ties to
//! even; magnitudes past f16's largest finite value saturate to ±65504 instead of becoming infinities
//! that would turn every later score into NaN; NaN stays NaN), and f16 → f32 (exact) as attention
//! reads a block of keys or values.
//!
//! x86 uses the CPU's F16C conversions, elsewhere (WASM, baseline x86) integer arithmetic: the
//! rounding below and the exact widening of `weight_ref::Element`. Both are IEEE conversions with one
//! correct result, so every copy stores and reads the same values (tests below, against a
//! nearest-value search; NaNs compare as NaN) and native and WASM caches agree.

use half::f16;

use super::weight_ref::Element;

/// The largest finite f16.
pub(crate) const F16_MAX: f32 = 65504.0;

/// `dst[i]` = `src[i]` rounded to f16 (saturating, see the module doc); same lengths.
pub(crate) fn narrow(src: &[f32], dst: &mut [f16]) {
    assert_eq!(src.len(), dst.len(), "narrow: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if super::simd_level() != super::SimdLevel::Baseline {
        // SAFETY: AVX2 and F16C were detected (every level above the baseline has both).
        unsafe { x86::narrow_f16c(src, dst) };
        return;
    }
    narrow_portable(src, dst);
}

fn narrow_portable(src: &[f32], dst: &mut [f16]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = f16::from_bits(round_to_f16(saturate(x)));
    }
}

/// f32 → f16 bits, round to nearest even, for |x| ≤ 65504 or NaN (integer steps after F. Giesen's
/// `float_to_half_fast3_rtne`; `half` would use F16C where it can, so its rounding is not what WASM runs).
#[inline(always)]
fn round_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = (bits >> 16) & 0x8000;
    let a = bits & 0x7fff_ffff;
    let h = if a > 0x7f80_0000 {
        0x7e00 // NaN: a quiet NaN
    } else if a < 113 << 23 {
        // Below f16's smallest normal: adding 0.5 puts the 10 f16 mantissa bits at the bottom of an
        // f32 and lets the float addition (round to nearest even) do the rounding.
        let magic = f32::from_bits(((127 - 15) + (23 - 10) + 1) << 23);
        (f32::from_bits(a) + magic).to_bits() - magic.to_bits()
    } else {
        // Rebias the exponent, add just under half an f16 step plus the kept mantissa's last bit
        // (ties go to even), drop 13 bits.
        let odd = (a >> 13) & 1;
        (a.wrapping_add(((15u32).wrapping_sub(127) << 23).wrapping_add(0xfff)) + odd) >> 13
    };
    (sign | h) as u16
}

/// `x` clamped to f16's finite range (NaN stays NaN): rounding it can no longer overflow.
#[inline(always)]
fn saturate(x: f32) -> f32 {
    x.clamp(-F16_MAX, F16_MAX)
}

/// Rows `j0 .. j0 + n` of a `[tokens, width]` f16 matrix, columns `offset .. offset + cols`, widened
/// into `dst` as `n` rows of `cols` (exact).
pub(crate) fn widen_rows(src: &[f16], width: usize, offset: usize, cols: usize, j0: usize, n: usize, dst: &mut [f32]) {
    assert!(offset + cols <= width && dst.len() >= n * cols, "widen_rows: sizes");
    assert!(src.len() >= (j0 + n) * width, "widen_rows: rows past the matrix");
    #[cfg(target_arch = "x86_64")]
    if super::simd_level() != super::SimdLevel::Baseline {
        // SAFETY: AVX2 and F16C were detected; the bounds were checked above.
        unsafe { x86::widen_rows_f16c(src, width, offset, cols, j0, n, dst) };
        return;
    }
    widen_rows_portable(src, width, offset, cols, j0, n, dst);
}

fn widen_rows_portable(src: &[f16], width: usize, offset: usize, cols: usize, j0: usize, n: usize, dst: &mut [f32]) {
    for (j, out) in dst.chunks_exact_mut(cols).take(n).enumerate() {
        let row = &src[(j0 + j) * width + offset..][..cols];
        for (o, &h) in out.iter_mut().zip(row) {
            *o = h.widen();
        }
    }
}

/// Asks the CPU to start loading rows `j0 .. j0 + n` of a `[tokens, width]` f16 matrix (rows past
/// its end are skipped) while the caller works on earlier ones: a decode step reads each cache block
/// once, too briefly for the hardware prefetcher to ramp up.
pub(crate) fn prefetch_rows(src: &[f16], width: usize, j0: usize, n: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = (j0 * width).min(src.len());
        let end = ((j0 + n) * width).min(src.len());
        let bytes = &src[start..end];
        let p: *const u8 = bytes.as_ptr().cast();
        for off in (0..bytes.len() * 2).step_by(64) {
            // SAFETY: prefetching is a hint; the address is inside `bytes`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (src, width, j0, n);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    use super::{saturate, F16_MAX};

    // Immediate 0: round to nearest even (not MXCSR's mode).
    const RNE: i32 = _MM_FROUND_TO_NEAREST_INT;

    /// [`super::narrow`] by `vcvtps2ph` (round to nearest even), eight values at a time.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn narrow_f16c(src: &[f32], dst: &mut [f16]) {
        let (lo, hi) = (_mm256_set1_ps(-F16_MAX), _mm256_set1_ps(F16_MAX));
        let mut i = 0;
        while i + 8 <= src.len() {
            // SAFETY: i + 8 <= src.len() = dst.len().
            let x = unsafe { _mm256_loadu_ps(src.as_ptr().add(i)) };
            // max then min with x second: a NaN x passes through both (the instructions return
            // their second operand when either is NaN), as `f32::clamp` keeps it.
            let x = _mm256_min_ps(hi, _mm256_max_ps(lo, x));
            let h = _mm256_cvtps_ph::<RNE>(x);
            unsafe { _mm_storeu_si128(dst.as_mut_ptr().add(i).cast(), h) };
            i += 8;
        }
        for (d, &x) in dst[i..].iter_mut().zip(&src[i..]) {
            let h = _mm_cvtps_ph::<RNE>(_mm_set_ss(saturate(x)));
            *d = f16::from_bits(_mm_extract_epi16::<0>(h) as u16);
        }
    }

    /// [`super::widen_rows`] by `vcvtph2ps`, eight values at a time.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn widen_rows_f16c(
        src: &[f16],
        width: usize,
        offset: usize,
        cols: usize,
        j0: usize,
        n: usize,
        dst: &mut [f32],
    ) {
        for j in 0..n {
            let row = &src[(j0 + j) * width + offset..][..cols];
            let out = &mut dst[j * cols..][..cols];
            let mut c = 0;
            while c + 8 <= cols {
                // SAFETY: c + 8 <= cols = row.len() = out.len().
                unsafe {
                    let h = _mm_loadu_si128(row.as_ptr().add(c).cast());
                    _mm256_storeu_ps(out.as_mut_ptr().add(c), _mm256_cvtph_ps(h));
                }
                c += 8;
            }
            for (o, &h) in out[c..].iter_mut().zip(&row[c..]) {
                *o = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h.to_bits() as i32)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values over every f32 binade f16 can hold and past it, halfway cases, subnormals, ±0, NaN.
    fn probe_values() -> Vec<f32> {
        let mut v = vec![
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            F16_MAX,
            65519.0,
            65520.0,
            1e30,
            1e-40,
            -1e-45,
            f32::MIN_POSITIVE,
        ];
        for e in -30..18 {
            for m in [1.0f32, 1.000_488_3, 1.000_976_6, 1.5, 1.999_9, 1.000_244_1, 1.000_732_4] {
                let x = m * 2f32.powi(e);
                v.extend([x, -x]);
            }
        }
        // Every f16 exactly, and each one's midpoint to the next (ties go to even).
        for bits in 0..0x7c00u16 {
            let x = f16::from_bits(bits).to_f32();
            let next = f16::from_bits(bits + 1).to_f32();
            v.extend([x, -x, (x + next) / 2.0, x + (next - x) * 0.25]);
        }
        v
    }

    /// The f16 nearest to `x` by search (ties to the even bit pattern), saturating: no conversion
    /// routine involved, only exact widening and f64 differences.
    fn nearest_f16(x: f32) -> f16 {
        if x.is_nan() {
            return f16::NAN;
        }
        let m = (x.abs() as f64).min(F16_MAX as f64);
        // The largest positive finite f16 at or below m (positive f16 bit patterns order as values).
        let (mut lo, mut hi) = (0u16, 0x7bffu16);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if f16::from_bits(mid).to_f64() <= m {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let below = lo;
        let pick = if below == 0x7bff || f16::from_bits(below).to_f64() == m {
            below
        } else {
            let (d0, d1) = (m - f16::from_bits(below).to_f64(), f16::from_bits(below + 1).to_f64() - m);
            if d0 < d1 || (d0 == d1 && below % 2 == 0) {
                below
            } else {
                below + 1
            }
        };
        f16::from_bits(pick | if x.is_sign_negative() { 0x8000 } else { 0 })
    }

    #[test]
    fn narrowing_rounds_to_nearest_even_and_saturates() {
        let src = probe_values();
        let mut got = vec![f16::ZERO; src.len()];
        narrow(&src, &mut got);
        let mut portable = vec![f16::ZERO; src.len()];
        narrow_portable(&src, &mut portable);
        for ((&x, g), p) in src.iter().zip(&got).zip(&portable) {
            let want = nearest_f16(x);
            for h in [g, p] {
                assert!(
                    h.is_nan() == want.is_nan() && (h.is_nan() || h.to_bits() == want.to_bits()),
                    "{x:e}: {h} vs {want}"
                );
            }
        }
        assert!(got.iter().all(|h| !h.is_infinite()), "no infinity is stored");
    }

    #[test]
    fn widening_rows_is_exact_for_every_f16() {
        // Every f16 bit pattern as a [4096, 16] matrix, read back at an offset and two column counts
        // (a whole vector and a tail), against `half`'s conversion.
        let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        for (offset, cols) in [(0, 16), (3, 11)] {
            let n = 4096 - 5;
            let mut out = vec![0f32; n * cols];
            widen_rows(&all, 16, offset, cols, 5, n, &mut out);
            let mut portable = vec![0f32; n * cols];
            widen_rows_portable(&all, 16, offset, cols, 5, n, &mut portable);
            let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
            assert!(out.iter().zip(&portable).all(|(&a, &b)| same(a, b)), "every copy reads the same values");
            for j in 0..n {
                for c in 0..cols {
                    let h = all[(5 + j) * 16 + offset + c];
                    let (got, want) = (out[j * cols + c], h.to_f32());
                    assert!(same(got, want), "{h:?}: {got} vs {want}");
                }
            }
        }
    }
}
