//! One-row dots of the 4-, 5- and 6-bit types with the 8-bit activation on AVX-512 BW + VNNI: 64
//! values per 512-bit step instead of the AVX2 kernels' 32, and no scalar work per sub-block.
//!
//! * Q4_0, Q4_1, Q5_0, Q5_1: two 32-value blocks per vector, one `vpdpbusd`. The AVX2 kernels ran
//!   at ~10 GB/s per thread (a third of Q8_0's values per second): one block per step, each with
//!   its own scale broadcast, nibble unpacking and, for Q5, a byte shuffle of the fifth bits. Here
//!   the fifth bits are a 64-bit byte mask (the two blocks' `qh` words), the −8 / −16 offset starts
//!   the integer sums (from the activation's per-block Σq, computed once per call), and both
//!   blocks' scales are one `vcvtph2ps`.
//! * Q4_K, Q5_K, Q6_K: the AVX2 kernels (`x86`) decode each sub-block's 6-bit scale and minimum in
//!   scalar code, move it into a vector with a broadcast from a general register, and add the
//!   minimum terms one multiply at a time: at ~180 instructions per 256 values they were
//!   compute-bound at ~15 GB/s, half the read bandwidth, so k-quant decode ran slower than Q8_0's on
//!   fewer bytes. Here the 12 packed scale bytes are unpacked with three word operations (ggml's
//!   `utmp` trick), the scale vectors are permutes of one register, `vpdpwssd` applies them while
//!   accumulating, and the minimum (Q4_K, Q5_K) or −32 offset (Q6_K) terms are one 16-lane multiply
//!   with the activation's per-16 sums.
//!
//! Integer sums are exact, so only the f32 accumulation order differs from the AVX2 kernels.

use std::arch::x86_64::*;

use super::activation::{QuantizedActivation, SUM_SPAN};
use crate::loader::QuantKind;

/// Whether these kernels run here (AVX-512 F/BW/VL and VNNI; the caller checks the SIMD level).
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// Whether `kind` has a kernel here (Q8_0's AVX2 kernel already streams at the read bandwidth).
pub(super) fn has_kernel(kind: QuantKind) -> bool {
    kind != QuantKind::Q8_0
}

/// `out[r] (+)= row r of w · act` for the k-quant `act.kind()`.
/// Safety: the SIMD level is AVX-512, [`available`] and [`has_kernel`] hold; `w` is `out.len()` whole rows of `act.len()`
/// values of `act.kind()` (checked by `quant::rows`).
pub(super) unsafe fn rows(act: &QuantizedActivation, w: &[u8], out: &mut [f32], accumulate: bool) {
    match act.kind() {
        QuantKind::Q4_0 => rows_legacy::<false, false>(act, w, out, accumulate),
        QuantKind::Q4_1 => rows_legacy::<true, false>(act, w, out, accumulate),
        QuantKind::Q5_0 => rows_legacy::<false, true>(act, w, out, accumulate),
        QuantKind::Q5_1 => rows_legacy::<true, true>(act, w, out, accumulate),
        QuantKind::Q4K => rows_k4::<false>(act, w, out, accumulate),
        QuantKind::Q5K => rows_k4::<true>(act, w, out, accumulate),
        QuantKind::Q6K => rows_q6k(act, w, out, accumulate),
        other => unreachable!("no AVX-512 k-quant kernel for {}", other.name()),
    }
}

/// Weight bytes ahead of the kernel to prefetch (the same distance as the AVX2 kernels').
const PREFETCH_AHEAD_BYTES: usize = 1024;

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes([*p, *p.add(1)]) as i32)))
}

#[inline(always)]
unsafe fn u16_at(p: *const u8) -> u32 {
    u16::from_le_bytes([*p, *p.add(1)]) as u32
}

#[inline(always)]
unsafe fn u32_at(p: *const u8) -> u32 {
    u32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)])
}

