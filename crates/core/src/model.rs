//! The contract between model families and everything above them (generation, sessions, bindings).
//!
//! A model consumes tokens into a state it owns the layout of, and returns next-token logits.
//! Sessions never look inside a state: they only create, advance, serialise and restore it.

use std::any::Any;
use std::collections::BTreeMap;

use crate::error::{invalid_option, Result};
use crate::models::EngineKind;
use crate::nn::kv_cache::KvDtype;

/// Facts every layer above needs (sizes, special ids, memory), the same fields for every family;
/// numbers only one family has are in `architecture`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    /// `model_type` as written in `config.json` (`mamba`, `falcon_mamba`, …).
    pub model_type: String,
    /// The family that loaded it ([`crate::models::FAMILIES`]).
    pub family: String,
    /// `ssm`, `transformer` or `hybrid`.
    pub engine: EngineKind,
    /// `hf-safetensors`, `hf-safetensors-sharded`, `state-spaces-pth`, …
    pub format: String,
    /// Dtype of the large weight matrices as held in memory (`f32`, `f16`, `bf16`; `mixed` when they differ).
    pub dtype: String,
    /// Rows of the embedding / LM head (padded vocabulary).
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub param_count: usize,
    /// Bytes the weights occupy in memory as held (mapped or owned).
    pub weight_bytes: usize,
    /// Bytes of one sequence's state with an empty context (for SSMs the whole state, whatever the
    /// context length).
    pub state_bytes: usize,
    /// Bytes the state grows by per token of context (0 for SSMs; the KV cache for attention).
    pub state_bytes_per_token: usize,
    /// Most tokens of context the model supports; `None` when it has no limit (SSMs).
    pub context_length: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// Family-specific sizes (camelCase names, e.g. Mamba's `stateSize`, `convKernel`).
    pub architecture: BTreeMap<String, serde_json::Value>,
}

/// Choices made when a model is loaded (`LoadedModel::load_with`); the default is what a bare
/// load does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// What attention layers' KV caches hold (f32 by default; f16 halves the cache and the bytes a
    /// decode step reads through attention, as llama.cpp's default cache). SSM-only families have
    /// no cache and ignore it.
    pub kv_cache: KvDtype,
    /// Map a folder's weight files (default, as llama.cpp and candle do: no copy, pages shared with
    /// the page cache), or read them into memory (`false`, llama.cpp's `--no-mmap`): then a file
    /// truncated or rewritten in place under a loaded model cannot fault the process (`SIGBUS`).
    /// Files handed over in memory (WASM) are in memory either way.
    pub use_mmap: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { kv_cache: KvDtype::default(), use_mmap: true }
    }
}

impl LoadOptions {
    /// From the bindings' option object: `kvCache` is `"f32"`, `"f16"` or absent (f32); `useMmap`
    /// absent is `true`.
    pub fn from_names(kv_cache: Option<&str>, use_mmap: Option<bool>) -> Result<Self> {
        let kv_cache = match kv_cache {
            None | Some("f32") => KvDtype::F32,
            Some("f16") => KvDtype::F16,
            Some(other) => {
                return Err(invalid_option(format!(
                    "loadModel: option `kvCache` must be \"f32\" or \"f16\", got {:?}",
                    crate::loader::shown::shown_name(other)
                )))
            }
        };
        Ok(Self { kv_cache, use_mmap: use_mmap.unwrap_or(true) })
    }
}

/// Which logits a forward call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsWanted {
    /// One row per input token: `ids.len() * vocab_size` values, row-major.
    All,
    /// Only the row after the last input token: `vocab_size` values.
    Last,
}

/// A causal language model that advances an explicit per-sequence state.
pub trait LanguageModel: Send + Sync {
    fn info(&self) -> &ModelInfo;

    /// A fresh state (empty context).
    fn new_state(&self) -> Result<Box<dyn ModelState>>;

    /// Byte length of a serialised state of `layout` if this model can continue it: same family,
    /// dtype and dims as its own states (`E_STATE_MISMATCH` naming the difference otherwise).
    fn state_bytes_for(&self, layout: &StateLayout) -> Result<usize> {
        let own = self.new_state()?.layout();
        if (&own.family, &own.dtype, &own.dims) != (&layout.family, &layout.dtype, &layout.dims) {
            return Err(crate::error::state_mismatch(format!(
                "the state is a {} {} state with dims {:?}; this model's states are {} {} with dims {:?}",
                layout.family, layout.dtype, layout.dims, own.family, own.dtype, own.dims
            )));
        }
        let info = self.info();
        let grown = usize::try_from(layout.tokens).ok().and_then(|t| t.checked_mul(info.state_bytes_per_token));
        grown.and_then(|g| g.checked_add(info.state_bytes)).ok_or_else(|| {
            crate::error::state_mismatch(format!("the state's token count {} is too large", layout.tokens))
        })
    }

    /// Consumes `ids` after whatever `state` already holds and returns logits as `which` asks.
    /// `ids` may be any length ≥ 1; a long call is a prefill, a one-token call a decode step.
    fn forward(&self, ids: &[u32], state: &mut dyn ModelState, which: LogitsWanted) -> Result<Vec<f32>>;

    /// Tokens a forward call processes in one piece. Feeding a prompt in calls of this many tokens
    /// gives bit-identical results to one call, so a generation can check for cancellation between
    /// them. Default: no internal pieces.
    /// Identity of the weight values ([`crate::weights_identity`]): differs between models of the
    /// same shape with other weights; snapshots are only continued by a model with the same one.
    fn weights_identity(&self) -> u64;

    fn prefill_chunk(&self) -> usize {
        usize::MAX
    }
}

/// What a state holds, as snapshots record it: restoring needs the same family, dtype and dims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateLayout {
    /// The family that made it (`mamba`).
    pub family: String,
    /// Element type of the serialised values (`f32`).
    pub dtype: String,
    /// Family-defined sizes that fix the layout (Mamba: layers, channels, conv taps, state size; a
    /// KV cache: layers, heads, head size — never the token count).
    pub dims: Vec<usize>,
    /// Tokens of context the state has consumed.
    pub tokens: u64,
}

/// One sequence's state (conv + SSM state for Mamba; a KV cache for attention).
pub trait ModelState: Send {
    fn layout(&self) -> StateLayout;

    /// Raw little-endian contents: for SSMs the same length for every state of one model, for a KV
    /// cache a length that grows with `layout().tokens`.
    fn to_bytes(&self) -> Result<Vec<u8>>;

    /// Appends what `to_bytes` returns to `out` (a snapshot being written). States that grow with
    /// the context write straight into it, sparing a copy as large as the state.
    fn append_bytes(&self, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(&self.to_bytes()?);
        Ok(())
    }

    /// Restores contents written by `to_bytes` of a state with the same layout dims, holding
    /// `tokens` tokens. Wrong length gives `E_STATE_MISMATCH`.
    fn load_bytes(&mut self, bytes: &[u8], tokens: u64) -> Result<()>;

    fn clone_box(&self) -> Box<dyn ModelState>;

    /// Forgets every token from `tokens` on, when this kind of state can (a KV cache: its rows past
    /// it; not a recurrent state, which holds its tokens folded together). `false`: it cannot, and
    /// is unchanged. (A chat whose conversation parts from a state's tokens keeps their common start.)
    fn truncate(&mut self, tokens: usize) -> bool {
        let _ = tokens;
        false
    }

    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}
