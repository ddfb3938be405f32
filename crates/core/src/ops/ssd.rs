//! Mamba-2 state-space duality (SSD) scan (reference §3.3 steps 4–6, §3.4), continuing from and
//! updating the SSM state `[H, P, N]` (f32). Two forms of the same maths:
//!
//! * [`ssd_chunked`] (prefill): tokens are tiled in chunks of `Q`; per chunk and head the output is
//!   `Y = (L ∘ C·Bᵀ)·X + diag(e^{cs})·C·Sᵀ + D·x` and the state passes on as
//!   `S ← e^{cs_last}·S + Bᵀ·(e^{cs_last − cs} ∘ X)` — three small dense products (`gemm_small`
//!   where AVX-512 runs, else the `gemm` crate) instead of a per-token recurrence; the decays scale
//!   the Q × P sides (results, `X`), never Q × N copies of B or C, which the products read where
//!   they lie. `C·Bᵀ` is computed once per (chunk, group) and shared by the group's heads; heads run
//!   in parallel (rayon) in one set per thread, each set chunk by chunk. The element-wise work
//!   around the products (Δ, decays, coefficients) and the recurrence are compiled by
//!   `multiversion!` for AVX-512 / AVX2 / baseline (simd128 on WASM).
//! * [`ssd_recurrent`] (decode): the exact recurrence `S ← e^{Δ·A}·S + Δ·x⊗B`, `y = S·C + D·x`.
//!
//! Δ = clamp(softplus(dt + dt_bias), dt_min, dt_max); `A = −exp(A_log)` is one scalar per head;
//! head `h` reads B/C group `h / (H/G)` (contiguous blocks, `repeat_interleave`). The decay
//! exponents are accumulated in f64 so `e^{cs_i − cs_j}` keeps its precision however long the chunk.

use rayon::prelude::*;

use super::gemm_small::{self, SmallProduct};
use super::math::{exp_nonpositive, softplus};
use super::transpose::transpose;
use super::{size_add, size_mul};

/// Below this many (token × head × P × N) updates the scan stays on the calling thread.
const PARALLEL_MIN_WORK: usize = 64 * 1024;

/// Operands of one scan over `len` tokens. Row-major `[L, …]` arrays may be column slices of wider
/// rows (`*_stride`).
#[derive(Clone, Copy)]
pub(crate) struct SsdInputs<'a> {
    pub len: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub state_size: usize,
    pub groups: usize,
    /// Post-conv rows: `x` (`H·P`), then `B` (`G·N`), then `C` (`G·N`), at `xbc[t * xbc_stride ..]`.
    pub xbc: &'a [f32],
    pub xbc_stride: usize,
    /// Raw Δ (before bias and softplus): `dt[t * dt_stride + dt_offset + h]`.
    pub dt: &'a [f32],
    pub dt_stride: usize,
    pub dt_offset: usize,
    /// `[H]` each.
    pub dt_bias: &'a [f32],
    /// `A = −exp(A_log)`.
    pub a: &'a [f32],
    pub d: &'a [f32],
    pub dt_min: f32,
    pub dt_max: f32,
}

