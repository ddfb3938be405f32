//! Weights as the checkpoint stores them — f32, f16, bf16 or a ggml block-quantized type — read by
//! the products without a widened copy. Half-precision values are widened to f32 where they are used
//! (in registers, or a block at a time for the GEMMs), so a half checkpoint keeps half the memory and
//! streams half the bytes per token; quantized blocks likewise (see `ops::quant`).

use half::{bf16, f16};

use super::quant::{dequantize, QuantRef};
use super::{size_add, size_mul};

/// A row-major weight matrix's elements in their stored dtype.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WeightRef<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
    Quant(QuantRef<'a>),
}

impl<'a> WeightRef<'a> {
    /// Number of elements.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::F32(s) => s.len(),
            Self::F16(s) => s.len(),
            Self::BF16(s) => s.len(),
            Self::Quant(q) => q.len(),
        }
    }

    /// Bytes holding `elems` elements (for quantized weights `elems` must be whole blocks).
    pub(crate) fn bytes_of(&self, elems: usize) -> usize {
        match self {
            Self::F32(_) => size_mul(elems, 4),
            Self::F16(_) | Self::BF16(_) => size_mul(elems, 2),
            Self::Quant(q) => q.bytes_of(elems),
        }
    }

    /// The stored dtype's name (`f32`, `Q4_K`), for messages.
    pub(crate) fn dtype_name(&self) -> &'static str {
        match self {
            Self::F32(_) => "f32",
            Self::F16(_) => "f16",
            Self::BF16(_) => "bf16",
            Self::Quant(q) => q.kind.name(),
        }
    }

    /// Elements `start .. start + len` (whole blocks when quantized); panics (never wraps) when that
    /// is outside the slice.
    pub(crate) fn slice(&self, start: usize, len: usize) -> WeightRef<'a> {
        let range = start..size_add(start, len);
        match *self {
            Self::F32(s) => Self::F32(&s[range]),
            Self::F16(s) => Self::F16(&s[range]),
            Self::BF16(s) => Self::BF16(&s[range]),
            Self::Quant(q) => Self::Quant(q.slice(start, len)),
        }
    }
}

impl<'a> From<&'a [f32]> for WeightRef<'a> {
    fn from(s: &'a [f32]) -> Self {
        Self::F32(s)
    }
}

/// A weight element type the kernels read directly. `widen` is branch-free bit arithmetic so that
/// loops over it auto-vectorise (baseline x86, simd128 WASM); the x86 kernels use the CPU's own
/// conversions instead (see `matvec`).
pub(crate) trait Element: Copy + Send + Sync + 'static {
    fn widen(self) -> f32;
}

impl Element for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl Element for bf16 {
    /// bf16 is the top half of an f32: exact.
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
}

impl Element for f16 {
    /// Exact for every f16 (normal, subnormal, ±0, ±inf, NaN stays NaN), with integer ops and one
    /// subtraction of normal floats: no arithmetic on subnormal f32s, which x86 runs ~100× slower.
    #[inline(always)]
    fn widen(self) -> f32 {
        const EXP_MASK: u32 = 0x7c00 << 13;
        let h = self.to_bits() as u32;
        let sign = (h & 0x8000) << 16;
        let shifted = (h & 0x7fff) << 13;
        let exp = shifted & EXP_MASK;
        // Rebias the exponent (15 → 127); inf/NaN (exponent 31) go to exponent 255.
        let normal = shifted + ((127 - 15) << 23);
        let normal = if exp == EXP_MASK { normal + ((128 - 16) << 23) } else { normal };
        // Zero and subnormals: m · 2^-24 = (2^-14 · (1 + m/1024)) − 2^-14, exact.
        let tiny = (f32::from_bits(normal + (1 << 23)) - f32::from_bits(113 << 23)).to_bits();
        f32::from_bits(if exp == 0 { tiny } else { normal } | sign)
    }
}

/// `out[..rows·cols]` = rows `first_row .. first_row + rows` of the `cols`-wide matrix `w`, widened
/// (or dequantized) to f32 (an embedding gather). Panics when the rows lie outside `w` or `out` is too short.
pub(crate) fn widen_rows(w: WeightRef, first_row: usize, rows: usize, cols: usize, out: &mut [f32]) {
    let len = size_mul(rows, cols);
    assert!(out.len() >= len, "widen_rows: output shorter than {rows} rows of {cols}");
    let src = w.slice(size_mul(first_row, cols), len);
    widen(src, &mut out[..len]);
}

/// `out = src` widened; same lengths.
pub(crate) fn widen(src: WeightRef, out: &mut [f32]) {
    assert_eq!(src.len(), out.len(), "widen: length mismatch");
    match src {
        WeightRef::F32(s) => out.copy_from_slice(s),
        WeightRef::F16(s) => widen_f16(s, out),
        WeightRef::BF16(s) => widen_bf16(s, out),
        WeightRef::Quant(q) => dequantize(q, out),
    }
}

multiversion!(fn widen_f16(src: &[f16], out: &mut [f32]) = widen_body::<f16>);
multiversion!(fn widen_bf16(src: &[bf16], out: &mut [f32]) = widen_body::<bf16>);

#[inline(always)]
fn widen_body<E: Element>(src: &[E], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(src) {
        *o = v.widen();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_widening_is_exact_for_every_value() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            let (got, want) = (h.widen(), h.to_f32());
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "f16 {bits:#06x}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn bf16_widening_is_exact_for_every_value() {
        for bits in 0..=u16::MAX {
            let h = bf16::from_bits(bits);
            let (got, want) = (h.widen(), h.to_f32());
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "bf16 {bits:#06x}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn widen_rows_gathers_and_refuses_rows_outside_the_matrix() {
        let vals: Vec<f32> = (0..24).map(|i| i as f32 * 0.25 - 3.0).collect();
        let h: Vec<f16> = vals.iter().map(|&v| f16::from_f32(v)).collect();
        let b: Vec<bf16> = vals.iter().map(|&v| bf16::from_f32(v)).collect();
        for w in [WeightRef::F32(&vals), WeightRef::F16(&h), WeightRef::BF16(&b)] {
            let mut out = [0f32; 8];
            widen_rows(w, 2, 2, 4, &mut out);
            assert_eq!(out[..], vals[8..16], "{w:?}");
            assert!(std::panic::catch_unwind(|| widen_rows(w, 5, 2, 4, &mut [0f32; 8])).is_err(), "past the end");
            assert!(std::panic::catch_unwind(|| widen_rows(w, 0, 3, 4, &mut [0f32; 8])).is_err(), "short output");
            // first_row · cols wraps usize: must panic, not read row 0.
            assert!(std::panic::catch_unwind(|| widen_rows(w, usize::MAX / 2 + 1, 1, 2, &mut [0f32; 2])).is_err());
        }
    }
}
