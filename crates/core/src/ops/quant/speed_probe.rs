//! Timing probe (not a check), ignored by default:
//! `cargo test --release -p phoenix-core --lib quant::speed_probe -- --ignored --nocapture`
//!
//! Decode mat-vec with quantized weights on the SmolLM-135M shapes (576×576 attention, 1536×576
//! gate/up, 576×1536 down, 49152×576 head) for every type, at 1 thread and at every core: µs per
//! call and GB/s of weight bytes, next to this machine's read bandwidth measured in the same run
//! (`ops::speed_probe`). Weights rotate through ≥ 256 MiB of copies so every call streams from
//! memory, as in a real decode. Then prefill: GFLOP/s of 64 rows through the dequantizing GEMM
//! against f32 weights. Env: `PROBE_THREADS=1,2`, `PROBE_KINDS=Q8_0,Q4_K`.

use std::time::Instant;

use super::kernel_tests::ggml_quantize;
use super::QuantRef;
use crate::loader::QuantKind;
use crate::ops::matmul::{linear_w, MatRef, WeightRef};
use crate::ops::speed_probe::{read_bandwidth, thread_counts};

const SWEEP_BYTES: usize = 256 << 20;
/// Bytes per timed window: consecutive calls streaming at least this much.
const WINDOW_BYTES: usize = 8 << 20;

fn data(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

#[test]
#[ignore = "timing probe; run with --ignored --nocapture"]
fn quant_speed_probe() {
    println!("SIMD level {:?}", crate::ops::simd_level());
    let wanted = std::env::var("PROBE_KINDS").unwrap_or_default();
    let kinds: Vec<QuantKind> =
        QuantKind::ALL.into_iter().filter(|k| wanted.is_empty() || wanted.split(',').any(|w| w == k.name())).collect();
    // PROBE_EXACT=1: the f32-activation path (what logits heads use) instead of the 8-bit one.
    let rounding = match std::env::var_os("PROBE_EXACT") {
        Some(_) => crate::ops::matmul::ActivationRounding::Exact,
        None => crate::ops::matmul::ActivationRounding::Quantized,
    };
    let shapes = [(576usize, 576usize, "attn"), (1536, 576, "gate/up"), (576, 1536, "down"), (49152, 576, "head")];
    let big = vec![1.0f32; SWEEP_BYTES / 4];
    for threads in thread_counts() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let limit = read_bandwidth(&big);
            println!("{threads} thread(s): read bandwidth limit {:.1} GB/s", limit / 1e9);
            println!("  {:<8} {:>10} {:>5} {:>9} {:>7} {:>7}", "matvec", "shape", "type", "µs/call", "GB/s", "% limit");
            for &(rows, cols, what) in &shapes {
                for &kind in &kinds {
                    if cols % kind.block_elems() != 0 {
                        continue;
                    }
                    let (one, _) = ggml_quantize(kind, &data(rows * cols, 1));
                    let copies = SWEEP_BYTES.div_ceil(one.len()).max(2);
                    let ring = one.repeat(copies);
                    let x = data(cols, 2);
                    let mut out = vec![0f32; rows];
                    let per_window = WINDOW_BYTES.div_ceil(one.len()).clamp(1, copies);
                    let windows = copies / per_window;
                    let mut secs = f64::MAX;
                    for _ in 0..16usize.div_ceil(windows).max(2) {
                        for win in 0..windows {
                            let t = Instant::now();
                            for c in win * per_window..(win + 1) * per_window {
                                let bytes = &ring[c * one.len()..(c + 1) * one.len()];
                                crate::ops::matvec::matvec_with(
                                    &x,
                                    WeightRef::Quant(QuantRef { kind, bytes }),
                                    None,
                                    &mut out,
                                    false,
                                    rounding,
                                );
                            }
                            secs = secs.min(t.elapsed().as_secs_f64() / per_window as f64);
                        }
                    }
                    let gbs = one.len() as f64 / secs / 1e9;
                    println!(
                        "  {what:<8} {:>10} {:>5} {:>9.1} {gbs:>7.1} {:>6.0}%",
                        format!("{rows}x{cols}"),
                        kind.name(),
                        secs * 1e6,
                        100.0 * gbs * 1e9 / limit
                    );
                }
            }
            let (m, n, k) = (64usize, 1536usize, 576usize);
            let x = data(m * k, 3);
            let w = data(n * k, 4);
            let mut out = vec![0f32; m * n];
            let time = |w: WeightRef, out: &mut [f32]| {
                (0..5)
                    .map(|_| {
                        let t = Instant::now();
                        linear_w(MatRef::rows(&x, m, k), w, None, out, false);
                        t.elapsed().as_secs_f64()
                    })
                    .fold(f64::MAX, f64::min)
            };
            let flops = 2.0 * (m * n * k) as f64;
            println!("  prefill {m}x{k}x{n}: f32 {:.1} GFLOP/s", flops / time(WeightRef::F32(&w), &mut out) / 1e9);
            for &kind in &kinds {
                let (bytes, _) = ggml_quantize(kind, &w);
                let secs = time(WeightRef::Quant(QuantRef { kind, bytes: &bytes }), &mut out);
                println!("  prefill {m}x{k}x{n}: {:<5} {:.1} GFLOP/s", kind.name(), flops / secs / 1e9);
            }
        });
    }
}

