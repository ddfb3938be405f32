//! Causal grouped-query attention over a KV cache, fused: scores, mask, f32 softmax and the weighted
//! sum of values in one pass per tile, flash-style (online softmax: a running max, sum and output per
//! query row, updated one key block at a time), so memory is O(rows × head_dim), never O(context²).
//!
//! Query head `h` reads KV head `h / (heads / kv_heads)` (transformers' `repeat_kv`). A tile takes
//! every query head of one KV group at once, so each key / value row is loaded once per group.
//!
//! * Prefill (several query rows): tasks are blocks of query positions (rayon). Key blocks are aligned
//!   to absolute positions and each row walks them in order, so a row's result does not depend on
//!   which other rows share its call: chunked prefill is bit-identical to one call.
//! * Decode (one query row): tasks are spans of [`DECODE_SPAN`] keys — flash-decoding — each for every
//!   KV head, and the partial softmaxes are merged. The span is fixed (not per thread count), so
//!   results are the same on every machine.

use rayon::prelude::*;

use half::f16;

use super::attention_scores::{direct_scores_rows, KeyRows};
use super::kv_half::{prefetch_rows, widen_rows};
use super::math::exp;
use super::size_mul;

/// Keys scored per block (a block of K stays in L1 while every row of the tile reads it).
const KEY_BLOCK: usize = 64;
/// Query positions per prefill task.
const QUERY_BLOCK: usize = 16;
/// Keys per decode task.
pub(crate) const DECODE_SPAN: usize = 256;

/// Head counts and the softmax scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies `q · k` (Llama `1/sqrt(head_dim)`, Granite `attention_multiplier`).
    pub scale: f32,
}

impl AttentionShape {
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
}

/// A KV cache's keys or values as held: `[tokens, kv_heads · head_dim]`, f32 or f16.
#[derive(Clone, Copy, Debug)]
pub(crate) enum KvSlice<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl KvSlice<'_> {
    fn len(&self) -> usize {
        match self {
            KvSlice::F32(s) => s.len(),
            KvSlice::F16(s) => s.len(),
        }
    }
}

/// `&[f32]` / `&Vec<f32>` (and the f16 ones) as a `KvSlice`, so callers pass their caches as they hold them.
macro_rules! kv_slice_from {
    ($($elem:ty => $variant:ident),*) => {$(
        impl<'a> From<&'a [$elem]> for KvSlice<'a> {
            fn from(s: &'a [$elem]) -> Self {
                KvSlice::$variant(s)
            }
        }
        impl<'a> From<&'a Vec<$elem>> for KvSlice<'a> {
            fn from(s: &'a Vec<$elem>) -> Self {
                KvSlice::$variant(s)
            }
        }
    )*};
}
kv_slice_from!(f32 => F32, f16 => F16);

