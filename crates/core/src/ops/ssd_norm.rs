//! Mamba-2's gated group RMSNorm, row by row (reference §1.1, mamba_ssm `rms_norm_ref` with
//! `group_size = E/G`, `norm_before_gate=False`): `g = y · silu(z)`, then each group of `E/G`
//! channels is scaled by `rsqrt(mean(g²) + eps)` and by the weight. Statistics in f32.

use rayon::prelude::*;

use super::math::silu;
use super::size_mul;

/// Rows per rayon task.
const ROWS_PER_TASK: usize = 16;

/// `y`, `out`: `[L, E]`; `z`: rows of stride `z_stride` starting with the `E` gate values;
/// `weight`: `[E]`; `groups` divides `E`.
pub(crate) fn gated_group_rms_norm(
    y: &[f32],
    z: &[f32],
    z_stride: usize,
    weight: &[f32],
    groups: usize,
    eps: f32,
    out: &mut [f32],
) {
    let e = weight.len();
    assert!(e >= 1 && groups >= 1 && e.is_multiple_of(groups) && z_stride >= e);
    let l = y.len() / e;
    assert!(y.len() == size_mul(l, e) && out.len() == y.len());
    assert!(l == 0 || z.len() >= size_mul(l - 1, z_stride) + e);
    let task = |(i, rows): (usize, &mut [f32])| {
        for (r, dst) in rows.chunks_exact_mut(e).enumerate() {
            let t = i * ROWS_PER_TASK + r;
            norm_row(&y[t * e..(t + 1) * e], &z[t * z_stride..t * z_stride + e], weight, groups, eps, dst);
        }
    };
    if l <= ROWS_PER_TASK {
        out.chunks_mut(ROWS_PER_TASK * e).enumerate().for_each(task);
    } else {
        out.par_chunks_mut(ROWS_PER_TASK * e).enumerate().for_each(task);
    }
}

/// One row of [`gated_group_rms_norm`]: `y`, `z`, `out` its `E` values (the same bits as there).
pub(crate) fn gated_norm_row(y: &[f32], z: &[f32], weight: &[f32], groups: usize, eps: f32, out: &mut [f32]) {
    let e = weight.len();
    assert!(e >= 1 && groups >= 1 && e.is_multiple_of(groups) && y.len() == e && z.len() == e && out.len() == e);
    norm_row(y, z, weight, groups, eps, out);
}

multiversion!(fn norm_row(y: &[f32], z: &[f32], weight: &[f32], groups: usize, eps: f32, out: &mut [f32]) = norm_row_body);

#[inline(always)]
fn norm_row_body(y: &[f32], z: &[f32], weight: &[f32], groups: usize, eps: f32, out: &mut [f32]) {
    for ((o, &yv), &zv) in out.iter_mut().zip(y).zip(z) {
        *o = yv * silu(zv);
    }
    let width = weight.len() / groups;
    for (grp, w) in out.chunks_exact_mut(width).zip(weight.chunks_exact(width)) {
        // Eight partial sums: vectorisable without reassociation licence.
        let mut acc = [0f32; 8];
        let chunks = grp.chunks_exact(8);
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
        let scale = 1.0 / (sum / width as f32 + eps).sqrt();
        for (v, &wv) in grp.iter_mut().zip(w) {
            *v *= scale * wv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_within_each_group() {
        let (e, g, l, stride) = (12, 3, 2, 15);
        let y: Vec<f32> = (0..l * e).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3).collect();
        let z: Vec<f32> = (0..l * stride).map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.4).collect();
        let w: Vec<f32> = (0..e).map(|i| 0.5 + i as f32 * 0.1).collect();
        let mut out = vec![0f32; l * e];
        gated_group_rms_norm(&y, &z, stride, &w, g, 1e-5, &mut out);
        let width = e / g;
        for t in 0..l {
            let gated: Vec<f64> = (0..e)
                .map(|c| {
                    let zv = z[t * stride + c] as f64;
                    y[t * e + c] as f64 * zv / (1.0 + (-zv).exp())
                })
                .collect();
            for grp in 0..g {
                let part = &gated[grp * width..(grp + 1) * width];
                let ms = part.iter().map(|v| v * v).sum::<f64>() / width as f64;
                for (k, &gk) in part.iter().enumerate() {
                    let c = grp * width + k;
                    let want = gk / (ms + 1e-5).sqrt() * w[c] as f64;
                    assert!((out[t * e + c] as f64 - want).abs() < 1e-5, "row {t} channel {c}");
                }
            }
        }
    }
}
