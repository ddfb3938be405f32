//! Granite-4.0-H hybrids against float64 references from transformers: `granite-hybrid-tiny` (dense,
//! layers mamba/attention/mamba/mamba, the shared fixture) and `granite-moe-tiny` (mixture-of-experts
//! layers, µP multipliers ≠ 1) and `granite-rope-tiny` (attention with RoPE), both written by
//! `test/fixtures/make-granite-fixtures.py`; the hybrid state
//! (SSM states + KV cache) as one snapshot; both tensor namings of MoE layers.

use crate::model_support;

use std::path::Path;

use model_support::reference_checks::{check_model_dir, TOL};
use model_support::*;
use phoenix_core::models::load_model_dir;
use phoenix_core::{ErrorCode, LogitsWanted};

#[test]
fn dense_hybrid_matches_transformers() {
    check_model_dir(&fixture("granite-hybrid-tiny"), &[1, 2, 3, 7, 8, 9, 16, 31]);
}

#[test]
fn moe_hybrid_with_multipliers_matches_transformers() {
    check_model_dir(&fixture("granite-moe-tiny"), &[1, 2, 8, 9, 20, 31]);
}

#[test]
fn rope_attention_matches_transformers_in_both_config_spellings() {
    let dir = fixture("granite-rope-tiny");
    check_model_dir(&dir, &[1, 5, 16, 31]);
    let model = load_model_dir(&dir).unwrap();
    assert_eq!(model.info().architecture["positionEmbedding"], "rope (default)");
    // transformers 4.x spelling: `rope_theta` at the top level, no `rope_parameters`.
    let v4 = Edited::new("granite-rope-tiny", |dir| {
        edit_config(dir, |c| {
            let theta = c.remove("rope_parameters").unwrap()["rope_theta"].clone();
            c.insert("rope_theta".into(), theta);
        })
    });
    let ids = long_prompt(40);
    let logits = |dir: &Path| {
        let model = load_model_dir(dir).unwrap();
        let mut st = model.new_state().unwrap();
        model.forward(&ids, st.as_mut(), LogitsWanted::All).unwrap()
    };
    assert_eq!(logits(&v4.dir), logits(&dir));
    // Without RoPE the same weights give other logits: the positions are really encoded.
    let nope = Edited::new("granite-rope-tiny", |dir| {
        edit_config(dir, |c| {
            c.insert("position_embedding_type".into(), "nope".into());
        })
    });
    assert_ne!(logits(&nope.dir), logits(&dir));
}

#[test]
fn info_reports_a_hybrid_with_fixed_and_growing_state() {
    let model = load_model_dir(&fixture("granite-hybrid-tiny")).unwrap();
    let a = model.info();
    assert_eq!(
        (a.family.as_str(), a.engine.as_str(), a.model_type.as_str()),
        ("granitemoehybrid", "hybrid", "granitemoehybrid")
    );
    assert_eq!(a.context_length, Some(256));
    // 3 Mamba layers × (conv 160×4 + SSM 8×16×16) f32; 1 attention layer × K+V × 2 heads × 16.
    assert_eq!(a.state_bytes, 3 * (160 * 4 + 8 * 16 * 16) * 4);
    assert_eq!(a.state_bytes_per_token, 2 * 2 * 16 * 4);
    assert_eq!(a.architecture["layerTypes"], serde_json::json!(["mamba", "attention", "mamba", "mamba"]));
    assert_eq!(a.architecture["numExperts"], 0);
    let moe = load_model_dir(&fixture("granite-moe-tiny")).unwrap();
    assert_eq!(
        (moe.info().architecture["numExperts"].as_u64(), moe.info().architecture["expertsPerToken"].as_u64()),
        (Some(4), Some(2))
    );
}

fn long_prompt(len: u32) -> Vec<u32> {
    (0..len).map(|i| (i * 7919 + 13) % 512).collect()
}

