//! Typed Mamba-2 configuration (Hugging Face `model_type: mamba2`), split in two: the model-level
//! sizes ([`Mamba2Config`]) and the mixer's own sizes ([`Mamba2MixerConfig`]), which a hybrid
//! (Granite-4.0-H: `mamba_n_heads`, `mamba_d_state`, …) fills from its own keys and validates with
//! the same rules, naming its own fields.

use serde_json::Map;

use crate::config::fields::Fields;
use crate::config::{ConfigLayout, CONFIG_FILE as FILE};
use crate::error::{bad_config, unsupported_model, Result};

/// The sizes and options of one Mamba-2 mixer, every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Mamba2MixerConfig {
    /// `D`: width of the residual stream the mixer reads and writes.
    pub hidden_size: usize,
    /// `E = expand · D` = `H · P`.
    pub intermediate_size: usize,
    /// `H`.
    pub num_heads: usize,
    /// `P`.
    pub head_dim: usize,
    /// `N`.
    pub state_size: usize,
    /// `G`: B/C groups; heads map to groups in contiguous blocks of `H / G`.
    pub n_groups: usize,
    /// `K`.
    pub conv_kernel: usize,
    /// The checkpoint's `chunk_size` (the SSD scan uses it only to pick its tiling).
    pub chunk_size: usize,
    pub use_bias: bool,
    pub use_conv_bias: bool,
    /// Epsilon of the gated group RMSNorm.
    pub norm_eps: f32,
    /// Clamp of Δ after softplus (`time_step_limit`, default `(0, ∞)`).
    pub dt_min: f32,
    pub dt_max: f32,
}

/// The `config.json` keys behind each mixer size (families name them differently). `prefix` is
/// the path of the object holding them (`ssm_cfg.` in state-spaces configs), for messages; `hidden`
/// is always a top-level key.
#[derive(Debug, Clone, Copy)]
pub struct MixerFieldNames {
    pub prefix: &'static str,
    pub hidden: &'static str,
    pub expand: &'static str,
    pub heads: &'static str,
    pub head_dim: &'static str,
    pub state: &'static str,
    pub groups: &'static str,
    pub conv: &'static str,
    pub chunk: &'static str,
    pub dt_limit: &'static str,
    pub bias: &'static str,
    pub conv_bias: &'static str,
}

/// Field names of a `model_type: mamba2` config.
pub const HF_FIELDS: MixerFieldNames = MixerFieldNames {
    prefix: "",
    hidden: "hidden_size",
    expand: "expand",
    heads: "num_heads",
    head_dim: "head_dim",
    state: "state_size",
    groups: "n_groups",
    conv: "conv_kernel",
    chunk: "chunk_size",
    dt_limit: "time_step_limit",
    bias: "use_bias",
    conv_bias: "use_conv_bias",
};

/// Keys of `ssm_cfg` in an original state-spaces (mamba_ssm) config with `layer: "Mamba2"`.
pub const STATE_SPACES_FIELDS: MixerFieldNames = MixerFieldNames {
    prefix: "ssm_cfg.",
    hidden: "d_model",
    expand: "expand",
    heads: "nheads",
    head_dim: "headdim",
    state: "d_state",
    groups: "ngroups",
    conv: "d_conv",
    chunk: "chunk_size",
    dt_limit: "dt_limit",
    bias: "bias",
    conv_bias: "conv_bias",
};

impl MixerFieldNames {
    /// `key` as a message names it.
    fn shown(&self, key: &str) -> String {
        if key == self.hidden {
            key.to_string()
        } else {
            format!("{}{key}", self.prefix)
        }
    }
}

impl Mamba2MixerConfig {
    /// Conv channels `E + 2·G·N` (x, B, C).
    pub fn conv_dim(&self) -> usize {
        self.intermediate_size + 2 * self.n_groups * self.state_size
    }

    /// in_proj rows `2E + 2·G·N + H` (z, xBC, dt).
    pub fn in_proj_dim(&self) -> usize {
        self.intermediate_size + self.conv_dim() + self.num_heads
    }

    /// f32 values of one layer's state: conv `[C, K]` + SSM `[H, P, N]`.
    pub fn state_values(&self) -> usize {
        self.conv_dim() * self.conv_kernel + self.num_heads * self.head_dim * self.state_size
    }

