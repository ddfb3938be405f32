//! Typed Mamba-1 configuration, parsed from either `config.json` layout:
//! Hugging Face (`model_type` `mamba` / `falcon_mamba`) or original state-spaces (`d_model`, `n_layer`,
//! `ssm_cfg`, no `model_type`). Every size the model needs is derived here, once.

use serde_json::{Map, Value};

use crate::error::{bad_config, unsupported_model, Result};
use crate::loader::shown::{json_kind, shown_name};

pub mod fields;
pub mod json;

use fields::Fields;

/// Which `config.json` dialect the folder uses (decides tensor naming and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigLayout {
    HuggingFace,
    StateSpaces,
}

/// Mamba-1 sizes and options with every default applied and every derived size computed.
#[derive(Debug, Clone, PartialEq)]
pub struct MambaConfig {
    /// `mamba` or `falcon_mamba` (state-spaces folders report `mamba`).
    pub model_type: String,
    pub layout: ConfigLayout,
    /// `D`.
    pub hidden_size: usize,
    pub num_layers: usize,
    /// `V`: rows of the embedding, padded to `pad_vocab_size_multiple` where the layout asks for it.
    pub vocab_size: usize,
    /// `E = expand * D`.
    pub intermediate_size: usize,
    /// `N`.
    pub state_size: usize,
    /// `K`.
    pub conv_kernel: usize,
    /// `R` (`"auto"` = ceil(D / 16)).
    pub dt_rank: usize,
    pub use_bias: bool,
    pub use_conv_bias: bool,
    pub tie_embeddings: bool,
    /// RMSNorm epsilon of the block norms and `norm_f`.
    pub norm_eps: f32,
    /// FalconMamba: epsilon of the weightless RMSNorms on dt_low / B / C; `None` for plain Mamba.
    pub mixer_rms_eps: Option<f32>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

/// The file name looked for inside a model folder.
pub const CONFIG_FILE: &str = "config.json";
const FILE: &str = CONFIG_FILE;

impl MambaConfig {
    /// Parses the text of `config.json`. Syntax errors name the line and column; bad fields name the field.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value = json::parse_config(text)?;
        let obj = value.as_object().ok_or_else(|| bad_config(format!("{FILE}: top level must be a JSON object")))?;
        match obj.get("model_type") {
            Some(Value::String(t)) if t == "mamba" || t == "falcon_mamba" => parse_hf(obj, t),
            Some(Value::String(t)) => Err(unsupported_model(format!(
                "{FILE}: model_type `{}` is not supported (supported: mamba, falcon_mamba, state-spaces Mamba-1)",
                shown_name(t)
            ))),
            Some(other) => {
                Err(bad_config(format!("{FILE}: field `model_type` must be a string, got {}", json_kind(other))))
            }
            None if obj.contains_key("d_model") => parse_state_spaces(obj),
            None => Err(unsupported_model(format!(
                "{FILE}: no `model_type` and no `d_model`: not a Hugging Face or state-spaces Mamba config"
            ))),
        }
    }

    /// Bytes of one sequence's recurrent state: per layer conv `[E, K]` + ssm `[E, N]`, f32.
    /// Fits `usize` for every config [`Self::check_sizes`] accepts.
    pub fn state_bytes(&self) -> usize {
        self.num_layers * self.intermediate_size * (self.conv_kernel + self.state_size) * 4
    }

