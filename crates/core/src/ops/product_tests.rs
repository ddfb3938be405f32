//! The products (`linear_w`: matvec and GEMM paths) for every weight dtype against a float64 naive
//! product of the widened weights: accumulate, bias, strided and offset lhs views, uneven shapes, and
//! sizes that disagree or overflow (a panic, caught, never an out-of-bounds read).
//!
//! `linear_w` runs at this run's SIMD level (CI reruns `ops::` under each `PHOENIX_SIMD` level); the
//! matvec kernels are also called at every level this CPU has, so one run covers all of them.

use half::{bf16, f16};

use super::kernel_tests::{cpu_level, skip};
use super::matmul::{gemm_crate_widening, gemm_rows, linear_w, MatRef, WeightRef};
use super::matvec::rows_at_level;
use super::weight_ref::Element;
use super::SimdLevel;

/// Deterministic values in [-1, 1), never exactly 0 (a dropped term must show).
fn data(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let v = ((i as u32).wrapping_mul(2654435761).wrapping_add(seed.wrapping_mul(40503)) >> 8) % 1000;
            (v as f32 + 0.5) / 500.0 - 1.0
        })
        .collect()
}

/// One weight matrix stored in each dtype, plus its widened values for the reference.
struct Weights {
    f32: Vec<f32>,
    f16: Vec<f16>,
    bf16: Vec<bf16>,
}

impl Weights {
    fn new(len: usize, seed: u32) -> Self {
        let f32 = data(len, seed);
        Self {
            f16: f32.iter().map(|&v| f16::from_f32(v)).collect(),
            bf16: f32.iter().map(|&v| bf16::from_f32(v)).collect(),
            f32,
        }
    }

    fn each(&self) -> [(WeightRef<'_>, Vec<f64>); 3] {
        let wide = |w: &[f32]| w.iter().map(|&v| v as f64).collect();
        [
            (WeightRef::F32(&self.f32), wide(&self.f32)),
            (WeightRef::F16(&self.f16), self.f16.iter().map(|v| v.widen() as f64).collect()),
            (WeightRef::BF16(&self.bf16), self.bf16.iter().map(|v| v.widen() as f64).collect()),
        ]
    }
}

/// `(Σ_i x[r, i] · w[o, i], Σ_i |x[r, i] · w[o, i]|)` in f64; the second scales the rounding bound.
fn naive(x: MatRef, w: &[f64], n: usize) -> Vec<(f64, f64)> {
    let k = x.cols;
    let mut out = Vec::with_capacity(x.rows * n);
    for r in 0..x.rows {
        for o in 0..n {
            let terms = (0..k).map(|i| x.data[r * x.row_stride + i * x.col_stride] as f64 * w[o * k + i]);
            out.push(terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs())));
        }
    }
    out
}

/// f32 accumulation over ≤ a few thousand terms: far below 1e-5 of the terms' magnitude; one wrong,
/// missing or doubled term is ≥ ~1e-3 of it.
fn assert_close(what: &str, got: &[f32], want: &[(f64, f64)], offset: impl Fn(usize) -> f64) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &(s, a))) in got.iter().zip(want).enumerate() {
        let expect = s + offset(i);
        let err = (g as f64 - expect).abs();
        assert!(err <= 1e-5 * (1.0 + a + offset(i).abs()), "{what}: element {i} is {g}, want {expect} (error {err})");
    }
}

/// (m, k, n): k below, at and off the vector widths and 2-vector steps; n not a multiple of the
/// 4-row group, the 8-row tile or the 32-wide panel; Mamba-130M's decode shapes.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 3, 5),
    (1, 37, 13),
    (1, 48, 1536),
    (1, 64, 4099),
    (1, 768, 101),
    (1, 1536, 80),
    (2, 768, 80),
    (5, 70, 33),
    (37, 100, 200),
    (300, 48, 1000),
];

#[test]
fn linear_w_matches_f64_for_every_dtype_shape_bias_and_accumulate() {
    for &(m, k, n) in SHAPES {
        let x = data(m * k, 1);
        let b = data(n, 3);
        let weights = Weights::new(n * k, 2);
        for (w, wide) in weights.each() {
            let view = MatRef::rows(&x, m, k);
            let want = naive(view, &wide, n);
            let what = format!("{m}x{k}x{n} {w:?}").chars().take(40).collect::<String>();
            let mut out = vec![f32::NAN; m * n];
            linear_w(view, w, None, &mut out, false);
            assert_close(&format!("{what} plain"), &out, &want, |_| 0.0);
            let mut out = vec![0.75f32; m * n];
            linear_w(view, w, Some(&b), &mut out, true);
            assert_close(&format!("{what} bias+accumulate"), &out, &want, |i| 0.75 + b[i % n] as f64);
        }
    }
}

