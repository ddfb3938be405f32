//! The CPU bodies of the fused custom ops in `crate::nn`, on plain slices: the GEMM and threaded
//! mat-vec (f32, or f16 / bf16 weights widened in registers), causal conv + SiLU, RMSNorm and the
//! selective scan. `nn` wraps each as a candle `CustomOp` whose `cpu_fwd` calls in here; the kernels
//! fuse what a tensor graph would split (softplus + discretisation + scan + readout + D skip + gate in
//! one pass). Each hot loop is compiled several times (AVX-512, AVX2+FMA+F16C, baseline; simd128 on
//! WASM) and picked at run time, so one portable binary still gets wide vectors where the CPU has them.
//!
//! The kernels are crate-private: they take raw slices and sizes and guard `unsafe` code with checks
//! that their callers uphold by construction. The SIMD level in use is public (build info, tests at
//! each level).

#[macro_use]
mod dispatch;
pub(crate) mod attention;
mod attention_scores;
pub(crate) mod conv;
mod gemm_amx;
mod gemm_avx512;
mod gemm_pack;
mod gemm_small;
#[cfg(test)]
mod kernel_tests;
pub(crate) mod kv_half;
mod mat_ref;
pub(crate) mod math;
pub(crate) mod matmul;
mod matvec;
pub(crate) mod norm;
#[cfg(test)]
mod product_tests;
mod quant;
pub(crate) mod rope;
pub(crate) mod scan;
#[cfg(test)]
pub(crate) mod speed_probe;
pub(crate) mod ssd;
pub(crate) mod ssd_norm;
#[cfg(test)]
mod ssd_probe;
mod transpose;
mod weight_ref;

pub use dispatch::{simd_level, unknown_simd_cap, SimdLevel, SIMD_CAPS};
pub use matvec::{
    activation_scope, exact_activations_active, with_activation_scope, with_exact_activations, with_int8_prompts,
    ActivationScope,
};
pub(crate) use quant::dequantize_blocks as dequantize;
#[cfg(test)]
pub(crate) use quant::ggml_quantize;

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
