//! Llama / Qwen2 `config.json`, as both transformers generations write it: 4.x (`rope_theta` and
//! `rope_scaling` {`type` | `rope_type`, …} at the top level, `head_dim` often absent) and 5.x
//! (`rope_parameters` {`rope_type`, `rope_theta`, …}). Defaults are transformers' `LlamaConfig` /
//! `Qwen2Config` ones; every size product is checked (32-bit `usize` on WASM).

use crate::config::fields::Fields;
use crate::config::{json, CONFIG_FILE as FILE};
use crate::error::{bad_config, unsupported_model, Result};
use crate::loader::shown::shown_name;
use crate::nn::kv_cache::KvDtype;
use crate::nn::rope::{RopeScaling, RopeSpec};

#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// `llama` or `qwen2`.
    pub model_type: String,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub vocab_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f32,
    pub rope: RopeSpec,
    /// Biases on q / k / v (Qwen2 always; Llama `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on o_proj (Llama `attention_bias`; never for Qwen2).
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl LlamaConfig {
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value = json::parse_config(text)?;
        let obj = value.as_object().ok_or_else(|| bad_config(format!("{FILE}: top level must be a JSON object")))?;
        let f = Fields::new(obj, "");
        let model_type = match f.str_opt("model_type")? {
            Some(t @ ("llama" | "qwen2")) => t.to_string(),
            other => {
                return Err(unsupported_model(format!(
                    "{FILE}: model_type `{}` is not a Llama-style model (llama, qwen2)",
                    shown_name(other.unwrap_or(""))
                )))
            }
        };
        let qwen2 = model_type == "qwen2";
        if let Some(act) = f.str_opt("hidden_act")? {
            if act != "silu" {
                return Err(unsupported_model(format!(
                    "{FILE}: field `hidden_act` = `{}` is not supported (only silu)",
                    shown_name(act)
                )));
            }
        }
        if qwen2 && f.bool_opt("use_sliding_window")?.unwrap_or(false) {
            return Err(unsupported_model(format!("{FILE}: field `use_sliding_window` = true is not supported")));
        }
        // transformers 5 lists each layer's attention kind; only full causal attention is implemented.
        if let Some(kinds) = f.str_list_opt("layer_types")? {
            if let Some((i, kind)) = kinds.iter().enumerate().find(|(_, k)| **k != "full_attention") {
                return Err(unsupported_model(format!(
                    "{FILE}: field `layer_types[{i}]` = `{}` is not supported (only full_attention)",
                    shown_name(kind)
                )));
            }
        }
        let hidden_size = nonzero(&f, "hidden_size", f.usize_req("hidden_size")?)?;
        let num_heads = nonzero(&f, "num_attention_heads", f.usize_req("num_attention_heads")?)?;
        let num_kv_heads =
            nonzero(&f, "num_key_value_heads", f.usize_opt("num_key_value_heads")?.unwrap_or(num_heads))?;
        if num_heads % num_kv_heads != 0 {
            return Err(bad_config(format!(
                "{FILE}: field `num_attention_heads` = {num_heads} is not a multiple of `num_key_value_heads` = {num_kv_heads}"
            )));
        }
        let head_dim = match f.usize_opt("head_dim")? {
            Some(d) => d,
            None if hidden_size % num_heads != 0 => {
                return Err(bad_config(format!(
                    "{FILE}: field `hidden_size` = {hidden_size} is not divisible by `num_attention_heads` = {num_heads} (and no `head_dim` is given)"
                )))
            }
            None => hidden_size / num_heads,
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(
                f.invalid("head_dim", &format!("= {head_dim} must be even and > 0 (RoPE turns pairs of dimensions)"))
            );
        }
        let max_position_embeddings = nonzero(
            &f,
            "max_position_embeddings",
            f.usize_opt("max_position_embeddings")?.unwrap_or(if qwen2 { 32768 } else { 2048 }),
        )?;
        let rope = parse_rope(&f, head_dim, max_position_embeddings)?;
        let attention_bias = f.bool_opt("attention_bias")?.unwrap_or(false);
        let eps = f.finite_opt("rms_norm_eps")?.unwrap_or(1e-6);
        if eps < 0.0 {
            return Err(f.invalid("rms_norm_eps", "must be ≥ 0"));
        }
        let cfg = LlamaConfig {
            hidden_size,
            num_layers: nonzero(&f, "num_hidden_layers", f.usize_req("num_hidden_layers")?)?,
            vocab_size: nonzero(&f, "vocab_size", f.usize_req("vocab_size")?)?,
            intermediate_size: nonzero(&f, "intermediate_size", f.usize_req("intermediate_size")?)?,
            num_heads,
            num_kv_heads,
            head_dim,
            max_position_embeddings,
            rms_norm_eps: eps as f32,
            rope,
            qkv_bias: qwen2 || attention_bias,
            o_bias: !qwen2 && attention_bias,
            mlp_bias: !qwen2 && f.bool_opt("mlp_bias")?.unwrap_or(false),
            tie_word_embeddings: f.bool_opt("tie_word_embeddings")?.unwrap_or(false),
            bos_token_id: f.token_id_opt("bos_token_id")?,
            eos_token_ids: f.token_ids_opt("eos_token_id")?.unwrap_or_default(),
            model_type,
        };
        cfg.check_sizes(1)?;
        Ok(cfg)
    }

    /// Width of the query projection (`heads · head_dim`).
    pub fn q_width(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of the key / value projections (`kv_heads · head_dim`).
    pub fn kv_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// KV-cache bytes per token: `layers · 2 · kv_heads · head_dim · (bytes of a cache value)`
    /// ([`Self::check_sizes`] bounds it; saturating all the same).
    pub fn state_bytes_per_token(&self, kv_dtype: KvDtype) -> usize {
        self.num_layers.saturating_mul(kv_dtype.bytes_per_token(self.kv_width()).unwrap_or(usize::MAX))
    }

    /// Every size product the model computes from this config (weights, one token's cache, a chunk of
    /// `chunk` tokens' activations and logits, in f32 bytes) fits `usize`, so none can wrap later.
    pub fn check_sizes(&self, chunk: usize) -> Result<()> {
        let (d, v, i, l) = (self.hidden_size, self.vocab_size, self.intermediate_size, self.num_layers);
        let mul = |xs: &[usize]| xs.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        let q = mul(&[self.num_heads, self.head_dim]);
        let kv = mul(&[self.num_kv_heads, self.head_dim]);
        let products: [(Option<usize>, &str); 8] = [
            (mul(&[v, d, 4]), "`vocab_size` × `hidden_size`"),
            (q.and_then(|q| mul(&[q, d.max(chunk), 4])), "`num_attention_heads` × `head_dim` × `hidden_size`"),
            (kv.and_then(|kv| mul(&[kv, d, 4])), "`num_key_value_heads` × `head_dim` × `hidden_size`"),
            (mul(&[i, 2, d, 4]), "`intermediate_size` × `hidden_size`"),
            (mul(&[i, 2, chunk, 4]), "`intermediate_size`"),
            (mul(&[v, chunk, 4]), "`vocab_size`"),
            (mul(&[d, chunk, 4]), "`hidden_size`"),
            (kv.and_then(|kv| mul(&[l, 2, kv, 4])), "`num_hidden_layers` × `num_key_value_heads` × `head_dim`"),
        ];
        if let Some((_, what)) = products.iter().find(|(p, _)| p.is_none()) {
            return Err(bad_config(format!(
                "{FILE}: sizes from {what} overflow when multiplied (layers {l}, hidden {d}, vocab {v}, intermediate {i}, heads {}, kv heads {}, head dim {}); not a model this build can hold",
                self.num_heads, self.num_kv_heads, self.head_dim
            )));
        }
        Ok(())
    }
}

