//! Timing probe (not a check), ignored by default:
//! `cargo test --release -p phoenix-core --lib speed_probe -- --ignored --nocapture`
//!
//! Decode: each mat-vec on Mamba-130M shapes in f32, f16 and bf16, at 1 thread and at every core,
//! reported as achieved weight GB/s and as a share of this machine's read bandwidth measured in the
//! same run at the same thread count (STREAM-style: a sum over 1 GiB, far larger than the caches).
//! Weights rotate through ≥ 1 GiB of copies so every call streams from memory, as in a real decode
//! (a model's weights do not stay cached between tokens). Prefill: GFLOP/s of our GEMM path against
//! the `gemm` crate, and of half-precision weights (widened a block at a time) against f32.
//!
//! Both sides count their fastest short window (≥ 8 MiB of reads: one piece of the buffer; enough
//! consecutive calls): on a shared machine a long average mostly measures other processes' share of
//! the cores. lm_head calls take ~10 ms, so they are the noisiest rows there.
//! Env: `PHOENIX_SIMD=avx2|baseline` (narrower kernels), `PROBE_THREADS=1,2` (thread counts),
//! `PROBE_SHAPES=in_proj,x_proj` (matvec rows), `PROBE_NO_GEMM=1` (skip prefill).

use std::time::Instant;

use half::{bf16, f16};
use rayon::prelude::*;

use super::matmul::{gemm_crate, gemm_rows, matvec, MatRef, WeightRef};

/// Bytes in one timed window of the read-bandwidth measurement.
const READ_PIECE_BYTES: usize = 8 << 20;
/// Bytes each timed sweep covers, so that nothing it reads is still cached from the last sweep.
const SWEEP_BYTES: usize = 1 << 30;