/// Q4_0 / Q4_1 / Q5_0 / Q5_1 rows (`MIN`: the types with a minimum, `FIVE`: with `qh`). Each block
/// is its scale (and minimum) as f16, the fifth bits of its 32 values (bit j for value j), and 16
/// bytes of nibbles: values 0..16 in the low nibbles, 16..32 in the high ones.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn rows_legacy<const MIN: bool, const FIVE: bool>(
    act: &QuantizedActivation,
    w: &[u8],
    out: &mut [f32],
    accumulate: bool,
) {
    const ELEMS: usize = 32;
    let bytes = 18 + 2 * MIN as usize + 4 * FIVE as usize;
    let (qh_at, qs_at) = (2 + 2 * MIN as usize, 2 + 2 * MIN as usize + 4 * FIVE as usize);
    let blocks = act.len() / ELEMS;
    let row_bytes = blocks * bytes;
    let pairs = blocks.div_ceil(2);
    // Per pair of blocks, where its integer sums start: Q4_0 / Q5_0 store value + 8 / + 16, so
    // −8 / −16 · Σq of each block (lanes 0 and 8, whose sums are that block's) makes them the dot of
    // the signed values. The activation's, so once per call.
    let offset = if FIVE { 16 } else { 8 };
    let starts: Vec<[i32; 16]> = (0..if MIN { 0 } else { pairs })
        .map(|p| {
            let mut lanes = [0i32; 16];
            for (half, b) in (2 * p..(2 * p + 2).min(blocks)).enumerate() {
                let s = &act.sums[b * (ELEMS / SUM_SPAN)..][..ELEMS / SUM_SPAN];
                lanes[8 * half] = -offset * s.iter().sum::<i32>();
            }
            lanes
        })
        .collect();
    let shape = Legacy { bytes, qh_at, qs_at, starts: &starts };
    for (r, o) in out.iter_mut().enumerate() {
        let row = w.as_ptr().add(r * row_bytes);
        let mut sums = (_mm512_setzero_ps(), _mm512_setzero_ps(), _mm_setzero_ps());
        let whole = blocks / 4 * 4;
        for g in (0..whole).step_by(4) {
            legacy_step::<MIN, FIVE, 4>(&shape, act, row, g, &mut sums);
        }
        match blocks - whole {
            1 => legacy_step::<MIN, FIVE, 1>(&shape, act, row, whole, &mut sums),
            2 => legacy_step::<MIN, FIVE, 2>(&shape, act, row, whole, &mut sums),
            3 => legacy_step::<MIN, FIVE, 3>(&shape, act, row, whole, &mut sums),
            _ => {}
        }
        let (acc0, acc1, mins) = sums;
        let m = _mm_add_ps(mins, _mm_movehl_ps(mins, mins));
        let s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) + _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)));
        *o = if accumulate { *o + s } else { s };
    }
}

/// A legacy type's block layout, and the per-pair integer starts of [`rows_legacy`].
struct Legacy<'a> {
    bytes: usize,
    qh_at: usize,
    qs_at: usize,
    starts: &'a [[i32; 16]],
}

/// `N` (1..=4) blocks from block `g` of `row` into the two pair accumulators and the minimum terms:
/// their scales converted together, each pair one `vpdpbusd`.
#[inline(always)]
unsafe fn legacy_step<const MIN: bool, const FIVE: bool, const N: usize>(
    shape: &Legacy,
    act: &QuantizedActivation,
    row: *const u8,
    g: usize,
    sums: &mut (__m512, __m512, __m128),
) {
    let bytes = shape.bytes;
    let b = row.add(g * bytes);
    _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PREFETCH_AHEAD_BYTES).cast());
    _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PREFETCH_AHEAD_BYTES + 64).cast());
    // N f16 at `at`, `at + bytes`, … as f32 lanes (0 past N).
    let f16s = |at: *const u8| {
        let mut h = 0u64;
        for i in 0..N {
            h |= (u16_at(at.add(i * bytes)) as u64) << (16 * i);
        }
        _mm_cvtph_ps(_mm_cvtsi64_si128(h as i64))
    };
    let f32s = |v: &[f32]| {
        if N == 4 {
            _mm_loadu_ps(v.as_ptr().add(g))
        } else {
            _mm_maskz_loadu_ps((1u8 << N) - 1, v.as_ptr().add(g))
        }
    };
    let scale = _mm512_castps128_ps512(_mm_mul_ps(f16s(b), f32s(&act.d)));
    if MIN {
        // m · (dx · Σq) per block: the activation's scaled sums are per 32 values.
        sums.2 = _mm_fmadd_ps(f16s(b.add(2)), f32s(&act.scaled_sums), sums.2);
    }
    let low4 = _mm512_set1_epi8(0x0f);
    let nibbles = |t: __m128i| _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(t), _mm_srli_epi16::<4>(t));
    for h in 0..N.div_ceil(2) {
        let two = 2 * h + 1 < N;
        let b0 = b.add(2 * h * bytes);
        let b1 = b0.add(bytes);
        // The pair's 64 weight bytes: each block's low then high nibbles, the fifth bits added.
        let first = nibbles(_mm_loadu_si128(b0.add(shape.qs_at).cast()));
        let second = if two { nibbles(_mm_loadu_si128(b1.add(shape.qs_at).cast())) } else { _mm256_setzero_si256() };
        let mut wv = _mm512_and_si512(_mm512_inserti64x4::<1>(_mm512_castsi256_si512(first), second), low4);
        if FIVE {
            let high = if two { (u32_at(b1.add(shape.qh_at)) as u64) << 32 } else { 0 };
            wv = _mm512_mask_add_epi8(wv, u32_at(b0.add(shape.qh_at)) as u64 | high, wv, _mm512_set1_epi8(16));
        }
        let q = act.q.as_ptr().add((g + 2 * h) * 32);
        let x = if two { _mm512_loadu_si512(q.cast()) } else { _mm512_maskz_loadu_epi8(u32::MAX as u64, q) };
        let start =
            if MIN { _mm512_setzero_si512() } else { _mm512_loadu_si512(shape.starts[g / 2 + h].as_ptr().cast()) };
        let dot = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(start, wv, x));
        // Lanes 0..8 of a pair's sums belong to its first block, 8..16 to the second.
        let lanes = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        let lanes = _mm512_add_epi32(lanes, _mm512_set1_epi32(2 * h as i32));
        let scaled = _mm512_permutexvar_ps(lanes, scale);
        if h == 0 {
            sums.0 = _mm512_fmadd_ps(scaled, dot, sums.0);
        } else {
            sums.1 = _mm512_fmadd_ps(scaled, dot, sums.1);
        }
    }
}

