//! `out = x · Wᵀ (+ b)` for PyTorch-layout weights `W[out, in]` stored as f32, f16 or bf16.
//!
//! Many rows (prefill): our AVX-512 packed-panel GEMM (`gemm_avx512`) where the CPU has AVX-512,
//! otherwise the `gemm` crate — the GEMM candle's CPU backend calls — used directly on our slices (no
//! tensor copies). Both run on rayon's global pool and fold the residual add in (`accumulate`).
//! Half-precision W is widened a block at a time (while packing panels, or into a per-thread f32
//! block handed to `gemm`): O(n·k) per call next to the O(m·n·k) product, and never a full f32 copy.
//! One row (decode): the bandwidth-bound threaded matvec (`matvec`), which reads half weights directly;
//! it measured faster than `gemm` with m = 1 on the decode shapes (see the ignored `tests::speed_probe`).

use std::cell::RefCell;

use rayon::prelude::*;

pub use super::mat_ref::MatRef;
use super::mat_ref::OutPtr;
pub(crate) use super::mat_ref::RowSource;
#[cfg(test)]
pub(crate) use super::matvec::matvec;
pub(crate) use super::matvec::matvec_many;
use super::matvec::matvec_with;
pub use super::matvec::ActivationRounding;
use super::size_mul;
use super::weight_ref::widen;
// `widen_rows`: the embedding gather of half-precision tables (the model's lookup moves onto it).
pub(crate) use super::quant::QuantRef;
pub(crate) use super::weight_ref::{widen_rows, WeightRef};

/// `out[r, o] (+)= Σ_i x[r, i] · w[o, i] + bias[o]`, `w` row-major `[out_features, x.cols]`,
/// `out` row-major `[x.rows, out_features]`. With `accumulate` the product is added to `out`.
/// f32 weights only (tests; the model goes through [`linear_with`]).
#[cfg(test)]
pub(crate) fn linear(x: MatRef, w: &[f32], bias: Option<&[f32]>, out: &mut [f32], accumulate: bool) {
    linear_w(x, WeightRef::F32(w), bias, out, accumulate);
}

/// [`linear`] with W in its stored dtype: half-precision weights are read as they are (widened in
/// registers or a block at a time), products and sums in f32.
#[cfg(test)]
pub(crate) fn linear_w(x: MatRef, w: WeightRef, bias: Option<&[f32]>, out: &mut [f32], accumulate: bool) {
    linear_with(x, w, bias, out, accumulate, ActivationRounding::Quantized);
}

/// [`linear_w`] with the activation rounding of one-row products with quantized weights chosen
/// (many rows run the GEMM on dequantized panels, exact either way).
pub(crate) fn linear_with(
    x: MatRef,
    w: WeightRef,
    bias: Option<&[f32]>,
    out: &mut [f32],
    accumulate: bool,
    rounding: ActivationRounding,
) {
    x.check();
    let k = x.cols;
    assert!(k > 0, "linear: input has no columns");
    let n = w.len() / k;
    assert!(w.len() == n * k && out.len() >= size_mul(x.rows, n), "linear: weight or output size disagrees");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "linear: bias length");
    }
    let out = &mut out[..x.rows * n];
    if x.rows == 1 && x.col_stride == 1 {
        matvec_with(&x.data[..k], w, bias, out, accumulate, rounding);
        return;
    }
    match int8_rows(w, rounding) {
        Some(q) => quantized_rows(x, vec![(q, out)], accumulate),
        None => gemm_rows(x, w, n, out, accumulate),
    }
    if let Some(b) = bias {
        for row in out.chunks_exact_mut(n) {
            for (o, &bv) in row.iter_mut().zip(b) {
                *o += bv;
            }
        }
    }
}