#[test]
fn linear_w_reads_strided_and_offset_lhs_views() {
    // Column-major lhs ([k, m] storage; the scan output), a one-row column view (not the matvec
    // path), and rows inside a wider buffer at an offset (dt's low-rank slice of x_dbl).
    for &(m, k, n) in &[(6usize, 9usize, 5usize), (1, 40, 21), (33, 70, 45)] {
        let buf = data(3 * m * k + 7, 4);
        let weights = Weights::new(n * k, 5);
        let views = [
            MatRef { data: &buf, rows: m, cols: k, row_stride: 1, col_stride: m },
            MatRef { data: &buf[7..], rows: m, cols: k, row_stride: 3 * k, col_stride: 1 },
            MatRef { data: &buf[1..], rows: m, cols: k, row_stride: 2, col_stride: 2 * m + 1 },
        ];
        for view in views {
            for (w, wide) in weights.each() {
                let want = naive(view, &wide, n);
                let mut out = vec![-0.25f32; m * n];
                linear_w(view, w, None, &mut out, true);
                assert_close(
                    &format!("{m}x{k}x{n} strides {}/{}", view.row_stride, view.col_stride),
                    &out,
                    &want,
                    |_| -0.25,
                );
            }
        }
    }
}

/// The AMX kernel (f32 split into three bf16 parts, six part products on tiles) is as exact as f32:
/// every dtype, shapes off its 32-row block, 32-wide panel and 32-deep k step, values across 40
/// binades, strided rows (the scalar packing path), accumulate; the same bits on one and three threads.
#[test]
fn amx_gemm_matches_f64_for_every_dtype_and_shape() {
    use super::gemm_amx::{available, try_gemm};
    if !available() {
        skip("amx_gemm_matches_f64_for_every_dtype_and_shape", "AMX-BF16 on Linux (not capped by PHOENIX_SIMD)");
        return;
    }
    let (q8, q8_wide) = super::ggml_quantize(crate::loader::QuantKind::Q8_0, &data(96 * 64, 31));
    for &(m, k, n) in &[(1, 32, 32), (33, 70, 100), (64, 768, 96), (45, 31, 290), (130, 100, 64), (37, 64, 96)] {
        let base = data(2 * m * k + 3, 21);
        // Magnitudes 2^-20 .. 2^19: the parts must carry every binade exactly.
        let x: Vec<f32> = base.iter().enumerate().map(|(i, v)| v * (2f32).powi((i % 40) as i32 - 20)).collect();
        let views =
            [MatRef::rows(&x, m, k), MatRef { data: &x[3..], rows: m, cols: k, row_stride: 1, col_stride: 2 * m }];
        let weights = Weights::new(n * k, 22);
        let mut each: Vec<(WeightRef, Vec<f64>)> = weights.each().into_iter().collect();
        if (k, n) == (64, 96) {
            let r = super::matmul::QuantRef { kind: crate::loader::QuantKind::Q8_0, bytes: &q8 };
            each.push((WeightRef::Quant(r), q8_wide.iter().map(|&v| v as f64).collect()));
        }
        for view in views {
            for (w, wide) in &each {
                let want = naive(view, wide, n);
                let what = format!("AMX {m}x{k}x{n} {} stride {}", w.dtype_name(), view.col_stride);
                let mut bits = Vec::new();
                for threads in [1, 3] {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    let mut out = vec![f32::NAN; m * n];
                    assert!(pool.install(|| try_gemm(view, *w, n, &mut out, false)));
                    assert_close(&what, &out, &want, |_| 0.0);
                    let mut acc = vec![0.5f32; m * n];
                    pool.install(|| try_gemm(view, *w, n, &mut acc, true));
                    assert_close(&format!("{what} accumulate"), &acc, &want, |_| 0.5);
                    bits.push(out.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
                }
                assert_eq!(bits[0], bits[1], "{what}: one and three threads differ");
            }
        }
    }
    // Three terms per output: f32 rounds each sum to 2^-24 of its terms; a dropped part product
    // (bf16×3, 2^-16) shows.
    let (m, k, n) = (33, 3, 64);
    let x: Vec<f32> = data(m * k, 23).iter().enumerate().map(|(i, v)| v * (1.0 + i as f32 / 7.0)).collect();
    let weights = Weights::new(n * k, 24);
    let each = weights.each();
    // f32 weights (six part products) and bf16 ones (three: the weights are their own hi part).
    for (w, wide) in [&each[0], &each[2]] {
        let want = naive(MatRef::rows(&x, m, k), wide, n);
        let mut out = vec![f32::NAN; m * n];
        assert!(try_gemm(MatRef::rows(&x, m, k), *w, n, &mut out, false));
        for (i, (&g, &(s, a))) in out.iter().zip(&want).enumerate() {
            let what = w.dtype_name();
            assert!(
                (g as f64 - s).abs() <= 4.0 * a * f32::EPSILON as f64 / 2.0,
                "AMX {what} short sum {i}: {g}, want {s}"
            );
        }
    }
}

#[test]
fn matvec_kernels_at_every_cpu_level_match_f64() {
    let cpu = cpu_level();
    let mut levels = vec![SimdLevel::Baseline];
    if matches!(cpu, SimdLevel::Avx2 | SimdLevel::Avx512) {
        levels.push(SimdLevel::Avx2);
    } else {
        skip("matvec_kernels_at_every_cpu_level_match_f64 (AVX2 kernel)", "AVX2+FMA+F16C");
    }
    if cpu == SimdLevel::Avx512 {
        levels.push(SimdLevel::Avx512);
    } else {
        skip("matvec_kernels_at_every_cpu_level_match_f64 (AVX-512 kernel)", "AVX-512");
    }
    for &(_, k, n) in SHAPES.iter().filter(|s| s.0 == 1) {
        let x = data(k, 6);
        let weights = Weights::new(n * k, 7);
        for (w, wide) in weights.each() {
            let want = naive(MatRef::rows(&x, 1, k), &wide, n);
            for &level in &levels {
                let mut out = vec![2.0f32; n];
                rows_at_level(level, &x, w, &mut out, true);
                assert_close(&format!("{level:?} 1x{k}x{n} {}", w.dtype_name()), &out, &want, |_| 2.0);
                rows_at_level(level, &x, w, &mut out, false);
                assert_close(&format!("{level:?} 1x{k}x{n} {} plain", w.dtype_name()), &out, &want, |_| 0.0);
            }
        }
    }
}

#[test]
fn half_weight_gemm_through_the_gemm_crate_matches_f64() {
    // The non-AVX-512 prefill path, called directly so it is tested on AVX-512 machines too.
    for &(m, k, n) in &[(37usize, 100usize, 200usize), (300, 48, 1000), (2, 768, 80), (9, 1536, 3)] {
        let x = data(m * k, 8);
        let weights = Weights::new(n * k, 9);
        for (w, wide) in weights.each().into_iter().skip(1) {
            let view = MatRef::rows(&x, m, k);
            let want = naive(view, &wide, n);
            let mut out = vec![0.5f32; m * n];
            gemm_crate_widening(view, w, n, &mut out, true);
            assert_close(&format!("gemm crate {m}x{k}x{n}"), &out, &want, |_| 0.5);
        }
    }
}

#[test]
fn sizes_that_disagree_or_overflow_panic_for_every_dtype() {
    let weights = Weights::new(64, 1);
    let x = data(16, 2);
    for (w, _) in weights.each() {
        let w12 = w.slice(0, 60);
        let panics = |f: &dyn Fn()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();
        // W not a whole number of k-wide rows; output shorter than m · n; bias of the wrong length.
        assert!(panics(&|| linear_w(MatRef::rows(&x, 1, 8), w12.slice(0, 59), None, &mut [0.0; 8], false)));
        assert!(panics(&|| linear_w(MatRef::rows(&x, 2, 8), w, None, &mut [0.0; 15], false)));
        assert!(panics(&|| linear_w(MatRef::rows(&x, 1, 8), w, Some(&[0.0; 7]), &mut [0.0; 8], false)));
        // A view past its data; n · k wrapping to a small number (4 · 2^62 = 0).
        let past = MatRef { data: &x, rows: 2, cols: 8, row_stride: 9, col_stride: 1 };
        assert!(panics(&|| linear_w(past, w, None, &mut [0.0; 16], false)));
        let huge_n = 1usize << (usize::BITS - 2);
        assert!(panics(&|| gemm_rows(MatRef::rows(&x, 4, 4), w, huge_n, &mut [0.0; 16], false)));
        assert!(panics(&|| gemm_crate_widening(MatRef::rows(&x, 4, 4), w, huge_n, &mut [0.0; 16], false)));
        // A matvec whose W does not match out · k.
        assert!(panics(&|| super::matvec::matvec(&x[..8], w, None, &mut [0.0; 9], false)));
    }
}

/// One decode step's q / k / v (or gate / up) as one set of tasks: every output equals its own
/// mat-vec bit for bit, for mixed weight types (8-bit activations rounded once per type), with f32
/// activations (a logits head, the exact scope), and on a pool of several threads.
#[test]
fn matvec_many_gives_each_output_its_own_matvec_bits() {
    use super::matmul::{matvec_many, ActivationRounding, QuantRef};
    use crate::loader::QuantKind;
    let k = 512;
    let x = data(k, 41);
    let f16s = Weights::new(40 * k, 44);
    let (q8, _) = super::ggml_quantize(QuantKind::Q8_0, &data(200 * k, 42));
    let (q6, _) = super::ggml_quantize(QuantKind::Q6K, &data(72 * k, 43));
    let q4 = super::ggml_quantize(QuantKind::Q4K, &data(130 * k, 45)).0;
    let weights = [
        WeightRef::Quant(QuantRef { kind: QuantKind::Q8_0, bytes: &q8 }),
        WeightRef::Quant(QuantRef { kind: QuantKind::Q6K, bytes: &q6 }),
        WeightRef::F16(&f16s.f16),
        WeightRef::Quant(QuantRef { kind: QuantKind::Q4K, bytes: &q4 }),
    ];
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for rounding in [ActivationRounding::Quantized, ActivationRounding::Exact] {
            pool.install(|| {
                let alone: Vec<Vec<f32>> = weights
                    .iter()
                    .map(|w| {
                        let mut out = vec![0f32; w.len() / k];
                        super::matvec::matvec_with(&x, *w, None, &mut out, false, rounding);
                        out
                    })
                    .collect();
                let mut together: Vec<Vec<f32>> = alone.iter().map(|o| vec![f32::NAN; o.len()]).collect();
                matvec_many(
                    &x,
                    weights.iter().copied().zip(together.iter_mut().map(|o| &mut o[..])).collect(),
                    false,
                    rounding,
                );
                for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
                    let same = a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits());
                    assert!(same, "weight {i}, {threads} thread(s), {rounding:?}: outputs differ");
                }
            });
        }
    }
}

