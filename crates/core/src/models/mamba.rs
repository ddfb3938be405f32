//! Mamba-1 language model (also FalconMamba) on the fused CPU kernels of `crate::ops`.
//!
//! forward(ids): tokens go through the whole stack in chunks of up to `PREFILL_CHUNK` (bounded memory
//! for any prompt length); a one-token call is the recurrent decode step — same code, but matvecs
//! instead of GEMMs, no rayon for the tiny per-token kernels, and scratch buffers reused from the state
//! (no per-token allocation besides the returned logits). Residual stream and all SSM maths in f32.

mod state;
mod weights;

pub use state::{MambaState, StateShape};

use crate::config::MambaConfig;
use crate::error::{bad_config, invalid_option, state_mismatch, Result};
use crate::loader::{format_name, ModelFiles, TensorStore};
use crate::model::{LanguageModel, LogitsWanted, ModelInfo, ModelState};
use crate::ops::conv::causal_conv_silu;
use crate::ops::matmul::{linear, MatRef};
use crate::ops::norm::{rms_norm_in_place, rms_norm_rows};
use crate::ops::scan::{selective_scan, ScanInputs};
use state::Scratch;
use weights::{MixerWeights, Weights};

use super::registry::{self, EngineKind, Family};

/// Mamba-1 and FalconMamba, from Hugging Face or original state-spaces folders.
pub const FAMILY: Family = Family {
    name: "mamba",
    model_types: &["mamba", "falcon_mamba"],
    engine: EngineKind::Ssm,
    load: |files, config| Ok(Box::new(MambaModel::load_with_config(files, config)?)),
};

/// Tokens per pass through the stack during prefill: big enough for efficient GEMMs, small enough
/// that activations stay a few MB.
pub const PREFILL_CHUNK: usize = 512;

pub struct MambaModel {
    cfg: MambaConfig,
    info: ModelInfo,
    w: Weights,
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
        let w = weights::load(&cfg, store)?;
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
            dtype: "f32".to_string(),
            vocab_size: cfg.vocab_size,
            hidden_size: cfg.hidden_size,
            num_layers: cfg.num_layers,
            param_count: w.param_count,
            weight_bytes: w.param_count.saturating_mul(4),
            state_bytes: cfg.state_bytes(),
            state_bytes_per_token: 0,
            context_length: None,
            bos_token_id: cfg.bos_token_id,
            eos_token_ids: cfg.eos_token_ids.clone(),
            architecture,
        };
        Ok(Self { cfg, info, w })
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

    fn lm_head(&self) -> &[f32] {
        self.w.lm_head.as_deref().unwrap_or(&self.w.embedding)
    }

    /// Runs `ids` through every layer, then appends the logits `head` asks for to `logits`.
    fn run_chunk(&self, ids: &[u32], st: &mut MambaState, head: Option<LogitsWanted>, logits: &mut Vec<f32>) {
        let (d, v, l) = (self.cfg.hidden_size, self.cfg.vocab_size, ids.len());
        ensure_scratch(&mut st.scratch, &self.cfg, l);
        {
            let residual = &mut st.scratch.residual[..l * d];
            for (row, &id) in residual.chunks_exact_mut(d).zip(ids) {
                row.copy_from_slice(&self.w.embedding[id as usize * d..(id as usize + 1) * d]);
            }
        }
        for (i, layer) in self.w.layers.iter().enumerate() {
            let (conv, ssm, scratch) = st.layer_mut(i);
            self.mixer(layer, l, conv, ssm, scratch);
        }
        let s = &mut st.scratch;
        let eps = self.cfg.norm_eps;
        let rows = match head {
            None => return,
            Some(LogitsWanted::All) => 0..l,
            Some(LogitsWanted::Last) => l - 1..l,
        };
        let m = rows.len();
        rms_norm_rows(&s.residual[rows.start * d..rows.end * d], &self.w.norm_f, eps, &mut s.normed[..m * d]);
        let start = logits.len();
        logits.resize(start + m * v, 0.0);
        linear(MatRef::rows(&s.normed[..m * d], m, d), self.lm_head(), None, &mut logits[start..], false);
    }

    /// One Mamba block over `l` tokens: `residual += out_proj(ssm(conv(in_proj(norm(residual)))))`.
    fn mixer(&self, w: &MixerWeights, l: usize, conv: &mut [f32], ssm: &mut [f32], s: &mut Scratch) {
        let c = &self.cfg;
        let (d, e, n, r) = (c.hidden_size, c.intermediate_size, c.state_size, c.dt_rank);
        let xw = r + 2 * n;

        rms_norm_rows(&s.residual[..l * d], &w.norm, c.norm_eps, &mut s.normed[..l * d]);
        linear(MatRef::rows(&s.normed[..l * d], l, d), &w.in_proj, w.in_proj_bias.as_deref(), &mut s.xz, false);
        // x = xz[:, :E] feeds the conv; z = xz[:, E:] is the gate.
        causal_conv_silu(&s.xz, 2 * e, l, conv, &w.conv_weight_t, &w.conv_bias, &mut s.conv_hist, &mut s.u);
        linear(MatRef::rows(&s.u[..l * e], l, e), &w.x_proj, None, &mut s.x_dbl, false);
        if let Some(eps) = c.mixer_rms_eps {
            // FalconMamba: weightless RMSNorm of dt_low, B and C, each over its own width.
            for row in s.x_dbl[..l * xw].chunks_exact_mut(xw) {
                let (dt_low, bc) = row.split_at_mut(r);
                let (b, cc) = bc.split_at_mut(n);
                rms_norm_in_place(dt_low, eps);
                rms_norm_in_place(b, eps);
                rms_norm_in_place(cc, eps);
            }
        }
        let dt_low = MatRef { data: &s.x_dbl[..l * xw], rows: l, cols: r, row_stride: xw, col_stride: 1 };
        linear(dt_low, &w.dt_proj, None, &mut s.dt, false);
        let inputs = ScanInputs {
            len: l,
            u: &s.u,
            dt: &s.dt,
            dt_bias: &w.dt_bias,
            a: &w.a,
            bc: &s.x_dbl,
            bc_stride: xw,
            b_offset: r,
            c_offset: r + n,
            d: &w.d,
            z: &s.xz,
            z_stride: 2 * e,
            z_offset: e,
        };
        selective_scan(&inputs, ssm, &mut s.y);
        // out_proj adds straight into the residual stream.
        linear(
            MatRef::rows(&s.y[..l * e], l, e),
            &w.out_proj,
            w.out_proj_bias.as_deref(),
            &mut s.residual[..l * d],
            true,
        );
    }
}