/// `out[t, h·hd..]` = softmax over keys `0..=past+t` of `scale · q[t,h] · k[j,g]`, times `v[j,g]`.
/// `q`: `[m, heads·hd]`; `keys` / `values`: `[past + m, kv_heads·hd]` (the cache after appending
/// this call's rows, both of one dtype); `out`: `[m, heads·hd]`. An f16 cache gives the bits an f32
/// cache holding the same (widened) values gives: every value is widened exactly before use.
pub(crate) fn causal_attention<'a>(
    s: AttentionShape,
    q: &[f32],
    keys: impl Into<KvSlice<'a>>,
    values: impl Into<KvSlice<'a>>,
    past: usize,
    out: &mut [f32],
) {
    let (keys, values) = (keys.into(), values.into());
    let (hd, qw, kw) = (s.head_dim, size_mul(s.heads, s.head_dim), size_mul(s.kv_heads, s.head_dim));
    assert!(s.kv_heads > 0 && hd > 0 && s.heads.is_multiple_of(s.kv_heads), "attention: head counts");
    let m = q.len() / qw;
    let total = past + m;
    assert!(q.len() == size_mul(m, qw) && out.len() == q.len(), "attention: q / out sizes");
    assert!(keys.len() == size_mul(total, kw) && values.len() == keys.len(), "attention: cache sizes");
    if m == 0 {
        return;
    }
    match (keys, values) {
        (KvSlice::F32(keys), KvSlice::F32(values)) if m == 1 => {
            decode(s, q, DecodeKv::F32(KvView { keys, values, width: kw }), total, out)
        }
        (KvSlice::F16(keys), KvSlice::F16(values)) if m == 1 => {
            decode(s, q, DecodeKv::F16 { keys, values, width: kw }, total, out)
        }
        (KvSlice::F32(_), KvSlice::F32(values)) => prefill(s, q, keys, values, past, out),
        (KvSlice::F16(_), KvSlice::F16(values)) => {
            // A prompt's tiles read every value many times: widen them once (the keys are
            // widened as they are transposed).
            let mut v32 = vec![0f32; values.len()];
            widen_rows(values, kw, 0, kw, 0, total, &mut v32);
            prefill(s, q, keys, &v32, past, out)
        }
        _ => panic!("attention: keys and values of different dtypes"),
    }
}

/// Several query rows: tasks of [`QUERY_BLOCK`] positions over the transposed keys.
fn prefill(s: AttentionShape, q: &[f32], keys: KvSlice, values: &[f32], past: usize, out: &mut [f32]) {
    let qw = s.heads * s.head_dim;
    let total = past + q.len() / qw;
    let kt = transposed_key_blocks(s, keys, total);
    // Prefill tiles read keys only through `kt`.
    let kv = KvView { keys: &[], values, width: s.kv_heads * s.head_dim };
    out.par_chunks_mut(QUERY_BLOCK * qw).enumerate().for_each(|(b, o)| {
        prefill_block(s, &q[b * QUERY_BLOCK * qw..][..o.len()], &kv, &kt, past + b * QUERY_BLOCK, o)
    });
}

/// The keys of every KV head as transposed blocks, `[kv_heads][blocks][head_dim][KEY_BLOCK]` (zeros
/// past the last key): what a prefill tile's scores read. Built once per call and shared by every
/// tile (each tile had transposed every block it reads itself, by scattered stores: ~10 % of the
/// attention of a 512-token prompt).
fn transposed_key_blocks(s: AttentionShape, keys: KvSlice, total: usize) -> Vec<f32> {
    let (hd, width) = (s.head_dim, s.kv_heads * s.head_dim);
    let blocks = total.div_ceil(KEY_BLOCK);
    let block_len = hd * KEY_BLOCK;
    let mut kt = vec![0f32; size_mul(size_mul(s.kv_heads, blocks), block_len)];
    kt.par_chunks_mut(blocks * block_len).enumerate().for_each(|(g, head)| {
        // An f16 key row, widened (exactly) before its values are scattered.
        let mut wide = vec![0f32; if matches!(keys, KvSlice::F16(_)) { hd } else { 0 }];
        for j in 0..total {
            let (b, jj) = (j / KEY_BLOCK, j % KEY_BLOCK);
            let row = match keys {
                KvSlice::F32(k) => &k[j * width + g * hd..][..hd],
                KvSlice::F16(k) => {
                    widen_rows(k, width, g * hd, hd, j, 1, &mut wide);
                    &wide[..]
                }
            };
            let dst = &mut head[b * block_len..(b + 1) * block_len];
            for (d, &x) in row.iter().enumerate() {
                dst[d * KEY_BLOCK + jj] = x;
            }
        }
    });
    kt
}

#[derive(Clone, Copy)]
struct KvView<'a> {
    keys: &'a [f32],
    values: &'a [f32],
    width: usize,
}

/// Online-softmax accumulators of a tile's rows.
struct Running {
    max: Vec<f32>,
    sum: Vec<f32>,
    acc: Vec<f32>,
}

