//! AVX2 integer dots of weight blocks with the 8-bit activation, as llama.cpp's `ggml_vec_dot_*`:
//! 32 weights unpacked to bytes in one register, `vpmaddubsw` (u8 × i8 → pairs of i16) and
//! `vpmaddwd` (→ i32), the block's i32 sums scaled once into an f32 vector accumulator; the
//! minimum terms of Q4_1 / Q5_1 / Q4_K / Q5_K and Q6_K's −32 offset come from the activation's
//! per-16 sums. Signed weights (Q8_0, Q4_0, Q5_0) use the sign trick (|w| × sign(w)·x). Products
//! stay far from i16 saturation: |u8| ≤ 128 (or ≤ 63 unpacked) × |i8| ≤ 127, two per pair.
//! The AVX-512 level runs these same 256-bit kernels (compiled with its features); where the CPU also
//! has AVX-512 BW + VNNI, every type but Q8_0 runs the 512-bit kernels of `x86_wide` instead (1.3–2.3×
//! these with the weights in cache), and Q8_0's u8 × i8 → i32 step is one `vpdpbusd`.

use std::arch::x86_64::*;

use super::activation::{QuantizedActivation, SUM_SPAN};
use super::formats::scale_min;
use crate::loader::QuantKind;

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes([*p, *p.add(1)]) as i32)))
}

#[inline(always)]
unsafe fn ones16() -> __m256i {
    _mm256_set1_epi16(1)
}

/// Σ of each 4 u8 × i8 products into 8 × i32 (`VNNI`: one `vpdpbusd`; the caller's copy has AVX-512
/// VNNI + VL enabled).
#[inline(always)]
unsafe fn dot_u8_i8<const VNNI: bool>(u: __m256i, x: __m256i) -> __m256i {
    if VNNI {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, x)
    } else {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), ones16())
    }
}

/// Σ of i8 × i8 products into 8 × i32 (|w| as u8 times x with w's sign).
#[inline(always)]
unsafe fn dot_i8_i8<const VNNI: bool>(w: __m256i, x: __m256i) -> __m256i {
    dot_u8_i8::<VNNI>(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
}

/// 16 bytes of nibbles → 32 bytes: low nibbles in bytes 0..16, high nibbles in 16..32 (ggml's order).
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let t = _mm_loadu_si128(p.cast());
    let both = _mm256_set_m128i(_mm_srli_epi16::<4>(t), t);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
}

/// Bit i of the 32-bit little-endian word at `p` as byte i: 0xff when set, 0 otherwise.
#[inline(always)]
unsafe fn bits_to_bytes(p: *const u8) -> __m256i {
    let word = i32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)]);
    let shuffle = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(word), shuffle);
    let all_but_own_bit = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe_u64 as i64);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, all_but_own_bit), _mm256_set1_epi64x(-1))
}

#[inline(always)]
unsafe fn load(p: *const impl Sized) -> __m256i {
    _mm256_loadu_si256(p.cast())
}

/// One block's dot: `acc += (i32 sums as f32) · scale` in lanes, `extra +=` the scalar terms.
trait Kernel {
    const ELEMS: usize;
    const BYTES: usize;
    /// Whether rows run two at a time (measured faster for the 4- and 5-bit legacy types; not for
    /// Q8_0, whose block already keeps the ports busy, nor the k-quants' 256-value blocks).
    const PAIRED: bool = false;
    unsafe fn block<const VNNI: bool>(
        b: *const u8,
        q: *const i8,
        d: f32,
        sums: *const i32,
        scaled_sum: *const f32,
        acc: &mut __m256,
        extra: &mut f32,
    );
}

struct Q8_0;
struct Q4_0;
struct Q4_1;
struct Q5_0;
struct Q5_1;
struct Q4K;
struct Q5K;
struct Q6K;

impl Kernel for Q8_0 {
    const ELEMS: usize = 32;
    const BYTES: usize = 34;
    #[inline(always)]
    unsafe fn block<const VNNI: bool>(
        b: *const u8,
        q: *const i8,
        d: f32,
        _: *const i32,
        _: *const f32,
        acc: &mut __m256,
        _: &mut f32,
    ) {
        let s = dot_i8_i8::<VNNI>(load(b.add(2)), load(q));
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b) * d), _mm256_cvtepi32_ps(s), *acc);
    }
}

