//! Mamba-2's gated RMSNorm (mamba_ssm `rms_norm_ref`, `norm_before_gate=False`): `g = y · silu(z)`,
//! normalised within each of `G` groups of `E/G` consecutive channels, times the weight. A custom op
//! whose CPU body is `ops::ssd_norm::gated_group_rms_norm`; `z` is read in place from the in_proj output.

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::cpu::{f32s, for_overwrite, held_f32s, no_cuda};
use crate::error::Result;
use crate::ops::ssd_norm::gated_group_rms_norm;

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
