//! ggml's block layouts (as in ggml-quants.c): each type's dequantization and its integer dot with a
//! block of the quantized activation. Written as fixed-length loops over byte arrays so LLVM
//! vectorises them (widening multiply-adds) in each SIMD copy; one copy per level, picked at run time.

use super::activation::{QuantizedActivation, SUM_SPAN};
use crate::loader::QuantKind;
use crate::ops::weight_ref::Element;
use crate::ops::{simd_level, SimdLevel};

/// One block-quantized type: block geometry, dequantization, and the dot of a weight block with the
/// activation block under it (`q`: its values, `d`: its scale, `sums`: its per-16 sums, `scaled`:
/// its `d · Σq` per 32 values).
// `unpack` and its helpers feed only the x86 VNNI GEMM (`gemm_x86`); elsewhere they are unused.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) trait Format {
    const ELEMS: usize;
    const BYTES: usize;
    /// Values sharing one float scale (and minimum) once a block is unpacked (see [`Format::unpack`]).
    const GROUP: usize;
    /// Whether the unpacked form has a minimum per group (`value = D·q + M`), else `value = D·q`.
    const HAS_MIN: bool;
    fn dequantize(b: &[u8], out: &mut [f32]);
    fn dot(b: &[u8], q: &[i8], d: f32, sums: &[i32], scaled: &[f32]) -> f32;
    /// The block as signed bytes and per-group floats: value `i` = `scale[i / GROUP] · q[i]
    /// (+ min[i / GROUP])`, exactly (each scale and minimum is a product of ggml's f16 and a small
    /// integer, which f32 holds without rounding). What the many-row product multiplies.
    fn unpack(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]);
}

#[inline(always)]
fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).widen()
}

pub(super) struct Q8_0;
pub(super) struct Q4_0;
pub(super) struct Q4_1;
pub(super) struct Q5_0;
pub(super) struct Q5_1;
pub(super) struct Q4K;
pub(super) struct Q5K;
pub(super) struct Q6K;

impl Format for Q8_0 {
    const ELEMS: usize = 32;
    const BYTES: usize = 34;
    const GROUP: usize = 32;
    const HAS_MIN: bool = false;
    #[inline(always)]
    fn unpack(b: &[u8], q: &mut [i8], scale: &mut [f32], _: &mut [f32]) {
        for (o, &v) in q[..32].iter_mut().zip(&b[2..34]) {
            *o = v as i8;
        }
        scale[0] = f16_at(b, 0);
    }
    #[inline(always)]
    fn dequantize(b: &[u8], out: &mut [f32]) {
        let d = f16_at(b, 0);
        for (o, &v) in out[..32].iter_mut().zip(&b[2..34]) {
            *o = v as i8 as f32 * d;
        }
    }
    #[inline(always)]
    fn dot(b: &[u8], q: &[i8], d: f32, _: &[i32], _: &[f32]) -> f32 {
        let (w, q): (&[u8; 32], &[i8; 32]) = (b[2..34].try_into().unwrap(), q[..32].try_into().unwrap());
        let w: [i8; 32] = w.map(|v| v as i8);
        f16_at(b, 0) * d * dot32(&w, q) as f32
    }
}

/// Σ w·q over 32 values, written as pairs of i16 products summed into i32 — the shape of x86's
/// `pmaddwd`, which LLVM then uses.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
fn dot32(w: &[i8; 32], q: &[i8; 32]) -> i32 {
    let mut s = 0i32;
    for l in 0..16 {
        let a = w[2 * l] as i16 * q[2 * l] as i16;
        let b = w[2 * l + 1] as i16 * q[2 * l + 1] as i16;
        s += a as i32 + b as i32;
    }
    s
}

