//! Mamba-1 language model (also FalconMamba), on candle tensors and the fused custom ops of `crate::nn`.
//!
//! forward(ids): tokens go through the whole stack in chunks of up to `PREFILL_CHUNK` (bounded memory
//! for any prompt length); a one-token call is the recurrent decode step — the same graph, where the
//! linear op picks the threaded mat-vec instead of the GEMM. Residual stream and all SSM maths in f32.

mod state;
pub(crate) mod weights;

pub use state::{MambaState, StateShape};

use crate::config::MambaConfig;
use crate::error::{bad_config, Result};
use crate::loader::{format_name, ModelFiles, TensorStore};
use crate::model::{LanguageModel, LogitsWanted, ModelInfo, ModelState};
use crate::models::forward::{check_ids, head_logits, in_pieces, own_state};
use crate::models::interrupt;
use crate::nn::scan::ScanOperands;
use crate::nn::GroupRmsNorm;
use state::LayerState;
use weights::{MixerWeights, Weights};

use candle_core::{Device, Tensor};

use super::registry::{self, EngineKind, Family};

/// Mamba-1 and FalconMamba, from Hugging Face or original state-spaces folders.
pub const FAMILY: Family = Family {
    name: "mamba",
    model_types: &["mamba", "falcon_mamba"],
    engine: EngineKind::Ssm,
    load: |files, config, _| Ok(Box::new(MambaModel::load_with_config(files, config)?)),
    check_config: |config| MambaConfig::from_json_str(config)?.check_sizes(PREFILL_CHUNK),
};

/// Tokens per pass through the stack during prefill: big enough for efficient GEMMs, small enough
/// that activations stay a few MB.
pub const PREFILL_CHUNK: usize = 512;

pub struct MambaModel {
    cfg: MambaConfig,
    info: ModelInfo,
    w: Weights,
    device: Device,
}

impl MambaModel {
    /// Reads `config.json` and the weights from `files`.
    pub fn load(files: &ModelFiles) -> Result<Self> {
        let (text, _) = registry::read_config(files)?;
        Self::load_with_config(files, &text)
    }

    /// Loads the weights in `files` for the `config.json` text `config`.
    pub fn load_with_config(files: &ModelFiles, config: &str) -> Result<Self> {
        let cfg = MambaConfig::from_json_str(config).map_err(|e| registry::name_config_file(e, files))?;
        let store = TensorStore::open(files)?;
        Self::from_store(cfg, &store)
    }

