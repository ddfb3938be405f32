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

// Per SIMD level: with SSE4.1 and up `round` is a vector instruction, on baseline x86 a libm call.
multiversion!(fn quantize_blocks(x: &[f32], q: &mut [i8], d: &mut [f32]) = quantize_blocks_body);

/// `q`, `d` of [`QuantizedActivation`] for `x` in `d.len()` equal blocks.
#[inline(always)]
fn quantize_blocks_body(x: &[f32], q: &mut [i8], d: &mut [f32]) {
    let block = x.len() / d.len().max(1);
    for ((xs, qs), d) in x.chunks_exact(block).zip(q.chunks_exact_mut(block)).zip(d.iter_mut()) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let finite = xs.iter().all(|v| v.is_finite());
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        for (o, &v) in qs.iter_mut().zip(xs) {
            // |v · inv| ≤ 127 up to rounding; `as` saturates (and maps NaN to 0, flagged by `d`).
            *o = (v * inv).round() as i8;
        }
        *d = if finite { amax / 127.0 } else { f32::NAN };
    }
}
