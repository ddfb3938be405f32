//! Mamba-1 weights as f32 slices in the layouts the kernels want, loaded with shape checks.

use crate::config::MambaConfig;
use crate::error::Result;
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

pub(crate) fn load(cfg: &MambaConfig, store: &TensorStore) -> Result<Weights> {
    let (d, e, n, k, r, v) =
        (cfg.hidden_size, cfg.intermediate_size, cfg.state_size, cfg.conv_kernel, cfg.dt_rank, cfg.vocab_size);
    let mut count = 0usize;
    let mut digest = WeightsDigest::new();
    let mut get = |name: &str, shape: &[usize]| -> Result<F32Buf> {
        let t = store.load_f32(name, shape)?;
        count += t.len();
        digest.add(name, &t);
        Ok(t)
    };
    let embedding = get("backbone.embeddings.weight", &[v, d])?;
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = format!("backbone.layers.{i}.");
        let m = format!("{p}mixer.");
        let conv_name = format!("{m}conv1d.weight");
        // Accept the squeezed [E, K] form some converters write as well as PyTorch's [E, 1, K].
        let conv = if store.shape(&conv_name) == Some(&[e, k][..]) {
            get(&conv_name, &[e, k])?
        } else {
            get(&conv_name, &[e, 1, k])?
        };
        let mut conv_weight_t = vec![0f32; k * e];
        for c in 0..e {
            for j in 0..k {
                conv_weight_t[j * e + c] = conv[c * k + j];
            }
        }
        let a_log = get(&format!("{m}A_log"), &[e, n])?;
        layers.push(MixerWeights {
            norm: get(&format!("{p}norm.weight"), &[d])?,
            in_proj: get(&format!("{m}in_proj.weight"), &[2 * e, d])?,
            in_proj_bias: if cfg.use_bias { Some(get(&format!("{m}in_proj.bias"), &[2 * e])?) } else { None },
            conv_weight_t,
            conv_bias: if cfg.use_conv_bias { get(&format!("{m}conv1d.bias"), &[e])? } else { vec![0.0; e].into() },
            x_proj: get(&format!("{m}x_proj.weight"), &[r + 2 * n, e])?,
            dt_proj: get(&format!("{m}dt_proj.weight"), &[e, r])?,
            dt_bias: get(&format!("{m}dt_proj.bias"), &[e])?,
            a: a_log.iter().map(|x| -x.exp()).collect(),
            d: get(&format!("{m}D"), &[e])?,
            out_proj: get(&format!("{m}out_proj.weight"), &[d, e])?,
            out_proj_bias: if cfg.use_bias { Some(get(&format!("{m}out_proj.bias"), &[d])?) } else { None },
        });
    }
    let norm_f = get("backbone.norm_f.weight", &[d])?;
    // Tied (the default) or absent head ⇒ reuse the embedding; a stored duplicate is not loaded.
    let lm_head = if !cfg.tie_embeddings && store.contains("lm_head.weight") {
        Some(get("lm_head.weight", &[v, d])?)
    } else {
        None
    };
    Ok(Weights { embedding, lm_head, norm_f, layers, param_count: count, identity: digest.finish() })
}
