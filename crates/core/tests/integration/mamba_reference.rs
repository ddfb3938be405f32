//! Mamba-1 logits against the float64 references (test/fixtures/*, models/phoenix-ssm-lite):
//! full prefill, prefill-then-decode from several split points, greedy continuation, state round trip.

use crate::model_support;

use std::path::PathBuf;

use model_support::reference_checks::{check_decode, check_greedy, check_prefill};
use model_support::*;
use phoenix_core::models::load_model_dir;
use phoenix_core::LogitsWanted;

fn check_model(dir: PathBuf, reference: PathBuf, expect_format: &str) {
    let model = load_model_dir(&dir).unwrap();
    assert_eq!(model.info().format, expect_format);
    let r = read_reference(reference);
    let prefill = check_prefill(model.as_ref(), &r);
    let n = r.input_ids.len();
    let mut decode = 0f64;
    for k in [1, 2, 3, 4, 5, n / 2, n - 1] {
        decode = decode.max(check_decode(model.as_ref(), &r, k));
    }
    let greedy = check_greedy(model.as_ref(), &r);
    assert_eq!(greedy, r.greedy_ids.len(), "every reference greedy step has a clear margin");
    eprintln!(
        "{}: prefill max |Δ| = {prefill:.2e}, decode max |Δ| = {decode:.2e}, greedy {greedy}/{} steps match",
        dir.display(),
        r.greedy_ids.len()
    );
}

#[test]
fn mamba1_tiny_hf_matches_reference() {
    check_model(fixture("mamba1-tiny"), fixture("mamba1-tiny/reference.json"), "hf-safetensors");
}

#[test]
fn mamba1_tiny_original_layout_matches_reference() {
    check_model(fixture("mamba1-tiny-original"), fixture("mamba1-tiny/reference.json"), "state-spaces-pth");
}

#[test]
fn phoenix_ssm_lite_matches_reference() {
    check_model(lite_model(), lite_model().join("reference.json"), "hf-safetensors");
}

#[test]
fn both_layouts_give_the_same_model() {
    let hf = load_model_dir(&fixture("mamba1-tiny")).unwrap();
    let orig = load_model_dir(&fixture("mamba1-tiny-original")).unwrap();
    let (a, b) = (hf.info(), orig.info());
    assert_eq!((a.vocab_size, a.hidden_size, a.num_layers), (b.vocab_size, b.hidden_size, b.num_layers));
    assert_eq!(a.architecture, b.architecture);
    assert_eq!(a.architecture["intermediateSize"], 128);
    assert_eq!((a.architecture["stateSize"].as_u64(), a.architecture["convKernel"].as_u64()), (Some(16), Some(4)));
    assert_eq!(
        (a.family.as_str(), a.engine.as_str(), a.context_length, a.state_bytes_per_token),
        ("mamba", "ssm", None, 0)
    );
    assert_eq!((a.param_count, a.state_bytes), (b.param_count, b.state_bytes));
    // d_model 64, 3 layers, E 128, N 16, K 4, R 4, vocab 512, tied head.
    let per_layer = 64 + 256 * 64 + 128 * 4 + 128 + (4 + 32) * 128 + 128 * 4 + 128 + 128 * 16 + 128 + 64 * 128;
    assert_eq!(a.param_count, 512 * 64 + 3 * per_layer + 64);
    assert_eq!(a.weight_bytes, a.param_count * 4);
    assert_eq!(a.state_bytes, 3 * 128 * (4 + 16) * 4);
    assert_eq!((a.model_type.as_str(), a.dtype.as_str()), ("mamba", "f32"));
    assert_eq!((a.bos_token_id, a.eos_token_ids.clone()), (Some(0), vec![0]));
}

