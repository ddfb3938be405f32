//! Fused Mamba-1 selective scan (reference §2.3 steps 4–9) for a chunk of L tokens, continuing from
//! and updating the SSM state. One pass over (tokens × channels × state) does, per token and channel:
//! Δ = softplus(dt + dt_bias) (threshold 20), dA = exp(Δ·A), s = dA·s + Δ·B·u, y = C·s + D·u,
//! y ·= silu(z). Nothing of size L×E×N is ever materialised.
//!
//! Vectorisation: channels are processed in blocks of `CB` held in fixed-size arrays, with the state
//! block transposed to `[N][CB]`, so the innermost loop runs over CB independent channels — LLVM turns
//! it into full-width SIMD (two AVX-512 or four AVX2 registers), with the polynomial `exp` inlined and no
//! horizontal reductions (C·s accumulates per channel lane). This works for any N, not just N = 16.
//! Threads: channel blocks are independent, so prefill splits them across rayon tasks; each block
//! writes its own columns of the row-major output.

use rayon::prelude::*;

use super::math::{exp2_nonpositive, madd, silu_with, softplus_with};
use super::{size_add, size_mul};

/// Channels per block (lanes of the inner loop).
pub const CB: usize = 32;

/// One state row of a block's lanes, aligned to a cache line: the inner loop loads and stores these
/// as whole vectors, and on the stack they were aligned by chance — a row straddling two lines cost
/// ~25 % of the scan in the calls where it did.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Lanes([f32; CB]);

impl Lanes {
    const ZERO: Self = Self([0.0; CB]);
}

/// Below this many (token × channel × state) updates the scan runs on the calling thread.
const PARALLEL_MIN_WORK: usize = 16 * 1024;

/// Inputs of one scan. Row-major `[L, …]` arrays may be column slices of wider rows (`*_stride`).
#[derive(Clone, Copy)]
pub struct ScanInputs<'a> {
    pub len: usize,
    /// Post-conv activations `u[t * E + c]`.
    pub u: &'a [f32],
    /// Δ before bias and softplus, `dt[t * E + c]`.
    pub dt: &'a [f32],
    /// `[E]`.
    pub dt_bias: &'a [f32],
    /// `A = -exp(A_log)`, `[E, N]`.
    pub a: &'a [f32],
    /// B and C: `bc[t * bc_stride + b_offset + n]`, `bc[t * bc_stride + c_offset + n]`.
    pub bc: &'a [f32],
    pub bc_stride: usize,
    pub b_offset: usize,
    pub c_offset: usize,
    /// `[E]` skip weights.
    pub d: &'a [f32],
    /// Gate `z[t * z_stride + z_offset + c]`.
    pub z: &'a [f32],
    pub z_stride: usize,
    pub z_offset: usize,
}

/// Output pointer shared by channel blocks; each block writes only its own columns of every row.
#[derive(Clone, Copy)]
struct RowsOut(*mut f32);
unsafe impl Send for RowsOut {}
unsafe impl Sync for RowsOut {}

/// Runs the scan with `state` (`[E, N]`) updated in place (tests; the model uses [`selective_scan_from`]).
#[cfg(test)]
pub(crate) fn selective_scan(inp: &ScanInputs, state: &mut [f32], y: &mut [f32]) {
    let old = state.to_vec();
    selective_scan_from(inp, &old, state, y);
}

/// Runs the scan from `state_in` (`[E, N]`), writing the state after the last token to `state_out`
/// (each block reads its old state once and writes the new one once: no separate copy) and
/// `y`: output `[L, E]` row-major (what out_proj reads).
pub(crate) fn selective_scan_from(inp: &ScanInputs, state_in: &[f32], state: &mut [f32], y: &mut [f32]) {
    let e = inp.dt_bias.len();
    assert!(e >= 1, "selective_scan: no channels");
    let n = inp.a.len() / e;
    let l = inp.len;
    // Checked arithmetic: the blocks write `y` through a raw pointer, trusting `y.len() >= l * e`.
    assert!(n >= 1 && inp.a.len() == e * n && state.len() == e * n && state_in.len() == e * n);
    assert!(inp.d.len() == e && y.len() >= size_mul(e, l));
    if l == 0 {
        state.copy_from_slice(state_in);
        return;
    }
    assert!(inp.u.len() >= size_mul(l, e) && inp.dt.len() >= size_mul(l, e));
    let b_end = size_add(size_add(size_mul(l - 1, inp.bc_stride), inp.b_offset.max(inp.c_offset)), n);
    assert!(inp.bc.len() >= b_end);
    assert!(inp.z.len() >= size_add(size_add(size_mul(l - 1, inp.z_stride), inp.z_offset), e));
    // Blocks own disjoint column ranges of `y`, which is at least l × e long (asserted above).
    let out = RowsOut(y.as_mut_ptr());
    // Small scans (a decode step of a tiny model) are not worth waking the pool; a 130M-sized
    // decode step (E·N = 24576) is.
    if l * e * n < PARALLEL_MIN_WORK || rayon::current_num_threads() == 1 {
        for (b, (s, old)) in state.chunks_mut(CB * n).zip(state_in.chunks(CB * n)).enumerate() {
            scan_block(inp, b * CB, old, s, out);
        }
    } else {
        state
            .par_chunks_mut(CB * n)
            .zip(state_in.par_chunks(CB * n))
            .enumerate()
            .for_each(|(b, (s, old))| scan_block(inp, b * CB, old, s, out));
    }
}

