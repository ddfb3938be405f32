//! Mamba-2 language model (`model_type: mamba2`), on candle tensors and the fused custom ops of
//! `crate::nn`: embedding → N × [RMSNorm → Mamba-2 mixer → + residual (f32)] → norm_f → head.
//!
//! forward(ids): tokens go through the stack in pieces of `PREFILL_CHUNK` (bounded memory for any
//! prompt length; a multiple of the SSD tile, so feeding a prompt in such pieces is bit-identical to
//! one call); a one-token call is the recurrent decode step.

pub mod config;
pub(crate) mod mixer;
pub(crate) mod state;

pub use config::{Mamba2Config, Mamba2MixerConfig};
pub use state::{Mamba2State, Mamba2StateShape};

use std::sync::Arc;

use candle_core::Device;

use crate::config::CONFIG_FILE;
use crate::error::{bad_config, bad_weights, Result};
use crate::loader::{format_name, ModelFiles, TensorStore};
use crate::model::{LanguageModel, LogitsWanted, ModelInfo, ModelState};
use crate::models::forward::{check_ids, head_logits, in_pieces, own_state};
use crate::models::interrupt;
use crate::models::mamba::weights::Reader;
use crate::nn::{Embedding, Linear, RmsNorm};
use mixer::Mamba2Mixer;
use state::Mamba2LayerState;

use super::registry::{self, EngineKind, Family};

/// Mamba-2, from Hugging Face or original state-spaces folders.
pub const FAMILY: Family = Family {
    name: "mamba2",
    model_types: &["mamba2"],
    engine: EngineKind::Ssm,
    load: |files, config, _| Ok(Box::new(Mamba2Model::load_with_config(files, config)?)),
    check_config: |config| Mamba2Config::from_json_str(config, PREFILL_CHUNK).map(drop),
};

/// Tokens per pass through the stack during prefill (a multiple of every SSD tile).
pub const PREFILL_CHUNK: usize = 512;
const _: () = assert!(PREFILL_CHUNK.is_multiple_of(mixer::MAX_SSD_CHUNK));

struct Block {
    norm: RmsNorm,
    mixer: Mamba2Mixer,
}

pub struct Mamba2Model {
    cfg: Mamba2Config,
    info: ModelInfo,
    embedding: Embedding,
    layers: Vec<Block>,
    norm_f: RmsNorm,
    lm_head: Linear,
    identity: u64,
    device: Device,
}

impl Mamba2Model {
    /// Loads the weights in `files` for the `config.json` text `config`.
    pub fn load_with_config(files: &ModelFiles, config: &str) -> Result<Self> {
        let cfg =
            Mamba2Config::from_json_str(config, PREFILL_CHUNK).map_err(|e| registry::name_config_file(e, files))?;
        let store = TensorStore::open(files)?;
        Self::from_store(cfg, &store)
    }

