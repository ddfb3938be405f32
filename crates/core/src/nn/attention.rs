//! Self-attention block of a decoder layer: q / k / v projections (optional biases), optional RoPE,
//! causal grouped-query attention over the layer's [`KvCache`] (the fused op of
//! `crate::ops::attention`), output projection.
//!
//! Reuse (e.g. a Mamba-2 / attention hybrid such as Granite-4.0-H): load one per attention layer with
//! `crate::models::llama::weights::load_attention(reader, "model.layers.{i}.self_attn.", dims, biases)`
//! (`dims.scale` = `attention_multiplier` for Granite, `1/sqrt(head_dim)` for Llama), keep a
//! [`KvCache::new(kv_heads, head_dim, dtype)`] per layer in the state, and call
//! [`AttentionBlock::forward`]`(normed, rope, cache)` with `rope = None` for NoPE layers (Granite with
//! `position_embedding_type != "rope"`) or the chunk's [`crate::nn::rope::RopeTables`]. It appends the
//! chunk's keys / values to the cache and returns `o_proj(attention)` (`[m, hidden]`), which the caller
//! scales and adds to its residual ([`AttentionBlock::forward_add`] adds it directly).

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::cpu::{f32s, no_cuda, zeros};
use super::kv_cache::KvCache;
use super::linear::forward_many;
use super::rope::RopeTables;
use super::Linear;
use crate::error::Result;
use crate::ops::attention::causal_attention;
pub use crate::ops::attention::AttentionShape;

pub(crate) struct AttentionBlock {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub shape: AttentionShape,
}

impl AttentionBlock {
    /// `o_proj(attention(h))` for `h` = the normed hidden states `[m, hidden]` of the `m` tokens after
    /// those `cache` holds; the tokens' keys and values are appended to `cache`.
    // Reused by hybrid families (Granite-4.0-H); Llama itself only needs the residual-adding form.
    #[allow(dead_code)]
    pub(crate) fn forward(&self, h: &Tensor, rope: Option<&RopeTables>, cache: &mut KvCache) -> Result<Tensor> {
        let y = self.attend(h, rope, cache)?;
        self.o_proj.forward(&y)
    }

    /// `residual + o_proj(attention(h))` in one op, into `residual`'s storage (`Linear::add_into`:
    /// a running sum no other tensor shares).
    pub(crate) fn forward_add(
        &self,
        h: &Tensor,
        rope: Option<&RopeTables>,
        cache: &mut KvCache,
        residual: Tensor,
    ) -> Result<Tensor> {
        let y = self.attend(h, rope, cache)?;
        self.o_proj.add_into(&y, residual)
    }

    fn attend(&self, h: &Tensor, rope: Option<&RopeTables>, cache: &mut KvCache) -> Result<Tensor> {
        let (mut q, mut k, v) = match forward_many(&[&self.q_proj, &self.k_proj, &self.v_proj], h)? {
            Some(qkv) => {
                let [q, k, v]: [Tensor; 3] = qkv.try_into().expect("three projections");
                (q, k, v)
            }
            None => (self.q_proj.forward(h)?, self.k_proj.forward(h)?, self.v_proj.forward(h)?),
        };
        if let Some(r) = rope {
            q = r.apply(&q)?;
            k = r.apply(&k)?;
        }
        cache.append(&k.flatten_all()?.to_vec1::<f32>()?, &v.flatten_all()?.to_vec1::<f32>()?)?;
        Ok(q.contiguous()?.apply_op1_no_bwd(&AttentionOp { shape: self.shape, cache })?)
    }
}

/// Attention of query rows `[m, heads · head_dim]` against a cache whose last `m` tokens are theirs.
struct AttentionOp<'a> {
    shape: AttentionShape,
    cache: &'a KvCache,
}

const NAME: &str = "phoenix-attention";

impl CustomOp1 for AttentionOp<'_> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let q = f32s(storage, layout, NAME, "queries")?;
        let (m, width) = layout.shape().dims2()?;
        let s = self.shape;
        let c = self.cache;
        if width != s.heads * s.head_dim || c.width() != s.kv_heads * s.head_dim || m > c.tokens() {
            bail!("{NAME}: queries [{m}, {width}] / cache of {} x {} do not fit {s:?}", c.tokens(), c.width());
        }
        let mut out = zeros(q.len(), NAME)?;
        causal_attention(s, q, c.keys(), c.values(), c.tokens() - m, &mut out);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        no_cuda(NAME)
    }
}
