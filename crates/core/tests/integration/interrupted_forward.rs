//! A forward stopped between layers (`models::interrupt`) leaves every family's state as it was
//! before the call, whichever layer and piece it stopped at; a generation cancelled while a prompt
//! piece runs stops there, and what it exports continues exactly as an uninterrupted run.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use crate::model_support::fixture;
use phoenix_core::generate::{FinishReason, GenerateOptions};
use phoenix_core::loader::ModelFiles;
use phoenix_core::model::{LanguageModel, LoadOptions, LogitsWanted, ModelState};
use phoenix_core::models::interrupt::{with_stop, StopFn};
use phoenix_core::nn::kv_cache::KvDtype;
use phoenix_core::session::{snapshot, LoadedModel, Prompt};
use phoenix_core::ErrorCode;

/// Every family, with the KV cache in both dtypes where there is one.
fn models() -> Vec<(String, Box<dyn LanguageModel>)> {
    let mut out = Vec::new();
    for (name, kv) in [
        ("mamba1-tiny", KvDtype::F32),
        ("mamba2-tiny", KvDtype::F32),
        ("llama-tiny", KvDtype::F32),
        ("llama-tiny", KvDtype::F16),
        ("granite-hybrid-tiny", KvDtype::F32),
        ("granite-hybrid-tiny", KvDtype::F16),
    ] {
        let files = ModelFiles::from_dir(&fixture(name)).unwrap();
        let options = LoadOptions { kv_cache: kv, ..LoadOptions::default() };
        let model = phoenix_core::models::load_model_files_with(&files, &options).unwrap();
        out.push((format!("{name} (kv {kv:?})"), model));
    }
    out
}

/// A prompt that spans two prefill pieces where the context allows (the SSMs), else most of it.
fn long_prompt(model: &dyn LanguageModel) -> Vec<u32> {
    let room = model.info().context_length.map_or(usize::MAX, |c| c - 8);
    let len = model.prefill_chunk().saturating_add(40).min(room).min(700);
    (0..len as u32).map(|i| (i * 7 + 3) % 500 + 1).collect()
}

/// A stop function that says "stop" from its `after`-th call on, counting every call.
fn stop_after(after: usize) -> (StopFn, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    (Arc::new(move || seen.fetch_add(1, Ordering::Relaxed) >= after), calls)
}

fn snapshot(state: &dyn ModelState) -> (Vec<u8>, u64) {
    (state.to_bytes().unwrap(), state.layout().tokens)
}

#[test]
fn a_forward_stopped_between_layers_leaves_the_state_as_it_was() {
    for (name, model) in models() {
        let mut state = model.new_state().unwrap();
        model.forward(&[1, 5, 9], state.as_mut(), LogitsWanted::Last).unwrap();
        let before = snapshot(state.as_ref());
        let prompt = long_prompt(model.as_ref());

        // How many layer boundaries the whole prompt passes (a stop function that never stops).
        let (never, checks) = stop_after(usize::MAX);
        let mut probe = model.new_state().unwrap();
        probe.load_bytes(&before.0, before.1).unwrap();
        with_stop(Some(never), || model.forward(&prompt, probe.as_mut(), LogitsWanted::Last)).unwrap();
        let total = checks.load(Ordering::Relaxed);
        let pieces = prompt.len().div_ceil(model.prefill_chunk());
        assert_eq!(total, pieces * model.info().num_layers, "{name}: one check per layer per piece");

        // First layer, second layer, mid-way (the second piece for the SSMs), the last layer.
        for at in [0, 1, total / 2 + 1, total - 1] {
            let (stop, _) = stop_after(at);
            let err = with_stop(Some(stop), || model.forward(&prompt, state.as_mut(), LogitsWanted::Last)).unwrap_err();
            assert_eq!(err.code, ErrorCode::Aborted, "{name}, stopped at check {at}: {err}");
            assert!(snapshot(state.as_ref()) == before, "{name}, stopped at check {at}: the state changed");
        }

        // The state goes on as one that was never stopped.
        let want = model.forward(&prompt, probe.as_mut(), LogitsWanted::All);
        let mut fresh = model.new_state().unwrap();
        fresh.load_bytes(&before.0, before.1).unwrap();
        let want_fresh = model.forward(&prompt, fresh.as_mut(), LogitsWanted::Last).unwrap();
        let got = model.forward(&prompt, state.as_mut(), LogitsWanted::Last).unwrap();
        assert_eq!(got, want_fresh, "{name}: logits after the stopped calls");
        assert!(snapshot(state.as_ref()) == snapshot(fresh.as_ref()), "{name}: state after the stopped calls");
        drop(want);

        // A one-token step is never stopped part-way (Mamba-2 and Granite update it in place).
        let (always, calls) = stop_after(0);
        with_stop(Some(always), || model.forward(&[7], state.as_mut(), LogitsWanted::Last)).unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 0, "{name}: a one-token step consulted the stop function");
    }
}

