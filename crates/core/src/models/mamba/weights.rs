//! Mamba-1 weights as f32 slices in the layouts the kernels want, loaded with shape checks.

use crate::config::{ConfigLayout, MambaConfig, CONFIG_FILE};
use crate::error::{bad_config, bad_weights, Result};
use crate::loader::{F32Buf, TensorStore};
use crate::weights_identity::WeightsDigest;

pub(crate) struct MixerWeights {
    pub norm: F32Buf,                  // [D]
    pub in_proj: F32Buf,               // [2E, D]
    pub in_proj_bias: Option<F32Buf>,  // [2E]
    pub conv_weight_t: Vec<f32>,       // [K, E] (tap-major; stored [E, 1, K])
    pub conv_bias: F32Buf,             // [E] (zeros without conv bias)
    pub x_proj: F32Buf,                // [R + 2N, E]
    pub dt_proj: F32Buf,               // [E, R]
    pub dt_bias: F32Buf,               // [E]
    pub a: Vec<f32>,                   // [E, N] = -exp(A_log), in f32 (reference §7.1)
    pub d: F32Buf,                     // [E]
    pub out_proj: F32Buf,              // [D, E]
    pub out_proj_bias: Option<F32Buf>, // [D]
}

pub(crate) struct Weights {
    pub embedding: F32Buf, // [V, D]
    /// `None` when the head is tied to the embedding.
    pub lm_head: Option<F32Buf>, // [V, D]
    pub norm_f: F32Buf,    // [D]
    pub layers: Vec<MixerWeights>,
    /// Parameters as stored (tied head counted once).
    pub param_count: usize,
    /// [`crate::weights_identity`] of the tensors loaded (snapshots carry it).
    pub identity: u64,
}

/// Loads every tensor with its shape checked against `cfg`. Every size in `cfg` is thereby checked
/// against a tensor actually present before anything sized by it is allocated (the layer count
/// against the layers stored), so a config cannot make the loader reserve more than the file holds.
pub(crate) fn load(cfg: &MambaConfig, store: &TensorStore) -> Result<Weights> {
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
    let mut count = 0usize;
    let mut digest = WeightsDigest::new();
    // `small`: a per-channel tensor, scanned for NaN / infinity (big matrices are not).
    let mut load = |name: &str, shape: &[usize], small: bool| -> Result<F32Buf> {
        let t = if small { store.load_f32_finite(name, shape)? } else { store.load_f32(name, shape)? };
        count = count.saturating_add(t.len());
        digest.add(name, &t);
        Ok(t)
    };
    let embedding = load("backbone.embeddings.weight", &[v, d], false)?;
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = format!("backbone.layers.{i}.");
        let m = format!("{p}mixer.");
        let conv_name = format!("{m}conv1d.weight");
        // Accept the squeezed [E, K] form some converters write as well as PyTorch's [E, 1, K].
        let conv = if store.shape(&conv_name) == Some(&[e, k][..]) {
            load(&conv_name, &[e, k], true)?
        } else {
            load(&conv_name, &[e, 1, k], true)?
        };
        let mut conv_weight_t = zeros(conv.len(), &conv_name)?;
        for c in 0..e {
            for j in 0..k {
                conv_weight_t[j * e + c] = conv[c * k + j];
            }
        }
        let a_log = load(&format!("{m}A_log"), &[e, n], true)?;
        layers.push(MixerWeights {
            norm: load(&format!("{p}norm.weight"), &[d], true)?,
            in_proj: load(&format!("{m}in_proj.weight"), &[2 * e, d], false)?,
            in_proj_bias: if cfg.use_bias { Some(load(&format!("{m}in_proj.bias"), &[2 * e], true)?) } else { None },
            conv_weight_t,
            conv_bias: if cfg.use_conv_bias {
                load(&format!("{m}conv1d.bias"), &[e], true)?
            } else {
                zeros(e, "conv1d.bias")?.into()
            },
            x_proj: load(&format!("{m}x_proj.weight"), &[r + 2 * n, e], false)?,
            dt_proj: load(&format!("{m}dt_proj.weight"), &[e, r], false)?,
            dt_bias: load(&format!("{m}dt_proj.bias"), &[e], true)?,
            a: {
                let mut a = zeros(a_log.len(), "A_log")?;
                a.iter_mut().zip(a_log.iter()).for_each(|(a, x)| *a = -x.exp());
                a
            },
            d: load(&format!("{m}D"), &[e], true)?,
            out_proj: load(&format!("{m}out_proj.weight"), &[d, e], false)?,
            out_proj_bias: if cfg.use_bias { Some(load(&format!("{m}out_proj.bias"), &[d], true)?) } else { None },
        });
    }
    let norm_f = load("backbone.norm_f.weight", &[d], true)?;
    // Tied (the default) ⇒ reuse the embedding; a stored duplicate is not loaded. Untied ⇒ the head
    // must be stored: silently tying would run a different model than the one described.
    let lm_head = if cfg.tie_embeddings {
        None
    } else if store.contains("lm_head.weight") {
        Some(load("lm_head.weight", &[v, d], false)?)
    } else {
        let field = match cfg.layout {
            ConfigLayout::HuggingFace => "tie_word_embeddings",
            ConfigLayout::StateSpaces => "tie_embeddings",
        };
        return Err(bad_weights(format!(
            "tensor `lm_head.weight` is missing from the weights, and {CONFIG_FILE} sets `{field}: false` (the head is not the embedding)"
        )));
    };
    Ok(Weights { embedding, lm_head, norm_f, layers, param_count: count, identity: digest.finish() })
}

/// `len` zeros for a buffer derived from tensor `what`; its size comes from a file, so running out of
/// memory is a typed error, not an abort.
fn zeros(len: usize, what: &str) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| bad_weights(format!("buffer for `{what}` ({len} values) does not fit in memory")))?;
    v.resize(len, 0.0);
    Ok(v)
}
