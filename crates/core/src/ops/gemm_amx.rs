//! AMX GEMM for prefill products on CPUs with Intel AMX-BF16 (Sapphire Rapids and later): the same
//! products as `gemm_avx512` (`out[m, n] (+)= x[m, k] · Wᵀ`, W row-major `[n, k]`), on tile registers.
//!
//! f32-exact, not bf16: every f32 operand is split into three bf16 parts (hi + mid + lo, which hold
//! its 24 significand bits exactly) and the six part products down to 2^-16 of the whole (hi·hi,
//! hi·mid, mid·mid, mid·hi, lo·hi, hi·lo) are summed in the tiles' f32 accumulators ("bf16×6", as
//! XLA's HIGHEST precision on TPUs). The three dropped ones are each under 2^-24 of the product,
//! f32's own rounding; against a float64 product (512 × 768 × 3360) the error was 1.9e-6 where a
//! plain f32 loop's was 3.6e-6. One TDPBF16PS does 16 × 16 × 32 multiply-adds in 16 cycles: even six
//! of them per f32 product leave 2.6× the AVX-512 FMA peak (measured 3.8 TFLOP/s bf16 per core on the
//! Intel VM against 246 GFLOP/s f32). bf16 weights are their own hi part: three part products
//! (lo·hi, mid·hi, hi·hi) give their exact product, with half the tile work.
//!
//! Layout: C blocks of 32 × 32 (2 × 2 accumulator tiles, tmm0–3); per 32-deep k step each operand
//! has 3 parts × 2 tiles of 16 rows × 64 bytes (tmm4–5 token tiles, tmm6–7 weight tiles, in the
//! VNNI pair layout TDPBF16PS reads). Tokens are packed once per product set, shared by every task;
//! each task packs its weight panels (widened and transposed by `gemm_pack`, then split). A task
//! sweeps its token rows in groups whose packed tiles stay in L2 while its panels go over them.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]

use std::cell::RefCell;

use rayon::prelude::*;

use super::gemm_avx512::Product;
use super::mat_ref::{MatRef, OutPtr, RowSource};
use super::weight_ref::WeightRef;

/// Rows (tokens) and columns (outputs) of one C block.
const BLOCK: usize = 32;
/// k values per tile row: 32 bf16 = 64 bytes.
const KSTEP: usize = 32;
/// bf16 values in one tile (16 rows × 32).
const TILE: usize = 512;
/// bf16 parts per f32 value.
const PARTS: usize = 3;
/// bf16 values of one operand's 32 rows (or columns) for one k step: 3 parts × 2 tiles.
const STEP: usize = PARTS * 2 * TILE;
/// 32-wide weight panels per task: each token group a task reads (from L3: the packed tokens of a
/// 512-row prefill are 2.3 MB at k = 768) serves this many panels, while the panels' packed parts
/// (≤ 1.2 MB at k = 1536) stay in L2 beside the group. Mamba-2-130M's in_proj ran 263 → 299 GFLOP/s
/// on one core going from 2 to 4 (Sapphire Rapids, 2 MB L2); 5 or more left too few tasks for
/// two threads on its 24-panel out_proj.
const PANELS_PER_TASK: usize = 4;
/// Bytes of packed token tiles one task sweeps at a time (kept in L2 while its panels go over them):
/// 256 rows at k = 768 ran 378 GFLOP/s here, all 512 at once 257; with four panels per task, 512
/// KiB (three 32-row pairs at k = 768) ran as fast as 768 KiB and 1 MiB slower.
const TOKEN_GROUP_BYTES: usize = 512 << 10;

/// A cache line of bf16 bits: packed tiles start on 64-byte boundaries (tile rows that straddle two
/// lines cost two loads each: 244 → 278 GFLOP/s when aligned).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u16; 32]);

