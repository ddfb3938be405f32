//! CPU kernels of the Mamba forward pass, on plain contiguous f32 slices.
//!
//! Why plain functions and not candle `CustomOp`s: the model keeps its weights and activations as f32
//! slices (no `Tensor` bookkeeping in the per-token loop), so the kernels can write straight into
//! caller-owned scratch buffers and fuse what a tensor graph would split (softplus + discretisation +
//! scan + readout + D skip + gate in one pass; residual add inside the output GEMM). Each hot loop is
//! compiled several times (AVX-512, AVX2+FMA, baseline) and picked at run time, so one portable binary
//! (and later WASM) still gets wide vectors where the CPU has them.

//!
//! The kernels are crate-private: they take raw slices and sizes and guard `unsafe` code with checks
//! that the model upholds by construction; outside the crate only the model (`LanguageModel`) runs
//! them. The SIMD level in use is public (build info, tests at each level).

#[macro_use]
mod dispatch;
pub(crate) mod conv;
mod gemm_avx512;
#[cfg(test)]
mod kernel_tests;
mod mat_ref;
pub(crate) mod math;
pub(crate) mod matmul;
mod matvec;
pub(crate) mod norm;
#[cfg(test)]
mod product_tests;
pub(crate) mod scan;
#[cfg(test)]
mod speed_probe;
mod weight_ref;

pub use dispatch::{simd_level, SimdLevel};

/// `a * b`, panicking (never wrapping) on overflow: size products that guard `unsafe` code.
#[inline]
pub(crate) fn size_mul(a: usize, b: usize) -> usize {
    a.checked_mul(b).expect("kernel size product overflows usize")
}

/// `a + b`, panicking (never wrapping) on overflow.
#[inline]
pub(crate) fn size_add(a: usize, b: usize) -> usize {
    a.checked_add(b).expect("kernel size sum overflows usize")
}
