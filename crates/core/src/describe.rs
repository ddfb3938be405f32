//! What a model's files say about it without loading weights: family, engine kind, format, and the
//! files a load reads. The TypeScript model manager lists, hashes and checks exactly these files, so
//! the rules (family list, container detection order, format names, shard listing) live only here.

use std::path::Path;

use crate::chat::{CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE};
use crate::config::CONFIG_FILE;
use crate::error::Result;
use crate::loader::WeightFormat;
use crate::loader::{detect_container, format_name, weight_files, ModelFiles, SAFETENSORS_INDEX_FILE};
use crate::models::registry::{family_for, name_config_file, read_config, EngineKind};
use crate::tokenizer::TOKENIZER_FILE;

/// The files [`describe`] reads; of every other file it only asks whether it exists. A reader
/// without a file system (WASM: JS reads a folder or fetches URLs) reads these and only looks for
/// the rest, so describing a model never transfers its weights.
pub const DESCRIBE_READS: [&str; 2] = [CONFIG_FILE, SAFETENSORS_INDEX_FILE];

/// A model folder as the core would load it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelLayout {
    /// `model_type` of `config.json` (`mamba` for a state-spaces config).
    pub model_type: String,
    /// The family that loads it ([`crate::models::FAMILIES`]).
    pub family: String,
    pub engine: EngineKind,
    /// Config dialect + weight container, e.g. `hf-safetensors`.
    pub format: String,
    /// Files holding the weights, sorted (one, or the shards).
    pub weight_files: Vec<String>,
    /// The other files a load reads: `config.json`, `tokenizer.json`, `tokenizer_config.json` and
    /// `chat_template.jinja` when present, the shard index.
    pub side_files: Vec<String>,
    pub has_tokenizer: bool,
}

/// Describes the model in `dir` (reads `config.json` and, for shards, the index; no weights).
pub fn describe_dir(dir: &Path) -> Result<ModelLayout> {
    describe(&ModelFiles::from_dir(dir)?)
}

/// Describes the model in `files` (reads `config.json` and, for shards, the index; no weights).
/// Errors are the ones a load of the same files would give first.
pub fn describe(files: &ModelFiles) -> Result<ModelLayout> {
    let (_, head) = read_config(files)?;
    let family = family_for(&head.model_type).map_err(|e| name_config_file(e, files))?;
    let container = detect_container(files)?;
    let weight_files = weight_files(files, container)?;
    let has_tokenizer = files.has(TOKENIZER_FILE);
    let mut side_files = vec![CONFIG_FILE.to_string()];
    if has_tokenizer {
        side_files.push(TOKENIZER_FILE.to_string());
    }
    // The chat template's files: a load reads them when present.
    side_files
        .extend([TOKENIZER_CONFIG_FILE, CHAT_TEMPLATE_FILE].into_iter().filter(|f| files.has(f)).map(str::to_string));
    if container == WeightFormat::ShardedSafetensors {
        side_files.push(SAFETENSORS_INDEX_FILE.to_string());
    }
    Ok(ModelLayout {
        model_type: head.model_type,
        family: family.name.to_string(),
        engine: family.engine,
        format: format_name(head.layout, container).to_string(),
        weight_files,
        side_files,
        has_tokenizer,
    })
}
