//! Kernel tests on random data: the fused selective scan against a naive f64 per-token loop, chunked
//! (prefill) against one-token (decode) calls, and the causal conv against its definition.
//!
//! The kernels run at the SIMD level `simd_level()` picks; CI runs these tests once per level the
//! machine has (`PHOENIX_SIMD=avx2|baseline`, see .ci/run), and `simd_level_is_the_one_asked_for`
//! makes sure such a run really is at the level it names.

use std::io::Write;

use super::conv::causal_conv_silu;
use super::scan::{selective_scan, selective_scan_reference, ScanInputs};
use super::{simd_level, SimdLevel};

/// Reports a test skipped because this run lacks a SIMD level. Written to the real stderr, not through
/// `eprintln!`, which the test harness captures and hides for passing tests.
pub(crate) fn skip(test: &str, level: &str) {
    let line =
        format!("SKIPPED {test}: needs {level}; this run's SIMD level is {:?} (CPU or PHOENIX_SIMD)\n", simd_level());
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The widest level this CPU offers, without the `PHOENIX_SIMD` cap.
pub(crate) fn cpu_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        let fma =
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
        if fma && is_x86_feature_detected!("avx512f") {
            return SimdLevel::Avx512;
        }
        if fma {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Baseline
}

#[test]
fn simd_level_is_the_one_asked_for() {
    let cpu = cpu_level();
    let asked = std::env::var("PHOENIX_SIMD").unwrap_or_default();
    let expected = match asked.as_str() {
        "" | "avx512" => cpu,
        "avx2" if cpu == SimdLevel::Avx512 => SimdLevel::Avx2,
        "avx2" => cpu,
        "baseline" => SimdLevel::Baseline,
        other => panic!("PHOENIX_SIMD={other:?} is not a level (avx512, avx2, baseline): this run would test the CPU's level under another name"),
    };
    if (asked == "avx512" && cpu != SimdLevel::Avx512) || (asked == "avx2" && cpu == SimdLevel::Baseline) {
        skip("simd_level_is_the_one_asked_for", &asked);
    }
    assert_eq!(simd_level(), expected, "PHOENIX_SIMD={asked:?} on a {cpu:?} CPU");
    let _ = std::io::stderr().write_all(format!("ops kernels tested at SIMD level {:?}\n", simd_level()).as_bytes());
}

struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
    fn vec(&mut self, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..len).map(|_| lo + (hi - lo) * self.uniform()).collect()
    }
}

struct ScanCase {
    e: usize,
    n: usize,
    r: usize,
    u: Vec<f32>,
    dt: Vec<f32>,
    dt_bias: Vec<f32>,
    a: Vec<f32>,
    x_dbl: Vec<f32>,
    d: Vec<f32>,
    xz: Vec<f32>,
}

impl ScanCase {
    fn new(l: usize, e: usize, n: usize, seed: u64) -> Self {
        let mut g = Rng(seed);
        let r = 3;
        let mut dt = g.vec(l * e, -6.0, 3.0);
        // Exercise the softplus threshold.
        dt[0] = 25.0;
        Self {
            e,
            n,
            r,
            u: g.vec(l * e, -2.0, 2.0),
            dt,
            dt_bias: g.vec(e, -3.0, 0.5),
            a: g.vec(e * n, -16.0, -0.5),
            x_dbl: g.vec(l * (r + 2 * n), -1.5, 1.5),
            d: g.vec(e, 0.0, 2.0),
            xz: g.vec(l * 2 * e, -4.0, 4.0),
        }
    }

    /// Inputs for tokens `t0..t1` (slices start at the token so offsets stay the same).
    fn inputs(&self, t0: usize, t1: usize) -> ScanInputs<'_> {
        let (e, xw) = (self.e, self.r + 2 * self.n);
        ScanInputs {
            len: t1 - t0,
            u: &self.u[t0 * e..],
            dt: &self.dt[t0 * e..],
            dt_bias: &self.dt_bias,
            a: &self.a,
            bc: &self.x_dbl[t0 * xw..],
            bc_stride: xw,
            b_offset: self.r,
            c_offset: self.r + self.n,
            d: &self.d,
            z: &self.xz[t0 * 2 * e..],
            z_stride: 2 * e,
            z_offset: e,
        }
    }
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0.0, f32::max)
}