impl SsdInputs<'_> {
    fn e(&self) -> usize {
        self.heads * self.head_dim
    }

    fn state_len(&self) -> usize {
        size_mul(size_mul(self.heads, self.head_dim), self.state_size)
    }

    /// Every read the kernels make is inside the slices (checked, non-wrapping arithmetic).
    fn check(&self, state_in: &[f32], state_out: &[f32], y: &[f32]) {
        let (h, p, n, g) = (self.heads, self.head_dim, self.state_size, self.groups);
        assert!(h >= 1 && p >= 1 && n >= 1 && g >= 1 && h % g == 0, "ssd: bad head/group sizes");
        assert!(self.dt_bias.len() == h && self.a.len() == h && self.d.len() == h);
        let s = self.state_len();
        assert!(state_in.len() == s && state_out.len() == s);
        assert!(y.len() >= size_mul(self.len, self.e()));
        if self.len > 0 {
            let width = size_add(self.e(), size_mul(size_mul(2, g), n));
            assert!(self.xbc_stride >= width);
            assert!(self.xbc.len() >= size_add(size_mul(self.len - 1, self.xbc_stride), width));
            assert!(self.dt.len() >= size_add(size_add(size_mul(self.len - 1, self.dt_stride), self.dt_offset), h));
        }
    }

    /// Δ of head `h` at token `t`.
    #[inline(always)]
    fn delta(&self, t: usize, h: usize) -> f32 {
        let raw = self.dt[t * self.dt_stride + self.dt_offset + h] + self.dt_bias[h];
        softplus(raw).max(self.dt_min).min(self.dt_max)
    }

    #[inline(always)]
    fn x_row(&self, t: usize, h: usize) -> &[f32] {
        let at = t * self.xbc_stride + h * self.head_dim;
        &self.xbc[at..at + self.head_dim]
    }

    #[inline(always)]
    fn b_row(&self, t: usize, g: usize) -> &[f32] {
        let at = self.b_at(t, g);
        &self.xbc[at..at + self.state_size]
    }

    #[inline(always)]
    fn c_row(&self, t: usize, g: usize) -> &[f32] {
        let at = self.c_at(t, g);
        &self.xbc[at..at + self.state_size]
    }

    /// Where token `t`'s B values of group `g` start in `xbc`.
    #[inline(always)]
    fn b_at(&self, t: usize, g: usize) -> usize {
        t * self.xbc_stride + self.e() + g * self.state_size
    }

    /// Where token `t`'s C values of group `g` start in `xbc`.
    #[inline(always)]
    fn c_at(&self, t: usize, g: usize) -> usize {
        t * self.xbc_stride + self.e() + (self.groups + g) * self.state_size
    }

    fn group_of(&self, h: usize) -> usize {
        h / (self.heads / self.groups)
    }
}