/// [`dot32`] on WASM SIMD: LLVM does not find `i32x4.dot_i16x8_s` in the loop above for wasm32
/// (it widens to i32 and multiplies lane by lane), so it is spelled out. Integer sums: the same
/// result as the loop, bit for bit.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn dot32(w: &[i8; 32], q: &[i8; 32]) -> i32 {
    use core::arch::wasm32::*;
    let mut acc = i32x4_splat(0);
    for half in 0..2 {
        // SAFETY: each load reads 16 bytes at offset 0 or 16 of a 32-byte array (unaligned loads are allowed).
        let (a, b) = unsafe {
            (v128_load(w.as_ptr().add(16 * half).cast::<v128>()), v128_load(q.as_ptr().add(16 * half).cast::<v128>()))
        };
        acc = i32x4_add(acc, i32x4_dot_i16x8(i16x8_extend_low_i8x16(a), i16x8_extend_low_i8x16(b)));
        acc = i32x4_add(acc, i32x4_dot_i16x8(i16x8_extend_high_i8x16(a), i16x8_extend_high_i8x16(b)));
    }
    i32x4_extract_lane::<0>(acc)
        + i32x4_extract_lane::<1>(acc)
        + i32x4_extract_lane::<2>(acc)
        + i32x4_extract_lane::<3>(acc)
}

/// Σ over a 32-value block stored as 16 bytes of nibbles (low nibbles values 0..16, high 16..32),
/// each nibble plus its fifth bit `high(j)` (0 or 16), minus `offset`.
#[inline(always)]
fn nibble_dot(qs: &[u8; 16], q: &[i8; 32], high: impl Fn(usize) -> (i32, i32), offset: i32) -> i32 {
    // Unpacked to bytes first (values −16..31 fit i8), then one vectorisable dot.
    // Byte arithmetic (u8 → i8, no widening) so the unpacking vectorises too.
    let (mut w, off) = ([0i8; 32], offset as i8);
    for j in 0..16 {
        let (h0, h1) = high(j);
        w[j] = (((qs[j] & 15) | h0 as u8) as i8).wrapping_sub(off);
        w[j + 16] = (((qs[j] >> 4) | h1 as u8) as i8).wrapping_sub(off);
    }
    dot32(&w, q)
}

/// A 32-value nibble block as bytes (values −16..31 fit i8), minus `offset`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
fn nibble_unpack(qs: &[u8], q: &mut [i8], high: impl Fn(usize) -> (i32, i32), offset: i32) {
    for j in 0..16 {
        let (h0, h1) = high(j);
        q[j] = ((qs[j] & 15) as i32 + h0 - offset) as i8;
        q[j + 16] = ((qs[j] >> 4) as i32 + h1 - offset) as i8;
    }
}

#[inline(always)]
fn nibble_dequantize(qs: &[u8], out: &mut [f32], high: impl Fn(usize) -> (i32, i32), offset: i32, d: f32, m: f32) {
    for j in 0..16 {
        let (h0, h1) = high(j);
        out[j] = ((qs[j] & 15) as i32 + h0 - offset) as f32 * d + m;
        out[j + 16] = ((qs[j] >> 4) as i32 + h1 - offset) as f32 * d + m;
    }
}

/// The fifth bits of a Q5 block: bit j of `qh` for value j, bit j + 16 for value j + 16.
#[inline(always)]
fn fifth_bits(b: &[u8], at: usize) -> impl Fn(usize) -> (i32, i32) {
    let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    move |j| ((((qh >> j) & 1) << 4) as i32, (((qh >> (j + 16)) & 1) << 4) as i32)
}

fn no_high(_: usize) -> (i32, i32) {
    (0, 0)
}

#[inline(always)]
fn arrays<'a>(qs: &'a [u8], q: &'a [i8]) -> (&'a [u8; 16], &'a [i8; 32]) {
    (qs[..16].try_into().unwrap(), q[..32].try_into().unwrap())
}

