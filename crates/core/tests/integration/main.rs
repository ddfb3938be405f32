//! The core's integration tests, as one binary: a test binary per file cost a release link
//! (thin LTO over candle, tokenizers, minijinja) each, most of CI's build time. `runtime.rs` stays
//! its own binary: it sizes rayon's global pool, which is per process.
//!
//! Run one file's tests with a path filter: `cargo test --release -p phoenix-core --test integration -- gguf_hostile::`.

mod common;
mod llama_support;
mod model_support;

mod attack_findings;
mod bad_models;
mod chat_memory;
mod chat_session;
mod chat_templates;
mod falcon_mamba;
mod generation;
mod gguf_attack;
mod gguf_hostile;
mod gguf_models;
mod gguf_tokenizer_bad_metadata;
mod gguf_tokenizer_llamacpp;
mod granite_reference;
mod half_weights;
mod hostile_session;
mod interrupted_forward;
mod kv_cache_dtype;
mod llama_bad_models;
mod llama_reference;
mod llama_session;
mod llama_speed;
mod mamba2_bad_input;
mod mamba2_reference;
mod mamba2_speed;
mod mamba_reference;
mod pth_hostile;
mod score;
mod session_models;