/// `out (+)= rows · Wᵀ` for activation rows made on demand (`src`; no bias): the bits
/// [`linear_with`] gives on the made rows. Where the product runs on AMX tiles the token packing
/// makes each row as it packs it (a gated norm's output never goes to memory as a matrix);
/// elsewhere the rows are made into a matrix first.
pub(crate) fn linear_from_rows(
    src: RowSource,
    w: WeightRef,
    out: &mut [f32],
    accumulate: bool,
    rounding: ActivationRounding,
) {
    let (m, k) = (src.rows, src.cols);
    assert!(k > 0, "linear: input has no columns");
    let n = w.len() / k;
    assert!(w.len() == n * k && out.len() >= size_mul(m, n), "linear: weight or output size disagrees");
    let out = &mut out[..m * n];
    let on_tiles = m > 1 && int8_rows(w, rounding).is_none() && super::gemm_avx512::takes(n);
    if on_tiles && super::gemm_amx::available() {
        super::gemm_amx::gemm_many_from(src, &mut [super::gemm_avx512::Product { w, n, out }], accumulate);
        return;
    }
    let mut rows = vec![0f32; size_mul(m, k)];
    let make = |(r, row): (usize, &mut [f32])| (src.fill)(r, row);
    if m > 16 {
        rows.par_chunks_mut(k).enumerate().for_each(make);
    } else {
        rows.chunks_mut(k).enumerate().for_each(make);
    }
    linear_with(MatRef::rows(&rows, m, k), w, None, out, accumulate, rounding);
}

/// The products of the same rows `x` with several weights of its width (a layer's q, k and v; gate
/// and up), each `out` `[x.rows, n]` getting exactly what [`linear_with`] (no bias, not accumulating)
/// gives it. One row: [`matvec_many`]. Several: the f32-activation AVX-512 GEMMs pack the token rows
/// once and run as one set of tasks (`gemm_avx512::gemm_many`); the others run one by one.
pub(crate) fn linear_many(x: MatRef, parts: Vec<(WeightRef, &mut [f32])>, rounding: ActivationRounding) {
    x.check();
    let k = x.cols;
    assert!(k > 0, "linear: input has no columns");
    for (w, out) in &parts {
        assert!(
            w.len() % k == 0 && out.len() == size_mul(x.rows, w.len() / k),
            "linear: weight or output size disagrees"
        );
    }
    if x.rows == 1 && x.col_stride == 1 {
        matvec_many(&x.data[..k], parts, false, rounding);
        return;
    }
    let (mut packed, mut rounded) = (Vec::new(), Vec::new());
    for (w, out) in parts {
        let n = w.len() / k;
        match int8_rows(w, rounding) {
            Some(q) => rounded.push((q, out)),
            None if super::gemm_avx512::takes(n) => packed.push(super::gemm_avx512::Product { w, n, out }),
            None => gemm_rows(x, w, n, out, false),
        }
    }
    if !packed.is_empty() {
        super::gemm_avx512::gemm_many(x, &mut packed, false);
    }
    if !rounded.is_empty() {
        quantized_rows(x, rounded, false);
    }
}

/// The quantized weight of a many-row product whose activation rows are rounded to 8 bits: under
/// `with_int8_prompts`, unless the product keeps f32 activations (a logits head).
fn int8_rows(w: WeightRef, rounding: ActivationRounding) -> Option<QuantRef> {
    match w {
        WeightRef::Quant(q) if rounding == ActivationRounding::Quantized && super::activation_scope().int8_prompts => {
            Some(q)
        }
        _ => None,
    }
}

/// Many rows with quantized weights under `with_int8_prompts`, for one or several weights of the
/// same rows (each `out` `[x.rows, n]`): each activation row rounded to 8 bits as a one-row product
/// rounds it, once per weight kind for all of them (`quant::gemm_many`). Under
/// `with_exact_activations` the last row keeps f32 activations (the row whose logits pick a
/// generation's first token); the rows before it are rounded as usual.
fn quantized_rows(x: MatRef, parts: Vec<(QuantRef, &mut [f32])>, accumulate: bool) {
    let exact_last = x.rows > 0 && super::exact_activations_active();
    let m = x.rows - exact_last as usize;
    let mut products = Vec::with_capacity(parts.len());
    let mut last_rows = Vec::new();
    for (w, out) in parts {
        let n = out.len() / x.rows.max(1);
        let (body, last) = out.split_at_mut(m * n);
        products.push(super::quant::QuantProduct { w, n, out: body });
        if exact_last {
            last_rows.push((WeightRef::Quant(w), last));
        }
    }
    super::quant::gemm_many(MatRef { rows: m, ..x }, &mut products, accumulate);
    if exact_last {
        let start = m * x.row_stride;
        let last: Vec<f32> = (0..x.cols).map(|c| x.data[start + c * x.col_stride]).collect();
        matvec_many(&last, last_rows, accumulate, ActivationRounding::Exact);
    }
}

