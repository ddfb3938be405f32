//! A `[rows, cols]` weight matrix kept where the checkpoint has it (memory-mapped, or converted once
//! when the file's bytes cannot be borrowed), read by the mat-vec / GEMM kernels directly.

use crate::loader::F32Buf;

pub struct WeightMatrix {
    pub rows: usize,
    pub cols: usize,
    data: F32Buf,
}

impl WeightMatrix {
    /// `data` must hold `rows × cols` values (the loader checked the tensor's shape).
    pub(crate) fn new(data: F32Buf, rows: usize, cols: usize) -> Self {
        assert_eq!(Some(data.len()), rows.checked_mul(cols), "weight matrix size");
        Self { rows, cols, data }
    }

    pub(crate) fn f32s(&self) -> &[f32] {
        &self.data
    }

    /// Row `r` widened to f32 into `out` (`cols` values).
    pub(crate) fn row_into(&self, r: usize, out: &mut [f32]) {
        out.copy_from_slice(&self.data[r * self.cols..(r + 1) * self.cols]);
    }

    /// Dtype as held (`f32`).
    pub fn dtype(&self) -> &'static str {
        "f32"
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }
}
