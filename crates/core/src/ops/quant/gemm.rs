//! Many-row products with block-quantized weights (prefill): every activation row is rounded to 8 bits
//! exactly as a one-row product (decode) rounds it, so a prompt fed at once and the same tokens fed
//! one by one give the same numbers up to f32 summation order, and llama.cpp's prompts are matched
//! in kind (it multiplies int8 blocks too).
//!
//! Two ways to run it:
//! - `gemm_x86` (AVX-512 VNNI): weight rows unpacked to signed bytes in panels of 32 rows and the
//!   token rows' bytes packed in tiles, then `vpdpbusd` outer products, 16 weight rows per
//!   register — about three times the f32 GEMM's multiply-adds per instruction.
//! - elsewhere (AVX2, baseline, WASM): the one-row kernels themselves over blocks of weight rows small
//!   enough to stay in cache while every token row passes them.

use std::cell::RefCell;

use rayon::prelude::*;

use super::activation::QuantizedActivation;
use super::QuantRef;
use crate::ops::mat_ref::{MatRef, OutPtr};
use crate::ops::size_mul;

thread_local! {
    /// One strided activation row gathered contiguous before it is quantized.
    static ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out[r, o] (+)= Σ_i x[r, i] · w[o, i]` with each row of `x` quantized for `w.kind`, `w` row-major
/// `[n, x.cols]`, `out` row-major `[x.rows, n]`. (Tests; `matmul` calls [`gemm_many`].)
#[cfg(test)]
pub(crate) fn gemm(x: MatRef, w: QuantRef, n: usize, out: &mut [f32], accumulate: bool) {
    gemm_many(x, &mut [QuantProduct { w, n, out }], accumulate);
}

/// One product of [`gemm_many`]: `out` `[m, n]` (+)= `x · wᵀ`.
pub(crate) struct QuantProduct<'a, 'o> {
    pub w: QuantRef<'a>,
    pub n: usize,
    pub out: &'o mut [f32],
}

/// [`gemm`] of the same rows with several weights (a prefill's q, k and v): the rows are rounded
/// (and, on VNNI, packed) once per weight kind instead of once per product. Each product's bits are
/// those it has alone.
pub(crate) fn gemm_many(x: MatRef, products: &mut [QuantProduct], accumulate: bool) {
    x.check();
    let (m, k) = (x.rows, x.cols);
    for p in products.iter() {
        let kind = p.w.kind.name();
        assert!(p.w.len() == size_mul(p.n, k), "quantized gemm: {kind} weight is not [{}, {k}]", p.n);
        assert!(p.out.len() >= size_mul(m, p.n), "quantized gemm: output smaller than [{m}, {}]", p.n);
    }
    if m == 0 {
        return;
    }
    let mut kinds = Vec::new();
    for p in products.iter().filter(|p| p.n > 0) {
        if !kinds.contains(&p.w.kind) {
            kinds.push(p.w.kind);
        }
    }
    for kind in kinds {
        let same: Vec<&mut QuantProduct> = products.iter_mut().filter(|p| p.n > 0 && p.w.kind == kind).collect();
        #[cfg(target_arch = "x86_64")]
        if super::gemm_x86::available() {
            let mut same = same;
            // SAFETY: `available` checked AVX-512F/BW/VNNI (+ AVX2, FMA, F16C); the sizes were checked
            // above, m and every n are > 0, and `same` holds one kind.
            unsafe { super::gemm_x86::gemm_same_kind(x, &mut same, accumulate) };
            continue;
        }
        let acts = quantize_rows(x, same[0].w);
        for p in same {
            rows_in_blocks(&acts, p.w, p.n, p.out, accumulate);
        }
    }
}

/// Every row of `x` quantized for `w`'s kind (in parallel: a 512-token prompt is ~0.4 M values).
fn quantize_rows(x: MatRef, w: QuantRef) -> Vec<QuantizedActivation> {
    let one = |r: usize| {
        let start = r * x.row_stride;
        if x.col_stride == 1 {
            QuantizedActivation::new(&x.data[start..start + x.cols], w.kind)
        } else {
            ROW.with(|row| {
                let mut row = row.borrow_mut();
                row.clear();
                row.extend((0..x.cols).map(|c| x.data[start + c * x.col_stride]));
                QuantizedActivation::new(&row, w.kind)
            })
        }
    };
    if x.rows > 1 && rayon::current_num_threads() > 1 {
        (0..x.rows).into_par_iter().map(one).collect()
    } else {
        (0..x.rows).map(one).collect()
    }
}

/// Weight bytes per task of [`rows_in_blocks`]: a block this size stays in L2 while every token row
/// passes over it.
const BLOCK_BYTES: usize = 64 << 10;

/// The one-row kernel (`super::rows`) for each token over blocks of weight rows.
fn rows_in_blocks(acts: &[QuantizedActivation], w: QuantRef, n: usize, out: &mut [f32], accumulate: bool) {
    let k = acts[0].len();
    let row_bytes = w.bytes_of(k);
    let threads = rayon::current_num_threads();
    let per_block = (BLOCK_BYTES / row_bytes.max(1)).clamp(1, n.div_ceil(2 * threads).max(1));
    let blocks = n.div_ceil(per_block);
    let dst = OutPtr(out.as_mut_ptr());
    let task = |b: usize| {
        let o0 = b * per_block;
        let rows = per_block.min(n - o0);
        let wb = w.slice(o0 * k, rows * k);
        for (t, act) in acts.iter().enumerate() {
            // SAFETY: block b writes only columns o0 .. o0 + rows of row t of the m × n `out`
            // (asserted by the caller to hold m · n values), disjoint from every other block.
            let o = unsafe { std::slice::from_raw_parts_mut(dst.get().add(t * n + o0), rows) };
            super::rows(act, wb, o, accumulate);
        }
    };
    if blocks == 1 || threads == 1 {
        (0..blocks).for_each(task);
    } else {
        (0..blocks).into_par_iter().for_each(task);
    }
}

/// [`gemm`] by the one-row kernels only (tests compare the packed kernel with it).
#[cfg(test)]
pub(crate) fn gemm_by_rows(x: MatRef, w: QuantRef, n: usize, out: &mut [f32], accumulate: bool) {
    let acts = quantize_rows(x, w);
    rows_in_blocks(&acts, w, n, out, accumulate);
}