impl Running {
    fn new(rows: usize, hd: usize) -> Self {
        Self { max: vec![f32::NEG_INFINITY; rows], sum: vec![0.0; rows], acc: vec![0.0; rows * hd] }
    }
}

/// Query rows `first_pos ..` of one prefill task, every head.
fn prefill_block(s: AttentionShape, q: &[f32], kv: &KvView, kt: &[f32], first_pos: usize, out: &mut [f32]) {
    let (hd, group) = (s.head_dim, s.group());
    let qw = s.heads * hd;
    let n = q.len() / qw;
    let rows = n * group;
    let mut qs = vec![0f32; rows * hd];
    let mut ends = vec![0usize; rows];
    for g in 0..s.kv_heads {
        // Rows ordered (position, head in group); q pre-scaled.
        for t in 0..n {
            for i in 0..group {
                let r = t * group + i;
                let src = &q[t * qw + (g * group + i) * hd..][..hd];
                for (d, &x) in qs[r * hd..(r + 1) * hd].iter_mut().zip(src) {
                    *d = x * s.scale;
                }
                ends[r] = first_pos + t + 1;
            }
        }
        let mut run = Running::new(rows, hd);
        let head_kt = &kt[g * kt.len() / s.kv_heads..(g + 1) * kt.len() / s.kv_heads];
        let tile =
            Tile { direct: false, hd, qs: &qs, ends: &ends, offset: g * hd, kt: head_kt, k0: 0, k1: first_pos + n };
        attend(&tile, kv, &mut run);
        for t in 0..n {
            for i in 0..group {
                let r = t * group + i;
                let inv = 1.0 / run.sum[r];
                let dst = &mut out[t * qw + (g * group + i) * hd..][..hd];
                for (d, &a) in dst.iter_mut().zip(&run.acc[r * hd..(r + 1) * hd]) {
                    *d = a * inv;
                }
            }
        }
    }
}

/// Where a decode step reads the cache: the f32 rows themselves, or f16 rows each task widens one key
/// block (one head's columns) at a time into scratch that stays in L1.
#[derive(Clone, Copy)]
enum DecodeKv<'a> {
    F32(KvView<'a>),
    F16 { keys: &'a [f16], values: &'a [f16], width: usize },
}

