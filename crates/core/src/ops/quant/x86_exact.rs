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
    if kind == QuantKind::Q6K {
        return q6k_row_dot(row, x);
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

/// Q6_K: per half of 128 values, 64 bytes of low nibbles (`ql`), 32 of high bit pairs (`qh`), one
/// i8 scale per 16 values; value = d · scale · (q − 32) (the layout of `formats::q6k_each`). Sixteen
/// values at a time: bytes `ql[l]`, `ql[l + 32]`, `qh[l]` for l in one half of 0..32 give the four
/// quarters' values `l`, `32 + l`, `64 + l`, `96 + l`, each quarter's sixteen sharing one scale.
/// Q6_K is what llama.cpp's Q4_K_M files store the tied embedding / logits head in, which a
/// generation's first token multiplies with f32 activations.
#[inline(always)]
unsafe fn q6k_row_dot(row: *const u8, x: &[f32]) -> f32 {
    let xp = x.as_ptr();
    let mut acc = [_mm512_setzero_ps(); 4];
    let (low, three, off) = (_mm512_set1_epi32(15), _mm512_set1_epi32(3), _mm512_set1_epi32(32));
    for blk in 0..x.len() / 256 {
        let b = row.add(blk * 210);
        for ahead in [1024usize, 1088, 1152, 1216] {
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(ahead).cast());
        }
        let d = f16_at(b.add(208));
        let scales = b.add(192).cast::<i8>();
        for h in 0..2 {
            let (ql, qh) = (b.add(64 * h), b.add(128 + 32 * h));
            for c in 0..2 {
                let la = _mm512_cvtepu8_epi32(_mm_loadu_si128(ql.add(16 * c).cast()));
                let lb = _mm512_cvtepu8_epi32(_mm_loadu_si128(ql.add(32 + 16 * c).cast()));
                let hb = _mm512_cvtepu8_epi32(_mm_loadu_si128(qh.add(16 * c).cast()));
                // No closures here: they would not inherit the caller's target features.
                let high = [
                    _mm512_slli_epi32::<4>(_mm512_and_si512(hb, three)),
                    _mm512_slli_epi32::<4>(_mm512_and_si512(_mm512_srli_epi32::<2>(hb), three)),
                    _mm512_slli_epi32::<4>(_mm512_and_si512(_mm512_srli_epi32::<4>(hb), three)),
                    _mm512_slli_epi32::<4>(_mm512_and_si512(_mm512_srli_epi32::<6>(hb), three)),
                ];
                let quarters = [
                    _mm512_or_si512(_mm512_and_si512(la, low), high[0]),
                    _mm512_or_si512(_mm512_and_si512(lb, low), high[1]),
                    _mm512_or_si512(_mm512_srli_epi32::<4>(la), high[2]),
                    _mm512_or_si512(_mm512_srli_epi32::<4>(lb), high[3]),
                ];
                for (i, q) in quarters.into_iter().enumerate() {
                    let at = 256 * blk + 128 * h + 32 * i + 16 * c;
                    let sc = *scales.add(8 * h + c + 2 * i) as f32;
                    let p = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q, off)), _mm512_loadu_ps(xp.add(at)));
                    acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(d * sc), p, acc[i]);
                }
            }
        }
    }
    _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])))
}

/// Whether [`rows`] has a kernel for `kind`.
pub(super) fn has_kernel(kind: QuantKind) -> bool {
    !matches!(kind, QuantKind::Q5K)
}

/// `out[r] (+)= row r of w · x` for `kind` (which [`has_kernel`]); `xsum` as for [`row_dot`].
/// Safety: the CPU has AVX-512F + F16C; `w` is `out.len()` whole rows of `x.len()` values.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(super) unsafe fn rows(kind: QuantKind, x: &[f32], xsum: &[f32], w: &[u8], out: &mut [f32], accumulate: bool) {
    let row_bytes = x.len() / kind.block_elems() * kind.block_bytes();
    for (r, o) in out.iter_mut().enumerate() {
        let s = row_dot(kind, w.as_ptr().add(r * row_bytes), x, xsum);
        *o = if accumulate { *o + s } else { s };
    }
}
