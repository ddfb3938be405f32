//! AVX-512 dots of weight blocks with the f32 activation itself (no 8-bit rounding): each block's
//! integers widened to 16 × i32 (`vpmovzxbd` / `vpmovsxbd`), converted to f32 and multiplied into a
//! per-block f32 sum, scaled once by the block's `d`; the minimum terms use Σx per 32 values. On
//! AVX-512 this keeps up with the integer path (the conversions replace the activation's
//! quantization and the `vpmaddubsw` chain), so the product is the float one of the dequantized
//! weights at the same speed. Q5_K has no kernel here (`has_kernel`: the caller falls back).

use std::arch::x86_64::*;

use super::formats::scale_min;
use crate::loader::QuantKind;

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes([*p, *p.add(1)]) as i32)))
}

/// 16 bytes at `p` as 16 f32 lanes of their low nibbles and 16 of their high nibbles.
#[inline(always)]
unsafe fn nibbles_f32(p: *const u8) -> (__m512i, __m512i) {
    let v = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.cast()));
    (_mm512_and_si512(v, _mm512_set1_epi32(15)), _mm512_srli_epi32::<4>(v))
}

#[inline(always)]
unsafe fn x16(x: *const f32) -> __m512 {
    _mm512_loadu_ps(x)
}

/// Σ q·x over 32 values given as two 16-lane integer vectors (lanes 0..16, 16..32 of `x`).
#[inline(always)]
unsafe fn dot32(lo: __m512i, hi: __m512i, x: *const f32) -> __m512 {
    let p = _mm512_mul_ps(_mm512_cvtepi32_ps(lo), x16(x));
    _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), x16(x.add(16)), p)
}

/// Block `i` of a legacy-type row: (Σ q·x in lanes, the block's `d`, its scalar minimum term).
#[inline(always)]
unsafe fn legacy_block(kind: QuantKind, row: *const u8, i: usize, xp: *const f32, xsum: &[f32]) -> (__m512, f32, f32) {
    let x = xp.add(32 * i);
    match kind {
        QuantKind::Q8_0 => {
            let b = row.add(i * 34);
            let lo = _mm512_cvtepi8_epi32(_mm_loadu_si128(b.add(2).cast()));
            let hi = _mm512_cvtepi8_epi32(_mm_loadu_si128(b.add(18).cast()));
            (dot32(lo, hi, x), f16_at(b), 0.0)
        }
        QuantKind::Q4_0 => {
            let b = row.add(i * 18);
            let (lo, hi) = nibbles_f32(b.add(2));
            let eight = _mm512_set1_epi32(8);
            (dot32(_mm512_sub_epi32(lo, eight), _mm512_sub_epi32(hi, eight), x), f16_at(b), 0.0)
        }
        QuantKind::Q4_1 => {
            let b = row.add(i * 20);
            let (lo, hi) = nibbles_f32(b.add(4));
            (dot32(lo, hi, x), f16_at(b), f16_at(b.add(2)) * *xsum.get_unchecked(i))
        }
        QuantKind::Q5_0 | QuantKind::Q5_1 => {
            let with_min = kind == QuantKind::Q5_1;
            let (bytes, qh_at, qs) = if with_min { (24, 4, 8) } else { (22, 2, 6) };
            let b = row.add(i * bytes);
            let qh = (b.add(qh_at) as *const u32).read_unaligned().to_le();
            let (lo, hi) = nibbles_f32(b.add(qs));
            // The fifth bit of value j is bit j of qh: or 16 into the lanes whose bit is set.
            let sixteen = _mm512_set1_epi32(16);
            let lo = _mm512_mask_or_epi32(lo, qh as u16, lo, sixteen);
            let hi = _mm512_mask_or_epi32(hi, (qh >> 16) as u16, hi, sixteen);
            if with_min {
                (dot32(lo, hi, x), f16_at(b), f16_at(b.add(2)) * *xsum.get_unchecked(i))
            } else {
                (dot32(_mm512_sub_epi32(lo, sixteen), _mm512_sub_epi32(hi, sixteen), x), f16_at(b), 0.0)
            }
        }
        _ => unreachable!("{} is not a 32-value type", kind.name()),
    }
}

