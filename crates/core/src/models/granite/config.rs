//! Granite-4.0-H (`model_type: granitemoehybrid`) `config.json`: a stack whose `layer_types` mix
//! Mamba-2 mixers and attention, every layer followed by a shared SwiGLU MLP, with Granite's µP
//! multipliers. The Mamba-2 keys (`mamba_*`) fill the same [`Mamba2MixerConfig`] the `mamba2` family
//! uses, checked by the same rules naming Granite's fields.

use crate::config::fields::Fields;
use crate::config::{json, CONFIG_FILE as FILE};
use crate::error::{bad_config, unsupported_model, Result};
use crate::loader::shown::shown_name;
use crate::models::llama::config::parse_rope;
use crate::models::mamba2::config::{mixer_from_fields, Mamba2MixerConfig, MixerFieldNames};
use crate::nn::kv_cache::KvDtype;
use crate::nn::rope::RopeSpec;

/// What one layer's mixer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    Mamba,
    Attention,
}

/// Granite's names for the Mamba-2 mixer keys.
pub const GRANITE_MIXER_FIELDS: MixerFieldNames = MixerFieldNames {
    prefix: "",
    hidden: "hidden_size",
    expand: "mamba_expand",
    heads: "mamba_n_heads",
    head_dim: "mamba_d_head",
    state: "mamba_d_state",
    groups: "mamba_n_groups",
    conv: "mamba_d_conv",
    chunk: "mamba_chunk_size",
    dt_limit: "time_step_limit",
    bias: "mamba_proj_bias",
    conv_bias: "mamba_conv_bias",
};