/// One query row against `total` keys: (KV head, key span) tasks, then a merge of their softmaxes.
fn decode(s: AttentionShape, q: &[f32], kv: DecodeKv, total: usize, out: &mut [f32]) {
    let (hd, group) = (s.head_dim, s.group());
    let spans = total.div_ceil(DECODE_SPAN);
    // A task is one span of keys for every KV head, the heads taking turns one key block at a time:
    // a block's cache rows (every head's columns) are then read once, as one sequential stream,
    // instead of each head striding through its own columns. Per head the blocks are the same
    // as one head's pass over the span, so the results are too. Partials: span-major.
    // Pre-scaled queries; KV head g's rows are `qs[g · group · hd ..][.. group · hd]`.
    let qs: Vec<f32> = q.iter().map(|x| x * s.scale).collect();
    let partials: Vec<Running> = (0..spans)
        .into_par_iter()
        .flat_map_iter(|span| {
            let ends = vec![total; group];
            let mut runs: Vec<Running> = (0..s.kv_heads).map(|_| Running::new(group, hd)).collect();
            let mut scratch = match kv {
                DecodeKv::F32(_) => (Vec::new(), Vec::new()),
                DecodeKv::F16 { .. } => (vec![0f32; KEY_BLOCK * hd], vec![0f32; KEY_BLOCK * hd]),
            };
            let (k0, k1) = (span * DECODE_SPAN, ((span + 1) * DECODE_SPAN).min(total));
            for j0 in (k0..k1).step_by(KEY_BLOCK) {
                let j1 = (j0 + KEY_BLOCK).min(k1);
                for (g, run) in runs.iter_mut().enumerate() {
                    let qs = &qs[g * group * hd..(g + 1) * group * hd];
                    // The block as f32 rows: where they are, the head's column, the block's rows.
                    let (view, offset, a, b) = match kv {
                        DecodeKv::F32(view) => (view, g * hd, j0, j1),
                        DecodeKv::F16 { keys, values, width } => {
                            if g == 0 && j1 < k1 {
                                let next = (k1 - j1).min(KEY_BLOCK);
                                prefetch_rows(keys, width, j1, next);
                                prefetch_rows(values, width, j1, next);
                            }
                            let (ks, vs) = &mut scratch;
                            widen_rows(keys, width, g * hd, hd, j0, j1 - j0, ks);
                            widen_rows(values, width, g * hd, hd, j0, j1 - j0, vs);
                            (KvView { keys: ks, values: vs, width: hd }, 0, 0, j1 - j0)
                        }
                    };
                    let tile = Tile { direct: true, hd, qs, ends: &ends, offset, kt: &[], k0: a, k1: b };
                    attend(&tile, &view, run);
                }
            }
            runs
        })
        .collect();
    for g in 0..s.kv_heads {
        let parts: Vec<&Running> = partials.iter().skip(g).step_by(s.kv_heads).collect();
        for i in 0..group {
            let m = parts.iter().map(|p| p.max[i]).fold(f32::NEG_INFINITY, f32::max);
            let dst = &mut out[(g * group + i) * hd..][..hd];
            dst.fill(0.0);
            let mut sum = 0f32;
            for p in &parts {
                let w = exp(p.max[i] - m);
                sum += p.sum[i] * w;
                for (d, &a) in dst.iter_mut().zip(&p.acc[i * hd..(i + 1) * hd]) {
                    *d += a * w;
                }
            }
            let inv = 1.0 / sum;
            dst.iter_mut().for_each(|d| *d *= inv);
        }
    }
}

multiversion!(fn attend(tile: &Tile, kv: &KvView, run: &mut Running) = attend_body);

/// The query rows of one task and the keys they fold in.
struct Tile<'a> {
    /// Scores by one dot product per key (decode) instead of a transposed key block (prefill).
    direct: bool,
    hd: usize,
    /// Pre-scaled query rows, `hd` values each.
    qs: &'a [f32],
    /// Per row: one past the last key it may see.
    ends: &'a [usize],
    /// Column of the KV head in a cache row.
    offset: usize,
    /// Prefill: this KV head's keys as transposed blocks (`transposed_key_blocks`; `k0` is then 0).
    kt: &'a [f32],
    k0: usize,
    k1: usize,
}

