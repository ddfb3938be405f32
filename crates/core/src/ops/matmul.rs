//! `out = x · Wᵀ (+ b)` for PyTorch-layout weights `W[out, in]`.
//!
//! Many rows (prefill): our AVX-512 packed-panel GEMM (`gemm_avx512`) where the CPU has AVX-512,
//! otherwise the `gemm` crate — the GEMM candle's CPU backend calls — used directly on our slices (no
//! tensor copies). Both run on rayon's global pool and fold the residual add in (`accumulate`).
//! One row (decode): a rayon-parallel matvec that streams each weight row once through SIMD-friendly
//! 4-row dot products; decode is bound by weight bandwidth, and this measured faster than `gemm` with
//! m = 1 on the decode shapes (see the ignored `tests::speed_probe` below).

use rayon::prelude::*;

use super::{size_add, size_mul};

/// A read-only matrix view: element (r, c) at `data[r * row_stride + c * col_stride]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major `rows × cols` matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// Every element the view names lies inside `data` (checked arithmetic: a wrapped product
    /// would let `unsafe` GEMM code read outside it), and the strides fit the `isize` GEMM takes.
    pub(crate) fn check(&self) {
        assert!(
            isize::try_from(self.row_stride).is_ok() && isize::try_from(self.col_stride).is_ok(),
            "matrix stride too large"
        );
        if self.rows > 0 && self.cols > 0 {
            let last = size_add(size_mul(self.rows - 1, self.row_stride), size_mul(self.cols - 1, self.col_stride));
            assert!(last < self.data.len(), "matrix view out of bounds");
        }
    }
}

/// `out[r, o] (+)= Σ_i x[r, i] · w[o, i] + bias[o]`, `w` row-major `[out_features, x.cols]`,
/// `out` row-major `[x.rows, out_features]`. With `accumulate` the product is added to `out`.
pub(crate) fn linear(x: MatRef, w: &[f32], bias: Option<&[f32]>, out: &mut [f32], accumulate: bool) {
    x.check();
    let k = x.cols;
    assert!(k > 0, "linear: input has no columns");
    let n = w.len() / k;
    assert!(w.len() == n * k && out.len() >= size_mul(x.rows, n));
    if let Some(b) = bias {
        assert_eq!(b.len(), n);
    }
    let out = &mut out[..x.rows * n];
    if x.rows == 1 && x.col_stride == 1 {
        matvec(&x.data[..k], w, bias, out, accumulate);
        return;
    }
    gemm_rows(x, w, n, out, accumulate);
    if let Some(b) = bias {
        for row in out.chunks_exact_mut(n) {
            for (o, &bv) in row.iter_mut().zip(b) {
                *o += bv;
            }
        }
    }
}

/// The many-rows path: our AVX-512 kernel where the CPU has it, else the `gemm` crate.
pub(crate) fn gemm_rows(x: MatRef, w: &[f32], n: usize, out: &mut [f32], accumulate: bool) {
    x.check();
    if super::gemm_avx512::try_gemm(x, w, n, out, accumulate) {
        return;
    }
    gemm_crate(x, w, n, out, accumulate);
}

/// The `gemm` crate (what candle's CPU matmul calls), on our slices.
pub(crate) fn gemm_crate(x: MatRef, w: &[f32], n: usize, out: &mut [f32], accumulate: bool) {
    x.check();
    let (m, k) = (x.rows, x.cols);
    assert!(w.len() >= size_mul(n, k) && out.len() >= size_mul(m, n));
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: every index gemm touches is inside the checked views: lhs by `x.check()`, rhs = Wᵀ
    // (element (i, j) at w[j * k + i]) within `n * k`, dst within `m * n`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            x.data.as_ptr(),
            x.col_stride as isize,
            x.row_stride as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `out[o] (+)= w[o, :] · x + bias[o]` split over rayon tasks by output rows.
pub(crate) fn matvec(x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32], accumulate: bool) {
    let k = x.len();
    let n = out.len();
    assert!(w.len() == size_mul(n, k));
    let threads = rayon::current_num_threads();
    // ~8 tasks per thread for balance, in multiples of 4 rows, and enough work per task.
    let per_task = (n.div_ceil(threads * 8)).max(4096 / k.max(1)).max(4).next_multiple_of(4);
    if threads == 1 || per_task >= n {
        matvec_rows(x, w, out, accumulate);
    } else {
        out.par_chunks_mut(per_task)
            .zip(w.par_chunks(per_task * k))
            .for_each(|(o, wr)| matvec_rows(x, wr, o, accumulate));
    }
    if let Some(b) = bias {
        for (o, &bv) in out.iter_mut().zip(b) {
            *o += bv;
        }
    }
}

