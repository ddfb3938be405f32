//! Decode scores: `scores[j] = q · K[j0 + j]`, one dot product per key of the KV cache.
//!
//! The order of operations is fixed (WASM and every x86 copy give the same bits): sixteen lane sums
//! over the head's dimensions in order, then folded pairwise (lanes `l + 8`, `l + 4`, `l + 2`,
//! `l + 1`), then any dimensions past the last full sixteen. The AVX-512 copy does exactly these
//! operations, but sixteen keys at a time: their lane sums are folded together by shuffles (a
//! transposition), instead of one horizontal reduction per key, which had cost more than the products.

/// Dot product with sixteen partial sums folded pairwise (the order every copy follows).
#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        let (x, y): (&[f32; 16], &[f32; 16]) = (x.try_into().expect("16"), y.try_into().expect("16"));
        for k in 0..16 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut w = 16;
    while w > 1 {
        w /= 2;
        for k in 0..w {
            acc[k] += acc[k + w];
        }
    }
    let mut s = acc[0];
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Where the keys are: row `j` of the head starts at `keys[j * width + offset]`.
#[derive(Clone, Copy)]
pub(super) struct KeyRows<'a> {
    pub keys: &'a [f32],
    pub width: usize,
    pub offset: usize,
}

impl<'a> KeyRows<'a> {
    #[inline(always)]
    fn row(&self, j: usize, hd: usize) -> &'a [f32] {
        &self.keys[j * self.width + self.offset..][..hd]
    }
}

/// `scores[j] = q · K[j0 + j]` for `j < scores.len()`.
#[inline(always)]
pub(super) fn direct_scores(q: &[f32], k: KeyRows, j0: usize, scores: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if q.len().is_multiple_of(16) && super::simd_level() == super::SimdLevel::Avx512 {
        // SAFETY: the CPU has AVX-512F.
        unsafe { x86::scores_avx512(q, k, j0, scores) };
        return;
    }
    for (s, j) in scores.iter_mut().zip(j0..) {
        *s = dot(q, k.row(j, q.len()));
    }
}

