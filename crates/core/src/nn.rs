//! Layers on candle tensors, in the shape of candle-nn: each layer owns its weights and has a
//! `forward` over `candle_core::Tensor`s on the model's `Device`. The hot ones are candle custom ops
//! (`CustomOp1/2/3`) whose `cpu_fwd` runs the project's fused SIMD kernels in `crate::ops` (run-time
//! AVX-512 / AVX2+FMA / simd128 / baseline choice); their `cuda_fwd` is the slot a CUDA build fills
//! and says so. Glue between layers (adds, reshapes, slicing) is candle's own ops.
//!
//! Large weight matrices are [`WeightMatrix`]es, not `Tensor`s: they stay in the memory-mapped file
//! (candle's CPU storage owns a `Vec`, so a `Tensor` would mean a load-time copy), exactly as
//! candle's own `QMatMul` keeps its `QTensor` outside `Tensor` and applies it as a custom op.

pub mod attention;
pub mod conv;
mod cpu;
pub mod embedding;
pub mod gated_norm;
pub mod kv_cache;
pub mod linear;
pub mod mlp;
pub mod norm;
mod packed;
pub mod rope;
pub mod scan;
pub mod ssd;
pub mod weight_matrix;

pub use conv::CausalConvSilu;
pub use embedding::Embedding;
pub use linear::Linear;
pub use norm::{GroupRmsNorm, RmsNorm};
pub(crate) use packed::compacted;
pub use scan::SelectiveScan;
pub use weight_matrix::WeightMatrix;

use crate::error::{internal, PhoenixError};

/// A tensor-op failure: the model built a bad graph (shapes, dtypes, device), never a bad file
/// (files are checked before any op runs).
impl From<candle_core::Error> for PhoenixError {
    fn from(e: candle_core::Error) -> Self {
        // The first line only: with RUST_BACKTRACE set candle appends a backtrace.
        let text = e.to_string();
        internal(format!("tensor op failed: {}", text.lines().next().unwrap_or_default()))
    }
}
