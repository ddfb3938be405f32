//! RMSNorm, row by row: `x * rsqrt(mean(x²) + eps) [* weight]`, statistics in f32 (reference §1.1).

/// Normalises each `width`-long row of `x` into `out`, scaled by `weight`. Never inlined: one call
/// per op, and the kernel keeps its own symbol (test/wasm-simd.test.ts checks its f32x4 code by name;
/// LLVM's inlining choice flipped with unrelated changes).
#[inline(never)]
pub fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let width = weight.len();
    for (row, dst) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let scale = inv_rms(row, eps);
        for ((d, &v), &w) in dst.iter_mut().zip(row).zip(weight) {
            *d = v * scale * w;
        }
    }
}

/// Weightless RMSNorm of `x[..]` in place (FalconMamba's dt/B/C norms).
pub fn rms_norm_in_place(x: &mut [f32], eps: f32) {
    let scale = inv_rms(x, eps);
    for v in x.iter_mut() {
        *v *= scale;
    }
}

fn inv_rms(row: &[f32], eps: f32) -> f32 {
    // Eight partial sums: vectorisable and a little more accurate than one running sum.
    let mut acc = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k] * c[k];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for v in rest {
        sum += v * v;
    }
    1.0 / (sum / row.len() as f32 + eps).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_matches_definition() {
        let x = [1.0f32, -2.0, 3.0, 0.5, 4.0, -1.0, 2.0, 0.0, 7.0, 1.0];
        let w: Vec<f32> = (0..10).map(|i| 0.5 + i as f32 * 0.1).collect();
        let mut out = [0f32; 10];
        rms_norm_rows(&x, &w, 1e-5, &mut out);
        let ms: f64 = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 10.0;
        for i in 0..10 {
            let want = x[i] as f64 / (ms + 1e-5).sqrt() * w[i] as f64;
            assert!((out[i] as f64 - want).abs() < 1e-6);
        }
    }
}