thread_local! {
    /// The calling thread's packed token tiles (read by every task of one product set).
    static TOKENS: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
    /// A task's weight panels: k-major f32 (`gemm_avx512::pack_weight_panel`), then split into bf16 parts.
    static PANEL_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PANELS: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

/// Whether this CPU and OS run AMX-BF16 tiles (and `PHOENIX_SIMD` does not cap the kernels at
/// `avx512` or below). Asks Linux once for the tile-data state (`arch_prctl`), which a process must
/// request before its first tile instruction; elsewhere, off.
pub(crate) fn available() -> bool {
    use std::sync::OnceLock;
    static AMX: OnceLock<bool> = OnceLock::new();
    *AMX.get_or_init(|| {
        super::simd_level() == super::SimdLevel::Avx512
            && std::env::var("PHOENIX_SIMD").as_deref() != Ok("avx512")
            && detect()
    })
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    // CPUID.(7,0):EDX bit 22 AMX-BF16, bit 24 AMX-TILE; the BW shuffles of the packing are AVX-512BW.
    // SAFETY: CPUID leaf 7 exists on every x86_64 CPU with AVX-512 (checked by the caller).
    #[allow(unused_unsafe)]
    let edx = unsafe { std::arch::x86_64::__cpuid_count(7, 0) }.edx;
    let cpu = edx & (1 << 22) != 0 && edx & (1 << 24) != 0 && is_x86_feature_detected!("avx512bw");
    // ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18): refused by kernels without AMX support.
    // SAFETY: a syscall with integer arguments; it only changes this process's permitted xstate.
    cpu && unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1023, 18) } == 0 && tiles_run_in_a_child()
}

/// Whether tile instructions run here. Some virtual machines advertise AMX and grant the permission,
/// yet fault on the first tile instruction (this project's Intel VM did in an earlier session): a
/// forked child runs them first, so a fault ends the child, not the Node process. Once per process.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn tiles_run_in_a_child() -> bool {
    // SAFETY: the child runs only async-signal-safe work (tile instructions on its own stack, then
    // `_exit`), as a fork of a multi-threaded process must; the parent only waits for it. The raw
    // fork syscall, not glibc's `fork`: no `pthread_atfork` handlers (OpenSSL's, in Node) run.
    unsafe {
        let child = libc::syscall(libc::SYS_fork) as libc::pid_t;
        if child == 0 {
            tile_config();
            std::arch::asm!("tilezero tmm0", "tdpbf16ps tmm0, tmm1, tmm2", "tilerelease", options(nostack, nomem));
            libc::_exit(0);
        }
        if child < 0 {
            return false;
        }
        let mut status = 0;
        loop {
            if libc::waitpid(child, &mut status, 0) == child {
                return libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            }
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return false;
            }
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// Computes the product on AMX if this machine has it (returns true), else does nothing (false).
#[cfg(test)]
pub(crate) fn try_gemm(x: MatRef, w: WeightRef, n: usize, out: &mut [f32], accumulate: bool) -> bool {
    if !available() {
        return false;
    }
    gemm_many(x, &mut [Product { w, n, out }], accumulate);
    true
}

/// The products of the same rows `x` with several weights, on AMX ([`available`], checked by the
/// caller; sizes checked by `gemm_avx512::gemm_many`, which calls this). Each product's tasks, and
/// so its bits, are those it has alone.
pub(crate) fn gemm_many(x: MatRef, products: &mut [Product], accumulate: bool) {
    pack_then_run(TokenRows::Mat(x), products, accumulate);
}

/// [`gemm_many`] for rows made on demand: each 32-row pair's rows are made (on the thread that
/// packs the pair) and split into tiles at once, never stored as a matrix. The same bits as
/// `gemm_many` on the made rows. Sizes checked by the caller (`matmul::linear_from_rows`).
pub(crate) fn gemm_many_from(src: RowSource, products: &mut [Product], accumulate: bool) {
    pack_then_run(TokenRows::Made(src), products, accumulate);
}

/// Where the token rows come from.
#[derive(Clone, Copy)]
enum TokenRows<'a> {
    Mat(MatRef<'a>),
    Made(RowSource<'a>),
}

impl TokenRows<'_> {
    fn rows(&self) -> usize {
        match self {
            Self::Mat(x) => x.rows,
            Self::Made(src) => src.rows,
        }
    }

    fn cols(&self) -> usize {
        match self {
            Self::Mat(x) => x.cols,
            Self::Made(src) => src.cols,
        }
    }
}

/// Packs the token rows, 32-row pairs in parallel, into this thread's token buffer, then runs
/// every product's tasks on them.
fn pack_then_run(rows: TokenRows, products: &mut [Product], accumulate: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        let (m, k) = (rows.rows(), rows.cols());
        let steps = k.div_ceil(KSTEP);
        let pairs = m.div_ceil(BLOCK);
        let cvt = has_bf16_rounding();
        super::gemm_avx512::with_thread_buffer(&TOKENS, |tokens| {
            let lines = super::size_mul(super::size_mul(pairs, steps), STEP) / 32;
            if tokens.len() < lines {
                tokens.resize(lines, Line([0; 32]));
            }
            let tokens = &mut tokens[..lines];
            let per_pair = steps * STEP / 32;
            // SAFETY: AMX (so AVX-512F/BW, and AVX512-BF16 when `cvt`) checked by the caller; each
            // pair holds `steps · STEP` values; `x` checked by the caller.
            let pack = |(p, pair): (usize, &mut [Line])| unsafe {
                if cvt {
                    pack_token_pair::<true>(rows, p * BLOCK, pair)
                } else {
                    pack_token_pair::<false>(rows, p * BLOCK, pair)
                }
            };
            if pairs > 1 && rayon::current_num_threads() > 1 {
                tokens.par_chunks_mut(per_pair).enumerate().for_each(pack);
            } else {
                tokens.chunks_mut(per_pair).enumerate().for_each(pack);
            }
            run_tasks(m, k, tokens, products, accumulate);
        });
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (rows, products, accumulate);
        unreachable!("AMX off x86_64");
    }
}

