//! One sequence's Granite-4.0-H state: each Mamba-2 layer's conv + SSM state (fixed size) and each
//! attention layer's KV cache (grows with the context). Serialised as one: the Mamba layers' states
//! in layer order, then each attention layer's keys and values of the tokens seen, in layer order —
//! so its byte length is `state_bytes + tokens × state_bytes_per_token` like any other state.

use std::any::Any;

use candle_core::Device;

use super::config::{GraniteHybridConfig, LayerKind};
use crate::error::{state_mismatch, Result};
use crate::model::{ModelState, StateLayout};
use crate::models::mamba2::state::{finite_values, Mamba2LayerState};
use crate::nn::kv_cache::{KvCache, KvDtype};

pub(crate) const STATE_FAMILY: &str = "granitemoehybrid";

#[derive(Clone)]
pub(crate) enum LayerState {
    Mamba(Mamba2LayerState),
    Attention(KvCache),
}

/// Sizes that fix a state's layout (snapshot dims).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HybridStateShape {
    pub layers: usize,
    pub attention_layers: usize,
    pub conv_dim: usize,
    pub conv_kernel: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub state_size: usize,
    pub kv_width: usize,
    /// What the attention layers' caches hold (the Mamba layers' states are f32 either way).
    pub kv_dtype: KvDtype,
}

impl HybridStateShape {
    pub fn of(cfg: &GraniteHybridConfig, kv_dtype: KvDtype) -> Self {
        let m = &cfg.mixer;
        Self {
            layers: cfg.num_layers(),
            attention_layers: cfg.attention_layers(),
            conv_dim: m.conv_dim(),
            conv_kernel: m.conv_kernel,
            heads: m.num_heads,
            head_dim: m.head_dim,
            state_size: m.state_size,
            kv_width: cfg.kv_width(),
            kv_dtype,
        }
    }

    fn mamba_values(&self) -> usize {
        self.conv_dim * self.conv_kernel + self.heads * self.head_dim * self.state_size
    }

    /// Bytes one token adds to each attention layer's cache.
    fn kv_bytes_per_token(&self) -> Option<usize> {
        self.kv_dtype.bytes_per_token(self.kv_width)
    }

    /// The layout's dtype: the Mamba states' f32, and the caches' when they differ (a snapshot
    /// header holds 8 characters of `[A-Za-z0-9_-]`).
    fn layout_dtype(&self) -> &'static str {
        match self.kv_dtype {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f32-kv16",
        }
    }

    /// Bytes of the fixed (Mamba) part.
    fn fixed_bytes(&self) -> usize {
        (self.layers - self.attention_layers) * self.mamba_values() * 4
    }
}

pub struct HybridState {
    pub(crate) shape: HybridStateShape,
    pub(crate) layers: Vec<LayerState>,
    pub(crate) tokens: u64,
    /// Set while a decode step updates Mamba layers in place (no checkpoint to roll back to); still
    /// set only when that step failed part-way, and then the layers are out of step: refused.
    pub(crate) broken: bool,
}

impl HybridState {
    pub fn new(cfg: &GraniteHybridConfig, kv_dtype: KvDtype, device: &Device) -> Result<Self> {
        let mamba = Mamba2LayerState::new(&cfg.mixer, device)?;
        let layers = cfg
            .layer_kinds
            .iter()
            .map(|kind| match kind {
                LayerKind::Mamba => LayerState::Mamba(mamba.clone()),
                LayerKind::Attention => LayerState::Attention(KvCache::new(cfg.num_kv_heads, cfg.head_dim, kv_dtype)),
            })
            .collect();
        Ok(Self { shape: HybridStateShape::of(cfg, kv_dtype), layers, tokens: 0, broken: false })
    }

    /// What [`Self::rollback`] needs to undo a forward: the Mamba layers' states (tensors are
    /// immutable values, so this is a cheap share) and the token count (caches only grow).
    pub(crate) fn checkpoint(&self) -> (Vec<Option<Mamba2LayerState>>, u64) {
        let mamba = self
            .layers
            .iter()
            .map(|l| match l {
                LayerState::Mamba(m) => Some(m.clone()),
                LayerState::Attention(_) => None,
            })
            .collect();
        (mamba, self.tokens)
    }

