//! Llama / Qwen2 weights as `crate::nn` layers, every tensor shape-checked against the config, and
//! the loaders a hybrid family reuses for its attention layers and (fused) SwiGLU MLPs.

use candle_core::Device;

use super::config::LlamaConfig;
use crate::config::CONFIG_FILE;
use crate::error::{bad_config, bad_weights, Result};
use crate::loader::TensorStore;
use crate::nn::attention::{AttentionBlock, AttentionShape};
use crate::nn::mlp::{SwiGluMlp, UpProjection};
use crate::nn::{Embedding, Linear, RmsNorm};

pub(crate) use crate::models::reader::TensorReader;

/// Sizes of an attention block (see [`load_attention`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionDims {
    pub hidden: usize,
    pub shape: AttentionShape,
    /// Biases on q / k / v, and on o.
    pub qkv_bias: bool,
    pub o_bias: bool,
}

/// `{prefix}{q,k,v,o}_proj` (e.g. `model.layers.3.self_attn.`) as an [`AttentionBlock`].
pub(crate) fn load_attention(rd: &mut TensorReader, prefix: &str, dims: AttentionDims) -> Result<AttentionBlock> {
    let s = dims.shape;
    let (q, kv) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
    Ok(AttentionBlock {
        q_proj: rd.linear(&format!("{prefix}q_proj"), q, dims.hidden, dims.qkv_bias)?,
        k_proj: rd.linear(&format!("{prefix}k_proj"), kv, dims.hidden, dims.qkv_bias)?,
        v_proj: rd.linear(&format!("{prefix}v_proj"), kv, dims.hidden, dims.qkv_bias)?,
        o_proj: rd.linear(&format!("{prefix}o_proj"), dims.hidden, q, dims.o_bias)?,
        shape: s,
    })
}

/// `{prefix}{gate,up,down}_proj` (e.g. `model.layers.3.mlp.`) as a [`SwiGluMlp`].
pub(crate) fn load_mlp(
    rd: &mut TensorReader,
    prefix: &str,
    hidden: usize,
    inter: usize,
    bias: bool,
) -> Result<SwiGluMlp> {
    Ok(SwiGluMlp {
        up: UpProjection::Separate {
            gate: rd.linear(&format!("{prefix}gate_proj"), inter, hidden, bias)?,
            up: rd.linear(&format!("{prefix}up_proj"), inter, hidden, bias)?,
        },
        down: rd.linear(&format!("{prefix}down_proj"), hidden, inter, bias)?,
        intermediate: inter,
    })
}

/// A SwiGLU MLP stored as one `[2·inter, hidden]` input matrix (gate rows first) and an output
/// matrix (used by hybrid families), e.g. Granite's `model.layers.{i}.shared_mlp.input_linear` / `output_linear`.
#[allow(dead_code)]
pub(crate) fn load_fused_mlp(
    rd: &mut TensorReader,
    input: &str,
    output: &str,
    hidden: usize,
    inter: usize,
) -> Result<SwiGluMlp> {
    let rows = inter.checked_mul(2).ok_or_else(|| bad_config(format!("{CONFIG_FILE}: MLP width {inter} overflows")))?;
    Ok(SwiGluMlp {
        up: UpProjection::Fused(rd.linear(input, rows, hidden, false)?),
        down: rd.linear(output, hidden, inter, false)?,
        intermediate: inter,
    })
}

pub(crate) struct Layer {
    pub input_norm: RmsNorm,
    pub attention: AttentionBlock,
    pub post_norm: RmsNorm,
    pub mlp: SwiGluMlp,
}

pub(crate) struct Weights {
    pub embedding: Embedding,
    pub lm_head: Linear,
    pub norm: RmsNorm,
    pub layers: Vec<Layer>,
    pub param_count: usize,
    pub weight_bytes: usize,
    pub dtype: &'static str,
    pub identity: u64,
}

/// Loads every tensor with its shape checked against `cfg`.
pub(crate) fn load(cfg: &LlamaConfig, store: &TensorStore, device: &Device) -> Result<Weights> {
    let (d, v, eps) = (cfg.hidden_size, cfg.vocab_size, cfg.rms_norm_eps);
    // More layers stored than configured would silently run a truncated model.
    if store.contains(&format!("model.layers.{}.input_layernorm.weight", cfg.num_layers)) {
        return Err(bad_config(format!(
            "{CONFIG_FILE}: field `num_hidden_layers` = {}, but the weights hold more layers",
            cfg.num_layers
        )));
    }
    let mut rd = TensorReader::new(store, device);
    let embedding = rd.matrix("model.embed_tokens.weight", v, d)?;
    let dims = AttentionDims {
        hidden: d,
        shape: AttentionShape {
            heads: cfg.num_heads,
            kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            scale: 1.0 / (cfg.head_dim as f32).sqrt(),
        },
        qkv_bias: cfg.qkv_bias,
        o_bias: cfg.o_bias,
    };
    let mut layers = Vec::with_capacity(cfg.num_layers.min(4096));
    for i in 0..cfg.num_layers {
        let p = format!("model.layers.{i}.");
        layers.push(Layer {
            input_norm: rd.rms_norm(&format!("{p}input_layernorm.weight"), d, eps)?,
            attention: load_attention(&mut rd, &format!("{p}self_attn."), dims)?,
            post_norm: rd.rms_norm(&format!("{p}post_attention_layernorm.weight"), d, eps)?,
            mlp: load_mlp(&mut rd, &format!("{p}mlp."), d, cfg.intermediate_size, cfg.mlp_bias)?,
        });
    }
    let norm = rd.rms_norm("model.norm.weight", d, eps)?;
    // As transformers: tied ⇒ the head is the embedding; untied ⇒ `lm_head.weight` must be stored.
    let lm_head = if cfg.tie_word_embeddings {
        embedding.clone()
    } else if rd.contains("lm_head.weight") {
        rd.matrix("lm_head.weight", v, d)?
    } else {
        return Err(bad_weights(format!(
            "tensor `lm_head.weight` is missing from the weights, and {CONFIG_FILE} sets `tie_word_embeddings: false` (the head is not the embedding)"
        )));
    };
    let (param_count, weight_bytes, dtype) = (rd.count, rd.bytes, rd.dtype.unwrap_or("f32"));
    Ok(Weights {
        embedding: Embedding::new(embedding),
        lm_head: Linear::head(lm_head, None),
        norm,
        layers,
        param_count,
        weight_bytes,
        dtype,
        identity: rd.identity(),
    })
}
