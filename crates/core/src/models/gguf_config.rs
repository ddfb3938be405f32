//! GGUF metadata as the Hugging Face `config.json` each family already parses: the family's own
//! parser validates the result, so every rule about sizes and options stays in one place. Keys are
//! llama.cpp's (`{arch}.embedding_length`, `{arch}.ssm.state_size`, …); what GGUF leaves out is
//! read from the tensors (tied head, biases) or the token list (vocabulary size).

use serde_json::{json, Map, Value};

use crate::config::CONFIG_FILE;
use crate::error::{bad_config, unsupported_model, PhoenixError, Result};
use crate::loader::gguf_names::GgufArch;
use crate::loader::{GgufFile, ModelFiles};

/// The `config.json` (as text) and `model_type` equivalent to a GGUF file's metadata.
pub fn hf_config(g: &GgufFile) -> Result<(String, String)> {
    let arch = g.architecture()?.to_string();
    let kind = GgufArch::parse(&arch, &g.label)?;
    let k = |key: &str| format!("{arch}.{key}");
    let has = |name: &str| g.tensors.contains_key(name);
    let mut c = Map::new();
    let mut put = |key: &str, v: Value| {
        c.insert(key.to_string(), v);
    };
    let hidden = g.u64_req(&k("embedding_length"))?;
    let layers = g.u64_req(&k("block_count"))?;
    put("hidden_size", hidden.into());
    put("num_hidden_layers", layers.into());
    put("vocab_size", vocab_size(g, &arch)?.into());
    put("tie_word_embeddings", (!has("output.weight")).into());
    if let Some(id) = g.u64_opt("tokenizer.ggml.bos_token_id")? {
        put("bos_token_id", id.into());
    }
    let eos = end_of_generation_ids(g)?;
    let mut eos_unique: Vec<u64> = Vec::new();
    for id in eos {
        if !eos_unique.contains(&id) {
            eos_unique.push(id);
        }
    }
    if !eos_unique.is_empty() {
        put("eos_token_id", eos_unique.into());
    }
    let eps = g.f64_opt(&k("attention.layer_norm_rms_epsilon"))?;
    let model_type = match kind {
        GgufArch::Llama | GgufArch::Qwen2 => {
            put("model_type", arch.as_str().into());
            if let Some(eps) = eps {
                put("rms_norm_eps", eps.into());
            }
            attention_keys(g, &arch, &mut put)?;
            put("intermediate_size", g.u64_req(&k("feed_forward_length"))?.into());
            if kind == GgufArch::Llama {
                put("attention_bias", has("blk.0.attn_q.bias").into());
                put("mlp_bias", has("blk.0.ffn_gate.bias").into());
            }
            arch.clone()
        }
        GgufArch::Mamba => {
            let falcon = g.bool_opt(&k("ssm.dt_b_c_rms"))?.unwrap_or(false);
            let model_type = if falcon { "falcon_mamba" } else { "mamba" };
            put("model_type", model_type.into());
            put("intermediate_size", g.u64_req(&k("ssm.inner_size"))?.into());
            put("state_size", g.u64_req(&k("ssm.state_size"))?.into());
            put("conv_kernel", g.u64_req(&k("ssm.conv_kernel"))?.into());
            put("time_step_rank", g.u64_req(&k("ssm.time_step_rank"))?.into());
            put("use_bias", has("blk.0.ssm_in.bias").into());
            put("use_conv_bias", has("blk.0.ssm_conv1d.bias").into());
            if let Some(eps) = eps {
                put("layer_norm_epsilon", eps.into());
                if falcon {
                    put("mixer_rms_eps", eps.into());
                }
            }
            model_type.to_string()
        }
        GgufArch::Mamba2 => {
            put("model_type", "mamba2".into());
            mamba2_keys(g, &arch, "", hidden, &mut put)?;
            put("use_bias", has("blk.0.ssm_in.bias").into());
            put("use_conv_bias", has("blk.0.ssm_conv1d.bias").into());
            if let Some(eps) = eps {
                put("layer_norm_epsilon", eps.into());
            }
            "mamba2".to_string()
        }
        GgufArch::GraniteHybrid => {
            put("model_type", "granitemoehybrid".into());
            granite_keys(g, &arch, hidden, &mut put)?;
            if let Some(eps) = eps {
                put("rms_norm_eps", eps.into());
            }
            "granitemoehybrid".to_string()
        }
    };
    Ok((Value::Object(c).to_string(), model_type))
}

