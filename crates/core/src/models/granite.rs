//! Granite-4.0-H (`model_type: granitemoehybrid`): a stack whose layers are either a Mamba-2 mixer
//! (the `mamba2` family's [`Mamba2Mixer`]) or grouped-query attention without positional encoding
//! (the `llama` family's [`AttentionBlock`], softmax scale `attention_multiplier`), each followed by
//! the shared SwiGLU MLP; Granite's µP multipliers scale the embedding, every residual branch and
//! the logits (reference §4.4). Dense checkpoints (`num_local_experts` 0) and mixture-of-experts
//! ones (router top-k experts added to the shared MLP, [`moe`]).
//!
//! The state is both kinds at once ([`HybridState`]): fixed-size SSM states plus the attention
//! layers' KV caches, snapshotted as one.

pub mod config;
mod moe;
pub(crate) mod state;

pub use config::{GraniteHybridConfig, LayerKind};
pub use state::{HybridState, HybridStateShape};

use candle_core::{Device, Tensor};

use crate::config::CONFIG_FILE;
use crate::error::{bad_config, bad_weights, state_mismatch, Result};
use crate::loader::{format_name, ModelFiles, TensorStore};
use crate::model::{LanguageModel, LoadOptions, LogitsWanted, ModelInfo, ModelState};
use crate::models::forward::{check_context, check_ids, head_logits, in_pieces, own_state};
use crate::models::interrupt;
use crate::models::llama::weights::{load_attention, load_fused_mlp, AttentionDims};
use crate::models::mamba2::mixer::{Mamba2Mixer, MAX_SSD_CHUNK};
use crate::models::reader::TensorReader;
use crate::nn::attention::{AttentionBlock, AttentionShape};
use crate::nn::kv_cache::KvDtype;
use crate::nn::mlp::SwiGluMlp;
use crate::nn::{Embedding, Linear, RmsNorm};
use moe::MoeFeedForward;
use state::LayerState;

use super::registry::{self, EngineKind, Family};

pub const FAMILY: Family = Family {
    name: "granitemoehybrid",
    model_types: &["granitemoehybrid"],
    engine: EngineKind::Hybrid,
    load: |files, config, options| Ok(Box::new(GraniteHybridModel::load_with_config(files, config, options)?)),
    check_config: |config| GraniteHybridConfig::from_json_str(config, PREFILL_CHUNK).map(drop),
};

/// Tokens per pass through the stack during prefill (a multiple of the SSD tile, so a prompt fed
/// in pieces of this size gives bit-identical results).
pub const PREFILL_CHUNK: usize = 512;
const _: () = assert!(PREFILL_CHUNK.is_multiple_of(MAX_SSD_CHUNK));

enum Mixer {
    Mamba(Mamba2Mixer),
    Attention(AttentionBlock),
}

struct Block {
    input_norm: RmsNorm,
    mixer: Mixer,
    post_norm: RmsNorm,
    mlp: SwiGluMlp,
    moe: Option<MoeFeedForward>,
}

pub struct GraniteHybridModel {
    cfg: GraniteHybridConfig,
    info: ModelInfo,
    embedding: Embedding,
    layers: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    identity: u64,
    /// What the attention layers' caches hold (`LoadOptions::kv_cache`).
    kv_dtype: KvDtype,
    device: Device,
}

impl GraniteHybridModel {
    /// Loads the weights in `files` for the `config.json` text `config`.
    pub fn load_with_config(files: &ModelFiles, config: &str, options: &LoadOptions) -> Result<Self> {
        let cfg = GraniteHybridConfig::from_json_str(config, PREFILL_CHUNK)
            .map_err(|e| registry::name_config_file(e, files))?;
        let store = TensorStore::open(files)?;
        Self::from_store(cfg, &store, options)
    }