/// The 8 scales and 8 minimums (6 bits each) packed in 12 bytes, as two 8-byte words (ggml's
/// `get_scale_min_k4` for every sub-block at once).
#[inline(always)]
fn k4_scales_mins(s: *const u8) -> (u64, u64) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    // SAFETY (of the reads): the caller's block holds the 12 scale bytes at `s`.
    let (u0, u1, u2) = unsafe { (u32_at(s), u32_at(s.add(4)), u32_at(s.add(8))) };
    let scales = (u0 & LOW6) as u64 | ((((u2 & LOW4) | (((u0 >> 6) & LOW2) << 4)) as u64) << 32);
    let mins = (u1 & LOW6) as u64 | (((((u2 >> 4) & LOW4) | (((u1 >> 6) & LOW2) << 4)) as u64) << 32);
    (scales, mins)
}

/// Q4_K / Q5_K rows: per 64 values, 32 bytes of nibbles (low nibbles: values 0..32 of scale 2c,
/// high: 32..64 of scale 2c + 1) become one 64-byte vector; Q5_K's fifth bits (bits 2c / 2c + 1 of
/// its 32 `qh` bytes) are or-ed in under a byte mask.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn rows_k4<const FIVE: bool>(act: &QuantizedActivation, w: &[u8], out: &mut [f32], accumulate: bool) {
    const ELEMS: usize = 256;
    let bytes = if FIVE { 176 } else { 144 };
    let blocks = act.len() / ELEMS;
    let row_bytes = blocks * bytes;
    let low4 = _mm512_set1_epi8(0x0f);
    let fifth = _mm512_set1_epi8(0x10);
    // Per chunk c: sub-block 2c's bytes take lanes 0..16 of the i16 products, 2c + 1's lanes 16..32.
    let pick: [[i16; 32]; 4] = std::array::from_fn(|c| std::array::from_fn(|l| (2 * c + l / 16) as i16));
    // Q5_K: the qh bit of each half of chunk c.
    let bit: [[u8; 64]; 4] = std::array::from_fn(|c| std::array::from_fn(|l| 1u8 << (2 * c + l / 32)));
    // Lane l of the per-16 sums belongs to sub-block l / 2.
    let pair = _mm_set_epi8(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    for (r, o) in out.iter_mut().enumerate() {
        let row = w.as_ptr().add(r * row_bytes);
        let (mut acc, mut mins_acc) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for i in 0..blocks {
            let b = row.add(i * bytes);
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PREFETCH_AHEAD_BYTES).cast());
            let q = act.q.as_ptr().add(i * ELEMS);
            let d = *act.d.get_unchecked(i);
            let (scales, mins) = k4_scales_mins(b.add(4));
            let scales16 = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_cvtsi64_si128(scales as i64)));
            let (qh, qs) = if FIVE { (b.add(16), b.add(48)) } else { (b, b.add(16)) };
            let hb = if FIVE {
                let h = _mm256_loadu_si256(qh.cast());
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(h), h)
            } else {
                _mm512_setzero_si512()
            };
            let mut total = _mm512_setzero_si512();
            for c in 0..4 {
                let packed = _mm256_loadu_si256(qs.add(32 * c).cast());
                let both = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(packed), _mm256_srli_epi16::<4>(packed));
                let mut wv = _mm512_and_si512(both, low4);
                if FIVE {
                    let set = _mm512_test_epi8_mask(hb, _mm512_loadu_si512(bit[c].as_ptr().cast()));
                    wv = _mm512_mask_add_epi8(wv, set, wv, fifth); // + 16 on a nibble: the fifth bit
                }
                let prod = _mm512_maddubs_epi16(wv, _mm512_loadu_si512(q.add(64 * c).cast()));
                let sc = _mm512_permutexvar_epi16(_mm512_loadu_si512(pick[c].as_ptr().cast()), scales16);
                total = _mm512_dpwssd_epi32(total, prod, sc);
            }
            let mins32 = _mm512_cvtepu8_epi32(_mm_shuffle_epi8(_mm_cvtsi64_si128(mins as i64), pair));
            let sums = _mm512_loadu_si512(act.sums.as_ptr().add(i * (ELEMS / SUM_SPAN)).cast());
            let min_terms = _mm512_mullo_epi32(mins32, sums);
            acc = _mm512_fmadd_ps(_mm512_set1_ps(f16_at(b) * d), _mm512_cvtepi32_ps(total), acc);
            mins_acc = _mm512_fmadd_ps(_mm512_set1_ps(f16_at(b.add(2)) * d), _mm512_cvtepi32_ps(min_terms), mins_acc);
        }
        let s = _mm512_reduce_add_ps(acc) - _mm512_reduce_add_ps(mins_acc);
        *o = if accumulate { *o + s } else { s };
    }
}

