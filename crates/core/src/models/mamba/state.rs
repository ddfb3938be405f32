//! One sequence's Mamba-1 recurrent state: per layer the conv state `[E, K]` (last K pre-conv
//! inputs, oldest first) followed by the SSM state `[E, N]`, all f32. Serialised as those values in
//! little-endian order; the size is fixed by the model shape, whatever the context length.

use std::any::Any;

use crate::error::{state_mismatch, Result};
use crate::model::ModelState;

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

/// Reusable activation buffers (not part of the state's value; never serialised or cloned).
#[derive(Default)]
pub(crate) struct Scratch {
    pub residual: Vec<f32>,
    pub normed: Vec<f32>,
    pub xz: Vec<f32>,
    pub u: Vec<f32>,
    pub x_dbl: Vec<f32>,
    pub dt: Vec<f32>,
    pub y: Vec<f32>,
    pub conv_hist: Vec<f32>,
}

pub struct MambaState {
    pub(crate) shape: StateShape,
    /// `layers × ([E, K] conv, then [E, N] ssm)`.
    pub(crate) data: Vec<f32>,
    pub(crate) scratch: Scratch,
}

impl MambaState {
    pub fn new(shape: StateShape) -> Self {
        Self { shape, data: vec![0.0; shape.bytes() / 4], scratch: Scratch::default() }
    }

    pub fn shape(&self) -> StateShape {
        self.shape
    }

    /// Mutable conv `[E, K]` and ssm `[E, N]` states of `layer`, plus the scratch buffers.
    pub(crate) fn layer_mut(&mut self, layer: usize) -> (&mut [f32], &mut [f32], &mut Scratch) {
        let s = self.shape;
        let block = &mut self.data[layer * s.per_layer()..(layer + 1) * s.per_layer()];
        let (conv, ssm) = block.split_at_mut(s.channels * s.conv_kernel);
        (conv, ssm, &mut self.scratch)
    }
}

impl ModelState for MambaState {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() * 4);
        for v in &self.data {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    fn load_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() != self.shape.bytes() {
            return Err(state_mismatch(format!(
                "state snapshot has {} bytes, this model's state has {} (layers {}, channels {}, conv {}, state {})",
                bytes.len(),
                self.shape.bytes(),
                self.shape.layers,
                self.shape.channels,
                self.shape.conv_kernel,
                self.shape.state_size
            )));
        }
        for (v, b) in self.data.iter_mut().zip(bytes.chunks_exact(4)) {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(())
    }

    fn clone_box(&self) -> Box<dyn ModelState> {
        Box::new(MambaState { shape: self.shape, data: self.data.clone(), scratch: Scratch::default() })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
