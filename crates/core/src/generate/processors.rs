//! Logits processors, each a plain function over one row of logits, with the semantics of Hugging
//! Face transformers (and transformers.js): filtered tokens become `-inf`, never removed, so indices
//! stay token ids. [`crate::generate::Sampler`] chains them in HF order:
//! vocabulary mask → repetition penalty → temperature → top-k → top-p → min-p.

/// Sets every row at or beyond `limit` to `-inf`: padded embedding rows (no token behind them)
/// must never be sampled.
pub fn mask_from(logits: &mut [f32], limit: usize) {
    if limit < logits.len() {
        logits[limit..].fill(f32::NEG_INFINITY);
    }
}

/// HF `RepetitionPenaltyLogitsProcessor`: for each distinct id in `recent`, a positive logit is
/// divided by `penalty`, a negative one multiplied. `scratch` avoids a per-step allocation.
pub fn repetition_penalty(logits: &mut [f32], recent: &[u32], penalty: f32, scratch: &mut Vec<u32>) {
    if penalty == 1.0 || recent.is_empty() {
        return;
    }
    scratch.clear();
    scratch.extend_from_slice(recent);
    scratch.sort_unstable();
    scratch.dedup();
    for &id in scratch.iter() {
        if let Some(l) = logits.get_mut(id as usize) {
            *l = if *l < 0.0 { *l * penalty } else { *l / penalty };
        }
    }
}

/// HF `TemperatureLogitsWarper`: divides by `temperature` (> 0).
pub fn temperature(logits: &mut [f32], temperature: f32) {
    if temperature != 1.0 {
        for l in logits.iter_mut() {
            *l /= temperature;
        }
    }
}

/// HF `TopKLogitsWarper`: keeps tokens whose logit is at least the k-th largest (ties kept); 0 = off.
pub fn top_k(logits: &mut [f32], k: usize, scratch: &mut Vec<f32>) {
    scratch.clear();
    scratch.extend(logits.iter().copied().filter(|l| l.is_finite()));
    if k == 0 || k >= scratch.len() {
        return;
    }
    let (_, kth, _) = scratch.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let threshold = *kth;
    for l in logits.iter_mut() {
        if *l < threshold {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// HF `TopPLogitsWarper`: sorting ascending, drops tokens whose cumulative probability (up to and
/// including them) is ≤ 1 − `p`; the most likely token always stays. 1 = off.
pub fn top_p(logits: &mut [f32], p: f32, scratch: &mut Vec<(f32, u32)>) {
    if p >= 1.0 {
        return;
    }
    finite_sorted_ascending(logits, scratch);
    let Some(&(max, _)) = scratch.last() else {
        return;
    };
    let total: f64 = scratch.iter().map(|&(l, _)| ((l - max) as f64).exp()).sum();
    let cut = 1.0 - p as f64;
    let mut cumulative = 0.0;
    let last = scratch.len() - 1;
    for (i, &(l, id)) in scratch.iter().enumerate() {
        cumulative += ((l - max) as f64).exp() / total;
        if i == last || cumulative > cut {
            break;
        }
        logits[id as usize] = f32::NEG_INFINITY;
    }
}

/// HF `MinPLogitsWarper`: drops tokens whose probability is below `p` × the top probability; 0 = off.
pub fn min_p(logits: &mut [f32], p: f32) {
    if p <= 0.0 {
        return;
    }
    let Some(max) = max_finite(logits) else {
        return;
    };
    for l in logits.iter_mut() {
        // prob / top_prob = exp(l - max), so no normalisation is needed.
        if l.is_finite() && (((*l - max) as f64).exp()) < p as f64 {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// Index of the largest logit (the lowest id among equals, as `torch.argmax`); `+inf` wins like
/// any other largest value. `None` if every logit is NaN or `-inf`. NaN is ignored (the session
/// refuses non-finite model output before processing; only a processor can make a value infinite).
pub fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(u32, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if !l.is_nan() && l > f32::NEG_INFINITY && best.is_none_or(|(_, b)| l > b) {
            best = Some((i as u32, l));
        }
    }
    best.map(|(i, _)| i)
}

/// Draws an id with probability softmax(logits); `u` is uniform in [0, 1). Walks ids in order, in
/// f64, so the result depends only on the logits and `u`. A `+inf` logit holds all the probability
/// (the lowest such id is returned). `None` if no logit is finite or `+inf`.
pub fn sample_softmax(logits: &[f32], u: f64) -> Option<u32> {
    if let Some(i) = logits.iter().position(|&l| l == f32::INFINITY) {
        return Some(i as u32);
    }
    let max = max_finite(logits)?;
    let total: f64 = logits.iter().filter(|l| l.is_finite()).map(|&l| ((l - max) as f64).exp()).sum();
    let target = u * total;
    let mut cumulative = 0.0;
    let mut last_finite = None;
    for (i, &l) in logits.iter().enumerate() {
        if !l.is_finite() {
            continue;
        }
        cumulative += ((l - max) as f64).exp();
        last_finite = Some(i as u32);
        if cumulative > target {
            return last_finite;
        }
    }
    last_finite // rounding left `target` just above the sum
}

fn max_finite(logits: &[f32]) -> Option<f32> {
    logits.iter().copied().filter(|l| l.is_finite()).reduce(f32::max)
}

/// Finite (logit, id) pairs sorted ascending by logit, ties by id (a stable, platform-free order).
fn finite_sorted_ascending(logits: &[f32], out: &mut Vec<(f32, u32)>) {
    out.clear();
    out.extend(logits.iter().enumerate().filter(|(_, l)| l.is_finite()).map(|(i, &l)| (l, i as u32)));
    out.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
}