fn data(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

/// Fastest of `reps` runs of `f`, in seconds.
fn best(reps: usize, f: &mut dyn FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

multiversion!(fn sum_chunk(c: &[f32]) -> f32 = sum_chunk_body);
multiversion!(fn sum_chunk4(c: &[f32]) -> f32 = sum_chunk4_body);

#[inline(always)]
fn sum_chunk_body(c: &[f32]) -> f32 {
    // 32 lanes: enough independent add chains that the loop is bound by loads, not latency.
    let mut acc = [0f32; 32];
    for x in c.chunks_exact(32) {
        for i in 0..32 {
            acc[i] += x[i];
        }
    }
    acc.iter().sum::<f32>() + c.chunks_exact(32).remainder().iter().sum::<f32>()
}

/// Four equal parts of `c` read side by side: four prefetch streams instead of one.
#[inline(always)]
fn sum_chunk4_body(c: &[f32]) -> f32 {
    let q = c.len() / 4 / 16 * 16;
    let (a, rest) = c.split_at(q);
    let (b, rest) = rest.split_at(q);
    let (cc, rest) = rest.split_at(q);
    let (d, tail) = rest.split_at(q);
    let mut acc = [[0f32; 16]; 4];
    let parts = a.chunks_exact(16).zip(b.chunks_exact(16)).zip(cc.chunks_exact(16)).zip(d.chunks_exact(16));
    for (((xa, xb), xc), xd) in parts {
        for i in 0..16 {
            acc[0][i] += xa[i];
            acc[1][i] += xb[i];
            acc[2][i] += xc[i];
            acc[3][i] += xd[i];
        }
    }
    acc.iter().flatten().sum::<f32>() + tail.iter().sum::<f32>()
}
/// STREAM-style read bandwidth (bytes/s) on the current rayon pool: 8 MiB pieces of `buf` in order,
/// each summed by all threads, each thread reading its part as one stream or as four side by side
/// (a core's prefetchers fetch more with several streams); the fastest piece of either counts.
pub(crate) fn read_bandwidth(buf: &[f32]) -> f64 {
    let threads = rayon::current_num_threads();
    let piece = READ_PIECE_BYTES / 4;
    let per = piece.div_ceil(threads).next_multiple_of(64);
    let mut fastest = [f64::MAX; 2];
    // One pattern per whole sweep: a piece read twice in a row would come from cache the second time.
    for _ in 0..2 {
        for (streams, f) in [(0, sum_chunk as fn(&[f32]) -> f32), (1, sum_chunk4)] {
            for p in buf.chunks(piece) {
                let t = Instant::now();
                let total = p.par_chunks(per).map(f).sum::<f32>();
                fastest[streams] = fastest[streams].min(t.elapsed().as_secs_f64());
                assert!(total > 0.0);
            }
        }
    }
    let rate = |secs: f64| (piece * 4) as f64 / secs;
    println!(
        "  read: 1 stream per thread {:.1} GB/s, 4 streams per thread {:.1} GB/s",
        rate(fastest[0]) / 1e9,
        rate(fastest[1]) / 1e9
    );
    rate(fastest[0].min(fastest[1]))
}

/// Copies of one `[rows, cols]` weight in the dtype, enough to fill a sweep.
enum Ring {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

impl Ring {
    fn new(dtype: &str, rows: usize, cols: usize) -> (Self, usize) {
        let one = data(rows * cols, 1);
        let bytes = if dtype == "f32" { 4 } else { 2 };
        let copies = SWEEP_BYTES.div_ceil(rows * cols * bytes).max(2);
        let ring = match dtype {
            "f32" => Self::F32(one.repeat(copies)),
            "f16" => Self::F16(one.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>().repeat(copies)),
            _ => Self::BF16(one.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>().repeat(copies)),
        };
        (ring, copies)
    }

    fn copy(&self, i: usize, len: usize) -> WeightRef<'_> {
        match self {
            Self::F32(v) => WeightRef::F32(&v[i * len..(i + 1) * len]),
            Self::F16(v) => WeightRef::F16(&v[i * len..(i + 1) * len]),
            Self::BF16(v) => WeightRef::BF16(&v[i * len..(i + 1) * len]),
        }
    }
}

pub(crate) fn thread_counts() -> Vec<usize> {
    if let Ok(list) = std::env::var("PROBE_THREADS") {
        return list.split(',').map(|t| t.trim().parse().expect("PROBE_THREADS: numbers")).collect();
    }
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    if all > 1 {
        vec![1, all]
    } else {
        vec![1]
    }
}

#[test]
#[ignore = "timing probe; run with --ignored --nocapture"]
fn speed_probe() {
    let (d, e, vocab, m) = (768usize, 1536usize, 50280usize, 512usize);
    println!("SIMD level {:?}", super::simd_level());
    let big = vec![1.0f32; SWEEP_BYTES / 4];
    for threads in thread_counts() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        println!();
        pool.install(|| {
            let limit = read_bandwidth(&big);
            println!("{threads} thread(s): read bandwidth limit {:.1} GB/s", limit / 1e9);
            println!(
                "  {:<9} {:>12} {:>6} {:>10} {:>8} {:>8}",
                "matvec", "shape", "dtype", "µs/call", "GB/s", "% limit"
            );
            // Mamba-130M's, then SmolLM-135M's (hidden 576, MLP 1536, 3 KV heads of 64, vocab 49152).
            let shapes = [
                                (2 * e, d, "in_proj"),
                (d, e, "out_proj"),
                (80, e, "x_proj"),
                (vocab, d, "lm_head"),
                (576, 576, "sm_q"),
                (192, 576, "sm_kv"),
                (1536, 576, "sm_up"),
                (576, 1536, "sm_down"),
                (49152, 576, "sm_head"),
            ];
            let wanted = std::env::var("PROBE_SHAPES").unwrap_or_default();
            for (rows, cols, what) in shapes.into_iter().filter(|s| wanted.is_empty() || wanted.contains(s.2)) {
                for dtype in ["f32", "f16", "bf16"] {
                    let (ring, copies) = Ring::new(dtype, rows, cols);
                    let x = data(cols, 2);
                    let mut out = vec![0f32; rows];
                    // Windows of consecutive calls streaming ≥ one read piece (8 MiB) each, so small
                    // matrices are timed over as much memory traffic as the limit; fastest window of
                    // ≥ 2 sweeps of the ring and ≥ 32 windows.
                    let bytes = (rows * cols * if dtype == "f32" { 4 } else { 2 }) as f64;
                    let per_window = ((READ_PIECE_BYTES as f64 / bytes).ceil() as usize).clamp(1, copies);
                    let windows = copies / per_window;
                    let mut secs = f64::MAX;
                    for _ in 0..32usize.div_ceil(windows).max(2) {
                        for win in 0..windows {
                            let t = Instant::now();
                            for c in win * per_window..(win + 1) * per_window {
                                matvec(&x, ring.copy(c, rows * cols), None, &mut out, false);
                            }
                            secs = secs.min(t.elapsed().as_secs_f64() / per_window as f64);
                        }
                    }
                    println!(
                        "  {what:<9} {:>12} {dtype:>6} {:>10.1} {:>8.1} {:>7.0}%",
                        format!("{rows}x{cols}"),
                        secs * 1e6,
                        bytes / secs / 1e9,
                        100.0 * bytes / secs / limit
                    );
                }
            }
            if std::env::var("PROBE_NO_GEMM").is_ok() {
                return;
            }
            // Prefill-shaped: our path (AVX-512 kernel where available) vs the gemm crate, then half W.
            // Mamba-130M's four products, then SmolLM-135M's (hidden 576, MLP 1536, 3 KV heads of 64).
            let shapes = [
                (2 * e, d, "in_proj", false),
                (d, e, "out_proj", false),
                (d, e, "out_proj (strided lhs)", true),
                (80, e, "x_proj", false),
                (e, 48, "dt_proj", false),
                (576 + 2 * 192, 576, "qkv 576", false),
                (2 * 1536, 576, "gate_up 576", false),
                (576, 1536, "down 1536", false),
            ];
            for (n, k, what, col_major) in shapes {
                let (x, w) = (data(m * k, 3), data(n * k, 4));
                let view = if col_major {
                    MatRef { data: &x, rows: m, cols: k, row_stride: 1, col_stride: m }
                } else {
                    MatRef::rows(&x, m, k)
                };
                let mut out = vec![0f32; m * n];
                let gflop = 2.0 * (m * n * k) as f64 / 1e9;
                let ours = best(5, &mut || gemm_rows(view, WeightRef::F32(&w), n, &mut out, false));
                let theirs = best(5, &mut || gemm_crate(view, &w, n, &mut out, false));
                let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
                let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
                let h = best(5, &mut || gemm_rows(view, WeightRef::F16(&wh), n, &mut out, false));
                let b = best(5, &mut || gemm_rows(view, WeightRef::BF16(&wb), n, &mut out, false));
                println!(
                    "  {what} [{m}x{k}]·[{n}x{k}]ᵀ GFLOP/s: ours f32 {:.0}, f16 {:.0}, bf16 {:.0}; gemm crate f32 {:.0}",
                    gflop / ours,
                    gflop / h,
                    gflop / b,
                    gflop / theirs
                );
            }
        });
    }
}

/// The Mamba-1 selective scan on a Mamba-130M prefill shape (L = 512, E = 1536, N = 16; inputs
/// [L, E], 3 MB each, so they come from L3 as in a model): best µs per scan and ns per
/// (token × channel × state) update. `cargo test --release -p phoenix-core --lib scan_probe -- --ignored --nocapture`
#[test]
#[ignore = "timing probe; run with --ignored --nocapture"]
fn scan_probe() {
    use super::scan::{selective_scan_from, ScanInputs};
    let (l, e, n, r) = (512usize, 1536usize, 16usize, 48usize);
    let u = data(l * e, 1);
    // Δ before softplus: around −3 (Δ ≈ 0.05), as in trained checkpoints.
    let dt: Vec<f32> = data(l * e, 2).iter().map(|v| v * 2.0 - 3.0).collect();
    let dt_bias = data(e, 3);
    let a: Vec<f32> = (0..e * n).map(|i| -((i % n) as f32 + 1.0)).collect();
    let bc = data(l * (r + 2 * n), 4);
    let d = data(e, 5);
    let z = data(l * 2 * e, 6);
    let inp = ScanInputs {
        len: l,
        u: &u,
        dt: &dt,
        dt_bias: &dt_bias,
        a: &a,
        bc: &bc,
        bc_stride: r + 2 * n,
        b_offset: r,
        c_offset: r + n,
        d: &d,
        z: &z,
        z_stride: 2 * e,
        z_offset: e,
    };
    let (state_in, mut state, mut y) = (vec![0f32; e * n], vec![0f32; e * n], vec![0f32; l * e]);
    println!("SIMD level {:?}", super::simd_level());
    for threads in thread_counts() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let secs = pool.install(|| best(20, &mut || selective_scan_from(&inp, &state_in, &mut state, &mut y)));
        println!(
            "scan L {l} E {e} N {n}, {threads} thread(s): {:.0} µs, {:.3} ns per update",
            secs * 1e6,
            secs * 1e9 / (l * e * n) as f64
        );
    }
}

