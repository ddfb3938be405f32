//! `y = x · Wᵀ (+ b)` with a [`WeightMatrix`]: a custom op whose CPU body is `ops::matmul::linear_w`
//! (threaded mat-vec for one row, packed GEMM for many). `x` may be a strided 2-D view (e.g. the
//! first columns of a wider activation) without a copy.

use std::sync::Arc;

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::cpu::{no_cuda, zeros};
use super::WeightMatrix;
use crate::error::Result;
use crate::ops::matmul::{linear_w, MatRef};

pub struct Linear {
    weight: Arc<WeightMatrix>,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(weight: Arc<WeightMatrix>, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    pub fn weight(&self) -> &Arc<WeightMatrix> {
        &self.weight
    }

    /// `x`: `[m, in]` f32 → `[m, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.apply_op1_no_bwd(&LinearOp { w: &self.weight })?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

struct LinearOp<'a> {
    w: &'a WeightMatrix,
}

const NAME: &str = "phoenix-linear";

impl CustomOp1 for LinearOp<'_> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, k) = layout.shape().dims2()?;
        if k != self.w.cols {
            bail!("{NAME}: input has {k} columns, the weight {} ({}x{})", self.w.cols, self.w.rows, self.w.cols);
        }
        let CpuStorage::F32(values) = storage else { bail!("{NAME}: input must be f32") };
        let (row_stride, col_stride) = match layout.stride() {
            [r, c] => (*r, *c),
            _ => bail!("{NAME}: input must be 2-D"),
        };
        let x = MatRef { data: &values[layout.start_offset()..], rows: m, cols: k, row_stride, col_stride };
        let n = self.w.rows;
        let mut out = zeros(m * n, NAME)?;
        linear_w(x, self.w.weight_ref(), None, &mut out, false);
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }

    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        no_cuda(NAME)
    }
}
