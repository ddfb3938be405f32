//! Sessions on the real models: greedy text against the reference, snapshot round trips, state
//! mismatches, concurrent generations, scoring logits.

use crate::common;

use std::sync::Arc;

use common::*;
use phoenix_core::generate::{FinishReason, GenerateOptions, RawGenerateOptions};
use phoenix_core::session::{LoadedModel, Prompt};
use phoenix_core::ErrorCode;

const PROMPT: &str = "Once upon a time, there was a little";

fn phoenix() -> Arc<LoadedModel> {
    Arc::new(LoadedModel::load(&phoenix_dir()).expect("load phoenix-ssm-lite"))
}

fn reference() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(phoenix_dir().join("reference.json")).unwrap()).unwrap()
}

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions { max_tokens: n, ..Default::default() }
}

fn sampled(n: usize, seed: u64) -> GenerateOptions {
    GenerateOptions {
        max_tokens: n,
        temperature: 0.8,
        top_p: 0.9,
        repeat_penalty: 1.1,
        seed: Some(seed),
        ..Default::default()
    }
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn greedy_text_matches_the_reference_continuation() {
    let m = phoenix();
    let r = reference();
    let info = m.info();
    assert!(info.has_tokenizer);
    assert_eq!(info.model.vocab_size, 4096);
    let mut g = m.generate(Prompt::Text(PROMPT.into()), greedy(24), None).unwrap();
    let steps = run_all(&mut g);
    // The first step tokenized the prompt (off the binding's JS thread): the context starts with it.
    let prompt_ids = ids(&r["input_ids"]);
    assert_eq!(&g.token_ids()[..prompt_ids.len()], prompt_ids.as_slice());
    assert_eq!(ids_of(&steps), ids(&r["greedy_new_ids"]));
    assert_eq!(text_of(&steps), r["greedy_text"].as_str().unwrap());
    assert_eq!(finish_of(&steps), Some(FinishReason::Length));
    let st = g.stats();
    assert_eq!((st.prompt_tokens, st.generated_tokens), (10, 24));
    assert!(st.prefill_ms > 0.0 && st.decode_ms > 0.0);
}

#[test]
fn scoring_logits_match_the_float64_reference() {
    let m = phoenix();
    let r = reference();
    let input = ids(&r["input_ids"]);
    let logits = m.logits(&input).unwrap();
    assert_eq!(logits.len(), input.len() * 4096);
    let mut worst = 0f64;
    for (row, want) in r["logits"].as_array().unwrap().iter().enumerate() {
        for (col, w) in want.as_array().unwrap().iter().enumerate() {
            worst = worst.max((logits[row * 4096 + col] as f64 - w.as_f64().unwrap()).abs());
        }
    }
    assert!(worst <= 1e-3, "max |Δ logit| = {worst}");
}

#[test]
fn snapshot_round_trip_gives_identical_tokens_greedy_and_seeded() {
    let a = phoenix();
    for opts in [greedy(40), sampled(40, 42), sampled(40, 7)] {
        let straight = ids_of(&run_all(&mut a.generate(Prompt::Text(PROMPT.into()), opts.clone(), None).unwrap()));
        let state = a.generate(Prompt::Text(PROMPT.into()), opts.clone(), None).unwrap().export_state().unwrap();
        let b = phoenix(); // a new LoadedModel
        let restored = ids_of(&run_all(&mut b.generate(Prompt::Ids(vec![]), opts.clone(), Some(&state)).unwrap()));
        assert_eq!(straight, restored, "{opts:?}");
    }
    // Different seeds really sample differently.
    let x = ids_of(&run_all(&mut a.generate(Prompt::Text(PROMPT.into()), sampled(40, 1), None).unwrap()));
    let y = ids_of(&run_all(&mut a.generate(Prompt::Text(PROMPT.into()), sampled(40, 2), None).unwrap()));
    assert_ne!(x, y);
}

#[test]
fn mid_generation_snapshot_continues_seamlessly() {
    let a = phoenix();
    let opts = |n| GenerateOptions { max_tokens: n, repeat_penalty: 1.2, ..Default::default() };
    let all = run_all(&mut a.generate(Prompt::Text(PROMPT.into()), opts(30), None).unwrap());
    let mut first = a.generate(Prompt::Text(PROMPT.into()), opts(12), None).unwrap();
    let head = run_all(&mut first);
    let state = first.export_state().unwrap();
    assert_eq!(state, first.export_state().unwrap(), "export is repeatable");
    let b = phoenix();
    let tail = run_all(&mut b.generate(Prompt::Ids(vec![]), opts(18), Some(&state)).unwrap());
    assert_eq!([ids_of(&head), ids_of(&tail)].concat(), ids_of(&all));
    // The streamed text also continues seamlessly (detokeniser context comes from the history).
    assert_eq!(text_of(&head) + &text_of(&tail), text_of(&all));
}

#[test]
fn continuing_a_state_with_more_prompt_text_equals_the_joined_prompt() {
    let a = phoenix();
    let joined = a.tokenize("Once upon a time, there was a little girl named", true).unwrap();
    let straight = ids_of(&run_all(&mut a.generate(Prompt::Ids(joined.clone()), greedy(20), None).unwrap()));
    let state = a.generate(Prompt::Text(PROMPT.into()), greedy(1), None).unwrap().export_state().unwrap();
    let mut g = a.generate(Prompt::Text(" girl named".into()), greedy(20), Some(&state)).unwrap();
    let continued = ids_of(&run_all(&mut g));
    assert_eq!(&g.token_ids()[..joined.len()], joined.as_slice(), "no BOS inserted when continuing");
    assert_eq!(straight, continued);
}

#[test]
fn states_from_another_model_or_truncated_are_state_mismatch() {
    let a = phoenix();
    let state = a.generate(Prompt::Text(PROMPT.into()), greedy(2), None).unwrap().export_state().unwrap();
    let tiny = Arc::new(LoadedModel::load(&tiny_dir()).unwrap());
    let e = tiny.generate(Prompt::Ids(vec![]), greedy(2), Some(&state)).err().unwrap();
    assert_eq!(e.code, ErrorCode::StateMismatch, "{}", e.message);
    for cut in [0, 8, 23, 40, state.len() / 2, state.len() - 1] {
        let e = a.generate(Prompt::Ids(vec![]), greedy(2), Some(&state[..cut])).err().unwrap();
        assert_eq!(e.code, ErrorCode::StateMismatch, "cut {cut}");
    }
    // The recurrent part has a fixed size: the model's state_bytes.
    let short = a.generate(Prompt::Ids(vec![0]), greedy(1), None).unwrap().export_state().unwrap();
    let long = a.generate(Prompt::Text(PROMPT.repeat(5)), greedy(1), None).unwrap().export_state().unwrap();
    let header = |n_ids: usize| phoenix_core::session::snapshot::HEADER_BYTES + 4 * n_ids;
    assert_eq!(short.len() - header(1), a.info().model.state_bytes);
    assert_eq!(long.len() - header(a.tokenize(&PROMPT.repeat(5), true).unwrap().len()), a.info().model.state_bytes);
}

#[test]
fn stop_string_across_tokens_cuts_the_real_text() {
    let m = phoenix();
    let raw =
        RawGenerateOptions { max_tokens: Some(24.0), stop_strings: Some(vec!["ly. Sh".into()]), ..Default::default() };
    let mut g = m.generate_raw(Prompt::Text(PROMPT.into()), &raw, None).unwrap();
    let steps = run_all(&mut g);
    assert_eq!(text_of(&steps), " girl named Li");
    assert_eq!(finish_of(&steps), Some(FinishReason::Stop));
}

#[test]
fn concurrent_generations_on_one_model_are_independent() {
    let m = phoenix();
    let expected: Vec<Vec<u32>> = (0..4u64)
        .map(|seed| ids_of(&run_all(&mut m.generate(Prompt::Text(PROMPT.into()), sampled(30, seed), None).unwrap())))
        .collect();
    let handles: Vec<_> = (0..4u64)
        .map(|seed| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                ids_of(&run_all(&mut m.generate(Prompt::Text(PROMPT.into()), sampled(30, seed), None).unwrap()))
            })
        })
        .collect();
    let got: Vec<Vec<u32>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(got, expected);
}

