//! The quantized kernels against ggml's reference (candle's `k_quants`, a port of ggml-quants.c):
//! matrices quantized with its `from_float`, dequantized with its `to_float`.
//!
//! - Our dequantization equals ggml's exactly, for every type, at every SIMD level this CPU has.
//! - Mat-vec (integer dots with the 8-bit activation) against a float64 dot of the dequantized
//!   weights with the f32 activation. The one approximation is the activation's rounding: each value
//!   moves by at most half its block's step `d/2`, so `|error| ≤ Σ_blocks d/2 · Σ_block |w|`; on top,
//!   f32 rounding of the per-block scale products and their sum, bounded by `1e-4 · 3·max|w|·Σ|x|`
//!   (measured errors are ~1e-6 relative; `3·max|w|` bounds a block's `|d·q| + |min|`). A wrong bit
//!   layout errs by the size of the dot itself, far outside the bound.
//! - GEMM (many rows): each row rounded as the mat-vec rounds it, so within the same bound of the
//!   float64 product and equal to the mat-vec up to f32 summation order; the packed VNNI kernel
//!   equals the one-row kernels; the f32-activation GEMM (`Exact`) is the float product.
//! - Threads 1 and 2 give bit-identical results; accumulate and bias as the f32 path.

use candle_core::quantized::k_quants::{
    BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0, GgmlType,
};

use super::{dequantize, formats, rows_at_level, QuantRef, QuantizedActivation};
use crate::loader::QuantKind;
use crate::ops::kernel_tests::{cpu_level, skip};
use crate::ops::matmul::{linear_w, MatRef, WeightRef};
use crate::ops::{with_int8_prompts, SimdLevel};

const LEVELS: [SimdLevel; 3] = [SimdLevel::Baseline, SimdLevel::Avx2, SimdLevel::Avx512];

/// The levels this CPU offers; the others reported as skipped.
fn levels(test: &str) -> Vec<SimdLevel> {
    let rank = |l: SimdLevel| LEVELS.iter().position(|&x| x == l).unwrap();
    let cpu = rank(cpu_level());
    LEVELS
        .into_iter()
        .filter(|&l| {
            let ok = rank(l) <= cpu;
            if !ok {
                skip(test, &format!("{l:?}"));
            }
            ok
        })
        .collect()
}

fn ggml<B: GgmlType>(x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut blocks = vec![B::zeros(); x.len() / B::BLCK_SIZE];
    B::from_float(x, &mut blocks);
    let mut deq = vec![0f32; x.len()];
    B::to_float(&blocks, &mut deq);
    // SAFETY: candle's block types are `#[repr(C)]` plain data (f16 / integer arrays) with no padding
    // (their sizes are asserted equal to ggml's, and `QuantKind::block_bytes` to theirs).
    let bytes = unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast::<u8>(), std::mem::size_of_val(&blocks[..])) };
    (bytes.to_vec(), deq)
}

/// `x` quantized to `kind` by ggml's reference, and the values ggml dequantizes them to.
pub(crate) fn ggml_quantize(kind: QuantKind, x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    match kind {
        QuantKind::Q8_0 => ggml::<BlockQ8_0>(x),
        QuantKind::Q4_0 => ggml::<BlockQ4_0>(x),
        QuantKind::Q4_1 => ggml::<BlockQ4_1>(x),
        QuantKind::Q5_0 => ggml::<BlockQ5_0>(x),
        QuantKind::Q5_1 => ggml::<BlockQ5_1>(x),
        QuantKind::Q4K => ggml::<BlockQ4K>(x),
        QuantKind::Q5K => ggml::<BlockQ5K>(x),
        QuantKind::Q6K => ggml::<BlockQ6K>(x),
    }
}

/// Weights with a spread of magnitudes and signs per block (and a shifted mean, so the types with a
/// minimum use it), never all equal.
fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            (u - 0.4) * (1.0 + (i % 7) as f32 * 0.3)
        })
        .collect()
}

fn column_counts(kind: QuantKind) -> &'static [usize] {
    if kind.block_elems() == 32 {
        &[32, 96, 576]
    } else {
        &[256, 768, 1536]
    }
}

#[test]
fn dequantization_equals_ggml_at_every_level() {
    for level in levels("dequantization_equals_ggml_at_every_level") {
        for kind in QuantKind::ALL {
            let x = data(7 * 512, kind as u64 + 1);
            let (bytes, want) = ggml_quantize(kind, &x);
            let mut got = vec![f32::NAN; x.len()];
            formats::dequantize_at(level, kind, &bytes, &mut got);
            assert_eq!(got, want, "{} at {level:?}", kind.name());
        }
    }
}