impl Format for Q4_0 {
    const ELEMS: usize = 32;
    const BYTES: usize = 18;
    const GROUP: usize = 32;
    const HAS_MIN: bool = false;
    #[inline(always)]
    fn unpack(b: &[u8], q: &mut [i8], scale: &mut [f32], _: &mut [f32]) {
        nibble_unpack(&b[2..18], q, no_high, 8);
        scale[0] = f16_at(b, 0);
    }
    #[inline(always)]
    fn dequantize(b: &[u8], out: &mut [f32]) {
        // ggml: (q - 8) · d, with no minimum (adding 0.0 leaves every value as it is).
        nibble_dequantize(&b[2..18], out, no_high, 8, f16_at(b, 0), 0.0);
    }
    #[inline(always)]
    fn dot(b: &[u8], q: &[i8], d: f32, _: &[i32], _: &[f32]) -> f32 {
        let (qs, q) = arrays(&b[2..18], q);
        f16_at(b, 0) * d * nibble_dot(qs, q, no_high, 8) as f32
    }
}

impl Format for Q4_1 {
    const ELEMS: usize = 32;
    const BYTES: usize = 20;
    const GROUP: usize = 32;
    const HAS_MIN: bool = true;
    #[inline(always)]
    fn unpack(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
        nibble_unpack(&b[4..20], q, no_high, 0);
        (scale[0], min[0]) = (f16_at(b, 0), f16_at(b, 2));
    }
    #[inline(always)]
    fn dequantize(b: &[u8], out: &mut [f32]) {
        nibble_dequantize(&b[4..20], out, no_high, 0, f16_at(b, 0), f16_at(b, 2));
    }
    #[inline(always)]
    fn dot(b: &[u8], q: &[i8], d: f32, _: &[i32], scaled: &[f32]) -> f32 {
        let (qs, q) = arrays(&b[4..20], q);
        let s = nibble_dot(qs, q, no_high, 0);
        f16_at(b, 0) * d * s as f32 + f16_at(b, 2) * scaled[0]
    }
}

impl Format for Q5_0 {
    const ELEMS: usize = 32;
    const BYTES: usize = 22;
    const GROUP: usize = 32;
    const HAS_MIN: bool = false;
    #[inline(always)]
    fn unpack(b: &[u8], q: &mut [i8], scale: &mut [f32], _: &mut [f32]) {
        nibble_unpack(&b[6..22], q, fifth_bits(b, 2), 16);
        scale[0] = f16_at(b, 0);
    }
    #[inline(always)]
    fn dequantize(b: &[u8], out: &mut [f32]) {
        nibble_dequantize(&b[6..22], out, fifth_bits(b, 2), 16, f16_at(b, 0), 0.0);
    }
    #[inline(always)]
    fn dot(b: &[u8], q: &[i8], d: f32, _: &[i32], _: &[f32]) -> f32 {
        let (qs, q) = arrays(&b[6..22], q);
        f16_at(b, 0) * d * nibble_dot(qs, q, fifth_bits(b, 2), 16) as f32
    }
}

impl Format for Q5_1 {
    const ELEMS: usize = 32;
    const BYTES: usize = 24;
    const GROUP: usize = 32;
    const HAS_MIN: bool = true;
    #[inline(always)]
    fn unpack(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
        nibble_unpack(&b[8..24], q, fifth_bits(b, 4), 0);
        (scale[0], min[0]) = (f16_at(b, 0), f16_at(b, 2));
    }
    #[inline(always)]
    fn dequantize(b: &[u8], out: &mut [f32]) {
        nibble_dequantize(&b[8..24], out, fifth_bits(b, 4), 0, f16_at(b, 0), f16_at(b, 2));
    }
    #[inline(always)]
    fn dot(b: &[u8], q: &[i8], d: f32, _: &[i32], scaled: &[f32]) -> f32 {
        let (qs, q) = arrays(&b[8..24], q);
        let s = nibble_dot(qs, q, fifth_bits(b, 4), 0);
        f16_at(b, 0) * d * s as f32 + f16_at(b, 2) * scaled[0]
    }
}

