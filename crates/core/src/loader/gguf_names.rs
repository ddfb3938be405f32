//! GGUF tensors under the Hugging Face names the families read, with what llama.cpp's converter
//! changed undone: Mamba's `ssm_a` (stored as `A = -exp(A_log)`) back to `A_log`, squeezed conv
//! weights back to `[C, 1, K]`, Mamba-2's `[H, 1]` vectors to `[H]` and grouped `ssm_norm` to `[E]`,
//! Granite's split shared MLP (`ffn_gate` + `ffn_up`) back to one `input_linear`. The one rename
//! table per architecture lives here. Llama's permuted Q/K rows are NOT unpermuted (that would copy
//! quantized weights): the store tells the family to turn interleaved pairs instead.

use std::collections::HashMap;
use std::sync::Arc;

use super::shown::shown_name;
use super::{to_f32, FileBytes, RawTensor, WeightDType};
use crate::error::{bad_weights, unsupported_model, Result};

/// The tensor families of the GGUF architectures this build runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufArch {
    /// `llama`: Q/K rows permuted by the converter (interleaved RoPE).
    Llama,
    /// `qwen2`: stored as in HF (rotate-half RoPE).
    Qwen2,
    Mamba,
    Mamba2,
    GraniteHybrid,
}

impl GgufArch {
    /// The architecture `general.architecture` names; `E_UNSUPPORTED_MODEL` otherwise.
    pub fn parse(arch: &str, label: &str) -> Result<Self> {
        Ok(match arch {
            "llama" => Self::Llama,
            "qwen2" => Self::Qwen2,
            "mamba" => Self::Mamba,
            "mamba2" => Self::Mamba2,
            "granitehybrid" => Self::GraniteHybrid,
            other => {
                return Err(unsupported_model(format!(
                    "{label}: GGUF architecture `{}` is not supported (supported: llama, qwen2, mamba, mamba2, granitehybrid)",
                    shown_name(other)
                )))
            }
        })
    }

    /// Whether the converter permuted Q/K rows so that RoPE turns adjacent pairs `(2j, 2j+1)`.
    pub fn qk_interleaved(self) -> bool {
        matches!(self, Self::Llama | Self::GraniteHybrid)
    }
}

/// What to do with one GGUF tensor.
enum Plan {
    /// Same data under the HF name.
    Rename(String),
    /// Same data, HF shape: `[C, K]` conv → `[C, 1, K]`; `[H, 1]` / `[G, E/G]` → one dimension.
    Reshape(String, Reshape),
    /// `A = -exp(A_log)` back to `A_log = ln(-A)` (flattened to `[H]` for Mamba-2 layouts).
    ALog(String, bool),
    /// Half of a split matrix: `input_linear = [gate; up]`.
    Half(String, bool),
}

#[derive(Clone, Copy)]
enum Reshape {
    Conv,
    Flat,
}

/// Checks that every tensor name is one this build maps for `arch` (what [`to_hf`] refuses first),
/// without touching tensor data: for describing a file.
pub fn check_names<'a>(arch: GgufArch, names: impl IntoIterator<Item = &'a String>, label: &str) -> Result<()> {
    match names.into_iter().find(|name| plan(arch, name).is_none()) {
        Some(name) => Err(unmapped(arch, name, label)),
        None => Ok(()),
    }
}

fn unmapped(arch: GgufArch, name: &str, label: &str) -> crate::error::PhoenixError {
    unsupported_model(format!(
        "{label}: tensor `{}` is not one this build maps for GGUF architecture {arch:?}",
        shown_name(name)
    ))
}