    /// The `config.json` field that sets the layer count, for messages.
    pub fn layers_field(&self) -> &'static str {
        self.size_fields()[0]
    }

    /// The fields that set layers, hidden, vocab, intermediate, state, conv and Δ-rank sizes in
    /// this config's layout, in that order (for messages).
    fn size_fields(&self) -> [&'static str; 7] {
        match self.layout {
            ConfigLayout::HuggingFace => [
                "num_hidden_layers",
                "hidden_size",
                "vocab_size",
                "intermediate_size",
                "state_size",
                "conv_kernel",
                "time_step_rank",
            ],
            ConfigLayout::StateSpaces => [
                "n_layer",
                "d_model",
                "vocab_size",
                "ssm_cfg.d_inner",
                "ssm_cfg.d_state",
                "ssm_cfg.d_conv",
                "ssm_cfg.dt_rank",
            ],
        }
    }

    /// Checks that every size product the model computes from this config (tensor shapes, the
    /// state, a prefill chunk of `chunk` tokens' activations, all in f32 bytes) fits `usize` (32 bits
    /// on WASM), so no later product can wrap. Whether the sizes match the weights is the loader's check.
    pub fn check_sizes(&self, chunk: usize) -> Result<()> {
        let (l, d, v, e, n, k, r) = (
            self.num_layers,
            self.hidden_size,
            self.vocab_size,
            self.intermediate_size,
            self.state_size,
            self.conv_kernel,
            self.dt_rank,
        );
        let [fl, fd, fv, fe, fn_, fk, fr] = self.size_fields();
        let mul = |a: Option<usize>, b: usize| a.and_then(|a| a.checked_mul(b));
        let x_width = n.checked_mul(2).and_then(|n2| n2.checked_add(r));
        // Each product with the fields it comes from.
        let products: [(Option<usize>, &[&str]); 8] = [
            (mul(mul(Some(v), d), 4), &[fv, fd]),         // embedding / head [V, D]
            (mul(mul(mul(Some(e), 2), d), 4), &[fe, fd]), // in_proj [2E, D]
            (mul(mul(x_width, e), 4), &[fr, fn_, fe]),    // x_proj [R + 2N, E]
            (mul(mul(Some(e), r.max(n).max(k)), 4), &[fe, fr, fn_, fk]), // dt_proj, A_log, conv
            (mul(mul(mul(Some(e), 2), chunk), 4), &[fe]), // a chunk's activations
            (mul(mul(x_width, chunk), 4), &[fr, fn_]),
            (mul(mul(Some(d), chunk), 4), &[fd]),
            (k.checked_add(n).and_then(|kn| mul(mul(mul(Some(l), e), kn), 4)), &[fl, fe, fk, fn_]), // state
        ];
        if let Some((_, fields)) = products.iter().find(|(p, _)| p.is_none()) {
            let fields: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
            return Err(bad_config(format!(
                "{FILE}: sizes from {} overflow when multiplied (layers {l}, hidden {d}, vocab {v}, intermediate {e}, state {n}, conv {k}, dt rank {r}); not a model this build can hold",
                fields.join(", ")
            )));
        }
        Ok(())
    }
}

fn parse_hf(obj: &Map<String, Value>, model_type: &str) -> Result<MambaConfig> {
    let f = Fields::new(obj, "");
    let hidden_size = f.usize_req("hidden_size")?;
    let num_layers = f.usize_req("num_hidden_layers")?;
    let vocab_size = f.usize_req("vocab_size")?;
    let expand = f.f64_opt("expand")?.unwrap_or(2.0);
    let intermediate_size = derive_intermediate(&f, "intermediate_size", expand, hidden_size)?;
    let dt_rank = derive_dt_rank(&f, "time_step_rank", hidden_size)?;
    let mixer_rms_eps =
        if model_type == "falcon_mamba" { Some(f.f64_opt("mixer_rms_eps")?.unwrap_or(1e-6) as f32) } else { None };
    let cfg = MambaConfig {
        model_type: model_type.to_string(),
        layout: ConfigLayout::HuggingFace,
        hidden_size,
        num_layers,
        vocab_size,
        intermediate_size,
        state_size: f.usize_opt("state_size")?.unwrap_or(16),
        conv_kernel: f.usize_opt("conv_kernel")?.unwrap_or(4),
        dt_rank,
        use_bias: f.bool_opt("use_bias")?.unwrap_or(false),
        use_conv_bias: f.bool_opt("use_conv_bias")?.unwrap_or(true),
        tie_embeddings: f.bool_opt("tie_word_embeddings")?.unwrap_or(true),
        norm_eps: f.f64_opt("layer_norm_epsilon")?.unwrap_or(1e-5) as f32,
        mixer_rms_eps,
        bos_token_id: f.token_id_opt("bos_token_id")?,
        eos_token_ids: f.token_ids_opt("eos_token_id")?.unwrap_or_default(),
    };
    validate(cfg)
}

