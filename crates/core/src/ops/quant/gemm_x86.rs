//! The many-row quantized product on AVX-512 VNNI: `vpdpbusd` outer products.
//!
//! A weight panel is 32 rows unpacked to signed bytes (`Format::unpack`), stored group by group
//! (a group: the values sharing one float scale, 32 or Q6_K's 16) as 4-byte column steps of all 32
//! rows — one k step of one 16-row vector is one 64-byte load. The token rows' 8-bit activations
//! are packed in tiles of MR rows, each 4-byte step broadcast to every lane. `vpdpbusd` multiplies
//! unsigned bytes by signed ones, so the activation bytes are stored plus 128 (`q ^ 0x80`) and each
//! integer accumulator starts at −128 · Σ w over the group, which cancels the offset exactly. At the
//! end of a group each lane's i32 sum becomes `acc += D · dx · isum (+ M · dx · Σq)`, the same terms
//! the one-row kernels add (`formats`), so prefill and decode agree up to f32 rounding.
//!
//! Per group of 32 and token row, 8 `vpdpbusd` cover 32 weight rows × 32 values; the f32 product
//! needs 32 FMAs (16 lanes each) for the same work. Weight panels are unpacked once per task (O(n·k)
//! next to the product's O(m·n·k)); every task reads the token tiles packed once per call.

use std::arch::x86_64::*;
use std::cell::RefCell;

use rayon::prelude::*;

use super::activation::quantize_into;
use super::formats::{self, Format};
use super::gemm::QuantProduct;
use super::QuantRef;
use crate::loader::QuantKind;
use crate::ops::gemm_avx512::store_row_pair;
use crate::ops::mat_ref::{MatRef, OutPtr};

/// Token rows per tile: 6 × 2 integer and 6 × 2 float accumulators + 2 weight vectors + a broadcast
/// fit the 32 zmm registers.
const MR: usize = 6;
/// Weight rows per panel: two 16-lane vectors.
const NR: usize = 32;
/// Panels per task: their unpacked bytes (PB × 32 × k ≈ 200 KiB for k = 1536) stay in L2 while the
/// task's token tiles pass them.
const PB: usize = 4;

