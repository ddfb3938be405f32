//! AVX-512 GEMM for prefill projections: `out[m, n] (+)= x[m, k] · Wᵀ`, W row-major `[n, k]`.
//!
//! Why our own: the `gemm` crate only ships AVX2 micro-kernels on stable Rust (its AVX-512 ones need
//! nightly), which leaves half the vector width unused on AVX-512 CPUs — and prefill time is mostly
//! these products. Scheme (BLIS loop order): the token rows are packed once into k-major tiles of
//! MR = 12 rows, shared by every task; each rayon task packs PB panels of NR = 32 output rows of W
//! into k-major order (one k step = two 16-lane vectors; both packs are 16 × 16 register transposes,
//! `gemm_pack`), then for each KC-deep slice of k sweeps MC-row blocks of token tiles over each
//! panel with a register-blocked micro-kernel (24 zmm accumulators, broadcast-FMA via `std::arch`
//! intrinsics — LLVM did not vectorise the plain-Rust version — no horizontal sums). Measured on
//! Mamba-130M's in_proj at 2 threads: 363 GFLOP/s (82 % of the FMA peak) against 289 for the
//! previous 8-row, unblocked kernel and 201 for the `gemm` crate. Only used when the CPU has
//! AVX-512; otherwise `gemm` runs.
//! Half-precision and block-quantized W are widened while packing (the panel is f32), so they cost
//! one conversion per weight per task, not a widened copy of W.
// Off x86_64 (WASM) `available` is false, leaving the kernel's helpers unused there.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]

use std::cell::RefCell;

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::gemm_pack::{pack_panel, pack_tokens};
use super::mat_ref::{MatRef, OutPtr};
use super::weight_ref::{widen, WeightRef};

/// Token rows per micro-tile: 12 × 2 accumulators + 2 weight vectors + 1 broadcast = 27 of the
/// 32 zmm registers; 24 FMAs per 14 loads keeps both FMA ports busy (8 rows left them ~40 % idle).
const MR: usize = 12;
const NR: usize = 32;
/// Panels per task: their packed panels (PB × NR × k) stay in L2 while the task's token blocks sweep them.
const PB: usize = 4;
/// k steps per block: one panel's KC × NR slice (32 KiB) stays in L1 while every token tile of the
/// task sweeps it; the packed token tiles (KC × MR each) stream from L2.
const KC: usize = 256;
/// Token rows per block (a multiple of MR): their packed KC × MC tiles (144 KiB) stay in L2 while
/// the task's panels sweep them.
const MC: usize = 144;
const _: () = assert!(MC.is_multiple_of(MR));