    /// Builds the model from a parsed config and an indexed tensor store (every tensor's shape is
    /// checked against `cfg` before anything sized by it is allocated).
    pub fn from_store(mut cfg: GraniteHybridConfig, store: &TensorStore, options: &LoadOptions) -> Result<Self> {
        // GGUF weights hold Q/K rows in the interleaved order (not unpermuted: no copy).
        if let Some(rope) = cfg.rope.as_mut() {
            rope.interleaved |= store.rope_interleaved;
        }
        let device = Device::Cpu;
        let (d, v, eps) = (cfg.hidden_size, cfg.vocab_size, cfg.rms_norm_eps);
        let stored_layers = store.layers_under("model.layers.");
        if stored_layers != cfg.num_layers() {
            return Err(bad_config(format!(
                "{CONFIG_FILE}: field `num_hidden_layers` = {}, but the weights hold {stored_layers} layers",
                cfg.num_layers()
            )));
        }
        if cfg.eos_token_ids.iter().chain(cfg.bos_token_id.iter()).any(|&id| id as usize >= v) {
            return Err(bad_config(format!(
                "{CONFIG_FILE}: bos/eos token ids {:?}/{:?} exceed the vocabulary ({v})",
                cfg.bos_token_id, cfg.eos_token_ids
            )));
        }
        let mut rd = TensorReader::new(store, &device);
        let embedding = rd.matrix("model.embed_tokens.weight", v, d)?;
        let attention = AttentionDims {
            hidden: d,
            shape: AttentionShape {
                heads: cfg.num_heads,
                kv_heads: cfg.num_kv_heads,
                head_dim: cfg.head_dim,
                scale: cfg.attention_multiplier,
            },
            qkv_bias: cfg.attention_bias,
            o_bias: cfg.attention_bias,
        };
        let mut layers = Vec::with_capacity(cfg.num_layers());
        for (i, kind) in cfg.layer_kinds.iter().enumerate() {
            let p = format!("model.layers.{i}.");
            let mixer = match kind {
                LayerKind::Mamba => Mixer::Mamba(Mamba2Mixer::load(&mut rd, &cfg.mixer, &format!("{p}mamba."))?),
                LayerKind::Attention => {
                    Mixer::Attention(load_attention(&mut rd, &format!("{p}self_attn."), attention)?)
                }
            };
            layers.push(Block {
                input_norm: rd.rms_norm(&format!("{p}input_layernorm.weight"), d, eps)?,
                mixer,
                post_norm: rd.rms_norm(&format!("{p}post_attention_layernorm.weight"), d, eps)?,
                mlp: load_fused_mlp(
                    &mut rd,
                    &format!("{p}shared_mlp.input_linear"),
                    &format!("{p}shared_mlp.output_linear"),
                    d,
                    cfg.shared_intermediate_size,
                )?,
                moe: match cfg.moe {
                    Some(m) => Some(MoeFeedForward::load(&mut rd, m, &format!("{p}block_sparse_moe."), d)?),
                    None => None,
                },
            });
        }
        let norm = rd.rms_norm("model.norm.weight", d, eps)?;
        // Tied ⇒ reuse the embedding. Untied ⇒ the head must be stored: silently tying would run a
        // different model than the one described.
        let lm_head = if cfg.tie_word_embeddings {
            embedding.clone()
        } else if rd.contains("lm_head.weight") {
            rd.matrix("lm_head.weight", v, d)?
        } else {
            return Err(bad_weights(format!(
                "tensor `lm_head.weight` is missing from the weights, and {CONFIG_FILE} sets `tie_word_embeddings: false` (the head is not the embedding)"
            )));
        };
        let kv_dtype = options.kv_cache;
        let info = Self::model_info(&cfg, &rd, store, kv_dtype);
        Ok(Self {
            info,
            kv_dtype,
            embedding: Embedding::new(embedding),
            layers,
            norm,
            lm_head: Linear::head(lm_head, None),
            identity: rd.identity(),
            device,
            cfg,
        })
    }