    /// Checks zero sizes, `H·P = E`, `H % G = 0`, the Δ limits, and that every product the mixer
    /// computes (weights, state, `rows` tokens of activations, in f32 bytes) fits `usize` — 32 bits
    /// on WASM — so no later product can wrap. Errors name the fields in `names`.
    pub fn validate(&self, names: &MixerFieldNames, rows: usize) -> Result<()> {
        let zero_checks = [
            (names.hidden, self.hidden_size),
            (names.heads, self.num_heads),
            (names.head_dim, self.head_dim),
            (names.state, self.state_size),
            (names.groups, self.n_groups),
            (names.conv, self.conv_kernel),
            (names.chunk, self.chunk_size),
            (names.expand, self.intermediate_size),
        ];
        if let Some((field, _)) = zero_checks.iter().find(|(_, v)| *v == 0) {
            return Err(bad_config(format!("{FILE}: field `{}` must be > 0", names.shown(field))));
        }
        let (d, e, h, p, n, g, k) = (
            self.hidden_size,
            self.intermediate_size,
            self.num_heads,
            self.head_dim,
            self.state_size,
            self.n_groups,
            self.conv_kernel,
        );
        if h.checked_mul(p) != Some(e) {
            return Err(bad_config(format!(
                "{FILE}: fields `{}` × `{}` = {h} × {p} must equal `{}` × `{}` = {e}",
                names.shown(names.heads),
                names.shown(names.head_dim),
                names.shown(names.expand),
                names.hidden
            )));
        }
        if h % g != 0 {
            return Err(bad_config(format!(
                "{FILE}: field `{}` = {h} must be a multiple of `{}` = {g} (heads share B/C in equal groups)",
                names.shown(names.heads),
                names.shown(names.groups)
            )));
        }
        if !(self.dt_min >= 0.0 && self.dt_max >= self.dt_min) {
            return Err(bad_config(format!(
                "{FILE}: field `{}` must be [min, max] with 0 ≤ min ≤ max, got [{}, {}]",
                names.shown(names.dt_limit),
                self.dt_min,
                self.dt_max
            )));
        }
        if !self.norm_eps.is_finite() || self.norm_eps < 0.0 {
            return Err(bad_config(format!("{FILE}: norm epsilon must be a non-negative number")));
        }
        let m = |a: Option<usize>, b: usize| a.and_then(|a| a.checked_mul(b));
        let gn2 = m(m(Some(g), n), 2);
        let conv_dim = gn2.and_then(|x| x.checked_add(e));
        let in_dim = conv_dim.and_then(|c| c.checked_add(e)).and_then(|c| c.checked_add(h));
        let state = m(conv_dim, k).and_then(|c| m(m(Some(h), p), n).and_then(|s| s.checked_add(c)));
        let products = [
            m(m(in_dim, d), 4),          // in_proj
            m(m(Some(d), e), 4),         // out_proj
            m(m(in_dim, rows), 4),       // a chunk's in_proj output
            m(m(state, rows.max(1)), 4), // state + per-token scratch
        ];
        if products.iter().any(Option::is_none) {
            return Err(bad_config(format!(
                "{FILE}: sizes from `{}`, `{}`, `{}`, `{}`, `{}`, `{}` overflow when multiplied (hidden {d}, heads {h}, head dim {p}, state {n}, groups {g}, conv {k}); not a model this build can hold",
                names.hidden,
                names.shown(names.heads),
                names.shown(names.head_dim),
                names.shown(names.state),
                names.shown(names.groups),
                names.shown(names.conv)
            )));
        }
        Ok(())
    }
}