#[test]
fn weights_are_freed_when_the_last_owner_drops() {
    let m = phoenix();
    let weak = Arc::downgrade(&m);
    let mut g = m.generate(Prompt::Text(PROMPT.into()), greedy(3), None).unwrap();
    drop(m);
    assert!(weak.upgrade().is_some(), "a running generation keeps the model alive");
    run_all(&mut g);
    drop(g);
    assert!(weak.upgrade().is_none());
}

#[test]
fn a_state_moves_between_formats_of_the_same_weights_and_needs_no_tokenizer() {
    let hf = Arc::new(LoadedModel::load(&tiny_dir()).unwrap());
    let original = Arc::new(LoadedModel::load(&repo_root().join("test/fixtures/mamba1-tiny-original")).unwrap());
    assert!(hf.info().has_tokenizer);
    assert!(!original.info().has_tokenizer, "mamba1-tiny-original ships no tokenizer.json");
    assert_eq!(hf.fingerprint(), original.fingerprint());
    let prompt: Vec<u32> =
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(tiny_dir().join("reference.json")).unwrap())
            .unwrap()["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
    let opts = GenerateOptions { max_tokens: 10, temperature: 1.0, seed: Some(3), ..Default::default() };
    let mut g = hf.generate(Prompt::Ids(prompt.clone()), opts.clone(), None).unwrap();
    let state = g.export_state().unwrap();
    let on_hf = run_all(&mut g);
    let on_original = run_all(&mut original.generate(Prompt::Ids(vec![]), opts, Some(&state)).unwrap());
    assert_eq!(ids_of(&on_hf), ids_of(&on_original));
    assert_eq!(text_of(&on_original), "", "no tokenizer: ids only");
    // Text needs a tokenizer.
    assert_eq!(original.tokenize("hi", true).unwrap_err().code, ErrorCode::Tokenizer);
}

#[test]
fn logits_refuses_an_output_too_large_to_allocate() {
    let m = phoenix();
    // 70k ids x 4096 columns > 2^28 values: refused up front, not an allocation failure.
    let ids = vec![1u32; 70_000];
    let err = m.logits(&ids).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidOption);
    assert!(err.message.contains("limit"), "{}", err.message);
}