    fn model_info(cfg: &GraniteHybridConfig, rd: &TensorReader, store: &TensorStore, kv_dtype: KvDtype) -> ModelInfo {
        let m = &cfg.mixer;
        let layer_types: Vec<&str> = cfg
            .layer_kinds
            .iter()
            .map(|k| match k {
                LayerKind::Mamba => "mamba",
                LayerKind::Attention => "attention",
            })
            .collect();
        let mut architecture: std::collections::BTreeMap<String, serde_json::Value> = [
            ("numHeads", cfg.num_heads),
            ("numKvHeads", cfg.num_kv_heads),
            ("headDim", cfg.head_dim),
            ("sharedIntermediateSize", cfg.shared_intermediate_size),
            ("attentionLayers", cfg.attention_layers()),
            ("mambaLayers", cfg.mamba_layers()),
            ("mambaHeads", m.num_heads),
            ("mambaHeadDim", m.head_dim),
            ("stateSize", m.state_size),
            ("nGroups", m.n_groups),
            ("convKernel", m.conv_kernel),
            ("numExperts", cfg.moe.map_or(0, |m| m.experts)),
            ("expertsPerToken", cfg.moe.map_or(0, |m| m.top_k)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(v)))
        .collect();
        architecture.insert("layerTypes".into(), serde_json::Value::from(layer_types));
        for (k, v) in [
            ("embeddingMultiplier", cfg.embedding_multiplier),
            ("attentionMultiplier", cfg.attention_multiplier),
            ("residualMultiplier", cfg.residual_multiplier),
            ("logitsScaling", cfg.logits_scaling),
        ] {
            architecture.insert(k.into(), serde_json::Value::from(v as f64));
        }
        let position = cfg.rope.as_ref().map_or("none".to_string(), |r| format!("rope ({})", r.scaling.kind()));
        architecture.insert("positionEmbedding".into(), serde_json::Value::from(position));
        architecture.insert("kvCacheDtype".into(), serde_json::Value::from(kv_dtype.as_str()));
        ModelInfo {
            model_type: "granitemoehybrid".to_string(),
            family: FAMILY.name.to_string(),
            engine: FAMILY.engine,
            format: format_name(crate::config::ConfigLayout::HuggingFace, store.format).to_string(),
            dtype: rd.dtype.unwrap_or("f32").to_string(),
            vocab_size: cfg.vocab_size,
            hidden_size: cfg.hidden_size,
            num_layers: cfg.num_layers(),
            param_count: rd.count,
            weight_bytes: rd.bytes,
            state_bytes: cfg.state_bytes(),
            state_bytes_per_token: cfg.state_bytes_per_token(kv_dtype),
            context_length: Some(cfg.max_position_embeddings),
            bos_token_id: cfg.bos_token_id,
            eos_token_ids: cfg.eos_token_ids.clone(),
            architecture,
        }
    }

    pub fn config(&self) -> &GraniteHybridConfig {
        &self.cfg
    }

    /// `x + multiplier · branch` (the branch's own tensor when the multiplier is 1).
    fn add_scaled(&self, x: &Tensor, branch: Tensor) -> Result<Tensor> {
        let rm = self.cfg.residual_multiplier;
        let scaled = if rm == 1.0 { branch } else { branch.affine(rm as f64, 0.0)? };
        Ok((x + scaled)?)
    }

    /// Runs `ids` through every layer, then appends the logits `head` asks for to `logits`.
    fn run_chunk(
        &self,
        ids: &[u32],
        tokens_before: usize,
        layers: &mut [LayerState],
        head: Option<LogitsWanted>,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let rope = match &self.cfg.rope {
            Some(spec) => Some(spec.tables(tokens_before, ids.len())?),
            None => None,
        };
        let mut x = self.embedding.forward(ids, &self.device)?;
        if self.cfg.embedding_multiplier != 1.0 {
            x = x.affine(self.cfg.embedding_multiplier as f64, 0.0)?;
        }
        for (block, state) in self.layers.iter().zip(layers.iter_mut()) {
            interrupt::check()?;
            let h = block.input_norm.forward(&x)?;
            let h = match (&block.mixer, state) {
                (Mixer::Mamba(m), LayerState::Mamba(s)) => m.forward(&h, s)?,
                // Granite-4.0-H has no positional encoding (`rope` None): its attention sees positions
                // only through the causal mask and the Mamba layers.
                (Mixer::Attention(a), LayerState::Attention(cache)) => a.forward(&h, rope.as_ref(), cache)?,
                _ => return Err(state_mismatch("forward: the state's layer kinds do not match this model")),
            };
            x = self.add_scaled(&x, h)?;
            let normed = block.post_norm.forward(&x)?;
            let mut h = block.mlp.forward(&normed)?;
            if let Some(moe) = &block.moe {
                h = (moe.forward(&normed)? + h)?;
            }
            x = self.add_scaled(&x, h)?;
        }
        let rows = match head {
            None => return Ok(()),
            Some(LogitsWanted::All) => x,
            Some(LogitsWanted::Last) => x.narrow(0, ids.len() - 1, 1)?,
        };
        let scale = (self.cfg.logits_scaling != 1.0).then(|| 1.0 / self.cfg.logits_scaling as f64);
        head_logits(&self.lm_head, &self.norm.forward(&rows)?, scale, logits)
    }
}