/// Splits each of 16 f32 lanes into three bf16 parts, each in the low half of a 32-bit lane
/// (round to nearest even; `v` − hi and then − mid are exact in f32, so hi + mid + lo == v).
/// `CVT`: round with AVX512-BF16's `vcvtneps2bf16` (one instruction for the six integer ones of
/// the portable rounding). It reads subnormal inputs as zero where the portable rounding keeps
/// their bits, but TDPBF16PS reads subnormal bf16 parts as zero too: the products are the same
/// bits either way (test `hardware_rounding_packs_the_same_products`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn split3<const CVT: bool>(v: std::arch::x86_64::__m512) -> [std::arch::x86_64::__m512i; PARTS] {
    use std::arch::x86_64::*;
    let mut rest = v;
    let mut parts = [_mm512_setzero_si512(); PARTS];
    for part in parts.iter_mut() {
        let bf = if CVT {
            let packed: __m256i;
            std::arch::asm!("vcvtneps2bf16 {o}, {i}", o = out(ymm_reg) packed, i = in(zmm_reg) rest,
                options(pure, nomem, nostack));
            _mm512_cvtepu16_epi32(packed)
        } else {
            let bits = _mm512_castps_si512(rest);
            let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
            _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))))
        };
        rest = _mm512_sub_ps(rest, _mm512_castsi512_ps(_mm512_slli_epi32::<16>(bf)));
        *part = bf;
    }
    parts
}

/// Whether this CPU has AVX512-BF16's rounding instruction (every AMX-BF16 CPU so far does).
#[cfg(target_arch = "x86_64")]
fn has_bf16_rounding() -> bool {
    use std::sync::OnceLock;
    static CVT: OnceLock<bool> = OnceLock::new();
    *CVT.get_or_init(|| is_x86_feature_detected!("avx512bf16"))
}

