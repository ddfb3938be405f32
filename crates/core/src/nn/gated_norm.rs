//! Mamba-2's gated RMSNorm (mamba_ssm `rms_norm_ref`, `norm_before_gate=False`): `g = y · silu(z)`,
//! normalised within each of `G` groups of `E/G` consecutive channels, times the weight. A custom op
//! whose CPU body is `ops::ssd_norm::gated_group_rms_norm`; `z` is read in place from the in_proj output.

use candle_core::{bail, CpuStorage, CustomOp1, InplaceOp3, Layout, Shape, Tensor};

use super::cpu::{f32s, f32s_mut, for_overwrite, held_f32s, no_cuda};
use super::Linear;
use crate::error::Result;
use crate::ops::matmul::{linear_from_rows, RowSource};
use crate::ops::ssd_norm::{gated_group_rms_norm, gated_norm_row};

pub struct GatedGroupRmsNorm {
    /// `[E]`.
    weight: Tensor,
    groups: usize,
    eps: f32,
}

/// Where the gate sits: `rows[t, offset + c]` for the `E` channels.
pub struct GateOperand<'a> {
    pub rows: &'a Tensor,
    pub offset: usize,
}

impl GatedGroupRmsNorm {
    pub fn new(weight: Tensor, groups: usize, eps: f32) -> Self {
        Self { weight, groups, eps }
    }

    /// `residual + proj(self(y, z))` into `residual`'s own storage (a running sum no other tensor
    /// shares, as [`Linear::add_into`]): the normalised rows are made as the product packs its
    /// operand (`ops::matmul::linear_from_rows`), never written out as an `[l, E]` matrix — 3 MB
    /// written and read back per layer of a 512-token Mamba-2-130M prefill. The bits of
    /// `proj.add_into(&self.forward(y, z)?, residual)`.
    pub fn project_add(&self, y: &Tensor, z: &GateOperand, proj: &Linear, residual: Tensor) -> Result<Tensor> {
        residual.inplace_op3(y, z.rows, &GatedNormProjectOp { norm: self, z_offset: z.offset, proj })?;
        proj.with_bias(residual)
    }

    /// `y`: `[l, E]` → `[l, E]`.
    pub fn forward(&self, y: &Tensor, z: &GateOperand) -> Result<Tensor> {
        Ok(y.apply_op1_no_bwd(&GatedNormOp { norm: self, z })?)
    }
}

struct GatedNormOp<'a> {
    norm: &'a GatedGroupRmsNorm,
    z: &'a GateOperand<'a>,
}

const NAME: &str = "phoenix-gated-group-rms-norm";

impl CustomOp1 for GatedNormOp<'_> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = f32s(storage, layout, NAME, "input")?;
        let (l, e) = layout.shape().dims2()?;
        let (z_rows, z_width) = self.z.rows.dims2()?;
        let guards = [self.z.rows, &self.norm.weight].map(|t| t.storage_and_layout());
        let z = held_f32s(&guards[0].0, guards[0].1, NAME, "z")?;
        let w = held_f32s(&guards[1].0, guards[1].1, NAME, "weight")?;
        let g = self.norm.groups;
        if w.len() != e || g == 0 || e % g != 0 || z_rows != l || self.z.offset + e > z_width {
            bail!("{NAME}: input [{l}, {e}], gate [{z_rows}, {z_width}] at {}, {g} groups do not fit", self.z.offset);
        }
        // Every row is written (gate product, then scaled in place) before anything reads it.
        let mut out = for_overwrite(l * e, NAME)?;
        gated_group_rms_norm(y, &z[self.z.offset..], z_width, w, g, self.norm.eps, &mut out);
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

struct GatedNormProjectOp<'a> {
    norm: &'a GatedGroupRmsNorm,
    z_offset: usize,
    proj: &'a Linear,
}

const PROJECT_NAME: &str = "phoenix-gated-norm-project-add";

