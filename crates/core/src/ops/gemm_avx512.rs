//! AVX-512 GEMM for prefill projections: `out[m, n] (+)= x[m, k] · Wᵀ`, W row-major `[n, k]`.
//!
//! Why our own: the `gemm` crate only ships AVX2 micro-kernels on stable Rust (its AVX-512 ones need
//! nightly), which leaves half the vector width unused on AVX-512 CPUs — and prefill time is mostly
//! these products. Scheme (GotoBLAS-style, simplified): each rayon task packs a panel of NR = 32
//! output rows of W into k-major order (so one k step is two 16-lane vectors), then sweeps MR = 8
//! token rows at a time with a register-blocked micro-kernel (16 zmm accumulators, broadcast-FMA via
//! `std::arch` intrinsics — LLVM did not vectorise the plain-Rust version — no horizontal sums). Only used when the CPU has AVX-512; otherwise `gemm` runs.
//! Half-precision and block-quantized W are widened while packing (the panel is f32), so they cost
//! one conversion per weight per task, not a widened copy of W.
// Off x86_64 (WASM) `try_gemm` always declines, leaving the kernel's helpers unused there.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]

use std::cell::RefCell;

use rayon::prelude::*;

use super::mat_ref::MatRef;
use super::weight_ref::{widen, WeightRef};

const MR: usize = 8;
const NR: usize = 32;
/// Panels per task: the token tile (MR × k) stays in L1 while these panels stream from L2.
const PB: usize = 4;

/// Raw output pointer shared by tasks that write disjoint (row range × column range) blocks.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

thread_local! {
    static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Half-precision W rows of one panel widened (contiguous, vectorised) before the transposing pack.
    static WIDE_ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Computes the product if this CPU has AVX-512 (returns true), else does nothing (returns false).
pub(crate) fn try_gemm(x: MatRef, w: WeightRef, n: usize, out: &mut [f32], accumulate: bool) -> bool {
    if super::simd_level() != super::SimdLevel::Avx512 {
        return false;
    }
    gemm(x, w, n, out, accumulate);
    true
}

/// The product, on a CPU with AVX-512 (checked by the caller).
fn gemm(x: MatRef, w: WeightRef, n: usize, out: &mut [f32], accumulate: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        let (m, k) = (x.rows, x.cols);
        x.check();
        assert!(w.len() >= super::size_mul(n, k) && out.len() >= super::size_mul(m, n));
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            if !accumulate {
                out[..m * n].fill(0.0);
            }
            return;
        }
        // The micro-kernel wants token rows contiguous along k; copy strided views (e.g. the scan's
        // transposed output) once — O(m·k), small next to the O(m·n·k) product.
        let contiguous;
        let x = if x.col_stride == 1 {
            x
        } else {
            let mut c = vec![0f32; m * k];
            // 32×32 tiles keep both the strided reads and the writes within a few cache lines.
            const T: usize = 32;
            for r0 in (0..m).step_by(T) {
                for i0 in (0..k).step_by(T) {
                    for i in i0..(i0 + T).min(k) {
                        for r in r0..(r0 + T).min(m) {
                            c[r * k + i] = x.data[r * x.row_stride + i * x.col_stride];
                        }
                    }
                }
            }
            contiguous = c;
            MatRef::rows(&contiguous, m, k)
        };
        let panels = n.div_ceil(NR * PB);
        let threads = rayon::current_num_threads();
        // Split tokens too when there are few panels, so every thread gets work.
        let groups = (4 * threads).div_ceil(panels).clamp(1, m.div_ceil(MR));
        let rows_per_group = m.div_ceil(groups).next_multiple_of(MR);
        let groups = m.div_ceil(rows_per_group);
        let ptr = OutPtr(out.as_mut_ptr());
        let task = |i: usize| {
            let (p, g) = (i / groups, i % groups);
            let rows = g * rows_per_group..((g + 1) * rows_per_group).min(m);
            PANEL.with(|buf| {
                let mut buf = buf.borrow_mut();
                // SAFETY: AVX-512F/AVX2/FMA checked above; each task writes only rows `rows` ×
                // columns of panel `p` of `out`, disjoint from every other task; all reads are
                // inside the views checked by the caller (`MatRef::check`) and the asserts above.
                unsafe { panel_task(x, w, n, p, rows, ptr, accumulate, &mut buf) };
            });
        };
        if panels * groups == 1 || threads == 1 {
            (0..panels * groups).for_each(task);
        } else {
            (0..panels * groups).into_par_iter().for_each(task);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, w, n, out, accumulate);
        unreachable!("AVX-512 level off x86_64");
    }
}