/// The every-position head of a large vocabulary (score's logits; ~1 s per 512-token piece of
/// SmolLM2 on WASM) is computed in blocks of vocabulary rows with a check before each: a stop there
/// also leaves the state as it was, and the blocks give the whole product's logits.
#[test]
fn a_large_head_over_many_rows_is_stopped_between_its_blocks() {
    let files = ModelFiles::from_dir(&phoenix_dir()).unwrap();
    let model = phoenix_core::models::load_model_files_with(&files, &LoadOptions::default()).unwrap();
    let (layers, vocab) = (model.info().num_layers, model.info().vocab_size);
    let blocks = vocab.div_ceil(2048);
    assert!(blocks > 1, "the default model's head ({vocab} rows) is one block: this test checks nothing");
    let prompt: Vec<u32> = (0..600u32).map(|i| (i * 37 + 11) % 4000 + 1).collect();
    let pieces = prompt.len().div_ceil(model.prefill_chunk());
    let count = |which| {
        let (never, checks) = stop_after(usize::MAX);
        let mut state = model.new_state().unwrap();
        let logits = with_stop(Some(never), || model.forward(&prompt, state.as_mut(), which)).unwrap();
        (checks.load(Ordering::Relaxed), logits)
    };
    let (checks, all) = count(LogitsWanted::All);
    assert_eq!(checks, pieces * (layers + blocks), "layers, then the head's blocks, per piece");
    assert_eq!(count(LogitsWanted::Last).0, pieces * layers, "a one-row head is not split");
    assert_eq!(all.len(), prompt.len() * vocab);

    let mut state = model.new_state().unwrap();
    model.forward(&[1, 5, 9], state.as_mut(), LogitsWanted::Last).unwrap();
    let before = snapshot(state.as_ref());
    // The first head block of the first piece, a block mid-head, the last block of the last piece.
    for at in [layers, layers + blocks / 2, checks - 1] {
        let (stop, _) = stop_after(at);
        let err = with_stop(Some(stop), || model.forward(&prompt, state.as_mut(), LogitsWanted::All)).unwrap_err();
        assert_eq!(err.code, ErrorCode::Aborted, "stopped at check {at}: {err}");
        assert!(snapshot(state.as_ref()) == before, "stopped at check {at}: the state changed");
    }
}

