//! Hostile or damaged inputs to a loaded model's session surface: snapshots from other weights or
//! damaged on disk, weights whose logits overflow, tokenizers whose normalizers explode a prompt.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use phoenix_core::generate::GenerateOptions;
use phoenix_core::session::{snapshot, LoadedModel, Prompt};
use phoenix_core::tokenizer::{Tokenizer, MAX_NORMALIZED_BYTES};
use phoenix_core::ErrorCode;

/// A copy of the tiny fixture in a fresh temp folder (removed on drop).
struct TempModel(PathBuf);

impl TempModel {
    fn copy_of(src: &Path, tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("phoenix-hostile-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(src).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        TempModel(dir)
    }

    /// Rewrites every value of the f32 tensor `name` in `model.safetensors` with `f(old)`.
    fn edit_tensor(&self, name: &str, f: impl Fn(f32) -> f32) {
        let path = self.0.join("model.safetensors");
        let mut bytes = std::fs::read(&path).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
        assert_eq!(header[name]["dtype"], "F32");
        let offsets = header[name]["data_offsets"].as_array().unwrap();
        let (start, end) = (offsets[0].as_u64().unwrap() as usize, offsets[1].as_u64().unwrap() as usize);
        for chunk in bytes[8 + header_len + start..8 + header_len + end].chunks_exact_mut(4) {
            let v = f(f32::from_le_bytes(chunk.try_into().unwrap()));
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&path, bytes).unwrap();
    }

    fn load(&self) -> Arc<LoadedModel> {
        Arc::new(LoadedModel::load(&self.0).unwrap())
    }
}

impl Drop for TempModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions { max_tokens, temperature: 0.0, ..Default::default() }
}

fn saved_state(model: &Arc<LoadedModel>) -> Vec<u8> {
    let mut g = model.generate(Prompt::Ids(vec![1, 2, 3]), greedy(2), None).unwrap();
    run_all(&mut g);
    g.export_state().unwrap()
}

// ---------------------------------------------------------------- snapshots

#[test]
fn a_snapshot_from_the_same_shape_with_other_weights_is_refused() {
    let tiny = Arc::new(LoadedModel::load(&tiny_dir()).unwrap());
    let other = TempModel::copy_of(&tiny_dir(), "other-weights");
    other.edit_tensor("backbone.norm_f.weight", |v| v * 1.5);
    let other = other.load();
    assert_eq!(tiny.fingerprint(), other.fingerprint(), "same shape");
    assert_ne!(tiny.weights_identity(), other.weights_identity());

    let state = saved_state(&tiny);
    let e = other.generate(Prompt::Ids(vec![]), greedy(2), Some(&state)).err().expect("refused");
    assert_eq!(e.code, ErrorCode::StateMismatch);
    assert!(e.message.contains("other weights"), "{}", e.message);
    assert_eq!(other.snapshot_length(&state).unwrap_err().code, ErrorCode::StateMismatch);
    // The model it came from continues it.
    assert!(tiny.generate(Prompt::Ids(vec![]), greedy(2), Some(&state)).is_ok());
}

#[test]
fn a_flipped_byte_anywhere_in_a_real_snapshot_is_refused() {
    let tiny = Arc::new(LoadedModel::load(&tiny_dir()).unwrap());
    let state = saved_state(&tiny);
    // Every byte of the header and history, and a spread of the model state.
    let positions = (0..snapshot::HEADER_BYTES + 4 * 5).chain((snapshot::HEADER_BYTES + 20..state.len()).step_by(97));
    for at in positions.chain([state.len() - 1]) {
        let mut bad = state.clone();
        bad[at] ^= 0x10;
        let e = tiny
            .generate(Prompt::Ids(vec![]), greedy(1), Some(&bad))
            .err()
            .unwrap_or_else(|| panic!("byte {at} accepted"));
        assert_eq!(e.code, ErrorCode::StateMismatch, "byte {at}: {}", e.message);
    }
}

#[test]
fn the_snapshot_length_comes_from_its_header_and_the_model() {
    let tiny = Arc::new(LoadedModel::load(&tiny_dir()).unwrap());
    let state = saved_state(&tiny);
    let head = &state[..snapshot::HEADER_BYTES];
    assert_eq!(tiny.snapshot_length(head).unwrap(), state.len());
    assert_eq!(state.len(), snapshot::HEADER_BYTES + 4 * 5 + tiny.info().model.state_bytes);
    assert_eq!(tiny.snapshot_length(&head[..20]).unwrap_err().code, ErrorCode::StateMismatch);
    let zeros = vec![0u8; snapshot::HEADER_BYTES];
    assert_eq!(tiny.snapshot_length(&zeros).unwrap_err().code, ErrorCode::StateMismatch);
}