/// A whole `model_type: mamba2` model.
#[derive(Debug, Clone, PartialEq)]
pub struct Mamba2Config {
    pub model_type: String,
    pub layout: ConfigLayout,
    pub num_layers: usize,
    /// Rows of the embedding (HF configs hold the padded size).
    pub vocab_size: usize,
    pub mixer: Mamba2MixerConfig,
    pub tie_embeddings: bool,
    /// Epsilon of the block norms and `norm_f`.
    pub norm_eps: f32,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl Mamba2Config {
    /// Parses the text of a `config.json`: Hugging Face (`model_type: mamba2`) or original
    /// state-spaces (`d_model`, `n_layer`, `ssm_cfg.layer: "Mamba2"`, no `model_type`); `rows` is the
    /// most tokens one forward pass holds activations for (checked for overflow with every other size).
    pub fn from_json_str(text: &str, rows: usize) -> Result<Self> {
        let value = crate::config::json::parse_config(text)?;
        let obj = value.as_object().ok_or_else(|| bad_config(format!("{FILE}: top level must be a JSON object")))?;
        let f = Fields::new(obj, "");
        let cfg = if obj.contains_key("model_type") { parse_hf(&f)? } else { parse_state_spaces(&f)? };
        let names = match cfg.layout {
            ConfigLayout::HuggingFace => HF_FIELDS,
            ConfigLayout::StateSpaces => STATE_SPACES_FIELDS,
        };
        cfg.mixer.validate(&names, rows)?;
        let layers_field = cfg.layers_field();
        for (field, v) in [(layers_field, cfg.num_layers), ("vocab_size", cfg.vocab_size)] {
            if v == 0 {
                return Err(f.invalid(field, "must be > 0"));
            }
        }
        let head = cfg.vocab_size.checked_mul(cfg.mixer.hidden_size).and_then(|x| x.checked_mul(4));
        let state = cfg.mixer.state_values().checked_mul(cfg.num_layers).and_then(|x| x.checked_mul(4));
        if head.is_none() || state.is_none() {
            return Err(bad_config(format!(
                "{FILE}: sizes from `vocab_size`, `{layers_field}`, `{}` overflow when multiplied; not a model this build can hold",
                names.hidden
            )));
        }
        Ok(cfg)
    }

    /// The field that sets the layer count, for messages.
    pub fn layers_field(&self) -> &'static str {
        match self.layout {
            ConfigLayout::HuggingFace => "num_hidden_layers",
            ConfigLayout::StateSpaces => "n_layer",
        }
    }

    /// The field that says whether the head is the embedding, for messages.
    pub fn tie_field(&self) -> &'static str {
        match self.layout {
            ConfigLayout::HuggingFace => "tie_word_embeddings",
            ConfigLayout::StateSpaces => "tie_embeddings",
        }
    }

    /// Bytes of one sequence's state (every layer's conv + SSM state, f32).
    pub fn state_bytes(&self) -> usize {
        self.num_layers * self.mixer.state_values() * 4
    }
}

fn parse_hf(f: &Fields) -> Result<Mamba2Config> {
    let hidden_size = f.usize_req("hidden_size")?;
    if f.bool_opt("rms_norm")? == Some(false) {
        return Err(unsupported_model(format!(
            "{FILE}: `rms_norm: false` (Mamba-2 without the gated RMSNorm) is not supported"
        )));
    }
    let norm_eps = f.f64_opt("layer_norm_epsilon")?.unwrap_or(1e-5) as f32;
    Ok(Mamba2Config {
        model_type: "mamba2".to_string(),
        layout: ConfigLayout::HuggingFace,
        num_layers: f.usize_req("num_hidden_layers")?,
        vocab_size: f.usize_req("vocab_size")?,
        mixer: mixer_from_fields(f, &HF_FIELDS, hidden_size, norm_eps)?,
        // Mamba2Config's own default (the HF converter copies the checkpoint's `tie_embeddings`).
        tie_embeddings: f.bool_opt("tie_word_embeddings")?.unwrap_or(false),
        norm_eps,
        bos_token_id: f.token_id_opt("bos_token_id")?,
        eos_token_ids: f.token_ids_opt("eos_token_id")?.unwrap_or_default(),
    })
}

