//! AVX-512 `out[m × n] += a[m × k] · b[k × n]` for small operands already in cache: the Mamba-2
//! SSD scan's per-(chunk, head) products (64 × 64 × 64, 64 × 128 × 64, 128 × 64 × 64 for
//! Mamba-2-130M), run on one thread each, thousands per prompt.
//!
//! Why our own: at these sizes the `gemm` crate's packing and dispatch cost as much as the
//! arithmetic, and on stable Rust it runs AVX2 micro-kernels only; its calls were ~15 % of a
//! Mamba-2-130M prefill at 1 thread. Here `b`'s rows (`n` contiguous floats, a multiple of 16) are
//! loaded as they lie and `a` is broadcast one element at a time, so nothing is packed; a register
//! tile of MR rows × NV 16-lane vectors accumulates over the whole `k` and meets `out` once (added,
//! written, or added to `out` scaled: the SSD state's decay rides along).
//! `lower` skips the zero upper triangle of a causal `a` (`a[i][j] = 0` for `j > i`): a row block
//! ending at row `i1` needs only `k < i1`, which halves the intra-chunk product.
//! Only used when the CPU has AVX-512 and `n` is a multiple of 16; otherwise `gemm` runs.
// Off x86_64 (WASM) `takes` is false, leaving the kernel unused there.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

/// Whether [`gemm_acc`] runs a product with `n` columns here.
pub(crate) fn takes(n: usize) -> bool {
    super::gemm_avx512::available() && n > 0 && n.is_multiple_of(16)
}

/// Operands of one product: `a[i][p]` at `a[i·lda + p·ka]` (row-major when `ka` is 1, its
/// transpose's layout when `lda` is 1), `b[p][j]` at `b[p·ldb + j]`.
#[derive(Clone, Copy)]
pub(crate) struct SmallProduct<'a> {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub a: &'a [f32],
    pub lda: usize,
    pub ka: usize,
    pub b: &'a [f32],
    pub ldb: usize,
    /// `a[i][j] = 0` for `j > i`: those terms are skipped.
    pub lower: bool,
    /// What `out` is multiplied by before the product is added: 1 accumulates, 0 overwrites (`out`
    /// is then not read, so stale NaNs there do not leak in), anything else decays it in the same pass.
    pub out_scale: f32,
}

