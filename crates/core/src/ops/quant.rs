//! Products with ggml block-quantized weights (GGUF's Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K),
//! read as stored: nothing is dequantized at load.
//!
//! Decode does what llama.cpp does because it is fast: the activation row is quantized once per call
//! to 8-bit blocks (one scale per 32 values for the legacy types, per 256 for the k-quants, with
//! per-16 sums for the types that store a minimum), then each weight block is dotted in integers and
//! scaled once. The only error this adds to a float product of the dequantized weights is the
//! activation's rounding, at most half a step (`d/2`) per value. The dots are AVX2 intrinsics on x86
//! (`x86`: `vpmaddubsw`/`vpmaddwd`, `vpdpbusd` where AVX-512 VNNI is present) and plain loops shaped
//! for the vector units elsewhere (`formats`: baseline x86, simd128 WASM), threaded over rows by
//! `matvec`. Prefill rounds every token row the same way and multiplies int8 blocks too (`gemm`:
//! VNNI outer products on AVX-512, the one-row kernels over cached blocks of rows elsewhere); the
//! products that keep f32 activations (logits heads, `ActivationRounding::Exact`) widen panels of
//! weight rows to f32 (`dequantize`) and run the f32 GEMM on them, like the half-precision path.

mod activation;
mod formats;
mod gemm;
#[cfg(target_arch = "x86_64")]
mod gemm_x86;
#[cfg(test)]
mod kernel_tests;
#[cfg(test)]
mod speed_probe;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_exact;
#[cfg(target_arch = "x86_64")]
mod x86_wide;

pub(crate) use activation::QuantizedActivation;
#[cfg(test)]
pub(crate) use gemm::gemm;
#[cfg(test)]
pub(crate) use gemm::gemm_by_rows;
pub(crate) use gemm::{gemm_many, QuantProduct};
#[cfg(test)]
pub(crate) use kernel_tests::ggml_quantize;

use crate::loader::QuantKind;

use super::size_mul;

/// The bytes of a row-major block-quantized matrix (whole blocks).
#[derive(Clone, Copy, Debug)]
pub(crate) struct QuantRef<'a> {
    pub kind: QuantKind,
    pub bytes: &'a [u8],
}

impl<'a> QuantRef<'a> {
    /// Values held (whole blocks).
    pub(crate) fn len(&self) -> usize {
        self.bytes.len() / self.kind.block_bytes() * self.kind.block_elems()
    }

    /// Bytes holding `elems` values; panics unless they are whole blocks.
    pub(crate) fn bytes_of(&self, elems: usize) -> usize {
        let be = self.kind.block_elems();
        assert!(elems.is_multiple_of(be), "{}: {elems} values are not whole blocks of {be}", self.kind.name());
        size_mul(elems / be, self.kind.block_bytes())
    }

    /// Values `start .. start + len` (both whole blocks); panics outside the matrix.
    pub(crate) fn slice(&self, start: usize, len: usize) -> QuantRef<'a> {
        let from = self.bytes_of(start);
        QuantRef { kind: self.kind, bytes: &self.bytes[from..super::size_add(from, self.bytes_of(len))] }
    }
}

/// `bytes` (whole blocks of `kind`) dequantized into `out` (as many values as the blocks hold): the
/// loader's widening of small quantized tensors.
pub(crate) fn dequantize_blocks(kind: QuantKind, bytes: &[u8], out: &mut [f32]) {
    dequantize(QuantRef { kind, bytes }, out);
}

/// `out = w` dequantized to f32 (`out.len()` == `w.len()`).
pub(crate) fn dequantize(w: QuantRef, out: &mut [f32]) {
    assert_eq!(w.len(), out.len(), "dequantize: length mismatch");
    assert_eq!(w.bytes.len() % w.kind.block_bytes(), 0, "dequantize: partial block");
    formats::dequantize(w.kind, w.bytes, out);
}

/// `out[r] (+)= w[r, :] · x` for every row of `w` (`[out.len(), act.len()]`), with `act` the
/// activation already quantized for `w.kind`.
pub(crate) fn rows(act: &QuantizedActivation, w: QuantRef, out: &mut [f32], accumulate: bool) {
    assert_eq!(act.kind(), w.kind, "quantized rows: activation quantized for another kind");
    assert_eq!(w.len(), size_mul(out.len(), act.len()), "quantized rows: weight is not [{}, {}]", out.len(), act.len());
    formats::rows(act, w.bytes, out, accumulate);
}

/// `out[r] (+)= w[r, :] · x` with `x` as it is (f32): the float product of the dequantized
/// weights, what a reference implementation computes. Slower than [`rows`] per block, but nothing
/// is rounded beyond f32 sums.
pub(crate) fn exact_rows(x: &[f32], w: QuantRef, out: &mut [f32], accumulate: bool) {
    assert_eq!(w.len(), size_mul(out.len(), x.len()), "quantized rows: weight is not [{}, {}]", out.len(), x.len());
    formats::exact_rows(w.kind, x, w.bytes, out, accumulate);
}

/// [`rows`] at a given SIMD level, which the caller has checked this CPU offers (tests).
#[cfg(test)]
pub(crate) fn rows_at_level(
    level: super::SimdLevel,
    act: &QuantizedActivation,
    w: QuantRef,
    out: &mut [f32],
    accumulate: bool,
) {
    assert_eq!(act.kind(), w.kind);
    assert_eq!(w.len(), size_mul(out.len(), act.len()));
    formats::rows_at(level, act, w.bytes, out, accumulate);
}
