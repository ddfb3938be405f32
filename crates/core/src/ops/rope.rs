//! RoPE rotation kernels: per row, every head turns pairs of values by the row's angles — the
//! "rotate_half" layout (`x[j]`, `x[j + half]`) of Hugging Face checkpoints, and the interleaved one
//! (`x[2j]`, `x[2j + 1]`) of GGUF Llama files.

/// `x`: rows of whole heads (`2·half` values each); `cos` / `sin`: `half` values per row.
pub(crate) fn rotate_half_rows(x: &[f32], cos: &[f32], sin: &[f32], half: usize, out: &mut [f32]) {
    for_each_head(x, cos, sin, half, out, |xh, oh, c, s| {
        let (x1, x2) = xh.split_at(half);
        let (o1, o2) = oh.split_at_mut(half);
        for j in 0..half {
            o1[j] = x1[j] * c[j] - x2[j] * s[j];
            o2[j] = x2[j] * c[j] + x1[j] * s[j];
        }
    });
}

/// The interleaved layout (GGUF Llama): per row, every head turns `(x[2j], x[2j + 1])` by angle `j`.
pub(crate) fn rotate_pairs_rows(x: &[f32], cos: &[f32], sin: &[f32], half: usize, out: &mut [f32]) {
    for_each_head(x, cos, sin, half, out, |xh, oh, c, s| {
        for j in 0..half {
            let (a, b) = (xh[2 * j], xh[2 * j + 1]);
            oh[2 * j] = a * c[j] - b * s[j];
            oh[2 * j + 1] = b * c[j] + a * s[j];
        }
    });
}

/// Checks the shapes, then calls `turn(head in, head out, cos, sin)` for every head of every row.
#[inline(always)]
fn for_each_head(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    half: usize,
    out: &mut [f32],
    turn: impl Fn(&[f32], &mut [f32], &[f32], &[f32]),
) {
    let head = 2 * half;
    assert!(half > 0 && cos.len() == sin.len() && cos.len().is_multiple_of(half), "rope: tables");
    let rows = cos.len() / half;
    if rows == 0 {
        return;
    }
    assert!(x.len() == out.len() && x.len().is_multiple_of(rows), "rope: rows");
    let width = x.len() / rows;
    assert!(width.is_multiple_of(head), "rope: rows of whole heads");
    for (r, (xr, or)) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)).enumerate() {
        let (c, s) = (&cos[r * half..(r + 1) * half], &sin[r * half..(r + 1) * half]);
        for (xh, oh) in xr.chunks_exact(head).zip(or.chunks_exact_mut(head)) {
            turn(xh, oh, c, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interleaved RoPE on rows permuted as llama.cpp's converter does (new row `2j` = old `j`,
    /// `2j+1` = old `j + half`) gives the rotate-half result permuted the same way.
    #[test]
    fn interleaved_pairs_equal_rotate_half_on_permuted_rows() {
        let half = 4;
        let x: Vec<f32> = (0..2 * half * 2).map(|i| (i as f32 * 0.37).sin()).collect();
        let cos: Vec<f32> = (0..half).map(|j| (j as f32 * 0.5).cos()).collect();
        let sin: Vec<f32> = (0..half).map(|j| (j as f32 * 0.5).sin()).collect();
        let permute = |v: &[f32]| -> Vec<f32> {
            v.chunks_exact(2 * half).flat_map(|h| (0..half).flat_map(move |j| [h[j], h[j + half]])).collect()
        };
        let mut plain = vec![0.0; x.len()];
        rotate_half_rows(&x, &cos, &sin, half, &mut plain);
        let mut pairs = vec![0.0; x.len()];
        rotate_pairs_rows(&permute(&x), &cos, &sin, half, &mut pairs);
        assert_eq!(pairs, permute(&plain));
    }
}