/// The many-rows path: our AVX-512 kernel where the CPU has it, else the `gemm` crate.
pub(crate) fn gemm_rows(x: MatRef, w: WeightRef, n: usize, out: &mut [f32], accumulate: bool) {
    x.check();
    if super::gemm_avx512::takes(n) {
        super::gemm_avx512::gemm_many(x, &mut [super::gemm_avx512::Product { w, n, out }], accumulate);
        return;
    }
    match w {
        WeightRef::F32(w) => gemm_crate(x, w, n, out, accumulate),
        _ => gemm_crate_widening(x, w, n, out, accumulate),
    }
}

/// The `gemm` crate (what candle's CPU matmul calls), on our slices.
pub(crate) fn gemm_crate(x: MatRef, w: &[f32], n: usize, out: &mut [f32], accumulate: bool) {
    x.check();
    let (m, k) = (x.rows, x.cols);
    assert!(w.len() >= size_mul(n, k) && out.len() >= size_mul(m, n));
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the views were checked just above; `out` holds the whole m × n destination.
    unsafe { gemm_raw(x, w, n, out.as_mut_ptr(), n, accumulate, parallelism) };
}

/// `dst[r · dst_row_stride + o] (+)= x[r, :] · w[o, :]` for o < n, through the `gemm` crate.
/// Safety: `x` is checked (`MatRef::check`), `w.len() ≥ n · x.cols`, and `dst` is valid for writes
/// at every `r · dst_row_stride + o` (r < x.rows, o < n) with no other thread touching those.
unsafe fn gemm_raw(
    x: MatRef,
    w: &[f32],
    n: usize,
    dst: *mut f32,
    dst_row_stride: usize,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let (m, k) = (x.rows, x.cols);
    // rhs = Wᵀ: element (i, j) at w[j * k + i].
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_row_stride as isize,
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

thread_local! {
    /// One task's block of W widened to f32, reused across calls.
    static WIDE_BLOCK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Half-precision W through the `gemm` crate: each task widens a block of W's rows into a per-thread
/// f32 buffer and multiplies it into its own columns of `out`.
pub(crate) fn gemm_crate_widening(x: MatRef, w: WeightRef, n: usize, out: &mut [f32], accumulate: bool) {
    x.check();
    let (m, k) = (x.rows, x.cols);
    assert!(w.len() >= size_mul(n, k) && out.len() >= size_mul(m, n));
    if m == 0 || n == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    // Blocks of up to 256 rows of W (≤ 1.5 MB widened for k = 1536), ~4 per thread.
    let block = n.div_ceil(4 * threads).clamp(16, 256).next_multiple_of(16);
    let blocks = n.div_ceil(block);
    let sequential = threads == 1 || blocks == 1;
    let inner = if sequential && threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    let dst = OutPtr(out.as_mut_ptr());
    let task = |b: usize| {
        let o0 = b * block;
        let rows = block.min(n - o0);
        WIDE_BLOCK.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            buf.resize(rows * k, 0.0);
            widen(w.slice(o0 * k, rows * k), &mut buf);
            // SAFETY: task b writes only columns o0 .. o0 + rows of the m × n `out` (asserted to hold
            // m · n elements), disjoint from every other task's; `x` was checked above.
            unsafe { gemm_raw(x, &buf, rows, dst.get().add(o0), n, accumulate, inner) };
        });
    };
    if sequential {
        (0..blocks).for_each(task);
    } else {
        (0..blocks).into_par_iter().for_each(task);
    }
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
                super::super::gemm_avx512::try_gemm(x, WeightRef::F32(w), n, out, true),
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
        fn gemm_rows_f32(x: MatRef, w: &[f32], n: usize, out: &mut [f32], acc: bool) {
            gemm_rows(x, WeightRef::F32(w), n, out, acc)
        }
        for product in [gemm_crate as fn(MatRef, &[f32], usize, &mut [f32], bool), gemm_rows_f32 as _] {
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
}