/// Whether the packed kernel runs here: this run's SIMD level is AVX-512 (`PHOENIX_SIMD` may cap it
/// lower) and the CPU has the byte instructions and VNNI.
pub(super) fn available() -> bool {
    crate::ops::simd_level() == crate::ops::SimdLevel::Avx512
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// Largest matrix whose unpacked panels are shared by the token groups of one call (SmolLM's and
/// Mamba's projections are 0.1–3 MB unpacked; larger ones split by panels alone anyway).
const SHARED_PANEL_BYTES: usize = 8 << 20;

thread_local! {
    /// One task's unpacked weight panels, reused across calls.
    static PANELS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// A whole matrix's unpacked panels, read by every task of one call (see `gemm_as`): the calling
    /// thread's, reused across calls.
    static SHARED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// `pack_panel`'s unpacked rows, reused across panels.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    /// `Tiles::quantize`'s row (gathered when strided), its 8-bit values and its block scales.
    static ROW_SCRATCH: RefCell<(Vec<f32>, Vec<i8>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// The token rows' activations in tiles of MR rows: per group, the bytes as `[G/4][MR][4]` (plus
/// 128), then each row's scale and (for types with a minimum) its `dx · Σq` over the group.
struct Tiles {
    bytes: Vec<u8>,
    dx: Vec<f32>,
    scaled: Vec<f32>,
    /// Bytes and floats per tile.
    tile_bytes: usize,
    tile_floats: usize,
}

impl Tiles {
    /// Every row of `x` rounded to 8 bits for `kind` exactly as [`QuantizedActivation::new`] rounds
    /// it (the one-row product's rounding), written straight into its tile: no per-row vectors (they
    /// were ~430 k allocations per int8 SmolLM prompt) and no second copy.
    fn quantize<F: Format>(x: MatRef, kind: QuantKind) -> Self {
        let (m, k) = (x.rows, x.cols);
        let groups = k / F::GROUP;
        let tiles = m.div_ceil(MR);
        let (tile_bytes, tile_floats) = (k * MR, groups * MR);
        // Rows past the last token: activation 0 (byte 128 after the offset) with scale 0.
        let mut bytes = vec![0x80u8; tiles * tile_bytes];
        let mut dx = vec![0f32; tiles * tile_floats];
        let mut scaled = vec![0f32; tiles * tile_floats];
        let per_block = F::ELEMS / F::GROUP;
        let fill = |tile: usize, tb: &mut [u8], tdx: &mut [f32], tsc: &mut [f32]| {
            ROW_SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let (row, q, d) = &mut *scratch;
                q.resize(k, 0);
                d.resize(k / F::ELEMS, 0.0);
                for t in 0..MR.min(m - tile * MR) {
                    let start = (tile * MR + t) * x.row_stride;
                    let values: &[f32] = if x.col_stride == 1 {
                        &x.data[start..start + k]
                    } else {
                        row.clear();
                        row.extend((0..k).map(|c| x.data[start + c * x.col_stride]));
                        row
                    };
                    quantize_into(values, kind, q, d);
                    // Four values at a time as one word, each byte's sign bit flipped (+128); byte by
                    // byte, with a bounds check each, this was ~4 % of an int8 SmolLM prefill.
                    for (slot, step) in tb.chunks_exact_mut(MR * 4).zip(q.chunks_exact(4)) {
                        let word = u32::from_ne_bytes([step[0] as u8, step[1] as u8, step[2] as u8, step[3] as u8]);
                        slot[t * 4..t * 4 + 4].copy_from_slice(&(word ^ 0x8080_8080).to_ne_bytes());
                    }
                    for g in 0..groups {
                        let dg = d[g / per_block];
                        tdx[g * MR + t] = dg;
                        if F::HAS_MIN {
                            // d · Σq over the group (32 values for every type with a minimum), as
                            // the activation's `scaled_sums`.
                            let sum: i32 = q[g * F::GROUP..(g + 1) * F::GROUP].iter().map(|&v| v as i32).sum();
                            tsc[g * MR + t] = dg * sum as f32;
                        }
                    }
                }
            })
        };
        let chunks = bytes.par_chunks_mut(tile_bytes).zip(dx.par_chunks_mut(tile_floats));
        let chunks = chunks.zip(scaled.par_chunks_mut(tile_floats)).enumerate();
        if tiles > 1 && rayon::current_num_threads() > 1 {
            chunks.for_each(|(tile, ((tb, tdx), tsc))| fill(tile, tb, tdx, tsc));
        } else {
            let serial =
                bytes.chunks_mut(tile_bytes).zip(dx.chunks_mut(tile_floats)).zip(scaled.chunks_mut(tile_floats));
            serial.enumerate().for_each(|(tile, ((tb, tdx), tsc))| fill(tile, tb, tdx, tsc));
        }
        Self { bytes, dx, scaled, tile_bytes, tile_floats }
    }
}

/// Bytes of one group of an unpacked panel: the values, then the 32 rows' integer start (i32), scale
/// and minimum (f32, when the type has one).
const fn group_bytes(group: usize, has_min: bool) -> usize {
    group * NR + NR * 4 * (2 + has_min as usize)
}

/// `out[r, o] (+)= Σ_i x[r, i] · w[o, i]` for the rows of `x` (`[m, k]`, each rounded to 8 bits for
/// the weights' kind) and each product's `w` (`[n, k]`), `out` `[m, n]`; the rows are rounded and
/// packed once for all the products (they share one kind).
/// Safety: [`available`] is true; `x` is checked; every `w` is of one kind and holds `n` rows of
/// `x.cols` values, and its `out` m · n values; m and every n > 0.
pub(super) unsafe fn gemm_same_kind(x: MatRef, products: &mut [&mut QuantProduct], accumulate: bool) {
    let Some(first) = products.first() else { return };
    match first.w.kind {
        QuantKind::Q8_0 => gemm_as::<formats::Q8_0>(x, products, accumulate),
        QuantKind::Q4_0 => gemm_as::<formats::Q4_0>(x, products, accumulate),
        QuantKind::Q4_1 => gemm_as::<formats::Q4_1>(x, products, accumulate),
        QuantKind::Q5_0 => gemm_as::<formats::Q5_0>(x, products, accumulate),
        QuantKind::Q5_1 => gemm_as::<formats::Q5_1>(x, products, accumulate),
        QuantKind::Q4K => gemm_as::<formats::Q4K>(x, products, accumulate),
        QuantKind::Q5K => gemm_as::<formats::Q5K>(x, products, accumulate),
        QuantKind::Q6K => gemm_as::<formats::Q6K>(x, products, accumulate),
    }
}

unsafe fn gemm_as<F: Format>(x: MatRef, products: &mut [&mut QuantProduct], accumulate: bool) {
    let tiles = Tiles::quantize::<F>(x, products[0].w.kind);
    for p in products.iter_mut() {
        product_as::<F>(&tiles, x.rows, x.cols, p.w, p.n, p.out, accumulate);
    }
}

/// One product over tiles already packed.
unsafe fn product_as<F: Format>(
    tiles: &Tiles,
    m: usize,
    k: usize,
    w: QuantRef,
    n: usize,
    out: &mut [f32],
    accumulate: bool,
) {
    let panels = n.div_ceil(NR * PB);
    let threads = rayon::current_num_threads();
    // Split the tokens too when there are few panel groups, so every thread gets work.
    let groups = (4 * threads).div_ceil(panels).clamp(1, m.div_ceil(MR));
    let rows_per_group = m.div_ceil(groups).next_multiple_of(MR);
    let groups = m.div_ceil(rows_per_group);
    let dst = OutPtr(out.as_mut_ptr());
    let row_bytes = w.bytes_of(k);
    let panel_bytes = k / F::GROUP * group_bytes(F::GROUP, F::HAS_MIN);
    let pack = |first: usize, count: usize, buf: &mut [u8]| {
        for q in 0..count {
            let o0 = first + q * NR;
            let nr = NR.min(n - o0);
            let src = &w.bytes[o0 * row_bytes..(o0 + nr) * row_bytes];
            // SAFETY: `available` (AVX-512F/BW/VNNI) checked by the caller.
            unsafe { pack_panel::<F>(src, nr, k, &mut buf[q * panel_bytes..(q + 1) * panel_bytes]) };
        }
    };
    let span = |i: usize| {
        let (p, g) = (i / groups, i % groups);
        let first = p * PB * NR;
        (p, g * rows_per_group..((g + 1) * rows_per_group).min(m), first, PB.min((n - first).div_ceil(NR)))
    };
    let all = panels * groups;
    let parallel = all > 1 && threads > 1;
    let shared_bytes = n.div_ceil(NR) * panel_bytes;
    if groups > 1 && shared_bytes <= SHARED_PANEL_BYTES {
        // Several token groups read each panel group: unpack every panel once, in parallel, into one
        // buffer they share (each task unpacking its own had redone k and v's panels four times).
        // Taken out of the thread-local while the tasks run: a task this thread steals meanwhile may
        // be another product's, which then finds the slot empty and uses a buffer of its own.
        let mut shared = SHARED.with(|slot| std::mem::take(&mut *slot.borrow_mut()));
        if shared.len() < shared_bytes {
            shared.resize(shared_bytes, 0);
        }
        let chunks = shared[..shared_bytes].par_chunks_mut(PB * panel_bytes);
        chunks.enumerate().for_each(|(p, buf)| pack(p * PB * NR, buf.len() / panel_bytes, buf));
        let panels_of = &shared[..shared_bytes];
        let task = |i: usize| {
            let (p, rows, first, count) = span(i);
            let buf = &panels_of[p * PB * panel_bytes..];
            // SAFETY: as in `pack`; this task writes rows `rows` × columns first .. first + count · NR
            // (clipped at n) of `out`, disjoint from every other task's.
            unsafe { task_tiles::<F>(tiles, buf, panel_bytes, k, n, first, count, rows, dst, accumulate) };
        };
        if parallel {
            (0..all).into_par_iter().for_each(task);
        } else {
            (0..all).for_each(task);
        }
        SHARED.with(|slot| *slot.borrow_mut() = shared);
        return;
    }
    let task = |i: usize| {
        let (_, rows, first, count) = span(i);
        PANELS.with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.len() < count * panel_bytes {
                buf.resize(count * panel_bytes, 0);
            }
            pack(first, count, &mut buf);
            // SAFETY: as above.
            unsafe { task_tiles::<F>(tiles, &buf, panel_bytes, k, n, first, count, rows, dst, accumulate) };
        });
    };
    if parallel {
        (0..all).into_par_iter().for_each(task);
    } else {
        (0..all).for_each(task);
    }
}

