//! Llama-style decoder (Llama, SmolLM / SmolLM2, TinyLlama, Qwen2): RMSNorm, RoPE (default, linear,
//! dynamic, llama3, yarn), grouped-query attention with a per-sequence KV cache, SwiGLU MLP, tied or
//! untied head; on candle tensors and the fused ops of `crate::nn`.
//!
//! forward(ids): tokens go through the stack in chunks of [`PREFILL_CHUNK`]; a one-token call is a
//! decode step (mat-vecs and the flash-decoding attention). Residual stream and softmax in f32; the
//! cache in f32, or f16 when the load options ask (`LoadOptions::kv_cache`).

pub mod config;
pub mod state;
pub(crate) mod weights;

pub use config::LlamaConfig;
pub use state::{KvShape, LlamaState};

use candle_core::{Device, Tensor};

use super::registry::{self, EngineKind, Family};
use crate::config::ConfigLayout;
use crate::error::{bad_config, Result};
use crate::loader::{format_name, ModelFiles, TensorStore};
use crate::model::{LanguageModel, LoadOptions, LogitsWanted, ModelInfo, ModelState};
use crate::models::forward::{check_context, check_ids, head_logits, in_pieces, own_state};
use crate::models::interrupt;
use crate::nn::kv_cache::KvDtype;
use weights::Weights;

/// Llama and Qwen2 checkpoints (Hugging Face layout).
pub const FAMILY: Family = Family {
    name: "llama",
    model_types: &["llama", "qwen2"],
    engine: EngineKind::Transformer,
    load: |files, config, options| Ok(Box::new(LlamaModel::load_with_config(files, config, options)?)),
    check_config: |config| LlamaConfig::from_json_str(config)?.check_sizes(PREFILL_CHUNK),
};

/// Tokens per pass through the stack: big enough for efficient GEMMs, small enough that a chunk's
/// activations stay a few MB. Feeding a prompt in pieces of this size is bit-identical to one call
/// (the forward chunks the same way, and the attention kernel's per-row result does not depend on
/// the other rows of its call).
pub const PREFILL_CHUNK: usize = 512;

pub struct LlamaModel {
    cfg: LlamaConfig,
    info: ModelInfo,
    w: Weights,
    /// What the KV caches hold (`LoadOptions::kv_cache`).
    kv_dtype: KvDtype,
    device: Device,
}

impl LlamaModel {
    pub fn load_with_config(files: &ModelFiles, config: &str, options: &LoadOptions) -> Result<Self> {
        let cfg = LlamaConfig::from_json_str(config).map_err(|e| registry::name_config_file(e, files))?;
        let store = TensorStore::open(files)?;
        Self::from_store(cfg, &store, options)
    }

    pub fn from_store(mut cfg: LlamaConfig, store: &TensorStore, options: &LoadOptions) -> Result<Self> {
        // GGUF Llama weights hold Q/K rows in the interleaved order (not unpermuted: no copy).
        cfg.rope.interleaved |= store.rope_interleaved;
        cfg.check_sizes(PREFILL_CHUNK)?;
        if cfg.eos_token_ids.iter().chain(cfg.bos_token_id.iter()).any(|&id| id as usize >= cfg.vocab_size) {
            return Err(bad_config(format!(
                "config.json: bos/eos token ids {:?}/{:?} exceed the vocabulary ({})",
                cfg.bos_token_id, cfg.eos_token_ids, cfg.vocab_size
            )));
        }
        let device = Device::Cpu;
        let w = weights::load(&cfg, store, &device)?;
        let kv_dtype = options.kv_cache;
        let architecture = [
            ("numHeads", serde_json::Value::from(cfg.num_heads)),
            ("numKvHeads", cfg.num_kv_heads.into()),
            ("headDim", cfg.head_dim.into()),
            ("intermediateSize", cfg.intermediate_size.into()),
            ("ropeTheta", cfg.rope.theta.into()),
            ("ropeScaling", cfg.rope.scaling.kind().into()),
            ("qkvBias", cfg.qkv_bias.into()),
            ("tiedEmbeddings", cfg.tie_word_embeddings.into()),
            ("kvCacheDtype", kv_dtype.as_str().into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let info = ModelInfo {
            model_type: cfg.model_type.clone(),
            family: FAMILY.name.to_string(),
            engine: FAMILY.engine,
            format: format_name(ConfigLayout::HuggingFace, store.format).to_string(),
            dtype: w.dtype.to_string(),
            vocab_size: cfg.vocab_size,
            hidden_size: cfg.hidden_size,
            num_layers: cfg.num_layers,
            param_count: w.param_count,
            weight_bytes: w.weight_bytes,
            state_bytes: 0,
            state_bytes_per_token: cfg.state_bytes_per_token(kv_dtype),
            context_length: Some(cfg.max_position_embeddings),
            bos_token_id: cfg.bos_token_id,
            eos_token_ids: cfg.eos_token_ids.clone(),
            architecture,
        };
        Ok(Self { cfg, info, w, kv_dtype, device })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    fn kv_shape(&self) -> KvShape {
        KvShape {
            layers: self.cfg.num_layers,
            kv_heads: self.cfg.num_kv_heads,
            head_dim: self.cfg.head_dim,
            max_tokens: self.cfg.max_position_embeddings,
            dtype: self.kv_dtype,
        }
    }

    /// Runs `ids` (positions after those `st` holds) through every layer, then appends the logits
    /// `head` asks for.
    fn run_chunk(
        &self,
        ids: &[u32],
        st: &mut LlamaState,
        head: Option<LogitsWanted>,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        // Dynamic NTK scales from the sequence end of this pass, as transformers does per forward.
        let rope = self.cfg.rope.tables(st.tokens(), ids.len())?;
        let mut x: Tensor = self.w.embedding.forward(ids, &self.device)?;
        for (layer, cache) in self.w.layers.iter().zip(st.caches.iter_mut()) {
            interrupt::check()?;
            x = layer.attention.forward_add(&layer.input_norm.forward(&x)?, Some(&rope), cache, x)?;
            x = layer.mlp.forward_add(&layer.post_norm.forward(&x)?, x)?;
        }
        let rows = match head {
            None => return Ok(()),
            Some(LogitsWanted::All) => x,
            Some(LogitsWanted::Last) => x.narrow(0, ids.len() - 1, 1)?,
        };
        head_logits(&self.w.lm_head, &self.w.norm.forward(&rows)?, None, logits)
    }
}

impl LanguageModel for LlamaModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn new_state(&self) -> Result<Box<dyn ModelState>> {
        Ok(Box::new(LlamaState::new(self.kv_shape())))
    }

    fn prefill_chunk(&self) -> usize {
        PREFILL_CHUNK
    }

    fn weights_identity(&self) -> u64 {
        self.w.identity
    }

    fn forward(&self, ids: &[u32], state: &mut dyn ModelState, which: LogitsWanted) -> Result<Vec<f32>> {
        check_ids(ids, self.cfg.vocab_size)?;
        let st = own_state(state, "Llama-style", |s: &LlamaState| s.shape(), self.kv_shape())?;
        check_context(st.tokens() as u64, ids.len(), self.cfg.max_position_embeddings)?;
        let before = st.tokens();
        in_pieces(ids, PREFILL_CHUNK, which, self.cfg.vocab_size, |piece, head, logits| {
            self.run_chunk(piece, st, head, logits)
        })
        .inspect_err(|_| {
            // Leave the state as it was: a failure part-way must not leave layers out of step.
            st.caches.iter_mut().for_each(|c| c.truncate(before));
        })
    }
}
