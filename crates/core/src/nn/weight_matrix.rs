//! A `[rows, cols]` weight matrix kept where and as the checkpoint has it (memory-mapped; f32, or
//! f16 / bf16 / ggml blocks never widened at load), read by the mat-vec / GEMM kernels directly: they
//! widen half-precision values in registers, dot quantized blocks in integers, and accumulate in f32.

use crate::loader::MatrixData;
use crate::ops::matmul::{QuantRef, WeightRef};

pub struct WeightMatrix {
    pub rows: usize,
    pub cols: usize,
    data: MatrixData,
}

impl WeightMatrix {
    /// `data` must hold `rows × cols` values (the loader checked the tensor's shape).
    pub(crate) fn new(data: MatrixData, rows: usize, cols: usize) -> Self {
        assert_eq!(Some(data.len()), rows.checked_mul(cols), "weight matrix size");
        Self { rows, cols, data }
    }

    /// The values as the kernels take them.
    pub(crate) fn weight_ref(&self) -> WeightRef<'_> {
        match &self.data {
            MatrixData::F32(b) => WeightRef::F32(b),
            MatrixData::F16(b) => WeightRef::F16(b),
            MatrixData::BF16(b) => WeightRef::BF16(b),
            MatrixData::Quant(q) => WeightRef::Quant(QuantRef { kind: q.kind, bytes: q.bytes() }),
        }
    }

    /// Row `r` widened (or dequantized) to f32 into `out` (`cols` values): the embedding gather.
    pub(crate) fn row_into(&self, r: usize, out: &mut [f32]) {
        crate::ops::matmul::widen_rows(self.weight_ref(), r, 1, self.cols, out);
    }

    /// Dtype as held (`f32`, `f16`, `bf16`, or ggml's name of a quantized type, `Q4_1`).
    pub fn dtype(&self) -> &'static str {
        self.data.dtype_name()
    }

    /// Bytes held (quantized: the blocks' real size).
    pub fn bytes(&self) -> usize {
        self.data.byte_len()
    }
}
