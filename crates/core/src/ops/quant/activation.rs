//! The activation row quantized to 8 bits once per product, as llama.cpp's `Q8_0` / `Q8_K`: one f32
//! scale per block of the weight type's block size (32 for the legacy types, 256 for the k-quants),
//! values rounded to the nearest of ±127 steps, and the sum of every 16 quantized values (the types
//! that store a minimum need Σ x per sub-block).

use crate::loader::QuantKind;

/// Values per stored sum.
pub(crate) const SUM_SPAN: usize = 16;

pub(crate) struct QuantizedActivation {
    kind: QuantKind,
    /// Quantized values, `x[i] ≈ q[i] · d[i / block]`.
    pub q: Vec<i8>,
    /// One scale per block; NaN for a block holding a non-finite value, so the product is NaN as the
    /// float product would be (not a silently clamped number).
    pub d: Vec<f32>,
    /// `Σ q` over each run of [`SUM_SPAN`] values.
    pub sums: Vec<i32>,
    /// `d · Σ q` per 32 values (≈ Σ x), for the minimum terms of Q4_1 / Q5_1 (llama.cpp's `Q8_1.s`).
    pub scaled_sums: Vec<f32>,
}

impl QuantizedActivation {
    /// `x` quantized in blocks of `kind`'s size; `x.len()` must be whole blocks.
    pub(crate) fn new(x: &[f32], kind: QuantKind) -> Self {
        let block = kind.block_elems();
        assert!(
            x.len().is_multiple_of(block),
            "{}: input of {} values is not whole blocks of {block}",
            kind.name(),
            x.len()
        );
        let mut q = vec![0i8; x.len()];
        let mut d = vec![0f32; x.len() / block];
        quantize_blocks(x, &mut q, &mut d);
        let sums: Vec<i32> = q.chunks_exact(SUM_SPAN).map(|c| c.iter().map(|&v| v as i32).sum()).collect();
        let per_d = block / 32;
        let scaled_sums = sums.chunks_exact(2).enumerate().map(|(i, p)| d[i / per_d] * (p[0] + p[1]) as f32).collect();
        Self { kind, q, d, sums, scaled_sums }
    }

    pub(crate) fn kind(&self) -> QuantKind {
        self.kind
    }

    /// Values (the product's column count).
    pub(crate) fn len(&self) -> usize {
        self.q.len()
    }
}

/// [`QuantizedActivation::new`]'s values `q` (`x.len()`) and block scales `d` (one per block of
/// `kind`) into the caller's buffers: the same rounding, no allocation. (The packed x86 GEMM's; other
/// targets quantize whole rows.)
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn quantize_into(x: &[f32], kind: QuantKind, q: &mut [i8], d: &mut [f32]) {
    let block = kind.block_elems();
    assert!(x.len().is_multiple_of(block) && q.len() == x.len() && d.len() == x.len() / block, "quantize_into: sizes");
    quantize_blocks(x, q, d);
}

// Per SIMD level: with SSE4.1 and up `round` is a vector instruction, on baseline x86 a libm call.
multiversion!(fn quantize_blocks(x: &[f32], q: &mut [i8], d: &mut [f32]) = quantize_blocks_body);

/// `q`, `d` of [`QuantizedActivation`] for `x` in `d.len()` equal blocks.
#[inline(always)]
fn quantize_blocks_body(x: &[f32], q: &mut [i8], d: &mut [f32]) {
    let block = x.len() / d.len().max(1);
    for ((xs, qs), d) in x.chunks_exact(block).zip(q.chunks_exact_mut(block)).zip(d.iter_mut()) {
        // The largest |v| as bits: for non-negative floats the integer order is the value order, and
        // an integer max vectorises (an f32 max with NaN rules does not); NaN and ±inf compare above
        // every finite value, so one comparison also answers "all finite".
        let amax_bits = xs.iter().fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff));
        if amax_bits >= f32::INFINITY.to_bits() {
            *d = f32::NAN;
            non_finite_block(xs, qs);
            continue;
        }
        let amax = f32::from_bits(amax_bits);
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        *d = amax / 127.0;
        if inv == f32::INFINITY {
            // amax below ~3.7e-37 (subnormal): 127 / amax overflows, and v · inv is ±inf or NaN.
            saturating_block(xs, qs, inv);
            continue;
        }
        for (o, &v) in qs.iter_mut().zip(xs) {
            // SAFETY: every value of the block is finite (checked above), |v| ≤ amax and `inv` is
            // finite, so |v · inv| ≤ 127 + one ulp.
            *o = unsafe { round_half_away(v * inv) };
        }
    }
}