/// A config message naming `config.json` (bare, or in the model's folder) names the GGUF file's
/// metadata instead: there is no `config.json`.
pub fn name_gguf_config(e: PhoenixError, files: &ModelFiles, g: &GgufFile) -> PhoenixError {
    let what = format!("{} (metadata read as {CONFIG_FILE})", g.label);
    let in_folder = files.describe(CONFIG_FILE);
    let named = if e.message.contains(&in_folder) { in_folder.as_str() } else { CONFIG_FILE };
    PhoenixError::new(e.code, e.message.replacen(named, &what, 1))
}

/// `{arch}.vocab_size`, else the token list's length, else the embedding's rows.
fn vocab_size(g: &GgufFile, arch: &str) -> Result<u64> {
    if let Some(v) = g.u64_opt(&format!("{arch}.vocab_size"))? {
        return Ok(v);
    }
    if let Some(n) = g.array_len("tokenizer.ggml.tokens") {
        return Ok(n as u64);
    }
    match g.tensors.get("token_embd.weight").map(|t| t.shape.as_slice()) {
        Some(&[rows, _]) => Ok(rows as u64),
        _ => Err(bad_config(format!(
            "{}: metadata gives no vocabulary size ({arch}.vocab_size, tokenizer.ggml.tokens) and token_embd.weight is missing",
            g.label
        ))),
    }
}

/// Heads, head size, context and RoPE of an attention stack (Llama keys).
fn attention_keys(g: &GgufFile, arch: &str, put: &mut dyn FnMut(&str, Value)) -> Result<()> {
    let k = |key: &str| format!("{arch}.{key}");
    let heads = g.u64_req(&k("attention.head_count"))?;
    put("num_attention_heads", heads.into());
    if let Some(kv) = g.u64_list_opt(&k("attention.head_count_kv"))? {
        match kv.as_slice() {
            [one, rest @ ..] if rest.iter().all(|x| x == one) => put("num_key_value_heads", (*one).into()),
            _ => {
                return Err(unsupported_model(format!(
                    "{}: metadata `{arch}.attention.head_count_kv` differs between layers; not supported",
                    g.label
                )))
            }
        }
    }
    let key_len = g.u64_opt(&k("attention.key_length"))?;
    if let Some(d) = key_len {
        put("head_dim", d.into());
    }
    if g.u64_opt(&k("attention.value_length"))? != key_len {
        return Err(unsupported_model(format!(
            "{}: metadata `{arch}.attention.value_length` differs from `key_length`; not supported",
            g.label
        )));
    }
    if let Some(ctx) = g.u64_opt(&k("context_length"))? {
        put("max_position_embeddings", ctx.into());
    }
    rope_keys(g, arch, put)
}

