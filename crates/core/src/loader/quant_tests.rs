//! Quantized tensors through the loader and whole models, without a GGUF file: the tensors of the
//! `llama-tiny` and `mamba1-tiny` fixtures quantized with ggml's reference (candle's `k_quants`) as
//! the real target file SmolLM2-135M-Instruct.Q4_1.gguf stores them (Q8_0 token embedding — the tied
//! head too where the model ties it — Q4_1 every other matrix whose rows are whole blocks; here also
//! the final norm as Q8_0, the small-tensor dequantizing path), handed to the model as
//! `WeightDType::Quant` RawTensors — what the GGUF reader produces.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::config::MambaConfig;
use crate::error::ErrorCode;
use crate::model::{LanguageModel, LoadOptions, LogitsWanted};
use crate::models::llama::{LlamaConfig, LlamaModel};
use crate::models::MambaModel;
use crate::nn::kv_cache::KvDtype;
use crate::nn::WeightMatrix;
use crate::ops::ggml_quantize;

fn fixture(name: &str) -> (ModelFiles, TensorStore) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures").join(name);
    let files = ModelFiles::from_dir(&dir).unwrap();
    let store = TensorStore::open(&files).unwrap();
    (files, store)
}

/// A tensor of its own in-memory "file".
fn tensor(name: &str, dtype: WeightDType, shape: Vec<usize>, bytes: Vec<u8>) -> Result<RawTensor> {
    let len = bytes.len();
    raw_tensor("mem.gguf", name, dtype, shape, Arc::new(FileBytes::Owned(bytes)), 0, len)
}

fn f32_tensor(name: &str, shape: Vec<usize>, values: &[f32]) -> RawTensor {
    tensor(name, WeightDType::F32, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect()).unwrap()
}

/// The kind SmolLM2's Q4_1 file uses for `name`, or `None` for a tensor it keeps in f32.
fn kind_for(name: &str, shape: &[usize]) -> Option<QuantKind> {
    match name {
        "model.embed_tokens.weight" | "backbone.embeddings.weight" | "model.norm.weight" | "backbone.norm_f.weight" => {
            Some(QuantKind::Q8_0)
        }
        _ if shape.len() == 2 && shape[1].is_multiple_of(32) => Some(QuantKind::Q4_1),
        _ => None,
    }
}

/// The fixture as two stores: quantized tensors, and the same values ggml dequantizes them to, in
/// f32; and the bytes quantizing the matrices saved.
fn quantized_and_dequantized(fixture_name: &str) -> (TensorStore, TensorStore, usize) {
    let (_, store) = fixture(fixture_name);
    let (mut quant, mut wide, mut saved) = (HashMap::new(), HashMap::new(), 0);
    for (name, t) in &store.tensors {
        let values = store.load_f32(name, &t.shape).unwrap();
        let (q, deq) = match kind_for(name, &t.shape) {
            Some(kind) => {
                let (bytes, deq) = ggml_quantize(kind, &values);
                if t.shape.len() == 2 {
                    saved += values.len() * 4 - bytes.len();
                }
                (tensor(name, WeightDType::Quant(kind), t.shape.clone(), bytes).unwrap(), deq)
            }
            None => (f32_tensor(name, t.shape.clone(), &values), values.to_vec()),
        };
        quant.insert(name.clone(), q);
        wide.insert(name.clone(), f32_tensor(name, t.shape.clone(), &deq));
    }
    let store = |tensors| TensorStore { format: WeightFormat::Safetensors, tensors, rope_interleaved: false };
    (store(quant), store(wide), saved)
}

fn llama_with(store: &TensorStore, options: &LoadOptions) -> LlamaModel {
    let (files, _) = fixture("llama-tiny");
    let cfg = LlamaConfig::from_json_str(&files.text("config.json").unwrap()).unwrap();
    LlamaModel::from_store(cfg, store, options).unwrap()
}

fn llama(store: &TensorStore) -> LlamaModel {
    llama_with(store, &LoadOptions::default())
}

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().fold((0, f32::MIN), |(bi, bv), (i, &x)| if x > bv { (i, x) } else { (bi, bv) }).0 as u32
}

