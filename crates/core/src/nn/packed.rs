//! Splitting a stateful op's packed output (`[state, rows]` in one buffer, written in one pass)
//! into the new state and the rows, without the state pinning the rows' memory.
//!
//! A view into the packed buffer would keep the whole buffer alive for as long as the state lives:
//! each layer's state would hold its prompt-long conv / scan output (Mamba-130M, 512 tokens: 24
//! layers × 2 ops × 3 MB ≈ 150 MB resident until the next call). So when the rows outweigh the
//! state, the state is copied out (O(state) — small next to the op) and the buffer is freed with
//! the rows; for one decode token the view is kept (the rows are smaller than the state).

use candle_core::Tensor;

use crate::error::Result;

/// `packed` (1-D, `state_len + rows · cols` values) as (`[rows, cols]` output, the state's
/// `state_len` values), the state in its own storage unless the rest is smaller than it.
pub(crate) fn split_state(packed: &Tensor, state_len: usize, rows: usize, cols: usize) -> Result<(Tensor, Tensor)> {
    let state = packed.narrow(0, 0, state_len)?;
    let out_len = rows.saturating_mul(cols);
    let state = if out_len > state_len { state.force_contiguous()? } else { state };
    let out = packed.narrow(0, state_len, out_len)?.reshape((rows, cols))?;
    Ok((out, state))
}

/// `t` in storage of its own: `t` itself when it is all of its storage, else a copy (a view into
/// a wider op output would keep all of it alive).
pub(crate) fn compacted(t: &Tensor) -> Result<Tensor> {
    use candle_core::{CpuStorage, Storage};
    let whole = {
        let (storage, layout) = t.storage_and_layout();
        let held = match &*storage {
            Storage::Cpu(CpuStorage::F32(v)) => Some(v.len()),
            _ => None,
        };
        layout.is_contiguous() && layout.start_offset() == 0 && held == Some(t.elem_count())
    };
    Ok(if whole { t.clone() } else { t.copy()? })
}

/// Values held by the storage under `t` (tests: what a tensor keeps alive).
#[cfg(test)]
pub(crate) fn storage_len(t: &Tensor) -> usize {
    use candle_core::{CpuStorage, Storage};
    let (storage, _) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(CpuStorage::F32(v)) => v.len(),
        _ => panic!("storage_len: not f32 CPU storage"),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::nn::scan::ScanOperands;
    use crate::nn::ssd::{DtOperand, SsdScan, SsdShape};
    use crate::nn::{CausalConvSilu, SelectiveScan};

    fn ramp(len: usize, shape: &[usize]) -> Tensor {
        let v: Vec<f32> = (0..len).map(|i| ((i * 37 % 101) as f32 - 50.0) / 100.0).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// A prompt's state holds only itself; the values equal the view's (copied, not recomputed).
    fn assert_owns_its_state(what: &str, state: &Tensor, state_len: usize, view: &Tensor) {
        assert_eq!(state.elem_count(), state_len, "{what}: state size");
        assert_eq!(storage_len(state), state_len, "{what}: the state keeps the prompt's whole output alive");
        assert_eq!(state.to_vec1::<f32>().unwrap(), view.to_vec1::<f32>().unwrap(), "{what}: state values");
    }

    #[test]
    fn prompt_states_do_not_pin_the_ops_outputs() {
        let (l, e, k, n) = (64, 8, 4, 4);
        // Conv: state [E·K] after 64 rows of [l, E].
        let conv = CausalConvSilu::new(ramp(k * e, &[k, e]), ramp(e, &[e]), e, k);
        let xs = ramp(l * e, &[l, e]);
        let (u, state) = conv.forward(&xs, &ramp(e * k, &[e * k])).unwrap();
        let (u1, state1) = conv.forward(&xs.narrow(0, 0, 1).unwrap(), &ramp(e * k, &[e * k])).unwrap();
        assert_eq!(u.dims(), [l, e]);
        let packed = xs.apply_op2_no_bwd(&ramp(e * k, &[e * k]), &conv).unwrap();
        assert_owns_its_state("conv", &state, e * k, &packed.narrow(0, 0, e * k).unwrap());
        // One decode row: the rows are smaller than the state, the view is kept (no copy per token).
        assert_eq!((u1.dims(), state1.elem_count()), ([1, e].as_slice(), e * k));

        // Mamba-1 selective scan: state [E·N].
        let scan =
            SelectiveScan::new(ramp(e * n, &[e, n]).abs().unwrap().neg().unwrap(), ramp(e, &[e]), ramp(e, &[e]), e, n);
        let (dt, bc, z) = (ramp(l * e, &[l, e]), ramp(l * 2 * n, &[l, 2 * n]), ramp(l * e, &[l, e]));
        let ops = ScanOperands { u: &u, dt: &dt, bc: &bc, b_offset: 0, c_offset: n, z: &z, z_offset: 0 };
        let (y, state) = scan.forward(&ops, &ramp(e * n, &[e * n])).unwrap();
        assert_eq!(y.dims(), [l, e]);
        assert_eq!(storage_len(&state), e * n, "scan: the state keeps the prompt's whole output alive");

        // Mamba-2 SSD: state [H·P·N].
        let (h, p, g) = (2, 4, 1);
        let shape =
            SsdShape { heads: h, head_dim: p, state_size: n, groups: g, chunk: 16, dt_min: 0.0, dt_max: f32::INFINITY };
        let ssd = SsdScan::new(ramp(h, &[h]), ramp(h, &[h]).abs().unwrap().neg().unwrap(), ramp(h, &[h]), shape);
        let xbc = ramp(l * (h * p + 2 * g * n), &[l, h * p + 2 * g * n]);
        let dt_rows = ramp(l * h, &[l, h]);
        let (y, state) =
            ssd.forward(&xbc, &DtOperand { rows: &dt_rows, offset: 0 }, &ramp(h * p * n, &[h * p * n])).unwrap();
        assert_eq!(y.dims(), [l, h * p]);
        assert_eq!(storage_len(&state), h * p * n, "ssd: the state keeps the prompt's whole output alive");
    }
}