/// One row of `kind`'s blocks dotted with `x`; `xsum[i]` = Σ x over values 32i .. 32i + 32.
/// Safety: AVX-512F + F16C; `row` holds `x.len()` values of whole blocks.
#[inline(always)]
unsafe fn row_dot(kind: QuantKind, row: *const u8, x: &[f32], xsum: &[f32]) -> f32 {
    let xp = x.as_ptr();
    if kind == QuantKind::Q4K {
        return q4k_row_dot(row, x, xsum);
    }
    if kind == QuantKind::Q8_0 {
        return q8_0_row_dot(row, x);
    }
    // Two accumulators over alternate blocks: two independent dependency chains.
    let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let (mut extra0, mut extra1) = (0f32, 0f32);
    let n32 = x.len() / 32;
    let mut i = 0;
    let block_bytes = kind.block_bytes();
    while i + 1 < n32 {
        // The rows are one sequential stream: fetch 1 KiB ahead into L1 (a hint, never faults).
        _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(i * block_bytes + 1024).cast());
        let (p0, d0, e0) = legacy_block(kind, row, i, xp, xsum);
        let (p1, d1, e1) = legacy_block(kind, row, i + 1, xp, xsum);
        acc0 = _mm512_fmadd_ps(_mm512_set1_ps(d0), p0, acc0);
        acc1 = _mm512_fmadd_ps(_mm512_set1_ps(d1), p1, acc1);
        extra0 += e0;
        extra1 += e1;
        i += 2;
    }
    if i < n32 {
        let (p0, d0, e0) = legacy_block(kind, row, i, xp, xsum);
        acc0 = _mm512_fmadd_ps(_mm512_set1_ps(d0), p0, acc0);
        extra0 += e0;
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) + (extra0 + extra1)
}

/// Q8_0, eight blocks at a time: their f16 scales packed in general registers (scalar units the
/// vector loop leaves idle) and converted with one `vcvtph2ps`, then broadcast from memory into
/// the blocks' multiplies. One block's scale had taken three vector operations (insert, convert,
/// broadcast) beside its seven for the 32 values.
#[inline(always)]
unsafe fn q8_0_row_dot(row: *const u8, x: &[f32]) -> f32 {
    let xp = x.as_ptr();
    let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let n32 = x.len() / 32;
    let mut i = 0;
    let mut scales = [0f32; 8];
    while i + 8 <= n32 {
        let mut packed = [0u64; 2];
        for j in 0..8 {
            let at = row.add((i + j) * 34);
            packed[j / 4] |= (u16::from_le_bytes([*at, *at.add(1)]) as u64) << (16 * (j % 4));
        }
        let halves = _mm_set_epi64x(packed[1] as i64, packed[0] as i64);
        _mm256_storeu_ps(scales.as_mut_ptr(), _mm256_cvtph_ps(halves));
        // Read back through memory: kept in a register, each broadcast became two shuffles.
        let scales = std::hint::black_box(&scales);
        for j in (0..8).step_by(2) {
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add((i + j) * 34 + 1024).cast());
            let (p0, _, _) = legacy_block(QuantKind::Q8_0, row, i + j, xp, &[]);
            let (p1, _, _) = legacy_block(QuantKind::Q8_0, row, i + j + 1, xp, &[]);
            acc0 = _mm512_fmadd_ps(_mm512_set1_ps(scales[j]), p0, acc0);
            acc1 = _mm512_fmadd_ps(_mm512_set1_ps(scales[j + 1]), p1, acc1);
        }
        i += 8;
    }
    for i in i..n32 {
        let (p, d, _) = legacy_block(QuantKind::Q8_0, row, i, xp, &[]);
        acc0 = _mm512_fmadd_ps(_mm512_set1_ps(d), p, acc0);
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
}

