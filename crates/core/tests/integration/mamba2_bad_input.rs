//! Broken Mamba-2 folders (built in memory from the mamba2-tiny fixture) give a typed error whose
//! message names the field or tensor at fault — never a panic or wrong numbers.

use crate::model_support;

use model_support::fixture;
use phoenix_core::models::load_model_from_memory;
use phoenix_core::{ErrorCode, PhoenixError};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn files(name: &str) -> Vec<(String, Vec<u8>)> {
    ["config.json", "model.safetensors"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(fixture(name).join(f)).unwrap()))
        .collect()
}

/// mamba2-tiny with `edit` applied to the config text.
fn with_config(edit: impl Fn(&str) -> String) -> Vec<(String, Vec<u8>)> {
    let mut f = files("mamba2-tiny");
    let text = String::from_utf8(f[0].1.clone()).unwrap();
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit must change the config");
    f[0].1 = edited.into_bytes();
    f
}

/// mamba2-tiny with its tensors rewritten by `edit` (name, shape, f32 values → kept or not).
fn with_tensors(edit: impl Fn(&str, &mut Vec<usize>, &mut Vec<f32>) -> bool) -> Vec<(String, Vec<u8>)> {
    let mut f = files("mamba2-tiny");
    let st = SafeTensors::deserialize(&f[1].1).unwrap();
    let mut kept: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let mut shape = view.shape().to_vec();
        let mut values: Vec<f32> =
            view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        if edit(&name, &mut shape, &mut values) {
            kept.push((name, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect()));
        }
    }
    let views: Vec<(String, TensorView)> =
        kept.iter().map(|(n, s, d)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), d).unwrap())).collect();
    f[1].1 = safetensors::serialize(views, None).unwrap();
    f
}

fn load_err(files: Vec<(String, Vec<u8>)>) -> PhoenixError {
    match load_model_from_memory(files) {
        Ok(_) => panic!("loaded but should not"),
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
fn the_unedited_fixture_loads() {
    load_model_from_memory(files("mamba2-tiny")).unwrap();
}

#[test]
fn inconsistent_sizes_name_the_fields() {
    let e = load_err(with_config(|t| t.replace("\"num_heads\": 8", "\"num_heads\": 6")));
    assert_err(&e, ErrorCode::BadConfig, &["config.json", "`num_heads`", "`head_dim`"]);
    let e = load_err(with_config(|t| t.replace("\"n_groups\": 1", "\"n_groups\": 3")));
    assert_err(&e, ErrorCode::BadConfig, &["config.json", "`n_groups`"]);
    let e = load_err(with_config(|t| t.replace("\"state_size\": 16", "\"state_size\": 0")));
    assert_err(&e, ErrorCode::BadConfig, &["`state_size`"]);
    let e = load_err(with_config(|t| t.replace("\"expand\": 2", "\"expand\": -1")));
    assert_err(&e, ErrorCode::BadConfig, &["`expand`"]);
    let e = load_err(with_config(|t| t.replace("\"chunk_size\": 8", "\"chunk_size\": \"big\"")));
    assert_err(&e, ErrorCode::BadConfig, &["`chunk_size`"]);
    let e = load_err(with_config(|t| t.replace("\"num_hidden_layers\": 3", "\"num_hidden_layers\": 4")));
    assert_err(&e, ErrorCode::BadConfig, &["`num_hidden_layers`", "3 layers"]);
    let e = load_err(with_config(|t| {
        t.replace("\"time_step_limit\": [", "\"time_step_limit\": [5.0, 1.0], \"old_limit\": [")
    }));
    assert_err(&e, ErrorCode::BadConfig, &["`time_step_limit`"]);
    let e = load_err(with_config(|t| t.replace("\"rescale_prenorm_residual\"", "\"rms_norm\": false, \"r\"")));
    assert_err(&e, ErrorCode::UnsupportedModel, &["rms_norm"]);
    // Sizes that agree with each other but not with the tensors: the tensor is named.
    let e = load_err(with_config(|t| t.replace("\"state_size\": 16", "\"state_size\": 8")));
    assert_err(&e, ErrorCode::BadWeights, &["backbone.layers.0.mixer.", "shape"]);
}

#[test]
fn huge_sizes_are_refused_before_allocating() {
    let e = load_err(with_config(|t| {
        t.replace("\"num_heads\": 8", &format!("\"num_heads\": {}", u64::MAX / 2))
            .replace("\"head_dim\": 16", "\"head_dim\": 2")
            .replace("\"hidden_size\": 64", &format!("\"hidden_size\": {}", u64::MAX / 2))
            .replace("\"expand\": 2", "\"expand\": 2.0")
    }));
    assert!(matches!(e.code, ErrorCode::BadConfig), "{}", e.to_wire());
}

#[test]
fn missing_and_misshaped_tensors_are_named() {
    for name in [
        "backbone.layers.1.mixer.dt_bias",
        "backbone.layers.2.mixer.norm.weight",
        "backbone.layers.0.mixer.A_log",
        "backbone.norm_f.weight",
    ] {
        let e = load_err(with_tensors(|n, _, _| n != name));
        assert_err(&e, ErrorCode::BadWeights, &[name, "missing"]);
    }
    let target = "backbone.layers.1.mixer.in_proj.weight";
    let e = load_err(with_tensors(|n, shape, values| {
        if n == target {
            shape[0] -= 8;
            values.truncate(shape[0] * shape[1]);
        }
        true
    }));
    assert_err(&e, ErrorCode::BadWeights, &[target, "shape"]);
    let target = "backbone.layers.0.mixer.D";
    let e = load_err(with_tensors(|n, shape, values| {
        if n == target {
            shape.push(1);
            values.truncate(shape.iter().product());
        }
        true
    }));
    assert_err(&e, ErrorCode::BadWeights, &[target, "shape"]);
    let e = load_err(with_tensors(|n, _, values| {
        if n == "backbone.layers.2.mixer.A_log" {
            values[3] = f32::NAN;
        }
        true
    }));
    assert_err(&e, ErrorCode::BadWeights, &["backbone.layers.2.mixer.A_log", "non-finite"]);
    let e = load_err(with_tensors(|n, _, values| {
        if n == "backbone.layers.1.mixer.A_log" {
            values[5] = 100.0;
        }
        true
    }));
    assert_err(&e, ErrorCode::BadWeights, &["backbone.layers.1.mixer.A_log", "element 5"]);
}

#[test]
fn untied_config_without_a_head_is_refused() {
    let mut f = with_config(|t| t.replace("\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false"));
    let e = match load_model_from_memory(f.clone()) {
        Ok(_) => panic!("loaded without lm_head"),
        Err(e) => e,
    };
    assert_err(&e, ErrorCode::BadWeights, &["lm_head.weight", "tie_word_embeddings"]);
    // A Mamba-1 checkpoint relabelled `mamba2`: the first Mamba-2 tensor it lacks is named.
    f = files("mamba1-tiny");
    let text = String::from_utf8(f[0].1.clone()).unwrap();
    f[0].1 = text.replacen("\"model_type\": \"mamba\"", "\"model_type\": \"mamba2\"", 1).into_bytes();
    let e = load_err(f);
    assert!(matches!(e.code, ErrorCode::BadWeights | ErrorCode::BadConfig), "{}", e.to_wire());
    assert!(e.message.contains("backbone.layers.0.mixer.") || e.message.contains("config.json"), "{}", e.message);
}