impl Kernel for Q4_0 {
    const ELEMS: usize = 32;
    const PAIRED: bool = true;
    const BYTES: usize = 18;
    #[inline(always)]
    unsafe fn block<const VNNI: bool>(
        b: *const u8,
        q: *const i8,
        d: f32,
        _: *const i32,
        _: *const f32,
        acc: &mut __m256,
        _: &mut f32,
    ) {
        let w = _mm256_sub_epi8(nibbles(b.add(2)), _mm256_set1_epi8(8));
        let s = dot_i8_i8::<VNNI>(w, load(q));
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b) * d), _mm256_cvtepi32_ps(s), *acc);
    }
}

impl Kernel for Q4_1 {
    const ELEMS: usize = 32;
    const PAIRED: bool = true;
    const BYTES: usize = 20;
    #[inline(always)]
    unsafe fn block<const VNNI: bool>(
        b: *const u8,
        q: *const i8,
        d: f32,
        _: *const i32,
        scaled_sum: *const f32,
        acc: &mut __m256,
        extra: &mut f32,
    ) {
        let s = dot_u8_i8::<VNNI>(nibbles(b.add(4)), load(q));
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b) * d), _mm256_cvtepi32_ps(s), *acc);
        *extra += f16_at(b.add(2)) * *scaled_sum;
    }
}

impl Kernel for Q5_0 {
    const ELEMS: usize = 32;
    const PAIRED: bool = true;
    const BYTES: usize = 22;
    #[inline(always)]
    unsafe fn block<const VNNI: bool>(
        b: *const u8,
        q: *const i8,
        d: f32,
        _: *const i32,
        _: *const f32,
        acc: &mut __m256,
        _: &mut f32,
    ) {
        // value − 16: the nibble with 0xf0 or-ed in (−16 as i8) where the fifth bit is clear.
        let high_clear = _mm256_andnot_si256(bits_to_bytes(b.add(2)), _mm256_set1_epi8(0xf0_u8 as i8));
        let w = _mm256_or_si256(nibbles(b.add(6)), high_clear);
        let s = dot_i8_i8::<VNNI>(w, load(q));
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b) * d), _mm256_cvtepi32_ps(s), *acc);
    }
}

impl Kernel for Q5_1 {
    const ELEMS: usize = 32;
    const PAIRED: bool = true;
    const BYTES: usize = 24;
    #[inline(always)]
    unsafe fn block<const VNNI: bool>(
        b: *const u8,
        q: *const i8,
        d: f32,
        _: *const i32,
        scaled_sum: *const f32,
        acc: &mut __m256,
        extra: &mut f32,
    ) {
        let high = _mm256_and_si256(bits_to_bytes(b.add(4)), _mm256_set1_epi8(0x10));
        let s = dot_u8_i8::<VNNI>(_mm256_or_si256(nibbles(b.add(8)), high), load(q));
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b) * d), _mm256_cvtepi32_ps(s), *acc);
        *extra += f16_at(b.add(2)) * *scaled_sum;
    }
}

/// Q4_K / Q5_K: per 64 values, 32 bytes of nibbles (low: values 0..32 with scale 2c, high: 32..64
/// with scale 2c + 1), Q5_K's fifth bits from bits 2c / 2c + 1 of its 32 `qh` bytes.
#[inline(always)]
unsafe fn k4_block<const FIVE: bool>(
    b: *const u8,
    q: *const i8,
    d: f32,
    sums: *const i32,
    _: *const f32,
    acc: &mut __m256,
    extra: &mut f32,
) {
    let scales: &[u8; 12] = &*b.add(4).cast();
    let (qh, qs) = if FIVE { (b.add(16), b.add(48)) } else { (b, b.add(16)) };
    let low = _mm256_set1_epi8(0x0f);
    let mut hb = if FIVE { load(qh) } else { _mm256_setzero_si256() };
    let (mut total, mut mins) = (_mm256_setzero_si256(), 0i32);
    for c in 0..4 {
        let (sc0, m0) = scale_min(2 * c, scales);
        let (sc1, m1) = scale_min(2 * c + 1, scales);
        let packed = load(qs.add(32 * c));
        let mut lo = _mm256_and_si256(packed, low);
        let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(packed), low);
        if FIVE {
            let one = _mm256_set1_epi8(1);
            lo = _mm256_or_si256(lo, _mm256_slli_epi16::<4>(_mm256_and_si256(hb, one)));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16::<3>(_mm256_and_si256(hb, _mm256_set1_epi8(2))));
            hb = _mm256_srli_epi16::<2>(hb);
        }
        let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load(q.add(64 * c))), _mm256_set1_epi16(sc0 as i16));
        let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load(q.add(64 * c + 32))), _mm256_set1_epi16(sc1 as i16));
        total = _mm256_add_epi32(total, _mm256_add_epi32(p0, p1));
        let span = |i: usize| *sums.add(i) + *sums.add(i + 1);
        mins += m0 as i32 * span(4 * c) + m1 as i32 * span(4 * c + 2);
    }
    *acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b) * d), _mm256_cvtepi32_ps(total), *acc);
    *extra -= f16_at(b.add(2)) * d * mins as f32;
}

