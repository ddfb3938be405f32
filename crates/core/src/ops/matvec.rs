//! Decode's products: `out[o] (+)= W[o, :] · x (+ bias[o])` for one activation row, with W in its
//! stored dtype (f32, f16 or bf16 here; block-quantized W goes to `ops::quant` on the same tasks).
//!
//! Decode reads every weight once per token, so these products are bound by memory bandwidth, not
//! arithmetic: the kernels are built to keep the memory system streaming. Each step dots 4 rows —
//! one from each quarter of the task's rows, so W is read as 4 long sequential streams — with two
//! vector accumulators per row, widens half-precision lanes in registers (F16C `vcvtph2ps` for f16,
//! a 16-bit shift for bf16), accumulates in f32 and prefetches each stream ahead. Explicit
//! intrinsics on x86 AVX2 / AVX-512 (one generic body, two vector widths); plain Rust that
//! auto-vectorises on baseline x86 and simd128 WASM (there f16 widening is integer arithmetic and
//! bounds decode at ~30 % of bandwidth; f32 and bf16 stream at full speed).
//! Rayon splits the rows into tasks, several per thread so a busy core does not hold the others up.

use std::cell::Cell;

use rayon::prelude::*;

use super::quant::{self, QuantizedActivation};
use super::weight_ref::{Element, WeightRef};
use super::{simd_level, size_mul, SimdLevel};

/// Rows dotted per kernel step, one from each of GROUP equal shares of the task's rows: GROUP long
/// sequential streams through W. (Consecutive rows instead would be GROUP streams a row long —
/// 1.5 KB for f16 at k = 768 — each cut off at the row's end before the hardware prefetcher ramps
/// up; measured 10–20 % slower.)
const GROUP: usize = 4;
/// How far ahead of each stream the x86 kernels prefetch. With the hardware prefetcher alone the
/// half-precision kernels (which consume a stream's bytes twice as fast per instruction) reached
/// ~70 % of the read bandwidth; 1 KB ahead lifted every dtype (2 and 4 KB measured no better).
#[cfg(target_arch = "x86_64")]
const PREFETCH_AHEAD_BYTES: usize = 1024;
/// Weight bytes below which splitting a task further costs more in scheduling than it gains.
const MIN_TASK_BYTES: usize = 32 << 10;
/// Tasks per thread: slack for an uneven or busy machine.
const TASKS_PER_THREAD: usize = 8;
/// Tasks cover multiples of 16 outputs (64 bytes), so neighbouring tasks rarely share a cache line.
const ROWS_PER_LINE: usize = 16;

/// How a quantized weight's mat-vec treats the activation. `Quantized` rounds it to 8-bit blocks
/// and dots in integers (llama.cpp's way, the fast one); `Exact` keeps it f32, so the product is the
/// float one of the dequantized weights. The heads that produce logits use `Exact`: the rounding
/// moves logits by ~0.1, enough to flip a close greedy choice (SmolLM2-135M's first answer token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivationRounding {
    Quantized,
    Exact,
}

/// How this thread's products with quantized weights treat their activations, set by
/// [`with_exact_activations`] and [`with_int8_prompts`]; work moved to a pool thread carries its
/// caller's scope there (`models::forward::on_pool`), and a job stolen while it waits sets its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActivationScope {
    /// One-row products keep f32 activations, and so does the last row of a many-row product.
    pub exact: bool,
    /// Many-row products (prompts) round each activation row to 8 bits and multiply int8 blocks
    /// (`quant::gemm`) instead of running the f32 GEMM on dequantized panels.
    pub int8_prompts: bool,
}

thread_local! {
    static SCOPE: Cell<ActivationScope> = const { Cell::new(ActivationScope { exact: false, int8_prompts: false }) };
}

/// Runs `f` with every quantized mat-vec called on this thread treated as
/// [`ActivationRounding::Exact`]. A generation feeds the token whose logits choose its first token
/// this way: that choice is the one most often decided by a small gap, and the 8-bit activation of a
/// one-token pass through every layer flipped it (SmolLM2-135M Q4_1 answered "L'Étoile…" for
/// "Paris" on AVX2 and WASM). The decision is read on the thread that calls a product, before it
/// splits into tasks.
pub fn with_exact_activations<R>(f: impl FnOnce() -> R) -> R {
    with_activation_scope(ActivationScope { exact: true, ..activation_scope() }, f)
}