/// Folds keys `k0..k1` (each row only up to its `ends[r]`, exclusive) into the rows' running softmax.
/// Key blocks start at multiples of [`KEY_BLOCK`] from `k0`. Scores, by `direct`:
/// * false (prefill tiles, many rows): each key block is transposed once (`[head_dim, KEY_BLOCK]`) and
///   shared by every row, so a row's scores are a vectorised sum over dimensions of `q[d] · K[d, ..]`;
/// * true (decode, one row per head): one dot product per key (`attention_scores`, no transposition
///   to amortise).
///
/// Either way a score's summation order depends only on its key's position, never on the other rows.
/// The weighted values are then summed for all rows of the block at once (each value row loaded once
/// for them), each row's sum in key order as before.
#[inline(always)]
fn attend_body(tile: &Tile, kv: &KvView, run: &mut Running) {
    let Tile { direct, hd, qs, ends, offset, kt, k0, k1 } = *tile;
    let KvView { keys, values, width } = *kv;
    let Running { max, sum, acc } = run;
    // Per row: this block's softmax weights, and how many keys it sees (0 = none).
    let mut probs = vec![0f32; ends.len() * KEY_BLOCK];
    let mut seen = vec![0usize; ends.len()];
    let mut j0 = k0;
    while j0 < k1 {
        let j1 = (j0 + KEY_BLOCK).min(k1);
        let needed = ends.iter().map(|&e| e.min(j1)).max().unwrap_or(j0);
        if needed <= j0 {
            break; // ends only shrink the range: no row reads this block or any later one
        }
        if !direct {
            let kt = &kt[(j0 / KEY_BLOCK) * hd * KEY_BLOCK..][..hd * KEY_BLOCK];
            // Every row's scores of this block, rows four at a time (each transposed key row loaded
            // once for four rows; one at a time the loads had paced the FMAs). Rows that see none
            // of the block get scores they never read.
            let rows = ends.len();
            let mut r = 0;
            while r + 4 <= rows {
                block_scores::<4>(&qs[r * hd..(r + 4) * hd], kt, &mut probs[r * KEY_BLOCK..(r + 4) * KEY_BLOCK]);
                r += 4;
            }
            while r < rows {
                block_scores::<1>(&qs[r * hd..(r + 1) * hd], kt, &mut probs[r * KEY_BLOCK..(r + 1) * KEY_BLOCK]);
                r += 1;
            }
        }
        if direct {
            // Every row's scores of the block, each key row loaded once for the group's rows (rows that
            // end sooner get scores they never read).
            direct_scores_rows(qs, hd, KeyRows { keys, width, offset }, j0, needed - j0, &mut probs, KEY_BLOCK);
        }
        for (r, &end) in ends.iter().enumerate() {
            let end = end.min(j1);
            seen[r] = end.saturating_sub(j0);
            if end <= j0 {
                continue;
            }
            let n = end - j0;
            let scores: &mut [f32; KEY_BLOCK] =
                (&mut probs[r * KEY_BLOCK..(r + 1) * KEY_BLOCK]).try_into().expect("block");
            let sc = &mut scores[..n];
            let new_max = max[r].max(lanes_max(sc));
            if new_max > max[r] {
                let correction = exp(max[r] - new_max);
                sum[r] *= correction;
                acc[r * hd..(r + 1) * hd].iter_mut().for_each(|x| *x *= correction);
                max[r] = new_max;
            }
            for s in sc.iter_mut() {
                *s = exp(*s - new_max);
            }
            sum[r] += lanes_sum(sc);
        }
        // Values: consecutive rows that see the same keys share each value row's load.
        let mut r0 = 0;
        while r0 < ends.len() {
            let n = seen[r0];
            let rows = seen[r0..].iter().take_while(|&&m| m == n).count();
            if n > 0 {
                let v = ValueBlock { values, j0, n, width, offset };
                add_weighted(
                    hd,
                    &probs[r0 * KEY_BLOCK..(r0 + rows) * KEY_BLOCK],
                    &v,
                    &mut acc[r0 * hd..(r0 + rows) * hd],
                );
            }
            r0 += rows;
        }
        j0 = j1;
    }
}

/// `scores[r][k] = Σ_d q[r][d] · kt[d][k]` for `R` rows over a whole transposed key block (lanes past
/// the block's keys are ignored by the caller), each score summed over `d` in order — so the same
/// bits whichever `R` computes it. The accumulators stay in vector registers across the sum.
#[inline(always)]
fn block_scores<const R: usize>(qs: &[f32], kt: &[f32], scores: &mut [f32]) {
    let hd = qs.len() / R;
    let mut block = [[0f32; KEY_BLOCK]; R];
    for d in 0..hd {
        let row: &[f32; KEY_BLOCK] = kt[d * KEY_BLOCK..(d + 1) * KEY_BLOCK].try_into().expect("block row");
        for (r, acc) in block.iter_mut().enumerate() {
            let qd = qs[r * hd + d];
            for k in 0..KEY_BLOCK {
                acc[k] += qd * row[k];
            }
        }
    }
    for (r, acc) in block.iter().enumerate() {
        scores[r * KEY_BLOCK..(r + 1) * KEY_BLOCK].copy_from_slice(acc);
    }
}