fn nonzero(f: &Fields, key: &str, v: usize) -> Result<usize> {
    if v == 0 {
        return Err(f.invalid(key, "must be > 0"));
    }
    Ok(v)
}

/// RoPE from `rope_parameters` (5.x) or `rope_theta` + `rope_scaling` (4.x).
pub(crate) fn parse_rope(f: &Fields, head_dim: usize, max_pos: usize) -> Result<RopeSpec> {
    let top_theta = f.f64_opt("rope_theta")?;
    let params = match f.object_opt("rope_parameters")? {
        Some(p) => Some(p),
        None => f.object_opt("rope_scaling")?,
    };
    let theta = match &params {
        Some(p) => p.f64_opt("rope_theta")?.or(top_theta),
        None => top_theta,
    };
    let theta_field = if params.as_ref().is_some_and(|p| p.get("rope_theta").is_some()) {
        params.as_ref().map(|p| p.name("rope_theta")).unwrap_or_default()
    } else {
        "rope_theta".to_string()
    };
    let theta = theta.unwrap_or(10000.0);
    if !theta.is_finite() || theta <= 1.0 {
        return Err(bad_config(format!("{FILE}: field `{theta_field}` = {theta} must be a finite number > 1")));
    }
    let Some(p) = params else {
        return Ok(RopeSpec { theta, dim: head_dim, scaling: RopeScaling::Default, interleaved: false });
    };
    let (kind_key, kind) = match (p.str_opt("rope_type")?, p.str_opt("type")?) {
        (Some(k), _) => ("rope_type", k),
        (None, Some(k)) => ("type", k),
        (None, None) => ("rope_type", "default"),
    };
    if let Some(prf) = p.f64_opt("partial_rotary_factor")? {
        if prf != 1.0 {
            return Err(unsupported_model(format!(
                "{FILE}: field `{}` = {prf} is not supported (Llama rotates whole heads)",
                p.name("partial_rotary_factor")
            )));
        }
    }
    // A positive finite factor; `must_exceed_one` where the formula divides by `factor - 1` or a log.
    let factor = |key: &str| -> Result<f64> {
        let x = p.f64_opt(key)?.ok_or_else(|| p.missing(key))?;
        if !x.is_finite() || x <= 0.0 {
            return Err(p.invalid(key, &format!("= {x} must be a finite number > 0")));
        }
        Ok(x)
    };
    let positions = |key: &str| -> Result<usize> {
        let n = p.usize_opt(key)?.unwrap_or(max_pos);
        if n == 0 {
            return Err(p.invalid(key, "must be > 0"));
        }
        Ok(n)
    };
    let scaling = match kind {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear { factor: factor("factor")? },
        "dynamic" => {
            if head_dim <= 2 {
                return Err(bad_config(format!("{FILE}: dynamic RoPE needs `head_dim` > 2, got {head_dim}")));
            }
            RopeScaling::Dynamic { factor: factor("factor")?, max_position_embeddings: max_pos }
        }
        "llama3" => {
            let (low, high) = (factor("low_freq_factor")?, factor("high_freq_factor")?);
            if high <= low {
                return Err(p.invalid(
                    "high_freq_factor",
                    &format!("= {high} must exceed `{}` = {low}", p.name("low_freq_factor")),
                ));
            }
            let original = p
                .usize_opt("original_max_position_embeddings")?
                .ok_or_else(|| p.missing("original_max_position_embeddings"))?;
            if original == 0 {
                return Err(p.invalid("original_max_position_embeddings", "must be > 0"));
            }
            RopeScaling::Llama3 {
                factor: factor("factor")?,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: original,
            }
        }
        "yarn" => {
            let original = positions("original_max_position_embeddings")?;
            // transformers 5: no factor ⇒ max_position_embeddings / original.
            let factor = match p.get("factor") {
                Some(_) => factor("factor")?,
                None => max_pos as f64 / original as f64,
            };
            let get_mscale = |scale: f64, m: f64| if scale <= 1.0 { 1.0 } else { 0.1 * m * scale.ln() + 1.0 };
            let nonzero_opt = |key: &str| -> Result<Option<f64>> { Ok(p.finite_opt(key)?.filter(|&x| x != 0.0)) };
            let attention_factor = match p.finite_opt("attention_factor")? {
                Some(a) => a,
                None => match (nonzero_opt("mscale")?, nonzero_opt("mscale_all_dim")?) {
                    (Some(m), Some(all)) => get_mscale(factor, m) / get_mscale(factor, all),
                    _ => get_mscale(factor, 1.0),
                },
            };
            let beta = |key: &str, default: f64| -> Result<f64> { Ok(nonzero_opt(key)?.unwrap_or(default)) };
            let (beta_fast, beta_slow) = (beta("beta_fast", 32.0)?, beta("beta_slow", 1.0)?);
            if beta_fast <= 0.0 || beta_slow <= 0.0 {
                return Err(p.invalid("beta_fast", "and `beta_slow` must be > 0"));
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: original,
                beta_fast,
                beta_slow,
                attention_factor,
                truncate: p.bool_opt("truncate")?.unwrap_or(true),
            }
        }
        other => {
            return Err(unsupported_model(format!(
            "{FILE}: field `{}` = `{}` is not a supported RoPE scaling kind (default, linear, dynamic, llama3, yarn)",
            p.name(kind_key),
            shown_name(other)
        )))
        }
    };
    Ok(RopeSpec { theta, dim: head_dim, scaling, interleaved: false })
}