impl Kernel for Q4K {
    const ELEMS: usize = 256;
    const BYTES: usize = 144;
    #[inline(always)]
    unsafe fn block<const VNNI: bool>(
        b: *const u8,
        q: *const i8,
        d: f32,
        sums: *const i32,
        scaled_sum: *const f32,
        acc: &mut __m256,
        extra: &mut f32,
    ) {
        k4_block::<false>(b, q, d, sums, scaled_sum, acc, extra)
    }
}

impl Kernel for Q5K {
    const ELEMS: usize = 256;
    const BYTES: usize = 176;
    #[inline(always)]
    unsafe fn block<const VNNI: bool>(
        b: *const u8,
        q: *const i8,
        d: f32,
        sums: *const i32,
        scaled_sum: *const f32,
        acc: &mut __m256,
        extra: &mut f32,
    ) {
        k4_block::<true>(b, q, d, sums, scaled_sum, acc, extra)
    }
}

impl Kernel for Q6K {
    const ELEMS: usize = 256;
    const BYTES: usize = 210;
    /// Unsigned 6-bit values (q, not q − 32) times x, scaled per 16; the −32 · scale · Σx terms from
    /// the per-16 sums.
    #[inline(always)]
    unsafe fn block<const VNNI: bool>(
        b: *const u8,
        q: *const i8,
        d: f32,
        sums: *const i32,
        _: *const f32,
        acc: &mut __m256,
        _: &mut f32,
    ) {
        let scales = b.add(192).cast::<i8>();
        let (low, three) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(3));
        let mut total = _mm256_setzero_si256();
        for h in 0..2 {
            let (ql0, ql1, qh) = (load(b.add(64 * h)), load(b.add(64 * h + 32)), load(b.add(128 + 32 * h)));
            let parts = [
                _mm256_or_si256(_mm256_and_si256(ql0, low), _mm256_slli_epi16::<4>(_mm256_and_si256(qh, three))),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, low),
                    _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<2>(qh), three)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low),
                    _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<4>(qh), three)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low),
                    _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<6>(qh), three)),
                ),
            ];
            for (i, part) in parts.into_iter().enumerate() {
                let s = 8 * h + 2 * i;
                let sc =
                    _mm256_set_m128i(_mm_set1_epi16(*scales.add(s + 1) as i16), _mm_set1_epi16(*scales.add(s) as i16));
                let prod = _mm256_maddubs_epi16(part, load(q.add(128 * h + 32 * i)));
                total = _mm256_add_epi32(total, _mm256_madd_epi16(prod, sc));
            }
        }
        let offset: i32 = (0..16).map(|s| *scales.add(s) as i32 * *sums.add(s)).sum();
        let scale = _mm256_set1_ps(f16_at(b.add(208)) * d);
        let total = _mm256_sub_epi32(total, _mm256_set_epi32(0, 0, 0, 0, 0, 0, 0, 32 * offset));
        *acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(total), *acc);
    }
}

/// Weight bytes ahead of the kernel to prefetch into L1 (the rows are one sequential stream).
const PREFETCH_AHEAD_BYTES: usize = 1024;

/// Prefetches the cache line `PREFETCH_AHEAD_BYTES` past `p` (a hint: never faults, even past the end).
#[inline(always)]
unsafe fn prefetch(p: *const u8) {
    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD_BYTES).cast());
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
    _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)))
}

