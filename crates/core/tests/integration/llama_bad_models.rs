//! Broken Llama / Qwen2 folders (copies of the fixtures with one thing wrong): each is a typed error
//! whose message names the field or tensor at fault, and nothing panics.

use crate::llama_support;

use llama_support::EditedCopy;
use phoenix_core::models::load_model_dir;
use phoenix_core::{ErrorCode, PhoenixError};
use serde_json::{json, Map, Value};

fn load_err(name: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> PhoenixError {
    let copy = EditedCopy::new(name, edit);
    match load_model_dir(&copy.0) {
        Ok(_) => panic!("{name}: the edited copy loaded"),
        Err(e) => e,
    }
}

fn assert_err(e: &PhoenixError, code: ErrorCode, needles: &[&str]) {
    assert_eq!(e.code, code, "{}", e.to_wire());
    for n in needles {
        assert!(e.message.contains(n), "message {:?} should mention {n:?}", e.message);
    }
}

#[test]
fn inconsistent_head_counts_name_the_fields() {
    let e = load_err("llama-tiny", |c| {
        c.insert("num_key_value_heads".into(), 3.into());
    });
    assert_err(&e, ErrorCode::BadConfig, &["config.json", "num_attention_heads", "num_key_value_heads", "multiple"]);
    // hidden 64 over 5 heads, no head_dim to say otherwise.
    let e = load_err("llama-tiny", |c| {
        c.remove("head_dim");
        c.insert("num_attention_heads".into(), 5.into());
        c.insert("num_key_value_heads".into(), 5.into());
    });
    assert_err(&e, ErrorCode::BadConfig, &["hidden_size", "num_attention_heads", "divisible"]);
    let e = load_err("llama-tiny", |c| {
        c.insert("head_dim".into(), 15.into());
    });
    assert_err(&e, ErrorCode::BadConfig, &["head_dim"]);
    // A head count that fits the config but not the weights: the tensor is named with both shapes.
    let e = load_err("llama-tiny", |c| {
        c.insert("num_key_value_heads".into(), 4.into());
    });
    assert_err(&e, ErrorCode::BadWeights, &["model.layers.0.self_attn.k_proj.weight", "[32, 64]", "[64, 64]"]);
}

#[test]
fn zero_and_overflowing_sizes_are_bad_config() {
    for field in ["num_key_value_heads", "num_attention_heads", "hidden_size", "vocab_size", "max_position_embeddings"]
    {
        let e = load_err("llama-tiny", |c| {
            c.insert(field.into(), 0.into());
        });
        assert_err(&e, ErrorCode::BadConfig, &[field]);
    }
    let e = load_err("llama-tiny", |c| {
        c.insert("vocab_size".into(), json!(1u64 << 62));
    });
    assert_err(&e, ErrorCode::BadConfig, &["vocab_size", "overflow"]);
    let e = load_err("llama-tiny", |c| {
        c.insert("intermediate_size".into(), json!(u64::MAX / 2));
    });
    assert_err(&e, ErrorCode::BadConfig, &["intermediate_size", "overflow"]);
}

#[test]
fn unsupported_rope_kinds_name_the_field_in_either_spelling() {
    let e = load_err("llama-tiny", |c| {
        c.insert("rope_parameters".into(), json!({"rope_type": "longrope", "rope_theta": 10000.0}));
    });
    assert_err(&e, ErrorCode::UnsupportedModel, &["rope_parameters.rope_type", "longrope"]);
    let e = load_err("llama-rope-llama3", |c| {
        c.insert("rope_scaling".into(), json!({"type": "su", "factor": 2.0}));
    });
    assert_err(&e, ErrorCode::UnsupportedModel, &["rope_scaling.type", "su"]);
    let e = load_err("llama-tiny", |c| {
        c.insert(
            "rope_parameters".into(),
            json!({"rope_type": "linear", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}),
        );
    });
    assert_err(&e, ErrorCode::UnsupportedModel, &["rope_parameters.partial_rotary_factor"]);
}

#[test]
fn bad_rope_parameters_are_bad_config() {
    let e = load_err("llama-rope-llama3", |c| {
        c["rope_scaling"].as_object_mut().unwrap().remove("factor");
    });
    assert_err(&e, ErrorCode::BadConfig, &["rope_scaling.factor", "missing"]);
    let e = load_err("llama-rope-llama3", |c| {
        c["rope_scaling"]["high_freq_factor"] = json!(0.5);
    });
    assert_err(&e, ErrorCode::BadConfig, &["rope_scaling.high_freq_factor", "rope_scaling.low_freq_factor"]);
    let e = load_err("llama-rope-linear", |c| {
        c["rope_parameters"]["factor"] = json!({"__float__": "Infinity"});
    });
    assert_err(&e, ErrorCode::BadConfig, &["rope_parameters.factor", "finite"]);
    let e = load_err("llama-rope-linear", |c| {
        c["rope_parameters"]["factor"] = json!("four");
    });
    assert_err(&e, ErrorCode::BadConfig, &["rope_parameters.factor", "number"]);
    let e = load_err("llama-tiny", |c| {
        c["rope_parameters"]["rope_theta"] = json!(-1.0);
    });
    assert_err(&e, ErrorCode::BadConfig, &["rope_parameters.rope_theta"]);
    let e = load_err("llama-tiny", |c| {
        c.insert("rope_scaling".into(), json!(3));
        c.remove("rope_parameters");
    });
    assert_err(&e, ErrorCode::BadConfig, &["rope_scaling", "object"]);
}

#[test]
fn other_unsupported_options_are_named() {
    let e = load_err("llama-tiny", |c| {
        c.insert("hidden_act".into(), "gelu".into());
    });
    assert_err(&e, ErrorCode::UnsupportedModel, &["hidden_act", "gelu"]);
    let e = load_err("qwen2-tiny-bias", |c| {
        c.insert("layer_types".into(), json!(["full_attention", "sliding_attention"]));
    });
    assert_err(&e, ErrorCode::UnsupportedModel, &["layer_types[1]", "sliding_attention"]);
    let e = load_err("qwen2-tiny-bias", |c| {
        c.insert("use_sliding_window".into(), true.into());
    });
    assert_err(&e, ErrorCode::UnsupportedModel, &["use_sliding_window"]);
}

#[test]
fn missing_or_extra_tensors_are_named() {
    // Biases the config promises but the weights lack.
    let e = load_err("llama-tiny", |c| {
        c.insert("attention_bias".into(), true.into());
    });
    assert_err(&e, ErrorCode::BadWeights, &["model.layers.0.self_attn.q_proj.bias", "missing"]);
    let e = load_err("llama-tiny", |c| {
        c.insert("mlp_bias".into(), true.into());
    });
    assert_err(&e, ErrorCode::BadWeights, &["model.layers.0.mlp.gate_proj.bias", "missing"]);
    // More layers than stored; fewer than stored.
    let e = load_err("llama-tiny", |c| {
        c.insert("num_hidden_layers".into(), 4.into());
    });
    assert_err(&e, ErrorCode::BadWeights, &["model.layers.3.", "missing"]);
    let e = load_err("llama-tiny", |c| {
        c.insert("num_hidden_layers".into(), 2.into());
    });
    assert_err(&e, ErrorCode::BadConfig, &["num_hidden_layers"]);
    // Untied without a stored head.
    let e = load_err("qwen2-tiny-bias", |c| {
        c.insert("tie_word_embeddings".into(), false.into());
    });
    assert_err(&e, ErrorCode::BadWeights, &["lm_head.weight", "tie_word_embeddings"]);
    // A misshaped MLP matrix.
    let e = load_err("llama-tiny", |c| {
        c.insert("intermediate_size".into(), 128.into());
    });
    assert_err(&e, ErrorCode::BadWeights, &["model.layers.0.mlp.gate_proj.weight", "[160, 64]", "[128, 64]"]);
}

#[test]
fn a_tensor_removed_from_the_file_is_named() {
    let copy = EditedCopy::new("llama-tiny", |_| {});
    let bytes = std::fs::read(copy.path("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> =
        st.tensors().into_iter().filter(|(n, _)| n != "model.layers.1.post_attention_layernorm.weight").collect();
    std::fs::write(copy.path("model.safetensors"), safetensors::serialize(kept, None).unwrap()).unwrap();
    let e = load_model_dir(&copy.0).err().expect("loads without a tensor");
    assert_err(&e, ErrorCode::BadWeights, &["model.layers.1.post_attention_layernorm.weight", "missing"]);
}
