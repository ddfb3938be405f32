//! One sequence's Llama state: a [`KvCache`] per layer. Serialised as the caches' bytes (keys then
//! values of the tokens seen, layer by layer), so a snapshot grows with the context and holds nothing
//! past the tokens seen; the layout dims are `[layers, kv_heads, head_dim]`, its dtype the caches'.

use std::any::Any;

use crate::error::{state_mismatch, Result};
use crate::model::{ModelState, StateLayout};
use crate::nn::kv_cache::{KvCache, KvDtype};

/// Sizes that decide a state's layout, and the most tokens it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// The model's context length.
    pub max_tokens: usize,
    pub dtype: KvDtype,
}

impl KvShape {
    fn cache(&self) -> KvCache {
        KvCache::new(self.kv_heads, self.head_dim, self.dtype)
    }
}

#[derive(Clone)]
pub struct LlamaState {
    pub(crate) shape: KvShape,
    pub(crate) caches: Vec<KvCache>,
}

impl LlamaState {
    pub fn new(shape: KvShape) -> Self {
        Self { shape, caches: vec![shape.cache(); shape.layers] }
    }

    pub fn shape(&self) -> KvShape {
        self.shape
    }

    /// Tokens of context held (every layer holds the same).
    pub fn tokens(&self) -> usize {
        self.caches.first().map_or(0, KvCache::tokens)
    }
}

impl ModelState for LlamaState {
    fn layout(&self) -> StateLayout {
        let s = self.shape;
        StateLayout {
            family: "llama".to_string(),
            dtype: s.dtype.as_str().to_string(),
            dims: vec![s.layers, s.kv_heads, s.head_dim],
            tokens: self.tokens() as u64,
        }
    }

    fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.append_bytes(&mut out)?;
        Ok(out)
    }

    fn append_bytes(&self, out: &mut Vec<u8>) -> Result<()> {
        let per_layer = self.caches.first().and_then(|c| c.bytes_for(c.tokens())).unwrap_or(0);
        out.try_reserve_exact(per_layer.saturating_mul(self.caches.len()))
            .map_err(|_| state_mismatch("state snapshot does not fit in memory"))?;
        for c in &self.caches {
            c.write_bytes(out);
        }
        Ok(())
    }

    fn load_bytes(&mut self, bytes: &[u8], tokens: u64) -> Result<()> {
        let s = self.shape;
        let n = usize::try_from(tokens).ok().filter(|&n| n <= s.max_tokens).ok_or_else(|| {
            state_mismatch(format!(
                "state snapshot holds {tokens} tokens, past this model's context of {}",
                s.max_tokens
            ))
        })?;
        let per_layer = s.cache().bytes_for(n);
        let want = per_layer.and_then(|b| b.checked_mul(s.layers));
        let (Some(per_layer), Some(want)) = (per_layer, want) else {
            return Err(state_mismatch(format!("state snapshot of {tokens} tokens is too large")));
        };
        if bytes.len() != want {
            return Err(state_mismatch(format!(
                "state snapshot has {} bytes; {tokens} tokens of this model's KV cache take {want} (layers {}, kv heads {}, head dim {})",
                bytes.len(),
                s.layers,
                s.kv_heads,
                s.head_dim
            )));
        }
        let mut caches = Vec::with_capacity(s.layers);
        for chunk in bytes.chunks_exact(per_layer.max(1)).take(s.layers) {
            let mut c = s.cache();
            c.read_bytes(chunk, n)?;
            caches.push(c);
        }
        if per_layer == 0 {
            caches = vec![s.cache(); s.layers];
        }
        self.caches = caches;
        Ok(())
    }

    fn truncate(&mut self, tokens: usize) -> bool {
        self.caches.iter_mut().for_each(|c| c.truncate(tokens));
        true
    }

    fn clone_box(&self) -> Box<dyn ModelState> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