/// RoPE base and scaling (none, linear, yarn); a partial rotary dimension or per-frequency factors
/// (`rope_freqs.weight`, Llama 3.1's scaling) are not supported.
fn rope_keys(g: &GgufFile, arch: &str, put: &mut dyn FnMut(&str, Value)) -> Result<()> {
    let k = |key: &str| format!("{arch}.{key}");
    let unsupported = |what: &str| unsupported_model(format!("{}: {what} is not supported", g.label));
    let head_dim = match g.u64_opt(&k("attention.key_length"))? {
        Some(d) => d,
        None => {
            let (width, heads) = (g.u64_req(&k("embedding_length"))?, g.u64_req(&k("attention.head_count"))?);
            if heads == 0 || width % heads != 0 {
                return Err(bad_config(format!(
                    "{}: metadata `{arch}.embedding_length` = {width} is not a whole number of heads (`{arch}.attention.head_count` = {heads})",
                    g.label
                )));
            }
            width / heads
        }
    };
    match g.u64_opt(&k("rope.dimension_count"))? {
        Some(d) if d > head_dim => {
            return Err(bad_config(format!(
                "{}: metadata `{arch}.rope.dimension_count` = {d} is larger than the head size {head_dim}",
                g.label
            )))
        }
        Some(d) if d < head_dim => {
            return Err(unsupported("metadata `rope.dimension_count` smaller than the head (partial RoPE)"))
        }
        _ => {}
    }
    if g.tensors.contains_key("rope_freqs.weight") {
        return Err(unsupported("a `rope_freqs.weight` tensor (per-frequency RoPE factors)"));
    }
    let theta = g.f64_opt(&k("rope.freq_base"))?.unwrap_or(10000.0);
    let mut params = json!({ "rope_theta": theta, "rope_type": "default" });
    match g.str_opt(&k("rope.scaling.type"))? {
        None | Some("none") => {}
        Some("linear") => {
            let factor = g.f64_opt(&k("rope.scaling.factor"))?.unwrap_or(1.0);
            params = json!({ "rope_theta": theta, "rope_type": "linear", "factor": factor });
        }
        Some("yarn") => {
            // llama.cpp scales cos/sin by 0.1·ln(factor) + 1 as transformers' default does; an explicit
            // `attn_factor` multiplies that and has no transformers counterpart.
            if g.get(&k("rope.scaling.attn_factor")).is_some() {
                return Err(unsupported("metadata `rope.scaling.attn_factor`"));
            }
            let original = g.u64_req(&k("rope.scaling.original_context_length"))?;
            params = json!({
                "rope_theta": theta,
                "rope_type": "yarn",
                "factor": g.f64_opt(&k("rope.scaling.factor"))?.unwrap_or(1.0),
                "original_max_position_embeddings": original,
                "beta_fast": g.f64_opt(&k("rope.scaling.yarn_beta_fast"))?.unwrap_or(32.0),
                "beta_slow": g.f64_opt(&k("rope.scaling.yarn_beta_slow"))?.unwrap_or(1.0),
            });
        }
        Some(_) => return Err(unsupported("metadata `rope.scaling.type` other than none / linear / yarn")),
    }
    put("rope_parameters", params);
    Ok(())
}

/// Mamba-2 mixer keys (`{prefix}` `mamba_` for Granite's names).
fn mamba2_keys(g: &GgufFile, arch: &str, prefix: &str, hidden: u64, put: &mut dyn FnMut(&str, Value)) -> Result<()> {
    let k = |key: &str| format!("{arch}.{key}");
    let inner = g.u64_req(&k("ssm.inner_size"))?;
    // llama.cpp stores Mamba-2's head count as the "time step rank".
    let heads = g.u64_req(&k("ssm.time_step_rank"))?;
    if hidden == 0 || heads == 0 || inner % heads != 0 {
        return Err(bad_config(format!(
            "{}: metadata `{arch}.ssm.inner_size` = {inner} is not a whole number of heads (`ssm.time_step_rank` = {heads}) or the width is 0",
            g.label
        )));
    }
    let names: [&str; 6] = if prefix.is_empty() {
        ["expand", "num_heads", "head_dim", "state_size", "n_groups", "conv_kernel"]
    } else {
        ["mamba_expand", "mamba_n_heads", "mamba_d_head", "mamba_d_state", "mamba_n_groups", "mamba_d_conv"]
    };
    let expand: Value =
        if inner % hidden == 0 { (inner / hidden).into() } else { (inner as f64 / hidden as f64).into() };
    put(names[0], expand);
    put(names[1], heads.into());
    put(names[2], (inner / heads).into());
    put(names[3], g.u64_req(&k("ssm.state_size"))?.into());
    put(names[4], g.u64_opt(&k("ssm.group_count"))?.unwrap_or(1).into());
    put(names[5], g.u64_req(&k("ssm.conv_kernel"))?.into());
    Ok(())
}

