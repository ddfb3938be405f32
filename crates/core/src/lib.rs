//! phoenix-core: everything numeric and every file format of phoenix-local. No binding types here;
//! `crates/node` and `crates/wasm` only convert values and call into this crate.

pub mod chat;
pub mod config;
pub mod describe;
pub mod error;
pub mod generate;
pub mod loader;
pub mod memory_budget;
pub mod model;
pub mod models;
pub mod nn;
pub mod ops;
pub mod session;
pub mod tokenizer;
pub mod weights_identity;

pub use error::{ErrorCode, PhoenixError, Result};
pub use model::{LanguageModel, LoadOptions, LogitsWanted, ModelInfo, ModelState};
