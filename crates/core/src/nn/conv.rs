//! Causal depthwise conv1d + SiLU continuing from a conv state: a custom op whose CPU body is
//! `ops::conv::causal_conv_silu`. Functional: returns the new state instead of mutating the old one,
//! so states can be shared (cloned sequences) and the op is the same on any device.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::cpu::{f32s, for_overwrite, held_f32s, no_cuda, zeros};
use super::packed::split_state;
use crate::error::Result;
use crate::ops::conv::causal_conv_silu;

#[derive(Clone)]
pub struct CausalConvSilu {
    /// `[K, E]`, tap-major (the kernel's layout; stored `[E, 1, K]` in checkpoints).
    weight_t: Tensor,
    /// `[E]` (zeros without conv bias).
    bias: Tensor,
    channels: usize,
    kernel: usize,
    /// Column of an input row where the conv's `E` channels start.
    input_offset: usize,
}

impl CausalConvSilu {
    pub fn new(weight_t: Tensor, bias: Tensor, channels: usize, kernel: usize) -> Self {
        Self { weight_t, bias, channels, kernel, input_offset: 0 }
    }

    /// The same conv reading its channels from columns `offset ..` of each input row: Mamba-2's xBC
    /// inside the in_proj output, read in place instead of copied out (3.7 MB per layer of a
    /// 512-token granite-h-350m prefill).
    pub fn reading_from_column(self, offset: usize) -> Self {
        Self { input_offset: offset, ..self }
    }

    /// `xs`: `[l, width]` rows whose columns `offset .. offset + E` are the conv inputs (offset 0
    /// unless [`Self::reading_from_column`]); `state`: `[E, K]` values (any shape; kept flat).
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
        let (e, k, offset) = (self.channels, self.kernel, self.input_offset);
        let (l, width) = xs_layout.shape().dims2()?;
        if width < offset.saturating_add(e) || state_layout.shape().elem_count() != e * k {
            bail!(
                "{NAME}: input [{l}, {width}] from column {offset} / state {:?} do not fit {e} channels × {k} taps",
                state_layout.dims()
            );
        }
        let xs = f32s(xs, xs_layout, NAME, "input")?;
        // Row 0's channels start at `offset`; with no rows there is nothing to read.
        let xs = xs.get(offset..).unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::CausalConvSilu;

    fn ramp(len: usize, shape: &[usize], seed: usize) -> Tensor {
        let v: Vec<f32> = (0..len).map(|i| (((i + seed) * 37 % 101) as f32 - 50.0) / 100.0).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Reading the channels in place from a column offset gives the bits of the conv over the
    /// columns copied out; rows too narrow for the offset are an error, not a read past them.
    #[test]
    fn reading_from_a_column_matches_the_copied_columns() {
        let (e, k, offset, width) = (24, 4, 10, 40);
        let conv = || CausalConvSilu::new(ramp(k * e, &[k, e], 1), ramp(e, &[e], 2), e, k);
        let state = ramp(e * k, &[e * k], 3);
        for l in [0, 1, 7, 70] {
            let rows = ramp(l * width, &[l, width], 4);
            let copied = rows.narrow(1, offset, e).unwrap().contiguous().unwrap();
            let (u, s) = conv().forward(&copied, &state).unwrap();
            let (u_in_place, s_in_place) = conv().reading_from_column(offset).forward(&rows, &state).unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(flat(&u), flat(&u_in_place), "{l} rows: outputs");
            assert_eq!(flat(&s), flat(&s_in_place), "{l} rows: states");
        }
        let narrow = ramp(3 * (offset + e - 1), &[3, offset + e - 1], 5);
        let err = conv().reading_from_column(offset).forward(&narrow, &state).unwrap_err();
        assert!(err.to_string().contains("from column 10"), "{err}");
    }
}