/// Scale and minimum of sub-block `j` (0..8) from the 12 packed 6-bit values of a Q4_K / Q5_K block
/// (ggml's `get_scale_min_k4`).
#[inline(always)]
pub(super) fn scale_min(j: usize, s: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// Q4_K and Q5_K: 8 sub-blocks of 32, value = d · scale · q − dmin · min; the nibbles of 64 values
/// share 32 bytes (low nibbles the first 32). Q5_K adds a fifth bit per value from `qh` (bit 2c of
/// byte l for value 64c + l, bit 2c + 1 for value 64c + 32 + l).
#[inline(always)]
fn k4_dot(b: &[u8], qh: Option<&[u8; 32]>, qs: &[u8; 128], q: &[i8; 256], d: f32, sums: &[i32]) -> f32 {
    let scales: &[u8; 12] = b[4..16].try_into().unwrap();
    let (mut total, mut mins) = (0i32, 0i32);
    for c in 0..4 {
        let (sc0, m0) = scale_min(2 * c, scales);
        let (sc1, m1) = scale_min(2 * c + 1, scales);
        let (mut s0, mut s1) = (0i32, 0i32);
        for l in 0..32 {
            let byte = qs[32 * c + l];
            let (h0, h1) = match qh {
                Some(qh) => ((((qh[l] >> (2 * c)) & 1) << 4) as i32, (((qh[l] >> (2 * c + 1)) & 1) << 4) as i32),
                None => (0, 0),
            };
            s0 += ((byte & 15) as i32 + h0) * q[64 * c + l] as i32;
            s1 += ((byte >> 4) as i32 + h1) * q[64 * c + 32 + l] as i32;
        }
        total += sc0 as i32 * s0 + sc1 as i32 * s1;
        let span = |i: usize| sums[i] + sums[i + 1];
        mins += m0 as i32 * span(4 * c) + m1 as i32 * span(4 * c + 2);
    }
    d * (f16_at(b, 0) * total as f32 - f16_at(b, 2) * mins as f32)
}

#[inline(always)]
fn k4_dequantize(b: &[u8], qh: Option<&[u8; 32]>, qs: &[u8; 128], out: &mut [f32]) {
    let scales: &[u8; 12] = b[4..16].try_into().unwrap();
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    for c in 0..4 {
        let (sc0, m0) = scale_min(2 * c, scales);
        let (sc1, m1) = scale_min(2 * c + 1, scales);
        let (d0, min0, d1, min1) = (d * sc0 as f32, dmin * m0 as f32, d * sc1 as f32, dmin * m1 as f32);
        for l in 0..32 {
            let byte = qs[32 * c + l];
            let (h0, h1) = match qh {
                Some(qh) => (((qh[l] >> (2 * c)) & 1) << 4, ((qh[l] >> (2 * c + 1)) & 1) << 4),
                None => (0, 0),
            };
            out[64 * c + l] = d0 * ((byte & 15) + h0) as f32 - min0;
            out[64 * c + 32 + l] = d1 * ((byte >> 4) + h1) as f32 - min1;
        }
    }
}

/// Q4_K / Q5_K unpacked: per sub-block of 32, `scale = d · sc`, `min = −dmin · m`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
fn k4_unpack(b: &[u8], qh: Option<&[u8; 32]>, qs: &[u8; 128], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    let scales: &[u8; 12] = b[4..16].try_into().unwrap();
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    for c in 0..4 {
        for half in 0..2 {
            let (sc, m) = scale_min(2 * c + half, scales);
            (scale[2 * c + half], min[2 * c + half]) = (d * sc as f32, -(dmin * m as f32));
        }
        for l in 0..32 {
            let byte = qs[32 * c + l];
            let (h0, h1) = match qh {
                Some(qh) => (((qh[l] >> (2 * c)) & 1) << 4, ((qh[l] >> (2 * c + 1)) & 1) << 4),
                None => (0, 0),
            };
            q[64 * c + l] = ((byte & 15) | h0) as i8;
            q[64 * c + 32 + l] = ((byte >> 4) | h1) as i8;
        }
    }
}

impl Format for Q4K {
    const ELEMS: usize = 256;
    const BYTES: usize = 144;
    const GROUP: usize = 32;
    const HAS_MIN: bool = true;
    #[inline(always)]
    fn unpack(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
        k4_unpack(b, None, b[16..144].try_into().unwrap(), q, scale, min);
    }
    #[inline(always)]
    fn dequantize(b: &[u8], out: &mut [f32]) {
        k4_dequantize(b, None, b[16..144].try_into().unwrap(), out);
    }
    #[inline(always)]
    fn dot(b: &[u8], q: &[i8], d: f32, sums: &[i32], _: &[f32]) -> f32 {
        k4_dot(b, None, b[16..144].try_into().unwrap(), q[..256].try_into().unwrap(), d, sums)
    }
}

impl Format for Q5K {
    const ELEMS: usize = 256;
    const BYTES: usize = 176;
    const GROUP: usize = 32;
    const HAS_MIN: bool = true;
    #[inline(always)]
    fn unpack(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
        k4_unpack(b, Some(b[16..48].try_into().unwrap()), b[48..176].try_into().unwrap(), q, scale, min);
    }
    #[inline(always)]
    fn dequantize(b: &[u8], out: &mut [f32]) {
        k4_dequantize(b, Some(b[16..48].try_into().unwrap()), b[48..176].try_into().unwrap(), out);
    }
    #[inline(always)]
    fn dot(b: &[u8], q: &[i8], d: f32, sums: &[i32], _: &[f32]) -> f32 {
        let qh = Some(b[16..48].try_into().unwrap());
        k4_dot(b, qh, b[48..176].try_into().unwrap(), q[..256].try_into().unwrap(), d, sums)
    }
}

/// Q6_K: 16 sub-blocks of 16 with an i8 scale each, value = d · scale · (q − 32), q six bits: four
/// from `ql`, two from `qh`. Each half of 128 values uses 64 bytes of `ql`, 32 of `qh`, 8 scales;
/// value 32·i + l (i = 0..4, l = 0..32) of a half takes nibble (i ≥ 2) of ql[l + 32·(i % 2)] and
/// bits 2i, 2i + 1 of qh[l], with scale i·2 + l / 16.
#[inline(always)]
fn q6k_each(b: &[u8], mut f: impl FnMut(usize, usize, i32)) {
    for h in 0..2 {
        let ql: &[u8; 64] = b[64 * h..64 * h + 64].try_into().unwrap();
        let qh: &[u8; 32] = b[128 + 32 * h..128 + 32 * h + 32].try_into().unwrap();
        for l in 0..32 {
            let q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            let (base, is) = (128 * h, 8 * h + l / 16);
            f(base + l, is, q1);
            f(base + 32 + l, is + 2, q2);
            f(base + 64 + l, is + 4, q3);
            f(base + 96 + l, is + 6, q4);
        }
    }
}

impl Format for Q6K {
    const ELEMS: usize = 256;
    const BYTES: usize = 210;
    const GROUP: usize = 16;
    const HAS_MIN: bool = false;
    #[inline(always)]
    fn unpack(b: &[u8], q: &mut [i8], scale: &mut [f32], _: &mut [f32]) {
        let q: &mut [i8; 256] = (&mut q[..256]).try_into().unwrap();
        q6k_each(b, |i, _, v| q[i] = v as i8);
        let d = f16_at(b, 208);
        for (o, &s) in scale[..16].iter_mut().zip(&b[192..208]) {
            *o = d * s as i8 as f32;
        }
    }
    #[inline(always)]
    fn dequantize(b: &[u8], out: &mut [f32]) {
        let d = f16_at(b, 208);
        let scales = &b[192..208];
        let out: &mut [f32; 256] = (&mut out[..256]).try_into().unwrap();
        q6k_each(b, |i, s, v| out[i] = d * scales[s] as i8 as f32 * v as f32);
    }
    #[inline(always)]
    fn dot(b: &[u8], q: &[i8], d: f32, _: &[i32], _: &[f32]) -> f32 {
        let q: &[i8; 256] = q[..256].try_into().unwrap();
        let scales: &[u8; 16] = b[192..208].try_into().unwrap();
        let mut sub = [0i32; 16];
        q6k_each(b, |i, s, v| sub[s] += v * q[i] as i32);
        let total: i32 = (0..16).map(|s| scales[s] as i8 as i32 * sub[s]).sum();
        d * f16_at(b, 208) * total as f32
    }
}

/// The rows of one weight matrix dotted with the quantized activation: each row block by block.
#[inline(always)]
fn rows_body<F: Format>(act: &QuantizedActivation, w: &[u8], out: &mut [f32], accumulate: bool) {
    let blocks = act.len() / F::ELEMS;
    let row_bytes = blocks * F::BYTES;
    let per_block_sums = F::ELEMS / SUM_SPAN;
    for (row, o) in w.chunks_exact(row_bytes).zip(out.iter_mut()) {
        let mut s = 0f32;
        for (i, b) in row.chunks_exact(F::BYTES).enumerate() {
            let q = &act.q[i * F::ELEMS..(i + 1) * F::ELEMS];
            let sums = &act.sums[i * per_block_sums..(i + 1) * per_block_sums];
            let scaled = &act.scaled_sums[i * F::ELEMS / 32..(i + 1) * F::ELEMS / 32];
            s += F::dot(b, q, act.d[i], sums, scaled);
        }
        *o = if accumulate { *o + s } else { s };
    }
}

/// The rows of one weight matrix dotted with the f32 activation itself: each weight block widened
/// to f32 in registers-sized pieces, then multiplied and summed in f32 (16 running sums), so the
/// result is the float product of the dequantized weights — no rounding of the activation.
#[inline(always)]
fn exact_rows_body<F: Format>(x: &[f32], w: &[u8], out: &mut [f32], accumulate: bool) {
    let row_bytes = x.len() / F::ELEMS * F::BYTES;
    let mut buf = [0f32; 256];
    for (row, o) in w.chunks_exact(row_bytes).zip(out.iter_mut()) {
        let mut acc = [0f32; 16];
        for (b, xs) in row.chunks_exact(F::BYTES).zip(x.chunks_exact(F::ELEMS)) {
            let wv = &mut buf[..F::ELEMS];
            F::dequantize(b, wv);
            for (w16, x16) in wv.chunks_exact(16).zip(xs.chunks_exact(16)) {
                for l in 0..16 {
                    acc[l] += w16[l] * x16[l];
                }
            }
        }
        let s = acc.iter().sum::<f32>();
        *o = if accumulate { *o + s } else { s };
    }
}

#[inline(always)]
fn dequantize_body<F: Format>(w: &[u8], out: &mut [f32]) {
    for (b, o) in w.chunks_exact(F::BYTES).zip(out.chunks_exact_mut(F::ELEMS)) {
        F::dequantize(b, o);
    }
}

/// `fn $name(level, args…)`: `$body` compiled once per SIMD level, the copy for `level` called.
macro_rules! leveled {
    ($name:ident($($arg:ident : $ty:ty),*) = $body:path) => {
        fn $name(level: SimdLevel, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma,f16c")]
                unsafe fn v512($($arg: $ty),*) { $body($($arg),*) }
                #[target_feature(enable = "avx2,fma,f16c")]
                unsafe fn v256($($arg: $ty),*) { $body($($arg),*) }
                match level {
                    // SAFETY: callers pass `simd_level()` or a level a test checked this CPU has.
                    SimdLevel::Avx512 => return unsafe { v512($($arg),*) },
                    SimdLevel::Avx2 => return unsafe { v256($($arg),*) },
                    SimdLevel::Baseline => {}
                }
            }
            let _ = level;
            $body($($arg),*)
        }
    };
}

