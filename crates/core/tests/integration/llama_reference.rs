//! Llama-family logits against the float64 transformers reference (test/fixtures/llama-tiny): full
//! prefill, prefill-then-decode from several split points, greedy continuation, chunked prefill,
//! KV-cache snapshots, the context guard, and the two transformers config spellings.

use crate::llama_support;
use crate::model_support;

use std::path::{Path, PathBuf};

use llama_support::EditedCopy;
use model_support::*;
use phoenix_core::models::load_model_dir;
use phoenix_core::{ErrorCode, LanguageModel, LogitsWanted};

/// Checks a model folder against a reference.json: prefill, decode from several splits, greedy.
fn check_against_reference(dir: &Path, reference: PathBuf) {
    model_support::reference_checks::check_against_reference(dir, &reference, &[]);
}

#[test]
fn llama_tiny_matches_reference() {
    check_against_reference(&fixture("llama-tiny"), fixture("llama-tiny/reference.json"));
}

#[test]
fn info_describes_a_transformer_with_a_growing_kv_cache() {
    let model = load_model_dir(&fixture("llama-tiny")).unwrap();
    let a = model.info();
    assert_eq!((a.family.as_str(), a.engine.as_str(), a.model_type.as_str()), ("llama", "transformer", "llama"));
    assert_eq!((a.context_length, a.state_bytes), (Some(256), 0));
    // 3 layers × (K + V) × 2 KV heads × 16 × 4 bytes.
    assert_eq!(a.state_bytes_per_token, 3 * 2 * 2 * 16 * 4);
    assert_eq!(a.architecture["numHeads"], 4);
    assert_eq!(a.architecture["numKvHeads"], 2);
    assert_eq!(a.architecture["headDim"], 16);
    assert_eq!(a.architecture["intermediateSize"], 160);
    assert_eq!(a.architecture["ropeScaling"], "default");
    assert_eq!(a.architecture["ropeTheta"], 10000.0);
    // Untied: embedding + head, per layer 2 norms + q,k,v,o + gate,up,down; final norm.
    let per_layer = 2 * 64 + 64 * 64 + 2 * 32 * 64 + 64 * 64 + 3 * 160 * 64;
    assert_eq!(a.param_count, 2 * 512 * 64 + 3 * per_layer + 64);
    assert_eq!((a.bos_token_id, a.eos_token_ids.clone()), (Some(0), vec![0]));
}

#[test]
fn transformers_4_config_spelling_gives_the_same_model() {
    // 4.x: `rope_theta` at the top, no `rope_parameters`, no `head_dim`, a bare `Infinity` elsewhere.
    let old = EditedCopy::new("llama-tiny", |c| {
        c.remove("rope_parameters");
        c.remove("head_dim");
        c.insert("rope_theta".into(), 10000.0.into());
        c.insert("rope_scaling".into(), serde_json::Value::Null);
        c.insert("transformers_version".into(), "4.46.0".into());
    });
    let text = std::fs::read_to_string(old.0.join("config.json")).unwrap();
    std::fs::write(old.0.join("config.json"), text.replacen('{', "{\n  \"some_limit\": Infinity,", 1)).unwrap();
    let ids = read_reference(fixture("llama-tiny/reference.json")).input_ids;
    let (a, b) = (load_model_dir(&fixture("llama-tiny")).unwrap(), load_model_dir(&old.0).unwrap());
    assert_eq!(a.info(), b.info());
    let run = |m: &dyn LanguageModel| m.forward(&ids, m.new_state().unwrap().as_mut(), LogitsWanted::All).unwrap();
    assert_eq!(run(a.as_ref()), run(b.as_ref()));
    // And the 4.x scaling spelling: `rope_scaling.type` reads as `rope_parameters.rope_type`.
    let v4 = EditedCopy::new("llama-tiny", |c| {
        c.remove("rope_parameters");
        c.insert("rope_theta".into(), 10000.0.into());
        c.insert("rope_scaling".into(), serde_json::json!({"type": "linear", "factor": 2.0}));
    });
    let v5 = EditedCopy::new("llama-tiny", |c| {
        c.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
        );
    });
    let (c, d) = (load_model_dir(&v4.0).unwrap(), load_model_dir(&v5.0).unwrap());
    assert_eq!(c.info().architecture["ropeScaling"], "linear");
    assert_eq!(run(c.as_ref()), run(d.as_ref()));
    assert_ne!(run(c.as_ref()), run(a.as_ref()), "linear scaling changes the logits");
}