/// A snapshot re-encoded (valid checksum) with the layout another family, dtype or shape would write:
/// the origin checks pass (same fingerprint and weights), the state layout check refuses it before
/// the payload is read — on the header alone (`snapshot_length`) and on a restore.
#[test]
fn a_state_of_another_family_dtype_or_shape_is_refused_from_its_header() {
    let tiny = Arc::new(LoadedModel::load(&tiny_dir()).unwrap());
    let saved = saved_state(&tiny);
    let snap = snapshot::decode(&saved).unwrap();
    assert_eq!((snap.layout.family.as_str(), snap.layout.dtype.as_str()), ("mamba", "f32"));
    assert_eq!(snap.layout.tokens as usize, snap.history.len() - 1);
    let edits: [(&str, &dyn Fn(&mut phoenix_core::model::StateLayout)); 4] = [
        ("family", &|l| l.family = "llama".into()),
        ("dtype", &|l| l.dtype = "bf16".into()),
        ("dims", &|l| l.dims[1] *= 2),
        ("dims", &|l| l.dims.push(1)),
    ];
    for (what, edit) in edits {
        let mut layout = snap.layout.clone();
        edit(&mut layout);
        let bytes = snapshot::encode(snap.fingerprint, snap.weights_identity, &layout, &snap.history, &snap.state);
        let e = tiny.snapshot_length(&bytes[..snapshot::HEADER_BYTES]).unwrap_err();
        assert_eq!(e.code, ErrorCode::StateMismatch, "{what}");
        assert!(e.message.contains("dims") && e.message.contains("mamba"), "{what}: {}", e.message);
        let e = tiny.generate(Prompt::Ids(vec![]), greedy(1), Some(&bytes)).err().expect("refused");
        assert_eq!(e.code, ErrorCode::StateMismatch, "{what}: {}", e.message);
    }
    // A non-finite value in the state payload is a damaged snapshot, not bad weights.
    let mut state = snap.state.to_vec();
    state[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    let bytes = snapshot::encode(snap.fingerprint, snap.weights_identity, &snap.layout, &snap.history, &state);
    let e = tiny.generate(Prompt::Ids(vec![]), greedy(1), Some(&bytes)).err().expect("refused");
    assert_eq!(e.code, ErrorCode::StateMismatch, "{}", e.message);
    assert!(e.message.contains("non-finite"), "{}", e.message);
    // Unchanged, the same re-encoding continues.
    let same = snapshot::encode(snap.fingerprint, snap.weights_identity, &snap.layout, &snap.history, &snap.state);
    assert!(tiny.generate(Prompt::Ids(vec![]), greedy(1), Some(&same)).is_ok());
}

// ---------------------------------------------------------------- non-finite logits

/// norm_f scaled to near f32::MAX: every value in the file is finite, the logits overflow.
fn overflowing_model() -> (TempModel, Arc<LoadedModel>) {
    let dir = TempModel::copy_of(&tiny_dir(), "overflow");
    dir.edit_tensor("backbone.norm_f.weight", |v| if v >= 0.0 { 3.0e38 } else { -3.0e38 });
    let model = dir.load();
    (dir, model)
}

#[test]
fn non_finite_logits_are_bad_weights_naming_the_position() {
    let (_dir, model) = overflowing_model();
    let e = model.logits(&[1, 2, 3]).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadWeights);
    assert!(e.message.contains("non-finite logit") && e.message.contains("at position 0 of 3"), "{}", e.message);

    let mut g = model.generate(Prompt::Ids(vec![1, 2, 3]), greedy(3), None).unwrap();
    let e = g.next_step().unwrap_err();
    assert_eq!(e.code, ErrorCode::BadWeights);
    assert!(e.message.contains("non-finite logit") && e.message.contains("at position 2 of 3"), "{}", e.message);
    let seeded = GenerateOptions { max_tokens: 3, temperature: 0.8, seed: Some(1), ..Default::default() };
    let e = model.generate(Prompt::Ids(vec![4]), seeded, None).unwrap().next_step().unwrap_err();
    assert_eq!(e.code, ErrorCode::BadWeights);
}

