//! RoPE rotation kernel ("rotate_half" layout): per row, every head turns `(x[j], x[j + half])` by
//! the row's angle `j`.

/// `x`: rows of whole heads (`2·half` values each); `cos` / `sin`: `half` values per row.
pub(crate) fn rotate_half_rows(x: &[f32], cos: &[f32], sin: &[f32], half: usize, out: &mut [f32]) {
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
            let (x1, x2) = xh.split_at(half);
            let (o1, o2) = oh.split_at_mut(half);
            for j in 0..half {
                o1[j] = x1[j] * c[j] - x2[j] * s[j];
                o2[j] = x2[j] * c[j] + x1[j] * s[j];
            }
        }
    }
}