impl LanguageModel for GraniteHybridModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn new_state(&self) -> Result<Box<dyn ModelState>> {
        Ok(Box::new(HybridState::new(&self.cfg, self.kv_dtype, &self.device)?))
    }

    fn prefill_chunk(&self) -> usize {
        PREFILL_CHUNK
    }

    fn weights_identity(&self) -> u64 {
        self.identity
    }

    fn forward(&self, ids: &[u32], state: &mut dyn ModelState, which: LogitsWanted) -> Result<Vec<f32>> {
        check_ids(ids, self.cfg.vocab_size)?;
        let want = HybridStateShape::of(&self.cfg, self.kv_dtype);
        let st = own_state(state, "Granite-4.0-H", |s: &HybridState| s.shape, want)?;
        check_context(st.tokens, ids.len(), self.cfg.max_position_embeddings)?;
        if st.broken {
            return Err(state_mismatch(
                "Granite-4.0-H state: a decode step failed part-way and left its layers out of step; restore a snapshot or start a new state",
            ));
        }
        // A decode step updates the Mamba layers' states in place (no 786 KB buffer per layer per
        // token), so there is nothing to roll back to: its KV room is reserved first, and what can
        // still fail (an internal error) marks the state broken. Prompts keep the checkpoint.
        let checkpoint = if ids.len() == 1 {
            st.reserve_attention(1)?;
            st.broken = true;
            None
        } else {
            Some(st.checkpoint())
        };
        let logits = in_pieces(ids, PREFILL_CHUNK, which, self.cfg.vocab_size, |piece, head, logits| {
            self.run_chunk(piece, st.tokens as usize, &mut st.layers, head, logits)?;
            st.tokens = st.tokens.saturating_add(piece.len() as u64);
            Ok(())
        });
        let logits = match logits {
            Ok(l) => l,
            Err(e) => {
                // A failure part-way must not leave the layers out of step.
                if let Some(checkpoint) = checkpoint {
                    st.rollback(checkpoint);
                }
                return Err(e);
            }
        };
        st.broken = false;
        if ids.len() > 1 {
            st.compact()?;
        }
        Ok(logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::model::LogitsWanted;
    use crate::models::granite::state::LayerState;

    fn model() -> GraniteHybridModel {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/granite-hybrid-tiny");
        let files = ModelFiles::from_dir(&dir).unwrap();
        let config = files.text("config.json").unwrap();
        GraniteHybridModel::load_with_config(&files, &config, &LoadOptions::default()).unwrap()
    }

    /// Decode steps update the Mamba layers in place (their states shared with nothing), prompts
    /// and shared states do not: a step from a restored copy (layers sharing one zero state, so
    /// functional) gives the same logits and state.
    #[test]
    fn in_place_decode_steps_match_functional_steps() {
        let m = model();
        let mut state = m.new_state().unwrap();
        m.forward(&[1, 5, 9, 3], state.as_mut(), LogitsWanted::Last).unwrap();
        for (i, id) in [7u32, 2, 11].into_iter().enumerate() {
            let hybrid = state.as_any_mut().downcast_mut::<HybridState>().unwrap();
            for layer in &mut hybrid.layers {
                if let LayerState::Mamba(s) = layer {
                    assert!(
                        s.ssm_exclusive(),
                        "step {i}: a Mamba layer's state is shared, the step would not run in place"
                    );
                }
            }
            let (bytes, tokens) = (state.to_bytes().unwrap(), state.layout().tokens);
            let mut copy = m.new_state().unwrap();
            copy.load_bytes(&bytes, tokens).unwrap();
            let a = m.forward(&[id], state.as_mut(), LogitsWanted::Last).unwrap();
            let b = m.forward(&[id], copy.as_mut(), LogitsWanted::Last).unwrap();
            assert_eq!(a, b, "step {i}: in-place and functional steps differ");
            assert_eq!(state.to_bytes().unwrap(), copy.to_bytes().unwrap(), "step {i}: states differ");
            assert_ne!(state.to_bytes().unwrap(), bytes, "step {i}: the state did not advance");
        }
    }

    /// A state a failed decode step left out of step is refused, not silently used; restoring a
    /// snapshot makes it usable again.
    #[test]
    fn a_broken_state_is_refused_until_restored() {
        let m = model();
        let mut state = m.new_state().unwrap();
        m.forward(&[1, 5], state.as_mut(), LogitsWanted::Last).unwrap();
        let snapshot = state.to_bytes().unwrap();
        let layout = state.layout();
        state.as_any_mut().downcast_mut::<HybridState>().unwrap().broken = true;
        let err = m.forward(&[3], state.as_mut(), LogitsWanted::Last).unwrap_err();
        assert_eq!(err.code, ErrorCode::StateMismatch, "{err}");
        assert!(err.message.contains("out of step"), "{err}");
        assert_eq!(state.to_bytes().unwrap_err().code, ErrorCode::StateMismatch);
        state.load_bytes(&snapshot, layout.tokens).unwrap();
        m.forward(&[3], state.as_mut(), LogitsWanted::Last).unwrap();
    }
}