    /// Builds the model from a parsed config and an indexed tensor store. Every size in `cfg` is
    /// checked against a tensor present before anything sized by it is allocated.
    pub fn from_store(cfg: Mamba2Config, store: &TensorStore) -> Result<Self> {
        let device = Device::Cpu;
        let (d, v) = (cfg.mixer.hidden_size, cfg.vocab_size);
        let stored_layers = store.layer_count();
        if stored_layers != cfg.num_layers {
            return Err(bad_config(format!(
                "{CONFIG_FILE}: field `{}` = {}, but the weights hold {stored_layers} layers",
                cfg.layers_field(),
                cfg.num_layers
            )));
        }
        if cfg.eos_token_ids.iter().chain(cfg.bos_token_id.iter()).any(|&id| id as usize >= v) {
            return Err(bad_config(format!(
                "{CONFIG_FILE}: bos/eos token ids {:?}/{:?} exceed the vocabulary ({v})",
                cfg.bos_token_id, cfg.eos_token_ids
            )));
        }
        let mut rd = Reader::new(store, &device);
        let embedding: Arc<_> = rd.matrix("backbone.embeddings.weight", v, d)?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("backbone.layers.{i}.");
            let norm = RmsNorm::new(rd.tensor(&format!("{p}norm.weight"), &[d])?, cfg.norm_eps);
            let mixer = Mamba2Mixer::load(&mut rd, &cfg.mixer, &format!("{p}mixer."))?;
            layers.push(Block { norm, mixer });
        }
        let norm_f = RmsNorm::new(rd.tensor("backbone.norm_f.weight", &[d])?, cfg.norm_eps);
        // Tied ⇒ reuse the embedding. Untied ⇒ the head must be stored: silently tying would run a
        // different model than the one described.
        let lm_head = if cfg.tie_embeddings {
            embedding.clone()
        } else if store.contains("lm_head.weight") {
            rd.matrix("lm_head.weight", v, d)?
        } else {
            return Err(bad_weights(format!(
                "tensor `lm_head.weight` is missing from the weights, and {CONFIG_FILE} sets `{}: false` (the head is not the embedding)",
                cfg.tie_field()
            )));
        };
        let m = &cfg.mixer;
        let architecture = [
            ("numHeads", m.num_heads),
            ("headDim", m.head_dim),
            ("stateSize", m.state_size),
            ("nGroups", m.n_groups),
            ("convKernel", m.conv_kernel),
            ("chunkSize", m.chunk_size),
            ("intermediateSize", m.intermediate_size),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(v)))
        .collect();
        let info = ModelInfo {
            model_type: cfg.model_type.clone(),
            family: FAMILY.name.to_string(),
            engine: FAMILY.engine,
            format: format_name(cfg.layout, store.format).to_string(),
            dtype: rd.dtype.unwrap_or("f32").to_string(),
            vocab_size: v,
            hidden_size: d,
            num_layers: cfg.num_layers,
            param_count: rd.count,
            weight_bytes: rd.bytes,
            state_bytes: cfg.state_bytes(),
            state_bytes_per_token: 0,
            context_length: None,
            bos_token_id: cfg.bos_token_id,
            eos_token_ids: cfg.eos_token_ids.clone(),
            architecture,
        };
        let identity = rd.digest.finish();
        Ok(Self {
            cfg,
            info,
            embedding: Embedding::new(embedding),
            layers,
            norm_f,
            lm_head: Linear::head(lm_head, None),
            identity,
            device,
        })
    }

    pub fn config(&self) -> &Mamba2Config {
        &self.cfg
    }

    fn state_shape(&self) -> Mamba2StateShape {
        let m = &self.cfg.mixer;
        Mamba2StateShape {
            layers: self.cfg.num_layers,
            conv_dim: m.conv_dim(),
            conv_kernel: m.conv_kernel,
            heads: m.num_heads,
            head_dim: m.head_dim,
            state_size: m.state_size,
        }
    }

    /// Runs `ids` through every layer, then appends the logits `head` asks for to `logits`.
    fn run_chunk(
        &self,
        ids: &[u32],
        layers: &mut [Mamba2LayerState],
        head: Option<LogitsWanted>,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let mut residual = self.embedding.forward(ids, &self.device)?;
        // Rows of the last layer's output the head reads: the last layer computes only those
        // (its state still advances over every token), as llama.cpp skips unused outputs.
        let keep = match head {
            None => 0,
            Some(LogitsWanted::Last) => 1,
            Some(LogitsWanted::All) => ids.len(),
        };
        let last = self.layers.len().saturating_sub(1);
        for (i, (block, state)) in self.layers.iter().zip(layers.iter_mut()).enumerate() {
            interrupt::check()?;
            residual = if i == last && keep < ids.len() {
                block.mixer.add_into_last(&block.norm.forward(&residual)?, &residual, state, keep)?
            } else {
                block.mixer.add_into_normed(&block.norm, residual, state)?
            };
        }
        let rows = match head {
            None => return Ok(()),
            Some(LogitsWanted::All) => residual,
            Some(LogitsWanted::Last) => residual.narrow(0, residual.dim(0)? - 1, 1)?,
        };
        head_logits(&self.lm_head, &self.norm_f.forward(&rows)?, None, logits)
    }
}

impl LanguageModel for Mamba2Model {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn new_state(&self) -> Result<Box<dyn ModelState>> {
        Ok(Box::new(Mamba2State::new(self.state_shape(), &self.cfg.mixer, &self.device)?))
    }

    fn prefill_chunk(&self) -> usize {
        PREFILL_CHUNK
    }

    fn weights_identity(&self) -> u64 {
        self.identity
    }

    fn forward(&self, ids: &[u32], state: &mut dyn ModelState, which: LogitsWanted) -> Result<Vec<f32>> {
        check_ids(ids, self.cfg.vocab_size)?;
        let st = own_state(state, "Mamba-2", |s: &Mamba2State| s.shape(), self.state_shape())?;
        // A prompt keeps the call's start, to go back to when it fails or is stopped part-way
        // (`interrupt`): sharing the layer states makes its first piece's scan write new ones
        // instead of updating them in place. A decode step updates in place and is never stopped.
        let start = (ids.len() > 1).then(|| (st.layers.clone(), st.tokens));
        let logits = in_pieces(ids, PREFILL_CHUNK, which, self.cfg.vocab_size, |piece, head, logits| {
            self.run_chunk(piece, &mut st.layers, head, logits)?;
            st.tokens = st.tokens.saturating_add(piece.len() as u64);
            Ok(())
        })
        .inspect_err(|_| {
            if let Some(start) = start {
                (st.layers, st.tokens) = start;
            }
        })?;
        if ids.len() > 1 {
            for layer in &mut st.layers {
                layer.compact()?;
            }
        }
        Ok(logits)
    }
}
