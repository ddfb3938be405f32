//! Mamba-1's fused selective scan (softplus(dt + bias), discretisation, recurrence, C readout, D skip
//! and the SiLU(z) gate in one pass): a custom op whose CPU body is `ops::scan::selective_scan`.
//! Functional like the conv: returns the new SSM state.

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::cpu::{f32s, for_overwrite, held_f32s, no_cuda};
use super::packed::split_state;
use crate::error::Result;
use crate::ops::scan::{selective_scan_from, ScanInputs};

pub struct SelectiveScan {
    /// `[E, N]` = -exp(A_log).
    a: Tensor,
    /// `[E]`.
    dt_bias: Tensor,
    /// `[E]`.
    d: Tensor,
    channels: usize,
    state_size: usize,
}

/// Where B, C and z sit in the activations the scan reads without copying them out.
pub struct ScanOperands<'a> {
    /// `[l, E]` conv output.
    pub u: &'a Tensor,
    /// `[l, E]` Δ before bias and softplus.
    pub dt: &'a Tensor,
    /// `[l, width]` rows holding B at `b_offset` and C at `c_offset` (N values each).
    pub bc: &'a Tensor,
    pub b_offset: usize,
    pub c_offset: usize,
    /// `[l, width]` rows holding the gate z at `z_offset` (E values).
    pub z: &'a Tensor,
    pub z_offset: usize,
}

impl SelectiveScan {
    pub fn new(a: Tensor, dt_bias: Tensor, d: Tensor, channels: usize, state_size: usize) -> Self {
        Self { a, dt_bias, d, channels, state_size }
    }

    /// Runs the scan from `state` (`[E, N]` values, kept flat); returns `y` `[l, E]` and the state
    /// after the last token.
    pub fn forward(&self, x: &ScanOperands, state: &Tensor) -> Result<(Tensor, Tensor)> {
        let (l, e, n) = (x.u.dim(0)?, self.channels, self.state_size);
        let op = ScanOp { scan: self, x };
        let packed = x.u.apply_op3_no_bwd(x.dt, state, &op)?;
        split_state(&packed, e * n, l, e)
    }
}

struct ScanOp<'a> {
    scan: &'a SelectiveScan,
    x: &'a ScanOperands<'a>,
}

const NAME: &str = "phoenix-selective-scan";

impl CustomOp3 for ScanOp<'_> {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Output: `[E·N + l·E]`: the new state, then `y`.
    fn cpu_fwd(
        &self,
        u: &CpuStorage,
        u_layout: &Layout,
        dt: &CpuStorage,
        dt_layout: &Layout,
        state: &CpuStorage,
        state_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (e, n) = (self.scan.channels, self.scan.state_size);
        let (l, ue) = u_layout.shape().dims2()?;
        let (bc_rows, bc_width) = self.x.bc.dims2()?;
        let (z_rows, z_width) = self.x.z.dims2()?;
        if ue != e
            || dt_layout.shape().dims2()? != (l, e)
            || state_layout.shape().elem_count() != e * n
            || bc_rows != l
            || z_rows != l
            || self.x.b_offset.max(self.x.c_offset) + n > bc_width
            || self.x.z_offset + e > z_width
        {
            bail!("{NAME}: operand shapes do not fit {l} tokens × {e} channels × {n} states");
        }
        let (u, dt, state) = (
            f32s(u, u_layout, NAME, "u")?,
            f32s(dt, dt_layout, NAME, "dt")?,
            f32s(state, state_layout, NAME, "state")?,
        );
        let guards =
            [self.x.bc, self.x.z, &self.scan.a, &self.scan.dt_bias, &self.scan.d].map(|t| t.storage_and_layout());
        let held = |i: usize, what: &str| held_f32s(&guards[i].0, guards[i].1, NAME, what);
        let (bc, z, a, dt_bias, d) =
            (held(0, "B/C")?, held(1, "z")?, held(2, "A")?, held(3, "dt bias")?, held(4, "D")?);
        let inputs = ScanInputs {
            len: l,
            u,
            dt,
            dt_bias,
            a,
            bc,
            bc_stride: bc_width,
            b_offset: self.x.b_offset,
            c_offset: self.x.c_offset,
            d,
            z,
            z_stride: z_width,
            z_offset: self.x.z_offset,
        };
        // The scan writes the whole new state and every (token, channel) of y.
        let mut out = for_overwrite(e * n + l * e, NAME)?;
        let (new_state, y) = out.split_at_mut(e * n);
        selective_scan_from(&inputs, state, new_state, y);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }

    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        no_cuda(NAME)
    }
}