#[test]
fn fused_scan_matches_naive_reference() {
    // N = 16 (constant-size path) and N = 8 / E not a multiple of the block (generic path).
    for &(l, e, n) in &[(37usize, 96usize, 16usize), (19, 40, 8), (1, 64, 16), (70, 33, 16)] {
        let case = ScanCase::new(l, e, n, 7 + l as u64);
        let mut g = Rng(99);
        let init = g.vec(e * n, -1.0, 1.0);
        let mut s_fused = init.clone();
        let mut y = vec![0f32; l * e];
        selective_scan(&case.inputs(0, l), &mut s_fused, &mut y);
        let mut s_ref = init.clone();
        let y_ref = selective_scan_reference(&case.inputs(0, l), &mut s_ref);
        assert!(y.iter().all(|v| v.is_finite()));
        let (ey, es) = (max_rel(&y, &y_ref), max_rel(&s_fused, &s_ref));
        assert!(ey < 2e-5 && es < 2e-5, "L{l} E{e} N{n}: y err {ey}, state err {es}");
    }
}

#[test]
fn chunked_scan_equals_token_by_token() {
    let (l, e, n) = (45, 64, 16);
    let case = ScanCase::new(l, e, n, 3);
    let mut s_all = vec![0f32; e * n];
    let mut y_all = vec![0f32; l * e];
    selective_scan(&case.inputs(0, l), &mut s_all, &mut y_all);

    // Prefill 10, then one token at a time (the decode path), then a final chunk.
    let mut s = vec![0f32; e * n];
    let mut y = Vec::new();
    let mut step = |t0: usize, t1: usize, s: &mut Vec<f32>| {
        let mut y_chunk = vec![0f32; (t1 - t0) * e];
        selective_scan(&case.inputs(t0, t1), s, &mut y_chunk);
        y.extend(y_chunk);
    };
    step(0, 10, &mut s);
    for t in 10..30 {
        step(t, t + 1, &mut s);
    }
    step(30, l, &mut s);
    assert_eq!(y, y_all, "same arithmetic per token, so bit-identical");
    assert_eq!(s, s_all);
}

fn conv_reference(x: &[f32], stride: usize, l: usize, e: usize, w: &[f32], b: &[f32], k: usize) -> Vec<f32> {
    // w is [E, K] here (PyTorch order); tap K-1 multiplies the current token.
    let mut out = vec![0f32; l * e];
    for t in 0..l {
        for c in 0..e {
            let mut acc = b[c] as f64;
            for j in 0..k {
                let pos = t as isize - (k as isize - 1) + j as isize;
                if pos >= 0 {
                    acc += w[c * k + j] as f64 * x[pos as usize * stride + c] as f64;
                }
            }
            out[t * e + c] = (acc / (1.0 + (-acc).exp())) as f32;
        }
    }
    out
}

#[test]
fn causal_conv_matches_definition_and_decode_steps() {
    let (l, e, k) = (40, 48, 4);
    let stride = 2 * e;
    let mut g = Rng(5);
    let x = g.vec(l * stride, -2.0, 2.0);
    let w = g.vec(e * k, -1.0, 1.0);
    let b = g.vec(e, -0.5, 0.5);
    let mut w_t = vec![0f32; k * e];
    for c in 0..e {
        for j in 0..k {
            w_t[j * e + c] = w[c * k + j];
        }
    }
    let want = conv_reference(&x, stride, l, e, &w, &b, k);
    let mut hist = vec![0f32; (k - 1) * e];

    let mut state = vec![0f32; e * k];
    let mut u = vec![0f32; l * e];
    causal_conv_silu(&x, stride, l, &mut state, &w_t, &b, &mut hist, &mut u);
    assert!(max_rel(&u, &want) < 1e-5);
    // The state holds the last K pre-conv inputs, oldest first.
    for c in 0..e {
        for j in 0..k {
            assert_eq!(state[c * k + j], x[(l - k + j) * stride + c]);
        }
    }

    // Short prompt (L < K): state is left-zero-padded; then decode steps continue the same sequence.
    let mut state = vec![0f32; e * k];
    let mut u_steps = vec![0f32; 2 * e];
    causal_conv_silu(&x, stride, 2, &mut state, &w_t, &b, &mut hist, &mut u_steps);
    for c in 0..e {
        assert_eq!(&state[c * k..c * k + k], &[0.0, 0.0, x[c], x[stride + c]]);
    }
    let mut all = u_steps.clone();
    for t in 2..l {
        let mut one = vec![0f32; e];
        causal_conv_silu(&x[t * stride..], stride, 1, &mut state, &w_t, &b, &mut hist, &mut one);
        all.extend(one);
    }
    assert_eq!(all, u, "decode steps reproduce the prefill conv bit for bit");
}