/// `v.round() as i8` (halves away from zero) for a finite |v| < 2³¹, from operations every
/// vector unit has — a truncating conversion, a subtraction (exact), compares — so it vectorises;
/// `round` is a libm call per value on baseline x86 and blocked LLVM's vectoriser elsewhere, and a
/// saturating `as i32` (NaN and overflow rules) is converted one value at a time.
/// Safety: `v` is finite and |v| < 2³¹.
#[inline(always)]
unsafe fn round_half_away(v: f32) -> i8 {
    debug_assert!(v.is_finite() && v.abs() < 2e9, "round_half_away: {v} out of range");
    // SAFETY: the caller's contract.
    let t = unsafe { v.to_int_unchecked::<i32>() };
    let frac = v - t as f32;
    // Saturating as `as i8` does (|v| stays ≤ 127 + one ulp here, so never in practice).
    (t + (frac >= 0.5) as i32 - (frac <= -0.5) as i32).clamp(-128, 127) as i8
}

/// A block holding NaN or ±inf: its scale is NaN, so the product is NaN as the float one would be
/// (the values do not matter then).
#[cold]
fn non_finite_block(xs: &[f32], qs: &mut [i8]) {
    let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
    saturating_block(xs, qs, if amax > 0.0 { 127.0 / amax } else { 0.0 });
}

/// `q = round(v · inv)` with `as`'s saturation (±inf to ±127 / −128, NaN to 0), one value at a time:
/// the blocks the vectorised path cannot take.
#[cold]
fn saturating_block(xs: &[f32], qs: &mut [i8], inv: f32) {
    for (o, &v) in qs.iter_mut().zip(xs) {
        *o = (v * inv).round() as i8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_equals_round_halves_away_from_zero_at_every_value_it_meets() {
        // Every half-step and its two neighbours, and a fine sweep of the whole range.
        let mut values: Vec<f32> = (-255..=255).map(|h| h as f32 * 0.5).collect();
        for v in values.clone() {
            values.extend([f32::from_bits(v.to_bits() + 1), f32::from_bits(v.to_bits().wrapping_sub(1))]);
        }
        values.extend((0..=2_000_000).map(|i| -127.0 + i as f32 * 127e-6));
        for v in values.into_iter().filter(|v| v.abs() <= 127.5) {
            // SAFETY: finite and |v| ≤ 127.5.
            assert_eq!(unsafe { round_half_away(v) }, v.round() as i8, "{v:e}");
        }
    }

    #[test]
    fn blocks_are_quantized_as_the_plain_formula_says_and_non_finite_blocks_get_a_nan_scale() {
        let mut x: Vec<f32> = (0..1024).map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 0.013).collect();
        x[40] = f32::NAN;
        x[300] = f32::NEG_INFINITY;
        x[600..632].fill(0.0);
        // A block of subnormals: 127 / amax overflows to infinity.
        for (i, v) in x[640..672].iter_mut().enumerate() {
            *v = f32::from_bits(1 + i as u32 * 3) * if i % 2 == 0 { 1.0 } else { -1.0 };
        }
        for kind in [QuantKind::Q8_0, QuantKind::Q4K] {
            let act = QuantizedActivation::new(&x, kind);
            let block = kind.block_elems();
            for (b, xs) in x.chunks(block).enumerate() {
                let finite = xs.iter().all(|v| v.is_finite());
                let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
                let want: Vec<i8> = xs.iter().map(|v| (v * inv).round() as i8).collect();
                assert_eq!(&act.q[b * block..(b + 1) * block], &want[..], "{} block {b}", kind.name());
                if finite {
                    assert_eq!(act.d[b], amax / 127.0, "{} block {b}", kind.name());
                } else {
                    assert!(act.d[b].is_nan(), "{} block {b}", kind.name());
                }
            }
        }
    }
}