/// Token rows `r0 .. r0 + 32` (zero past the rows) as `pair[(step · 3 + part) · 2 + half]` tiles:
/// tile row r holds the part's bf16 of row r0 + 16·half + r's values `32·step ..` (zero past k).
/// Made rows are made into a row buffer first; a strided view is gathered into it.
/// Safety: AVX-512F/BW (and AVX512-BF16 when `CVT`); a `Mat` view checked (`MatRef::check`);
/// `pair` holds `steps · STEP` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn pack_token_pair<const CVT: bool>(rows: TokenRows, r0: usize, pair: &mut [Line]) {
    use std::arch::x86_64::*;
    let (m, k) = (rows.rows(), rows.cols());
    let steps = k.div_ceil(KSTEP);
    assert!(pair.len() * 32 >= steps * STEP);
    let dst = pair.as_mut_ptr() as *mut u16;
    let mut buffer = match rows {
        TokenRows::Mat(x) if x.col_stride == 1 => Vec::new(),
        _ => vec![0f32; k],
    };
    let mut tail = [0f32; KSTEP];
    for r in 0..BLOCK {
        let (half, tr) = (r / 16, r % 16);
        let t = r0 + r;
        let values: Option<&[f32]> = match rows {
            _ if t >= m => None,
            TokenRows::Mat(x) if x.col_stride == 1 => Some(&x.data[t * x.row_stride..t * x.row_stride + k]),
            TokenRows::Mat(x) => {
                for (c, v) in buffer.iter_mut().enumerate() {
                    *v = x.data[t * x.row_stride + c * x.col_stride];
                }
                Some(&buffer)
            }
            TokenRows::Made(src) => {
                (src.fill)(t, &mut buffer);
                Some(&buffer)
            }
        };
        for s in 0..steps {
            let k0 = s * KSTEP;
            let width = KSTEP.min(k - k0);
            let vs = match values {
                None => [_mm512_setzero_ps(); 2],
                Some(v) if width == KSTEP => {
                    let at = v[k0..k0 + KSTEP].as_ptr();
                    [_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(16))]
                }
                Some(v) => {
                    tail[..width].copy_from_slice(&v[k0..k]);
                    tail[width..].fill(0.0);
                    [_mm512_loadu_ps(tail.as_ptr()), _mm512_loadu_ps(tail.as_ptr().add(16))]
                }
            };
            let (lo, hi) = (split3::<CVT>(vs[0]), split3::<CVT>(vs[1]));
            for part in 0..PARTS {
                let tile = dst.add(((s * PARTS + part) * 2 + half) * TILE + tr * KSTEP);
                _mm256_storeu_si256(tile as *mut __m256i, _mm512_cvtepi32_epi16(lo[part]));
                _mm256_storeu_si256(tile.add(16) as *mut __m256i, _mm512_cvtepi32_epi16(hi[part]));
            }
        }
    }
}

/// A k-major f32 panel (`panel[kk · 32 + j]`, 32 outputs) as `dst[(step · 3 + part) · 2 + half]`
/// tiles in TDPBF16PS's pair layout: tile row p holds, for each of the half's 16 outputs j, the
/// part's bf16 of (w[j, 32·step + 2p], w[j, 32·step + 2p + 1]) — zero past k.
/// Safety: AVX-512F; `panel` holds k · 32 values, `dst` steps · STEP.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline(never)]
unsafe fn split_panel<const CVT: bool>(panel: &[f32], k: usize, dst: &mut [Line]) {
    use std::arch::x86_64::*;
    let steps = k.div_ceil(KSTEP);
    assert!(panel.len() >= k * BLOCK && dst.len() * 32 >= steps * STEP);
    let dst = dst.as_mut_ptr() as *mut u16;
    let zero = _mm512_setzero_ps();
    let load = |kk: usize, half: usize| {
        if kk < k {
            _mm512_loadu_ps(panel.as_ptr().add(kk * BLOCK + 16 * half))
        } else {
            zero
        }
    };
    for s in 0..steps {
        for p in 0..KSTEP / 2 {
            let kk = s * KSTEP + 2 * p;
            for half in 0..2 {
                let (even, odd) = (split3::<CVT>(load(kk, half)), split3::<CVT>(load(kk + 1, half)));
                for part in 0..PARTS {
                    let pairs = _mm512_or_si512(even[part], _mm512_slli_epi32::<16>(odd[part]));
                    let tile = dst.add(((s * PARTS + part) * 2 + half) * TILE + p * KSTEP);
                    _mm512_storeu_si512(tile as *mut __m512i, pairs);
                }
            }
        }
    }
}

/// Runs every product's (panel group × token group) tasks on rayon, as one set.
#[cfg(target_arch = "x86_64")]
fn run_tasks(m: usize, k: usize, tokens: &[Line], products: &mut [Product], accumulate: bool) {
    let threads = rayon::current_num_threads();
    let jobs: Vec<(WeightRef, usize, OutPtr, Split)> =
        products.iter_mut().map(|p| (p.w, p.n, OutPtr(p.out.as_mut_ptr()), Split::new(m, p.n, threads))).collect();
    let tasks: Vec<usize> = jobs.iter().map(|j| j.3.tasks).collect();
    super::gemm_avx512::run_job_tasks(&tasks, |job, i| {
        let (w, n, ptr, split) = jobs[job];
        let (g, t) = (i / split.groups, i % split.groups);
        let pairs = t * split.pairs_per_group..((t + 1) * split.pairs_per_group).min(m.div_ceil(BLOCK));
        let panels = g * split.panels_per_task..((g + 1) * split.panels_per_task).min(n.div_ceil(BLOCK));
        // SAFETY: AMX checked by the caller; each task writes only its rows × its panels' columns
        // of its product's `out`, disjoint from every other task; reads stay inside the views the
        // caller checked.
        unsafe { panel_task(tokens, m, k, w, n, panels, pairs, ptr, accumulate) };
    });
}