/// Q4_K: per 64 values, 32 bytes of nibbles (low: values 0..32 with scale 2c, high: 32..64 with 2c + 1).
#[inline(always)]
unsafe fn q4k_row_dot(row: *const u8, x: &[f32], xsum: &[f32]) -> f32 {
    let xp = x.as_ptr();
    let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut extra = 0f32;
    for blk in 0..x.len() / 256 {
        let b = row.add(blk * 144);
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(1024).cast());
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(1024 + 64).cast());
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(1024 + 128).cast());
        let (d, dmin) = (f16_at(b), f16_at(b.add(2)));
        let scales: &[u8; 12] = &*(b.add(4) as *const [u8; 12]);
        for c in 0..4 {
            let (sc0, m0) = scale_min(2 * c, scales);
            let (sc1, m1) = scale_min(2 * c + 1, scales);
            let qs = b.add(16 + 32 * c);
            let xv = xp.add(256 * blk + 64 * c);
            let (lo_a, hi_a) = nibbles_f32(qs);
            let (lo_b, hi_b) = nibbles_f32(qs.add(16));
            acc0 = _mm512_fmadd_ps(_mm512_set1_ps(d * sc0 as f32), dot32(lo_a, lo_b, xv), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_set1_ps(d * sc1 as f32), dot32(hi_a, hi_b, xv.add(32)), acc1);
            let s = 8 * blk + 2 * c;
            extra -= dmin * (m0 as f32 * xsum[s] + m1 as f32 * xsum[s + 1]);
        }
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) + extra
}

const LANE_QUARTER: [i32; 16] = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3];

/// `x` reordered for [`q6k_row_dot`]: within each 64 values, lane `j` of vector `b` (0..4) holds
/// value `4j + b` (the order the kernel's shifts take a vector's bytes out in).
fn bytes_order(x: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for (src, dst) in x.chunks_exact(64).zip(out.chunks_exact_mut(64)) {
        for (i, &v) in src.iter().enumerate() {
            dst[16 * (i % 4) + i / 4] = v;
        }
    }
    out
}

/// Q6_K (`formats::q6k_each`'s layout): value = d · scale · (q − 32), q six bits, one i8 scale per 16
/// values. Per half of 128 values, the 64 `ql` bytes' low nibbles are values 0..64 and their high
/// nibbles 64..128; `qh` byte `l` holds the top bit pairs of values `l`, `32 + l`, `64 + l`,
/// `96 + l`. Built in bytes, 64 values per vector: each byte's bits 2..8 hold q − 32 as a signed
/// 6-bit number (the top pair's high bit flipped, one XOR), so shifting a dword left then
/// arithmetically right by 26 widens byte `b` of every lane to an i32 with no shuffles. Lane `j` of
/// the `b`th widened vector is value `4j + b`: `xb` is `x` in that order ([`bytes_order`]), and a
/// 64-value product's lanes fall in four scale groups of four, scaled with one multiply.
/// This is ~5 vector operations per 16 values against ~11 when every value was widened to 32 bits
/// first: Q6_K is what llama.cpp's Q4_K_M files store the tied embedding / logits head in, which
/// every decoded token multiplies with f32 activations.
#[inline(always)]
unsafe fn q6k_row_dot(row: *const u8, xb: &[f32]) -> f32 {
    let xp = xb.as_ptr();
    let mut acc = [_mm512_setzero_ps(); 2];
    // Lanes 8..16 of the broadcast `qh` serve values 32..64 of each nibble half: their pairs two bits up.
    let qh_shift = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    let (flip, low_bits) = (_mm512_set1_epi8(0xAAu8 as i8), _mm512_set1_epi8(0x3C));
    // Lane j of a 64-value product is in scale group 4 · chunk + j / 4.
    let quarter = _mm512_loadu_si512(LANE_QUARTER.as_ptr().cast());
    for blk in 0..xb.len() / 256 {
        let b = row.add(blk * 210);
        for ahead in [1024usize, 1088, 1152, 1216] {
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(ahead).cast());
        }
        // d · scale for the sixteen groups of 16 values, one per lane.
        let scales = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(b.add(192).cast())));
        let scales = _mm512_mul_ps(scales, _mm512_set1_ps(f16_at(b.add(208))));
        for h in 0..2 {
            let ql = _mm512_loadu_si512(b.add(64 * h).cast());
            let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(b.add(128 + 32 * h).cast()));
            let qh = _mm512_srlv_epi32(_mm512_xor_si512(qh, flip), qh_shift);
            // (A & 0x3C) | (B & !0x3C): the nibble in bits 2..6, the pair in 6..8 (bits 0..2 unused).
            let low =
                _mm512_ternarylogic_epi32::<0xE4>(_mm512_slli_epi32::<2>(ql), _mm512_slli_epi32::<6>(qh), low_bits);
            let high =
                _mm512_ternarylogic_epi32::<0xE4>(_mm512_srli_epi32::<2>(ql), _mm512_slli_epi32::<2>(qh), low_bits);
            for (c, v) in [low, high].into_iter().enumerate() {
                let chunk = 2 * h + c;
                let x = xp.add(256 * blk + 64 * chunk);
                let widened = [
                    _mm512_srai_epi32::<26>(_mm512_slli_epi32::<24>(v)),
                    _mm512_srai_epi32::<26>(_mm512_slli_epi32::<16>(v)),
                    _mm512_srai_epi32::<26>(_mm512_slli_epi32::<8>(v)),
                    _mm512_srai_epi32::<26>(v),
                ];
                let mut t = _mm512_mul_ps(_mm512_cvtepi32_ps(widened[0]), _mm512_loadu_ps(x));
                for (i, q) in widened.into_iter().enumerate().skip(1) {
                    t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), _mm512_loadu_ps(x.add(16 * i)), t);
                }
                let group = _mm512_add_epi32(quarter, _mm512_set1_epi32(4 * chunk as i32));
                acc[c] = _mm512_fmadd_ps(t, _mm512_permutexvar_ps(group, scales), acc[c]);
            }
        }
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]))
}

