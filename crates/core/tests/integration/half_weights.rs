//! Half-precision checkpoints stay half precision: a bf16 / f16 copy of a reference model (written
//! here from the f32 fixture) loads with its dtype and about half the weight bytes, and its logits —
//! prefill (GEMM path) and decode steps (mat-vec path) — stay within 5e-2 of the float64 references.

use crate::model_support;

use std::path::{Path, PathBuf};

use model_support::*;
use phoenix_core::models::load_model_dir;
use phoenix_core::LogitsWanted;
use safetensors::{Dtype, SafeTensors};

const HALF_TOL: f64 = 5e-2;

/// A copy of model folder `src` whose model.safetensors holds every tensor as `dtype`.
fn half_copy(src: &Path, dtype: Dtype, tag: &str) -> PathBuf {
    half_copy_where(src, &|_| dtype, tag)
}

/// A copy of model folder `src` whose model.safetensors holds tensor `name` as `dtype_of(name)`.
fn half_copy_where(src: &Path, dtype_of: &dyn Fn(&str) -> Dtype, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("phoenix-half-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() && entry.file_name() != "model.safetensors" {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let converted: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F32, "{name}");
            let dtype = dtype_of(&name);
            let data: Vec<u8> = view
                .data()
                .chunks_exact(4)
                .flat_map(|b| {
                    let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    match dtype {
                        Dtype::BF16 => half::bf16::from_f32(v).to_le_bytes().to_vec(),
                        Dtype::F16 => half::f16::from_f32(v).to_le_bytes().to_vec(),
                        Dtype::F32 => v.to_le_bytes().to_vec(),
                        other => panic!("{other:?}"),
                    }
                })
                .collect();
            (name, dtype, view.shape().to_vec(), data)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = converted
        .iter()
        .map(|(name, dtype, shape, data)| {
            (name.clone(), safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap())
        })
        .collect();
    std::fs::write(dir.join("model.safetensors"), safetensors::tensor::serialize(views, None).unwrap()).unwrap();
    dir
}

fn check(src: PathBuf, reference: PathBuf, dtype: Dtype, name: &str) {
    let r = read_reference(reference);
    let full = load_model_dir(&src).unwrap();
    let dir = half_copy(&src, dtype, &format!("{}-{name}", src.file_name().unwrap().to_string_lossy()));
    let model = load_model_dir(&dir).unwrap();
    let (info, f32_info) = (model.info(), full.info());
    assert_eq!(info.dtype, name);
    assert_eq!(f32_info.dtype, "f32");
    assert_eq!(info.param_count, f32_info.param_count);
    // The matrices halve; the small per-channel tensors (norms, A, D, conv) stay f32.
    let ratio = info.weight_bytes as f64 / f32_info.weight_bytes as f64;
    assert!(
        (0.5..0.6).contains(&ratio),
        "{name}: weight bytes {} vs f32 {} (ratio {ratio})",
        info.weight_bytes,
        f32_info.weight_bytes
    );

    let v = info.vocab_size;
    let mut st = model.new_state().unwrap();
    let all = model.forward(&r.input_ids, st.as_mut(), LogitsWanted::All).unwrap();
    let prefill =
        r.logits.iter().enumerate().map(|(t, want)| max_abs_diff(&all[t * v..(t + 1) * v], want)).fold(0.0, f64::max);
    let k = r.input_ids.len() / 2;
    let mut st = model.new_state().unwrap();
    let mut decode =
        max_abs_diff(&model.forward(&r.input_ids[..k], st.as_mut(), LogitsWanted::Last).unwrap(), &r.logits[k - 1]);
    for t in k..r.input_ids.len() {
        let row = model.forward(&r.input_ids[t..t + 1], st.as_mut(), LogitsWanted::Last).unwrap();
        decode = decode.max(max_abs_diff(&row, &r.logits[t]));
    }
    eprintln!(
        "{name} {}: prefill max |Δ| {prefill:.3e}, decode {decode:.3e}, weight bytes {} (f32 {})",
        src.display(),
        info.weight_bytes,
        f32_info.weight_bytes
    );
    assert!(prefill <= HALF_TOL && decode <= HALF_TOL, "{name}: prefill {prefill}, decode {decode}");
    // Not trivially equal to the f32 model: the weights really are rounded.
    let mut st = full.new_state().unwrap();
    let f32_all = full.forward(&r.input_ids, st.as_mut(), LogitsWanted::All).unwrap();
    assert_ne!(all, f32_all, "{name} logits equal the f32 model's: weights were not rounded");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bf16_copies_keep_bf16_and_match_the_float64_references() {
    check(fixture("mamba1-tiny"), fixture("mamba1-tiny/reference.json"), Dtype::BF16, "bf16");
    check(lite_model(), lite_model().join("reference.json"), Dtype::BF16, "bf16");
}

#[test]
fn f16_copies_keep_f16_and_match_the_float64_references() {
    check(fixture("mamba1-tiny"), fixture("mamba1-tiny/reference.json"), Dtype::F16, "f16");
    check(lite_model(), lite_model().join("reference.json"), Dtype::F16, "f16");
}

#[test]
fn a_checkpoint_mixing_matrix_dtypes_reports_mixed() {
    let dtype_of = |name: &str| {
        if name.contains("in_proj") {
            Dtype::F16
        } else if name.contains("out_proj") {
            Dtype::BF16
        } else {
            Dtype::F32
        }
    };
    let dir = half_copy_where(&fixture("mamba1-tiny"), &dtype_of, "mixed");
    let model = load_model_dir(&dir).unwrap();
    assert_eq!(model.info().dtype, "mixed");
    let _ = std::fs::remove_dir_all(&dir);
}
