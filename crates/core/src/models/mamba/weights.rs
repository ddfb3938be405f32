//! Mamba-1 weights as the layers of `crate::nn` (big matrices mapped, small tensors on the device),
//! loaded with shape checks.

use candle_core::{Device, Tensor};

use crate::config::{ConfigLayout, MambaConfig, CONFIG_FILE};
use crate::error::{bad_config, bad_weights, Result};
use crate::loader::TensorStore;
use crate::nn::{CausalConvSilu, Embedding, Linear, RmsNorm, SelectiveScan};

pub(crate) struct MixerWeights {
    pub norm: RmsNorm,
    pub in_proj: Linear,
    pub conv: CausalConvSilu,
    pub x_proj: Linear,
    pub dt_proj: Linear,
    pub scan: SelectiveScan,
    pub out_proj: Linear,
}

pub(crate) struct Weights {
    pub embedding: Embedding,
    /// The embedding matrix itself when the head is tied.
    pub lm_head: Linear,
    pub norm_f: RmsNorm,
    pub layers: Vec<MixerWeights>,
    /// Parameters as stored (tied head counted once).
    pub param_count: usize,
    /// Bytes the weights occupy in memory as held.
    pub weight_bytes: usize,
    /// Dtype of the large matrices as held (`f32`, `f16`, `bf16`), or `mixed` when they differ.
    pub dtype: &'static str,
    /// [`crate::weights_identity`] of the tensors loaded (snapshots carry it).
    pub identity: u64,
}

/// The shared reader, under the name the SSM families' code uses.
pub(crate) use crate::models::reader::TensorReader as Reader;

/// Loads every tensor with its shape checked against `cfg`. Every size in `cfg` is thereby checked
/// against a tensor actually present before anything sized by it is allocated (the layer count
/// against the layers stored), so a config cannot make the loader reserve more than the file holds.
pub(crate) fn load(cfg: &MambaConfig, store: &TensorStore, device: &Device) -> Result<Weights> {
    let (d, e, n, k, r, v) =
        (cfg.hidden_size, cfg.intermediate_size, cfg.state_size, cfg.conv_kernel, cfg.dt_rank, cfg.vocab_size);
    let stored_layers = store.layer_count();
    if stored_layers != cfg.num_layers {
        return Err(bad_config(format!(
            "{CONFIG_FILE}: field `{}` = {}, but the weights hold {stored_layers} layers",
            cfg.layers_field(),
            cfg.num_layers
        )));
    }
    let mut rd = Reader::new(store, device);
    let on_device =
        |values: &[f32], shape: &[usize]| -> Result<Tensor> { Ok(Tensor::from_slice(values, shape, device)?) };
    let embedding = rd.matrix("backbone.embeddings.weight", v, d)?;
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = format!("backbone.layers.{i}.");
        let m = format!("{p}mixer.");
        let conv_name = format!("{m}conv1d.weight");
        // Accept the squeezed [E, K] form some converters write as well as PyTorch's [E, 1, K].
        let conv = if store.shape(&conv_name) == Some(&[e, k][..]) {
            rd.small(&conv_name, &[e, k])?
        } else {
            rd.small(&conv_name, &[e, 1, k])?
        };
        let mut conv_weight_t = zeros(conv.len(), &conv_name)?;
        for c in 0..e {
            for j in 0..k {
                conv_weight_t[j * e + c] = conv[c * k + j];
            }
        }
        let conv_bias = if cfg.use_conv_bias {
            rd.small(&format!("{m}conv1d.bias"), &[e])?
        } else {
            zeros(e, "conv1d.bias")?.into()
        };
        // A = -exp(A_log), in f32 (reference §7.1).
        let a: Vec<f32> = rd.small(&format!("{m}A_log"), &[e, n])?.iter().map(|x| -x.exp()).collect();
        let norm = RmsNorm::new(rd.tensor(&format!("{p}norm.weight"), &[d])?, cfg.norm_eps);
        let in_proj_w = rd.matrix(&format!("{m}in_proj.weight"), 2 * e, d)?;
        let in_proj_b = if cfg.use_bias { Some(rd.tensor(&format!("{m}in_proj.bias"), &[2 * e])?) } else { None };
        let x_proj = Linear::new(rd.matrix(&format!("{m}x_proj.weight"), r + 2 * n, e)?, None);
        let dt_proj = Linear::new(rd.matrix(&format!("{m}dt_proj.weight"), e, r)?, None);
        let dt_bias = rd.tensor(&format!("{m}dt_proj.bias"), &[e])?;
        let d_skip = rd.tensor(&format!("{m}D"), &[e])?;
        let out_proj_w = rd.matrix(&format!("{m}out_proj.weight"), d, e)?;
        let out_proj_b = if cfg.use_bias { Some(rd.tensor(&format!("{m}out_proj.bias"), &[d])?) } else { None };
        layers.push(MixerWeights {
            norm,
            in_proj: Linear::new(in_proj_w, in_proj_b),
            conv: CausalConvSilu::new(on_device(&conv_weight_t, &[k, e])?, on_device(&conv_bias, &[e])?, e, k),
            x_proj,
            dt_proj,
            scan: SelectiveScan::new(on_device(&a, &[e, n])?, dt_bias, d_skip, e, n),
            out_proj: Linear::new(out_proj_w, out_proj_b),
        });
    }
    let norm_f = RmsNorm::new(rd.tensor("backbone.norm_f.weight", &[d])?, cfg.norm_eps);
    // Tied (the default) ⇒ reuse the embedding; a stored duplicate is not loaded. Untied ⇒ the head
    // must be stored: silently tying would run a different model than the one described.
    let lm_head = if cfg.tie_embeddings {
        embedding.clone()
    } else if store.contains("lm_head.weight") {
        rd.matrix("lm_head.weight", v, d)?
    } else {
        let field = match cfg.layout {
            ConfigLayout::HuggingFace => "tie_word_embeddings",
            ConfigLayout::StateSpaces => "tie_embeddings",
        };
        return Err(bad_weights(format!(
            "tensor `lm_head.weight` is missing from the weights, and {CONFIG_FILE} sets `{field}: false` (the head is not the embedding)"
        )));
    };
    Ok(Weights {
        embedding: Embedding::new(embedding),
        lm_head: Linear::head(lm_head, None),
        norm_f,
        layers,
        param_count: rd.count,
        weight_bytes: rd.bytes,
        dtype: rd.dtype.unwrap_or("f32"),
        identity: rd.digest.finish(),
    })
}

/// `len` zeros for a buffer derived from tensor `what`; its size comes from a file, so running out of
/// memory is a typed error, not an abort.
pub(crate) fn zeros(len: usize, what: &str) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| bad_weights(format!("buffer for `{what}` ({len} values) does not fit in memory")))?;
    v.resize(len, 0.0);
    Ok(v)
}