/// Whether [`rows`] has a kernel for `kind`.
pub(super) fn has_kernel(kind: QuantKind) -> bool {
    !matches!(kind, QuantKind::Q5K)
}

/// `out[r] (+)= row r of w · x` for `kind` (which [`has_kernel`]); `xsum` as for [`row_dot`].
/// Safety: the CPU has AVX-512F + F16C; `w` is `out.len()` whole rows of `x.len()` values.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(super) unsafe fn rows(kind: QuantKind, x: &[f32], xsum: &[f32], w: &[u8], out: &mut [f32], accumulate: bool) {
    // One loop per type, `kind` a constant in each (matched per block it cost ~a third of Q8_0's time).
    match kind {
        QuantKind::Q8_0 => rows_of(QuantKind::Q8_0, x, xsum, w, out, accumulate),
        QuantKind::Q4_0 => rows_of(QuantKind::Q4_0, x, xsum, w, out, accumulate),
        QuantKind::Q4_1 => rows_of(QuantKind::Q4_1, x, xsum, w, out, accumulate),
        QuantKind::Q5_0 => rows_of(QuantKind::Q5_0, x, xsum, w, out, accumulate),
        QuantKind::Q5_1 => rows_of(QuantKind::Q5_1, x, xsum, w, out, accumulate),
        QuantKind::Q4K => rows_of(QuantKind::Q4K, x, xsum, w, out, accumulate),
        QuantKind::Q6K => rows_of(QuantKind::Q6K, x, xsum, w, out, accumulate),
        other => unreachable!("no exact AVX-512 kernel for {}", other.name()),
    }
}

#[inline(always)]
unsafe fn rows_of(kind: QuantKind, x: &[f32], xsum: &[f32], w: &[u8], out: &mut [f32], accumulate: bool) {
    let row_bytes = x.len() / kind.block_elems() * kind.block_bytes();
    if kind == QuantKind::Q6K {
        let xb = bytes_order(x);
        for (r, o) in out.iter_mut().enumerate() {
            let s = q6k_row_dot(w.as_ptr().add(r * row_bytes), &xb);
            *o = if accumulate { *o + s } else { s };
        }
        return;
    }
    for (r, o) in out.iter_mut().enumerate() {
        let s = row_dot(kind, w.as_ptr().add(r * row_bytes), x, xsum);
        *o = if accumulate { *o + s } else { s };
    }
}
