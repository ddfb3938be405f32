//! Helpers shared by the generation / session tests.
#![allow(dead_code)]

pub mod toy_model;

use std::path::PathBuf;

use phoenix_core::generate::{FinishReason, Step};
use phoenix_core::session::Generation;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn phoenix_dir() -> PathBuf {
    repo_root().join("models/phoenix-ssm-lite")
}

pub fn tiny_dir() -> PathBuf {
    repo_root().join("test/fixtures/mamba1-tiny")
}

/// The real GPT-NeoX-20B tokenizer (that of the Mamba-130M…2.8B checkpoints), a test fixture.
pub fn neox_tokenizer_path() -> PathBuf {
    repo_root().join("test/fixtures/gpt-neox-20b/tokenizer.json")
}

/// Runs a generation to the end; returns every step.
pub fn run_all(generation: &mut Generation) -> Vec<Step> {
    let mut steps = Vec::new();
    while let Some(step) = generation.next_step().expect("step") {
        steps.push(step);
        assert!(steps.len() < 100_000, "runaway generation");
    }
    steps
}

pub fn ids_of(steps: &[Step]) -> Vec<u32> {
    steps.iter().filter_map(|s| s.token_id).collect()
}

pub fn text_of(steps: &[Step]) -> String {
    steps.iter().map(|s| s.text.as_str()).collect()
}

pub fn finish_of(steps: &[Step]) -> Option<FinishReason> {
    steps.last().and_then(|s| s.finish_reason)
}