    /// Room for `more` tokens in every attention layer's cache, so a forward of that many tokens
    /// cannot fail for want of KV space part-way.
    pub(crate) fn reserve_attention(&mut self, more: usize) -> Result<()> {
        for layer in &mut self.layers {
            if let LayerState::Attention(cache) = layer {
                cache.reserve(more)?;
            }
        }
        Ok(())
    }

    /// Puts the state back as it was at `checkpoint` (after a forward that failed part-way, so the
    /// layers never end up out of step).
    pub(crate) fn rollback(&mut self, checkpoint: (Vec<Option<Mamba2LayerState>>, u64)) {
        let (mamba, tokens) = checkpoint;
        for (layer, saved) in self.layers.iter_mut().zip(mamba) {
            match (layer, saved) {
                (LayerState::Mamba(m), Some(s)) => *m = s,
                (LayerState::Attention(cache), _) => cache.truncate(tokens as usize),
                _ => {}
            }
        }
        self.tokens = tokens;
    }

    /// Copies the Mamba layers' states into storage of their own (after a prefill they are views
    /// into the ops' large packed outputs).
    pub(crate) fn compact(&mut self) -> Result<()> {
        for layer in &mut self.layers {
            if let LayerState::Mamba(m) = layer {
                m.compact()?;
            }
        }
        Ok(())
    }
}

impl ModelState for HybridState {
    fn layout(&self) -> StateLayout {
        let s = self.shape;
        StateLayout {
            family: STATE_FAMILY.to_string(),
            dtype: s.layout_dtype().to_string(),
            dims: vec![
                s.layers,
                s.attention_layers,
                s.conv_dim,
                s.conv_kernel,
                s.heads,
                s.head_dim,
                s.state_size,
                s.kv_width,
            ],
            tokens: self.tokens,
        }
    }

    fn to_bytes(&self) -> Result<Vec<u8>> {
        if self.broken {
            return Err(state_mismatch(
                "Granite-4.0-H state: left out of step by a failed decode step; nothing to snapshot",
            ));
        }
        let mut out = Vec::new();
        for layer in &self.layers {
            if let LayerState::Mamba(m) = layer {
                m.write_bytes(&mut out)?;
            }
        }
        for layer in &self.layers {
            if let LayerState::Attention(cache) = layer {
                cache.write_bytes(&mut out);
            }
        }
        Ok(out)
    }

    fn load_bytes(&mut self, bytes: &[u8], tokens: u64) -> Result<()> {
        let s = self.shape;
        let fixed = s.fixed_bytes();
        let too_many = || state_mismatch(format!("state snapshot: {tokens} tokens of context is too many"));
        let t = usize::try_from(tokens).map_err(|_| too_many())?;
        let per_layer = s.kv_bytes_per_token().and_then(|b| t.checked_mul(b)).ok_or_else(too_many)?;
        let want = per_layer.checked_mul(s.attention_layers).and_then(|x| x.checked_add(fixed)).ok_or_else(too_many)?;
        if bytes.len() != want {
            return Err(state_mismatch(format!(
                "state snapshot has {} bytes; {tokens} tokens of this model's state take {want}",
                bytes.len()
            )));
        }
        let values = finite_values(&bytes[..fixed])?;
        // Restore into copies: a bad attention cache must leave the state as it was.
        let mut layers = self.layers.clone();
        let (mut at, mut kv_at) = (0, fixed);
        for layer in &mut layers {
            match layer {
                LayerState::Mamba(m) => at += m.read_values(&values[at..])?,
                LayerState::Attention(cache) => {
                    cache.read_bytes(&bytes[kv_at..kv_at + per_layer], t)?;
                    kv_at += per_layer;
                }
            }
        }
        self.layers = layers;
        self.tokens = tokens;
        self.broken = false;
        Ok(())
    }

    fn clone_box(&self) -> Box<dyn ModelState> {
        Box::new(HybridState {
            shape: self.shape,
            layers: self.layers.clone(),
            tokens: self.tokens,
            broken: self.broken,
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
