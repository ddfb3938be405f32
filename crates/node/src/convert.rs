//! JS object shapes of `ts/binding/types.ts` and their field-by-field conversions to and from core
//! types. Sizes are `f64` (JS numbers): weight byte counts of larger models exceed u32.

use napi::bindgen_prelude::{Either, Float32Array, Null};
use napi_derive::napi;
use phoenix_core::generate::{self, Step};
use phoenix_core::session::{self, GenerationStats, LoadedModelInfo, Score, ScoreOptions};

#[napi(object)]
pub struct RawModelInfo {
    pub model_type: String,
    pub family: String,
    pub engine: String,
    pub format: String,
    pub dtype: String,
    pub vocab_size: f64,
    pub hidden_size: f64,
    pub num_layers: f64,
    pub param_count: f64,
    pub weight_bytes: f64,
    pub state_bytes: f64,
    pub state_bytes_per_token: f64,
    /// `null` (not `undefined`) when absent, as the WASM binding's JSON-compatible serialiser gives.
    pub context_length: Either<f64, Null>,
    pub bos_token_id: Either<u32, Null>,
    pub eos_token_ids: Vec<u32>,
    /// Family-specific sizes, as the core names them.
    pub architecture: serde_json::Value,
    pub has_tokenizer: bool,
    pub has_chat_template: bool,
    pub snapshot_header_bytes: f64,
}

impl From<LoadedModelInfo> for RawModelInfo {
    fn from(i: LoadedModelInfo) -> Self {
        let m = i.model;
        Self {
            model_type: m.model_type,
            family: m.family,
            engine: m.engine.as_str().to_string(),
            format: m.format,
            dtype: m.dtype,
            vocab_size: m.vocab_size as f64,
            hidden_size: m.hidden_size as f64,
            num_layers: m.num_layers as f64,
            param_count: m.param_count as f64,
            weight_bytes: m.weight_bytes as f64,
            state_bytes: m.state_bytes as f64,
            state_bytes_per_token: m.state_bytes_per_token as f64,
            context_length: or_null(m.context_length.map(|n| n as f64)),
            bos_token_id: or_null(m.bos_token_id),
            eos_token_ids: m.eos_token_ids,
            architecture: serde_json::Value::Object(m.architecture.into_iter().collect()),
            has_tokenizer: i.has_tokenizer,
            has_chat_template: i.has_chat_template,
            snapshot_header_bytes: i.snapshot_header_bytes as f64,
        }
    }
}

fn or_null<T>(value: Option<T>) -> Either<T, Null> {
    value.map_or(Either::B(Null), Either::A)
}

/// `describeModel(dir)`: what the core would load from a folder, without loading weights.
#[napi(object)]
pub struct RawModelLayout {
    pub model_type: String,
    pub family: String,
    pub engine: String,
    pub format: String,
    pub weight_files: Vec<String>,
    pub side_files: Vec<String>,
    pub has_tokenizer: bool,
    pub gguf: Option<RawGgufSummary>,
}

/// A GGUF file's header facts (`describeModel` of a `.gguf`).
#[napi(object)]
pub struct RawGgufSummary {
    pub architecture: String,
    pub name: Option<String>,
    pub quantization: String,
    pub tensor_types: std::collections::HashMap<String, u32>,
    pub param_count: f64,
    pub weight_bytes: f64,
    pub vocab_size: f64,
    pub hidden_size: f64,
    pub num_layers: f64,
    pub context_length: Option<f64>,
    pub file_bytes: f64,
}

impl From<phoenix_core::describe::GgufSummary> for RawGgufSummary {
    fn from(s: phoenix_core::describe::GgufSummary) -> Self {
        Self {
            architecture: s.architecture,
            name: s.name,
            quantization: s.quantization,
            tensor_types: s.tensor_types.into_iter().map(|(k, v)| (k, v as u32)).collect(),
            param_count: s.param_count as f64,
            weight_bytes: s.weight_bytes as f64,
            vocab_size: s.vocab_size as f64,
            hidden_size: s.hidden_size as f64,
            num_layers: s.num_layers as f64,
            context_length: s.context_length.map(|c| c as f64),
            file_bytes: s.file_bytes as f64,
        }
    }
}

impl From<phoenix_core::describe::ModelLayout> for RawModelLayout {
    fn from(l: phoenix_core::describe::ModelLayout) -> Self {
        Self {
            model_type: l.model_type,
            family: l.family,
            engine: l.engine.as_str().to_string(),
            format: l.format,
            weight_files: l.weight_files,
            side_files: l.side_files,
            has_tokenizer: l.has_tokenizer,
            gguf: l.gguf.map(Into::into),
        }
    }
}

/// `supportedFamilies()`: the core's family registry.
#[napi(object)]
pub struct RawFamily {
    pub name: String,
    pub model_types: Vec<String>,
    pub engine: String,
}

/// Load options; the core validates them (`LoadOptions::from_names`).
#[napi(object)]
pub struct RawLoadOptions {
    pub kv_cache: Option<String>,
    pub use_mmap: Option<bool>,
}