/// How one product splits into (panel group × token group) tasks.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Split {
    panels_per_task: usize,
    groups: usize,
    pairs_per_group: usize,
    tasks: usize,
}

impl Split {
    fn new(m: usize, n: usize, threads: usize) -> Self {
        let panels = n.div_ceil(BLOCK);
        let pairs = m.div_ceil(BLOCK);
        if panels == 0 || pairs == 0 {
            return Self { panels_per_task: PANELS_PER_TASK, groups: 1, pairs_per_group: pairs.max(1), tasks: 0 };
        }
        // Whole panel groups per task when they share out evenly among the threads (as few panels
        // per task as 2 to get there): a task packs its panels once per token group, so splitting
        // tokens too repacked them — Mamba-2-130M's out_proj (24 panels, 6 groups, tokens split in
        // two) ran 400 GFLOP/s on two cores that way, ~510 as 3 groups per thread.
        let even = if threads == 1 {
            Some(PANELS_PER_TASK) // one task after the other: a partial last group costs nothing
        } else {
            (2..=PANELS_PER_TASK)
                .rev()
                .find(|&per_task| panels.is_multiple_of(per_task) && (panels / per_task).is_multiple_of(threads))
        };
        if let Some(per_task) = even {
            let tasks = panels.div_ceil(per_task);
            return Self { panels_per_task: per_task, groups: 1, pairs_per_group: pairs, tasks };
        }
        // Else split tokens too when there are few panels, so every thread gets work.
        let panel_groups = panels.div_ceil(PANELS_PER_TASK);
        let groups = (4 * threads).div_ceil(panel_groups).clamp(1, pairs);
        let pairs_per_group = pairs.div_ceil(groups);
        let groups = pairs.div_ceil(pairs_per_group);
        Self { panels_per_task: PANELS_PER_TASK, groups, pairs_per_group, tasks: panel_groups * groups }
    }
}

/// One task: packs the weight panels `task_panels`, then for each L2-sized group of its token row
/// pairs, every panel × pair C block over the whole k, stored (or added) into `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn panel_task(
    tokens: &[Line],
    m: usize,
    k: usize,
    w: WeightRef,
    n: usize,
    task_panels: std::ops::Range<usize>,
    pairs: std::ops::Range<usize>,
    out: OutPtr,
    accumulate: bool,
) {
    let steps = k.div_ceil(KSTEP);
    let (first, count) = (task_panels.start, task_panels.len());
    // Lines of one 32-row token pair, or one 32-wide weight panel, over all k steps.
    let operand_lines = steps * STEP / 32;
    PANELS.with(|panels| {
        let mut panels = panels.borrow_mut();
        if panels.len() < count * operand_lines {
            panels.resize(count * operand_lines, Line([0; 32]));
        }
        PANEL_F32.with(|f| {
            let mut f = f.borrow_mut();
            if f.len() < k * BLOCK {
                f.resize(k * BLOCK, 0.0);
            }
            for q in 0..count {
                let o0 = (first + q) * BLOCK;
                let nr = BLOCK.min(n - o0);
                super::gemm_avx512::pack_weight_panel(w, o0, nr, k, &mut f[..k * BLOCK]);
                let dst = &mut panels[q * operand_lines..(q + 1) * operand_lines];
                if has_bf16_rounding() {
                    split_panel::<true>(&f, k, dst);
                } else {
                    split_panel::<false>(&f, k, dst);
                }
            }
        });
        // bf16 weights are their own hi part (mid and lo are zero): three part products give the
        // exact product with half the tile work.
        let weights_are_bf16 = matches!(w, WeightRef::BF16(_));
        let group = (TOKEN_GROUP_BYTES / (steps * STEP * 2)).max(1);
        let mut scratch = Scratch([0.0; BLOCK * BLOCK]);
        tile_config();
        let mut p0 = pairs.start;
        while p0 < pairs.end {
            let p1 = (p0 + group).min(pairs.end);
            for q in 0..count {
                let o0 = (first + q) * BLOCK;
                let nr = BLOCK.min(n - o0);
                let b = panels.as_ptr().add(q * operand_lines) as *const u16;
                for p in p0..p1 {
                    let a = tokens.as_ptr().add(p * operand_lines) as *const u16;
                    if weights_are_bf16 {
                        block_bf16_weights(a, b, steps, &mut scratch);
                    } else {
                        block(a, b, steps, &mut scratch);
                    }
                    let rows = BLOCK.min(m - p * BLOCK);
                    for r in 0..rows {
                        let src = scratch.0.as_ptr().add(r * BLOCK);
                        let pair =
                            [std::arch::x86_64::_mm512_loadu_ps(src), std::arch::x86_64::_mm512_loadu_ps(src.add(16))];
                        super::gemm_avx512::store_row_pair(
                            out.get().add((p * BLOCK + r) * n + o0),
                            nr,
                            pair,
                            accumulate,
                        );
                    }
                }
            }
            p0 = p1;
        }
        std::arch::asm!("tilerelease", options(nostack, nomem));
    });
}