/// `linear_many` (a prefill's q, k and v as one set of products) gives each output the bits of its
/// own `linear_with`: f32, half and quantized weights, a width that pads (the `gemm` crate's path), none,
/// a strided lhs view, 8-bit prompt rows (the last one f32 or not) and f32 ones, on one and several
/// threads.
#[test]
fn linear_many_gives_each_output_its_own_product_bits() {
    use super::matmul::{linear_many, linear_with, ActivationRounding, QuantRef};
    use super::matvec::{with_exact_activations, with_int8_prompts};
    use crate::loader::QuantKind;
    let (m, k) = (37, 256);
    // Rows of 300 values, the product reading the first k of each: a strided view, as a fused
    // projection's slice is.
    let wide = data(m * 300, 51);
    let x = MatRef { data: &wide, rows: m, cols: k, row_stride: 300, col_stride: 1 };
    let f32s = Weights::new(160 * k, 52);
    let narrow = Weights::new(80 * k, 53); // 80 outputs pad a 32-wide panel by more than a tenth
    let (q8, _) = super::ggml_quantize(QuantKind::Q8_0, &data(96 * k, 54));
    let (q6, _) = super::ggml_quantize(QuantKind::Q6K, &data(64 * k, 55));
    let weights = [
        WeightRef::F32(&f32s.f32),
        WeightRef::Quant(QuantRef { kind: QuantKind::Q8_0, bytes: &q8 }),
        WeightRef::BF16(&f32s.bf16),
        WeightRef::F16(&narrow.f16),
        WeightRef::Quant(QuantRef { kind: QuantKind::Q6K, bytes: &q6 }),
        WeightRef::F32(&[]), // no outputs
    ];
    let run = || {
        let alone: Vec<Vec<f32>> = weights
            .iter()
            .map(|w| {
                let mut out = vec![0f32; m * (w.len() / k)];
                linear_with(x, *w, None, &mut out, false, ActivationRounding::Quantized);
                out
            })
            .collect();
        let mut together: Vec<Vec<f32>> = alone.iter().map(|o| vec![f32::NAN; o.len()]).collect();
        let parts = weights.iter().copied().zip(together.iter_mut().map(|o| &mut o[..])).collect();
        linear_many(x, parts, ActivationRounding::Quantized);
        (alone, together)
    };
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        // f32 prompt rows; 8-bit ones; 8-bit ones with the last row kept f32 (a generation's first token).
        for (int8, exact) in [(false, false), (true, false), (true, true)] {
            let scoped = || if exact { with_exact_activations(run) } else { run() };
            let (alone, together) = pool.install(|| if int8 { with_int8_prompts(scoped) } else { scoped() });
            for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
                let same = a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits());
                assert!(
                    same,
                    "weight {i}, {threads} thread(s), int8 prompt {int8}, exact last row {exact}: outputs differ"
                );
            }
        }
    }
}
