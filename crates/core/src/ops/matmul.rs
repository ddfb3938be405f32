//! `out = x · Wᵀ (+ b)` for PyTorch-layout weights `W[out, in]`.
//!
//! Many rows (prefill): our AVX-512 packed-panel GEMM (`gemm_avx512`) where the CPU has AVX-512,
//! otherwise the `gemm` crate — the GEMM candle's CPU backend calls — used directly on our slices (no
//! tensor copies). Both run on rayon's global pool and fold the residual add in (`accumulate`).
//! One row (decode): a rayon-parallel matvec that streams each weight row once through SIMD-friendly
//! 4-row dot products; decode is bound by weight bandwidth, and this measured faster than `gemm` with
//! m = 1 on the decode shapes (see `examples/mamba_speed.rs`).

use rayon::prelude::*;

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

    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
            assert!(last < self.data.len(), "matrix view out of bounds");
        }
    }
}

/// `out[r, o] (+)= Σ_i x[r, i] · w[o, i] + bias[o]`, `w` row-major `[out_features, x.cols]`,
/// `out` row-major `[x.rows, out_features]`. With `accumulate` the product is added to `out`.
pub fn linear(x: MatRef, w: &[f32], bias: Option<&[f32]>, out: &mut [f32], accumulate: bool) {
    x.check();
    let k = x.cols;
    let n = w.len() / k;
    assert!(w.len() == n * k && out.len() >= x.rows * n);
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
pub fn gemm_rows(x: MatRef, w: &[f32], n: usize, out: &mut [f32], accumulate: bool) {
    x.check();
    if super::gemm_avx512::try_gemm(x, w, n, out, accumulate) {
        return;
    }
    gemm_crate(x, w, n, out, accumulate);
}

/// The `gemm` crate (what candle's CPU matmul calls), on our slices.
pub fn gemm_crate(x: MatRef, w: &[f32], n: usize, out: &mut [f32], accumulate: bool) {
    x.check();
    let (m, k) = (x.rows, x.cols);
    assert!(w.len() >= n * k && out.len() >= m * n);
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
pub fn matvec(x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32], accumulate: bool) {
    let k = x.len();
    let n = out.len();
    assert!(w.len() == n * k);
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

    #[test]
    fn prefill_gemm_matches_gemm_crate_on_uneven_tiles() {
        // Rows not a multiple of the 8-row tile, outputs not a multiple of the 32-wide panel.
        for &(m, k, n) in &[(37usize, 100usize, 200usize), (300, 48, 1000), (2, 768, 80)] {
            let x = data(m * k, 6);
            let w = data(n * k, 7);
            let mut ours = vec![0.5f32; m * n];
            let mut theirs = ours.clone();
            gemm_rows(MatRef::rows(&x, m, k), &w, n, &mut ours, true);
            gemm_crate(MatRef::rows(&x, m, k), &w, n, &mut theirs, true);
            let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-3, "{m}x{k}x{n}: {worst}");
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
}