/// `score` cancelled from another thread while a piece runs ends with `E_ABORTED` naming where it
/// was (at a piece's start: the piece running is given up), then scores again as usual.
#[test]
fn score_stops_between_layers_with_e_aborted() {
    let m = LoadedModel::load(&phoenix_dir()).expect("load phoenix-ssm-lite");
    let ids: Vec<u32> = (0..1400u32).map(|i| (i * 37 + 11) % 4000 + 1).collect();
    let mut stopped = 0;
    for delay_ms in [0u64, 5, 20] {
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(delay_ms));
            flag.store(true, Ordering::Relaxed);
        });
        let result = m.score_cancellable(&ids, Default::default(), &cancel);
        canceller.join().unwrap();
        let Err(err) = result else { continue };
        stopped += 1;
        assert_eq!(err.code, ErrorCode::Aborted, "{err}");
        let at: usize =
            err.message.split("cancelled after ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
        assert_eq!(at % 512, 0, "{err}");
    }
    assert!(stopped > 0, "no cancel landed during the scoring");
    let whole = m.score_cancellable(&ids, Default::default(), &Arc::new(AtomicBool::new(false))).unwrap();
    assert_eq!(whole.token_count, ids.len());
}

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions { max_tokens: n, ..Default::default() }
}

/// A cancel from another thread at varied moments of a long prefill on the real default model:
/// each run ends with `abort` (no token sampled), and its exported state, continued with the rest of
/// the prompt, gives the uninterrupted run's tokens — whether the cancel landed between pieces,
/// between layers, or before the first.
#[test]
fn a_prefill_cancelled_at_any_moment_exports_a_state_that_continues_exactly() {
    let m = Arc::new(LoadedModel::load(&phoenix_dir()).expect("load phoenix-ssm-lite"));
    let prompt: Vec<u32> = (0..1400u32).map(|i| (i * 37 + 11) % 4000 + 1).collect();
    let whole = ids_of(&run_all(&mut m.generate(Prompt::Ids(prompt.clone()), greedy(6), None).unwrap()));
    let mut aborted = 0;
    for delay_ms in [0u64, 3, 15, 40, 90] {
        let mut g = m.generate(Prompt::Ids(prompt.clone()), greedy(6), None).unwrap();
        let cancel = g.cancel_handle();
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(delay_ms));
            cancel.store(true, Ordering::Relaxed);
        });
        let step = g.next_step().unwrap().unwrap();
        canceller.join().unwrap();
        if step.finish_reason != Some(FinishReason::Abort) {
            continue; // the prefill finished before the cancel: nothing to check
        }
        aborted += 1;
        assert_eq!(step.token_id, None, "delay {delay_ms} ms");
        let state = g.export_state().unwrap();
        let read = snapshot::decode(&state).unwrap().history;
        // What was read is whole pieces (a piece stopped part-way is taken back) and the pending token.
        assert_eq!(read.len() % 512, 1, "delay {delay_ms} ms: {} tokens read", read.len());
        assert_eq!(read, prompt[..read.len()], "delay {delay_ms} ms: the state holds another context");
        let rest = m.generate(Prompt::Ids(prompt[read.len()..].to_vec()), greedy(6), Some(&state)).unwrap();
        assert_eq!(ids_of(&run_all(&mut { rest })), whole, "delay {delay_ms} ms, {} tokens read", read.len());
    }
    assert!(aborted > 0, "no cancel landed during the prefill");
}

/// A cancel that comes after a piece's forward, while its rows become log-probs, gives the piece up
/// (`E_ABORTED` at its start) instead of finishing the call: a one-piece score is stopped too.
#[test]
fn score_is_stopped_while_a_pieces_rows_become_log_probs() {
    use crate::common::toy_model::ToyModel;
    for len in [80usize, 250] {
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        // The forward of the first piece runs to its end (no layer checks), then asks for the cancel.
        let model =
            ToyModel::new(4096, 2, vec![]).with_prefill_chunk(100, move |_| flag.store(true, Ordering::Relaxed));
        let m = LoadedModel::new(Box::new(model), None).unwrap();
        let ids: Vec<u32> = (0..len as u32).map(|i| i % 4000).collect();
        let err = m.score_cancellable(&ids, Default::default(), &cancel).unwrap_err();
        assert_eq!(err.code, ErrorCode::Aborted, "{err}");
        assert_eq!(err.message, format!("score: cancelled after 0 of {len} ids"));
    }
}
