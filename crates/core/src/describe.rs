//! What a model's files say about it without loading weights: family, engine kind, format, and the
//! files a load reads. The TypeScript model manager lists, hashes and checks exactly these files, so
//! the rules (family list, container detection order, format names, shard listing) live only here.

use std::collections::BTreeMap;
use std::path::Path;

use crate::chat::{CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE};
use crate::config::CONFIG_FILE;
use crate::error::Result;
use crate::loader::gguf_names::{check_names, GgufArch};
use crate::loader::{
    check_weight_headers, detect_container, format_name, weight_files, ModelFiles, SAFETENSORS_INDEX_FILE,
};
use crate::loader::{GgufFile, WeightFormat};
use crate::models::gguf_config::{hf_config, name_gguf_config};
use crate::models::registry::{family_for, name_config_file, read_config, EngineKind};
use crate::tokenizer::TOKENIZER_FILE;

/// The files [`describe`] needs; of every other file it only asks whether it exists (a folder on
/// disk also has its safetensors headers checked, from their mapped first pages). A reader without a
/// file system (WASM: JS reads a folder or fetches URLs) reads these and only looks for the rest, so
/// describing a model never transfers its weights.
pub const DESCRIBE_READS: [&str; 2] = [CONFIG_FILE, SAFETENSORS_INDEX_FILE];

/// Whether [`describe`] reads the bytes of `file` of a model whose GGUF file (if any) is `gguf`:
/// [`DESCRIBE_READS`], and a GGUF model's file (its header is the description; the tensor index is
/// checked against the file's length, so the whole file is needed).
pub fn describe_reads(file: &str, gguf: Option<&str>) -> bool {
    DESCRIBE_READS.contains(&file) || gguf == Some(file)
}

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
    /// What a GGUF file's header says (absent for Hugging Face folders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gguf: Option<GgufSummary>,
}

/// A GGUF model as its header describes it (no tensor data read).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GgufSummary {
    /// `general.architecture` (`llama`, `mamba2`, …).
    pub architecture: String,
    /// `general.name`, when given.
    pub name: Option<String>,
    /// The file's quantization as llama.cpp names it (`Q4_1`, `Q4_K_M`, `F16`), else the type most
    /// of the weight bytes are stored in.
    pub quantization: String,
    /// Tensors per stored type (`F32`, `Q8_0`, …).
    pub tensor_types: BTreeMap<String, usize>,
    pub param_count: usize,
    /// Bytes of tensor data.
    pub weight_bytes: usize,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    /// `{arch}.context_length`.
    pub context_length: Option<u64>,
    pub file_bytes: usize,
}

/// Describes the model in `dir` (reads `config.json` and, for shards, the index; no weights).
pub fn describe_dir(dir: &Path) -> Result<ModelLayout> {
    describe(&ModelFiles::from_dir(dir)?)
}

/// Describes the model in `files` (reads `config.json` and, for shards, the index; of a folder's
/// safetensors files the headers, checked against the files' lengths; no tensor data).
/// Errors are the ones a load of the same files would give first.
pub fn describe(files: &ModelFiles) -> Result<ModelLayout> {
    if let Some(file) = files.gguf_file()? {
        return describe_gguf(files, file);
    }
    let (config, head) = read_config(files)?;
    let family = family_for(&head.model_type).map_err(|e| name_config_file(e, files))?;
    (family.check_config)(&config).map_err(|e| name_config_file(e, files))?;
    let container = detect_container(files)?;
    let weight_files = weight_files(files, container)?;
    check_weight_headers(files, container, &weight_files)?;
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
        gguf: None,
    })
}

/// Describes a GGUF model from its header (metadata and tensor index; no tensor data read).
fn describe_gguf(files: &ModelFiles, file: String) -> Result<ModelLayout> {
    let gguf = GgufFile::open_model(files)?;
    let (config, model_type) = hf_config(&gguf)?;
    let family = family_for(&model_type)?;
    // The checks a load makes first (sizes from the metadata), so a bad header is listed as an error.
    (family.check_config)(&config).map_err(|e| name_gguf_config(e, files, &gguf))?;
    let kind = GgufArch::parse(gguf.architecture()?, &gguf.label)?;
    check_names(kind, gguf.tensors.keys(), &gguf.label)?;
    let has_tokenizer = files.has(TOKENIZER_FILE);
    let mut side_files = Vec::new();
    if has_tokenizer {
        side_files.push(TOKENIZER_FILE.to_string());
    }
    let size = |key: &str| -> usize {
        serde_json::from_str::<serde_json::Value>(&config).ok().and_then(|c| c.get(key)?.as_u64()).unwrap_or(0) as usize
    };
    let mut tensor_types = BTreeMap::new();
    let mut bytes_by_type: BTreeMap<&str, usize> = BTreeMap::new();
    for t in gguf.tensors.values() {
        *tensor_types.entry(t.dtype.name().to_uppercase()).or_insert(0) += 1;
        *bytes_by_type.entry(t.dtype.name()).or_insert(0) += t.byte_len();
    }
    let dominant = bytes_by_type.iter().max_by_key(|(_, b)| **b).map(|(n, _)| n.to_uppercase());
    let arch = gguf.architecture()?.to_string();
    let summary = GgufSummary {
        name: gguf.str_opt("general.name")?.map(str::to_string),
        quantization: gguf
            .u64_opt("general.file_type")?
            .and_then(file_type_name)
            .map(str::to_string)
            .or(dominant)
            .unwrap_or_else(|| "F32".to_string()),
        tensor_types,
        param_count: gguf.tensors.values().map(|t| t.shape.iter().product::<usize>()).sum(),
        weight_bytes: gguf.weight_bytes(),
        vocab_size: size("vocab_size"),
        hidden_size: size("hidden_size"),
        num_layers: size("num_hidden_layers"),
        context_length: gguf.u64_opt(&format!("{arch}.context_length"))?,
        file_bytes: files.bytes(&file)?.len(),
        architecture: arch,
    };
    Ok(ModelLayout {
        model_type,
        family: family.name.to_string(),
        engine: family.engine,
        format: format_name(crate::config::ConfigLayout::HuggingFace, WeightFormat::Gguf).to_string(),
        weight_files: vec![file],
        side_files,
        has_tokenizer: has_tokenizer || gguf.get("tokenizer.ggml.tokens").is_some(),
        gguf: Some(summary),
    })
}

/// llama.cpp's name of `general.file_type` (`LLAMA_FTYPE_*`).
fn file_type_name(id: u64) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => return None,
    })
}