/// Unpacks `nr` (≤ NR) rows of `k` values into one panel (`dst`, zeroed past row `nr`).
///
/// Each row is unpacked whole (one sequential read of its blocks) into a row-major scratch, then
/// each group is transposed into its 4-byte column steps — for 32-value groups as 8 × 8 transposes
/// of 4-byte words in vector registers. (Writing each row's steps straight into the panel compiled
/// to scattered stores and was ~8 % of an int8 SmolLM prefill.)
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn pack_panel<F: Format>(src: &[u8], nr: usize, k: usize, dst: &mut [u8]) {
    let gb = group_bytes(F::GROUP, F::HAS_MIN);
    let per_block = F::ELEMS / F::GROUP;
    let groups = k / F::GROUP;
    if nr < NR {
        dst.fill(0);
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let Scratch { values, scales, mins } = &mut *scratch;
        // Rows below `nr` are overwritten whole below; rows past it read as 0. (Clearing the whole
        // scratch for every panel was ~1.5 % of an int8 SmolLM prefill, as a memset.)
        values.resize(NR * k, 0);
        values[nr * k..NR * k].fill(0);
        scales.resize(NR * groups, 0.0);
        mins.resize(NR * groups, 0.0);
        let row_bytes = k / F::ELEMS * F::BYTES;
        for r in 0..nr {
            let row = &src[r * row_bytes..][..row_bytes];
            for (b, block) in row.chunks_exact(F::BYTES).enumerate() {
                let g0 = r * groups + b * per_block;
                F::unpack(
                    block,
                    &mut values[r * k + b * F::ELEMS..][..F::ELEMS],
                    &mut scales[g0..g0 + per_block],
                    &mut mins[g0..g0 + per_block],
                );
            }
        }
        for j in 0..groups {
            let g = dst.as_mut_ptr().add(j * gb);
            let group_of = |r: usize| &values[r * k + j * F::GROUP..][..F::GROUP];
            if F::GROUP == 32 {
                for rows in (0..NR).step_by(8) {
                    let words: [__m256i; 8] =
                        std::array::from_fn(|i| _mm256_loadu_si256(group_of(rows + i).as_ptr().cast()));
                    for (step, col) in transpose8x8(words).into_iter().enumerate() {
                        _mm256_storeu_si256(g.add((step * NR + rows) * 4).cast(), col);
                    }
                }
            } else {
                for r in 0..nr {
                    for (step, word) in group_of(r).chunks_exact(4).enumerate() {
                        g.add((step * NR + r) * 4).cast::<[i8; 4]>().write_unaligned(word.try_into().unwrap());
                    }
                }
            }
            let floats = g.add(F::GROUP * NR);
            for r in 0..nr {
                let sum: i32 = group_of(r).iter().map(|&v| v as i32).sum();
                floats.add(4 * r).cast::<i32>().write_unaligned(-128 * sum);
                floats.add(4 * (NR + r)).cast::<f32>().write_unaligned(scales[r * groups + j]);
                if F::HAS_MIN {
                    floats.add(4 * (2 * NR + r)).cast::<f32>().write_unaligned(mins[r * groups + j]);
                }
            }
        }
    });
}