/// Sizes every scratch buffer for `l` tokens (no allocation once they are big enough).
fn ensure_scratch(s: &mut Scratch, c: &MambaConfig, l: usize) {
    let (d, e, n, r, k) = (c.hidden_size, c.intermediate_size, c.state_size, c.dt_rank, c.conv_kernel);
    for (buf, len) in [
        (&mut s.residual, l * d),
        (&mut s.normed, l * d),
        (&mut s.xz, l * 2 * e),
        (&mut s.u, l * e),
        (&mut s.x_dbl, l * (r + 2 * n)),
        (&mut s.dt, l * e),
        (&mut s.y, l * e),
        (&mut s.conv_hist, (k - 1) * e),
    ] {
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
    }
}

impl LanguageModel for MambaModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn new_state(&self) -> Box<dyn ModelState> {
        Box::new(MambaState::new(self.state_shape()))
    }

    fn prefill_chunk(&self) -> usize {
        PREFILL_CHUNK
    }

    fn weights_identity(&self) -> u64 {
        self.w.identity
    }

    fn forward(&self, ids: &[u32], state: &mut dyn ModelState, which: LogitsWanted) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(invalid_option("forward: `ids` must hold at least one token"));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
            return Err(invalid_option(format!(
                "forward: token id {bad} is outside the vocabulary (size {})",
                self.cfg.vocab_size
            )));
        }
        let st = state
            .as_any_mut()
            .downcast_mut::<MambaState>()
            .ok_or_else(|| state_mismatch("forward: the state was not created by a Mamba model"))?;
        if st.shape() != self.state_shape() {
            return Err(state_mismatch(format!(
                "forward: state shape {:?} does not match this model ({:?})",
                st.shape(),
                self.state_shape()
            )));
        }
        let all = which == LogitsWanted::All;
        let rows = if all { ids.len() } else { 1 };
        let mut logits = Vec::with_capacity(rows * self.cfg.vocab_size);
        let chunks = ids.len().div_ceil(PREFILL_CHUNK);
        for (i, chunk) in ids.chunks(PREFILL_CHUNK).enumerate() {
            // Only the last chunk's last row matters for `Last`: skip the head elsewhere.
            let head = if all || i + 1 == chunks { Some(which) } else { None };
            self.run_chunk(chunk, st, head, &mut logits);
        }
        if ids.len() > 1 {
            // Prefill buffers are large; keep only what decode steps need.
            st.scratch = Scratch::default();
        }
        Ok(logits)
    }
}