/// A C block's 32 × 32 f32 results, row-major, on a 64-byte boundary (tile stores).
#[repr(C, align(64))]
struct Scratch([f32; BLOCK * BLOCK]);

/// The palette-1 configuration: all 8 tiles 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// Loads the tile configuration on this thread (each task: rayon threads run other code between).
/// Safety: AMX available and permitted (`available`).
#[cfg(target_arch = "x86_64")]
unsafe fn tile_config() {
    let mut cfg = TileConfig { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
    for t in 0..8 {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    std::arch::asm!("ldtilecfg [{}]", in(reg) &cfg as *const TileConfig, options(nostack, readonly));
}

#[cfg(target_arch = "x86_64")]
macro_rules! load {
    ($tile:literal, $ptr:expr) => {
        std::arch::asm!(concat!("tileloadd ", $tile, ", [{p} + {s}*1]"), p = in(reg) $ptr, s = in(reg) 64usize,
            options(nostack, readonly))
    };
}
#[cfg(target_arch = "x86_64")]
macro_rules! dot {
    ($c:literal, $a:literal, $b:literal) => {
        std::arch::asm!(concat!("tdpbf16ps ", $c, ", ", $a, ", ", $b), options(nostack, nomem))
    };
}

/// `scratch = A · Bᵀ` for one 32-row token pair `a` and one 32-wide panel `b` (packed as above)
/// over all `steps` k steps: tmm0–3 accumulate the 2 × 2 tiles, tmm4–5 hold a part's token tiles,
/// tmm6–7 a part's weight tiles. Parts are visited so that each change replaces only the token or
/// only the weight tiles (two loads): lo·hi, mid·hi, mid·mid, hi·mid, hi·lo, hi·hi — 14 tile loads
/// per 24 products. Prefetching the next step's tiles measured ~6 % slower.
/// Safety: AMX configured (`tile_config`); `a` and `b` hold `steps · STEP` values each.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn block(a: *const u16, b: *const u16, steps: usize, scratch: &mut Scratch) {
    start_block(a, b);
    for s in 0..steps {
        products_then_tokens(a, s, 1); // lo·hi, then mid·hi
        products_then_weights(b, s, 1); // mid·hi, then mid·mid
        products_then_tokens(a, s, 0); // mid·mid, then hi·mid
        products_then_weights(b, s, 2); // hi·mid, then hi·lo
        products_then_weights(b, s, 0); // hi·lo, then hi·hi
        products_then_next_step(a, b, s, steps); // hi·hi, then the next step's lo·hi
    }
    store_block(scratch);
}

/// [`block`] for weights that are bf16 already (their mid and lo parts are zero): the three token
/// parts times the weights' one part — lo·hi, mid·hi, hi·hi — exact, 8 tile loads per 12 products.
/// Safety: as [`block`].
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn block_bf16_weights(a: *const u16, b: *const u16, steps: usize, scratch: &mut Scratch) {
    start_block(a, b);
    for s in 0..steps {
        products_then_tokens(a, s, 1); // lo·hi, then mid·hi
        products_then_tokens(a, s, 0); // mid·hi, then hi·hi
        products_then_next_step(a, b, s, steps); // hi·hi, then the next step's lo·hi
    }
    store_block(scratch);
}

/// Part `part`, half `half` of step `s` of a packed operand.
#[inline(always)]
unsafe fn tile_at(base: *const u16, s: usize, part: usize, half: usize) -> *const u16 {
    base.add(s * STEP + (part * 2 + half) * TILE)
}

/// Zeroes the accumulators and loads step 0's lo token tiles and hi weight tiles.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn start_block(a: *const u16, b: *const u16) {
    std::arch::asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
    load!("tmm4", tile_at(a, 0, 2, 0));
    load!("tmm6", tile_at(b, 0, 0, 0));
    load!("tmm5", tile_at(a, 0, 2, 1));
    load!("tmm7", tile_at(b, 0, 0, 1));
}