thread_local! {
    static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Half-precision W rows of one panel widened (contiguous, vectorised) before the transposing pack.
    static WIDE_ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The calling thread's packed token tiles (read by every task of one product).
    static TOKENS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Computes the product if this CPU has AVX-512 (returns true), else does nothing (returns false).
/// (Tests; `matmul` asks [`takes`] and calls [`gemm_many`].)
#[cfg(test)]
pub(crate) fn try_gemm(x: MatRef, w: WeightRef, n: usize, out: &mut [f32], accumulate: bool) -> bool {
    if !available() {
        return false;
    }
    // This kernel, even where AMX would run the product (`gemm_amx::try_gemm` tests that one).
    let mut products = [Product { w, n, out }];
    if checked_and_nonempty(x, &mut products, accumulate) {
        packed_tokens_then_tasks(x, &mut products, accumulate);
    }
    true
}

/// Whether this CPU runs [`gemm_many`] (AVX-512).
pub(crate) fn available() -> bool {
    super::simd_level() == super::SimdLevel::Avx512
}

/// Whether a product with `n` outputs runs here: AVX-512, and not [`pads_too_much`].
pub(crate) fn takes(n: usize) -> bool {
    available() && !pads_too_much(n)
}

/// One product of [`gemm_many`]: `out` `[m, n]` (+)= `x · Wᵀ`.
pub(crate) struct Product<'a, 'o> {
    pub w: WeightRef<'a>,
    pub n: usize,
    pub out: &'o mut [f32],
}

/// Whether padding `n` outputs to whole NR-wide panels wastes more than a tenth of the work: then
/// the `gemm` crate, whose narrower tiles fit, is faster. Mamba's x_proj (n = 80 = 2.5 panels) ran at
/// 82 GFLOP/s here against the crate's 111 (1 thread, Zen 4); wide products pad under 1 %.
pub(crate) fn pads_too_much(n: usize) -> bool {
    (n.div_ceil(NR) * NR - n) * 10 > n
}

/// The products of the same rows `x` with several weights (a prefill's q, k and v), on a CPU with
/// AVX-512 ([`available`], checked by the caller): the token rows are packed once for all of them
/// and their tasks run as one parallel region. Each product's tasks, and so its bits, are those it
/// has alone.
/// On a CPU with AMX the products run on its tiles instead (`gemm_amx`, f32-exact).
pub(crate) fn gemm_many(x: MatRef, products: &mut [Product], accumulate: bool) {
    if !checked_and_nonempty(x, products, accumulate) {
        return;
    }
    if super::gemm_amx::available() {
        super::gemm_amx::gemm_many(x, products, accumulate);
    } else {
        packed_tokens_then_tasks(x, products, accumulate);
    }
}

/// Checks the views and sizes; false (with the outputs done) when there are no rows or no k.
fn checked_and_nonempty(x: MatRef, products: &mut [Product], accumulate: bool) -> bool {
    let (m, k) = (x.rows, x.cols);
    x.check();
    for p in products.iter() {
        assert!(p.w.len() >= super::size_mul(p.n, k) && p.out.len() >= super::size_mul(m, p.n));
    }
    if m == 0 {
        return false;
    }
    if k == 0 {
        if !accumulate {
            products.iter_mut().for_each(|p| p.out[..m * p.n].fill(0.0));
        }
        return false;
    }
    true
}

fn packed_tokens_then_tasks(x: MatRef, products: &mut [Product], accumulate: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        let (m, k) = (x.rows, x.cols);
        // Pack the token rows once, shared by every task: tile i holds rows i·MR.. in k-major order
        // (one k step = MR consecutive floats, what the micro-kernel broadcasts), zero rows past m.
        with_thread_buffer(&TOKENS, |tokens| {
            let tiles = m.div_ceil(MR);
            let len = super::size_mul(super::size_mul(tiles, MR), k);
            if tokens.len() < len {
                tokens.resize(len, 0.0);
            }
            let tokens = &mut tokens[..len];
            // SAFETY: AVX-512F checked by the caller (`available`); `x` checked above.
            let pack = |(i, tile): (usize, &mut [f32])| unsafe { pack_tokens(x, i * MR, MR, tile) };
            if tiles > 1 && rayon::current_num_threads() > 1 {
                tokens.par_chunks_mut(MR * k).enumerate().for_each(pack);
            } else {
                tokens.chunks_mut(MR * k).enumerate().for_each(pack);
            }
            run_tasks(m, k, tokens, products, accumulate);
        });
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, products, accumulate);
        unreachable!("AVX-512 level off x86_64");
    }
}

/// Runs `f` on this thread's buffer `key`, or on a fresh one when a product set started from inside
/// another one's task (this thread stole it while waiting) finds the buffer borrowed. Shared with
/// `gemm_amx`.
pub(super) fn with_thread_buffer<T, R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
    f: impl FnOnce(&mut Vec<T>) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut Vec::new()),
    })
}

/// How one product splits into (panel group × token group) tasks.
#[derive(Clone, Copy)]
struct Split {
    groups: usize,
    rows_per_group: usize,
    tasks: usize,
}