fn parse_state_spaces(obj: &Map<String, Value>) -> Result<MambaConfig> {
    let f = Fields::new(obj, "");
    let hidden_size = f.usize_req("d_model")?;
    let num_layers = f.usize_req("n_layer")?;
    let raw_vocab = f.usize_req("vocab_size")?;
    let multiple = f.usize_opt("pad_vocab_size_multiple")?.unwrap_or(8).max(1);
    let vocab_size = raw_vocab.div_ceil(multiple) * multiple;
    if let Some(false) = f.bool_opt("rms_norm")? {
        return Err(unsupported_model(format!("{FILE}: `rms_norm: false` (LayerNorm Mamba) is not supported")));
    }
    if let Some(Value::Array(a)) = obj.get("attn_layer_idx") {
        if !a.is_empty() {
            return Err(unsupported_model(format!(
                "{FILE}: `attn_layer_idx` is set: hybrid attention Mamba models are not supported"
            )));
        }
    }
    if f.usize_opt("d_intermediate")?.unwrap_or(0) != 0 {
        return Err(unsupported_model(format!("{FILE}: `d_intermediate` > 0 (MLP blocks) is not supported")));
    }
    let empty = Map::new();
    let s = f.object_opt("ssm_cfg")?.unwrap_or_else(|| Fields::new(&empty, "ssm_cfg."));
    if let Some(layer) = s.str_opt("layer")? {
        if layer != "Mamba1" {
            return Err(unsupported_model(format!(
                "{FILE}: ssm_cfg.layer `{}` is not supported (only Mamba1 for now)",
                shown_name(layer)
            )));
        }
    }
    let expand = s.f64_opt("expand")?.unwrap_or(2.0);
    let cfg = MambaConfig {
        model_type: "mamba".to_string(),
        layout: ConfigLayout::StateSpaces,
        hidden_size,
        num_layers,
        vocab_size,
        intermediate_size: derive_intermediate(&s, "d_inner", expand, hidden_size)?,
        state_size: s.usize_opt("d_state")?.unwrap_or(16),
        conv_kernel: s.usize_opt("d_conv")?.unwrap_or(4),
        dt_rank: derive_dt_rank(&s, "dt_rank", hidden_size)?,
        use_bias: s.bool_opt("bias")?.unwrap_or(false),
        use_conv_bias: s.bool_opt("conv_bias")?.unwrap_or(true),
        tie_embeddings: f.bool_opt("tie_embeddings")?.unwrap_or(true),
        // state-spaces MixerModel hard-codes 1e-5 (not stored in the config).
        norm_eps: f.f64_opt("norm_epsilon")?.unwrap_or(1e-5) as f32,
        mixer_rms_eps: None,
        // state-spaces checkpoints use the GPT-NeoX tokenizer: <|endoftext|> = 0 is BOS and EOS.
        bos_token_id: Some(f.token_id_opt("bos_token_id")?.unwrap_or(0)),
        eos_token_ids: f.token_ids_opt("eos_token_id")?.unwrap_or_else(|| vec![0]),
    };
    validate(cfg)
}

/// `E = int(expand * D)`; a stored intermediate size must agree with it.
fn derive_intermediate(f: &Fields, key: &str, expand: f64, hidden: usize) -> Result<usize> {
    if !expand.is_finite() || expand <= 0.0 {
        return Err(bad_config(format!("{FILE}: field `{}expand` must be > 0, got {expand}", f.prefix)));
    }
    let derived = (expand * hidden as f64) as usize;
    match f.usize_opt(key)? {
        Some(stored) if stored != derived => Err(bad_config(format!(
            "{FILE}: field `{}{key}` = {stored} disagrees with expand × hidden size = {derived}",
            f.prefix
        ))),
        _ => Ok(derived),
    }
}

/// Δ rank: an integer or `"auto"` (= ceil(D / 16), as in state-spaces and HF).
fn derive_dt_rank(f: &Fields, key: &str, hidden: usize) -> Result<usize> {
    match f.get(key) {
        None => Ok(hidden.div_ceil(16)),
        Some(Value::String(s)) if s == "auto" => Ok(hidden.div_ceil(16)),
        Some(_) => f.usize_req(key),
    }
}

