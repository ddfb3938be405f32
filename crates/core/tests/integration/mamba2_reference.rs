//! Mamba-2 logits against float64 references: `mamba2-tiny` (transformers, 1 group; also in the
//! original state-spaces layout, `mamba2-tiny-original`) and
//! `mamba2-groups` (an independent numpy implementation of mamba_ssm's maths, 2 groups): full
//! prefill, prefill-then-decode from several split points, greedy continuation, split prefill,
//! snapshot round trip.

use crate::model_support;

use std::path::PathBuf;

use model_support::reference_checks::check_against_reference;
use model_support::*;
use phoenix_core::models::load_model_dir;
use phoenix_core::LogitsWanted;

/// Decode splits crossing the fixtures' SSD chunk (8) boundaries.
const SPLITS: [usize; 3] = [7, 8, 9];

fn check_model(dir: PathBuf, reference: PathBuf) {
    check_against_reference(&dir, &reference, &SPLITS);
}

#[test]
fn mamba2_tiny_matches_transformers_reference() {
    check_model(fixture("mamba2-tiny"), fixture("mamba2-tiny/reference.json"));
}

#[test]
fn mamba2_original_state_spaces_layout_matches_the_same_reference() {
    check_model(fixture("mamba2-tiny-original"), fixture("mamba2-tiny/reference.json"));
    let hf = load_model_dir(&fixture("mamba2-tiny")).unwrap();
    let orig = load_model_dir(&fixture("mamba2-tiny-original")).unwrap();
    let (a, b) = (hf.info(), orig.info());
    assert_eq!((a.format.as_str(), b.format.as_str()), ("hf-safetensors", "state-spaces-pth"));
    // vocab_size 500 padded to a multiple of 16; the duplicate lm_head of the .bin is not loaded.
    assert_eq!((b.vocab_size, b.family.as_str(), b.model_type.as_str()), (512, "mamba2", "mamba2"));
    assert_eq!(
        (a.architecture.clone(), a.param_count, a.state_bytes),
        (b.architecture.clone(), b.param_count, b.state_bytes)
    );
    assert_eq!(hf.weights_identity(), orig.weights_identity());
}

#[test]
fn mamba2_groups_matches_independent_float64_reference() {
    check_model(fixture("mamba2-groups"), fixture("mamba2-groups/reference.json"));
}

#[test]
fn info_reports_the_family_and_architecture() {
    let model = load_model_dir(&fixture("mamba2-tiny")).unwrap();
    let a = model.info();
    assert_eq!(
        (a.family.as_str(), a.engine.as_str(), a.model_type.as_str(), a.context_length, a.state_bytes_per_token),
        ("mamba2", "ssm", "mamba2", None, 0)
    );
    let arch = |k: &str| a.architecture[k].as_u64().unwrap();
    assert_eq!(
        [arch("numHeads"), arch("headDim"), arch("stateSize"), arch("nGroups"), arch("convKernel"), arch("chunkSize")],
        [8, 16, 16, 1, 4, 8]
    );
    assert_eq!(arch("intermediateSize"), 128);
    // D 64, E 128, H 8, N 16, G 1, K 4: conv channels 160, in_proj rows 2·128 + 32 + 8 = 296.
    let per_layer = 64 + 296 * 64 + 160 * 4 + 160 + 8 * 3 + 128 + 64 * 128;
    assert_eq!(a.param_count, 512 * 64 + 3 * per_layer + 64);
    assert_eq!(a.state_bytes, 3 * (160 * 4 + 8 * 16 * 16) * 4);
    let st = model.new_state().unwrap();
    assert_eq!(st.layout().family, "mamba2");
    assert_eq!(st.layout().dims, vec![3, 160, 4, 8, 16, 16]);
    assert_eq!(st.to_bytes().unwrap().len(), a.state_bytes);
}

/// Ids of a long pseudo-random prompt (several prefill pieces and SSD tiles).
fn long_prompt(len: u32) -> Vec<u32> {
    (0..len).map(|i| (i * 7919 + 13) % 512).collect()
}