/// Σ over blocks of `d/2 · Σ|w|`: how far the activation's rounding can move the dot.
fn rounding_bound(act: &QuantizedActivation, w: &[f32]) -> f64 {
    let block = act.len() / act.d.len();
    w.chunks(block).zip(&act.d).map(|(ws, &d)| d as f64 / 2.0 * ws.iter().map(|v| v.abs() as f64).sum::<f64>()).sum()
}

#[test]
fn matvec_matches_a_float64_dot_of_ggml_dequantized_weights_at_every_level() {
    for level in levels("matvec_matches_a_float64_dot_of_ggml_dequantized_weights_at_every_level") {
        for kind in QuantKind::ALL {
            for (ci, &k) in column_counts(kind).iter().enumerate() {
                for n in [1usize, 7, 33] {
                    let seed = (kind as u64) * 100 + ci as u64 * 10 + n as u64;
                    let (bytes, wd) = ggml_quantize(kind, &data(n * k, seed));
                    let x = data(k, seed + 7);
                    let act = QuantizedActivation::new(&x, kind);
                    let mut out = vec![0.25f32; n];
                    rows_at_level(level, &act, QuantRef { kind, bytes: &bytes }, &mut out, true);
                    for (o, row) in wd.chunks(k).enumerate() {
                        let want: f64 = row.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() + 0.25;
                        let max_w = row.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
                        let sum_x: f64 = x.iter().map(|v| v.abs() as f64).sum();
                        let bound = rounding_bound(&act, row) * 1.001 + 1e-4 * 3.0 * max_w * sum_x;
                        let err = (out[o] as f64 - want).abs();
                        assert!(
                            err <= bound,
                            "{} {level:?} {n}x{k} row {o}: {} vs {want}, |Δ| {err} > {bound}",
                            kind.name(),
                            out[o]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn matvec_is_the_same_on_one_and_two_threads_with_bias() {
    for kind in QuantKind::ALL {
        let (n, k) = (1001, 512);
        let (bytes, _) = ggml_quantize(kind, &data(n * k, kind as u64 + 40));
        let x = data(k, 3);
        let bias = data(n, 4);
        let w = WeightRef::Quant(QuantRef { kind, bytes: &bytes });
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut out = data(n, 5);
            pool.install(|| linear_w(MatRef::rows(&x, 1, k), w, Some(&bias), &mut out, true));
            out
        };
        let one = run(1);
        assert_eq!(one, run(2), "{}", kind.name());
        // Accumulate + bias on top of the plain product.
        let act = QuantizedActivation::new(&x, kind);
        let mut plain = vec![0f32; n];
        super::rows(&act, QuantRef { kind, bytes: &bytes }, &mut plain, false);
        let start = data(n, 5);
        for o in 0..n {
            assert_eq!(one[o], start[o] + plain[o] + bias[o], "{} row {o}", kind.name());
        }
    }
}

/// Each row's float64 product with the dequantized weights and the bound the 8-bit activation
/// allows it (see the module doc), for `x` `[m, k]` and `wd` `[n, k]`.
fn float64_rows_and_bounds(kind: QuantKind, x: &[f32], wd: &[f32], m: usize, k: usize) -> Vec<(f64, f64)> {
    let n = wd.len() / k;
    let mut res = Vec::with_capacity(m * n);
    for r in 0..m {
        let xr = &x[r * k..(r + 1) * k];
        let act = QuantizedActivation::new(xr, kind);
        let sum_x: f64 = xr.iter().map(|v| v.abs() as f64).sum();
        for row in wd.chunks(k) {
            let want: f64 = row.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum();
            let max_w = row.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
            res.push((want, rounding_bound(&act, row) * 1.001 + 1e-4 * 3.0 * max_w * sum_x));
        }
    }
    res
}

#[test]
fn int8_prompt_gemm_rounds_each_row_as_the_one_row_product_within_the_bound_of_the_float64_product() {
    for kind in QuantKind::ALL {
        let k = column_counts(kind)[1];
        // Token rows not a multiple of the packed kernel's 6-row tile, outputs not of its 32-row panel.
        for (m, n) in [(5usize, 33usize), (17, 300), (2, 64)] {
            let (bytes, wd) = ggml_quantize(kind, &data(n * k, kind as u64 + m as u64));
            let w = QuantRef { kind, bytes: &bytes };
            let x = data(m * k, 9);
            let bias = data(n, 10);
            let mut out = vec![1f32; m * n];
            with_int8_prompts(|| linear_w(MatRef::rows(&x, m, k), WeightRef::Quant(w), Some(&bias), &mut out, true));
            let float64 = float64_rows_and_bounds(kind, &x, &wd, m, k);
            for r in 0..m {
                let act = QuantizedActivation::new(&x[r * k..(r + 1) * k], kind);
                let mut one = vec![0f32; n];
                super::rows(&act, w, &mut one, false);
                for o in 0..n {
                    let got = out[r * n + o] as f64 - 1.0 - bias[o] as f64;
                    let (want, bound) = float64[r * n + o];
                    let what = format!("{} {m}x{k}x{n} at ({r}, {o})", kind.name());
                    assert!((got - want).abs() <= bound, "{what}: {got} vs float64 {want}, bound {bound}");
                    // The same rounded activation as the one-row kernel: f32 summation order apart.
                    let same = (got - one[o] as f64).abs();
                    assert!(same <= 1e-5 * (want.abs() + bound + 1.0), "{what}: {got} vs one-row {}", one[o]);
                }
            }
        }
    }
}

#[test]
fn the_packed_vnni_gemm_equals_the_one_row_kernels_on_one_and_two_threads_strided_input_too() {
    #[cfg(target_arch = "x86_64")]
    let packed = super::gemm_x86::available();
    #[cfg(not(target_arch = "x86_64"))]
    let packed = false;
    if !packed {
        skip(
            "the_packed_vnni_gemm_equals_the_one_row_kernels_on_one_and_two_threads_strided_input_too",
            "AVX-512 VNNI",
        );
        return;
    }
    for kind in QuantKind::ALL {
        let k = column_counts(kind)[2];
        // n = 50: a last panel of 18 rows (a partial second half); 40: of 8 (an empty second half).
        for (m, n) in [(1usize, 40usize), (13, 97), (7, 50), (64, 256)] {
            let (bytes, _) = ggml_quantize(kind, &data(n * k, kind as u64 * 7 + m as u64));
            let w = QuantRef { kind, bytes: &bytes };
            // The input as the first k columns of a wider matrix (a strided view), as the models pass it.
            let wide = data(m * (k + 32), 11);
            let x = MatRef { data: &wide, rows: m, cols: k, row_stride: k + 32, col_stride: 1 };
            let start = data(m * n, 12);
            let mut by_rows = start.clone();
            super::gemm_by_rows(x, w, n, &mut by_rows, true);
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut out = start.clone();
                pool.install(|| super::gemm(x, w, n, &mut out, true));
                // f32 summation order apart (the min terms of Q4_1 etc. cancel: relative to the largest output).
                let tol = 1e-5 * by_rows.iter().fold(1f32, |m, v| m.max(v.abs()));
                for (i, (a, b)) in out.iter().zip(&by_rows).enumerate() {
                    assert!((a - b).abs() <= tol, "{} {m}x{k}x{n} {threads} threads at {i}: {a} vs {b}", kind.name());
                }
            }
        }
    }
}

#[test]
fn the_exact_scope_keeps_the_last_row_in_f32_and_rounds_the_others() {
    for kind in QuantKind::ALL {
        let (m, n, k) = (4, 70, column_counts(kind)[1]);
        let (bytes, _) = ggml_quantize(kind, &data(n * k, kind as u64 + 80));
        let w = WeightRef::Quant(QuantRef { kind, bytes: &bytes });
        let x = data(m * k, 81);
        let product = || {
            let mut out = vec![0f32; m * n];
            with_int8_prompts(|| linear_w(MatRef::rows(&x, m, k), w, None, &mut out, false));
            out
        };
        let (rounded, scoped) = (product(), crate::ops::with_exact_activations(product));
        assert_eq!(rounded[..(m - 1) * n], scoped[..(m - 1) * n], "{}: rows before the last", kind.name());
        let mut exact = vec![0f32; n];
        super::exact_rows(
            &x[(m - 1) * k..],
            match w {
                WeightRef::Quant(q) => q,
                _ => unreachable!(),
            },
            &mut exact,
            false,
        );
        assert_eq!(scoped[(m - 1) * n..], exact[..], "{}: the last row is the f32 one", kind.name());
        assert_ne!(rounded[(m - 1) * n..], exact[..], "{}: rounding should move the last row", kind.name());
    }
}

#[test]
fn dequantize_refuses_partial_blocks_and_wrong_lengths() {
    let (bytes, _) = ggml_quantize(QuantKind::Q4_1, &data(64, 1));
    let w = QuantRef { kind: QuantKind::Q4_1, bytes: &bytes };
    let mut out = vec![0f32; 64];
    dequantize(w, &mut out);
    assert!(std::panic::catch_unwind(|| dequantize(w, &mut [0f32; 63])).is_err());
    assert!(std::panic::catch_unwind(|| w.slice(16, 32)).is_err(), "half a block");
    assert!(std::panic::catch_unwind(|| w.slice(32, 64)).is_err(), "past the end");
}

#[test]
fn a_non_finite_activation_gives_nan_not_a_clamped_number() {
    let kind = QuantKind::Q8_0;
    let (bytes, _) = ggml_quantize(kind, &data(64, 2));
    let mut x = data(32, 3);
    x[5] = f32::INFINITY;
    let act = QuantizedActivation::new(&x, kind);
    let mut out = [0f32; 2];
    super::rows(&act, QuantRef { kind, bytes: &bytes }, &mut out, false);
    assert!(out.iter().all(|v| v.is_nan()), "{out:?}");
}

#[test]
fn exact_matvec_is_the_float_product_of_ggml_dequantized_weights_at_every_level() {
    for level in levels("exact_matvec_is_the_float_product_of_ggml_dequantized_weights_at_every_level") {
        for kind in QuantKind::ALL {
            for (ci, &k) in column_counts(kind).iter().enumerate() {
                let n = 9;
                let seed = (kind as u64) * 100 + ci as u64 * 10 + 3;
                let (bytes, wd) = ggml_quantize(kind, &data(n * k, seed));
                let x = data(k, seed + 7);
                let mut out = vec![0.5f32; n];
                formats::exact_rows_at(level, kind, &x, &bytes, &mut out, true);
                for (o, row) in wd.chunks(k).enumerate() {
                    let terms = row.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64);
                    let (want, size) = terms.fold((0.5, 0.5), |(s, a), t| (s + t, a + t.abs()));
                    // f32 products and sums only: far inside the activation-rounding bound above.
                    let err = (out[o] as f64 - want).abs();
                    assert!(err <= 1e-5 * size, "{} {level:?} {n}x{k} row {o}: |Δ| {err} (size {size})", kind.name());
                }
            }
        }
    }
}

#[test]
fn under_int8_prompts_a_gemm_row_is_the_rounded_one_row_product_and_otherwise_the_exact_one() {
    use crate::ops::matmul::{linear_with, ActivationRounding};
    for kind in QuantKind::ALL {
        let (n, k) = (300, column_counts(kind)[1]);
        let (bytes, _) = ggml_quantize(kind, &data(n * k, kind as u64 + 60));
        let w = WeightRef::Quant(QuantRef { kind, bytes: &bytes });
        let x = data(2 * k, 61);
        let product = |rows: usize, rounding| {
            let mut out = vec![0f32; rows * n];
            with_int8_prompts(|| {
                linear_with(MatRef::rows(&x[..rows * k], rows, k), w, None, &mut out, false, rounding)
            });
            out
        };
        let (gemm, exact_gemm) = (product(2, ActivationRounding::Quantized), product(2, ActivationRounding::Exact));
        // Without the int8 scope a many-row product keeps f32 activations: the exact GEMM.
        let mut plain = vec![0f32; 2 * n];
        linear_w(MatRef::rows(&x, 2, k), w, None, &mut plain, false);
        assert_eq!(plain, exact_gemm, "{}: the default many-row product", kind.name());
        let (exact, rounded) = (product(1, ActivationRounding::Exact), product(1, ActivationRounding::Quantized));
        let gap = |a: &[f32], b: &[f32]| a.iter().zip(&b[..n]).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        let scale = gemm[..n].iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
        let name = kind.name();
        assert!(gap(&rounded, &gemm) <= 1e-5 * scale, "{name}: rounded row off the GEMM by {}", gap(&rounded, &gemm));
        assert!(gap(&exact, &exact_gemm) <= 1e-5 * scale, "{name}: exact row off the exact GEMM");
        assert!(gap(&exact, &gemm) > gap(&rounded, &gemm), "{name}: the rounded activation should move the product");
    }
}
