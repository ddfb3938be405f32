//! RMSNorm custom ops: per row with a weight, and FalconMamba's weightless norm of column groups.

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::cpu::{f32s, for_overwrite, held_f32s, no_cuda};
use super::Linear;
use crate::error::Result;
use crate::ops::matmul::{linear_from_rows, RowSource};
use crate::ops::norm::{rms_norm_in_place, rms_norm_rows};

/// `x * rsqrt(mean(x²) + eps) * weight` over the last dimension.
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f32) -> Self {
        Self { weight, eps }
    }

    /// `x`: `[m, width]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.apply_op1_no_bwd(&RmsNormOp { weight: &self.weight, eps: self.eps })?)
    }

    /// `proj(self(x))` in one op: the normalised rows are made as the product packs its operand
    /// (`ops::matmul::linear_from_rows`), never written out as a matrix. The bits of
    /// `proj.forward(&self.forward(x)?)`.
    pub fn project(&self, x: &Tensor, proj: &Linear) -> Result<Tensor> {
        proj.with_bias(x.apply_op1_no_bwd(&RmsNormProjectOp { weight: &self.weight, eps: self.eps, proj })?)
    }
}

struct RmsNormProjectOp<'a> {
    weight: &'a Tensor,
    eps: f32,
    proj: &'a Linear,
}

const PROJECT_NAME: &str = "phoenix-rms-norm-project";

impl CustomOp1 for RmsNormProjectOp<'_> {
    fn name(&self) -> &'static str {
        PROJECT_NAME
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32s(storage, layout, PROJECT_NAME, "input")?;
        let (m, width) = layout.shape().dims2()?;
        let (weight, weight_layout) = self.weight.storage_and_layout();
        let w = held_f32s(&weight, weight_layout, PROJECT_NAME, "weight")?;
        let proj = self.proj.weight();
        if w.len() != width || proj.cols != width {
            bail!("{PROJECT_NAME}: weights of {} and {}x{} for rows of {width}", w.len(), proj.rows, proj.cols);
        }
        let Some(len) = m.checked_mul(proj.rows) else { bail!("{PROJECT_NAME}: output size overflows") };
        // Every product path stores each output when not accumulating (`ops::product_tests`).
        let mut out = for_overwrite(len, PROJECT_NAME)?;
        let fill = |t: usize, row: &mut [f32]| rms_norm_rows(&x[t * width..(t + 1) * width], w, self.eps, row);
        let rows = RowSource { rows: m, cols: width, fill: &fill };
        linear_from_rows(rows, proj.weight_ref(), &mut out, false, self.proj.rounding());
        Ok((CpuStorage::F32(out), Shape::from((m, proj.rows))))
    }

    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        no_cuda(PROJECT_NAME)
    }
}

struct RmsNormOp<'a> {
    weight: &'a Tensor,
    eps: f32,
}

/// Values per task when a norm's rows are split across the pool.
const PARALLEL_NORM_VALUES: usize = 32 * 1024;

const NAME: &str = "phoenix-rms-norm";

impl CustomOp1 for RmsNormOp<'_> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32s(storage, layout, NAME, "input")?;
        let (_, width) = layout.shape().dims2()?;
        let (weight, weight_layout) = self.weight.storage_and_layout();
        let w = held_f32s(&weight, weight_layout, NAME, "weight")?;
        if w.len() != width {
            bail!("{NAME}: weight has {} values for rows of {width}", w.len());
        }
        // Every row is normalised in full.
        let mut out = for_overwrite(x.len(), NAME)?;
        // A prefill's rows are split across the pool (serial, they left the other threads idle).
        if x.len() >= 2 * PARALLEL_NORM_VALUES && rayon::current_num_threads() > 1 {
            use rayon::prelude::*;
            let chunk = (PARALLEL_NORM_VALUES / width).max(1) * width;
            out.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(o, x)| rms_norm_rows(x, w, self.eps, o));
        } else {
            rms_norm_rows(x, w, self.eps, &mut out);
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        no_cuda(NAME)
    }
}

/// Weightless RMSNorm of consecutive column groups of each row (FalconMamba's dt / B / C norms):
/// `widths` must add up to the row width.
pub struct GroupRmsNorm {
    pub widths: Vec<usize>,
    pub eps: f32,
}

impl GroupRmsNorm {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.apply_op1_no_bwd(self)?)
    }
}

const GROUP_NAME: &str = "phoenix-group-rms-norm";

impl CustomOp1 for GroupRmsNorm {
    fn name(&self) -> &'static str {
        GROUP_NAME
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32s(storage, layout, GROUP_NAME, "input")?;
        let (_, width) = layout.shape().dims2()?;
        if self.widths.iter().sum::<usize>() != width {
            bail!("{GROUP_NAME}: groups {:?} do not cover rows of {width}", self.widths);
        }
        let mut out = x.to_vec();
        for row in out.chunks_exact_mut(width) {
            let mut rest = row;
            for &w in &self.widths {
                let (group, tail) = rest.split_at_mut(w);
                rms_norm_in_place(group, self.eps);
                rest = tail;
            }
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        no_cuda(GROUP_NAME)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use candle_core::{Device, Tensor};

    use super::*;
    use crate::loader::{Buf, MatrixData};
    use crate::nn::WeightMatrix;

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| (((i * 29 + seed * 13) % 19) as f32 - 9.0) * 0.07).collect()
    }

    /// The fused norm + projection gives the bits of the norm, then the projection: on AMX tiles
    /// (many rows), as a mat-vec (one row), with a bias.
    #[test]
    fn project_equals_the_norm_then_the_projection() {
        let device = Device::Cpu;
        let (d, n) = (96, 128);
        let norm = RmsNorm::new(Tensor::from_vec(values(d, 1), d, &device).unwrap(), 1e-5);
        let weight = Arc::new(WeightMatrix::new(MatrixData::F32(Buf::Owned(values(n * d, 2))), n, d));
        let bias = Tensor::from_vec(values(n, 3), n, &device).unwrap();
        for m in [1, 5, 70] {
            let x = Tensor::from_vec(values(m * d, 4), (m, d), &device).unwrap();
            for proj in [Linear::new(weight.clone(), None), Linear::new(weight.clone(), Some(bias.clone()))] {
                let want = proj.forward(&norm.forward(&x).unwrap()).unwrap().to_vec2::<f32>().unwrap();
                let got = norm.project(&x, &proj).unwrap().to_vec2::<f32>().unwrap();
                assert_eq!(got, want, "{m} rows, bias {}", proj.bias().is_some());
            }
        }
    }
}
