//! One sequence's Mamba-2 state: per layer the conv state `[C, K]` (last K pre-conv xBC inputs,
//! oldest first; `C = E + 2·G·N`) and the SSM state `[H, P, N]`, f32. Serialised as those values in
//! little-endian order, layer by layer (conv then SSM); fixed size whatever the context length.
//! [`Mamba2LayerState`] is the per-layer piece a hybrid stack keeps for each of its Mamba-2 layers.

use std::any::Any;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::config::Mamba2MixerConfig;
use crate::error::{state_mismatch, Result};
use crate::model::{ModelState, StateLayout};
use crate::nn::compacted;

/// One Mamba-2 layer's state tensors (flat f32 values). A forward replaces them with new tensors,
/// except on a state no clone shares, whose `ssm` the scan updates in place (prompt or step).
#[derive(Clone)]
pub(crate) struct Mamba2LayerState {
    /// `[C, K]`.
    pub conv: Tensor,
    /// `[H, P, N]`.
    pub ssm: Tensor,
    /// Shared by every clone of this state (forks, checkpoints, layers started from one zero state):
    /// while it is ours alone, nothing else reads `ssm`'s storage.
    owner: Arc<()>,
}

impl Mamba2LayerState {
    /// The empty-context state of a mixer shaped `cfg`.
    pub fn new(cfg: &Mamba2MixerConfig, device: &Device) -> Result<Self> {
        let ssm = cfg.num_heads * cfg.head_dim * cfg.state_size;
        Ok(Self {
            conv: Tensor::zeros(cfg.conv_dim() * cfg.conv_kernel, DType::F32, device)?,
            ssm: Tensor::zeros(ssm, DType::F32, device)?,
            owner: Arc::new(()),
        })
    }

    /// A state with these tensors (fresh from an op: not shared with any other state).
    pub fn from_tensors(conv: Tensor, ssm: Tensor) -> Self {
        Self { conv, ssm, owner: Arc::new(()) }
    }

    /// Whether `ssm` may be updated in place: no clone of this state exists, and `ssm` is not a
    /// view into a wider op output (after a prefill, until [`Self::compact`]).
    pub fn ssm_exclusive(&mut self) -> bool {
        Arc::get_mut(&mut self.owner).is_some() && self.ssm.layout().start_offset() == 0
    }

    /// Appends the conv then SSM values, little-endian f32.
    pub fn write_bytes(&self, out: &mut Vec<u8>) -> Result<()> {
        for t in [&self.conv, &self.ssm] {
            for v in t.to_vec1::<f32>()? {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        Ok(())
    }

    /// Replaces the values from `values` (at least [`Mamba2MixerConfig::state_values`] long, already
    /// checked finite); returns how many were used.
    pub fn read_values(&mut self, values: &[f32]) -> Result<usize> {
        let (c, s) = (self.conv.elem_count(), self.ssm.elem_count());
        let device = self.conv.device().clone();
        self.conv = Tensor::from_slice(&values[..c], c, &device)?;
        self.ssm = Tensor::from_slice(&values[c..c + s], s, &device)?;
        Ok(c + s)
    }

    /// Gives both tensors storage of their own: a copy of each that is a view into an op's larger
    /// packed output (after a short prompt), which would otherwise stay alive.
    pub fn compact(&mut self) -> Result<()> {
        self.conv = compacted(&self.conv)?;
        self.ssm = compacted(&self.ssm)?;
        Ok(())
    }
}

/// Little-endian f32 values of a snapshot; a non-finite one is `E_STATE_MISMATCH` naming the element
/// (a saved state is always finite: NaN / infinity means a damaged or crafted snapshot).
pub(crate) fn finite_values(bytes: &[u8]) -> Result<Vec<f32>> {
    let values: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    if let Some(at) = values.iter().position(|v| !v.is_finite()) {
        return Err(state_mismatch(format!(
            "state snapshot holds a non-finite value (NaN or infinity) at element {at}"
        )));
    }
    Ok(values)
}

/// Sizes that decide a state's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mamba2StateShape {
    pub layers: usize,
    pub conv_dim: usize,
    pub conv_kernel: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub state_size: usize,
}

impl Mamba2StateShape {
    pub fn bytes(&self) -> usize {
        self.layers * (self.conv_dim * self.conv_kernel + self.heads * self.head_dim * self.state_size) * 4
    }
}

pub struct Mamba2State {
    pub(crate) shape: Mamba2StateShape,
    pub(crate) layers: Vec<Mamba2LayerState>,
    /// Tokens consumed since the empty context.
    pub(crate) tokens: u64,
}

impl Mamba2State {
    pub(crate) fn new(shape: Mamba2StateShape, mixer: &Mamba2MixerConfig, device: &Device) -> Result<Self> {
        // Tensors are immutable values (ops return new states), so layers may share the zeros.
        let layer = Mamba2LayerState::new(mixer, device)?;
        Ok(Self { shape, layers: vec![layer; shape.layers], tokens: 0 })
    }

    pub fn shape(&self) -> Mamba2StateShape {
        self.shape
    }
}

impl ModelState for Mamba2State {
    fn layout(&self) -> StateLayout {
        let s = self.shape;
        StateLayout {
            family: "mamba2".to_string(),
            dtype: "f32".to_string(),
            dims: vec![s.layers, s.conv_dim, s.conv_kernel, s.heads, s.head_dim, s.state_size],
            tokens: self.tokens,
        }
    }

    fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.shape.bytes());
        for layer in &self.layers {
            layer.write_bytes(&mut out)?;
        }
        Ok(out)
    }

    fn load_bytes(&mut self, bytes: &[u8], tokens: u64) -> Result<()> {
        let s = self.shape;
        if bytes.len() != s.bytes() {
            return Err(state_mismatch(format!(
                "state snapshot has {} bytes, this model's state has {} (layers {}, conv {}×{}, ssm {}×{}×{})",
                bytes.len(),
                s.bytes(),
                s.layers,
                s.conv_dim,
                s.conv_kernel,
                s.heads,
                s.head_dim,
                s.state_size
            )));
        }
        let values = finite_values(bytes)?;
        let mut at = 0;
        for layer in &mut self.layers {
            at += layer.read_values(&values[at..])?;
        }
        self.tokens = tokens;
        Ok(())
    }

    fn clone_box(&self) -> Box<dyn ModelState> {
        // Tensors are never mutated in place: sharing them is a full copy in value.
        Box::new(Mamba2State { shape: self.shape, layers: self.layers.clone(), tokens: self.tokens })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
