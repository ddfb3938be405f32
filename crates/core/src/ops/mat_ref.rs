//! A strided read-only view of an f32 activation matrix, and the bounds check that guards every
//! `unsafe` product reading through one. Its own module so the products (`matmul`, `gemm_avx512`,
//! `matvec`) all depend on it, and never on each other's internals.

use super::{size_add, size_mul};

/// Raw output pointer shared by the tasks of a product that write disjoint blocks of one output.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub *mut f32);
// SAFETY: only moved between the tasks of one product, each writing its own disjoint block.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}
impl OutPtr {
    /// Through a method, so closures capture the whole (Sync) wrapper, not the raw field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Activation rows made on demand: `fill(r, row)` writes row `r`'s `cols` values. A fused
/// producer (a norm) whose rows a product packs as it makes them, instead of a whole matrix
/// written to memory first and read back.
#[derive(Clone, Copy)]
pub(crate) struct RowSource<'a> {
    pub rows: usize,
    pub cols: usize,
    pub fill: &'a (dyn Fn(usize, &mut [f32]) + Sync),
}

/// A read-only matrix view: element (r, c) at `data[r * row_stride + c * col_stride]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major `rows × cols` matrix (tests and timing probes).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// Every element the view names lies inside `data` (checked arithmetic: a wrapped product
    /// would let `unsafe` GEMM code read outside it), and the strides fit the `isize` GEMM takes.
    pub(crate) fn check(&self) {
        assert!(
            isize::try_from(self.row_stride).is_ok() && isize::try_from(self.col_stride).is_ok(),
            "matrix stride too large"
        );
        if self.rows > 0 && self.cols > 0 {
            let last = size_add(size_mul(self.rows - 1, self.row_stride), size_mul(self.cols - 1, self.col_stride));
            assert!(last < self.data.len(), "matrix view out of bounds");
        }
    }
}