#[test]
fn state_round_trip_continues_identically() {
    let r = read_reference(lite_model().join("reference.json"));
    let model = load_model_dir(&lite_model()).unwrap();
    let split = 4;
    let mut st = model.new_state().unwrap();
    model.forward(&r.input_ids[..split], st.as_mut(), LogitsWanted::Last).unwrap();
    let bytes = st.to_bytes().unwrap();
    assert_eq!(st.layout().tokens, split as u64);
    assert_eq!(bytes.len(), model.info().state_bytes);

    let expected = model.forward(&r.input_ids[split..], st.as_mut(), LogitsWanted::All).unwrap();

    let fresh_model = load_model_dir(&lite_model()).unwrap();
    let mut restored = fresh_model.new_state().unwrap();
    restored.load_bytes(&bytes, split as u64).unwrap();
    let got = fresh_model.forward(&r.input_ids[split..], restored.as_mut(), LogitsWanted::All).unwrap();
    assert_eq!(got, expected, "restored state must continue bit-identically");

    // A clone is an independent copy.
    let mut a = fresh_model.new_state().unwrap();
    a.load_bytes(&bytes, split as u64).unwrap();
    let mut b = a.clone_box();
    let la = fresh_model.forward(&[5], a.as_mut(), LogitsWanted::Last).unwrap();
    let lb = fresh_model.forward(&[5], b.as_mut(), LogitsWanted::Last).unwrap();
    assert_eq!(la, lb);

    let err = restored.load_bytes(&bytes[..bytes.len() - 4], split as u64).unwrap_err();
    assert_eq!(err.code, phoenix_core::ErrorCode::StateMismatch);
}

#[test]
fn forward_rejects_bad_ids_and_foreign_states() {
    let model = load_model_dir(&fixture("mamba1-tiny")).unwrap();
    let mut st = model.new_state().unwrap();
    let e = model.forward(&[], st.as_mut(), LogitsWanted::Last).unwrap_err();
    assert_eq!(e.code, phoenix_core::ErrorCode::InvalidOption);
    let e = model.forward(&[512], st.as_mut(), LogitsWanted::Last).unwrap_err();
    assert_eq!(e.code, phoenix_core::ErrorCode::InvalidOption);
    assert!(e.message.contains("512"));
    let lite = load_model_dir(&lite_model()).unwrap();
    let mut other = lite.new_state().unwrap();
    let e = model.forward(&[1], other.as_mut(), LogitsWanted::Last).unwrap_err();
    assert_eq!(e.code, phoenix_core::ErrorCode::StateMismatch);
}

#[test]
fn prefill_and_decode_agree_and_long_prompts_chunk_consistently() {
    let model = load_model_dir(&fixture("mamba1-tiny")).unwrap();
    let v = model.info().vocab_size;
    // Longer than two prefill chunks (PREFILL_CHUNK = 512).
    let ids: Vec<u32> = (0..1100u32).map(|i| (i * 7919 + 13) % 512).collect();
    let mut st = model.new_state().unwrap();
    let all = model.forward(&ids, st.as_mut(), LogitsWanted::All).unwrap();
    assert_eq!(all.len(), ids.len() * v);

    // Same sequence fed as uneven pieces, the last ones token by token (decode path).
    let mut st2 = model.new_state().unwrap();
    let mut pieced = model.forward(&ids[..700], st2.as_mut(), LogitsWanted::All).unwrap();
    pieced.extend(model.forward(&ids[700..1090], st2.as_mut(), LogitsWanted::All).unwrap());
    for t in 1090..ids.len() {
        pieced.extend(model.forward(&ids[t..t + 1], st2.as_mut(), LogitsWanted::Last).unwrap());
    }
    let worst = all.iter().zip(&pieced).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-4, "chunked vs pieced/decoded logits differ by {worst}");
    assert!(all.iter().all(|x| x.is_finite()));

    // `Last` over several chunks is the last row of `All`, and the states end up the same.
    let mut st3 = model.new_state().unwrap();
    let last = model.forward(&ids, st3.as_mut(), LogitsWanted::Last).unwrap();
    // (The head is a matvec for one row and a GEMM for many: equal up to summation order.)
    let head_diff = last.iter().zip(&all[(ids.len() - 1) * v..]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(head_diff < 1e-5, "Last vs All differ by {head_diff}");
    assert_eq!(st3.to_bytes().unwrap(), st.to_bytes().unwrap());
}