impl InplaceOp3 for GatedNormProjectOp<'_> {
    fn name(&self) -> &'static str {
        PROJECT_NAME
    }

    /// `s1` (the residual `[l, D]`, updated) `+= proj(norm(s2 = y [l, E], s3 = gate rows))`.
    fn cpu_fwd(
        &self,
        residual: &mut CpuStorage,
        residual_layout: &Layout,
        y: &CpuStorage,
        y_layout: &Layout,
        z: &CpuStorage,
        z_layout: &Layout,
    ) -> candle_core::Result<()> {
        let (l, e) = y_layout.shape().dims2()?;
        let (z_rows, z_width) = z_layout.shape().dims2()?;
        let w = self.proj.weight();
        let (g, offset) = (self.norm.groups, self.z_offset);
        if z_rows != l || offset.checked_add(e).is_none_or(|end| end > z_width) || w.cols != e {
            bail!(
                "{PROJECT_NAME}: input [{l}, {e}], gate [{z_rows}, {z_width}] at {offset}, weight {}x{} do not fit",
                w.rows,
                w.cols
            );
        }
        if residual_layout.shape().dims2()? != (l, w.rows) {
            bail!("{PROJECT_NAME}: residual {:?} is not [{l}, {}]", residual_layout.dims(), w.rows);
        }
        let y = f32s(y, y_layout, PROJECT_NAME, "input")?;
        let z = f32s(z, z_layout, PROJECT_NAME, "z")?;
        let guard = self.norm.weight.storage_and_layout();
        let weight = held_f32s(&guard.0, guard.1, PROJECT_NAME, "weight")?;
        if weight.len() != e || g == 0 || e % g != 0 {
            bail!("{PROJECT_NAME}: norm weight of {} values, {g} groups, for {e} channels", weight.len());
        }
        let eps = self.norm.eps;
        let fill = |t: usize, row: &mut [f32]| {
            let zt = &z[t * z_width + offset..t * z_width + offset + e];
            gated_norm_row(&y[t * e..(t + 1) * e], zt, weight, g, eps, row);
        };
        let out = f32s_mut(residual, residual_layout, PROJECT_NAME, "residual")?;
        linear_from_rows(RowSource { rows: l, cols: e, fill: &fill }, w.weight_ref(), out, true, self.proj.rounding());
        Ok(())
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
        (0..len).map(|i| (((i * 31 + seed * 17) % 23) as f32 - 11.0) * 0.05).collect()
    }

    /// The fused norm + projection gives the bits of the norm, then the projection added: on AMX
    /// tiles (many rows: the rows made as they are packed), as a mat-vec (one row), and with a bias; the residual it is given is the sum afterwards.
    #[test]
    fn project_add_equals_the_norm_then_the_projection() {
        let device = Device::Cpu;
        let (e, d, g, width) = (96, 128, 3, 96 + 40);
        let norm = GatedGroupRmsNorm::new(Tensor::from_vec(values(e, 1), e, &device).unwrap(), g, 1e-5);
        let weight = Arc::new(WeightMatrix::new(MatrixData::F32(Buf::Owned(values(d * e, 2))), d, e));
        let bias = Tensor::from_vec(values(d, 3), d, &device).unwrap();
        for l in [1, 7, 70] {
            let y = Tensor::from_vec(values(l * e, 4), (l, e), &device).unwrap();
            let rows = Tensor::from_vec(values(l * width, 5), (l, width), &device).unwrap();
            let z = GateOperand { rows: &rows, offset: 40 };
            let residual = Tensor::from_vec(values(l * d, 6), (l, d), &device).unwrap();
            for proj in [Linear::new(weight.clone(), None), Linear::new(weight.clone(), Some(bias.clone()))] {
                let want = proj.add_into(&norm.forward(&y, &z).unwrap(), residual.copy().unwrap()).unwrap();
                let given = residual.copy().unwrap();
                let handle = given.clone();
                let got = norm.project_add(&y, &z, &proj, given).unwrap();
                let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(bits(&got), bits(&want), "{l} rows, bias {}", proj.bias().is_some());
                if proj.bias().is_none() {
                    assert_eq!(bits(&handle), bits(&want), "{l} rows: not added in place");
                }
                assert_ne!(bits(&got), bits(&residual), "{l} rows: nothing was added");
            }
        }
    }
}
