//! Reading a family's tensors out of a [`TensorStore`] with their shapes checked, counting
//! parameters and bytes as held and feeding the weights identity — one reader for every family, so
//! `info`'s numbers and snapshot identities are computed the same way everywhere.

use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::loader::{F32Buf, TensorStore};
use crate::nn::{Linear, RmsNorm, WeightMatrix};
use crate::weights_identity::WeightsDigest;

pub(crate) struct TensorReader<'a> {
    pub store: &'a TensorStore,
    pub device: &'a Device,
    /// Parameters read (a tied head counted once).
    pub count: usize,
    /// Bytes the tensors occupy as held.
    pub bytes: usize,
    pub digest: WeightsDigest,
    /// Dtype of the matrices read so far (`None` before the first, `mixed` once two differ).
    pub dtype: Option<&'static str>,
}

impl<'a> TensorReader<'a> {
    pub fn new(store: &'a TensorStore, device: &'a Device) -> Self {
        Self { store, device, count: 0, bytes: 0, digest: WeightsDigest::new(), dtype: None }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.store.contains(name)
    }

    /// A small per-channel tensor as f32, scanned for NaN / infinity (one skews every output).
    pub fn small(&mut self, name: &str, shape: &[usize]) -> Result<F32Buf> {
        let t = self.store.load_f32_finite(name, shape)?;
        self.count = self.count.saturating_add(t.len());
        self.bytes = self.bytes.saturating_add(t.len().saturating_mul(4));
        self.digest.add(name, &t);
        Ok(t)
    }

    /// [`Self::small`] as a tensor on the device.
    pub fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.small(name, shape)?;
        Ok(Tensor::from_slice(&t, shape, self.device)?)
    }

    /// A large matrix in its stored dtype (mapped where possible; f16 / bf16 stay half precision;
    /// not scanned: a NaN in it shows in the logits, which every step checks).
    pub fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<Arc<WeightMatrix>> {
        let data = self.store.load_matrix(name, &[rows, cols])?;
        self.count = self.count.saturating_add(data.len());
        self.bytes = self.bytes.saturating_add(data.byte_len());
        self.digest.add_values(name, data.len(), |i| data.get_f32(i));
        self.note_dtype(data.dtype_name());
        Ok(Arc::new(WeightMatrix::new(data, rows, cols)))
    }

    /// A `[count, rows, cols]` stack of matrices (a mixture-of-experts layer's experts) as `count`
    /// matrices, each a view of its part of the stored tensor.
    pub fn matrix_stack(
        &mut self,
        name: &str,
        count: usize,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<Arc<WeightMatrix>>> {
        let data = self.store.load_matrix(name, &[count, rows, cols])?;
        self.count = self.count.saturating_add(data.len());
        self.bytes = self.bytes.saturating_add(data.byte_len());
        self.digest.add_values(name, data.len(), |i| data.get_f32(i));
        self.note_dtype(data.dtype_name());
        Ok(data.split(count).into_iter().map(|d| Arc::new(WeightMatrix::new(d, rows, cols))).collect())
    }

    fn note_dtype(&mut self, dtype: &'static str) {
        self.dtype = Some(match self.dtype {
            Some(seen) if seen != dtype => "mixed",
            _ => dtype,
        });
    }

    /// `{name}.weight` `[rows, cols]` and, when `bias`, `{name}.bias` `[rows]`.
    pub fn linear(&mut self, name: &str, rows: usize, cols: usize, bias: bool) -> Result<Linear> {
        let w = self.matrix(&format!("{name}.weight"), rows, cols)?;
        let b = if bias { Some(self.tensor(&format!("{name}.bias"), &[rows])?) } else { None };
        Ok(Linear::new(w, b))
    }

    /// An RMSNorm whose weight is `name` (`[width]`).
    pub fn rms_norm(&mut self, name: &str, width: usize, eps: f32) -> Result<RmsNorm> {
        Ok(RmsNorm::new(self.tensor(name, &[width])?, eps))
    }

    /// [`crate::weights_identity`] of everything read.
    pub fn identity(&self) -> u64 {
        self.digest.finish()
    }
}