/// `pack_panel`'s row-major unpacked rows (NR × k values, NR × groups scales and minimums).
#[derive(Default)]
struct Scratch {
    values: Vec<i8>,
    scales: Vec<f32>,
    mins: Vec<f32>,
}

/// Eight rows of eight 4-byte words → eight columns (column `s`: word `s` of rows 0..8).
#[inline(always)]
unsafe fn transpose8x8(rows: [__m256i; 8]) -> [__m256i; 8] {
    let r = rows.map(|v| _mm256_castsi256_ps(v));
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    let u = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xee>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xee>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xee>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xee>(t[5], t[7]),
    ];
    [
        _mm256_permute2f128_ps::<0x20>(u[0], u[4]),
        _mm256_permute2f128_ps::<0x20>(u[1], u[5]),
        _mm256_permute2f128_ps::<0x20>(u[2], u[6]),
        _mm256_permute2f128_ps::<0x20>(u[3], u[7]),
        _mm256_permute2f128_ps::<0x31>(u[0], u[4]),
        _mm256_permute2f128_ps::<0x31>(u[1], u[5]),
        _mm256_permute2f128_ps::<0x31>(u[2], u[6]),
        _mm256_permute2f128_ps::<0x31>(u[3], u[7]),
    ]
    .map(|v| _mm256_castps_si256(v))
}