/// `out[i·ldo + j] = out_scale · out[i·ldo + j] + Σ_p a[i·lda + p·ka] · b[p·ldb + j]` (fused: one
/// rounding; with `out_scale` 1, a plain add). Callers check [`takes`] first.
/// Panics when a slice is too short for its shape.
pub(crate) fn gemm_acc(pr: &SmallProduct, out: &mut [f32], ldo: usize) {
    assert!(takes(pr.n), "gemm_small: n = {} on this CPU", pr.n);
    assert!(pr.fits(out, ldo), "gemm_small: operands shorter than their shapes");
    if pr.m == 0 || pr.k == 0 {
        return pr.scale_out_only(out, ldo);
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F checked by `takes`; every access is inside the slices (asserted above).
    unsafe {
        x86::gemm_acc(pr, out.as_mut_ptr(), ldo)
    };
}

impl SmallProduct<'_> {
    /// `out = out_scale · out` over the product's `m × n` block: the whole product when `k` is 0.
    pub(crate) fn scale_out_only(&self, out: &mut [f32], ldo: usize) {
        if self.out_scale == 1.0 {
            return;
        }
        for row in out.chunks_mut(ldo).take(self.m) {
            for v in &mut row[..self.n] {
                *v = if self.out_scale == 0.0 { 0.0 } else { *v * self.out_scale };
            }
        }
    }

    /// Every index the product reads or writes is inside the slices, and `out`'s rows do not
    /// overlap (checked arithmetic: a shape whose extent overflows does not fit).
    pub(crate) fn fits(&self, out: &[f32], ldo: usize) -> bool {
        let end = |rows: usize, row_step: usize, cols: usize, col_step: usize| -> Option<usize> {
            if rows == 0 || cols == 0 {
                return Some(0);
            }
            (rows - 1).checked_mul(row_step)?.checked_add((cols - 1).checked_mul(col_step)?)?.checked_add(1)
        };
        let fits = |len: usize, need: Option<usize>| need.is_some_and(|need| need <= len);
        self.n <= self.ldb
            && self.n <= ldo
            && fits(self.a.len(), end(self.m, self.lda, self.k, self.ka))
            && fits(self.b.len(), end(self.k, self.ldb, self.n, 1))
            && fits(out.len(), end(self.m, ldo, self.n, 1))
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::SmallProduct;

    /// Column blocks of up to four vectors (64 floats), each swept by row tiles sized so that
    /// MR × NV accumulators + NV `b` vectors + one broadcast fit the 32 zmm registers.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemm_acc(pr: &SmallProduct, out: *mut f32, ldo: usize) {
        let mut j0 = 0;
        while j0 < pr.n {
            match (pr.n - j0) / 16 {
                1 => columns::<12, 1>(pr, j0, out, ldo),
                2 => columns::<12, 2>(pr, j0, out, ldo),
                3 => columns::<8, 3>(pr, j0, out, ldo),
                _ => columns::<6, 4>(pr, j0, out, ldo),
            }
            j0 += 64;
        }
    }

    /// Columns `j0 .. j0 + 16·NV` of every row: MR-row tiles, then tiles of 2 and 1 for the rest.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn columns<const MR: usize, const NV: usize>(pr: &SmallProduct, j0: usize, out: *mut f32, ldo: usize) {
        let mut i = 0;
        while i + MR <= pr.m {
            tile::<MR, NV>(pr, i, j0, out, ldo);
            i += MR;
        }
        while i + 2 <= pr.m {
            tile::<2, NV>(pr, i, j0, out, ldo);
            i += 2;
        }
        if i < pr.m {
            tile::<1, NV>(pr, i, j0, out, ldo);
        }
    }

    /// Rows `i0 .. i0 + R`, columns `j0 .. j0 + 16·NV`: accumulated in registers over `k` (in
    /// order), then added to `out`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const R: usize, const NV: usize>(
        pr: &SmallProduct,
        i0: usize,
        j0: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        let k = if pr.lower { pr.k.min(i0 + R) } else { pr.k };
        let mut a = pr.a.as_ptr().add(i0 * pr.lda);
        let mut b = pr.b.as_ptr().add(j0);
        let mut acc = [[_mm512_setzero_ps(); NV]; R];
        for _ in 0..k {
            let mut bv = [_mm512_setzero_ps(); NV];
            for (v, slot) in bv.iter_mut().enumerate() {
                *slot = _mm512_loadu_ps(b.add(16 * v));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*a.add(r * pr.lda));
                for (v, slot) in row.iter_mut().enumerate() {
                    *slot = _mm512_fmadd_ps(x, bv[v], *slot);
                }
            }
            a = a.add(pr.ka);
            b = b.add(pr.ldb);
        }
        let scale = _mm512_set1_ps(pr.out_scale);
        for (r, row) in acc.iter().enumerate() {
            let dst = out.add((i0 + r) * ldo + j0);
            for (v, slot) in row.iter().enumerate() {
                let d = dst.add(16 * v);
                let sum = if pr.out_scale == 0.0 {
                    *slot
                } else if pr.out_scale == 1.0 {
                    _mm512_add_ps(_mm512_loadu_ps(d), *slot)
                } else {
                    _mm512_fmadd_ps(scale, _mm512_loadu_ps(d), *slot)
                };
                _mm512_storeu_ps(d, sum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 250.0 - 2.0)
            .collect()
    }

    /// Against a float64 product over every shape class: each column-block width (16 … 64 and a
    /// 64 + 16 split), row counts that leave 0, 1 or several rows after the tiles, padded leading
    /// dimensions, `a` row-major and transposed, and a lower-triangular `a` (zeros above the
    /// diagonal, skipped). Columns past `n` and rows' padding are left alone.
    #[test]
    fn small_products_match_float64() {
        if !takes(16) {
            eprintln!("SKIPPED small_products_match_float64: this CPU has no AVX-512 (the gemm crate runs instead)");
            return;
        }
        assert!(!takes(0) && !takes(40));
        for &(m, k, n) in
            &[(1, 1, 16), (7, 5, 32), (13, 64, 48), (64, 64, 64), (128, 64, 64), (64, 128, 80), (25, 3, 128)]
        {
            for (lower, transposed) in [(false, false), (true, false), (false, true), (true, true)] {
                let mut logical = data(m * k, 1);
                if lower {
                    for i in 0..m {
                        logical[i * k..(i + 1) * k].iter_mut().skip(i + 1).for_each(|v| *v = 0.0);
                    }
                }
                let (lda, ka) = if transposed { (1, m + 2) } else { (k + 3, 1) };
                // Padding is NaN: a read of it would show in the result.
                let mut a = vec![f32::NAN; (m - 1) * lda + (k - 1) * ka + 1];
                for i in 0..m {
                    for p in 0..k {
                        a[i * lda + p * ka] = logical[i * k + p];
                    }
                }
                let (ldb, ldo) = (n + 16, n + 5);
                let b = data(k * ldb, 2);
                // Accumulate, overwrite (`out` NaN: a read of it would show) and decay-then-add.
                for out_scale in [1.0f32, 0.0, 0.37] {
                    let mut out = data(m * ldo, 3);
                    let mut want: Vec<f64> = out.iter().map(|&v| v as f64).collect();
                    for i in 0..m {
                        for j in 0..n {
                            let dot = (0..k).map(|p| logical[i * k + p] as f64 * b[p * ldb + j] as f64).sum::<f64>();
                            want[i * ldo + j] = out_scale as f64 * want[i * ldo + j] + dot;
                            if out_scale == 0.0 {
                                out[i * ldo + j] = f32::NAN;
                            }
                        }
                    }
                    let product = SmallProduct { m, k, n, a: &a, lda, ka, b: &b, ldb, lower, out_scale };
                    assert!(product.fits(&out, ldo));
                    gemm_acc(&product, &mut out, ldo);
                    for i in 0..m {
                        for j in 0..ldo {
                            let (got, w) = (out[i * ldo + j] as f64, want[i * ldo + j]);
                            // Products are sums of k terms of size ≤ 4.
                            let tol = if j < n { 1e-5 * (k as f64 + 1.0) * 4.0 } else { 0.0 };
                            assert!(
                                (got - w).abs() <= tol,
                                "m {m} k {k} n {n} lower {lower} transposed {transposed} out_scale {out_scale}: \
                                 out[{i}][{j}] {got} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn shapes_past_their_slices_do_not_fit() {
        let (a, b, out) = (vec![0f32; 64], vec![0f32; 16 * 4], vec![0f32; 4 * 16]);
        let ok = SmallProduct { m: 4, k: 4, n: 16, a: &a, lda: 4, ka: 1, b: &b, ldb: 16, lower: false, out_scale: 1.0 };
        assert!(ok.fits(&out, 16));
        assert!(!SmallProduct { m: 5, ..ok }.fits(&out, 16));
        assert!(!SmallProduct { lda: 21, ..ok }.fits(&out, 16));
        assert!(!SmallProduct { ldb: 8, ..ok }.fits(&out, 16));
        assert!(!ok.fits(&out, 8));
        assert!(!SmallProduct { ka: usize::MAX, ..ok }.fits(&out, 16));
    }
}