/// Output pointer shared by head tasks; each head writes only its own `P` columns of every row.
#[derive(Clone, Copy)]
struct RowsOut(*mut f32);
unsafe impl Send for RowsOut {}
unsafe impl Sync for RowsOut {}
impl RowsOut {
    /// Through a method, so closures capture the whole (Sync) wrapper, not the raw field.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

fn parallel(inp: &SsdInputs) -> bool {
    let work = inp.len.saturating_mul(inp.state_len());
    work >= PARALLEL_MIN_WORK && inp.heads > 1 && rayon::current_num_threads() > 1
}

/// The exact per-token recurrence from `state_in`; the state after the last token goes to
/// `state_out`, `y` (`[L, H·P]`) gets `S·C + D·x` per head (ungated).
pub(crate) fn ssd_recurrent(inp: &SsdInputs, state_in: &[f32], state_out: &mut [f32], y: &mut [f32]) {
    inp.check(state_in, state_out, y);
    let hs = inp.head_dim * inp.state_size;
    let out = RowsOut(y.as_mut_ptr());
    let head = |(h, (s, old)): (usize, (&mut [f32], &[f32]))| {
        s.copy_from_slice(old);
        recurrent_head(inp, h, s, out);
    };
    if parallel(inp) {
        state_out.par_chunks_mut(hs).zip(state_in.par_chunks(hs)).enumerate().for_each(head);
    } else {
        state_out.chunks_mut(hs).zip(state_in.chunks(hs)).enumerate().for_each(head);
    }
}

/// [`ssd_recurrent`] updating `state` in place (a decode step on a state nothing else reads): no
/// new state buffer per token, which for a 786 KB Mamba-2-130M layer state means no fresh pages to
/// fault in on every step.
pub(crate) fn ssd_recurrent_in_place(inp: &SsdInputs, state: &mut [f32], y: &mut [f32]) {
    inp.check(state, state, y);
    let hs = inp.head_dim * inp.state_size;
    let out = RowsOut(y.as_mut_ptr());
    let head = |(h, s): (usize, &mut [f32])| recurrent_head(inp, h, s, out);
    if parallel(inp) {
        state.par_chunks_mut(hs).enumerate().for_each(head);
    } else {
        state.chunks_mut(hs).enumerate().for_each(head);
    }
}

multiversion!(fn recurrent_head(inp: &SsdInputs, h: usize, s: &mut [f32], out: RowsOut) = recurrent_head_body);

#[inline(always)]
fn recurrent_head_body(inp: &SsdInputs, h: usize, s: &mut [f32], out: RowsOut) {
    let (p, n, g) = (inp.head_dim, inp.state_size, inp.group_of(h));
    let e = inp.e();
    for t in 0..inp.len {
        let dt = inp.delta(t, h);
        // Δ ≥ 0 and A < 0, so Δ·A ≤ 0.
        let da = exp_nonpositive(dt * inp.a[h]);
        let (x, b, c) = (inp.x_row(t, h), inp.b_row(t, g), inp.c_row(t, g));
        for (pi, row) in s.chunks_exact_mut(n).enumerate() {
            let dx = dt * x[pi];
            // 16 lanes of partial sums: the loop vectorises over the state without reassociation licence.
            let mut acc = [0f32; 16];
            let mut rows = row.chunks_exact_mut(16);
            let (bs, cs) = (b.chunks_exact(16), c.chunks_exact(16));
            let (b_rest, c_rest) = (bs.remainder(), cs.remainder());
            for ((sv, bv), cv) in (&mut rows).zip(bs).zip(cs) {
                for k in 0..16 {
                    let v = da * sv[k] + dx * bv[k];
                    sv[k] = v;
                    acc[k] += v * cv[k];
                }
            }
            let mut tail = 0f32;
            for ((sv, &bv), &cv) in rows.into_remainder().iter_mut().zip(b_rest).zip(c_rest) {
                let v = da * *sv + dx * bv;
                *sv = v;
                tail += v * cv;
            }
            let yv = acc.iter().sum::<f32>() + tail + inp.d[h] * x[pi];
            // SAFETY: row t, column h·P + pi: inside `y` (checked) and written by this head only.
            unsafe { *out.ptr().add(t * e + h * p + pi) = yv };
        }
    }
}

/// The chunked SSD scan with tiles of `chunk` tokens (from the start of this call: calls that
/// split a prompt at multiples of `chunk` give bit-identical results to one call). Same outputs
/// as [`ssd_recurrent`] up to float rounding.
pub(crate) fn ssd_chunked(inp: &SsdInputs, chunk: usize, state_in: &[f32], state_out: &mut [f32], y: &mut [f32]) {
    inp.check(state_in, state_out, y);
    chunked(inp, chunk, Some(state_in), state_out, y);
}

/// [`ssd_chunked`] updating `state` in place (a prefill on a state nothing else reads): the same
/// bits, without a new state buffer per layer (786 KB for Mamba-2-130M, whose fresh pages every
/// prompt faulted in and then copied once more to compact).
pub(crate) fn ssd_chunked_in_place(inp: &SsdInputs, chunk: usize, state: &mut [f32], y: &mut [f32]) {
    inp.check(state, state, y);
    chunked(inp, chunk, None, state, y);
}

/// The scan from `state_in`, or from `state` itself when `None` (each head set reads its own
/// part before it writes it).
fn chunked(inp: &SsdInputs, chunk: usize, state_in: Option<&[f32]>, state: &mut [f32], y: &mut [f32]) {
    assert!(chunk >= 1, "ssd: chunk must be ≥ 1");
    let q = chunk.min(inp.len.max(1));
    let chunks = inp.len.div_ceil(q);
    // C·Bᵀ per (chunk, group), lower triangle used: [chunks, G, Q, Q].
    let mut cb = vec![0f32; size_mul(size_mul(chunks, inp.groups), size_mul(q, q))];
    let fill = |(i, block): (usize, &mut [f32])| {
        let (c, g) = (i / inp.groups, i % inp.groups);
        cb_block(inp, c * q, q.min(inp.len - c * q), g, q, block);
    };
    let threaded = parallel(inp);
    if threaded {
        cb.par_chunks_mut(q * q).enumerate().for_each(fill);
    } else {
        cb.chunks_mut(q * q).enumerate().for_each(fill);
    }
    let hs = inp.head_dim * inp.state_size;
    let out = RowsOut(y.as_mut_ptr());
    let cb = &cb[..];
    // One contiguous set of heads per thread, each set chunk-major: all its heads take a chunk
    // before the next one, so the chunk's B and C rows (shared by a group's heads) come from memory
    // once per set and then from cache, where head by head every head streamed all of them.
    let sets = if threaded { rayon::current_num_threads().min(inp.heads) } else { 1 };
    let set_len = inp.heads.div_ceil(sets) * hs;
    let run_set = |(i, s): (usize, &mut [f32])| {
        let old = state_in.map(|old| &old[i * set_len..i * set_len + s.len()]);
        chunked_heads(inp, i * set_len / hs, q, cb, old, s, out);
    };
    if threaded {
        state.par_chunks_mut(set_len).enumerate().for_each(run_set);
    } else {
        state.chunks_mut(set_len).enumerate().for_each(run_set);
    }
}

/// Heads `h0 ..` (as many as `state` holds) over every chunk, chunk by chunk, from `state_in`
/// (or `state` itself) into `state`.
fn chunked_heads(
    inp: &SsdInputs,
    h0: usize,
    q: usize,
    cb: &[f32],
    state_in: Option<&[f32]>,
    state: &mut [f32],
    out: RowsOut,
) {
    let (p, n) = (inp.head_dim, inp.state_size);
    let hs = p * n;
    // Each head's state `[N][P]` (transposed from `[P][N]`, so every product runs over contiguous `P`).
    let mut states = vec![0f32; state.len()];
    let old = state_in.unwrap_or(state);
    for (st, old) in states.chunks_exact_mut(hs).zip(old.chunks_exact(hs)) {
        transpose(old, p, n, st);
    }
    let mut scratch = ChunkScratch::new(inp, q);
    for (index, t0) in (0..inp.len).step_by(q).enumerate() {
        let at = Chunk { index, t0, len: q.min(inp.len - t0) };
        for (i, st) in states.chunks_exact_mut(hs).enumerate() {
            chunk_step(inp, h0 + i, at, cb, st, &mut scratch, out);
        }
    }
    for (st, new) in states.chunks_exact(hs).zip(state.chunks_exact_mut(hs)) {
        transpose(st, n, p, new);
    }
}

multiversion!(fn cb_block(inp: &SsdInputs, t0: usize, len: usize, g: usize, q: usize, block: &mut [f32]) = cb_block_body);

/// `block[i·q + j] = C_{t0+i} · B_{t0+j}` for j ≤ i < len.
#[inline(always)]
fn cb_block_body(inp: &SsdInputs, t0: usize, len: usize, g: usize, q: usize, block: &mut [f32]) {
    for i in 0..len {
        let c = inp.c_row(t0 + i, g);
        for j in 0..=i {
            block[i * q + j] = dot(c, inp.b_row(t0 + j, g));
        }
    }
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums: vectorisable without reassociation licence.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

/// `out = out_scale · out + a · b` (see [`SmallProduct`]) on the calling thread: our AVX-512 kernel for small
/// in-cache operands where it runs (`gemm_small`, which skips a `lower` `a`'s zero upper triangle),
/// else the `gemm` crate (what candle's CPU matmul runs: its own AVX2 / NEON / simd128
/// micro-kernels, picked at run time). Heads are the parallel axis, so each product is serial.
#[inline(always)]
fn gemm_acc(pr: SmallProduct, out: &mut [f32], ldo: usize) {
    assert!(pr.fits(out, ldo), "ssd: product operands shorter than their shapes");
    if pr.m == 0 || pr.k == 0 || pr.n == 0 {
        return pr.scale_out_only(out, ldo);
    }
    if gemm_small::takes(pr.n) {
        return gemm_small::gemm_acc(&pr, out, ldo);
    }
    // SAFETY: every index gemm touches is inside the slices (`fits`); `out` is exclusive.
    unsafe {
        gemm::gemm(
            pr.m,
            pr.n,
            pr.k,
            out.as_mut_ptr(),
            1,
            ldo as isize,
            pr.out_scale != 0.0,
            pr.a.as_ptr(),
            pr.ka as isize,
            pr.lda as isize,
            pr.b.as_ptr(),
            1,
            pr.ldb as isize,
            pr.out_scale,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    };
}

/// A head set's working memory for one chunk of one head (allocated once per call and set).
struct ChunkScratch {
    /// Tokens per chunk.
    q: usize,
    /// `Δ_j · x_j`, `[Q][P]`.
    xs: Vec<f32>,
    /// Inclusive cumulative sum of `Δ·A` over the chunk, in f64.
    cs: Vec<f64>,
    /// `cs` split as `hi + lo` (f32 each; `lo` what `hi` rounded off), for the f32 decay lanes.
    cs_hi: Vec<f32>,
    cs_lo: Vec<f32>,
    /// Intra-chunk weights `(C_i·B_j) e^{cs_i − cs_j}` (zero above the diagonal), `[Q][Q]`.
    w: Vec<f32>,
    /// `e^{cs_last − cs_j} Δ_j x_j`, `[Q][P]`.
    xw: Vec<f32>,
    /// The chunk's outputs, `[Q][P]`.
    y: Vec<f32>,
}

impl ChunkScratch {
    fn new(inp: &SsdInputs, q: usize) -> Self {
        let p = inp.head_dim;
        Self {
            q,
            xs: vec![0.0; q * p],
            cs: vec![0.0; q],
            cs_hi: vec![0.0; q],
            cs_lo: vec![0.0; q],
            w: vec![0.0; q * q],
            xw: vec![0.0; q * p],
            y: vec![0.0; q * p],
        }
    }
}

/// Chunk number `index` of a scan: tokens `t0 .. t0 + len`.
#[derive(Clone, Copy)]
struct Chunk {
    index: usize,
    t0: usize,
    len: usize,
}

multiversion!(fn chunk_step(inp: &SsdInputs, h: usize, at: Chunk, cb: &[f32], st: &mut [f32], sc: &mut ChunkScratch, out: RowsOut) = chunk_step_body);

/// Chunk `at` of head `h`: its outputs into `out`, and the head's state `st` (`[N][P]`) carried
/// past the chunk.
#[inline(always)]
fn chunk_step_body(
    inp: &SsdInputs,
    h: usize,
    at: Chunk,
    cb: &[f32],
    st: &mut [f32],
    sc: &mut ChunkScratch,
    out: RowsOut,
) {
    let (p, n, g, e, q) = (inp.head_dim, inp.state_size, inp.group_of(h), inp.e(), sc.q);
    let Chunk { index: c, t0, len } = at;
    let a = inp.a[h] as f64;
    let dh = inp.d[h];
    let block = &cb[(c * inp.groups + g) * q * q..][..q * q];
    let mut acc = 0f64;
    for j in 0..len {
        let dt = inp.delta(t0 + j, h);
        acc += dt as f64 * a;
        sc.cs[j] = acc;
        let hi = acc as f32;
        (sc.cs_hi[j], sc.cs_lo[j]) = (hi, (acc - hi as f64) as f32);
        for (xs, &xv) in sc.xs[j * p..(j + 1) * p].iter_mut().zip(inp.x_row(t0 + j, h)) {
            *xs = dt * xv;
        }
    }
    let last = sc.cs[len - 1];
    // Y = diag(e^{cs})·(C·S) (from the state entering the chunk) + W·X (intra-chunk) + D·x. The
    // products read C and B where they lie: scaling their Q × P results, not the Q × N operands,
    // halves the element-wise work around them.
    let c_rows = &inp.xbc[inp.c_at(t0, g)..];
    let from_state = SmallProduct {
        m: len,
        k: n,
        n: p,
        a: c_rows,
        lda: inp.xbc_stride,
        ka: 1,
        b: st,
        ldb: p,
        lower: false,
        out_scale: 0.0,
    };
    gemm_acc(from_state, &mut sc.y, p);
    for i in 0..len {
        let decay = flush_tiny(exp_nonpositive(sc.cs[i] as f32));
        for v in sc.y[i * p..(i + 1) * p].iter_mut() {
            *v = flush_tiny(decay * *v);
        }
    }
    // Whole rows of W (the upper triangle selected to zero), so that they run in full vectors.
    for i in 0..len {
        let (hi_i, lo_i) = (sc.cs_hi[i], sc.cs_lo[i]);
        let lanes = sc.w[i * q..(i + 1) * q].iter_mut().zip(&block[i * q..(i + 1) * q]).zip(&sc.cs_hi).zip(&sc.cs_lo);
        for (j, (((wv, &cbv), &hi_j), &lo_j)) in lanes.enumerate() {
            // cs_i − cs_j (≤ 0 for j ≤ i) from the split sums: the same one rounding to f32 as
            // the f64 difference, in 16 f32 lanes instead of 8 f64 ones.
            let d = ((hi_i - hi_j) + (lo_i - lo_j)).min(0.0);
            let v = flush_tiny(cbv * flush_tiny(exp_nonpositive(d)));
            *wv = if j <= i { v } else { 0.0 };
        }
    }
    let intra =
        SmallProduct { m: len, k: len, n: p, a: &sc.w, lda: q, ka: 1, b: &sc.xs, ldb: p, lower: true, out_scale: 1.0 };
    gemm_acc(intra, &mut sc.y, p);
    for i in 0..len {
        let row = &mut sc.y[i * p..(i + 1) * p];
        for (r, &xv) in row.iter_mut().zip(inp.x_row(t0 + i, h)) {
            *r += dh * xv;
        }
        // SAFETY: row t0+i, columns h·P .. h·P+P: inside `y` (checked) and written by this head only.
        unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), out.ptr().add((t0 + i) * e + h * p), p) };
    }
    // State leaving the chunk: e^{cs_last} S + Bᵀ·(e^{cs_last − cs} ∘ Δx), the decay of S applied
    // by the product as it adds (B read as its transpose: element (state ni, token j) at
    // `ni + j·stride`).
    for j in 0..len {
        let wj = flush_tiny(exp_nonpositive((last - sc.cs[j]) as f32));
        for (xw, &xs) in sc.xw[j * p..(j + 1) * p].iter_mut().zip(&sc.xs[j * p..(j + 1) * p]) {
            *xw = flush_tiny(wj * xs);
        }
    }
    let total = flush_tiny(exp_nonpositive(last as f32));
    let b_rows = &inp.xbc[inp.b_at(t0, g)..];
    let b_t = SmallProduct {
        m: n,
        k: len,
        n: p,
        a: b_rows,
        lda: 1,
        ka: inp.xbc_stride,
        b: &sc.xw,
        ldb: p,
        lower: false,
        out_scale: total,
    };
    gemm_acc(b_t, st, p);
}