/// Q6_K rows: per 128 values, 64 `ql` bytes (low nibbles: values 0..64, high: 64..128) and 32 `qh`
/// bytes (two bits per value) make two 64-value vectors of unsigned 6-bit values; the −32 offset
/// comes from the per-16 sums times the 16 signed scales.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn rows_q6k(act: &QuantizedActivation, w: &[u8], out: &mut [f32], accumulate: bool) {
    const ELEMS: usize = 256;
    const BYTES: usize = 210;
    let blocks = act.len() / ELEMS;
    let row_bytes = blocks * BYTES;
    let (low4, two_bits) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi8(0x30));
    // Vector j (values 64j .. 64j + 64) takes scales 4j .. 4j + 4, one per 16 values (8 i16 lanes).
    let pick: [[i16; 32]; 4] = std::array::from_fn(|j| std::array::from_fn(|l| (4 * j + l / 8) as i16));
    // Values 0..32 of a 64-value vector take qh bits 0–1 (low nibbles) or 4–5 (high), 32..64 bits
    // 2–3 or 6–7: shifted (16-bit lanes) to bits 4–5 of their byte.
    let up: [i16; 32] = std::array::from_fn(|l| if l < 16 { 4 } else { 2 });
    let down: [i16; 32] = std::array::from_fn(|l| if l < 16 { 0 } else { 2 });
    let (up, down) = (_mm512_loadu_si512(up.as_ptr().cast()), _mm512_loadu_si512(down.as_ptr().cast()));
    for (r, o) in out.iter_mut().enumerate() {
        let row = w.as_ptr().add(r * row_bytes);
        let mut acc = _mm512_setzero_ps();
        for i in 0..blocks {
            let b = row.add(i * BYTES);
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PREFETCH_AHEAD_BYTES).cast());
            let q = act.q.as_ptr().add(i * ELEMS);
            let d = *act.d.get_unchecked(i);
            let scale_bytes = _mm_loadu_si128(b.add(192).cast());
            let scales16 = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(scale_bytes));
            let mut total = _mm512_setzero_si512();
            for h in 0..2 {
                let ql = _mm512_loadu_si512(b.add(64 * h).cast());
                let qh = _mm256_loadu_si256(b.add(128 + 32 * h).cast());
                let qh = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), qh);
                let lo =
                    _mm512_or_si512(_mm512_and_si512(ql, low4), _mm512_and_si512(_mm512_sllv_epi16(qh, up), two_bits));
                let hi = _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(ql), low4),
                    _mm512_and_si512(_mm512_srlv_epi16(qh, down), two_bits),
                );
                for (j, part) in [(2 * h, lo), (2 * h + 1, hi)] {
                    let prod = _mm512_maddubs_epi16(part, _mm512_loadu_si512(q.add(64 * j).cast()));
                    let sc = _mm512_permutexvar_epi16(_mm512_loadu_si512(pick[j].as_ptr().cast()), scales16);
                    total = _mm512_dpwssd_epi32(total, prod, sc);
                }
            }
            let sums = _mm512_loadu_si512(act.sums.as_ptr().add(i * (ELEMS / SUM_SPAN)).cast());
            let offset = _mm512_slli_epi32::<5>(_mm512_mullo_epi32(_mm512_cvtepi8_epi32(scale_bytes), sums));
            let total = _mm512_sub_epi32(total, offset);
            acc = _mm512_fmadd_ps(_mm512_set1_ps(f16_at(b.add(208)) * d), _mm512_cvtepi32_ps(total), acc);
        }
        let s = _mm512_reduce_add_ps(acc);
        *o = if accumulate { *o + s } else { s };
    }
}
