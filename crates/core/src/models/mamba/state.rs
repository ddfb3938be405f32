//! One sequence's Mamba-1 recurrent state: per layer the conv state `[E, K]` (last K pre-conv
//! inputs, oldest first) and the SSM state `[E, N]`, f32 tensors on the model's device. Serialised
//! as those values in little-endian order, layer by layer (conv then SSM); the size is fixed by the
//! model shape, whatever the context length.

use std::any::Any;

use candle_core::{Device, Tensor};

use crate::error::{state_mismatch, Result};
use crate::model::{ModelState, StateLayout};

/// Sizes that decide a state's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateShape {
    pub layers: usize,
    pub channels: usize,
    pub conv_kernel: usize,
    pub state_size: usize,
}

impl StateShape {
    fn per_layer(&self) -> usize {
        self.channels * (self.conv_kernel + self.state_size)
    }

    pub fn bytes(&self) -> usize {
        self.layers * self.per_layer() * 4
    }
}

/// One layer's state tensors.
#[derive(Clone)]
pub(crate) struct LayerState {
    /// `[E, K]` values, flat.
    pub conv: Tensor,
    /// `[E, N]` values, flat.
    pub ssm: Tensor,
}

pub struct MambaState {
    pub(crate) shape: StateShape,
    pub(crate) layers: Vec<LayerState>,
    /// Tokens consumed since the empty context.
    pub(crate) tokens: u64,
}

impl MambaState {
    pub fn new(shape: StateShape, device: &Device) -> Result<Self> {
        let (e, k, n) = (shape.channels, shape.conv_kernel, shape.state_size);
        let layer = LayerState {
            conv: Tensor::zeros(e * k, candle_core::DType::F32, device)?,
            ssm: Tensor::zeros(e * n, candle_core::DType::F32, device)?,
        };
        // Tensors are immutable values (ops return new states), so layers may share the zeros.
        Ok(Self { shape, layers: vec![layer; shape.layers], tokens: 0 })
    }

    pub fn shape(&self) -> StateShape {
        self.shape
    }

    /// Copies every layer's state into storage of its own: after a prefill the states are views
    /// into the chunk's large packed outputs, which would otherwise stay alive.
    pub(crate) fn compact(&mut self) -> Result<()> {
        for layer in &mut self.layers {
            layer.conv = crate::nn::compacted(&layer.conv)?;
            layer.ssm = crate::nn::compacted(&layer.ssm)?;
        }
        Ok(())
    }
}

impl ModelState for MambaState {
    fn layout(&self) -> StateLayout {
        let s = self.shape;
        StateLayout {
            family: "mamba".to_string(),
            dtype: "f32".to_string(),
            dims: vec![s.layers, s.channels, s.conv_kernel, s.state_size],
            tokens: self.tokens,
        }
    }

    fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.shape.bytes());
        for layer in &self.layers {
            for t in [&layer.conv, &layer.ssm] {
                for v in t.to_vec1::<f32>()? {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        Ok(out)
    }

    fn load_bytes(&mut self, bytes: &[u8], tokens: u64) -> Result<()> {
        let s = self.shape;
        if bytes.len() != s.bytes() {
            return Err(state_mismatch(format!(
                "state snapshot has {} bytes, this model's state has {} (layers {}, channels {}, conv {}, state {})",
                bytes.len(),
                s.bytes(),
                s.layers,
                s.channels,
                s.conv_kernel,
                s.state_size
            )));
        }
        let values: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        // A saved state is finite (every step checks its logits): NaN / infinity means a damaged or
        // crafted snapshot, not bad weights, which is what the first logits would otherwise claim.
        if let Some(at) = values.iter().position(|v| !v.is_finite()) {
            return Err(state_mismatch(format!(
                "state snapshot holds a non-finite value (NaN or infinity) at element {at}"
            )));
        }
        let (e, k, n) = (s.channels, s.conv_kernel, s.state_size);
        let mut at = 0;
        for layer in &mut self.layers {
            let device = layer.conv.device().clone();
            layer.conv = Tensor::from_slice(&values[at..at + e * k], e * k, &device)?;
            at += e * k;
            layer.ssm = Tensor::from_slice(&values[at..at + e * n], e * n, &device)?;
            at += e * n;
        }
        self.tokens = tokens;
        Ok(())
    }

    fn clone_box(&self) -> Box<dyn ModelState> {
        // Tensors are never mutated in place: sharing them is a full copy in value.
        Box::new(MambaState { shape: self.shape, layers: self.layers.clone(), tokens: self.tokens })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