/// A decay coefficient below 1e-30 in magnitude becomes 0. Its products with the chunk's values
/// would be subnormal floats, which Intel cores handle in microcode (~100× slower): in `ssd_probe`'s
/// data, whose decays reach e^-87 within a chunk, they made the whole scan 2.4× slower. What is
/// dropped is far below the f32 rounding of any output, and native and WASM drop the same terms.
#[inline(always)]
fn flush_tiny(v: f32) -> f32 {
    if v.abs() < 1e-30 {
        0.0
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain float64 recurrence straight from reference §3.3 step 6 (libm exp / ln_1p).
    fn reference(inp: &SsdInputs, state: &mut [f64]) -> Vec<f64> {
        let (h, p, n) = (inp.heads, inp.head_dim, inp.state_size);
        let mut y = vec![0f64; inp.len * h * p];
        for t in 0..inp.len {
            for hh in 0..h {
                let g = hh / (h / inp.groups);
                let raw = inp.dt[t * inp.dt_stride + inp.dt_offset + hh] as f64 + inp.dt_bias[hh] as f64;
                let dt = if raw > 20.0 { raw } else { raw.exp().ln_1p() };
                let dt = dt.max(inp.dt_min as f64).min(inp.dt_max as f64);
                let da = (dt * inp.a[hh] as f64).exp();
                for pi in 0..p {
                    let x = inp.x_row(t, hh)[pi] as f64;
                    let mut acc = 0f64;
                    for ni in 0..n {
                        let s = &mut state[(hh * p + pi) * n + ni];
                        *s = da * *s + dt * x * inp.b_row(t, g)[ni] as f64;
                        acc += *s * inp.c_row(t, g)[ni] as f64;
                    }
                    y[t * h * p + hh * p + pi] = acc + inp.d[hh] as f64 * x;
                }
            }
        }
        y
    }

    /// Deterministic values in [-1, 1).
    fn noise(seed: u64, len: usize) -> Vec<f32> {
        let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                z ^= z << 13;
                z ^= z >> 7;
                z ^= z << 17;
                ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    struct Case {
        len: usize,
        heads: usize,
        head_dim: usize,
        state_size: usize,
        groups: usize,
        dt_limit: (f32, f32),
    }

    fn check(case: &Case, seed: u64) {
        let Case { len, heads: h, head_dim: p, state_size: n, groups: g, dt_limit } = *case;
        let stride = h * p + 2 * g * n + 3; // padding columns: the kernels must honour the stride
        let xbc = noise(seed, len * stride);
        let dt_stride = h + 5;
        let dt = noise(seed + 1, len * dt_stride);
        let a: Vec<f32> = noise(seed + 2, h).iter().map(|v| -(1.0 + 8.0 * (v + 1.0))).collect();
        let (dt_bias, d) = (noise(seed + 3, h), noise(seed + 4, h));
        let inp = SsdInputs {
            len,
            heads: h,
            head_dim: p,
            state_size: n,
            groups: g,
            xbc: &xbc,
            xbc_stride: stride,
            dt: &dt,
            dt_stride,
            dt_offset: 2,
            dt_bias: &dt_bias,
            a: &a,
            d: &d,
            dt_min: dt_limit.0,
            dt_max: dt_limit.1,
        };
        let s0 = noise(seed + 5, h * p * n);
        let mut want_s: Vec<f64> = s0.iter().map(|&v| v as f64).collect();
        let want_y = reference(&inp, &mut want_s);
        let close = |got: &[f32], want: &[f64], what: &str| {
            let worst = got.iter().zip(want).map(|(a, b)| (*a as f64 - b).abs() / (1.0 + b.abs())).fold(0.0, f64::max);
            assert!(worst < 2e-5, "{what}: len {len} H {h} P {p} N {n} G {g}: max rel err {worst}");
        };
        let mut s = vec![0f32; s0.len()];
        let mut y = vec![0f32; len * h * p];
        ssd_recurrent(&inp, &s0, &mut s, &mut y);
        close(&y, &want_y, "recurrent y");
        close(&s, &want_s, "recurrent state");
        for chunk in [1, 3, 8, 16, 64] {
            let (mut s, mut y) = (vec![0f32; s0.len()], vec![0f32; len * h * p]);
            ssd_chunked(&inp, chunk, &s0, &mut s, &mut y);
            close(&y, &want_y, &format!("chunked({chunk}) y"));
            close(&s, &want_s, &format!("chunked({chunk}) state"));
            // In place: the same bits, the state updated where it lies.
            let (mut s_in_place, mut y_in_place) = (s0.clone(), vec![0f32; len * h * p]);
            ssd_chunked_in_place(&inp, chunk, &mut s_in_place, &mut y_in_place);
            assert!(s_in_place == s && y_in_place == y, "chunked({chunk}): in place differs");
        }
    }

    #[test]
    fn chunked_and_recurrent_match_the_float64_recurrence() {
        let inf = f32::INFINITY;
        let cases = [
            Case { len: 1, heads: 2, head_dim: 4, state_size: 8, groups: 1, dt_limit: (0.0, inf) },
            Case { len: 17, heads: 4, head_dim: 8, state_size: 16, groups: 2, dt_limit: (0.0, inf) },
            Case { len: 70, heads: 8, head_dim: 16, state_size: 12, groups: 4, dt_limit: (0.0, inf) },
            Case { len: 130, heads: 6, head_dim: 5, state_size: 33, groups: 3, dt_limit: (0.0, inf) },
            // Finite Δ limits: both bounds bind for some tokens.
            Case { len: 40, heads: 4, head_dim: 8, state_size: 8, groups: 1, dt_limit: (0.3, 0.9) },
        ];
        for (i, case) in cases.iter().enumerate() {
            check(case, 100 + i as u64);
        }
    }

    #[test]
    fn large_shape_runs_threaded_and_matches() {
        // Enough work to take the rayon path (checked by `parallel`).
        let case = Case { len: 96, heads: 8, head_dim: 32, state_size: 32, groups: 2, dt_limit: (0.0, f32::INFINITY) };
        check(&case, 7);
    }

    #[test]
    fn splitting_at_chunk_multiples_is_bit_identical() {
        let (h, p, n, g, len, q) = (4, 8, 16, 2, 48, 8);
        let stride = h * p + 2 * g * n;
        let xbc = noise(1, len * stride);
        let dt = noise(2, len * h);
        let a = vec![-1.5f32; h];
        let (dt_bias, d) = (noise(3, h), noise(4, h));
        let inp = |t0: usize, l: usize| SsdInputs {
            len: l,
            heads: h,
            head_dim: p,
            state_size: n,
            groups: g,
            xbc: &xbc[t0 * stride..],
            xbc_stride: stride,
            dt: &dt[t0 * h..],
            dt_stride: h,
            dt_offset: 0,
            dt_bias: &dt_bias,
            a: &a,
            d: &d,
            dt_min: 0.0,
            dt_max: f32::INFINITY,
        };
        let zeros = vec![0f32; h * p * n];
        let (mut s, mut y) = (zeros.clone(), vec![0f32; len * h * p]);
        ssd_chunked(&inp(0, len), q, &zeros, &mut s, &mut y);
        let (mut s1, mut y1) = (zeros.clone(), vec![0f32; 16 * h * p]);
        ssd_chunked(&inp(0, 16), q, &zeros, &mut s1, &mut y1);
        let (mut s2, mut y2) = (zeros.clone(), vec![0f32; 32 * h * p]);
        ssd_chunked(&inp(16, 32), q, &s1, &mut s2, &mut y2);
        y1.extend(y2);
        assert_eq!(y1, y);
        assert_eq!(s2, s);
    }
}
