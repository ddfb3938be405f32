//! The one list of model families. A family is one module under `models/` plus one line in
//! [`FAMILIES`]: everything above (loading, `describe`, the bindings, the TypeScript engines) asks this
//! list instead of keeping its own.

use serde_json::{Map, Value};

use crate::config::{ConfigLayout, CONFIG_FILE};
use crate::error::{bad_config, model_not_found, unsupported_model, PhoenixError, Result};
use crate::loader::shown::{json_kind, shown_name};
use crate::loader::{GgufFile, ModelFiles};
use crate::model::{LanguageModel, LoadOptions};
use crate::models::gguf_config::{hf_config, name_gguf_config};

/// Which kind of engine runs a family: decides how its state grows (fixed for SSMs, per token for
/// attention) and which TypeScript engine takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Recurrent state-space model: fixed-size state whatever the context length.
    Ssm,
    /// Attention decoder: a KV cache that grows with the context.
    Transformer,
    /// Both kinds of layer in one stack.
    Hybrid,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Ssm => "ssm",
            EngineKind::Transformer => "transformer",
            EngineKind::Hybrid => "hybrid",
        }
    }
}

/// What `config.json` says before any family parses it: the `model_type` and the dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigHead {
    /// `model_type`, or `mamba` for an original state-spaces config (no `model_type`, has `d_model`).
    pub model_type: String,
    pub layout: ConfigLayout,
}

/// A model family and how to load it.
pub struct Family {
    /// Stable family id (`mamba`).
    pub name: &'static str,
    /// `model_type`s of `config.json` this family loads.
    pub model_types: &'static [&'static str],
    pub engine: EngineKind,
    /// Builds the model from its files; `config` is the text of `config.json`.
    pub(crate) load: fn(files: &ModelFiles, config: &str, options: &LoadOptions) -> Result<Box<dyn LanguageModel>>,
    /// Parses and checks `config.json` as `load` does before reading any weight, so that `describe`
    /// (listing, `info --no-load`) reports a config a load would refuse instead of "available".
    pub(crate) check_config: fn(config: &str) -> Result<()>,
}

/// Every family this build runs. Add a family here and nowhere else.
pub static FAMILIES: &[Family] =
    &[super::mamba::FAMILY, super::mamba2::FAMILY, super::llama::FAMILY, super::granite::FAMILY];

/// The family that loads `model_type`; `E_UNSUPPORTED_MODEL` naming the supported ones otherwise.
pub fn family_for(model_type: &str) -> Result<&'static Family> {
    FAMILIES.iter().find(|f| f.model_types.contains(&model_type)).ok_or_else(|| {
        let supported: Vec<&str> = FAMILIES.iter().flat_map(|f| f.model_types.iter().copied()).collect();
        unsupported_model(format!(
            "{CONFIG_FILE}: model_type `{}` is not supported (supported: {}, state-spaces Mamba-1)",
            shown_name(model_type),
            supported.join(", ")
        ))
    })
}

/// Reads `config.json` from `files`: its text and what it says about the family.
pub fn read_config(files: &ModelFiles) -> Result<(String, ConfigHead)> {
    if !files.has(CONFIG_FILE) {
        return Err(model_not_found(format!("{} not found", files.describe(CONFIG_FILE))));
    }
    let text = files.text(CONFIG_FILE)?;
    let head = config_head(&text).map_err(|e| name_config_file(e, files))?;
    Ok((text, head))
}

/// Replaces the bare file name a config message starts with by the file's full name.
pub(crate) fn name_config_file(e: PhoenixError, files: &ModelFiles) -> PhoenixError {
    PhoenixError::new(e.code, e.message.replacen(CONFIG_FILE, &files.describe(CONFIG_FILE), 1))
}

/// The `model_type` and dialect of a `config.json` text.
pub fn config_head(text: &str) -> Result<ConfigHead> {
    let value: Value = crate::config::json::parse_config(text)?;
    let obj: &Map<String, Value> =
        value.as_object().ok_or_else(|| bad_config(format!("{CONFIG_FILE}: top level must be a JSON object")))?;
    match obj.get("model_type") {
        Some(Value::String(t)) => Ok(ConfigHead { model_type: t.clone(), layout: ConfigLayout::HuggingFace }),
        Some(other) => {
            Err(bad_config(format!("{CONFIG_FILE}: field `model_type` must be a string, got {}", json_kind(other))))
        }
        None if obj.contains_key("d_model") => {
            // state-spaces configs name the mixer in `ssm_cfg.layer` ("Mamba1" when absent).
            let layer = obj.get("ssm_cfg").and_then(|c| c.get("layer")).and_then(Value::as_str);
            let model_type = if layer == Some("Mamba2") { "mamba2" } else { "mamba" };
            Ok(ConfigHead { model_type: model_type.to_string(), layout: ConfigLayout::StateSpaces })
        }
        None => Err(unsupported_model(format!(
            "{CONFIG_FILE}: no `model_type` and no `d_model`: not a Hugging Face or state-spaces config"
        ))),
    }
}

/// Loads the model in `files` with the family its `config.json` (or GGUF architecture) names.
pub fn load(files: &ModelFiles, options: &LoadOptions) -> Result<Box<dyn LanguageModel>> {
    if files.gguf_file()?.is_some() {
        return load_gguf(files, options);
    }
    let (text, head) = read_config(files)?;
    let family = family_for(&head.model_type).map_err(|e| name_config_file(e, files))?;
    (family.load)(files, &text, options)
}

/// Loads a GGUF model: its metadata become the family's config, its tensors the family's weights.
fn load_gguf(files: &ModelFiles, options: &LoadOptions) -> Result<Box<dyn LanguageModel>> {
    let gguf = GgufFile::open_model(files)?;
    let (config, model_type) = hf_config(&gguf)?;
    let family = family_for(&model_type)?;
    (family.load)(files, &config, options).map_err(|e| name_gguf_config(e, files, &gguf))
}