/// Value rows `j0 .. j0 + n` of one KV head.
struct ValueBlock<'a> {
    values: &'a [f32],
    j0: usize,
    n: usize,
    width: usize,
    offset: usize,
}

impl ValueBlock<'_> {
    #[inline(always)]
    fn row(&self, j: usize, hd: usize) -> &[f32] {
        &self.values[(self.j0 + j) * self.width + self.offset..][..hd]
    }
}

/// For each row `r` (probabilities `p[r · KEY_BLOCK ..]`, accumulator `a[r · hd ..]`):
/// `a[r] += Σ_j p[r][j] · V[j0 + j]`, in order of `j`. Heads of 64 / 128 values take rows four / two
/// at a time with their accumulators in vector registers and each value row loaded once for all.
#[inline(always)]
fn add_weighted(hd: usize, p: &[f32], v: &ValueBlock, a: &mut [f32]) {
    let rows = a.len() / hd;
    let mut r = 0;
    while r < rows {
        let (pr, ar) = (&p[r * KEY_BLOCK..], &mut a[r * hd..]);
        r += match (hd, rows - r) {
            (64, 4..) => add_weighted_rows::<64, 4>(pr, v, ar),
            (64, 3) => add_weighted_rows::<64, 3>(pr, v, ar),
            (64, 2) => add_weighted_rows::<64, 2>(pr, v, ar),
            (64, _) => add_weighted_rows::<64, 1>(pr, v, ar),
            (128, 2..) => add_weighted_rows::<128, 2>(pr, v, ar),
            (128, _) => add_weighted_rows::<128, 1>(pr, v, ar),
            _ => {
                for (j, &pj) in pr[..v.n].iter().enumerate() {
                    let vr = v.row(j, hd);
                    for (x, &vv) in ar[..hd].iter_mut().zip(vr) {
                        *x += pj * vv;
                    }
                }
                1
            }
        };
    }
}

/// [`add_weighted`] for `R` rows of `H` values; returns `R`.
#[inline(always)]
fn add_weighted_rows<const H: usize, const R: usize>(p: &[f32], v: &ValueBlock, a: &mut [f32]) -> usize {
    let mut acc = [[0f32; H]; R];
    for (r, x) in acc.iter_mut().enumerate() {
        x.copy_from_slice(&a[r * H..(r + 1) * H]);
    }
    for j in 0..v.n {
        let vr: &[f32; H] = v.row(j, H).try_into().expect("value row");
        for (r, x) in acc.iter_mut().enumerate() {
            let pj = p[r * KEY_BLOCK + j];
            for d in 0..H {
                x[d] += pj * vr[d];
            }
        }
    }
    for (r, x) in acc.iter().enumerate() {
        a[r * H..(r + 1) * H].copy_from_slice(x);
    }
    R
}

/// Largest value, with sixteen running maxima (vectorises; NaN-free input).
#[inline(always)]
fn lanes_max(x: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..16 {
            m[k] = if c[k] > m[k] { c[k] } else { m[k] };
        }
    }
    rest.iter().chain(&m).fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
}

