//! Causal depthwise conv1d + SiLU continuing from a conv state: a custom op whose CPU body is
//! `ops::conv::causal_conv_silu`. Functional: returns the new state instead of mutating the old one,
//! so states can be shared (cloned sequences) and the op is the same on any device.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::cpu::{f32s, for_overwrite, held_f32s, no_cuda, zeros};
use super::packed::split_state;
use crate::error::Result;
use crate::ops::conv::causal_conv_silu;

pub struct CausalConvSilu {
    /// `[K, E]`, tap-major (the kernel's layout; stored `[E, 1, K]` in checkpoints).
    weight_t: Tensor,
    /// `[E]` (zeros without conv bias).
    bias: Tensor,
    channels: usize,
    kernel: usize,
}

impl CausalConvSilu {
    pub fn new(weight_t: Tensor, bias: Tensor, channels: usize, kernel: usize) -> Self {
        Self { weight_t, bias, channels, kernel }
    }

    /// `xs`: `[l, width]` rows whose first `E` columns are the conv inputs; `state`: `[E, K]` values
    /// (any shape; kept flat).
    /// Returns `u` `[l, E]` and the state after the last row.
    pub fn forward(&self, xs: &Tensor, state: &Tensor) -> Result<(Tensor, Tensor)> {
        let (l, (e, k)) = (xs.dim(0)?, (self.channels, self.kernel));
        let packed = xs.apply_op2_no_bwd(state, self)?;
        split_state(&packed, e * k, l, e)
    }
}

const NAME: &str = "phoenix-causal-conv-silu";

impl CustomOp2 for CausalConvSilu {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Output: `[E·K + l·E]`: the new state, then `u`.
    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xs_layout: &Layout,
        state: &CpuStorage,
        state_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (e, k) = (self.channels, self.kernel);
        let (l, width) = xs_layout.shape().dims2()?;
        if width < e || state_layout.shape().elem_count() != e * k {
            bail!("{NAME}: input [{l}, {width}] / state {:?} do not fit {e} channels × {k} taps", state_layout.dims());
        }
        let xs = f32s(xs, xs_layout, NAME, "input")?;
        let state = f32s(state, state_layout, NAME, "state")?;
        let (w, wl) = self.weight_t.storage_and_layout();
        let (b, bl) = self.bias.storage_and_layout();
        let (w, b) = (held_f32s(&w, wl, NAME, "weight")?, held_f32s(&b, bl, NAME, "bias")?);
        // The state is copied in below, and the conv writes every (token, channel) of u.
        let mut out = for_overwrite(e * k + l * e, NAME)?;
        let (new_state, u) = out.split_at_mut(e * k);
        new_state.copy_from_slice(state);
        let mut hist = zeros((k - 1) * e, NAME)?;
        causal_conv_silu(xs, width, l, new_state, w, b, &mut hist, u);
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