multiversion!(fn scan_block(inp: &ScanInputs, c0: usize, state_in: &[f32], state: &mut [f32], out: RowsOut) = scan_block_body, fma);

#[inline(always)]
fn scan_block_body<const F: bool>(inp: &ScanInputs, c0: usize, state_in: &[f32], state: &mut [f32], out: RowsOut) {
    let n = inp.a.len() / inp.dt_bias.len();
    // Every released Mamba-1 has N = 16: give LLVM the constant; other sizes use heap buffers.
    if n == 16 {
        let (mut s, mut a) = ([Lanes::ZERO; 16], [Lanes::ZERO; 16]);
        scan_block_core::<F>(inp, c0, state_in, state, out, &mut s, &mut a);
    } else {
        let (mut s, mut a) = (vec![Lanes::ZERO; n], vec![Lanes::ZERO; n]);
        scan_block_core::<F>(inp, c0, state_in, state, out, &mut s, &mut a);
    }
}

/// `s`, `a`: the block's state and A·log2 e, transposed to `[N][CB]` (zeroed by the caller).
#[inline(always)]
fn scan_block_core<const F: bool>(
    inp: &ScanInputs,
    c0: usize,
    state_in: &[f32],
    state: &mut [f32],
    out: RowsOut,
    s: &mut [Lanes],
    a: &mut [Lanes],
) {
    let e = inp.dt_bias.len();
    let n = s.len();
    let l = inp.len;
    let cb = state.len() / n; // channels in this block (the last block may be short)

    // Lanes ≥ cb stay zero and are never stored back. `a` holds A·log2 e: dA = 2^(Δ·A·log2 e).
    let tiles = n == 16 && cb == CB && super::transpose::available();
    if tiles {
        transpose_in(&state_in[..CB * 16], s);
        transpose_in(&inp.a[c0 * 16..(c0 + CB) * 16], a);
        a.iter_mut().for_each(|row| row.0.iter_mut().for_each(|v| *v *= std::f32::consts::LOG2_E));
    } else {
        for i in 0..cb {
            for j in 0..n {
                s[j].0[i] = state_in[i * n + j];
                a[j].0[i] = inp.a[(c0 + i) * n + j] * std::f32::consts::LOG2_E;
            }
        }
    }
    let mut bias = [0f32; CB];
    let mut dskip = [0f32; CB];
    bias[..cb].copy_from_slice(&inp.dt_bias[c0..c0 + cb]);
    dskip[..cb].copy_from_slice(&inp.d[c0..c0 + cb]);

    for t in 0..l {
        // The [L, E] inputs are read a 128-byte column strip per token, 6 KB apart at E = 1536: from
        // L3 at prefill sizes, and a token's loads start after hundreds of the last token's ops, too
        // far back for out-of-order execution to start them early (they stalled ~25 % of the scan).
        let ahead = t + PREFETCH_TOKENS;
        prefetch_lanes(inp.dt.as_ptr().wrapping_add(ahead * e + c0));
        prefetch_lanes(inp.u.as_ptr().wrapping_add(ahead * e + c0));
        prefetch_lanes(inp.z.as_ptr().wrapping_add(ahead * inp.z_stride + inp.z_offset + c0));
        prefetch_lanes(out.0.wrapping_add(ahead * e + c0));
        let mut delta = [0f32; CB];
        let mut uu = [0f32; CB];
        let mut zz = [0f32; CB];
        load_lanes(&mut delta, &inp.dt[t * e + c0..], cb);
        load_lanes(&mut uu, &inp.u[t * e + c0..], cb);
        load_lanes(&mut zz, &inp.z[t * inp.z_stride + inp.z_offset + c0..], cb);
        let mut du = [0f32; CB];
        for i in 0..CB {
            delta[i] = softplus_with::<F>(delta[i] + bias[i]);
            du[i] = delta[i] * uu[i];
        }
        let brow = &inp.bc[t * inp.bc_stride + inp.b_offset..][..n];
        let crow = &inp.bc[t * inp.bc_stride + inp.c_offset..][..n];
        let mut y = [0f32; CB];
        for j in 0..n {
            let (bj, cj) = (brow[j], crow[j]);
            let (sj, aj) = (&mut s[j].0, &a[j].0);
            for i in 0..CB {
                // Δ > 0 and A < 0, so Δ·A ≤ 0.
                let v = madd::<F>(exp2_nonpositive::<F>(delta[i] * aj[i]), sj[i], du[i] * bj);
                sj[i] = v;
                y[i] = madd::<F>(v, cj, y[i]);
            }
        }
        for i in 0..CB {
            y[i] = (y[i] + dskip[i] * uu[i]) * silu_with::<F>(zz[i]);
        }
        // SAFETY: row t, columns c0..c0+cb: inside `y` and owned by this block only.
        unsafe {
            if cb == CB {
                (out.0.add(t * e + c0) as *mut [f32; CB]).write_unaligned(y);
            } else {
                std::ptr::copy_nonoverlapping(y.as_ptr(), out.0.add(t * e + c0), cb);
            }
        }
    }
    if tiles {
        transpose_out(s, &mut state[..CB * 16]);
        return;
    }
    for i in 0..cb {
        for j in 0..n {
            state[i * n + j] = s[j].0[i];
        }
    }
}