impl RawLoadOptions {
    pub fn to_core(options: Option<&Self>) -> phoenix_core::Result<phoenix_core::LoadOptions> {
        phoenix_core::LoadOptions::from_names(
            options.and_then(|o| o.kv_cache.as_deref()),
            options.and_then(|o| o.use_mmap),
        )
    }
}

/// Sampling and stopping options; the core validates and defaults them.
#[napi(object)]
pub struct RawGenerateOptions {
    pub max_tokens: Option<f64>,
    pub temperature: Option<f64>,
    pub top_k: Option<f64>,
    pub top_p: Option<f64>,
    pub min_p: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub repeat_last_n: Option<f64>,
    pub seed: Option<f64>,
    pub stop_token_ids: Option<Vec<f64>>,
    pub stop_strings: Option<Vec<String>>,
    pub add_special_tokens: Option<bool>,
    pub fit_to_context: Option<bool>,
    pub int8_prompt: Option<bool>,
}

impl From<RawGenerateOptions> for generate::RawGenerateOptions {
    fn from(o: RawGenerateOptions) -> Self {
        Self {
            max_tokens: o.max_tokens,
            temperature: o.temperature,
            top_k: o.top_k,
            top_p: o.top_p,
            min_p: o.min_p,
            repeat_penalty: o.repeat_penalty,
            repeat_last_n: o.repeat_last_n,
            seed: o.seed,
            stop_token_ids: o.stop_token_ids,
            stop_strings: o.stop_strings,
            add_special_tokens: o.add_special_tokens,
            fit_to_context: o.fit_to_context,
            int8_prompt: o.int8_prompt,
        }
    }
}

/// The prompt: text or token ids (neither = empty, only valid with a state).
#[napi(object)]
pub struct RawPrompt {
    pub text: Option<String>,
    pub ids: Option<Vec<f64>>,
}

#[napi(object)]
pub struct RawStep {
    pub token_id: Option<u32>,
    pub text: String,
    #[napi(ts_type = "'stop' | 'length' | 'abort' | null")]
    pub finish_reason: Option<String>,
}

impl From<Step> for RawStep {
    fn from(s: Step) -> Self {
        Self { token_id: s.token_id, text: s.text, finish_reason: s.finish_reason.map(|r| r.as_str().to_string()) }
    }
}

#[napi(object)]
pub struct RawGenerationStats {
    pub prompt_tokens: f64,
    pub restored_tokens: f64,
    pub generated_tokens: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

impl From<GenerationStats> for RawGenerationStats {
    fn from(s: GenerationStats) -> Self {
        Self {
            prompt_tokens: s.prompt_tokens as f64,
            restored_tokens: s.restored_tokens as f64,
            generated_tokens: s.generated_tokens as f64,
            prefill_ms: s.prefill_ms,
            decode_ms: s.decode_ms,
        }
    }
}

#[napi(object)]
pub struct BuildInfo {
    pub version: String,
    pub simd: String,
    pub threads: u32,
}

impl From<session::BuildInfo> for BuildInfo {
    fn from(b: session::BuildInfo) -> Self {
        Self { version: b.version, simd: b.simd, threads: b.threads as u32 }
    }
}

/// `score()` options.
#[napi(object)]
pub struct RawScoreOptions {
    pub include_logits: Option<bool>,
}

impl From<RawScoreOptions> for ScoreOptions {
    fn from(o: RawScoreOptions) -> Self {
        Self { include_logits: o.include_logits.unwrap_or(false) }
    }
}

/// `score()` result; `logits` (flat, row-major) only when asked for.
#[napi(object)]
pub struct RawScore {
    pub token_count: f64,
    pub token_logprobs: Vec<f64>,
    pub log_likelihood: f64,
    /// `null` for a single id (as the WASM binding gives it; an `Option` would be `undefined`).
    #[napi(ts_type = "number | null")]
    pub perplexity: Either<f64, Null>,
    pub next_argmax: Vec<u32>,
    pub logits: Option<Float32Array>,
}

impl From<Score> for RawScore {
    fn from(s: Score) -> Self {
        Self {
            token_count: s.token_count as f64,
            token_logprobs: s.token_logprobs,
            log_likelihood: s.log_likelihood,
            perplexity: or_null(s.perplexity),
            next_argmax: s.next_argmax,
            logits: s.logits.map(Float32Array::new),
        }
    }
}

/// One turn of a conversation (`RawChatMessage` of types.ts).
#[napi(object)]
pub struct RawChatMessage {
    pub role: String,
    pub content: String,
}

impl From<RawChatMessage> for phoenix_core::chat::ChatMessage {
    fn from(m: RawChatMessage) -> Self {
        Self { role: m.role, content: m.content }
    }
}

/// A rendered conversation (`RawChatPrompt` of types.ts).
#[napi(object)]
pub struct RawChatPrompt {
    pub text: String,
    pub stop_token_ids: Vec<u32>,
}

impl From<phoenix_core::chat::ChatPrompt> for RawChatPrompt {
    fn from(p: phoenix_core::chat::ChatPrompt) -> Self {
        Self { text: p.text, stop_token_ids: p.stop_token_ids }
    }
}