multiversion!(fn matvec_rows(x: &[f32], w: &[f32], out: &mut [f32], accumulate: bool) = matvec_rows_body);

const LANES: usize = 16;

#[inline(always)]
fn matvec_rows_body(x: &[f32], w: &[f32], out: &mut [f32], accumulate: bool) {
    let k = x.len();
    let mut rows = w.chunks_exact(k);
    let mut outs = out.chunks_exact_mut(4);
    for o4 in &mut outs {
        let (r0, r1, r2, r3) = (rows.next().unwrap(), rows.next().unwrap(), rows.next().unwrap(), rows.next().unwrap());
        let mut acc = [[0f32; LANES]; 4];
        let iter = x
            .chunks_exact(LANES)
            .zip(r0.chunks_exact(LANES))
            .zip(r1.chunks_exact(LANES))
            .zip(r2.chunks_exact(LANES))
            .zip(r3.chunks_exact(LANES));
        for ((((xs, w0), w1), w2), w3) in iter {
            for l in 0..LANES {
                acc[0][l] += w0[l] * xs[l];
                acc[1][l] += w1[l] * xs[l];
                acc[2][l] += w2[l] * xs[l];
                acc[3][l] += w3[l] * xs[l];
            }
        }
        let tail = k - k % LANES;
        for (q, r) in [r0, r1, r2, r3].into_iter().enumerate() {
            let mut s = hsum(&acc[q]);
            for i in tail..k {
                s += r[i] * x[i];
            }
            o4[q] = if accumulate { o4[q] + s } else { s };
        }
    }
    for o in outs.into_remainder() {
        let r = rows.next().unwrap();
        let mut acc = [0f32; LANES];
        for (xs, ws) in x.chunks_exact(LANES).zip(r.chunks_exact(LANES)) {
            for l in 0..LANES {
                acc[l] += ws[l] * xs[l];
            }
        }
        let mut s = hsum(&acc);
        for i in k - k % LANES..k {
            s += r[i] * x[i];
        }
        *o = if accumulate { *o + s } else { s };
    }
}