#[test]
fn chunked_prefill_is_bit_identical_to_one_call() {
    // llama-tiny with a longer context (default RoPE does not depend on it), to span chunks.
    let long = EditedCopy::new("llama-tiny", |c| {
        c.insert("max_position_embeddings".into(), 2048.into());
    });
    let model = load_model_dir(&long.0).unwrap();
    let chunk = model.prefill_chunk();
    assert!(chunk < 1100);
    let ids: Vec<u32> = (0..1100u32).map(|i| (i * 7919 + 13) % 512).collect();
    let mut one = model.new_state().unwrap();
    let all = model.forward(&ids, one.as_mut(), LogitsWanted::All).unwrap();
    let mut pieces = model.new_state().unwrap();
    let mut pieced = Vec::new();
    for piece in ids.chunks(chunk) {
        pieced.extend(model.forward(piece, pieces.as_mut(), LogitsWanted::All).unwrap());
    }
    assert!(all == pieced, "pieces of prefill_chunk tokens must give the one call's logits exactly");
    assert_eq!(one.to_bytes().unwrap(), pieces.to_bytes().unwrap());
    // Other splits (and decode steps) agree closely, not bitwise.
    let mut other = model.new_state().unwrap();
    let mut split = model.forward(&ids[..700], other.as_mut(), LogitsWanted::All).unwrap();
    split.extend(model.forward(&ids[700..1095], other.as_mut(), LogitsWanted::All).unwrap());
    for t in 1095..ids.len() {
        split.extend(model.forward(&ids[t..t + 1], other.as_mut(), LogitsWanted::All).unwrap());
    }
    let worst = all.iter().zip(&split).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-4, "other splits differ by {worst}");
}

#[test]
fn snapshot_continues_bit_identically_in_a_fresh_model() {
    let r = read_reference(fixture("llama-tiny/reference.json"));
    let model = load_model_dir(&fixture("llama-tiny")).unwrap();
    let split = 11;
    let mut st = model.new_state().unwrap();
    model.forward(&r.input_ids[..split], st.as_mut(), LogitsWanted::Last).unwrap();
    let bytes = st.to_bytes().unwrap();
    let layout = st.layout();
    assert_eq!((layout.family.as_str(), layout.dtype.as_str(), layout.dims.clone()), ("llama", "f32", vec![3, 2, 16]));
    assert_eq!(layout.tokens, split as u64);
    assert_eq!(bytes.len(), split * model.info().state_bytes_per_token, "exactly the tokens seen");
    assert_eq!(model.state_bytes_for(&layout).unwrap(), bytes.len());
    let expected = model.forward(&r.input_ids[split..], st.as_mut(), LogitsWanted::All).unwrap();

    let fresh = load_model_dir(&fixture("llama-tiny")).unwrap();
    let mut restored = fresh.new_state().unwrap();
    restored.load_bytes(&bytes, split as u64).unwrap();
    assert_eq!(restored.layout().tokens, split as u64);
    let got = fresh.forward(&r.input_ids[split..], restored.as_mut(), LogitsWanted::All).unwrap();
    assert!(got == expected, "restored cache must continue bit-identically");

    // A clone is independent.
    let mut a = fresh.new_state().unwrap();
    a.load_bytes(&bytes, split as u64).unwrap();
    let mut b = a.clone_box();
    fresh.forward(&[7, 8], a.as_mut(), LogitsWanted::Last).unwrap();
    assert_eq!(b.layout().tokens, split as u64);
    assert_eq!(b.to_bytes().unwrap(), bytes);
    fresh.forward(&[7], b.as_mut(), LogitsWanted::Last).unwrap();

    // Wrong length, too many tokens, non-finite values: E_STATE_MISMATCH.
    let e = restored.load_bytes(&bytes[..bytes.len() - 4], split as u64).unwrap_err();
    assert_eq!(e.code, ErrorCode::StateMismatch);
    let e = restored.load_bytes(&bytes, split as u64 + 1).unwrap_err();
    assert_eq!(e.code, ErrorCode::StateMismatch);
    let e = restored.load_bytes(&[], 257).unwrap_err();
    assert_eq!(e.code, ErrorCode::StateMismatch);
    assert!(e.message.contains("256"), "{}", e.message);
    let mut nan = bytes.clone();
    nan[100..104].copy_from_slice(&f32::INFINITY.to_le_bytes());
    let e = restored.load_bytes(&nan, split as u64).unwrap_err();
    assert_eq!(e.code, ErrorCode::StateMismatch);
}