macro_rules! per_kind {
    ($($kind:ident => $fmt:ident, $rows:ident, $exact:ident, $deq:ident;)*) => {
        $(
            leveled!($rows(act: &QuantizedActivation, w: &[u8], out: &mut [f32], accumulate: bool) = rows_body::<$fmt>);
            leveled!($exact(x: &[f32], w: &[u8], out: &mut [f32], accumulate: bool) = exact_rows_body::<$fmt>);
            leveled!($deq(w: &[u8], out: &mut [f32]) = dequantize_body::<$fmt>);
        )*

        /// [`super::rows`] at a given SIMD level (this run's, or one a test checked the CPU offers):
        /// the intrinsics kernels on x86 AVX2 / AVX-512, else the portable loops.
        pub(super) fn rows_at(level: SimdLevel, act: &QuantizedActivation, w: &[u8], out: &mut [f32], accumulate: bool) {
            #[cfg(target_arch = "x86_64")]
            if level != SimdLevel::Baseline {
                // SAFETY: the level is this CPU's (or below it); `super::rows` checked the sizes.
                return unsafe { super::x86::rows(level == SimdLevel::Avx512, act, w, out, accumulate) };
            }
            match act.kind() {
                $(QuantKind::$kind => $rows(level, act, w, out, accumulate),)*
            }
        }

        /// [`super::exact_rows`] at a given SIMD level.
        pub(super) fn exact_rows_at(level: SimdLevel, kind: QuantKind, x: &[f32], w: &[u8], out: &mut [f32], accumulate: bool) {
            #[cfg(target_arch = "x86_64")]
            if level == SimdLevel::Avx512 && super::x86_exact::has_kernel(kind) {
                let xsum: Vec<f32> = x.chunks_exact(32).map(|c| c.iter().sum()).collect();
                // SAFETY: the level is this CPU's (AVX-512F + F16C); `super::exact_rows` checked the sizes.
                return unsafe { super::x86_exact::rows(kind, x, &xsum, w, out, accumulate) };
            }
            match kind {
                $(QuantKind::$kind => $exact(level, x, w, out, accumulate),)*
            }
        }

        /// [`super::dequantize`] at a given SIMD level.
        pub(super) fn dequantize_at(level: SimdLevel, kind: QuantKind, w: &[u8], out: &mut [f32]) {
            match kind {
                $(QuantKind::$kind => $deq(level, w, out),)*
            }
        }
    };
}