#[inline(always)]
fn hsum(v: &[f32; LANES]) -> f32 {
    let mut a = *v;
    let mut w = LANES / 2;
    while w > 0 {
        for i in 0..w {
            a[i] += a[i + w];
        }
        w /= 2;
    }
    a[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for r in 0..m {
            for o in 0..n {
                out[r * n + o] = (0..k).map(|i| x[r * k + i] as f64 * w[o * k + i] as f64).sum();
            }
        }
        out
    }

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn matvec_and_gemm_agree_with_naive() {
        for &(m, k, n) in &[(1usize, 37usize, 13usize), (1, 64, 4096), (5, 70, 33), (1, 768, 101)] {
            let x = data(m * k, 1);
            let w = data(n * k, 2);
            let b = data(n, 3);
            let want = naive(&x, m, k, &w, n);
            let mut out = vec![1f32; m * n];
            linear(MatRef::rows(&x, m, k), &w, Some(&b), &mut out, true);
            for i in 0..m * n {
                let expect = want[i] + 1.0 + b[i % n] as f64;
                assert!((out[i] as f64 - expect).abs() < 1e-4 * (1.0 + expect.abs()), "{m}x{k}x{n} at {i}");
            }
        }
    }

    /// Rows not a multiple of the 8-row tile, outputs not a multiple of the 32-wide panel; one strided lhs.
    const UNEVEN: &[(usize, usize, usize)] = &[(37, 100, 200), (300, 48, 1000), (2, 768, 80)];

    fn assert_matches_naive(what: &str, run: impl Fn(MatRef, &[f32], usize, &mut [f32])) {
        for &(m, k, n) in UNEVEN {
            let x = data(m * k, 6);
            let w = data(n * k, 7);
            let want = naive(&x, m, k, &w, n);
            let mut out = vec![0.5f32; m * n];
            run(MatRef::rows(&x, m, k), &w, n, &mut out);
            let worst =
                out.iter().zip(&want).map(|(a, b)| (*a as f64 - 0.5 - b).abs() / (1.0 + b.abs())).fold(0f64, f64::max);
            assert!(worst < 1e-4, "{what} {m}x{k}x{n}: relative error {worst}");
        }
    }

    #[test]
    fn avx512_gemm_matches_naive_on_uneven_tiles() {
        if crate::ops::simd_level() != crate::ops::SimdLevel::Avx512 {
            crate::ops::kernel_tests::skip("avx512_gemm_matches_naive_on_uneven_tiles", "AVX-512");
            return;
        }
        // Called directly (not through gemm_rows) so a declined call cannot fall back to `gemm` unseen.
        assert_matches_naive("avx512", |x, w, n, out| {
            assert!(
                super::super::gemm_avx512::try_gemm(x, w, n, out, true),
                "AVX-512 level but the AVX-512 GEMM declined"
            );
        });
    }

    #[test]
    fn gemm_crate_matches_naive_on_uneven_tiles() {
        assert_matches_naive("gemm crate", |x, w, n, out| gemm_crate(x, w, n, out, true));
    }

    #[test]
    fn views_whose_extent_overflows_are_refused() {
        let data = [0f32; 16];
        // (rows - 1) * row_stride = 2 * 2^63 wraps to 0 in unchecked arithmetic: it would pass the bounds check.
        let wrapping = MatRef { data: &data, rows: 3, cols: 1, row_stride: 1 << (usize::BITS - 1), col_stride: 1 };
        assert!(std::panic::catch_unwind(|| wrapping.check()).is_err());
        // n * k and m * n both wrap to 0 (4 * 2^62): unchecked, GEMM would run over 2^62 output columns.
        let x = MatRef::rows(&data, 4, 4);
        for product in [gemm_crate as fn(MatRef, &[f32], usize, &mut [f32], bool), gemm_rows] {
            let (w, mut out) = ([0f32; 16], [0f32; 16]);
            assert!(std::panic::catch_unwind(move || product(x, &w, 1 << (usize::BITS - 2), &mut out, false)).is_err());
        }
    }

    #[test]
    fn column_major_lhs_view_works() {
        // x stored transposed ([k, m]) and read through strides.
        let (m, k, n) = (6, 9, 5);
        let xt = data(k * m, 4);
        let mut x = vec![0f32; m * k];
        for r in 0..m {
            for i in 0..k {
                x[r * k + i] = xt[i * m + r];
            }
        }
        let w = data(n * k, 5);
        let view = MatRef { data: &xt, rows: m, cols: k, row_stride: 1, col_stride: m };
        let mut out = vec![0f32; m * n];
        linear(view, &w, None, &mut out, false);
        let want = naive(&x, m, k, &w, n);
        for i in 0..m * n {
            assert!((out[i] as f64 - want[i]).abs() < 1e-4);
        }
    }

    /// Timing probe (not a check): our products against the `gemm` crate on Mamba-130M shapes.
    /// `cargo test --release -p phoenix-core --lib speed_probe -- --ignored --nocapture`
    #[test]
    #[ignore = "timing probe; run with --ignored --nocapture"]
    fn speed_probe() {
        use std::time::Instant;
        let (d, e, vocab, m) = (768usize, 1536usize, 50280usize, 512usize);
        let best = |f: &mut dyn FnMut()| {
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64()
                })
                .fold(f64::MAX, f64::min)
        };
        // Decode-shaped (one row): matvec vs the GEMM path.
        for (rows, cols, what) in [(2 * e, d, "in_proj"), (d, e, "out_proj"), (vocab, d, "lm_head")] {
            let (w, x) = (data(rows * cols, 1), data(cols, 2));
            let mut out = vec![0f32; rows];
            let mv = best(&mut || matvec(&x, &w, None, &mut out, false));
            let gm = best(&mut || gemm_rows(MatRef::rows(&x, 1, cols), &w, rows, &mut out, false));
            println!("{what} [{rows}x{cols}] 1 row: matvec {:.1} µs, gemm {:.1} µs", mv * 1e6, gm * 1e6);
        }
        // Prefill-shaped: gemm_rows (AVX-512 kernel where available) vs the gemm crate.
        for (n, k, what, col_major) in [(2 * e, d, "in_proj", false), (d, e, "out_proj (strided lhs)", true)] {
            let (x, w) = (data(m * k, 3), data(n * k, 4));
            let view = if col_major {
                MatRef { data: &x, rows: m, cols: k, row_stride: 1, col_stride: m }
            } else {
                MatRef::rows(&x, m, k)
            };
            let mut out = vec![0f32; m * n];
            let ours = best(&mut || gemm_rows(view, &w, n, &mut out, false));
            let theirs = best(&mut || gemm_crate(view, &w, n, &mut out, false));
            let gflop = 2.0 * (m * n * k) as f64 / 1e9;
            println!(
                "{what} [{m}x{k}]·[{n}x{k}]ᵀ: gemm_rows {:.0} GFLOP/s, gemm crate {:.0} GFLOP/s",
                gflop / ours,
                gflop / theirs
            );
        }
    }
}
