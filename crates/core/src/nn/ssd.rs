//! Mamba-2's SSD scan as a custom op whose CPU body is `ops::ssd` (chunked SSD for prefill, the
//! recurrence for one token). Functional like the conv: returns the new SSM state.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::cpu::{f32s, held_f32s, no_cuda, zeros};
use crate::error::Result;
use crate::ops::ssd::{ssd_chunked, ssd_recurrent, SsdInputs};

/// Per-head parameters and sizes of one layer's scan.
pub struct SsdScan {
    /// `[H]` each: Δ bias, `A = −exp(A_log)`, D skip.
    dt_bias: Tensor,
    a: Tensor,
    d: Tensor,
    heads: usize,
    head_dim: usize,
    state_size: usize,
    groups: usize,
    /// Tokens per SSD tile (prefill calls must split prompts at multiples of it to stay bit-identical).
    chunk: usize,
    dt_min: f32,
    dt_max: f32,
}

/// Sizes of an [`SsdScan`].
#[derive(Debug, Clone, Copy)]
pub struct SsdShape {
    pub heads: usize,
    pub head_dim: usize,
    pub state_size: usize,
    pub groups: usize,
    pub chunk: usize,
    pub dt_min: f32,
    pub dt_max: f32,
}

/// Where the raw Δ sits: `dt_rows[t, dt_offset + h]` (a column range of the in_proj output).
pub struct DtOperand<'a> {
    pub rows: &'a Tensor,
    pub offset: usize,
}

impl SsdScan {
    pub fn new(dt_bias: Tensor, a: Tensor, d: Tensor, s: SsdShape) -> Self {
        let SsdShape { heads, head_dim, state_size, groups, chunk, dt_min, dt_max } = s;
        Self { dt_bias, a, d, heads, head_dim, state_size, groups, chunk, dt_min, dt_max }
    }

    /// `xbc`: `[l, H·P + 2·G·N]` conv output; `state`: `[H·P·N]` values. Returns `y` `[l, H·P]`
    /// (`S·C + D·x`, before the gate) and the state after the last token.
    pub fn forward(&self, xbc: &Tensor, dt: &DtOperand, state: &Tensor) -> Result<(Tensor, Tensor)> {
        let l = xbc.dim(0)?;
        let (e, s) = (self.heads * self.head_dim, self.heads * self.head_dim * self.state_size);
        let packed = xbc.apply_op2_no_bwd(state, &SsdOp { scan: self, dt })?;
        let new_state = packed.narrow(0, 0, s)?;
        let y = packed.narrow(0, s, l * e)?.reshape((l, e))?;
        Ok((y, new_state))
    }
}

struct SsdOp<'a> {
    scan: &'a SsdScan,
    dt: &'a DtOperand<'a>,
}

const NAME: &str = "phoenix-ssd-scan";

impl CustomOp2 for SsdOp<'_> {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Output: `[H·P·N + l·H·P]`: the new state, then `y`.
    fn cpu_fwd(
        &self,
        xbc: &CpuStorage,
        xbc_layout: &Layout,
        state: &CpuStorage,
        state_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let sc = self.scan;
        let (h, p, n, g) = (sc.heads, sc.head_dim, sc.state_size, sc.groups);
        let (e, s) = (h * p, h * p * n);
        let (l, width) = xbc_layout.shape().dims2()?;
        let (dt_rows, dt_width) = self.dt.rows.dims2()?;
        if width != e + 2 * g * n || dt_rows != l || self.dt.offset + h > dt_width || state_layout.shape().elem_count() != s
        {
            bail!("{NAME}: operand shapes do not fit {l} tokens × {h} heads × {p} × {n} states, {g} groups");
        }
        let xbc = f32s(xbc, xbc_layout, NAME, "xBC")?;
        let state = f32s(state, state_layout, NAME, "state")?;
        let guards = [self.dt.rows, &sc.dt_bias, &sc.a, &sc.d].map(|t| t.storage_and_layout());
        let held = |i: usize, what: &str| held_f32s(&guards[i].0, guards[i].1, NAME, what);
        let (dt, dt_bias, a, d) = (held(0, "dt")?, held(1, "dt bias")?, held(2, "A")?, held(3, "D")?);
        let inputs = SsdInputs {
            len: l,
            heads: h,
            head_dim: p,
            state_size: n,
            groups: g,
            xbc,
            xbc_stride: width,
            dt,
            dt_stride: dt_width,
            dt_offset: self.dt.offset,
            dt_bias,
            a,
            d,
            dt_min: sc.dt_min,
            dt_max: sc.dt_max,
        };
        let mut out = zeros(s + l * e, NAME)?;
        let (new_state, y) = out.split_at_mut(s);
        if l == 1 {
            ssd_recurrent(&inputs, state, new_state, y);
        } else {
            ssd_chunked(&inputs, sc.chunk, state, new_state, y);
        }
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }

    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        no_cuda(NAME)
    }
}
