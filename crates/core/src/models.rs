//! Model families (one module each) and the entry points that load them from a folder or from
//! in-memory files. Which family loads a folder is decided by [`registry`].

pub(crate) mod forward;
pub mod gguf_config;
pub mod granite;
pub mod interrupt;
pub mod llama;
pub mod mamba;
pub mod mamba2;
pub(crate) mod reader;
pub mod registry;

use std::path::Path;

pub use mamba::{MambaModel, MambaState};
pub use registry::{EngineKind, Family, FAMILIES};

use crate::error::Result;
use crate::loader::ModelFiles;
use crate::model::{LanguageModel, LoadOptions};

/// Loads the model in `dir` (config.json + HF safetensors, sharded safetensors or a PyTorch
/// `pytorch_model.bin`; the format is detected from the files present).
pub fn load_model_dir(dir: &Path) -> Result<Box<dyn LanguageModel>> {
    load_model_files(&ModelFiles::from_dir(dir)?)
}

/// Loads a model from files already in memory, as `(file name, bytes)` pairs — the WASM entry point.
pub fn load_model_from_memory(files: Vec<(String, Vec<u8>)>) -> Result<Box<dyn LanguageModel>> {
    load_model_files(&ModelFiles::from_memory(files))
}

/// Loads a model from any file source, with the family its `config.json` names.
pub fn load_model_files(files: &ModelFiles) -> Result<Box<dyn LanguageModel>> {
    registry::load(files, &LoadOptions::default())
}

/// [`load_model_files`] with load options.
pub fn load_model_files_with(files: &ModelFiles, options: &LoadOptions) -> Result<Box<dyn LanguageModel>> {
    registry::load(files, options)
}