/// One task: every tile of its token rows against each of its `count` panels.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn task_tiles<F: Format>(
    tiles: &Tiles,
    panels: &[u8],
    panel_bytes: usize,
    k: usize,
    n: usize,
    first: usize,
    count: usize,
    rows: std::ops::Range<usize>,
    out: OutPtr,
    accumulate: bool,
) {
    let groups = k / F::GROUP;
    let mut t = rows.start;
    while t < rows.end {
        let tile = t / MR;
        let mr = MR.min(rows.end - t);
        let tb = tiles.bytes.as_ptr().add(tile * tiles.tile_bytes);
        let tdx = tiles.dx.as_ptr().add(tile * tiles.tile_floats);
        let tsc = if F::HAS_MIN { tiles.scaled.as_ptr().add(tile * tiles.tile_floats) } else { tdx };
        for q in 0..count {
            let o0 = first + q * NR;
            let nr = NR.min(n - o0);
            let acc = tile_product::<F>(panels.as_ptr().add(q * panel_bytes), groups, tb, tdx, tsc);
            for (r, pair) in acc.iter().enumerate().take(mr) {
                store_row_pair(out.get().add((t + r) * n + o0), nr, *pair, accumulate);
            }
        }
        t += MR;
    }
}

/// One MR × NR tile over every group: integer dots per group, scaled into f32 sums.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn tile_product<F: Format>(
    panel: *const u8,
    groups: usize,
    tb: *const u8,
    tdx: *const f32,
    tsc: *const f32,
) -> [[__m512; 2]; MR] {
    let mut f = [[_mm512_setzero_ps(); 2]; MR];
    let gb = group_bytes(F::GROUP, F::HAS_MIN);
    for g in 0..groups {
        let p = panel.add(g * gb);
        let floats = p.add(F::GROUP * NR);
        let start = [_mm512_loadu_si512(floats.cast()), _mm512_loadu_si512(floats.add(64).cast())];
        let mut acc = [start; MR];
        let bytes = tb.add(g * F::GROUP * MR);
        for s in 0..F::GROUP / 4 {
            let w0 = _mm512_loadu_si512(p.add(s * NR * 4).cast());
            let w1 = _mm512_loadu_si512(p.add(s * NR * 4 + 64).cast());
            for (t, pair) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_epi32(bytes.add((s * MR + t) * 4).cast::<i32>().read_unaligned());
                pair[0] = _mm512_dpbusd_epi32(pair[0], x, w0);
                pair[1] = _mm512_dpbusd_epi32(pair[1], x, w1);
            }
        }
        let d = [_mm512_loadu_ps(floats.add(4 * NR).cast()), _mm512_loadu_ps(floats.add(4 * NR + 64).cast())];
        for (t, (sums, pair)) in f.iter_mut().zip(&acc).enumerate() {
            let dx = _mm512_set1_ps(*tdx.add(g * MR + t));
            for h in 0..2 {
                sums[h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pair[h]), _mm512_mul_ps(d[h], dx), sums[h]);
            }
        }
        if F::HAS_MIN {
            let m = [_mm512_loadu_ps(floats.add(8 * NR).cast()), _mm512_loadu_ps(floats.add(8 * NR + 64).cast())];
            for (t, sums) in f.iter_mut().enumerate() {
                let s = _mm512_set1_ps(*tsc.add(g * MR + t));
                for h in 0..2 {
                    sums[h] = _mm512_fmadd_ps(m[h], s, sums[h]);
                }
            }
        }
    }
    f
}
