//! FalconMamba (`model_type: falcon_mamba`): no reference checkpoint exists in this repo, so we check
//! (1) the config switch, (2) that the weightless dt/B/C RMSNorms change the output, and (3) that the
//! output equals an independent float64 implementation of the FalconMamba maths on the same weights.
//! The same naive implementation is first validated against the mamba1-tiny float64 reference.

use crate::model_support;

use model_support::naive::NaiveMamba;
use model_support::*;
use phoenix_core::models::load_model_from_memory;
use phoenix_core::LogitsWanted;

fn tiny_files(model_type: Option<&str>) -> Vec<(String, Vec<u8>)> {
    let dir = fixture("mamba1-tiny");
    let mut config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    if let Some(t) = model_type {
        config = config.replacen("\"model_type\": \"mamba\"", &format!("\"model_type\": \"{t}\""), 1);
    }
    vec![
        ("config.json".to_string(), config.into_bytes()),
        ("model.safetensors".to_string(), std::fs::read(dir.join("model.safetensors")).unwrap()),
    ]
}

#[test]
fn naive_reference_reproduces_the_fixture() {
    let r = read_reference(fixture("mamba1-tiny/reference.json"));
    let naive = NaiveMamba::load(&fixture("mamba1-tiny"));
    let rows = naive.logits(&r.input_ids[..8]);
    for (t, row) in rows.iter().enumerate() {
        let worst = row.iter().zip(&r.logits[t]).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-5, "naive f64 forward off by {worst} at row {t}");
    }
}

#[test]
fn falcon_mamba_applies_dt_b_c_norms() {
    let r = read_reference(fixture("mamba1-tiny/reference.json"));
    let ids = &r.input_ids[..12];
    let plain = load_model_from_memory(tiny_files(None)).unwrap();
    let falcon = load_model_from_memory(tiny_files(Some("falcon_mamba"))).unwrap();
    assert_eq!(falcon.info().model_type, "falcon_mamba");

    let mut s1 = plain.new_state().unwrap();
    let mut s2 = falcon.new_state().unwrap();
    let a = plain.forward(ids, s1.as_mut(), LogitsWanted::All).unwrap();
    let b = falcon.forward(ids, s2.as_mut(), LogitsWanted::All).unwrap();
    let differ = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(differ > 1e-2, "falcon norms must change the logits (max diff {differ})");

    let mut naive = NaiveMamba::load(&fixture("mamba1-tiny"));
    naive.falcon_eps = Some(1e-6);
    let want = naive.logits(ids);
    let v = falcon.info().vocab_size;
    let worst = want.iter().enumerate().map(|(t, row)| max_abs_diff(&b[t * v..(t + 1) * v], row)).fold(0.0, f64::max);
    assert!(worst <= 1e-3, "falcon prefill vs naive f64: max |Δ| = {worst}");

    // Decode path too.
    let mut st = falcon.new_state().unwrap();
    let mut worst_decode = 0f64;
    for (t, &id) in ids.iter().enumerate() {
        let row = falcon.forward(&[id], st.as_mut(), LogitsWanted::Last).unwrap();
        worst_decode = worst_decode.max(max_abs_diff(&row, &want[t]));
    }
    assert!(worst_decode <= 1e-3, "falcon decode vs naive f64: max |Δ| = {worst_decode}");
    eprintln!("falcon_mamba vs naive f64: prefill {worst:.2e}, decode {worst_decode:.2e}");
}