/// `lanes[j].0[i] = rows[i * 16 + j]` for a whole block of N = 16 (`transpose::available`).
#[inline(always)]
fn transpose_in(rows: &[f32], lanes: &mut [Lanes]) {
    assert!(rows.len() == CB * 16 && lanes.len() == 16);
    #[cfg(target_arch = "x86_64")]
    for h in 0..CB / 16 {
        // SAFETY: AVX-512 (`transpose::available`); 16 rows of 16 from row 16h, and the 16 lanes'
        // columns 16h.. (each `Lanes` is CB floats, `repr(C)`), both asserted in bounds above.
        unsafe {
            super::transpose::transpose16(
                rows.as_ptr().add(h * 256),
                16,
                lanes.as_mut_ptr().cast::<f32>().add(16 * h),
                CB,
            )
        };
    }
}

/// The inverse of [`transpose_in`].
#[inline(always)]
fn transpose_out(lanes: &[Lanes], rows: &mut [f32]) {
    assert!(rows.len() == CB * 16 && lanes.len() == 16);
    #[cfg(target_arch = "x86_64")]
    for h in 0..CB / 16 {
        // SAFETY: as in `transpose_in`, the other way round.
        unsafe {
            super::transpose::transpose16(
                lanes.as_ptr().cast::<f32>().add(16 * h),
                CB,
                rows.as_mut_ptr().add(h * 256),
                16,
            )
        };
    }
}

/// Tokens ahead that [`prefetch_lanes`] asks for.
const PREFETCH_TOKENS: usize = 4;

/// Asks for the cache lines of `CB` floats from `p` (x86; a no-op elsewhere). Never faults, so
/// addresses past the last token are harmless.
#[inline(always)]
fn prefetch_lanes(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint: it reads nothing architecturally and cannot fault (SSE, baseline x86-64).
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(CB - 1).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// `dst[..cb]` = `src[..cb]`. A full block is a fixed-size copy (inlined vector moves); a
/// run-time length would call `memmove` four times per token and block — 7 % of a prefill.
#[inline(always)]
fn load_lanes(dst: &mut [f32; CB], src: &[f32], cb: usize) {
    if cb == CB {
        *dst = src[..CB].try_into().expect("a full block of lanes");
    } else {
        load_partial_lanes(dst, src, cb);
    }
}

/// The last, short block's copy, kept out of line: inlined, LLVM merged the full-block copies'
/// tails into this `memcpy` call (one call per token and block, ~10 % of the scan).
#[cold]
#[inline(never)]
fn load_partial_lanes(dst: &mut [f32; CB], src: &[f32], cb: usize) {
    dst[..cb].copy_from_slice(&src[..cb]);
}

/// Straightforward per-token reference of the same maths in f64 (libm exp/ln1p), for tests.
#[cfg(test)]
pub(crate) fn selective_scan_reference(inp: &ScanInputs, state: &mut [f32]) -> Vec<f32> {
    let e = inp.dt_bias.len();
    let n = inp.a.len() / e;
    let mut y = vec![0f32; inp.len * e];
    for t in 0..inp.len {
        for c in 0..e {
            let x = inp.dt[t * e + c] as f64 + inp.dt_bias[c] as f64;
            let delta = if x > 20.0 { x } else { x.exp().ln_1p() };
            let u = inp.u[t * e + c] as f64;
            let mut acc = 0f64;
            for j in 0..n {
                let b = inp.bc[t * inp.bc_stride + inp.b_offset + j] as f64;
                let cc = inp.bc[t * inp.bc_stride + inp.c_offset + j] as f64;
                let s = (delta * inp.a[c * n + j] as f64).exp() * state[c * n + j] as f64 + delta * b * u;
                state[c * n + j] = s as f32;
                acc += s * cc;
            }
            let z = inp.z[t * inp.z_stride + inp.z_offset + c] as f64;
            y[t * e + c] = ((acc + inp.d[c] as f64 * u) * (z / (1.0 + (-z).exp()))) as f32;
        }
    }
    y
}
