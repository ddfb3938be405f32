//! The checks every family's reference test runs against a float64 `reference.json`: full prefill,
//! prefill of k ids then one-token decode steps, greedy continuation (steps with a clear margin).

use std::path::Path;

use phoenix_core::models::load_model_dir;
use phoenix_core::{LanguageModel, LogitsWanted};

use super::{argmax, max_abs_diff, read_reference, Reference};

/// Aim for float32 against float64 (logits of magnitude ~1-10).
pub const TOL: f64 = 1e-3;

/// Every row of a prefill, and the last row alone, within [`TOL`]; returns the worst |Δ|.
pub fn check_prefill(model: &dyn LanguageModel, r: &Reference) -> f64 {
    let v = model.info().vocab_size;
    let mut st = model.new_state().unwrap();
    let got = model.forward(&r.input_ids, st.as_mut(), LogitsWanted::All).unwrap();
    assert_eq!(got.len(), r.input_ids.len() * v);
    let worst =
        r.logits.iter().enumerate().map(|(t, want)| max_abs_diff(&got[t * v..(t + 1) * v], want)).fold(0.0, f64::max);
    assert!(worst <= TOL, "prefill max |Δ logit| = {worst}");
    let mut st = model.new_state().unwrap();
    let last = model.forward(&r.input_ids, st.as_mut(), LogitsWanted::Last).unwrap();
    assert_eq!(last.len(), v, "`Last` returns one row");
    assert!(max_abs_diff(&last, &r.logits[r.input_ids.len() - 1]) <= TOL);
    worst
}

/// Prefill of the first `k` ids, then one-token decode steps: each step's logits are the next row.
pub fn check_decode(model: &dyn LanguageModel, r: &Reference, k: usize) -> f64 {
    let mut st = model.new_state().unwrap();
    let first = model.forward(&r.input_ids[..k], st.as_mut(), LogitsWanted::Last).unwrap();
    let mut worst = max_abs_diff(&first, &r.logits[k - 1]);
    for t in k..r.input_ids.len() {
        let row = model.forward(&r.input_ids[t..t + 1], st.as_mut(), LogitsWanted::Last).unwrap();
        worst = worst.max(max_abs_diff(&row, &r.logits[t]));
    }
    assert!(worst <= TOL, "decode after prefill of {k}: max |Δ logit| = {worst}");
    worst
}

/// Greedy tokens equal for steps whose reference margin exceeds 1e-3, up to the first that doesn't.
pub fn check_greedy(model: &dyn LanguageModel, r: &Reference) -> usize {
    let mut st = model.new_state().unwrap();
    let mut row = model.forward(&r.input_ids, st.as_mut(), LogitsWanted::Last).unwrap();
    let mut checked = 0;
    for (step, (&want, &margin)) in r.greedy_ids.iter().zip(&r.greedy_margins).enumerate() {
        if margin <= 1e-3 {
            break;
        }
        assert_eq!(argmax(&row), want, "greedy step {step}");
        checked += 1;
        row = model.forward(&[want], st.as_mut(), LogitsWanted::Last).unwrap();
    }
    checked
}

/// All three checks on the model in `dir` against `reference`, decoding after prefills of 1, 2, 3,
/// n/2 and n-1 ids and of each of `splits` (chunk boundaries worth crossing).
pub fn check_against_reference(dir: &Path, reference: &Path, splits: &[usize]) {
    let model = load_model_dir(dir).unwrap();
    let r = read_reference(reference.to_path_buf());
    let prefill = check_prefill(model.as_ref(), &r);
    let n = r.input_ids.len();
    let mut decode = 0f64;
    for &k in [1, 2, 3, n / 2, n - 1].iter().chain(splits) {
        decode = decode.max(check_decode(model.as_ref(), &r, k));
    }
    let greedy = check_greedy(model.as_ref(), &r);
    assert!(greedy >= 1, "at least one greedy step has a clear margin");
    eprintln!(
        "{}: prefill max |Δ| = {prefill:.2e}, decode max |Δ| = {decode:.2e}, greedy {greedy}/{} steps match",
        dir.display(),
        r.greedy_ids.len()
    );
}

/// [`check_against_reference`] with the folder's own `reference.json`.
pub fn check_model_dir(dir: &Path, splits: &[usize]) {
    check_against_reference(dir, &dir.join("reference.json"), splits);
}