#[test]
fn split_prefill_is_bit_identical_and_snapshots_hold_ssm_and_kv_state() {
    for name in ["granite-hybrid-tiny", "granite-moe-tiny"] {
        // A longer context than the fixture's 256, so the prompt spans several prefill pieces.
        let copy = Edited::new(name, |dir| {
            edit_config(dir, |c| {
                c.insert("max_position_embeddings".into(), 2048.into());
            })
        });
        let model = load_model_dir(&copy.dir).unwrap();
        let ids = long_prompt(1100);
        let mut one = model.new_state().unwrap();
        let all = model.forward(&ids, one.as_mut(), LogitsWanted::All).unwrap();

        // Pieces of prefill_chunk tokens: bit-identical by contract, whatever the SIMD level.
        let chunk = model.prefill_chunk();
        assert!(chunk < ids.len());
        let mut st = model.new_state().unwrap();
        let mut pieced = model.forward(&ids[..chunk], st.as_mut(), LogitsWanted::All).unwrap();
        // Snapshot after the first piece: the SSM states plus `chunk` tokens of keys and values.
        let bytes = st.to_bytes().unwrap();
        let info = model.info();
        assert_eq!(bytes.len(), info.state_bytes + chunk * info.state_bytes_per_token);
        assert_eq!(model.state_bytes_for(&st.layout()).unwrap(), bytes.len());
        for piece in ids[chunk..].chunks(chunk) {
            pieced.extend(model.forward(piece, st.as_mut(), LogitsWanted::All).unwrap());
        }
        assert_eq!(pieced, all, "{name}: split prefill");
        assert_eq!(st.to_bytes().unwrap(), one.to_bytes().unwrap());

        // Restored in a freshly loaded model, the rest continues bit-identically.
        let fresh = load_model_dir(&copy.dir).unwrap();
        let mut restored = fresh.new_state().unwrap();
        restored.load_bytes(&bytes, chunk as u64).unwrap();
        let mut cont = Vec::new();
        for piece in ids[chunk..].chunks(chunk) {
            cont.extend(fresh.forward(piece, restored.as_mut(), LogitsWanted::All).unwrap());
        }
        let v = info.vocab_size;
        assert_eq!(cont, all[chunk * v..].to_vec(), "{name}: restored state");
        // Uneven pieces and a decode step after a restore agree within float rounding.
        let mut stepped = fresh.new_state().unwrap();
        stepped.load_bytes(&bytes, chunk as u64).unwrap();
        let mut uneven = fresh.forward(&ids[chunk..chunk + 100], stepped.as_mut(), LogitsWanted::All).unwrap();
        uneven.extend(fresh.forward(&ids[chunk + 100..chunk + 101], stepped.as_mut(), LogitsWanted::Last).unwrap());
        let worst =
            uneven.iter().zip(&all[chunk * v..(chunk + 101) * v]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!((worst as f64) < TOL, "{name}: uneven pieces and decode differ by {worst}");

        // A wrong length, a NaN in the KV part, and the wrong token count are refused.
        let mut bad = fresh.new_state().unwrap();
        assert_eq!(bad.load_bytes(&bytes[..bytes.len() - 4], chunk as u64).unwrap_err().code, ErrorCode::StateMismatch);
        assert_eq!(bad.load_bytes(&bytes, chunk as u64 - 1).unwrap_err().code, ErrorCode::StateMismatch);
        let mut nan = bytes.clone();
        let at = bytes.len() - 8;
        nan[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(bad.load_bytes(&nan, chunk as u64).unwrap_err().code, ErrorCode::StateMismatch);
        // The failed loads left the state empty and usable.
        assert_eq!(bad.layout().tokens, 0);
        assert!(fresh.forward(&ids[..3], bad.as_mut(), LogitsWanted::Last).is_ok());
    }
}

#[test]
fn forward_refuses_past_the_context_and_other_families_states() {
    let model = load_model_dir(&fixture("granite-hybrid-tiny")).unwrap();
    let mut st = model.new_state().unwrap();
    let e = model.forward(&long_prompt(257), st.as_mut(), LogitsWanted::Last).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidOption);
    assert!(e.message.contains("256"), "{}", e.message);
    assert_eq!(st.layout().tokens, 0, "refused before any work");
    let llama = load_model_dir(&fixture("llama-tiny")).unwrap();
    let mut foreign = llama.new_state().unwrap();
    assert_eq!(model.forward(&[1], foreign.as_mut(), LogitsWanted::Last).unwrap_err().code, ErrorCode::StateMismatch);
    assert_eq!(model.state_bytes_for(&foreign.layout()).unwrap_err().code, ErrorCode::StateMismatch);
}

/// A copy of fixture `name` in a temp folder with `edit` applied to its files; removed on drop.
struct Edited {
    dir: std::path::PathBuf,
}

impl Edited {
    fn new(name: &str, edit: impl FnOnce(&Path)) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "phoenix-granite-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in std::fs::read_dir(fixture(name)).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
        }
        edit(&dir);
        Self { dir }
    }
}