impl Split {
    fn new(m: usize, n: usize, threads: usize) -> Self {
        let panels = n.div_ceil(NR * PB);
        if panels == 0 {
            return Self { groups: 1, rows_per_group: m, tasks: 0 }; // no outputs: nothing to do
        }
        // Split tokens too when there are few panels, so every thread gets work.
        let groups = (4 * threads).div_ceil(panels).clamp(1, m.div_ceil(MR));
        let rows_per_group = m.div_ceil(groups).next_multiple_of(MR);
        let groups = m.div_ceil(rows_per_group);
        Self { groups, rows_per_group, tasks: panels * groups }
    }
}

/// Runs every product's (panel group × token group) tasks on rayon, as one set.
#[cfg(target_arch = "x86_64")]
fn run_tasks(m: usize, k: usize, tokens: &[f32], products: &mut [Product], accumulate: bool) {
    let threads = rayon::current_num_threads();
    let jobs: Vec<(WeightRef, usize, OutPtr, Split)> =
        products.iter_mut().map(|p| (p.w, p.n, OutPtr(p.out.as_mut_ptr()), Split::new(m, p.n, threads))).collect();
    let tasks: Vec<usize> = jobs.iter().map(|j| j.3.tasks).collect();
    run_job_tasks(&tasks, |job, i| {
        let (w, n, ptr, split) = jobs[job];
        let (p, g) = (i / split.groups, i % split.groups);
        let rows = g * split.rows_per_group..((g + 1) * split.rows_per_group).min(m);
        PANEL.with(|buf| {
            let mut buf = buf.borrow_mut();
            // SAFETY: AVX-512F/AVX2/FMA checked by the caller; each task writes only rows `rows` ×
            // columns of panel `p` of its product's `out`, disjoint from every other task; all reads
            // are inside the views checked by the caller (`MatRef::check`) and the asserts above.
            unsafe { panel_task(tokens, k, w, n, p, rows, ptr, accumulate, &mut buf) };
        });
    });
}

/// Runs several jobs' tasks as one set on rayon: `run(job, i)` for every `i < tasks[job]` (in
/// order on one thread, or when there is a single task). Shared with `gemm_amx`.
pub(super) fn run_job_tasks(tasks: &[usize], run: impl Fn(usize, usize) + Sync) {
    let all: usize = tasks.iter().sum();
    let task = |mut i: usize| {
        let mut job = 0;
        while i >= tasks[job] {
            i -= tasks[job];
            job += 1;
        }
        run(job, i);
    };
    if all <= 1 || rayon::current_num_threads() == 1 {
        (0..all).for_each(task);
    } else {
        (0..all).into_par_iter().for_each(task);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn panel_task(
    tokens: &[f32],
    k: usize,
    w: WeightRef,
    n: usize,
    p: usize,
    rows: std::ops::Range<usize>,
    out: OutPtr,
    accumulate: bool,
    packed: &mut Vec<f32>,
) {
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
        pack_weight_panel(w, o0, nr, k, &mut packed[q * k * NR..(q + 1) * k * NR]);
    }
    // BLIS loop order: a KC × NR weight slice stays in L1 while the MC token rows' tiles (KC × MC,
    // packed, in L2) sweep it; the task's PB panels' KC slices stay in L2 across the MC blocks.
    let mut kc0 = 0;
    while kc0 < k {
        let kc = KC.min(k - kc0);
        // The first block overwrites unless accumulating; later blocks add to what it stored.
        let add = accumulate || kc0 > 0;
        let mut mc0 = rows.start;
        while mc0 < rows.end {
            let mc_end = (mc0 + MC).min(rows.end);
            for q in 0..count {
                let o0 = (first + q) * NR;
                let nr = NR.min(n - o0);
                let wp = packed.as_ptr().add((q * k + kc0) * NR);
                let mut t = mc0;
                while t < mc_end {
                    let mr = MR.min(mc_end - t);
                    let ap = tokens.as_ptr().add((t / MR * k + kc0) * MR);
                    let acc = micro_kernel(ap, wp, kc);
                    for (r, pair) in acc.iter().enumerate().take(mr) {
                        store_row_pair(out.get().add((t + r) * n + o0), nr, *pair, add);
                    }
                    t += MR;
                }
            }
            mc0 = mc_end;
        }
        kc0 += kc;
    }
}

/// W rows `o0 .. o0 + nr` (≤ 32) as a k-major 32-wide f32 panel, `dst[kk · 32 + j]` (`dst` holds
/// k · 32), zero past the `nr` rows; shared with `gemm_amx`. The rows are contiguous in W: half and
/// quantized ones are widened (or dequantized: whole rows, so whole blocks) in one vectorised pass,
/// then packed from f32 (a transposing gather that widened element by element measured ~10 % slower).
/// Safety: AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_weight_panel(w: WeightRef, o0: usize, nr: usize, k: usize, dst: &mut [f32]) {
    if nr < NR {
        dst.fill(0.0); // the columns past n multiply into outputs that are never stored
    }
    match w {
        WeightRef::F32(w) => pack_panel(&w[o0 * k..(o0 + nr) * k], k, NR, dst),
        _ => WIDE_ROWS.with(|rows| {
            let mut rows = rows.borrow_mut();
            if rows.len() < nr * k {
                rows.resize(nr * k, 0.0);
            }
            let rows = &mut rows[..nr * k];
            widen(w.slice(o0 * k, nr * k), rows);
            pack_panel(rows, k, NR, dst);
        }),
    }
}