/// Runs `f` with many-row products of quantized weights rounding their activations to 8 bits
/// (llama.cpp's way for prompts: about 1.5× faster prefill with AVX-512 VNNI, but the logits move by
/// ~0.1–1, enough to change a near-tie — SmolLM2-135M Q4_1's "Paris" among them). Off by default.
pub fn with_int8_prompts<R>(f: impl FnOnce() -> R) -> R {
    with_activation_scope(ActivationScope { int8_prompts: true, ..activation_scope() }, f)
}

/// Whether [`with_exact_activations`] is in force on this thread.
pub fn exact_activations_active() -> bool {
    activation_scope().exact
}

/// This thread's scope.
pub fn activation_scope() -> ActivationScope {
    SCOPE.with(Cell::get)
}

/// Runs `f` with this thread's scope set to `scope`.
pub fn with_activation_scope<R>(scope: ActivationScope, f: impl FnOnce() -> R) -> R {
    /// Restores the previous setting, also when `f` unwinds.
    struct Restore(ActivationScope);
    impl Drop for Restore {
        fn drop(&mut self) {
            SCOPE.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(SCOPE.with(|c| c.replace(scope)));
    f()
}

/// `out[o] (+)= Σ_i w[o, i] · x[i] + bias[o]`, `w` row-major `[out.len(), x.len()]`.
#[cfg(test)]
pub(crate) fn matvec(x: &[f32], w: WeightRef, bias: Option<&[f32]>, out: &mut [f32], accumulate: bool) {
    matvec_with(x, w, bias, out, accumulate, ActivationRounding::Quantized);
}

/// [`matvec`] with the activation rounding for quantized weights chosen.
pub(crate) fn matvec_with(
    x: &[f32],
    w: WeightRef,
    bias: Option<&[f32]>,
    out: &mut [f32],
    accumulate: bool,
    rounding: ActivationRounding,
) {
    if let Some(b) = bias {
        assert_eq!(b.len(), out.len(), "matvec: bias length");
    }
    products(x, vec![(w, &mut *out)], accumulate, rounding);
    if let Some(b) = bias {
        for (o, &bv) in out.iter_mut().zip(b) {
            *o += bv;
        }
    }
}

/// Rows per task for `n` rows of `w` (`k` columns each) on this pool.
fn rows_per_task(w: WeightRef, k: usize, n: usize) -> usize {
    let threads = rayon::current_num_threads();
    let min_rows = MIN_TASK_BYTES / w.bytes_of(k).max(1);
    n.div_ceil(threads * TASKS_PER_THREAD).max(min_rows).max(1).next_multiple_of(ROWS_PER_LINE)
}

/// Several products of one activation row `x` — a decode step's q, k and v, or gate and up — as
/// one set of tasks: one parallel region (one wake of the pool) instead of one per matrix, and the
/// 8-bit activation rounded once per weight type. Each output is the bits [`matvec_with`] gives it.
pub(crate) fn matvec_many(
    x: &[f32],
    parts: Vec<(WeightRef, &mut [f32])>,
    accumulate: bool,
    rounding: ActivationRounding,
) {
    products(x, parts, accumulate, rounding);
}

/// `out (+)= w · x` for every `(w, out)` of `parts` (`w`: `[out.len(), x.len()]`), their rows split
/// into rayon tasks together (on one thread each matrix is one task). Each row is computed alone,
/// so results do not depend on the split. Quantized weights: the activation is rounded to 8 bits
/// once per weight type (see `ops::quant`), or kept f32 for a logits head or under
/// `with_exact_activations`.
fn products(x: &[f32], parts: Vec<(WeightRef, &mut [f32])>, accumulate: bool, rounding: ActivationRounding) {
    let k = x.len();
    assert!(k > 0, "matvec: input has no columns");
    for (w, out) in &parts {
        assert!(w.len() == size_mul(out.len(), k), "matvec: {} weight is not [{}, {k}]", w.dtype_name(), out.len());
    }
    let exact = rounding == ActivationRounding::Exact || exact_activations_active();
    let mut acts: Vec<QuantizedActivation> = Vec::new();
    if !exact {
        for (w, _) in &parts {
            if let WeightRef::Quant(q) = w {
                if !acts.iter().any(|a| a.kind() == q.kind) {
                    acts.push(QuantizedActivation::new(x, q.kind));
                }
            }
        }
    }
    let task = |w: WeightRef, o: &mut [f32]| match w {
        WeightRef::Quant(q) if exact => quant::exact_rows(x, q, o, accumulate),
        WeightRef::Quant(q) => {
            let act = acts.iter().find(|a| a.kind() == q.kind).expect("an activation per weight type");
            quant::rows(act, q, o, accumulate)
        }
        _ => rows(x, w, o, accumulate),
    };
    if rayon::current_num_threads() == 1 {
        parts.into_iter().for_each(|(w, o)| task(w, o));
        return;
    }
    let mut tasks: Vec<(WeightRef, &mut [f32])> = Vec::new();
    for (w, out) in parts {
        let per_task = rows_per_task(w, k, out.len());
        for (t, o) in out.chunks_mut(per_task).enumerate() {
            let len = o.len();
            tasks.push((w.slice(t * per_task * k, len * k), o));
        }
    }
    if tasks.len() == 1 {
        tasks.into_iter().for_each(|(w, o)| task(w, o));
    } else {
        tasks.into_par_iter().for_each(|(w, o)| task(w, o));
    }
}

/// One task's rows, in the kernel for this dtype and SIMD level.
fn rows(x: &[f32], w: WeightRef, out: &mut [f32], accumulate: bool) {
    match w {
        WeightRef::F32(w) => rows_of(x, w, out, accumulate),
        WeightRef::F16(w) => rows_of(x, w, out, accumulate),
        WeightRef::BF16(w) => rows_of(x, w, out, accumulate),
        WeightRef::Quant(_) => unreachable!("quantized weights take `quant::rows`"),
    }
}

fn rows_of<E: Element + LoadLanes>(x: &[f32], w: &[E], out: &mut [f32], accumulate: bool) {
    rows_at(simd_level(), x, w, out, accumulate);
}

/// The kernel of one SIMD level (`level` must not exceed the CPU's: `simd_level()` or a test's check).
fn rows_at<E: Element + LoadLanes>(level: SimdLevel, x: &[f32], w: &[E], out: &mut [f32], accumulate: bool) {
    assert!(w.len() == size_mul(out.len(), x.len()), "matvec rows: weight length");
    match level {
        // SAFETY: the level was detected on this CPU (AVX2+FMA+F16C, plus AVX-512F for Avx512); the
        // kernels read w[..out.len() · x.len()] and x, both checked just above.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { x86::rows_avx512(x, w, out, accumulate) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { x86::rows_avx2(x, w, out, accumulate) },
        _ => rows_portable(x, w, out, accumulate),
    }
}

/// Test hook: one task's rows at a given SIMD level, which the caller has checked the CPU offers.
#[cfg(test)]
pub(super) fn rows_at_level(level: SimdLevel, x: &[f32], w: WeightRef, out: &mut [f32], accumulate: bool) {
    assert!(level_rank(level) <= level_rank(super::kernel_tests::cpu_level()), "{level:?} is beyond this CPU");
    match w {
        WeightRef::F32(w) => rows_at(level, x, w, out, accumulate),
        WeightRef::F16(w) => rows_at(level, x, w, out, accumulate),
        WeightRef::BF16(w) => rows_at(level, x, w, out, accumulate),
        WeightRef::Quant(q) => {
            let act = QuantizedActivation::new(x, q.kind);
            super::quant::rows_at_level(level, &act, q, out, accumulate)
        }
    }
}

#[cfg(test)]
fn level_rank(level: SimdLevel) -> u8 {
    match level {
        SimdLevel::Baseline => 0,
        SimdLevel::Avx2 => 1,
        SimdLevel::Avx512 => 2,
    }
}

#[cfg(target_arch = "x86_64")]
use x86::LoadLanes;
/// Off x86 the portable kernel is the only one: nothing to load.
#[cfg(not(target_arch = "x86_64"))]
trait LoadLanes {}
#[cfg(not(target_arch = "x86_64"))]
impl<T> LoadLanes for T {}

/// Plain Rust, 16 lanes per accumulator so LLVM keeps several vectors in flight (baseline x86, WASM);
/// the same GROUP streams as the x86 kernels.
fn rows_portable<E: Element>(x: &[f32], w: &[E], out: &mut [f32], accumulate: bool) {
    const LANES: usize = 16;
    let (k, n) = (x.len(), out.len());
    let main = k - k % LANES;
    let finish = |acc: &[f32; LANES], row: &[E], o: &mut f32| {
        let mut s = hsum(acc);
        for i in main..k {
            s += row[i].widen() * x[i];
        }
        *o = if accumulate { *o + s } else { s };
    };
    let share = n / GROUP;
    let row = |r: usize| &w[r * k..(r + 1) * k];
    for j in 0..share {
        let (r0, r1, r2, r3) = (row(j), row(share + j), row(2 * share + j), row(3 * share + j));
        let mut acc = [[0f32; LANES]; GROUP];
        // Zipped exact chunks: no bounds checks inside, so LLVM vectorises the body.
        let steps = x[..main]
            .chunks_exact(LANES)
            .zip(r0.chunks_exact(LANES))
            .zip(r1.chunks_exact(LANES))
            .zip(r2.chunks_exact(LANES))
            .zip(r3.chunks_exact(LANES));
        for ((((xs, w0), w1), w2), w3) in steps {
            for l in 0..LANES {
                acc[0][l] += w0[l].widen() * xs[l];
                acc[1][l] += w1[l].widen() * xs[l];
                acc[2][l] += w2[l].widen() * xs[l];
                acc[3][l] += w3[l].widen() * xs[l];
            }
        }
        for (q, r) in [r0, r1, r2, r3].into_iter().enumerate() {
            finish(&acc[q], r, &mut out[q * share + j]);
        }
    }
    for (r, o) in out.iter_mut().enumerate().skip(GROUP * share) {
        let mut acc = [0f32; LANES];
        for (xs, ws) in x[..main].chunks_exact(LANES).zip(row(r).chunks_exact(LANES)) {
            for l in 0..LANES {
                acc[l] += ws[l].widen() * xs[l];
            }
        }
        finish(&acc, row(r), o);
    }
}

#[inline(always)]
fn hsum<const L: usize>(v: &[f32; L]) -> f32 {
    let mut a = *v;
    let mut w = L / 2;
    while w > 0 {
        for i in 0..w {
            a[i] += a[i + w];
        }
        w /= 2;
    }
    a[0]
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::{bf16, f16};

    use super::{Element, GROUP, PREFETCH_AHEAD_BYTES};

    /// Loads `LANES` weights of one dtype and widens them to f32 lanes.
    pub(super) trait LoadLanes: Element {
        /// 8 lanes; needs AVX2 + F16C.
        unsafe fn load8(p: *const Self) -> __m256;
        /// 16 lanes; needs AVX-512F.
        unsafe fn load16(p: *const Self) -> __m512;
    }

    impl LoadLanes for f32 {
        #[inline(always)]
        unsafe fn load8(p: *const Self) -> __m256 {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn load16(p: *const Self) -> __m512 {
            _mm512_loadu_ps(p)
        }
    }

    impl LoadLanes for f16 {
        #[inline(always)]
        unsafe fn load8(p: *const Self) -> __m256 {
            _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
        }
        #[inline(always)]
        unsafe fn load16(p: *const Self) -> __m512 {
            _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
        }
    }

    impl LoadLanes for bf16 {
        /// Zero-extend each 16-bit value and shift it into the top half of an f32.
        #[inline(always)]
        unsafe fn load8(p: *const Self) -> __m256 {
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()))))
        }
        #[inline(always)]
        unsafe fn load16(p: *const Self) -> __m512 {
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()))))
        }
    }

    /// The vector width the kernel body runs at.
    trait Vector: Copy {
        const LANES: usize;
        unsafe fn zero() -> Self;
        unsafe fn load_x(p: *const f32) -> Self;
        unsafe fn load_w<E: LoadLanes>(p: *const E) -> Self;
        /// `a · b + c`
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
        unsafe fn add(a: Self, b: Self) -> Self;
        unsafe fn sum(self) -> f32;
    }

    impl Vector for __m256 {
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn load_x(p: *const f32) -> Self {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn load_w<E: LoadLanes>(p: *const E) -> Self {
            E::load8(p)
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            _mm256_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn sum(self) -> f32 {
            let q = _mm_add_ps(_mm256_castps256_ps128(self), _mm256_extractf128_ps::<1>(self));
            let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
            _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)))
        }
    }

    impl Vector for __m512 {
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn load_x(p: *const f32) -> Self {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn load_w<E: LoadLanes>(p: *const E) -> Self {
            E::load16(p)
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            _mm512_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn sum(self) -> f32 {
            _mm512_reduce_add_ps(self)
        }
    }

    /// `out[r] (+)= w[r, :] · x` for every row of `w` (`[out.len(), x.len()]`).
    /// Safety: the CPU has `V`'s features; `w.len() == out.len() · x.len()`.
    #[inline(always)]
    unsafe fn rows_body<V: Vector, E: LoadLanes>(x: &[f32], w: &[E], out: &mut [f32], accumulate: bool) {
        let (k, n) = (x.len(), out.len());
        let (wp, op) = (w.as_ptr(), out.as_mut_ptr());
        let share = n / GROUP;
        for j in 0..share {
            let rows: [usize; GROUP] = std::array::from_fn(|q| q * share + j);
            dot_rows::<V, E, GROUP>(x, rows.map(|r| wp.add(r * k)), rows.map(|r| op.add(r)), accumulate);
        }
        for r in GROUP * share..n {
            dot_rows::<V, E, 1>(x, [wp.add(r * k)], [op.add(r)], accumulate);
        }
    }

    /// Rows `w[q]` (each `x.len()` long) dotted with `x` into `*out[q]`.
    /// Safety: as `rows_body`; every `w[q]` has `x.len()` readable elements, every `out[q]` is writable.
    #[inline(always)]
    unsafe fn dot_rows<V: Vector, E: LoadLanes, const R: usize>(
        x: &[f32],
        w: [*const E; R],
        out: [*mut f32; R],
        accumulate: bool,
    ) {
        let (k, lanes, xp) = (x.len(), V::LANES, x.as_ptr());
        let ahead = PREFETCH_AHEAD_BYTES / std::mem::size_of::<E>();
        let step_bytes = 2 * lanes * std::mem::size_of::<E>();
        // Two accumulators per row: with 4 rows, 8 independent FMA chains hide the FMA latency.
        let mut acc = [[V::zero(); 2]; R];
        let mut i = 0;
        while i + 2 * lanes <= k {
            let (x0, x1) = (V::load_x(xp.add(i)), V::load_x(xp.add(i + lanes)));
            for (q, a) in acc.iter_mut().enumerate() {
                let row = w[q].add(i);
                // A hint, never a fault: past the end of W it is simply wasted (hence wrapping_add).
                let next = row.wrapping_add(ahead).cast::<i8>();
                for line in (0..step_bytes).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(line));
                }
                a[0] = V::fma(V::load_w(row), x0, a[0]);
                a[1] = V::fma(V::load_w(row.add(lanes)), x1, a[1]);
            }
            i += 2 * lanes;
        }
        if i + lanes <= k {
            let x0 = V::load_x(xp.add(i));
            for (q, a) in acc.iter_mut().enumerate() {
                a[0] = V::fma(V::load_w(w[q].add(i)), x0, a[0]);
            }
            i += lanes;
        }
        for (q, &o) in out.iter().enumerate() {
            let mut s = V::add(acc[q][0], acc[q][1]).sum();
            for j in i..k {
                s += (*w[q].add(j)).widen() * *xp.add(j);
            }
            *o = if accumulate { *o + s } else { s };
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows_avx2<E: LoadLanes>(x: &[f32], w: &[E], out: &mut [f32], accumulate: bool) {
        rows_body::<__m256, E>(x, w, out, accumulate)
    }

    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn rows_avx512<E: LoadLanes>(x: &[f32], w: &[E], out: &mut [f32], accumulate: bool) {
        rows_body::<__m512, E>(x, w, out, accumulate)
    }
}

#[cfg(test)]
mod exact_scope_tests {
    use super::{matvec_with, with_exact_activations, ActivationRounding, WeightRef};
    use crate::loader::QuantKind;
    use crate::ops::quant::{ggml_quantize, QuantRef};

    #[test]
    fn a_quantized_product_in_the_exact_scope_is_the_exact_one_and_the_scope_ends_with_it() {
        let (n, k) = (64, 256);
        let values: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 0.2).collect();
        let (bytes, _) = ggml_quantize(QuantKind::Q4_1, &values);
        let w = WeightRef::Quant(QuantRef { kind: QuantKind::Q4_1, bytes: &bytes });
        let x: Vec<f32> = (0..k).map(|i| ((i * 31 % 97) as f32 / 97.0 - 0.5) * 3.0).collect();
        let product = |rounding| {
            let mut out = vec![0f32; n];
            matvec_with(&x, w, None, &mut out, false, rounding);
            out
        };
        let exact = product(ActivationRounding::Exact);
        let rounded = product(ActivationRounding::Quantized);
        assert_ne!(exact, rounded, "the 8-bit activation should move some output");
        assert_eq!(with_exact_activations(|| product(ActivationRounding::Quantized)), exact);
        assert_eq!(product(ActivationRounding::Quantized), rounded, "the scope must end with its call");
        let unwound = std::panic::catch_unwind(|| with_exact_activations(|| panic!("inside the scope")));
        assert!(unwound.is_err());
        assert_eq!(product(ActivationRounding::Quantized), rounded, "the scope must end when its call unwinds");
    }
}