#[test]
fn forward_refuses_past_the_context_and_foreign_states() {
    let model = load_model_dir(&fixture("llama-tiny")).unwrap();
    let mut st = model.new_state().unwrap();
    let ids: Vec<u32> = (0..257u32).map(|i| i % 512).collect();
    let e = model.forward(&ids, st.as_mut(), LogitsWanted::Last).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidOption);
    assert!(e.message.contains("256"), "{}", e.message);
    assert_eq!(st.layout().tokens, 0, "nothing consumed");
    model.forward(&ids[..256], st.as_mut(), LogitsWanted::Last).unwrap();
    let e = model.forward(&[1], st.as_mut(), LogitsWanted::Last).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidOption);
    let e = model.forward(&[512], model.new_state().unwrap().as_mut(), LogitsWanted::Last).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidOption);
    let mamba = load_model_dir(&fixture("mamba1-tiny")).unwrap();
    let e = model.forward(&[1], mamba.new_state().unwrap().as_mut(), LogitsWanted::Last).unwrap_err();
    assert_eq!(e.code, ErrorCode::StateMismatch);
    let e = mamba.state_bytes_for(&st.layout()).unwrap_err();
    assert_eq!(e.code, ErrorCode::StateMismatch);
}

/// Own fixtures (test/fixtures/make-llama-fixtures.py): each RoPE scaling kind, biases, Qwen2, tied head.
const OWN_FIXTURES: [&str; 5] =
    ["llama-rope-linear", "llama-rope-dynamic", "llama-rope-llama3", "llama-rope-yarn", "qwen2-tiny-bias"];

#[test]
fn own_fixtures_match_their_references() {
    for name in OWN_FIXTURES {
        check_against_reference(&fixture(name), fixture(&format!("{name}/reference.json")));
    }
}

/// 5.x `rope_parameters` ⇄ 4.x `rope_theta` + `rope_scaling` (and `head_dim` dropped / written).
fn other_spelling(c: &mut serde_json::Map<String, serde_json::Value>) {
    use serde_json::{json, Value};
    let head_dim = c["hidden_size"].as_u64().unwrap() / c["num_attention_heads"].as_u64().unwrap();
    match c.remove("rope_parameters") {
        Some(Value::Object(mut p)) => {
            c.insert("rope_theta".into(), p.remove("rope_theta").unwrap());
            let kind = p.remove("rope_type").unwrap();
            // 4.x wrote `type` in older files.
            let scaling = if kind == "default" {
                Value::Null
            } else {
                p.insert("type".into(), kind);
                Value::Object(p)
            };
            c.insert("rope_scaling".into(), scaling);
            c.remove("head_dim");
        }
        _ => {
            let theta = c.remove("rope_theta").unwrap();
            let mut p = match c.remove("rope_scaling") {
                Some(Value::Object(p)) => p,
                _ => serde_json::Map::from_iter([("rope_type".to_string(), json!("default"))]),
            };
            p.insert("rope_theta".into(), theta);
            c.insert("rope_parameters".into(), Value::Object(p));
            c.insert("head_dim".into(), head_dim.into());
        }
    }
}