/// Granite-4.0-H (`granitemoehybrid`): which layers attend, the Mamba-2 mixer, the multipliers.
fn granite_keys(g: &GgufFile, arch: &str, hidden: u64, put: &mut dyn FnMut(&str, Value)) -> Result<()> {
    let k = |key: &str| format!("{arch}.{key}");
    let has = |name: &str| g.tensors.contains_key(name);
    if g.u64_opt(&k("expert_count"))?.unwrap_or(0) > 0 {
        return Err(unsupported_model(format!(
            "{}: a mixture-of-experts Granite GGUF is not supported (dense granitehybrid only)",
            g.label
        )));
    }
    put("num_local_experts", 0.into());
    put("num_experts_per_tok", 0.into());
    let heads = g.u64_req(&k("attention.head_count"))?;
    put("num_attention_heads", heads.into());
    // llama.cpp lists KV heads per layer, 0 for the Mamba layers.
    let kv = g
        .u64_list_opt(&k("attention.head_count_kv"))?
        .ok_or_else(|| bad_config(format!("{}: metadata `{arch}.attention.head_count_kv` is missing", g.label)))?;
    let layers = g.u64_req(&k("block_count"))?;
    if kv.len() as u64 != layers {
        return Err(bad_config(format!(
            "{}: metadata `{arch}.attention.head_count_kv` has {} entries for {layers} layers",
            g.label,
            kv.len()
        )));
    }
    let kinds: Vec<&str> = kv.iter().map(|&h| if h == 0 { "mamba" } else { "attention" }).collect();
    let mut attn_kv = kv.iter().filter(|&&h| h > 0);
    if let Some(&first) = attn_kv.next() {
        if attn_kv.any(|&h| h != first) {
            return Err(unsupported_model(format!("{}: attention layers with different KV head counts", g.label)));
        }
        put("num_key_value_heads", first.into());
    }
    put("layer_types", kinds.into());
    let ffn = g.u64_opt(&k("expert_shared_feed_forward_length"))?;
    let ffn = match ffn {
        Some(f) => f,
        None => g.u64_req(&k("feed_forward_length"))?,
    };
    put("shared_intermediate_size", ffn.into());
    mamba2_keys(g, arch, "mamba_", hidden, put)?;
    put("mamba_conv_bias", has("blk.0.ssm_conv1d.bias").into());
    put("mamba_proj_bias", has("blk.0.ssm_in.bias").into());
    put("attention_bias", g.tensors.keys().any(|n| n.ends_with(".attn_q.bias")).into());
    for (key, hf) in [
        ("attention.scale", "attention_multiplier"),
        ("embedding_scale", "embedding_multiplier"),
        ("residual_scale", "residual_multiplier"),
        ("logit_scale", "logits_scaling"),
    ] {
        if let Some(v) = g.f64_opt(&k(key))? {
            put(hf, v.into());
        }
    }
    // The converter marks Granite-4.0-H (no positional embedding) with `rope.scaling.finetuned = false`.
    let rope = g.bool_opt(&k("rope.scaling.finetuned"))?.unwrap_or(false);
    put("position_embedding_type", if rope { "rope" } else { "nope" }.into());
    if let Some(ctx) = g.u64_opt(&k("context_length"))? {
        put("max_position_embeddings", ctx.into());
    }
    if rope {
        rope_keys(g, arch, put)?;
    }
    Ok(())
}

/// The ids that end a generation, as llama.cpp stops on them: with a vocabulary in the header, its
/// EOS plus every end-of-generation token (`<|im_end|>`, `<|eot_id|>`, …); without one, or when
/// the vocabulary is unusable (the tokenizer load reports that), the EOS/EOT ids the header names.
fn end_of_generation_ids(g: &GgufFile) -> Result<Vec<u64>> {
    if g.metadata.contains_key("tokenizer.ggml.tokens") {
        if let Ok(special) = crate::tokenizer::gguf_special_tokens(&g.metadata, &g.label) {
            let mut ids: Vec<u64> = special.eos.iter().map(|&id| id as u64).collect();
            ids.extend(special.end_of_generation.iter().map(|&id| id as u64));
            return Ok(ids);
        }
    }
    ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"]
        .iter()
        .filter_map(|key| g.u64_opt(key).transpose())
        .collect()
}
