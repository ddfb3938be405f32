//! Mamba-2's SSD scan as a custom op whose CPU body is `ops::ssd` (chunked SSD for prefill, the
//! recurrence for one token). Functional like the conv: returns the new SSM state.

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp2, InplaceOp2, Layout, Shape, Tensor};

use super::cpu::{f32s, f32s_mut, for_overwrite, held_f32s, no_cuda};
use super::packed::split_state;
use crate::error::Result;
use crate::ops::ssd::{ssd_chunked, ssd_chunked_in_place, ssd_recurrent, ssd_recurrent_in_place, SsdInputs};

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
        split_state(&packed, s, l, e)
    }

    /// [`Self::forward`] updating `state` (`[H·P·N]` values) in place: a decode step (the
    /// recurrence) or a prompt (the chunked scan), the same bits as `forward`; returns `y`
    /// `[l, H·P]`. Only for a state tensor whose storage nothing else reads (the caller's guarantee).
    pub fn forward_in_place(&self, xbc: &Tensor, dt: &DtOperand, state: &Tensor) -> Result<Tensor> {
        let (l, e) = (xbc.dim(0)?, self.heads * self.head_dim);
        let op = SsdInPlaceOp { scan: self, dt, y: Mutex::new(None) };
        state.inplace_op2(xbc, &op)?;
        let y = op.y.into_inner().map_err(|_| crate::error::internal("ssd: output lock poisoned"))?;
        let y = y.ok_or_else(|| crate::error::internal("ssd: the op produced no output"))?;
        Ok(Tensor::from_vec(y, (l, e), xbc.device())?)
    }

    /// The kernel operands for `l` tokens of `xbc` rows `width` wide (shapes checked).
    fn inputs<'a>(
        &self,
        l: usize,
        width: usize,
        xbc: &'a [f32],
        held: [&'a [f32]; 4],
        dt_width: usize,
        dt_offset: usize,
    ) -> SsdInputs<'a> {
        let [dt, dt_bias, a, d] = held;
        SsdInputs {
            len: l,
            heads: self.heads,
            head_dim: self.head_dim,
            state_size: self.state_size,
            groups: self.groups,
            xbc,
            xbc_stride: width,
            dt,
            dt_stride: dt_width,
            dt_offset,
            dt_bias,
            a,
            d,
            dt_min: self.dt_min,
            dt_max: self.dt_max,
        }
    }

    /// Checks operand shapes for `l` tokens; returns `(l, xbc width, dt width)`.
    fn check_shapes(
        &self,
        xbc: &Layout,
        dt: &DtOperand,
        state_len: usize,
    ) -> candle_core::Result<(usize, usize, usize)> {
        let (h, p, n, g) = (self.heads, self.head_dim, self.state_size, self.groups);
        let (l, width) = xbc.shape().dims2()?;
        let (dt_rows, dt_width) = dt.rows.dims2()?;
        if width != h * p + 2 * g * n || dt_rows != l || dt.offset + h > dt_width || state_len != h * p * n {
            bail!("{NAME}: operand shapes do not fit {l} tokens × {h} heads × {p} × {n} states, {g} groups");
        }
        Ok((l, width, dt_width))
    }
}

/// The scan as an in-place op on the state; `y` comes back through the mutex.
struct SsdInPlaceOp<'a> {
    scan: &'a SsdScan,
    dt: &'a DtOperand<'a>,
    y: Mutex<Option<Vec<f32>>>,
}

impl InplaceOp2 for SsdInPlaceOp<'_> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        state: &mut CpuStorage,
        state_layout: &Layout,
        xbc: &CpuStorage,
        xbc_layout: &Layout,
    ) -> candle_core::Result<()> {
        let sc = self.scan;
        let (l, width, dt_width) = sc.check_shapes(xbc_layout, self.dt, state_layout.shape().elem_count())?;
        let xbc = f32s(xbc, xbc_layout, NAME, "xBC")?;
        let state = f32s_mut(state, state_layout, NAME, "state")?;
        let guards = [self.dt.rows, &sc.dt_bias, &sc.a, &sc.d].map(|t| t.storage_and_layout());
        let held = |i: usize, what: &str| held_f32s(&guards[i].0, guards[i].1, NAME, what);
        let held = [held(0, "dt")?, held(1, "dt bias")?, held(2, "A")?, held(3, "D")?];
        let inputs = sc.inputs(l, width, xbc, held, dt_width, self.dt.offset);
        let Some(len) = l.checked_mul(sc.heads * sc.head_dim) else { bail!("{NAME}: output size overflows") };
        // Both scans write every output row before anything reads it.
        let mut y = for_overwrite(len, NAME)?;
        if l == 1 {
            ssd_recurrent_in_place(&inputs, state, &mut y);
        } else {
            ssd_chunked_in_place(&inputs, sc.chunk, state, &mut y);
        }
        *self.y.lock().map_err(|_| candle_core::Error::Msg(format!("{NAME}: output lock poisoned")))? = Some(y);
        Ok(())
    }

    fn cuda_fwd(
        &self,
        _: &mut candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<()> {
        no_cuda(NAME)
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
        let (e, s) = (sc.heads * sc.head_dim, sc.heads * sc.head_dim * sc.state_size);
        let (l, width, dt_width) = sc.check_shapes(xbc_layout, self.dt, state_layout.shape().elem_count())?;
        let xbc = f32s(xbc, xbc_layout, NAME, "xBC")?;
        let state = f32s(state, state_layout, NAME, "state")?;
        let guards = [self.dt.rows, &sc.dt_bias, &sc.a, &sc.d].map(|t| t.storage_and_layout());
        let held = |i: usize, what: &str| held_f32s(&guards[i].0, guards[i].1, NAME, what);
        let held = [held(0, "dt")?, held(1, "dt bias")?, held(2, "A")?, held(3, "D")?];
        let inputs = sc.inputs(l, width, xbc, held, dt_width, self.dt.offset);
        // Both scans write every head's new state and every output row before anything reads them.
        let mut out = for_overwrite(s + l * e, NAME)?;
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