/// [`direct_scores`] for the `rows` query rows of one KV group (`qs`: `rows × hd`), into
/// `scores[r · stride ..][.. n]`: the same bits, each key row loaded once for every query row.
#[inline(always)]
pub(super) fn direct_scores_rows(
    qs: &[f32],
    hd: usize,
    k: KeyRows,
    j0: usize,
    n: usize,
    scores: &mut [f32],
    stride: usize,
) {
    let rows = qs.len() / hd;
    #[cfg(target_arch = "x86_64")]
    if hd == 64 && rows == 3 && super::simd_level() == super::SimdLevel::Avx512 {
        // SAFETY: the CPU has AVX-512F.
        unsafe { x86::scores_rows_avx512::<3>(qs, k, j0, n, scores, stride) };
        return;
    }
    for r in 0..rows {
        direct_scores(&qs[r * hd..(r + 1) * hd], k, j0, &mut scores[r * stride..][..n]);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{dot, KeyRows};
    use std::arch::x86_64::*;

    /// [`super::direct_scores`] for heads of a multiple of 16 values (64 and 128 with the trip count
    /// known, so the sixteen keys' sums are unrolled and overlap).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores_avx512(q: &[f32], k: KeyRows, j0: usize, scores: &mut [f32]) {
        match q.len() {
            64 => scores_of::<64>(q, k, j0, scores),
            128 => scores_of::<128>(q, k, j0, scores),
            _ => scores_of::<0>(q, k, j0, scores),
        }
    }

    /// `H` = the head size, or 0 for "read it from `q`".
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn scores_of<const H: usize>(q: &[f32], k: KeyRows, j0: usize, scores: &mut [f32]) {
        let hd = if H == 0 { q.len() } else { H };
        let q = &q[..hd];
        let mut done = 0;
        while done + 16 <= scores.len() {
            let first = j0 + done;
            let mut lanes = [_mm512_setzero_ps(); 16];
            // Dimension blocks outer, keys inner: sixteen independent sums in flight. (No closures
            // here: they would not inherit this function's target features.)
            for c in (0..hd).step_by(16) {
                // SAFETY: c + 16 <= hd = q.len() = every row's length.
                let x = unsafe { _mm512_loadu_ps(q.as_ptr().add(c)) };
                for (i, l) in lanes.iter_mut().enumerate() {
                    let row = k.row(first + i, hd);
                    let y = unsafe { _mm512_loadu_ps(row.as_ptr().add(c)) };
                    *l = _mm512_add_ps(*l, _mm512_mul_ps(x, y));
                }
            }
            let out = fold16(&lanes);
            // SAFETY: done + 16 <= scores.len().
            unsafe { _mm512_storeu_ps(scores.as_mut_ptr().add(done), out) };
            done += 16;
        }
        for (s, j) in scores[done..].iter_mut().zip(j0 + done..) {
            *s = dot(q, k.row(j, hd));
        }
    }

    /// [`super::direct_scores_rows`] for `R` rows of 64: eight keys at a time (8 · R lane sums in
    /// registers), each key chunk loaded once for the `R` rows, folded as [`fold16`] folds.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores_rows_avx512<const R: usize>(
        qs: &[f32],
        k: KeyRows,
        j0: usize,
        n: usize,
        scores: &mut [f32],
        stride: usize,
    ) {
        const H: usize = 64;
        assert!(qs.len() == R * H && scores.len() >= (R - 1) * stride + n, "scores_rows: sizes");
        let mut done = 0;
        while done + 8 <= n {
            let first = j0 + done;
            let mut lanes = [[_mm512_setzero_ps(); 8]; R];
            for c in (0..H).step_by(16) {
                // SAFETY: c + 16 <= H; every row of `qs` and of K holds H values.
                let x: [__m512; R] = std::array::from_fn(|r| unsafe { _mm512_loadu_ps(qs.as_ptr().add(r * H + c)) });
                #[allow(clippy::needless_range_loop)] // `i` picks both the key row and the lane set
                for i in 0..8 {
                    let y = unsafe { _mm512_loadu_ps(k.row(first + i, H).as_ptr().add(c)) };
                    for r in 0..R {
                        lanes[r][i] = _mm512_add_ps(lanes[r][i], _mm512_mul_ps(x[r], y));
                    }
                }
            }
            for (r, l) in lanes.iter().enumerate() {
                let zero = _mm512_setzero_ps();
                let all =
                    [l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7], zero, zero, zero, zero, zero, zero, zero, zero];
                let out = fold16(&all);
                // SAFETY: done + 8 <= n, inside row r's scores.
                unsafe { _mm256_storeu_ps(scores.as_mut_ptr().add(r * stride + done), _mm512_castps512_ps256(out)) };
            }
            done += 8;
        }
        for r in 0..R {
            for (s, j) in scores[r * stride + done..r * stride + n].iter_mut().zip(j0 + done..) {
                *s = dot(&qs[r * H..(r + 1) * H], k.row(j, H));
            }
        }
    }

    /// Lane `j` of the result: `v[j]`'s sixteen lanes folded as [`dot`] folds them (`l + 8`, then
    /// `l + 4`, `l + 2`, `l + 1`). Each step adds the same pairs for two, four, eight, sixteen keys
    /// at once.
    #[target_feature(enable = "avx512f")]
    fn fold16(v: &[__m512; 16]) -> __m512 {
        let zero = _mm512_setzero_ps();
        // Keys (2i, 2i+1): 128-bit quarters [a0 a1 b0 b1] + [a2 a3 b2 b3] → each key's 8 sums.
        let mut s = [zero; 8];
        for (i, s) in s.iter_mut().enumerate() {
            let (a, b) = (v[2 * i], v[2 * i + 1]);
            *s = _mm512_add_ps(_mm512_shuffle_f32x4::<0x44>(a, b), _mm512_shuffle_f32x4::<0xEE>(a, b));
        }
        // Keys 4m..4m+4, one quarter each: [a0 a2 b0 b2] + [a1 a3 b1 b3] → each key's 4 sums.
        let mut t = [zero; 4];
        for (m, t) in t.iter_mut().enumerate() {
            let (a, b) = (s[2 * m], s[2 * m + 1]);
            *t = _mm512_add_ps(_mm512_shuffle_f32x4::<0x88>(a, b), _mm512_shuffle_f32x4::<0xDD>(a, b));
        }
        // Within each quarter: (a0 a1 b0 b1) + (a2 a3 b2 b3) → 2 sums of keys q and q+4 (then q+8, q+12).
        let mut w = [zero; 2];
        for (u, w) in w.iter_mut().enumerate() {
            let (a, b) = (t[2 * u], t[2 * u + 1]);
            *w = _mm512_add_ps(_mm512_shuffle_ps::<0x44>(a, b), _mm512_shuffle_ps::<0xEE>(a, b));
        }
        // (a0 a2 b0 b2) + (a1 a3 b1 b3): element 4q + e holds key 4e + q.
        let f = _mm512_add_ps(_mm512_shuffle_ps::<0x88>(w[0], w[1]), _mm512_shuffle_ps::<0xDD>(w[0], w[1]));
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        _mm512_permutexvar_ps(order, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every copy equals the portable dot product bit for bit, for full blocks of 16 keys and tails.
    #[test]
    fn scores_match_the_portable_dot_exactly() {
        for hd in [16, 64, 128, 12] {
            let (width, offset, n) = (3 * hd, hd, 37);
            let val = |i: usize| ((i as u32).wrapping_mul(2654435761) >> 9) as f32 / 8388608.0 - 0.5;
            let keys: Vec<f32> = (0..(n + 5) * width).map(|i| val(i) * 3.0).collect();
            let q: Vec<f32> = (0..hd).map(|i| val(i + 999)).collect();
            let k = KeyRows { keys: &keys, width, offset };
            let mut got = vec![f32::NAN; n];
            direct_scores(&q, k, 5, &mut got);
            for (j, g) in got.iter().enumerate() {
                assert_eq!(g.to_bits(), dot(&q, k.row(5 + j, hd)).to_bits(), "hd {hd} key {j}");
            }
            // Three rows of a group at once (the register-resident copy for hd 64), every tail length.
            let qs: Vec<f32> = (0..3 * hd).map(|i| val(i + 555) * 2.0).collect();
            for m in [n, 16, 9, 8, 7, 1] {
                let stride = 40;
                let mut rows = vec![f32::NAN; 3 * stride];
                direct_scores_rows(&qs, hd, k, 5, m, &mut rows, stride);
                for r in 0..3 {
                    for j in 0..m {
                        let want = dot(&qs[r * hd..(r + 1) * hd], k.row(5 + j, hd));
                        assert_eq!(
                            rows[r * stride + j].to_bits(),
                            want.to_bits(),
                            "hd {hd} rows of {m}: row {r} key {j}"
                        );
                    }
                }
            }
        }
    }
}