/// Stores the first `nr` (≤ 32) values of a tile row held as two 16-lane vectors at `dst`, adding
/// what is there when `add`. Shared by the f32 and the quantized GEMM's tiles.
/// Safety: AVX-512F; `dst .. dst + nr` is valid for reads and writes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn store_row_pair(dst: *mut f32, nr: usize, pair: [std::arch::x86_64::__m512; 2], add: bool) {
    use std::arch::x86_64::*;
    let (mask0, mask1) = (lane_mask(nr), lane_mask(nr.saturating_sub(16)));
    // Past the end of the output when nr ≤ 16 (mask1 is then empty: nothing is accessed), so
    // computed without `add`'s in-bounds promise.
    let dst1 = dst.wrapping_add(16);
    let [mut v0, mut v1] = pair;
    if add {
        v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(mask0, dst));
        v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(mask1, dst1));
    }
    _mm512_mask_storeu_ps(dst, mask0, v0);
    _mm512_mask_storeu_ps(dst1, mask1, v1);
}

/// The first `lanes` (≤ 16, saturating) of a 16-lane vector.
#[inline(always)]
fn lane_mask(lanes: usize) -> u16 {
    if lanes >= 16 {
        u16::MAX
    } else {
        (1u16 << lanes) - 1
    }
}

/// `acc[r][h][j] = Σ_kk a[kk·MR + r] · w[kk·NR + 16h + j]` over `kc` k steps: the MR × NR tile, in
/// registers (LLVM keeps the fully unrolled arrays in zmm; it did not vectorise the plain-Rust loop).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn micro_kernel(a: *const f32, w: *const f32, kc: usize) -> [[std::arch::x86_64::__m512; 2]; MR] {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let (mut a, mut w) = (a, w);
    for _ in 0..kc {
        let w0 = _mm512_loadu_ps(w);
        let w1 = _mm512_loadu_ps(w.add(16));
        for (r, pair) in acc.iter_mut().enumerate() {
            let b = _mm512_set1_ps(*a.add(r));
            pair[0] = _mm512_fmadd_ps(b, w0, pair[0]);
            pair[1] = _mm512_fmadd_ps(b, w1, pair[1]);
        }
        a = a.add(MR);
        w = w.add(NR);
    }
    acc
}
