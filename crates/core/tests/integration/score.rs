//! `LoadedModel::score` on the real fixtures: per-token log-probs, log-likelihood, perplexity and
//! argmax against a float64 log-softmax of the model's own logits (and of the float64 reference
//! logits); logits only when asked; the same id checks and limits as `logits`; pieces.

use crate::common;
use crate::model_support;

use std::sync::{Arc, Mutex};

use common::toy_model::ToyModel;
use model_support::{fixture, lite_model, read_reference};
use phoenix_core::session::{LoadedModel, ScoreOptions, MAX_LOGITS_VALUES};
use phoenix_core::ErrorCode;

const WITH_LOGITS: ScoreOptions = ScoreOptions { include_logits: true };

/// `log_softmax(row)[id]` computed independently: every value widened to f64 first.
fn log_softmax64(row: &[f64], id: usize) -> f64 {
    let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
    row[id] - lse
}

fn widen(row: &[f32]) -> Vec<f64> {
    row.iter().map(|&v| v as f64).collect()
}

fn first_argmax(row: &[f32]) -> u32 {
    (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best }) as u32
}

/// Checks every fact of `score(ids)` against the model's own logits for `ids`.
fn check_against_own_logits(m: &LoadedModel, ids: &[u32]) {
    let vocab = m.model_info().vocab_size;
    let logits = m.logits(ids).unwrap();
    let scored = m.score(ids, ScoreOptions::default()).unwrap();
    assert_eq!(scored.token_count, ids.len());
    assert_eq!(scored.logits, None, "logits only when asked");
    assert_eq!(scored.token_logprobs.len(), ids.len() - 1);
    for (i, lp) in scored.token_logprobs.iter().enumerate() {
        let want = log_softmax64(&widen(&logits[i * vocab..(i + 1) * vocab]), ids[i + 1] as usize);
        assert!((lp - want).abs() < 1e-9, "position {i}: {lp} vs {want}");
    }
    let sum: f64 = scored.token_logprobs.iter().sum();
    assert!((scored.log_likelihood - sum).abs() < 1e-9);
    let ppl = scored.perplexity.expect("more than one id");
    assert!((ppl - (-sum / (ids.len() - 1) as f64).exp()).abs() < 1e-9 * ppl);
    let argmax: Vec<u32> = logits.chunks(vocab).map(first_argmax).collect();
    assert_eq!(scored.next_argmax, argmax);

    let with_logits = m.score(ids, WITH_LOGITS).unwrap();
    assert_eq!(with_logits.logits.as_deref(), Some(logits.as_slice()), "the same logits as `logits`");
    assert_eq!(with_logits.token_logprobs, scored.token_logprobs);
}

#[test]
fn log_probs_match_a_float64_log_softmax_on_every_fixture() {
    for (dir, reference) in [
        (fixture("mamba1-tiny"), fixture("mamba1-tiny/reference.json")),
        (fixture("mamba1-tiny-original"), fixture("mamba1-tiny/reference.json")),
        (lite_model(), lite_model().join("reference.json")),
    ] {
        let m = LoadedModel::load(&dir).unwrap();
        let r = read_reference(reference);
        check_against_own_logits(&m, &r.input_ids);

        // And within float32 model error of the log-softmax of the float64 reference logits.
        let scored = m.score(&r.input_ids, ScoreOptions::default()).unwrap();
        for (i, lp) in scored.token_logprobs.iter().enumerate() {
            let want = log_softmax64(&r.logits[i], r.input_ids[i + 1] as usize);
            assert!((lp - want).abs() < 2e-3, "{}: position {i}: {lp} vs reference {want}", dir.display());
        }
    }
}

#[test]
fn a_sequence_longer_than_one_prefill_piece_scores_as_one_call() {
    let m = LoadedModel::load(&fixture("mamba1-tiny")).unwrap();
    let vocab = m.model_info().vocab_size as u32;
    // Past the model's prefill piece (512 tokens), so scoring runs in two pieces.
    let ids: Vec<u32> = (0..700u32).map(|i| (i * 37 + 11) % vocab).collect();
    check_against_own_logits(&m, &ids);
}

#[test]
fn a_single_id_has_no_prediction() {
    let m = LoadedModel::load(&fixture("mamba1-tiny")).unwrap();
    let scored = m.score(&[5], ScoreOptions::default()).unwrap();
    assert_eq!(scored.token_count, 1);
    assert!(scored.token_logprobs.is_empty());
    assert!(scored.log_likelihood == 0.0 && scored.log_likelihood.is_sign_positive(), "+0, not -0");
    assert_eq!(scored.perplexity, None);
    assert_eq!(scored.next_argmax.len(), 1);
}

#[test]
fn bad_ids_are_refused_like_logits_refuses_them() {
    let m = LoadedModel::load(&fixture("mamba1-tiny")).unwrap();
    for options in [ScoreOptions::default(), WITH_LOGITS] {
        let empty = m.score(&[], options).unwrap_err();
        assert_eq!(empty.code, ErrorCode::InvalidOption);
        assert!(empty.message.contains("`ids` is empty"), "{}", empty.message);
        let outside = m.score(&[1, 512], options).unwrap_err();
        assert_eq!(outside.code, ErrorCode::InvalidOption);
        assert_eq!(outside.message, m.logits(&[1, 512]).unwrap_err().message);
    }
}

#[test]
fn the_logits_limit_applies_only_when_logits_are_asked_for() {
    // 257 ids x 2^20 columns is just over the one-call limit of 2^28 values.
    let vocab = 1 << 20;
    let ids: Vec<u32> = (0..257).collect();
    assert!(ids.len() * vocab > MAX_LOGITS_VALUES);
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    let toy = ToyModel::new(vocab, 1, vec![]).with_prefill_chunk(16, move |n| seen.lock().unwrap().push(n));
    let m = LoadedModel::new(Box::new(toy), None).unwrap();

    let e = m.score(&ids, WITH_LOGITS).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidOption);
    assert!(e.message.contains("-value limit of one call"), "{}", e.message);
    assert!(calls.lock().unwrap().is_empty(), "refused before running the model");

    let scored = m.score(&ids, ScoreOptions::default()).unwrap();
    assert_eq!(scored.token_logprobs.len(), 256);
    assert!(scored.token_logprobs.iter().all(|lp| lp.is_finite() && *lp < 0.0));
    // Fed in the model's pieces, so only one piece's logits are ever held.
    let calls = calls.lock().unwrap();
    assert_eq!(calls.iter().sum::<usize>(), 257);
    assert!(calls.iter().all(|&n| n <= 16), "{calls:?}");
}