/// `dst[kk * NR + j] = rows[j * k + kk]` for the `rows.len() / k` (≤ NR) rows given.
#[inline(always)]
fn pack(rows: &[f32], k: usize, dst: &mut [f32]) {
    for (kk, step) in dst.chunks_exact_mut(NR).take(k).enumerate() {
        for (d, row) in step.iter_mut().zip(rows.chunks_exact(k)) {
            *d = row[kk];
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn panel_task(
    x: MatRef,
    w: WeightRef,
    n: usize,
    p: usize,
    rows: std::ops::Range<usize>,
    out: OutPtr,
    accumulate: bool,
    packed: &mut Vec<f32>,
) {
    let k = x.cols;
    let first = p * PB; // first 32-row panel of this task
    let count = PB.min(n.div_ceil(NR) - first);
    // Pack panel q (W rows (first+q)*NR ..) as packed[(q * k + kk) * NR + j]; zero rows past n.
    // Grown, never cleared: every value a panel reads is written below (no per-call memset).
    if packed.len() < count * k * NR {
        packed.resize(count * k * NR, 0.0);
    }
    for q in 0..count {
        let o0 = (first + q) * NR;
        let nr = NR.min(n - o0);
        let dst = &mut packed[q * k * NR..(q + 1) * k * NR];
        if nr < NR {
            dst.fill(0.0); // the columns past n multiply into outputs that are never stored
        }
        match w {
            WeightRef::F32(w) => pack(&w[o0 * k..(o0 + nr) * k], k, dst),
            // The panel's rows are contiguous in W: widen (or dequantize: a panel is whole rows, so
            // whole blocks) them in one vectorised pass, then pack from f32 (a transposing gather
            // that widened element by element measured ~10 % slower).
            _ => WIDE_ROWS.with(|rows| {
                let mut rows = rows.borrow_mut();
                if rows.len() < nr * k {
                    rows.resize(nr * k, 0.0);
                }
                let rows = &mut rows[..nr * k];
                widen(w.slice(o0 * k, nr * k), rows);
                pack(rows, k, dst);
            }),
        }
    }
    let xd = x.data.as_ptr();
    let (rs, cs) = (x.row_stride, x.col_stride);
    let mut t = rows.start;
    while t < rows.end {
        let mr = MR.min(rows.end - t);
        // Short tiles repeat the last row (computed, never stored).
        let mut base = [0usize; MR];
        for (r, b) in base.iter_mut().enumerate() {
            *b = (t + r.min(mr - 1)) * rs;
        }
        for q in 0..count {
            let o0 = (first + q) * NR;
            let nr = NR.min(n - o0);
            use std::arch::x86_64::*;
            let mut acc = [[_mm512_setzero_ps(); 2]; MR];
            let mut wp = packed.as_ptr().add(q * k * NR);
            for kk in 0..k {
                let w0 = _mm512_loadu_ps(wp);
                let w1 = _mm512_loadu_ps(wp.add(16));
                let koff = kk * cs;
                for r in 0..MR {
                    let a = _mm512_set1_ps(*xd.add(base[r] + koff));
                    acc[r][0] = _mm512_fmadd_ps(a, w0, acc[r][0]);
                    acc[r][1] = _mm512_fmadd_ps(a, w1, acc[r][1]);
                }
                wp = wp.add(NR);
            }
            for (r, pair) in acc.iter().enumerate().take(mr) {
                let mut row = [0f32; NR];
                _mm512_storeu_ps(row.as_mut_ptr(), pair[0]);
                _mm512_storeu_ps(row.as_mut_ptr().add(16), pair[1]);
                let dst = out.0.add((t + r) * n + o0);
                for (j, &v) in row.iter().enumerate().take(nr) {
                    let d = dst.add(j);
                    *d = if accumulate { *d + v } else { v };
                }
            }
        }
        t += MR;
    }
}