/// Safety: AVX2 + FMA + F16C; `w` holds `out.len()` rows of `act.len()` values of `K`'s blocks and
/// `act` is quantized for `K` (checked by the caller, `super::rows`).
#[inline(always)]
unsafe fn rows_body<K: Kernel, const VNNI: bool>(
    act: &QuantizedActivation,
    w: &[u8],
    out: &mut [f32],
    accumulate: bool,
) {
    let blocks = act.len() / K::ELEMS;
    let row_bytes = blocks * K::BYTES;
    let sums_per_block = K::ELEMS / SUM_SPAN;
    let block = |row: *const u8, i: usize, acc: &mut __m256, extra: &mut f32| {
        K::block::<VNNI>(
            row.add(i * K::BYTES),
            act.q.as_ptr().add(i * K::ELEMS),
            *act.d.get_unchecked(i),
            act.sums.as_ptr().add(i * sums_per_block),
            act.scaled_sums.as_ptr().add(i * K::ELEMS / 32),
            acc,
            extra,
        )
    };
    let finish = |acc: __m256, extra: f32, o: &mut f32| {
        let s = hsum(acc) + extra;
        *o = if accumulate { *o + s } else { s };
    };
    // Two rows side by side: independent dependency chains, each activation block read once
    // (Q4_1 ~30 %, Q5_0 ~2× faster).
    let paired = if K::PAIRED { out.len() / 2 } else { 0 };
    for (rows, o) in w.chunks_exact(2 * row_bytes).zip(out.chunks_exact_mut(2)).take(paired) {
        let (r0, r1) = (rows.as_ptr(), rows.as_ptr().add(row_bytes));
        let (mut a0, mut a1, mut e0, mut e1) = (_mm256_setzero_ps(), _mm256_setzero_ps(), 0f32, 0f32);
        for i in 0..blocks {
            prefetch(r0.add(i * K::BYTES));
            prefetch(r1.add(i * K::BYTES));
            block(r0, i, &mut a0, &mut e0);
            block(r1, i, &mut a1, &mut e1);
        }
        finish(a0, e0, &mut o[0]);
        finish(a1, e1, &mut o[1]);
    }
    for (r, o) in out.iter_mut().enumerate().skip(2 * paired) {
        // Two accumulators over alternate blocks: independent FMA chains.
        let (mut acc, mut acc1, mut extra) = (_mm256_setzero_ps(), _mm256_setzero_ps(), 0f32);
        let row = w.as_ptr().add(r * row_bytes);
        let mut i = 0;
        while i + 1 < blocks {
            prefetch(row.add(i * K::BYTES));
            block(row, i, &mut acc, &mut extra);
            block(row, i + 1, &mut acc1, &mut extra);
            i += 2;
        }
        if i < blocks {
            block(row, i, &mut acc, &mut extra);
        }
        finish(_mm256_add_ps(acc, acc1), extra, o);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_avx2<K: Kernel>(act: &QuantizedActivation, w: &[u8], out: &mut [f32], accumulate: bool) {
    rows_body::<K, false>(act, w, out, accumulate)
}

#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn rows_avx512<K: Kernel>(act: &QuantizedActivation, w: &[u8], out: &mut [f32], accumulate: bool) {
    rows_body::<K, false>(act, w, out, accumulate)
}

#[target_feature(enable = "avx512f,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn rows_vnni<K: Kernel>(act: &QuantizedActivation, w: &[u8], out: &mut [f32], accumulate: bool) {
    rows_body::<K, true>(act, w, out, accumulate)
}

/// Whether this CPU has AVX-512 VNNI with 256-bit forms (std caches the detection).
fn has_vnni() -> bool {
    is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")
}

/// The rows at AVX2 (or, `wide`, compiled for AVX-512, with VNNI where the CPU has it).
/// Safety: the CPU has AVX2 + FMA + F16C (and AVX-512F when `wide`); `w` is `out.len()` whole rows
/// of `act.len()` values of `act.kind()`.
pub(super) unsafe fn rows(wide: bool, act: &QuantizedActivation, w: &[u8], out: &mut [f32], accumulate: bool) {
    let vnni = wide && has_vnni();
    if vnni && super::x86_wide::has_kernel(act.kind()) && super::x86_wide::available() {
        // SAFETY: AVX-512 F/BW + VNNI just checked; the sizes are the caller's.
        return super::x86_wide::rows(act, w, out, accumulate);
    }
    macro_rules! go {
        ($k:ty) => {
            if vnni {
                rows_vnni::<$k>(act, w, out, accumulate)
            } else if wide {
                rows_avx512::<$k>(act, w, out, accumulate)
            } else {
                rows_avx2::<$k>(act, w, out, accumulate)
            }
        };
    }
    match act.kind() {
        QuantKind::Q8_0 => go!(Q8_0),
        QuantKind::Q4_0 => go!(Q4_0),
        QuantKind::Q4_1 => go!(Q4_1),
        QuantKind::Q5_0 => go!(Q5_0),
        QuantKind::Q5_1 => go!(Q5_1),
        QuantKind::Q4K => go!(Q4K),
        QuantKind::Q5K => go!(Q5K),
        QuantKind::Q6K => go!(Q6K),
    }
}