/// Prefill logits for every prompt position, then `steps` greedy decode steps: (prefill, decode
/// logits per step, generated ids).
fn run(m: &dyn LanguageModel, prompt: &[u32], steps: usize) -> (Vec<f32>, Vec<Vec<f32>>, Vec<u32>) {
    let mut st = m.new_state().unwrap();
    let prefill = m.forward(prompt, st.as_mut(), LogitsWanted::All).unwrap();
    let vocab = m.info().vocab_size;
    let mut next = argmax(&prefill[prefill.len() - vocab..]);
    let (mut logits, mut ids) = (Vec::new(), vec![next]);
    for _ in 0..steps {
        let l = m.forward(&[next], st.as_mut(), LogitsWanted::Last).unwrap();
        next = argmax(&l);
        ids.push(next);
        logits.push(l);
    }
    (prefill, logits, ids)
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// The quantized model runs the dequantized model's computation: prefill (f32 GEMM on dequantized
/// panels) equal up to f32 summation order; decode differs only by the 8-bit activation rounding of
/// each mat-vec (≤ half a step per value, ~0.2 % RMS of a product), compounded over 3 layers of
/// random weights: its logits stay within 3 % of the largest logit — measured 1.1 % (llama), 1.0 %
/// (mamba) — and the greedy tokens are the same.
fn assert_quantized_matches_dequantized(name: &str, load: impl Fn(&TensorStore) -> Box<dyn LanguageModel>) {
    let (quant, wide, saved) = quantized_and_dequantized(name);
    let (q, f) = (load(&quant), load(&wide));
    assert_eq!((q.info().dtype.as_str(), f.info().dtype.as_str()), ("mixed", "f32"), "Q8_0 embedding + Q4_1");
    // Every matrix is counted at its blocks' size (the quantized norm is held as f32 once loaded).
    assert_eq!(q.info().weight_bytes + saved, f.info().weight_bytes);

    let vocab = q.info().vocab_size as u32;
    let prompt: Vec<u32> = (0..14).map(|i| (i * 37 + 5) % vocab).collect();
    let (qp, qd, qids) = run(q.as_ref(), &prompt, 16);
    let (fp, fd, fids) = run(f.as_ref(), &prompt, 16);
    let prefill_diff = max_diff(&qp, &fp);
    assert!(prefill_diff <= 1e-4 * max_abs(&fp).max(1.0), "prefill max |Δ| {prefill_diff}");
    let mut worst = 0f32;
    for (step, (a, b)) in qd.iter().zip(&fd).enumerate() {
        let d = max_diff(a, b);
        worst = worst.max(d / max_abs(b));
        assert!(d <= 0.03 * max_abs(b), "decode step {step}: max |Δ| {d} of {}", max_abs(b));
    }
    assert_eq!(qids, fids, "greedy tokens");
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("quantized {name}: prefill max |Δ| {prefill_diff:e}, decode max |Δ| / max|logit| {worst:.4}\n")
            .as_bytes(),
    );
}

#[test]
fn a_quantized_llama_matches_the_same_model_on_its_dequantized_weights() {
    assert_quantized_matches_dequantized("llama-tiny", |store| Box::new(llama(store)));
}

/// Quantized weights with an f16 KV cache (the `kvCache` load option; llama.cpp's default): half the
/// state per token, a snapshot in f16 that an f32-cache load of the same weights refuses, and logits
/// that move by the keys' and values' rounding only — the same greedy tokens.
#[test]
fn a_quantized_llama_with_an_f16_kv_cache_moves_only_by_its_rounding() {
    let (quant, _, _) = quantized_and_dequantized("llama-tiny");
    let half = llama_with(&quant, &LoadOptions { kv_cache: KvDtype::F16, ..Default::default() });
    let full = llama(&quant);
    let kv_dtype = |m: &LlamaModel| m.info().architecture["kvCacheDtype"].as_str().unwrap().to_string();
    assert_eq!((kv_dtype(&half), kv_dtype(&full)), ("f16".to_string(), "f32".to_string()));
    assert_eq!(2 * half.info().state_bytes_per_token, full.info().state_bytes_per_token);
    let vocab = half.info().vocab_size as u32;
    let prompt: Vec<u32> = (0..14).map(|i| (i * 37 + 5) % vocab).collect();
    let (hp, hd, hids) = run(&half, &prompt, 16);
    let (fp, fd, fids) = run(&full, &prompt, 16);
    assert_eq!(hids, fids, "greedy tokens");
    let prefill_diff = max_diff(&hp, &fp);
    let decode_diff = hd.iter().zip(&fd).map(|(a, b)| max_diff(a, b) / max_abs(b)).fold(0f32, f32::max);
    assert!(prefill_diff > 0.0, "the f16 cache rounds");
    // f16 keeps 11 significant bits: each key and value moves by ≤ 2^-12 of itself. Decode steps
    // round activations to 8 bits for the quantized mat-vecs, where a moved value can flip a rounding:
    // there the bound is that rounding's (`assert_quantized_matches_dequantized`).
    assert!(prefill_diff <= 2e-3 * max_abs(&fp).max(1.0), "prefill max |Δ| {prefill_diff}");
    assert!(decode_diff <= 0.03, "decode max |Δ| / max |logit| {decode_diff}");
    let mut st = half.new_state().unwrap();
    half.forward(&prompt, st.as_mut(), LogitsWanted::Last).unwrap();
    assert_eq!(st.layout().dtype, "f16");
    let bytes = st.to_bytes().unwrap();
    assert_eq!(bytes.len(), prompt.len() * half.info().state_bytes_per_token);
    let mut other = full.new_state().unwrap();
    let layout = st.layout();
    let e = full.state_bytes_for(&layout).unwrap_err();
    assert_eq!(e.code, ErrorCode::StateMismatch, "{}", e.message);
    assert!(e.message.contains("f16") && e.message.contains("f32"), "{}", e.message);
    assert_eq!(half.state_bytes_for(&layout).unwrap(), bytes.len());
    assert!(other.load_bytes(&bytes, prompt.len() as u64).is_err(), "f16 bytes are not an f32 cache");
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("f16 KV cache: prefill max |Δ| {prefill_diff:e}, decode max |Δ| / max|logit| {decode_diff:e}\n")
            .as_bytes(),
    );
}

