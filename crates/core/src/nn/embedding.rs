//! Token embedding: rows of a [`WeightMatrix`] gathered for a list of ids (checked by the caller).

use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::WeightMatrix;
use crate::error::{internal, Result};

pub struct Embedding {
    weight: Arc<WeightMatrix>,
}

impl Embedding {
    pub fn new(weight: Arc<WeightMatrix>) -> Self {
        Self { weight }
    }

    pub fn weight(&self) -> &Arc<WeightMatrix> {
        &self.weight
    }

    /// `[ids.len(), hidden]` f32 on `device`. Every id must be `< rows`.
    pub fn forward(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        let d = self.weight.cols;
        let mut out = vec![0f32; ids.len() * d];
        for (row, &id) in out.chunks_exact_mut(d).zip(ids) {
            if id as usize >= self.weight.rows {
                return Err(internal(format!("embedding: id {id} past {} rows", self.weight.rows)));
            }
            self.weight.row_into(id as usize, row);
        }
        Ok(Tensor::from_vec(out, (ids.len(), d), device)?)
    }
}