/// Prefill GEMM timing, ignored by default:
/// `cargo test --release -p phoenix-core --lib quant_prefill_probe -- --ignored --nocapture`
///
/// 512 prompt rows through the SmolLM-135M and Mamba-130M projection shapes with W as f32 and as
/// each quantized type that fits the shape (`PROBE_KINDS` to choose): GFLOP per second of this
/// thread's CPU time (one thread, so other processes sharing the cores do not count), best of 7.
#[cfg(unix)]
#[test]
#[ignore = "timing probe; run with --ignored --nocapture"]
fn quant_prefill_probe() {
    fn cpu_secs() -> f64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid clock id and a valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    }
    let wanted = std::env::var("PROBE_KINDS").unwrap_or_default();
    let kinds: Vec<QuantKind> =
        QuantKind::ALL.into_iter().filter(|k| wanted.is_empty() || wanted.split(',').any(|w| w == k.name())).collect();
    let m = 512usize;
    let shapes = [
        (576usize, 576usize, "smollm q/o"),
        (1536, 576, "smollm gate/up"),
        (576, 1536, "smollm down"),
        (3072, 768, "mamba in_proj"),
        (768, 1536, "mamba out_proj"),
    ];
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| {
        println!("1 thread, {m} rows, GFLOP per CPU-second (best of 7), quantized: f32 / int8 activations:");
        for &(n, k, what) in &shapes {
            let x = data(m * k, 3);
            let w = data(n * k, 4);
            let mut out = vec![0f32; m * n];
            let time = |w: WeightRef, out: &mut [f32]| {
                (0..7)
                    .map(|_| {
                        let t = cpu_secs();
                        linear_w(MatRef::rows(&x, m, k), w, None, out, false);
                        cpu_secs() - t
                    })
                    .fold(f64::MAX, f64::min)
            };
            let gflop = 2.0 * (m * n * k) as f64 / 1e9;
            let mut line =
                format!("  {what:<15} {n:>5}x{k:<5} f32 {:>5.0}", gflop / time(WeightRef::F32(&w), &mut out));
            for &kind in kinds.iter().filter(|kind| k % kind.block_elems() == 0) {
                let (bytes, _) = ggml_quantize(kind, &w);
                let w = WeightRef::Quant(QuantRef { kind, bytes: &bytes });
                let secs = time(w, &mut out);
                let int8 = crate::ops::with_int8_prompts(|| time(w, &mut out));
                line += &format!("  {} {:>4.0}/{:<4.0}", kind.name(), gflop / secs, gflop / int8);
            }
            println!("{line}");
        }
    });
}

/// One-row kernel speed with the weights hot in L2 (a 576×1536 matrix, 1 thread), at every SIMD
/// level this CPU has: what each kernel computes per second when memory is not the limit, with the
/// activation rounded to 8 bits and as f32 (the exact path of logits heads and first tokens).
/// `cargo test --release -p phoenix-core --lib quant_hot_kernel_probe -- --ignored --nocapture`
/// (`PROBE_KINDS=Q8_0,Q6_K` to choose types).
#[test]
#[ignore = "timing probe; run with --ignored --nocapture"]
fn quant_hot_kernel_probe() {
    use crate::ops::SimdLevel;
    let levels: Vec<SimdLevel> = match crate::ops::simd_level() {
        SimdLevel::Avx512 => vec![SimdLevel::Baseline, SimdLevel::Avx2, SimdLevel::Avx512],
        SimdLevel::Avx2 => vec![SimdLevel::Baseline, SimdLevel::Avx2],
        level => vec![level],
    };
    let (n, k) = (576usize, 1536usize);
    let x = data(k, 9);
    println!("µs per {n}x{k} mat-vec (weights in L2, best of 5 × 200), and weight GB/s");
    let wanted = std::env::var("PROBE_KINDS").unwrap_or_default();
    for kind in QuantKind::ALL.into_iter().filter(|k| wanted.is_empty() || wanted.split(',').any(|w| w == k.name())) {
        let (bytes, _) = ggml_quantize(kind, &data(n * k, 3));
        let act = super::QuantizedActivation::new(&x, kind);
        let mut out = vec![0f32; n];
        for exact in [false, true] {
            let mut line = format!("  {:<5} {}", kind.name(), if exact { "f32 x " } else { "8-bit x" });
            for &level in &levels {
                let secs = (0..5)
                    .map(|_| {
                        let t = Instant::now();
                        for _ in 0..200 {
                            if exact {
                                super::formats::exact_rows_at(level, kind, &x, &bytes, &mut out, false);
                            } else {
                                super::rows_at_level(level, &act, QuantRef { kind, bytes: &bytes }, &mut out, false);
                            }
                        }
                        t.elapsed().as_secs_f64() / 200.0
                    })
                    .fold(f64::MAX, f64::min);
                line += &format!("  {level:?} {:>6.1} µs {:>5.1} GB/s", secs * 1e6, bytes.len() as f64 / secs / 1e9);
            }
            println!("{line}");
        }
    }
}
