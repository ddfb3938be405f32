//! Timing probe (not a check), ignored by default:
//! `cargo test --release -p phoenix-core --lib ssd_probe -- --ignored --nocapture`
//!
//! One Mamba-2-130M layer's SSD scan (H 24, P 64, N 128, G 1) over a 512-token prefill piece:
//! the chunked scan at several tiles against the per-token recurrence, at 1 and 2 threads, plus a
//! decode step. Fastest of several runs (a shared machine's average mostly measures the neighbours).

use std::time::Instant;

use super::ssd::{ssd_chunked, ssd_recurrent, SsdInputs};

fn data(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn best(reps: usize, f: &mut dyn FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

#[test]
#[ignore]
fn ssd_probe() {
    let (h, p, n, g, l) = (24, 64, 128, 1, 512);
    let stride = h * p + 2 * g * n;
    let xbc = data(l * stride, 1);
    let dt = data(l * h, 2);
    let a: Vec<f32> = (0..h).map(|i| -1.0 - i as f32 * 0.5).collect();
    let (dt_bias, d) = (data(h, 3), data(h, 4));
    let inp = |len: usize| SsdInputs {
        len,
        heads: h,
        head_dim: p,
        state_size: n,
        groups: g,
        xbc: &xbc,
        xbc_stride: stride,
        dt: &dt,
        dt_stride: h,
        dt_offset: 0,
        dt_bias: &dt_bias,
        a: &a,
        d: &d,
        dt_min: 0.0,
        dt_max: f32::INFINITY,
    };
    let s0 = vec![0f32; h * p * n];
    let mut s = s0.clone();
    let mut y = vec![0f32; l * h * p];
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let rec = best(5, &mut || ssd_recurrent(&inp(l), &s0, &mut s, &mut y));
            eprintln!("threads {threads}: recurrence over {l} tokens {:.2} ms", rec * 1e3);
            for q in [16, 32, 64, 128] {
                let t = best(5, &mut || ssd_chunked(&inp(l), q, &s0, &mut s, &mut y));
                eprintln!("threads {threads}: chunked Q={q:<3} {:.2} ms ({:.1}x the recurrence)", t * 1e3, rec / t);
            }
            let step = best(50, &mut || ssd_recurrent(&inp(1), &s0, &mut s, &mut y));
            eprintln!("threads {threads}: one decode step {:.1} µs", step * 1e6);
        });
    }
}