/// Mamba ties its head to the embedding: the Q8_0 table serves the gather and the head's mat-vec.
#[test]
fn a_quantized_mamba_matches_the_same_model_on_its_dequantized_weights() {
    assert_quantized_matches_dequantized("mamba1-tiny", |store| {
        let (files, _) = fixture("mamba1-tiny");
        let cfg = MambaConfig::from_json_str(&files.text("config.json").unwrap()).unwrap();
        Box::new(MambaModel::from_store(cfg, store).unwrap())
    });
}

#[test]
fn a_quantized_matrix_is_borrowed_from_the_file_and_reports_its_type_and_bytes() {
    let values: Vec<f32> = (0..3 * 2 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
    let (bytes, deq) = ggml_quantize(QuantKind::Q4_1, &values);
    let t = tensor("blk.0.w", WeightDType::Quant(QuantKind::Q4_1), vec![6, 64], bytes.clone()).unwrap();
    let file = t.bytes.as_ptr();
    let store = TensorStore {
        format: WeightFormat::Safetensors,
        tensors: [("blk.0.w".to_string(), t)].into(),
        rope_interleaved: false,
    };
    let data = store.load_matrix("blk.0.w", &[6, 64]).unwrap();
    let MatrixData::Quant(q) = &data else { panic!("dequantized at load: {}", data.dtype_name()) };
    assert_eq!(q.bytes().as_ptr(), file, "a copy, not the file's bytes");
    assert_eq!((data.len(), data.byte_len(), data.get_f32(70)), (6 * 64, bytes.len(), deq[70]));
    // A [2, 3, 64] stack splits on row boundaries into views of consecutive bytes.
    let parts = data.split(2);
    let second = WeightMatrix::new(parts.into_iter().nth(1).unwrap(), 3, 64);
    assert_eq!((second.dtype(), second.bytes()), ("Q4_1", bytes.len() / 2));
    let mut row = vec![0f32; 64];
    second.row_into(2, &mut row);
    assert_eq!(row, deq[5 * 64..6 * 64], "row 2 of the second matrix is row 5 of the stack");
    // load_f32 dequantizes (a norm a converter quantized).
    assert_eq!(&store.load_f32("blk.0.w", &[6, 64]).unwrap()[..], &deq[..]);
}

#[test]
fn a_quantized_tensor_whose_rows_are_not_whole_blocks_is_bad_weights_naming_it() {
    // Through the range check every reader uses…
    let err = tensor("blk.3.ffn_down.weight", WeightDType::Quant(QuantKind::Q4_1), vec![3, 48], vec![0; 3 * 40])
        .err()
        .expect("3 rows of 48 are not whole Q4_1 blocks");
    assert_eq!(err.code, ErrorCode::BadWeights);
    assert!(err.message.contains("blk.3.ffn_down.weight"), "{}", err.message);
    // …and load_matrix's own check, for a tensor built without it.
    let t = RawTensor {
        dtype: WeightDType::Quant(QuantKind::Q4K),
        shape: vec![2, 128],
        file: "mem.gguf".into(),
        bytes: Arc::new(FileBytes::Owned(vec![0; 144])),
        start: 0,
        end: 144,
    };
    let store = TensorStore {
        format: WeightFormat::Safetensors,
        tensors: [("w".to_string(), t)].into(),
        rope_interleaved: false,
    };
    let err = store.load_matrix("w", &[2, 128]).err().expect("rows of 128 are half a Q4_K block");
    assert_eq!(err.code, ErrorCode::BadWeights);
    assert!(err.message.contains("`w`") && err.message.contains("Q4_K"), "{}", err.message);
}