/// mamba_ssm's `MambaConfig` with `ssm_cfg.layer: "Mamba2"` (module defaults of `Mamba2`); options
/// that change the maths and that no released checkpoint uses are refused rather than ignored.
fn parse_state_spaces(f: &Fields) -> Result<Mamba2Config> {
    let hidden_size = f.usize_req("d_model")?;
    let num_layers = f.usize_req("n_layer")?;
    let raw_vocab = f.usize_req("vocab_size")?;
    let multiple = f.usize_opt("pad_vocab_size_multiple")?.unwrap_or(8).max(1);
    let vocab_size =
        raw_vocab.checked_next_multiple_of(multiple).ok_or_else(|| f.invalid("vocab_size", "overflows when padded"))?;
    let unsupported = |what: &str| Err(unsupported_model(format!("{FILE}: {what} is not supported")));
    if f.bool_opt("rms_norm")? == Some(false) {
        return unsupported("`rms_norm: false` (LayerNorm blocks)");
    }
    if f.get("attn_layer_idx").and_then(|v| v.as_array()).is_some_and(|a| !a.is_empty()) {
        return unsupported("`attn_layer_idx` (state-spaces attention hybrids)");
    }
    if f.usize_opt("d_intermediate")?.unwrap_or(0) != 0 {
        return unsupported("`d_intermediate` > 0 (MLP blocks)");
    }
    let empty = Map::new();
    let s = f.object_opt("ssm_cfg")?.unwrap_or_else(|| Fields::new(&empty, "ssm_cfg."));
    if s.str_opt("layer")? != Some("Mamba2") {
        return Err(s.invalid("layer", "must be \"Mamba2\" for a Mamba-2 model"));
    }
    if s.bool_opt("rmsnorm")? == Some(false) {
        return unsupported("`ssm_cfg.rmsnorm: false`");
    }
    if s.bool_opt("norm_before_gate")? == Some(true) {
        return unsupported("`ssm_cfg.norm_before_gate: true`");
    }
    if s.bool_opt("D_has_hdim")? == Some(true) {
        return unsupported("`ssm_cfg.D_has_hdim: true`");
    }
    // mamba2.py hard-codes the gated norm's epsilon; MixerModel's block norms default to 1e-5.
    let mixer = mixer_from_fields(&s, &STATE_SPACES_FIELDS, hidden_size, 1e-5)?;
    if s.usize_opt("d_ssm")?.is_some_and(|d| d != mixer.intermediate_size) {
        return unsupported("`ssm_cfg.d_ssm` below the inner size (a gated MLP beside the SSM)");
    }
    Ok(Mamba2Config {
        model_type: "mamba2".to_string(),
        layout: ConfigLayout::StateSpaces,
        num_layers,
        vocab_size,
        mixer,
        tie_embeddings: f.bool_opt("tie_embeddings")?.unwrap_or(true),
        norm_eps: f.f64_opt("norm_epsilon")?.unwrap_or(1e-5) as f32,
        // state-spaces checkpoints use the GPT-NeoX tokenizer: <|endoftext|> = 0 is BOS and EOS.
        bos_token_id: Some(f.token_id_opt("bos_token_id")?.unwrap_or(0)),
        eos_token_ids: f.token_ids_opt("eos_token_id")?.unwrap_or_else(|| vec![0]),
    })
}