fn validate(cfg: MambaConfig) -> Result<MambaConfig> {
    let checks = [
        ("hidden size", cfg.hidden_size),
        ("layer count", cfg.num_layers),
        ("vocab size", cfg.vocab_size),
        ("intermediate size", cfg.intermediate_size),
        ("state size", cfg.state_size),
        ("conv kernel", cfg.conv_kernel),
        ("dt rank", cfg.dt_rank),
    ];
    for (what, v) in checks {
        if v == 0 {
            return Err(bad_config(format!("{FILE}: {what} must be > 0")));
        }
    }
    // Sizes of one token's activations; a whole prefill chunk is checked by the model.
    cfg.check_sizes(1)?;
    let bad_eps = |e: f32| !e.is_finite() || e < 0.0;
    if bad_eps(cfg.norm_eps) || cfg.mixer_rms_eps.is_some_and(bad_eps) {
        return Err(bad_config(format!("{FILE}: norm epsilon must be a non-negative number")));
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn original_layout_pads_vocab_and_derives_sizes() {
        let c = MambaConfig::from_json_str(
            r#"{"d_model":768,"n_layer":24,"vocab_size":50277,"ssm_cfg":{},"rms_norm":true,
                "residual_in_fp32":true,"fused_add_norm":true,"pad_vocab_size_multiple":8}"#,
        )
        .unwrap();
        assert_eq!(c.layout, ConfigLayout::StateSpaces);
        assert_eq!((c.vocab_size, c.intermediate_size, c.dt_rank), (50280, 1536, 48));
        assert_eq!((c.state_size, c.conv_kernel, c.norm_eps), (16, 4, 1e-5));
        assert!(c.tie_embeddings && c.use_conv_bias && !c.use_bias);
        assert_eq!(c.mixer_rms_eps, None);
    }

    #[test]
    fn hf_layout_reads_keys_and_auto_rank() {
        let c = MambaConfig::from_json_str(
            r#"{"model_type":"mamba","hidden_size":2560,"num_hidden_layers":64,"vocab_size":50280,
                "time_step_rank":"auto","eos_token_id":[0,2],"bos_token_id":0}"#,
        )
        .unwrap();
        assert_eq!((c.dt_rank, c.intermediate_size), (160, 5120));
        assert_eq!(c.eos_token_ids, vec![0, 2]);
        assert_eq!(c.bos_token_id, Some(0));
    }

    #[test]
    fn falcon_mamba_gets_mixer_eps() {
        let base = r#"{"model_type":"falcon_mamba","hidden_size":64,"num_hidden_layers":2,"vocab_size":512"#;
        let c = MambaConfig::from_json_str(&format!("{base}}}")).unwrap();
        assert_eq!(c.mixer_rms_eps, Some(1e-6));
        let c = MambaConfig::from_json_str(&format!("{base},\"mixer_rms_eps\":1e-4}}")).unwrap();
        assert_eq!(c.mixer_rms_eps, Some(1e-4));
    }

    #[test]
    fn errors_name_line_field_and_type() {
        let e = MambaConfig::from_json_str("{\n \"model_type\": \"mamba\",\n \"hidden_size\": 64,,\n}").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadConfig);
        assert!(e.message.contains("config.json") && e.message.contains("line 3"), "{}", e.message);

        let e = MambaConfig::from_json_str(
            r#"{"model_type":"mamba","hidden_size":"big","num_hidden_layers":1,"vocab_size":8}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadConfig);
        assert!(e.message.contains("`hidden_size`"), "{}", e.message);

        let e = MambaConfig::from_json_str(r#"{"model_type":"llama"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedModel);
        assert!(e.message.contains("llama"));

        let e = MambaConfig::from_json_str(r#"{"d_model":64,"n_layer":2,"vocab_size":8,"ssm_cfg":{"layer":"Mamba2"}}"#)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedModel);
        assert!(e.message.contains("Mamba2"));
    }
}