impl Drop for Edited {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = dir.join("config.json");
    // The core's reader: the fixtures spell infinity both ways (bare `Infinity` is not JSON).
    let mut v = phoenix_core::config::json::parse_config(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn moe_tensors_named_as_transformers_5_writes_them_load_the_same_model() {
    let renamed = Edited::new("granite-moe-tiny", |dir| {
        let path = dir.join("model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
        let renamed = header
            .replace("block_sparse_moe.input_linear.weight", "block_sparse_moe.experts.gate_up_proj")
            .replace("block_sparse_moe.output_linear.weight", "block_sparse_moe.experts.down_proj")
            .replace("block_sparse_moe.router.layer.weight", "block_sparse_moe.router.weight");
        let mut padded = renamed.into_bytes();
        padded.resize(padded.len().next_multiple_of(8), b' ');
        let mut out = (padded.len() as u64).to_le_bytes().to_vec();
        out.extend(padded);
        out.extend_from_slice(&bytes[8 + n..]);
        std::fs::write(&path, out).unwrap();
    });
    let ids = long_prompt(40);
    let logits = |dir: &Path| {
        let model = load_model_dir(dir).unwrap();
        let mut st = model.new_state().unwrap();
        model.forward(&ids, st.as_mut(), LogitsWanted::All).unwrap()
    };
    assert_eq!(logits(&renamed.dir), logits(&fixture("granite-moe-tiny")));
}

#[test]
fn bad_configs_and_tensors_are_typed_errors_naming_the_field() {
    let cases: Vec<(&str, Box<dyn Fn(&mut serde_json::Map<String, serde_json::Value>)>, ErrorCode, &str)> = vec![
        (
            "unknown layer type",
            Box::new(|c| {
                c["layer_types"][2] = "cross_attention".into();
            }),
            ErrorCode::UnsupportedModel,
            "layer_types[2]",
        ),
        (
            "layer count",
            Box::new(|c| {
                c["layer_types"].as_array_mut().unwrap().pop();
            }),
            ErrorCode::BadConfig,
            "layer_types",
        ),
        (
            "kv heads",
            Box::new(|c| {
                c["num_key_value_heads"] = 3.into();
            }),
            ErrorCode::BadConfig,
            "num_key_value_heads",
        ),
        (
            "hidden / heads",
            Box::new(|c| {
                c["num_attention_heads"] = 6.into();
                c["num_key_value_heads"] = 6.into();
            }),
            ErrorCode::BadConfig,
            "hidden_size",
        ),
        (
            "mamba heads",
            Box::new(|c| {
                c["mamba_n_heads"] = 6.into();
            }),
            ErrorCode::BadConfig,
            "mamba_n_heads",
        ),
        (
            "position kind",
            Box::new(|c| {
                c["position_embedding_type"] = "alibi".into();
            }),
            ErrorCode::UnsupportedModel,
            "position_embedding_type",
        ),
        (
            "rope kind",
            Box::new(|c| {
                c["position_embedding_type"] = "rope".into();
                c["rope_parameters"] = serde_json::json!({"rope_type": "longrope", "rope_theta": 10000.0});
            }),
            ErrorCode::UnsupportedModel,
            "rope",
        ),
        (
            "top k",
            Box::new(|c| {
                c["num_local_experts"] = 2.into();
                c["num_experts_per_tok"] = 3.into();
            }),
            ErrorCode::BadConfig,
            "num_experts_per_tok",
        ),
        (
            "more layers stored",
            Box::new(|c| {
                c["num_hidden_layers"] = 3.into();
                c["layer_types"].as_array_mut().unwrap().pop();
            }),
            ErrorCode::BadConfig,
            "num_hidden_layers",
        ),
        (
            "moe tensors missing",
            Box::new(|c| {
                c["num_local_experts"] = 2.into();
                c["num_experts_per_tok"] = 1.into();
            }),
            ErrorCode::BadWeights,
            "block_sparse_moe",
        ),
        (
            "a Mamba layer read as attention",
            Box::new(|c| {
                c["layer_types"][0] = "attention".into();
            }),
            ErrorCode::BadWeights,
            "self_attn",
        ),
    ];
    for (what, edit, code, names) in cases {
        let copy = Edited::new("granite-hybrid-tiny", |dir| edit_config(dir, edit));
        let e = load_model_dir(&copy.dir).err().unwrap_or_else(|| panic!("{what}: loaded"));
        assert_eq!(e.code, code, "{what}: {}", e.message);
        assert!(e.message.contains(names), "{what}: {}", e.message);
    }
}