per_kind! {
    Q8_0 => Q8_0, rows_q8_0, exact_rows_q8_0, dequantize_q8_0;
    Q4_0 => Q4_0, rows_q4_0, exact_rows_q4_0, dequantize_q4_0;
    Q4_1 => Q4_1, rows_q4_1, exact_rows_q4_1, dequantize_q4_1;
    Q5_0 => Q5_0, rows_q5_0, exact_rows_q5_0, dequantize_q5_0;
    Q5_1 => Q5_1, rows_q5_1, exact_rows_q5_1, dequantize_q5_1;
    Q4K => Q4K, rows_q4k, exact_rows_q4k, dequantize_q4k;
    Q5K => Q5K, rows_q5k, exact_rows_q5k, dequantize_q5k;
    Q6K => Q6K, rows_q6k, exact_rows_q6k, dequantize_q6k;
}

// `rows` and `exact_rows` stay out of line (one call per task, nothing to gain from inlining): the
// WASM build's SIMD check (test/wasm-gguf.test.ts) finds the kernels under these names.
#[inline(never)]
pub(super) fn rows(act: &QuantizedActivation, w: &[u8], out: &mut [f32], accumulate: bool) {
    rows_at(simd_level(), act, w, out, accumulate);
}

#[inline(never)]
pub(super) fn exact_rows(kind: QuantKind, x: &[f32], w: &[u8], out: &mut [f32], accumulate: bool) {
    exact_rows_at(simd_level(), kind, x, w, out, accumulate);
}

pub(super) fn dequantize(kind: QuantKind, w: &[u8], out: &mut [f32]) {
    dequantize_at(simd_level(), kind, w, out);
}