    /// Builds the model from a parsed config and an indexed tensor store.
    pub fn from_store(cfg: MambaConfig, store: &TensorStore) -> Result<Self> {
        // Every product below and in the kernels (shapes, state, a prefill chunk's scratch) fits.
        cfg.check_sizes(PREFILL_CHUNK)?;
        let device = Device::Cpu;
        let w = weights::load(&cfg, store, &device)?;
        if cfg.eos_token_ids.iter().chain(cfg.bos_token_id.iter()).any(|&id| id as usize >= cfg.vocab_size) {
            return Err(bad_config(format!(
                "config.json: bos/eos token ids {:?}/{:?} exceed the vocabulary ({})",
                cfg.bos_token_id, cfg.eos_token_ids, cfg.vocab_size
            )));
        }
        let architecture = [
            ("intermediateSize", cfg.intermediate_size),
            ("stateSize", cfg.state_size),
            ("convKernel", cfg.conv_kernel),
            ("dtRank", cfg.dt_rank),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(v)))
        .collect();
        let info = ModelInfo {
            model_type: cfg.model_type.clone(),
            family: FAMILY.name.to_string(),
            engine: FAMILY.engine,
            format: format_name(cfg.layout, store.format).to_string(),
            dtype: w.dtype.to_string(),
            vocab_size: cfg.vocab_size,
            hidden_size: cfg.hidden_size,
            num_layers: cfg.num_layers,
            param_count: w.param_count,
            weight_bytes: w.weight_bytes,
            state_bytes: cfg.state_bytes(),
            state_bytes_per_token: 0,
            context_length: None,
            bos_token_id: cfg.bos_token_id,
            eos_token_ids: cfg.eos_token_ids.clone(),
            architecture,
        };
        Ok(Self { cfg, info, w, device })
    }

    pub fn config(&self) -> &MambaConfig {
        &self.cfg
    }

    fn state_shape(&self) -> StateShape {
        StateShape {
            layers: self.cfg.num_layers,
            channels: self.cfg.intermediate_size,
            conv_kernel: self.cfg.conv_kernel,
            state_size: self.cfg.state_size,
        }
    }

    /// Runs `ids` through every layer, then appends the logits `head` asks for to `logits`.
    fn run_chunk(
        &self,
        ids: &[u32],
        st: &mut MambaState,
        head: Option<LogitsWanted>,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let mut residual = self.w.embedding.forward(ids, &self.device)?;
        for (layer, state) in self.w.layers.iter().zip(st.layers.iter_mut()) {
            interrupt::check()?;
            residual = self.mixer(layer, residual, state)?;
        }
        let l = ids.len();
        let rows = match head {
            None => return Ok(()),
            Some(LogitsWanted::All) => residual,
            Some(LogitsWanted::Last) => residual.narrow(0, l - 1, 1)?,
        };
        head_logits(&self.w.lm_head, &self.w.norm_f.forward(&rows)?, None, logits)
    }

    /// One Mamba block: `residual + out_proj(ssm(conv(in_proj(norm(residual)))))`.
    fn mixer(&self, w: &MixerWeights, residual: Tensor, state: &mut LayerState) -> Result<Tensor> {
        let c = &self.cfg;
        let (e, n, r) = (c.intermediate_size, c.state_size, c.dt_rank);
        let xz = w.in_proj.forward(&w.norm.forward(&residual)?)?;
        // x = xz[:, :E] feeds the conv; z = xz[:, E:] is the gate (read in place by the scan).
        let (u, conv) = w.conv.forward(&xz, &state.conv)?;
        let mut x_dbl = w.x_proj.forward(&u)?;
        if let Some(eps) = c.mixer_rms_eps {
            // FalconMamba: weightless RMSNorm of dt_low, B and C, each over its own width.
            x_dbl = GroupRmsNorm { widths: vec![r, n, n], eps }.forward(&x_dbl)?;
        }
        let dt = w.dt_proj.forward(&x_dbl.narrow(1, 0, r)?)?;
        let operands = ScanOperands { u: &u, dt: &dt, bc: &x_dbl, b_offset: r, c_offset: r + n, z: &xz, z_offset: e };
        let (y, ssm) = w.scan.forward(&operands, &state.ssm)?;
        *state = LayerState { conv, ssm };
        // out_proj adds straight into the residual stream (its own storage: the layer loop's sum).
        w.out_proj.add_into(&y, residual)
    }
}

impl LanguageModel for MambaModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn new_state(&self) -> Result<Box<dyn ModelState>> {
        Ok(Box::new(MambaState::new(self.state_shape(), &self.device)?))
    }

    fn prefill_chunk(&self) -> usize {
        PREFILL_CHUNK
    }

    fn weights_identity(&self) -> u64 {
        self.w.identity
    }

    fn forward(&self, ids: &[u32], state: &mut dyn ModelState, which: LogitsWanted) -> Result<Vec<f32>> {
        check_ids(ids, self.cfg.vocab_size)?;
        let st = own_state(state, "Mamba", |s: &MambaState| s.shape(), self.state_shape())?;
        // Layer states are immutable tensors: keeping the call's start costs a reference each.
        let start = (st.layers.clone(), st.tokens);
        let logits = in_pieces(ids, PREFILL_CHUNK, which, self.cfg.vocab_size, |piece, head, logits| {
            self.run_chunk(piece, st, head, logits)?;
            st.tokens = st.tokens.saturating_add(piece.len() as u64);
            Ok(())
        })
        .inspect_err(|_| {
            // A failure or a stop part-way (`interrupt`) must not leave layers out of step.
            (st.layers, st.tokens) = start;
        })?;
        if ids.len() > 1 {
            // The states are views into the prefill's large packed outputs: keep only the states.
            st.compact()?;
        }
        Ok(logits)
    }
}
