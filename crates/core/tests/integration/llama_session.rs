//! A Llama model through the session layer: text generation with its tokenizer, and a KV-cache
//! snapshot exported by one loaded model continues identically in a freshly loaded one (what
//! `--save-state` / `--state` / `returnState` do across processes).

use crate::common;

use std::sync::Arc;

use common::*;
use phoenix_core::generate::GenerateOptions;
use phoenix_core::session::{snapshot, LoadedModel, Prompt};

fn llama_dir() -> std::path::PathBuf {
    repo_root().join("test/fixtures/llama-tiny")
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions { max_tokens, temperature: 0.0, ..Default::default() }
}

#[test]
fn a_saved_kv_cache_continues_identically_in_a_fresh_model() {
    let a = Arc::new(LoadedModel::load(&llama_dir()).unwrap());
    let mut g = a.generate(Prompt::Text("def add(a, b):".into()), greedy(5), None).unwrap();
    let first = ids_of(&run_all(&mut g));
    assert_eq!(first.len(), 5);
    let state = g.export_state().unwrap();
    let snap = snapshot::decode(&state).unwrap();
    assert_eq!((snap.layout.family.as_str(), snap.layout.dims.clone()), ("llama", vec![3, 2, 16]));
    assert_eq!(snap.state.len(), snap.layout.tokens as usize * a.model_info().state_bytes_per_token);
    assert_eq!(a.snapshot_length(&state[..snapshot::HEADER_BYTES]).unwrap(), state.len());

    // The same process continuing, and a fresh load continuing, give the same tokens.
    let mut here = a.generate(Prompt::Ids(vec![]), greedy(6), Some(&state)).unwrap();
    let b = Arc::new(LoadedModel::load(&llama_dir()).unwrap());
    let mut there = b.generate(Prompt::Ids(vec![]), greedy(6), Some(&state)).unwrap();
    let (x, y) = (ids_of(&run_all(&mut here)), ids_of(&run_all(&mut there)));
    assert_eq!(x.len(), 6);
    assert_eq!(x, y);

    // And they equal one uninterrupted generation of 11 tokens.
    let mut whole = a.generate(Prompt::Text("def add(a, b):".into()), greedy(11), None).unwrap();
    let all = ids_of(&run_all(&mut whole));
    assert_eq!(&all[..5], &first[..]);
    assert_eq!(&all[5..], &x[..]);
}

/// `Generation::state_bytes` (what the Node binding reports to V8) is the size of the state it
/// holds: the snapshot's state payload, before the prompt is fed, after it, and as tokens are added;
/// and for a restored context, from the first step on.
#[test]
fn state_bytes_follow_the_kv_cache_held() {
    let a = Arc::new(LoadedModel::load(&llama_dir()).unwrap());
    let payload =
        |g: &mut phoenix_core::session::Generation| snapshot::decode(&g.export_state().unwrap()).unwrap().state.len();
    let mut g = a.generate(Prompt::Ids((3..40).collect()), greedy(6), None).unwrap();
    assert_eq!(g.state_bytes(), 0, "nothing fed before the first step");
    let exported = payload(&mut g); // runs the prefill of all but the last prompt token
    assert_eq!(g.state_bytes(), exported);
    assert_eq!(exported, 36 * a.model_info().state_bytes_per_token);
    while g.next_step().unwrap().is_some() {
        let held = g.state_bytes();
        assert_eq!(held, payload(&mut g));
        assert_eq!(held, (g.token_ids().len() - 1) * a.model_info().state_bytes_per_token);
    }
    let state = g.export_state().unwrap();
    let mut more = a.generate(Prompt::Ids(vec![7]), greedy(2), Some(&state)).unwrap();
    more.next_step().unwrap();
    assert_eq!(more.state_bytes(), payload(&mut more));
}