/// Reads the mixer keys named by `names` from `f` (defaults: HF `Mamba2Config`'s, except `n_groups`
/// 1 as in mamba_ssm; `head_dim` 64; `num_heads` derived from `E / P` when absent).
pub(crate) fn mixer_from_fields(
    f: &Fields,
    names: &MixerFieldNames,
    hidden_size: usize,
    norm_eps: f32,
) -> Result<Mamba2MixerConfig> {
    let expand = f.f64_opt(names.expand)?.unwrap_or(2.0);
    if !expand.is_finite() || expand <= 0.0 {
        return Err(f.invalid(names.expand, "must be a number > 0"));
    }
    let intermediate_size = expand * hidden_size as f64;
    if intermediate_size >= usize::MAX as f64 {
        return Err(f.invalid(names.expand, "times the hidden size overflows"));
    }
    let intermediate_size = intermediate_size as usize;
    let head_dim = f.usize_opt(names.head_dim)?.unwrap_or(64);
    let num_heads = match f.usize_opt(names.heads)? {
        Some(h) => h,
        None => intermediate_size / head_dim.max(1),
    };
    let (dt_min, dt_max) = match f.f64_list_opt(names.dt_limit)? {
        None => (0.0, f64::INFINITY),
        Some(l) if l.len() == 2 => (l[0], l[1]),
        Some(l) => return Err(f.invalid(names.dt_limit, &format!("must hold 2 numbers, got {}", l.len()))),
    };
    Ok(Mamba2MixerConfig {
        hidden_size,
        intermediate_size,
        num_heads,
        head_dim,
        state_size: f.usize_opt(names.state)?.unwrap_or(128),
        n_groups: f.usize_opt(names.groups)?.unwrap_or(1),
        conv_kernel: f.usize_opt(names.conv)?.unwrap_or(4),
        chunk_size: f.usize_opt(names.chunk)?.unwrap_or(256),
        use_bias: f.bool_opt(names.bias)?.unwrap_or(false),
        use_conv_bias: f.bool_opt(names.conv_bias)?.unwrap_or(true),
        norm_eps,
        dt_min: dt_min as f32,
        dt_max: dt_max as f32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    const BASE: &str = r#""model_type":"mamba2","hidden_size":64,"num_hidden_layers":2,"vocab_size":512"#;

    fn parse(extra: &str) -> Result<Mamba2Config> {
        Mamba2Config::from_json_str(&format!("{{{BASE}{extra}}}"), 512)
    }

    #[test]
    fn reads_sizes_limits_and_both_infinity_spellings() {
        let c = parse(r#","num_heads":8,"head_dim":16,"state_size":16,"n_groups":2,"time_step_limit":[0.0,{"__float__":"Infinity"}]"#)
            .unwrap();
        let m = &c.mixer;
        assert_eq!((m.intermediate_size, m.conv_dim(), m.in_proj_dim()), (128, 128 + 64, 128 + 192 + 8));
        assert_eq!((m.dt_min, m.dt_max), (0.0, f32::INFINITY));
        let c = parse(r#","num_heads":8,"head_dim":16,"time_step_limit":[0.001, Infinity]"#).unwrap();
        assert_eq!((c.mixer.dt_min, c.mixer.dt_max), (0.001, f32::INFINITY));
        let c = parse(r#","num_heads":8,"head_dim":16,"time_step_limit":[0.01, 0.5]"#).unwrap();
        assert_eq!((c.mixer.dt_min, c.mixer.dt_max), (0.01, 0.5));
    }

    #[test]
    fn inconsistent_heads_and_groups_name_the_fields() {
        let e = parse(r#","num_heads":6,"head_dim":16"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadConfig);
        assert!(e.message.contains("`num_heads`") && e.message.contains("`head_dim`"), "{}", e.message);
        let e = parse(r#","num_heads":8,"head_dim":16,"n_groups":3"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadConfig);
        assert!(e.message.contains("`n_groups`"), "{}", e.message);
        let e = parse(r#","num_heads":8,"head_dim":16,"state_size":0"#).unwrap_err();
        assert!(e.message.contains("`state_size`"), "{}", e.message);
        let e = parse(r#","num_heads":8,"head_dim":16,"time_step_limit":[0.5, 0.1]"#).unwrap_err();
        assert!(e.message.contains("`time_step_limit`"), "{}", e.message);
        let e = parse(r#","num_heads":8,"head_dim":16,"time_step_limit":[0.5]"#).unwrap_err();
        assert!(e.message.contains("`time_step_limit`"), "{}", e.message);
    }

    #[test]
    fn state_spaces_layout_reads_ssm_cfg_and_refuses_what_it_cannot_run() {
        let ss = |ssm: &str, top: &str| {
            Mamba2Config::from_json_str(
                &format!(
                    r#"{{"d_model":768,"n_layer":24,"vocab_size":50277,"pad_vocab_size_multiple":16,"ssm_cfg":{{"layer":"Mamba2"{ssm}}}{top}}}"#
                ),
                512,
            )
        };
        // state-spaces/mamba2-130m: module defaults N 128, P 64, G 1, chunk 256; V 50277 → 50288.
        let c = ss("", "").unwrap();
        assert_eq!((c.layout, c.vocab_size, c.num_layers), (ConfigLayout::StateSpaces, 50288, 24));
        let m = &c.mixer;
        assert_eq!((m.intermediate_size, m.num_heads, m.head_dim, m.state_size, m.n_groups), (1536, 24, 64, 128, 1));
        assert_eq!((m.in_proj_dim(), m.conv_dim(), m.chunk_size), (3352, 1792, 256));
        assert!(c.tie_embeddings);
        assert_eq!((c.bos_token_id, c.eos_token_ids.clone()), (Some(0), vec![0]));
        let e = ss(r#","headdim":100"#, "").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadConfig);
        assert!(e.message.contains("`ssm_cfg.headdim`"), "{}", e.message);
        for (ssm, top, needle) in [
            (r#","norm_before_gate":true"#, "", "norm_before_gate"),
            (r#","D_has_hdim":true"#, "", "D_has_hdim"),
            (r#","d_ssm":1024"#, "", "d_ssm"),
            ("", r#","attn_layer_idx":[3]"#, "attn_layer_idx"),
            ("", r#","d_intermediate":512"#, "d_intermediate"),
        ] {
            let e = ss(ssm, top).unwrap_err();
            assert_eq!(e.code, ErrorCode::UnsupportedModel, "{needle}");
            assert!(e.message.contains(needle), "{}", e.message);
        }
    }

    #[test]
    fn overflowing_products_are_bad_config() {
        let huge = 1usize << 60;
        let e = Mamba2Config::from_json_str(
            &format!(
                r#"{{"model_type":"mamba2","hidden_size":1,"num_hidden_layers":1,"vocab_size":8,"expand":{huge},"num_heads":{huge},"head_dim":1,"state_size":{huge}}}"#
            ),
            512,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadConfig);
        assert!(e.message.contains("overflow"), "{}", e.message);
    }
}