/// The HF names and data of every tensor of a GGUF model of `arch`.
pub fn to_hf(arch: GgufArch, tensors: &HashMap<String, RawTensor>, label: &str) -> Result<HashMap<String, RawTensor>> {
    let mut out = HashMap::new();
    // Two GGUF tensors for one HF name (`ffn_gate` and `ffn_gate_shexp`, say) would silently drop one.
    let mut put = |hf: String, t: RawTensor, name: &str| -> Result<()> {
        match out.insert(hf.clone(), t) {
            None => Ok(()),
            Some(_) => Err(bad_weights(format!(
                "{label}: tensor `{}` maps to `{hf}`, which another tensor of the file already fills",
                shown_name(name)
            ))),
        }
    };
    let mut halves: HashMap<String, [Option<RawTensor>; 2]> = HashMap::new();
    // Cloning a raw tensor copies its shape and a reference to the file buffer, not its data.
    for (name, t) in tensors.iter().map(|(n, t)| (n.clone(), t.clone())) {
        let plan = plan(arch, &name).ok_or_else(|| unmapped(arch, &name, label))?;
        match plan {
            Plan::Rename(hf) => put(hf, t, &name)?,
            Plan::Reshape(hf, how) => {
                let shape = match (how, t.shape.as_slice()) {
                    (Reshape::Conv, &[c, k]) => vec![c, 1, k],
                    (Reshape::Conv, other) => other.to_vec(),
                    (Reshape::Flat, dims) => vec![dims.iter().product()],
                };
                let t = RawTensor { shape, ..t };
                check_bytes(&t, &name, label)?;
                put(hf, t, &name)?;
            }
            Plan::ALog(hf, flat) => put(hf, a_log(t, &name, flat, label)?, &name)?,
            Plan::Half(hf, second) => {
                let slot = &mut halves.entry(hf.clone()).or_default()[second as usize];
                if slot.replace(t).is_some() {
                    return Err(bad_weights(format!(
                        "{label}: tensor `{}` is a second {} half of `{hf}`",
                        shown_name(&name),
                        if second { "up" } else { "gate" }
                    )));
                }
            }
        }
    }
    for (hf, [first, second]) in halves {
        let (Some(a), Some(b)) = (first, second) else {
            return Err(bad_weights(format!(
                "{label}: `{hf}` needs both ffn_gate and ffn_up of its layer; one is missing"
            )));
        };
        let both = stack(a, b, &hf, label)?;
        put(hf.clone(), both, &hf)?;
    }
    Ok(out)
}