#[test]
fn both_config_spellings_of_each_fixture_give_the_same_logits() {
    for name in OWN_FIXTURES {
        let other = EditedCopy::new(name, other_spelling);
        let text = std::fs::read_to_string(other.0.join("config.json")).unwrap();
        let was_v5 = std::fs::read_to_string(fixture(name).join("config.json")).unwrap().contains("rope_parameters");
        assert_eq!(text.contains("rope_parameters"), !was_v5, "{name}: converted");
        let ids = read_reference(fixture(&format!("{name}/reference.json"))).input_ids;
        let (a, b) = (load_model_dir(&fixture(name)).unwrap(), load_model_dir(&other.0).unwrap());
        assert_eq!(a.info(), b.info(), "{name}");
        let run = |m: &dyn LanguageModel| m.forward(&ids, m.new_state().unwrap().as_mut(), LogitsWanted::All).unwrap();
        assert!(run(a.as_ref()) == run(b.as_ref()), "{name}: the two spellings give other logits");
    }
}

#[test]
fn rope_frequencies_match_transformers_past_the_context() {
    use phoenix_core::models::llama::LlamaConfig;
    for name in OWN_FIXTURES {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(&format!("{name}/reference.json"))).unwrap())
                .unwrap();
        let check = &v["rope_check"];
        let cfg =
            LlamaConfig::from_json_str(&std::fs::read_to_string(fixture(name).join("config.json")).unwrap()).unwrap();
        let (inv, scale) = cfg.rope.frequencies(check["seq_len"].as_u64().unwrap() as usize);
        let want: Vec<f64> = check["inv_freq"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(inv.len(), want.len(), "{name}");
        for (j, (g, w)) in inv.iter().zip(&want).enumerate() {
            assert!(((*g as f64 - w) / w).abs() < 1e-6, "{name}: inv_freq[{j}] = {g}, transformers {w}");
        }
        let want_scale = check["attention_scaling"].as_f64().unwrap();
        assert!((scale as f64 - want_scale).abs() < 1e-6, "{name}: attention scaling {scale} vs {want_scale}");
    }
}

#[test]
fn each_scaling_kind_changes_the_logits_it_is_checked_on() {
    // Within the context only linear, llama3 and yarn change anything (dynamic starts past it,
    // checked by `rope_frequencies_match_transformers_past_the_context`).
    for name in ["llama-rope-linear", "llama-rope-llama3", "llama-rope-yarn"] {
        let plain = EditedCopy::new(name, |c| {
            let theta = c.remove("rope_theta").or_else(|| c["rope_parameters"].get("rope_theta").cloned()).unwrap();
            c.remove("rope_scaling");
            c.insert("rope_parameters".into(), serde_json::json!({"rope_type": "default", "rope_theta": theta}));
        });
        let r = read_reference(fixture(&format!("{name}/reference.json")));
        let m = load_model_dir(&plain.0).unwrap();
        let got = m.forward(&r.input_ids, m.new_state().unwrap().as_mut(), LogitsWanted::All).unwrap();
        let v = m.info().vocab_size;
        let worst =
            r.logits.iter().enumerate().map(|(t, w)| max_abs_diff(&got[t * v..(t + 1) * v], w)).fold(0.0, f64::max);
        assert!(worst > 1e-2, "{name}: default RoPE is within {worst} of the scaled reference");
    }
}

#[test]
fn qwen2_reads_its_biases_and_ties_its_head() {
    let m = load_model_dir(&fixture("qwen2-tiny-bias")).unwrap();
    let a = m.info();
    assert_eq!((a.model_type.as_str(), a.family.as_str()), ("qwen2", "llama"));
    assert_eq!(
        (a.architecture["qkvBias"].as_bool(), a.architecture["tiedEmbeddings"].as_bool()),
        (Some(true), Some(true))
    );
    // Tied: one [V, D] matrix; q/k/v biases; no o / MLP biases.
    let per_layer = 2 * 64 + (64 * 64 + 64) + 2 * (32 * 64 + 32) + 64 * 64 + 3 * 96 * 64;
    assert_eq!(a.param_count, 512 * 64 + 2 * per_layer + 64);
}
