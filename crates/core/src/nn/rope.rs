//! Rotary position embedding (RoPE) in the Hugging Face "rotate_half" layout: dimension `j` of a head
//! turns with `j + head_dim/2` by the angle `position · inv_freq[j]` — or, for GGUF Llama weights,
//! in the interleaved layout: dimension `2j` turns with `2j + 1` by the same angle.
//!
//! The frequencies follow transformers' `modeling_rope_utils` for each scaling kind; angles are formed
//! in f32 as transformers does (`inv_freq.float() @ positions.float()`), so positions far into the
//! context round the same way. cos/sin rows are computed once per chunk of positions and shared by
//! every layer ([`RopeTables`]): memory stays O(chunk), never O(context) per model.

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::cpu::{f32s, no_cuda, zeros};
use crate::error::Result;
use crate::ops::rope::{rotate_half_rows, rotate_pairs_rows};

/// A scaling kind with its parameters, as `rope_type` / `rope_scaling.type` names it.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    Default,
    /// Positions divided by `factor` (inverse frequencies divided by it).
    Linear {
        factor: f64,
    },
    /// NTK-aware: the base grows with the sequence once it passes `max_position_embeddings`.
    Dynamic {
        factor: f64,
        max_position_embeddings: usize,
    },
    /// Llama 3.1: long wavelengths divided by `factor`, short ones kept, a smooth ramp between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    /// YaRN: ramp between interpolated and extrapolated frequencies, cos/sin scaled by `attention_factor`.
    Yarn {
        factor: f64,
        original_max_position_embeddings: usize,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: f64,
        truncate: bool,
    },
}

impl RopeScaling {
    /// The `rope_type` spelling (for `info`).
    pub fn kind(&self) -> &'static str {
        match self {
            RopeScaling::Default => "default",
            RopeScaling::Linear { .. } => "linear",
            RopeScaling::Dynamic { .. } => "dynamic",
            RopeScaling::Llama3 { .. } => "llama3",
            RopeScaling::Yarn { .. } => "yarn",
        }
    }
}

/// What fixes a model's rotary embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeSpec {
    pub theta: f64,
    /// Rotated dimensions per head (the whole head).
    pub dim: usize,
    pub scaling: RopeScaling,
    /// Turn adjacent pairs `(2j, 2j+1)` (Meta's original layout, kept by llama.cpp's GGUF files
    /// whose Q/K rows the converter permuted) instead of `(j, j + dim/2)`.
    pub interleaved: bool,
}

impl RopeSpec {
    /// Inverse frequencies (`dim/2`, rounded to f32 as transformers' buffer is) and the factor cos/sin
    /// are scaled by, for a forward whose last position is `seq_len - 1` (only `dynamic` depends on it).
    pub fn frequencies(&self, seq_len: usize) -> (Vec<f32>, f32) {
        let dim = self.dim as f64;
        let half = self.dim / 2;
        let plain = |base: f64| -> Vec<f64> { (0..half).map(|j| 1.0 / base.powf((2 * j) as f64 / dim)).collect() };
        let (inv, scale): (Vec<f64>, f64) = match self.scaling {
            RopeScaling::Default => (plain(self.theta), 1.0),
            RopeScaling::Linear { factor } => (plain(self.theta).into_iter().map(|f| f / factor).collect(), 1.0),
            RopeScaling::Dynamic { factor, max_position_embeddings: mpe } => {
                let seq = seq_len.max(mpe) as f64;
                let base = self.theta * ((factor * seq / mpe as f64) - (factor - 1.0)).powf(dim / (dim - 2.0));
                (plain(base), 1.0)
            }
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                let old = original_max_position_embeddings as f64;
                let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
                let inv = plain(self.theta)
                    .into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect();
                (inv, 1.0)
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                attention_factor,
                truncate,
            } => {
                let base = self.theta;
                let correction_dim = |rotations: f64| {
                    dim * (original_max_position_embeddings as f64 / (rotations * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * base.ln())
                };
                let (mut low, mut high) = (correction_dim(beta_fast), correction_dim(beta_slow));
                if truncate {
                    (low, high) = (low.floor(), high.ceil());
                }
                let (low, mut high) = (low.max(0.0), high.min(dim - 1.0));
                if low == high {
                    high += 0.001;
                }
                let inv = plain(base)
                    .into_iter()
                    .enumerate()
                    .map(|(j, extrapolated)| {
                        let ramp = ((j as f64 - low) / (high - low)).clamp(0.0, 1.0);
                        let keep = 1.0 - ramp;
                        extrapolated / factor * (1.0 - keep) + extrapolated * keep
                    })
                    .collect();
                (inv, attention_factor)
            }
        };
        (inv.into_iter().map(|f| f as f32).collect(), scale as f32)
    }

    /// cos/sin for positions `start .. start + len` of a forward ending at `start + len`.
    pub fn tables(&self, start: usize, len: usize) -> Result<RopeTables> {
        let (inv, scale) = self.frequencies(start.saturating_add(len));
        let half = inv.len();
        let n = len.checked_mul(half).ok_or_else(|| crate::error::invalid_option("rope: too many positions"))?;
        let mut cos = Vec::with_capacity(n);
        let mut sin = Vec::with_capacity(n);
        for p in start..start + len {
            for &f in &inv {
                // f32 angle, as transformers forms it; cos/sin of that f32 value.
                let angle = (p as f32 * f) as f64;
                cos.push(angle.cos() as f32 * scale);
                sin.push(angle.sin() as f32 * scale);
            }
        }
        Ok(RopeTables { start, len, half, interleaved: self.interleaved, cos, sin })
    }
}

/// cos/sin rows (`len × dim/2`, already scaled by the attention factor) for a run of positions.
pub struct RopeTables {
    pub start: usize,
    pub len: usize,
    half: usize,
    interleaved: bool,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTables {
    /// Rotates every head of `x` (`[len, heads · dim]`, one row per position of these tables).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.apply_op1_no_bwd(&RopeOp { t: self })?)
    }
}

struct RopeOp<'a> {
    t: &'a RopeTables,
}

const NAME: &str = "phoenix-rope";

impl CustomOp1 for RopeOp<'_> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32s(storage, layout, NAME, "input")?;
        let (rows, width) = layout.shape().dims2()?;
        let head = 2 * self.t.half;
        if rows != self.t.len || head == 0 || width % head != 0 {
            bail!("{NAME}: input [{rows}, {width}] does not fit {} positions of heads of {head}", self.t.len);
        }
        let mut out = zeros(x.len(), NAME)?;
        if self.t.interleaved {
            rotate_pairs_rows(x, &self.t.cos, &self.t.sin, self.t.half, &mut out);
        } else {
            rotate_half_rows(x, &self.t.cos, &self.t.sin, self.t.half, &mut out);
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        no_cuda(NAME)
    }
}