/// The four products of the loaded tiles, each token tile reloaded (with part `part` of step `s`)
/// as soon as its two products are issued.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn products_then_tokens(a: *const u16, s: usize, part: usize) {
    dot!("tmm0", "tmm4", "tmm6");
    dot!("tmm1", "tmm4", "tmm7");
    load!("tmm4", tile_at(a, s, part, 0));
    dot!("tmm2", "tmm5", "tmm6");
    dot!("tmm3", "tmm5", "tmm7");
    load!("tmm5", tile_at(a, s, part, 1));
}

/// The four products of the loaded tiles, each weight tile reloaded (with part `part` of step `s`)
/// as soon as its two products are issued.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn products_then_weights(b: *const u16, s: usize, part: usize) {
    dot!("tmm0", "tmm4", "tmm6");
    dot!("tmm2", "tmm5", "tmm6");
    load!("tmm6", tile_at(b, s, part, 0));
    dot!("tmm1", "tmm4", "tmm7");
    dot!("tmm3", "tmm5", "tmm7");
    load!("tmm7", tile_at(b, s, part, 1));
}

/// The four products of the loaded (hi · hi) tiles, then the next step's lo token and hi weight
/// tiles loaded, if there is a next step.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn products_then_next_step(a: *const u16, b: *const u16, s: usize, steps: usize) {
    dot!("tmm0", "tmm4", "tmm6");
    dot!("tmm2", "tmm5", "tmm6");
    dot!("tmm1", "tmm4", "tmm7");
    if s + 1 < steps {
        load!("tmm4", tile_at(a, s + 1, 2, 0));
        load!("tmm6", tile_at(b, s + 1, 0, 0));
        dot!("tmm3", "tmm5", "tmm7");
        load!("tmm5", tile_at(a, s + 1, 2, 1));
        load!("tmm7", tile_at(b, s + 1, 0, 1));
    } else {
        dot!("tmm3", "tmm5", "tmm7");
    }
}

