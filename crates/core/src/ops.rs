//! CPU kernels of the Mamba forward pass, on plain contiguous f32 slices.
//!
//! Why plain functions and not candle `CustomOp`s: the model keeps its weights and activations as f32
//! slices (no `Tensor` bookkeeping in the per-token loop), so the kernels can write straight into
//! caller-owned scratch buffers and fuse what a tensor graph would split (softplus + discretisation +
//! scan + readout + D skip + gate in one pass; residual add inside the output GEMM). Each hot loop is
//! compiled several times (AVX-512, AVX2+FMA, baseline) and picked at run time, so one portable binary
//! (and later WASM) still gets wide vectors where the CPU has them.

#[macro_use]
mod dispatch;
pub mod conv;
mod gemm_avx512;
pub mod math;
pub mod matmul;
pub mod norm;
pub mod scan;

pub use dispatch::{simd_level, SimdLevel};
