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
//! - GEMM (dequantized panels through the f32 GEMM) against the same float64 product: only f32
//!   rounding, `1e-4 · Σ|w·x|`.
//! - Threads 1 and 2 give bit-identical results; accumulate and bias as the f32 path.

use candle_core::quantized::k_quants::{
    BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0, GgmlType,
};

use super::{dequantize, formats, rows_at_level, QuantRef, QuantizedActivation};
use crate::loader::QuantKind;
use crate::ops::kernel_tests::{cpu_level, skip};
use crate::ops::matmul::{linear_w, MatRef, WeightRef};
use crate::ops::SimdLevel;

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

#[test]
fn gemm_matches_a_float64_product_of_ggml_dequantized_weights() {
    for kind in QuantKind::ALL {
        let k = column_counts(kind)[1];
        for (m, n) in [(5usize, 33usize), (17, 300)] {
            let (bytes, wd) = ggml_quantize(kind, &data(n * k, kind as u64 + m as u64));
            let x = data(m * k, 9);
            let bias = data(n, 10);
            let mut out = vec![1f32; m * n];
            linear_w(
                MatRef::rows(&x, m, k),
                WeightRef::Quant(QuantRef { kind, bytes: &bytes }),
                Some(&bias),
                &mut out,
                true,
            );
            for r in 0..m {
                for o in 0..n {
                    let terms = (0..k).map(|i| x[r * k + i] as f64 * wd[o * k + i] as f64);
                    let (want, size) = terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
                    let want = want + 1.0 + bias[o] as f64;
                    let err = (out[r * n + o] as f64 - want).abs();
                    assert!(err <= 1e-4 * (size + 1.0), "{} {m}x{k}x{n} at ({r}, {o}): |Δ| {err}", kind.name());
                }
            }
        }
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
fn an_exact_one_row_product_agrees_with_the_gemm_row_and_the_rounded_one_does_not_exactly() {
    use crate::ops::matmul::{linear_with, ActivationRounding};
    for kind in QuantKind::ALL {
        let (n, k) = (300, column_counts(kind)[1]);
        let (bytes, _) = ggml_quantize(kind, &data(n * k, kind as u64 + 60));
        let w = WeightRef::Quant(QuantRef { kind, bytes: &bytes });
        let x = data(2 * k, 61);
        let mut gemm = vec![0f32; 2 * n];
        linear_w(MatRef::rows(&x, 2, k), w, None, &mut gemm, false);
        let one_row = |rounding| {
            let mut out = vec![0f32; n];
            linear_with(MatRef::rows(&x[..k], 1, k), w, None, &mut out, false, rounding);
            out
        };
        let (exact, rounded) = (one_row(ActivationRounding::Exact), one_row(ActivationRounding::Quantized));
        let gap = |a: &[f32]| a.iter().zip(&gemm[..n]).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        let scale = gemm[..n].iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(gap(&exact) <= 1e-5 * scale.max(1.0), "{}: exact row off the GEMM by {}", kind.name(), gap(&exact));
        assert!(gap(&rounded) > gap(&exact), "{}: the rounded activation should move the product", kind.name());
    }
}
