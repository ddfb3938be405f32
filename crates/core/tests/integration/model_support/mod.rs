//! Helpers for the model tests (mamba_reference, bad_models, falcon_mamba): fixture paths,
//! reference.json reading, and a naive float64 Mamba forward used as an independent reference.
#![allow(dead_code)]

pub mod naive;
pub mod reference_checks;

use std::path::PathBuf;

/// Repository root (the crate lives in crates/core).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("test/fixtures").join(name)
}

pub fn lite_model() -> PathBuf {
    repo_root().join("models/phoenix-ssm-lite")
}

/// The parts of a reference.json the tests use (both fixture dialects).
pub struct Reference {
    pub input_ids: Vec<u32>,
    /// One row per position, `vocab` columns.
    pub logits: Vec<Vec<f64>>,
    pub greedy_ids: Vec<u32>,
    pub greedy_margins: Vec<f64>,
}

pub fn read_reference(path: PathBuf) -> Reference {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
    };
    let floats =
        |v: &serde_json::Value| -> Vec<f64> { v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };
    let (greedy_ids, greedy_margins) = match v.get("greedy") {
        Some(g) => (ids(&g["new_ids"]), floats(&g["top1_top2_margin"])),
        None => (ids(&v["greedy_new_ids"]), floats(&v["greedy_top1_top2_margin"])),
    };
    Reference {
        input_ids: ids(&v["input_ids"]),
        logits: v["logits"].as_array().unwrap().iter().map(floats).collect(),
        greedy_ids,
        greedy_margins,
    }
}

/// max |got - want| over one row.
pub fn max_abs_diff(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "row length");
    got.iter().zip(want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max)
}

pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as u32
}