/// Prefill products with W hot in cache (the same matrix every call, as `speed_probe` times them)
/// against W streamed from DRAM (a ring of 24 copies, one per layer, as a model's prefill reads
/// them): the gap is what reading the weights costs a product.
/// `cargo test --release -p phoenix-core --lib gemm_cold_probe -- --ignored --nocapture`
#[test]
#[ignore = "timing probe; run with --ignored --nocapture"]
fn gemm_cold_probe() {
    let (d, e, m, layers) = (768usize, 1536usize, 512usize, 24usize);
    for threads in thread_counts() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            // Mamba-2-130M's in_proj, Mamba-130M's, then SmolLM-135M's (q / o, k / v, gate / up, down).
            let shapes = [
                (3352, d, "m2_in_proj"),
                (2 * e, d, "in_proj"),
                (d, e, "out_proj"),
                (576, 576, "sm_q"),
                (192, 576, "sm_kv"),
                (1536, 576, "sm_up"),
                (576, 1536, "sm_down"),
            ];
            for (n, k, what) in shapes {
                let x = data(m * k, 3);
                let ring: Vec<Vec<f32>> = (0..layers).map(|i| data(n * k, 4 + i as u32)).collect();
                let mut out = vec![0f32; m * n];
                let gflop = 2.0 * (m * n * k) as f64 / 1e9;
                let hot =
                    best(5, &mut || gemm_rows(MatRef::rows(&x, m, k), WeightRef::F32(&ring[0]), n, &mut out, false));
                let mut cold = f64::MAX;
                for _ in 0..3 {
                    let t = Instant::now();
                    for w in &ring {
                        gemm_rows(MatRef::rows(&x, m, k), WeightRef::F32(w), n, &mut out, false);
                    }
                    cold = cold.min(t.elapsed().as_secs_f64() / layers as f64);
                }
                println!(
                    "{threads} thread(s) {what} [{m}x{k}]·[{n}x{k}]ᵀ GFLOP/s: W in cache {:.0}, W from DRAM {:.0}",
                    gflop / hot,
                    gflop / cold
                );
            }
        });
    }
}
