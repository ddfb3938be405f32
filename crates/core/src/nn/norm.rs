//! RMSNorm custom ops: per row with a weight, and FalconMamba's weightless norm of column groups.

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::cpu::{f32s, for_overwrite, held_f32s, no_cuda};
use crate::error::Result;
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