/// A snapshot intact by its checksum whose state values are absurd (±3e38): the overflow is blamed on
/// the weights *or* the restored state, not the weights alone (they generate fine from scratch).
#[test]
fn non_finite_logits_after_a_restored_state_name_the_state_too() {
    let model = Arc::new(LoadedModel::load(&tiny_dir()).unwrap());
    let saved = saved_state(&model);
    let snap = snapshot::decode(&saved).unwrap();
    let huge: Vec<u8> = snap.state.chunks_exact(4).flat_map(|_| 3.0e38f32.to_le_bytes()).collect();
    let forged = snapshot::encode(snap.fingerprint, snap.weights_identity, &snap.layout, &snap.history, &huge);
    let mut g = model.generate(Prompt::Ids(vec![4]), greedy(2), Some(&forged)).unwrap();
    let e = g.next_step().unwrap_err();
    assert_eq!(e.code, ErrorCode::BadWeights);
    assert!(e.message.contains("the weights or the restored state (the snapshot continued) overflow"), "{}", e.message);
    // The same model from scratch generates: the weights alone are not to blame.
    run_all(&mut model.generate(Prompt::Ids(vec![1, 2, 3]), greedy(2), None).unwrap());
}

// ---------------------------------------------------------------- tokenizer normalizers

fn tokenizer_with_normalizer(normalizer: serde_json::Value) -> phoenix_core::Result<Tokenizer> {
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tiny_dir().join("tokenizer.json")).unwrap()).unwrap();
    json["normalizer"] = normalizer;
    Tokenizer::from_bytes_named(&serde_json::to_vec(&json).unwrap(), "x/tokenizer.json".into())
}

fn replace(from: &str, to: &str) -> serde_json::Value {
    serde_json::json!({ "type": "Replace", "pattern": { "String": from }, "content": to })
}

#[test]
fn normalizers_that_grow_text_without_bound_are_refused_at_load() {
    let chain = serde_json::json!({ "type": "Sequence", "normalizers": vec![replace("a", "aaaaaaaaaaaaaaaa"); 6] });
    let huge_content = replace(" ", &"x".repeat(1 << 20));
    for normalizer in [chain, huge_content] {
        let e = tokenizer_with_normalizer(normalizer).unwrap_err();
        assert_eq!(e.code, ErrorCode::Tokenizer);
        assert!(e.message.starts_with("x/tokenizer.json: normalizer refused"), "{}", e.message);
    }
    // Ordinary normalizers load and tokenize as before.
    let nfc = tokenizer_with_normalizer(serde_json::json!({ "type": "NFC" })).unwrap();
    let plain = Tokenizer::from_file(&tiny_dir().join("tokenizer.json")).unwrap();
    assert_eq!(nfc.encode("Once upon a time", false).unwrap(), plain.encode("Once upon a time", false).unwrap());
}

#[test]
fn a_text_whose_worst_case_normalisation_is_too_long_is_refused_before_normalising() {
    let growing = tokenizer_with_normalizer(replace("a", &"b".repeat(200))).unwrap();
    let text = "a".repeat(MAX_NORMALIZED_BYTES / 200 + 1);
    let e = growing.encode(&text, false).unwrap_err();
    assert_eq!(e.code, ErrorCode::Tokenizer);
    assert!(e.message.contains("too long to tokenize"), "{}", e.message);
    assert!(growing.encode("a short prompt", false).is_ok());
}

#[test]
fn a_text_prompt_is_tokenized_by_the_first_step_not_by_generate() {
    let dir = TempModel::copy_of(&tiny_dir(), "lazy-tokenize");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.0.join("tokenizer.json")).unwrap()).unwrap();
    json["normalizer"] = replace("a", &"b".repeat(200));
    std::fs::write(dir.0.join("tokenizer.json"), serde_json::to_vec(&json).unwrap()).unwrap();
    let model = dir.load();
    let text = "a".repeat(MAX_NORMALIZED_BYTES / 200 + 1);
    // Starting is cheap and cannot fail on the text; the first step (a worker thread) tokenizes.
    let mut g = model.generate(Prompt::Text(text), greedy(1), None).expect("generate does not tokenize");
    assert!(g.token_ids().is_empty());
    assert_eq!(g.next_step().unwrap_err().code, ErrorCode::Tokenizer);

    let mut ok = model.generate(Prompt::Text("Once upon".into()), greedy(1), None).unwrap();
    let expected = model.tokenize("Once upon", true).unwrap();
    run_all(&mut ok);
    assert_eq!(&ok.token_ids()[..expected.len()], expected.as_slice());
    assert_eq!(ok.stats().prompt_tokens, expected.len());
}