#[test]
fn split_prefill_is_bit_identical_and_decode_agrees() {
    let model = load_model_dir(&fixture("mamba2-groups")).unwrap();
    let ids = long_prompt(1100);
    let chunk = model.prefill_chunk();
    assert!(chunk < ids.len());
    let mut one = model.new_state().unwrap();
    let all = model.forward(&ids, one.as_mut(), LogitsWanted::All).unwrap();
    assert!(all.iter().all(|x| x.is_finite()));

    // Pieces of prefill_chunk tokens: bit-identical logits and state.
    let mut pieced_state = model.new_state().unwrap();
    let mut pieced = Vec::new();
    for piece in ids.chunks(chunk) {
        pieced.extend(model.forward(piece, pieced_state.as_mut(), LogitsWanted::All).unwrap());
    }
    assert_eq!(pieced, all);
    assert_eq!(pieced_state.to_bytes().unwrap(), one.to_bytes().unwrap());

    // Uneven pieces and token-by-token decode: equal within float rounding.
    let v = model.info().vocab_size;
    let mut st = model.new_state().unwrap();
    let mut uneven = model.forward(&ids[..700], st.as_mut(), LogitsWanted::All).unwrap();
    uneven.extend(model.forward(&ids[700..1087], st.as_mut(), LogitsWanted::All).unwrap());
    for t in 1087..ids.len() {
        uneven.extend(model.forward(&ids[t..t + 1], st.as_mut(), LogitsWanted::Last).unwrap());
    }
    let worst = all.iter().zip(&uneven).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-3, "one call vs uneven pieces + decode differ by {worst}");
    assert_eq!(uneven.len(), ids.len() * v);
}

#[test]
fn snapshot_continues_bit_identically() {
    let dir = fixture("mamba2-tiny");
    let r = read_reference(dir.join("reference.json"));
    let model = load_model_dir(&dir).unwrap();
    let split = 9;
    let mut st = model.new_state().unwrap();
    model.forward(&r.input_ids[..split], st.as_mut(), LogitsWanted::Last).unwrap();
    let bytes = st.to_bytes().unwrap();
    assert_eq!(bytes.len(), model.info().state_bytes);
    let expected = model.forward(&r.input_ids[split..], st.as_mut(), LogitsWanted::All).unwrap();
    let mut steps = Vec::new();
    for &id in &r.input_ids[split..] {
        steps.extend(model.forward(&[id], st.as_mut(), LogitsWanted::Last).unwrap());
    }

    let fresh = load_model_dir(&dir).unwrap();
    let mut restored = fresh.new_state().unwrap();
    restored.load_bytes(&bytes, split as u64).unwrap();
    assert_eq!(restored.layout().tokens, split as u64);
    let got = fresh.forward(&r.input_ids[split..], restored.as_mut(), LogitsWanted::All).unwrap();
    assert_eq!(got, expected, "restored state must continue bit-identically");
    let mut got_steps = Vec::new();
    for &id in &r.input_ids[split..] {
        got_steps.extend(fresh.forward(&[id], restored.as_mut(), LogitsWanted::Last).unwrap());
    }
    assert_eq!(got_steps, steps);

    // Wrong length, non-finite values and another family's state are refused.
    let err = restored.load_bytes(&bytes[..bytes.len() - 4], 1).unwrap_err();
    assert_eq!(err.code, phoenix_core::ErrorCode::StateMismatch);
    let mut nan = bytes.clone();
    nan[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
    let err = restored.load_bytes(&nan, 1).unwrap_err();
    assert_eq!(err.code, phoenix_core::ErrorCode::StateMismatch);
    assert!(err.message.contains("element 10"), "{}", err.message);
    let mamba1 = load_model_dir(&fixture("mamba1-tiny")).unwrap();
    let mut foreign = mamba1.new_state().unwrap();
    let err = model.forward(&[1], foreign.as_mut(), LogitsWanted::Last).unwrap_err();
    assert_eq!(err.code, phoenix_core::ErrorCode::StateMismatch);
    let err = model.state_bytes_for(&foreign.layout()).unwrap_err();
    assert_eq!(err.code, phoenix_core::ErrorCode::StateMismatch);
}