/// The plan for GGUF tensor `name` of `arch`; `None` for names this build does not map.
fn plan(arch: GgufArch, name: &str) -> Option<Plan> {
    use GgufArch::*;
    let top = |hf: &str| Some(Plan::Rename(hf.to_string()));
    let (embed, norm) = match arch {
        Mamba | Mamba2 => ("backbone.embeddings.weight", "backbone.norm_f.weight"),
        Llama | Qwen2 | GraniteHybrid => ("model.embed_tokens.weight", "model.norm.weight"),
    };
    match name {
        "token_embd.weight" => return top(embed),
        "output_norm.weight" => return top(norm),
        "output.weight" => return top("lm_head.weight"),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let i: usize = layer.parse().ok()?;
    if layer != i.to_string() {
        return None; // `blk.01.` is not a layer index
    }
    let (base, suffix) = match part.rsplit_once('.') {
        Some((b, s @ ("weight" | "bias"))) => (b, s),
        _ => (part, ""),
    };
    let with = |hf: String| if suffix.is_empty() { hf } else { format!("{hf}.{suffix}") };
    let rename = |hf: String| Some(Plan::Rename(with(hf)));
    match arch {
        Llama | Qwen2 => {
            let p = format!("model.layers.{i}.");
            match base {
                "attn_norm" => rename(format!("{p}input_layernorm")),
                "ffn_norm" => rename(format!("{p}post_attention_layernorm")),
                "attn_q" => rename(format!("{p}self_attn.q_proj")),
                "attn_k" => rename(format!("{p}self_attn.k_proj")),
                "attn_v" => rename(format!("{p}self_attn.v_proj")),
                "attn_output" => rename(format!("{p}self_attn.o_proj")),
                "ffn_gate" => rename(format!("{p}mlp.gate_proj")),
                "ffn_up" => rename(format!("{p}mlp.up_proj")),
                "ffn_down" => rename(format!("{p}mlp.down_proj")),
                _ => None,
            }
        }
        Mamba => {
            let m = format!("backbone.layers.{i}.mixer.");
            match (base, suffix) {
                ("attn_norm", _) => rename(format!("backbone.layers.{i}.norm")),
                ("ssm_a", "") => Some(Plan::ALog(format!("{m}A_log"), false)),
                ("ssm_d", "") => rename(format!("{m}D")),
                ("ssm_conv1d", "weight") => Some(Plan::Reshape(with(format!("{m}conv1d")), Reshape::Conv)),
                _ => mamba_common(base, &m).map(|hf| Plan::Rename(with(hf))),
            }
        }
        Mamba2 => mamba2_layer(&format!("backbone.layers.{i}.mixer."), base, suffix, &with)
            .or_else(|| (base == "attn_norm").then(|| Plan::Rename(with(format!("backbone.layers.{i}.norm"))))),
        GraniteHybrid => {
            let p = format!("model.layers.{i}.");
            match base {
                "attn_norm" => rename(format!("{p}input_layernorm")),
                "ffn_norm" => rename(format!("{p}post_attention_layernorm")),
                "attn_q" => rename(format!("{p}self_attn.q_proj")),
                "attn_k" => rename(format!("{p}self_attn.k_proj")),
                "attn_v" => rename(format!("{p}self_attn.v_proj")),
                "attn_output" => rename(format!("{p}self_attn.o_proj")),
                "ffn_gate" | "ffn_gate_shexp" => Some(Plan::Half(with(format!("{p}shared_mlp.input_linear")), false)),
                "ffn_up" | "ffn_up_shexp" => Some(Plan::Half(with(format!("{p}shared_mlp.input_linear")), true)),
                "ffn_down" | "ffn_down_shexp" => rename(format!("{p}shared_mlp.output_linear")),
                _ => mamba2_layer(&format!("{p}mamba."), base, suffix, &with),
            }
        }
    }
}

/// Tensors Mamba-1 and Mamba-2 mixers name alike.
fn mamba_common(base: &str, m: &str) -> Option<String> {
    Some(match base {
        "ssm_in" => format!("{m}in_proj"),
        "ssm_conv1d" => format!("{m}conv1d"),
        "ssm_x" => format!("{m}x_proj"),
        "ssm_dt" => format!("{m}dt_proj"),
        "ssm_out" => format!("{m}out_proj"),
        _ => return None,
    })
}

/// A Mamba-2 mixer tensor under prefix `m`.
fn mamba2_layer(m: &str, base: &str, suffix: &str, with: &dyn Fn(String) -> String) -> Option<Plan> {
    match (base, suffix) {
        ("ssm_a", "") => Some(Plan::ALog(format!("{m}A_log"), true)),
        ("ssm_d", "") => Some(Plan::Reshape(format!("{m}D"), Reshape::Flat)),
        ("ssm_norm", "weight") => Some(Plan::Reshape(format!("{m}norm.weight"), Reshape::Flat)),
        ("ssm_dt", "bias") => Some(Plan::Rename(format!("{m}dt_bias"))),
        ("ssm_conv1d", "weight") => Some(Plan::Reshape(with(format!("{m}conv1d")), Reshape::Conv)),
        ("ssm_in" | "ssm_conv1d" | "ssm_out", _) => mamba_common(base, m).map(|hf| Plan::Rename(with(hf))),
        _ => None,
    }
}

fn check_bytes(t: &RawTensor, name: &str, label: &str) -> Result<()> {
    if t.dtype.tensor_bytes(&t.shape) != Some(t.end - t.start) {
        return Err(bad_weights(format!(
            "{label}: tensor `{}` cannot take the shape {:?} its model needs",
            shown_name(name),
            t.shape
        )));
    }
    Ok(())
}

/// `A_log = ln(-A)` from GGUF's `A`; every `A` must be finite and negative.
fn a_log(t: RawTensor, name: &str, flat: bool, label: &str) -> Result<RawTensor> {
    let shown = shown_name(name);
    if matches!(t.dtype, WeightDType::Quant(_)) {
        return Err(unsupported_model(format!("{label}: tensor `{shown}` is quantized; A must be a float tensor")));
    }
    let a = to_f32(t.dtype, t.data())
        .ok_or_else(|| bad_weights(format!("{label}: tensor `{shown}` does not fit in memory")))?;
    if let Some(at) = a.iter().position(|x| !(x.is_finite() && *x < 0.0)) {
        return Err(bad_weights(format!(
            "{label}: tensor `{shown}` holds A = -exp(A_log) values that are not finite and negative (element {at})"
        )));
    }
    let bytes: Vec<u8> = a.iter().flat_map(|x| (-x).ln().to_le_bytes()).collect();
    let shape = if flat { vec![a.len()] } else { t.shape.clone() };
    let end = bytes.len();
    Ok(RawTensor {
        dtype: WeightDType::F32,
        shape,
        file: t.file,
        bytes: Arc::new(FileBytes::Owned(bytes)),
        start: 0,
        end,
    })
}

/// `[a; b]` along the rows: same dtype and shape, bytes one after the other (quantized rows are
/// whole blocks, so this holds for every type; the data is copied, not converted).
fn stack(a: RawTensor, b: RawTensor, hf: &str, label: &str) -> Result<RawTensor> {
    if a.dtype != b.dtype || a.shape != b.shape || a.shape.is_empty() {
        return Err(bad_weights(format!(
            "{label}: the ffn_gate and ffn_up halves of `{hf}` differ in type or shape ({} {:?} / {} {:?})",
            a.dtype.name(),
            a.shape,
            b.dtype.name(),
            b.shape
        )));
    }
    let mut shape = a.shape.clone();
    shape[0] *= 2;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(a.data().len() + b.data().len())
        .map_err(|_| bad_weights(format!("{label}: `{hf}` does not fit in memory")))?;
    bytes.extend_from_slice(a.data());
    bytes.extend_from_slice(b.data());
    let end = bytes.len();
    Ok(RawTensor { dtype: a.dtype, shape, file: a.file, bytes: Arc::new(FileBytes::Owned(bytes)), start: 0, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hf(arch: GgufArch, name: &str) -> Option<String> {
        plan(arch, name).map(|p| match p {
            Plan::Rename(n) | Plan::Reshape(n, _) | Plan::ALog(n, _) | Plan::Half(n, _) => n,
        })
    }

    #[test]
    fn names_map_per_architecture() {
        use GgufArch::*;
        assert_eq!(hf(Llama, "blk.2.attn_q.bias").unwrap(), "model.layers.2.self_attn.q_proj.bias");
        assert_eq!(hf(Qwen2, "blk.0.ffn_down.weight").unwrap(), "model.layers.0.mlp.down_proj.weight");
        assert_eq!(hf(Mamba, "blk.1.ssm_a").unwrap(), "backbone.layers.1.mixer.A_log");
        assert_eq!(hf(Mamba, "blk.1.ssm_dt.bias").unwrap(), "backbone.layers.1.mixer.dt_proj.bias");
        assert_eq!(hf(Mamba2, "blk.1.ssm_dt.bias").unwrap(), "backbone.layers.1.mixer.dt_bias");
        assert_eq!(hf(Mamba2, "blk.0.ssm_norm.weight").unwrap(), "backbone.layers.0.mixer.norm.weight");
        assert_eq!(hf(GraniteHybrid, "blk.3.ssm_in.weight").unwrap(), "model.layers.3.mamba.in_proj.weight");
        assert_eq!(hf(GraniteHybrid, "blk.3.ffn_up.weight").unwrap(), "model.layers.3.shared_mlp.input_linear.weight");
        assert_eq!(hf(Mamba, "output.weight").unwrap(), "lm_head.weight");
        for unknown in ["blk.01.attn_q.weight", "blk.x.attn_q.weight", "rope_freqs.weight", "blk.0.ssm_x.weight"] {
            assert!(hf(Llama, unknown).is_none(), "{unknown}");
        }
        assert!(hf(Mamba2, "blk.0.ssm_x.weight").is_none());
    }
}