/// Sum with sixteen partial sums (vectorises; fixed order for a given length).
#[inline(always)]
fn lanes_sum(x: &[f32]) -> f32 {
    let mut p = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..16 {
            p[k] += c[k];
        }
    }
    p.iter().chain(rest).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain float64 attention with an explicit mask.
    fn naive(s: AttentionShape, q: &[f32], k: &[f32], v: &[f32], past: usize) -> Vec<f64> {
        let (hd, qw, kw) = (s.head_dim, s.heads * s.head_dim, s.kv_heads * s.head_dim);
        let m = q.len() / qw;
        let mut out = vec![0f64; q.len()];
        for t in 0..m {
            for h in 0..s.heads {
                let g = h / (s.heads / s.kv_heads);
                let n = past + t + 1;
                let sc: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..hd).map(|d| q[t * qw + h * hd + d] as f64 * k[j * kw + g * hd + d] as f64).sum::<f64>()
                            * s.scale as f64
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hd {
                    out[t * qw + h * hd + d] = (0..n).map(|j| e[j] / z * v[j * kw + g * hd + d] as f64).sum();
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    #[test]
    fn no_query_rows_is_no_work_with_or_without_a_cache() {
        let s = AttentionShape { heads: 4, kv_heads: 2, head_dim: 8, scale: 0.5 };
        for past in [0, 3] {
            let cache = values(past * 2 * 8, 1);
            causal_attention(s, &[], &cache, &cache, past, &mut []);
        }
    }

    #[test]
    fn matches_naive_for_prefill_and_decode_and_chunks_identically() {
        // The generic head size and the register-resident ones (64, 128).
        for head_dim in [12, 64, 128] {
            check_head_dim(head_dim);
        }
    }

    fn check_head_dim(head_dim: usize) {
        let s = AttentionShape { heads: 6, kv_heads: 2, head_dim, scale: 1.0 / (head_dim as f32).sqrt() };
        let (qw, kw) = (6 * head_dim, 2 * head_dim);
        let total = 300; // several key blocks and decode spans
        let q = values(total * qw, 1);
        let k = values(total * kw, 2);
        let v = values(total * kw, 3);
        let mut all = vec![0f32; total * qw];
        causal_attention(s, &q, &k, &v, 0, &mut all);
        let want = naive(s, &q, &k, &v, 0);
        let worst = all.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-5, "prefill vs naive {worst}");
        // In pieces (the last one a decode step): the prefill rows are bit-identical.
        let mut pieced = Vec::new();
        for (a, b) in [(0, 37), (37, 200), (200, 299)] {
            let mut o = vec![0f32; (b - a) * qw];
            causal_attention(s, &q[a * qw..b * qw], &k[..b * kw], &v[..b * kw], a, &mut o);
            pieced.extend(o);
        }
        assert_eq!(&pieced[..], &all[..299 * qw]);
        let mut last = vec![0f32; qw];
        causal_attention(s, &q[299 * qw..], &k, &v, 299, &mut last);
        let worst = last.iter().zip(&want[299 * qw..]).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-5, "decode vs naive {worst}");
    }

    #[test]
    fn an_f16_cache_gives_the_bits_of_an_f32_cache_of_its_values() {
        for head_dim in [12, 64, 128] {
            let s = AttentionShape { heads: 6, kv_heads: 2, head_dim, scale: 1.0 / (head_dim as f32).sqrt() };
            let (qw, kw) = (6 * head_dim, 2 * head_dim);
            let total = 300; // two decode spans, several key blocks
            let q = values(total * qw, 1);
            let (mut k16, mut v16) = (vec![f16::ZERO; total * kw], vec![f16::ZERO; total * kw]);
            super::super::kv_half::narrow(&values(total * kw, 2), &mut k16);
            super::super::kv_half::narrow(&values(total * kw, 3), &mut v16);
            let k: Vec<f32> = k16.iter().map(|h| h.to_f32()).collect();
            let v: Vec<f32> = v16.iter().map(|h| h.to_f32()).collect();
            assert_ne!(k, values(total * kw, 2), "the f16 cache rounds");
            // A prompt in two pieces, then a decode step at the end of each decode span's first block
            // and at the last position.
            for (a, b) in [(0, 37), (37, 299), (63, 64), (255, 256), (299, 300)] {
                let rows = &q[a * qw..b * qw];
                let (mut half, mut full) = (vec![0f32; rows.len()], vec![0f32; rows.len()]);
                causal_attention(s, rows, &k16[..b * kw], &v16[..b * kw], a, &mut half);
                causal_attention(s, rows, &k[..b * kw], &v[..b * kw], a, &mut full);
                assert!(
                    half.iter().zip(&full).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "head_dim {head_dim}, rows {a}..{b}"
                );
            }
        }
    }
}