/// A mixture-of-experts FFN: a router picks `top_k` of `experts` SwiGLU experts per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeConfig {
    pub experts: usize,
    pub top_k: usize,
    /// Width of one expert (`intermediate_size`).
    pub intermediate_size: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GraniteHybridConfig {
    pub hidden_size: usize,
    pub vocab_size: usize,
    pub layer_kinds: Vec<LayerKind>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    /// `hidden_size / num_attention_heads` (Granite ignores a `head_dim` key).
    pub head_dim: usize,
    /// Width of the shared (dense) MLP.
    pub shared_intermediate_size: usize,
    pub max_position_embeddings: usize,
    /// RoPE of the attention layers when `position_embedding_type` is `rope`; `None`: no positional
    /// encoding (Granite-4.0-H).
    pub rope: Option<RopeSpec>,
    pub rms_norm_eps: f32,
    pub embedding_multiplier: f32,
    /// Softmax scale of the attention (instead of `1/sqrt(head_dim)`).
    pub attention_multiplier: f32,
    pub residual_multiplier: f32,
    /// Logits are divided by it.
    pub logits_scaling: f32,
    pub attention_bias: bool,
    /// Mixture-of-experts FFN beside the shared MLP (`num_local_experts` > 0); `None`: dense.
    pub moe: Option<MoeConfig>,
    pub mixer: Mamba2MixerConfig,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl GraniteHybridConfig {
    /// Parses the text of `config.json`; `rows` is the most tokens one forward pass holds.
    pub fn from_json_str(text: &str, rows: usize) -> Result<Self> {
        let value = json::parse_config(text)?;
        let obj = value.as_object().ok_or_else(|| bad_config(format!("{FILE}: top level must be a JSON object")))?;
        let f = Fields::new(obj, "");
        let hidden_size = positive(&f, "hidden_size", f.usize_req("hidden_size")?)?;
        let num_layers = positive(&f, "num_hidden_layers", f.usize_req("num_hidden_layers")?)?;
        let vocab_size = positive(&f, "vocab_size", f.usize_req("vocab_size")?)?;
        let layer_kinds = layer_kinds(&f, num_layers)?;
        let moe = moe_config(&f)?;
        if let Some(act) = f.str_opt("hidden_act")? {
            if act != "silu" {
                return Err(unsupported_model(format!(
                    "{FILE}: field `hidden_act` = `{}` is not supported (only silu)",
                    shown_name(act)
                )));
            }
        }
        let use_rope = match f.str_opt("position_embedding_type")? {
            None | Some("nope") => false,
            Some("rope") => true,
            Some(other) => {
                return Err(unsupported_model(format!(
                    "{FILE}: field `position_embedding_type` = `{}` is not supported (`rope`, or none / `nope`)",
                    shown_name(other)
                )))
            }
        };
        let num_heads = positive(&f, "num_attention_heads", f.usize_req("num_attention_heads")?)?;
        let num_kv_heads =
            positive(&f, "num_key_value_heads", f.usize_opt("num_key_value_heads")?.unwrap_or(num_heads))?;
        if num_heads % num_kv_heads != 0 {
            return Err(bad_config(format!(
                "{FILE}: field `num_attention_heads` = {num_heads} is not a multiple of `num_key_value_heads` = {num_kv_heads}"
            )));
        }
        if hidden_size % num_heads != 0 {
            return Err(bad_config(format!(
                "{FILE}: field `hidden_size` = {hidden_size} is not divisible by `num_attention_heads` = {num_heads}"
            )));
        }
        let eps = f.finite_opt("rms_norm_eps")?.unwrap_or(1e-6);
        if eps < 0.0 {
            return Err(f.invalid("rms_norm_eps", "must be ≥ 0"));
        }
        let head_dim = hidden_size / num_heads;
        let max_position_embeddings =
            positive(&f, "max_position_embeddings", f.usize_opt("max_position_embeddings")?.unwrap_or(2048))?;
        let rope = if use_rope { Some(parse_rope(&f, head_dim, max_position_embeddings)?) } else { None };
        let mixer = mixer_config(&f, hidden_size, eps as f32)?;
        mixer.validate(&GRANITE_MIXER_FIELDS, rows)?;
        let multiplier = |key: &str| -> Result<f32> {
            let v = f.finite_opt(key)?.unwrap_or(1.0);
            if v <= 0.0 {
                return Err(f.invalid(key, "must be a number > 0"));
            }
            Ok(v as f32)
        };
        let cfg = Self {
            hidden_size,
            vocab_size,
            layer_kinds,
            num_heads,
            num_kv_heads,
            head_dim,
            shared_intermediate_size: positive(
                &f,
                "shared_intermediate_size",
                f.usize_opt("shared_intermediate_size")?.unwrap_or(1024),
            )?,
            max_position_embeddings,
            rope,
            rms_norm_eps: eps as f32,
            embedding_multiplier: multiplier("embedding_multiplier")?,
            attention_multiplier: multiplier("attention_multiplier")?,
            residual_multiplier: multiplier("residual_multiplier")?,
            logits_scaling: multiplier("logits_scaling")?,
            attention_bias: f.bool_opt("attention_bias")?.unwrap_or(false),
            moe,
            mixer,
            tie_word_embeddings: f.bool_opt("tie_word_embeddings")?.unwrap_or(false),
            bos_token_id: f.token_id_opt("bos_token_id")?,
            eos_token_ids: f.token_ids_opt("eos_token_id")?.unwrap_or_default(),
        };
        cfg.check_sizes(rows)?;
        Ok(cfg)
    }

    pub fn num_layers(&self) -> usize {
        self.layer_kinds.len()
    }

    pub fn attention_layers(&self) -> usize {
        self.layer_kinds.iter().filter(|k| **k == LayerKind::Attention).count()
    }

    pub fn mamba_layers(&self) -> usize {
        self.num_layers() - self.attention_layers()
    }

    /// Width of one token's keys (or values): `kv_heads · head_dim`.
    pub fn kv_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Fixed part of a sequence's state: every Mamba layer's conv + SSM state, f32.
    pub fn state_bytes(&self) -> usize {
        self.mamba_layers() * self.mixer.state_values() * 4
    }

    /// What the state grows by per token: every attention layer's key and value (in `kv_dtype`).
    /// ([`Self::check_sizes`] bounds it; saturating all the same.)
    pub fn state_bytes_per_token(&self, kv_dtype: KvDtype) -> usize {
        self.attention_layers().saturating_mul(kv_dtype.bytes_per_token(self.kv_width()).unwrap_or(usize::MAX))
    }

    /// Every size product (weights, state, a chunk of `rows` tokens' activations and logits, in f32
    /// bytes) fits `usize` (32 bits on WASM), so none can wrap later.
    fn check_sizes(&self, rows: usize) -> Result<()> {
        let (d, v, s, l) = (self.hidden_size, self.vocab_size, self.shared_intermediate_size, self.num_layers());
        let mul = |xs: &[usize]| xs.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        let (x, i) = self.moe.map_or((0, 0), |m| (m.experts, m.intermediate_size));
        let products: [(Option<usize>, &str); 8] = [
            (mul(&[x, i, 2, d, 4]), "`num_local_experts` × `intermediate_size` × `hidden_size`"),
            (mul(&[i, 2, rows, 4]), "`intermediate_size`"),
            (mul(&[v, d, 4]), "`vocab_size` × `hidden_size`"),
            (mul(&[v, rows, 4]), "`vocab_size`"),
            (mul(&[s, 2, d.max(rows), 4]), "`shared_intermediate_size` × `hidden_size`"),
            (mul(&[d, d.max(rows), 4]), "`hidden_size`"),
            (mul(&[l, 2, self.kv_width(), 4]), "`num_hidden_layers` × `num_key_value_heads`"),
            (mul(&[l, self.mixer.state_values(), 4]), "`num_hidden_layers` × the Mamba state"),
        ];
        if let Some((_, what)) = products.iter().find(|(p, _)| p.is_none()) {
            return Err(bad_config(format!(
                "{FILE}: sizes from {what} overflow when multiplied; not a model this build can hold"
            )));
        }
        Ok(())
    }
}

/// `num_local_experts` (class default 8; 0 = dense), `num_experts_per_tok`, `intermediate_size`.
fn moe_config(f: &Fields) -> Result<Option<MoeConfig>> {
    let experts = f.usize_opt("num_local_experts")?.unwrap_or(8);
    if experts == 0 {
        return Ok(None);
    }
    let top_k = f.usize_opt("num_experts_per_tok")?.unwrap_or(2);
    if top_k == 0 || top_k > experts {
        return Err(f.invalid(
            "num_experts_per_tok",
            &format!("= {top_k} must be between 1 and `num_local_experts` = {experts}"),
        ));
    }
    let intermediate_size = positive(f, "intermediate_size", f.usize_opt("intermediate_size")?.unwrap_or(11008))?;
    Ok(Some(MoeConfig { experts, top_k, intermediate_size }))
}

fn positive(f: &Fields, key: &str, v: usize) -> Result<usize> {
    if v == 0 {
        return Err(f.invalid(key, "must be > 0"));
    }
    Ok(v)
}

/// `layer_types` (alias `layers_block_type`): `mamba` / `linear_attention` or `attention` /
/// `full_attention` per layer (transformers 4.x / 5.x spellings); absent: all Mamba.
fn layer_kinds(f: &Fields, num_layers: usize) -> Result<Vec<LayerKind>> {
    let key = if f.get("layer_types").is_some() { "layer_types" } else { "layers_block_type" };
    let Some(names) = f.str_list_opt(key)? else { return Ok(vec![LayerKind::Mamba; num_layers]) };
    if names.len() != num_layers {
        return Err(f.invalid(key, &format!("has {} entries, `num_hidden_layers` is {num_layers}", names.len())));
    }
    names
        .iter()
        .enumerate()
        .map(|(i, name)| match *name {
            "mamba" | "linear_attention" => Ok(LayerKind::Mamba),
            "attention" | "full_attention" => Ok(LayerKind::Attention),
            other => Err(unsupported_model(format!(
                "{FILE}: field `{}[{i}]` = `{}` is not a layer type this build runs (mamba / linear_attention, attention / full_attention)",
                f.name(key),
                shown_name(other)
            ))),
        })
        .collect()
}

/// The Mamba-2 mixer keys; `mamba_d_head` may be `"auto"` (= `mamba_expand · hidden / mamba_n_heads`).
fn mixer_config(f: &Fields, hidden_size: usize, eps: f32) -> Result<Mamba2MixerConfig> {
    if f.str_opt("mamba_d_head").ok().flatten() == Some("auto") {
        let mut obj = f.obj.clone();
        let expand = f.f64_opt("mamba_expand")?.unwrap_or(2.0);
        let heads = f.usize_opt("mamba_n_heads")?.unwrap_or(128).max(1);
        let inner = expand * hidden_size as f64;
        if !(inner.is_finite() && inner >= 0.0 && inner < usize::MAX as f64) {
            return Err(f.invalid("mamba_expand", "times the hidden size is not a size"));
        }
        obj.insert("mamba_d_head".into(), serde_json::Value::from(inner as usize / heads));
        let auto = Fields::new(&obj, "");
        return with_granite_defaults(&auto, hidden_size, eps);
    }
    with_granite_defaults(f, hidden_size, eps)
}

/// [`mixer_from_fields`] with `GraniteMoeHybridConfig`'s defaults where they differ from Mamba-2's.
fn with_granite_defaults(f: &Fields, hidden_size: usize, eps: f32) -> Result<Mamba2MixerConfig> {
    let mut cfg = mixer_from_fields(f, &GRANITE_MIXER_FIELDS, hidden_size, eps)?;
    if f.get("mamba_n_heads").is_none() {
        cfg.num_heads = 128;
    }
    if f.get("mamba_d_state").is_none() {
        cfg.state_size = 256;
    }
    if f.get("mamba_d_head").is_none() {
        cfg.head_dim = cfg.intermediate_size / cfg.num_heads.max(1);
    }
    // Granite fixes Δ's limit in code: (0, ∞), whatever the file says.
    (cfg.dt_min, cfg.dt_max) = (0.0, f32::INFINITY);
    Ok(cfg)
}