/// Stores the four accumulator tiles as the C block's 32 × 32 row-major values.
/// Safety: AMX configured; tmm0–3 hold the block.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn store_block(scratch: &mut Scratch) {
    let c = scratch.0.as_mut_ptr();
    std::arch::asm!(
        "tilestored [{c0} + {s}*1], tmm0",
        "tilestored [{c1} + {s}*1], tmm1",
        "tilestored [{c2} + {s}*1], tmm2",
        "tilestored [{c3} + {s}*1], tmm3",
        c0 = in(reg) c,
        c1 = in(reg) c.add(16),
        c2 = in(reg) c.add(16 * BLOCK),
        c3 = in(reg) c.add(16 * BLOCK + 16),
        s = in(reg) BLOCK * 4,
        options(nostack)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both roundings of the split (portable and `vcvtneps2bf16`) give the same products, bit for
    /// bit, on values across every binade f32 has, subnormals and zeros included: where the packed
    /// parts differ (subnormal parts, which the instruction reads as zero), TDPBF16PS reads both as zero.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn hardware_rounding_packs_the_same_products() {
        if !available() || !has_bf16_rounding() {
            crate::ops::kernel_tests::skip("hardware_rounding_packs_the_same_products", "AMX-BF16 and AVX512-BF16");
            return;
        }
        let (m, k) = (32, 96);
        let steps = k / KSTEP;
        let mut rng = crate::generate::rng::Rng::seeded(7);
        let mut next = move || rng.next_u64();
        // Random sign, exponent field 0 (subnormal) ..= 160 (2^33), mantissa: most values tiny.
        let mut value = || {
            let r = next();
            let exponent = (r % 161) as u32;
            let bits = ((r >> 20) as u32 & 0x807f_ffff) | (exponent << 23);
            if r % 17 == 0 {
                0.0
            } else {
                f32::from_bits(bits)
            }
        };
        let x: Vec<f32> = (0..m * k).map(|_| value()).collect();
        let panel: Vec<f32> = (0..k * BLOCK).map(|_| value()).collect();
        let lines = steps * STEP / 32;
        let (mut a, mut b) = (
            [vec![Line([0; 32]); lines], vec![Line([0; 32]); lines]],
            [vec![Line([0; 32]); lines], vec![Line([0; 32]); lines]],
        );
        // SAFETY: AMX (so AVX-512F/BW) and AVX512-BF16 checked above; the buffers hold `steps · STEP` values.
        unsafe {
            pack_token_pair::<false>(TokenRows::Mat(MatRef::rows(&x, m, k)), 0, &mut a[0]);
            pack_token_pair::<true>(TokenRows::Mat(MatRef::rows(&x, m, k)), 0, &mut a[1]);
            split_panel::<false>(&panel, k, &mut b[0]);
            split_panel::<true>(&panel, k, &mut b[1]);
        }
        let differ = |p: &[Line], q: &[Line]| {
            p.iter().zip(q).map(|(u, v)| u.0.iter().zip(&v.0).filter(|(s, t)| s != t).count()).sum::<usize>()
        };
        assert!(
            differ(&a[0], &a[1]) > 0 && differ(&b[0], &b[1]) > 0,
            "the data has no subnormal parts: the test shows nothing"
        );
        let mut results = Vec::new();
        for (ai, bi) in [(0, 0), (1, 1), (0, 1), (1, 0)] {
            let mut scratch = Scratch([f32::NAN; BLOCK * BLOCK]);
            // SAFETY: AMX checked; both operands hold `steps · STEP` values.
            unsafe {
                tile_config();
                block(a[ai].as_ptr() as *const u16, b[bi].as_ptr() as *const u16, steps, &mut scratch);
                std::arch::asm!("tilerelease", options(nostack, nomem));
            }
            results.push(scratch.0.map(f32::to_bits));
        }
        assert!(results[0].iter().any(|&v| v != 0), "every product is zero: the test shows nothing");
        for (i, r) in results.iter().enumerate().skip(1) {
            assert_eq!(&results[0][..], &r[..], "rounding combination {i} gives other products");
        }
    }

    #[test]
    fn tasks_keep_whole_panel_groups_when_they_share_out_evenly() {
        // Mamba-2-130M's out_proj (24 panels) on two threads: 6 groups of 4, tokens not split.
        let s = Split::new(512, 768, 2);
        assert_eq!((s.panels_per_task, s.groups, s.pairs_per_group, s.tasks), (4, 1, 16, 6));
        // 18 panels (SmolLM's q): 6 groups of 3 rather than 4 + 4 + 4 + 4 + 2.
        let s = Split::new(512, 576, 2);
        assert_eq!((s.panels_per_task, s.groups, s.tasks), (3, 1, 6));
        // 105 panels (Mamba-2's in_proj, odd) on two threads: groups of 4, enough of them that
        // tokens stay whole.
        let s = Split::new(512, 3352, 2);
        assert_eq!((s.panels_per_task, s.groups, s.tasks), (4, 1, 27));
        // 2 panels on four threads: tokens split so that every thread gets work.
        let s = Split::new(512, 64, 4);
        assert_eq!((s.panels_per_task, s.groups, s.pairs_per_group, s.tasks), (4, 16, 1, 16));
        // One thread: groups of 4, tokens never split; a partial last group where n asks for one.
        let s = Split::new(512, 576, 1);
        assert_eq!((s.panels_per_task, s.groups, s.tasks), (4, 1, 5));
        // No rows or no outputs: no tasks.
        assert_eq!(Split::new(0, 768, 2).tasks, 0);
        assert_eq!(Split::new(512, 0, 2).tasks, 0);
    }
}