// Timing with the thread CPU clock (unix).
#[cfg(all(test, unix))]
mod speed {
    use super::*;

    fn cpu_seconds() -> f64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    }

    /// Single-thread CPU time of the SmolLM-135M shape's attention (9 heads / 3 KV heads of 64):
    /// `cargo test --release -p phoenix-core --lib attention_speed -- --ignored --nocapture`;
    /// `PROBE_CONTEXT=n` (≥ 512, default 4096) sets the decode step's context; `PROBE_PREFILL_ONLY=1`
    /// times the 512-token prompt alone.
    #[test]
    #[ignore]
    fn attention_speed() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let s = AttentionShape { heads: 9, kv_heads: 3, head_dim: 64, scale: 0.125 };
        let total = std::env::var("PROBE_CONTEXT").ok().and_then(|v| v.parse().ok()).unwrap_or(4096usize).max(512);
        let k: Vec<f32> = (0..total * 192).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01).collect();
        let q: Vec<f32> = (0..512 * 576).map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.01).collect();
        pool.install(|| {
            let mut out = vec![0f32; 576];
            // Fastest of several rounds: the shared machine's noise only ever slows a round.
            let best = |f: &mut dyn FnMut()| {
                (0..7)
                    .map(|_| {
                        let t = cpu_seconds();
                        f();
                        cpu_seconds() - t
                    })
                    .fold(f64::MAX, f64::min)
            };
            if std::env::var("PROBE_PREFILL_ONLY").is_err() {
                let hot =
                    best(&mut || (0..50).for_each(|_| causal_attention(s, &q[..576], &k, &k, total - 1, &mut out)));
                println!("decode at {total}: {:.1} µs per layer", hot / 50.0 * 1e6);
                // Cold: 48 layers' caches (> L3) visited in turn, as a decode step visits them (the
                // weights streamed since the last token have evicted them).
                let layers: Vec<(Vec<f32>, Vec<f32>)> =
                    (0..48).map(|l| (k.iter().map(|x| x + l as f32 * 1e-3).collect(), k.clone())).collect();
                let cold = best(&mut || {
                    for (lk, lv) in &layers {
                        causal_attention(s, &q[..576], lk, lv, total - 1, &mut out)
                    }
                });
                println!("decode at {total}, cold: {:.1} µs per layer", cold / 48.0 * 1e6);
                // Wall time on every core (the spans spread over the pool).
                let wide = rayon::ThreadPoolBuilder::new().build().unwrap();
                let wall = wide.install(|| {
                    (0..7)
                        .map(|_| {
                            let t = std::time::Instant::now();
                            for (lk, lv) in &layers {
                                causal_attention(s, &q[..576], lk, lv, total - 1, &mut out)
                            }
                            t.elapsed().as_secs_f64()
                        })
                        .fold(f64::MAX, f64::min)
                });
                let n = wide.current_num_threads();
                println!("decode at {total}, cold, {n} threads: {:.1} µs per layer (wall)", wall / 48.0 * 1e6);
            }
            let mut out = vec![0f32; 512 * 576];
            let kv = &k[..512 * 192];
            let t = best(&mut || causal_attention(s, &q, kv, kv, 0, &mut out));
            // q·k and p·v over the causal half: 2 · 2 · heads · hd · 512 · 513 / 2 FLOP.
            let gflop = 2.0 * 2.0 * 9.0 * 64.0 * (512.0 * 513.0 / 2.0) / 1e9;
            println!("prefill 512: {:.2} ms per layer, {:.0} GFLOP/s", t * 1e3, gflop / t);
        });
    }
}
