//! The `kvCache` load option on the attention families (Llama, Granite-4.0-H): an f16 cache holds
//! half the bytes per token, its snapshots say so and restore exactly, a snapshot of the other dtype
//! is refused, and its logits move only by the keys' and values' rounding. A bad option value is a
//! typed error naming the option.

use crate::common;
use crate::model_support;

use std::sync::Arc;

use common::{ids_of, run_all};
use model_support::*;
use phoenix_core::error::ErrorCode;
use phoenix_core::generate::GenerateOptions;
use phoenix_core::loader::ModelFiles;
use phoenix_core::models::load_model_files_with;
use phoenix_core::nn::kv_cache::KvDtype;
use phoenix_core::session::{snapshot, LoadedModel, Prompt};
use phoenix_core::{LanguageModel, LoadOptions, LogitsWanted};

fn load(name: &str, kv_cache: KvDtype) -> Box<dyn LanguageModel> {
    let files = ModelFiles::from_dir(&fixture(name)).unwrap();
    load_model_files_with(&files, &LoadOptions { kv_cache, ..Default::default() }).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

#[test]
fn an_f16_cache_halves_the_state_snapshots_exactly_and_moves_logits_by_its_rounding() {
    for name in ["llama-tiny", "granite-hybrid-tiny"] {
        let (full, half) = (load(name, KvDtype::default()), load(name, KvDtype::F16));
        let kv = |m: &dyn LanguageModel| m.info().architecture["kvCacheDtype"].as_str().unwrap().to_string();
        assert_eq!((kv(full.as_ref()), kv(half.as_ref())), ("f32".into(), "f16".into()), "{name}: f32 by default");
        assert_eq!(2 * half.info().state_bytes_per_token, full.info().state_bytes_per_token, "{name}");
        let vocab = full.info().vocab_size as u32;
        let prompt: Vec<u32> = (0..20).map(|i| (i * 53 + 7) % vocab).collect();

        // Logits of every prompt position: within the f16 rounding of the keys and values.
        let all = |m: &dyn LanguageModel| {
            let mut st = m.new_state().unwrap();
            m.forward(&prompt, st.as_mut(), LogitsWanted::All).unwrap()
        };
        let (a, b) = (all(full.as_ref()), all(half.as_ref()));
        let d = max_diff(&a, &b);
        assert!(d > 0.0 && d <= 2e-3 * max_abs(&a).max(1.0), "{name}: f16 vs f32 cache max |Δ| {d}");

        // A snapshot after part of the prompt restores into a fresh state and continues with the same bits.
        let mut st = half.new_state().unwrap();
        half.forward(&prompt[..12], st.as_mut(), LogitsWanted::Last).unwrap();
        let layout = st.layout();
        assert!(["f16", "f32-kv16"].contains(&layout.dtype.as_str()), "{name}: {}", layout.dtype);
        let bytes = st.to_bytes().unwrap();
        assert_eq!(bytes.len(), half.state_bytes_for(&layout).unwrap(), "{name}");
        let mut restored = half.new_state().unwrap();
        restored.load_bytes(&bytes, layout.tokens).unwrap();
        let go_on = |st: &mut dyn phoenix_core::ModelState| half.forward(&prompt[12..], st, LogitsWanted::All).unwrap();
        assert_eq!(go_on(st.as_mut()), go_on(restored.as_mut()), "{name}: continued from the snapshot");

        // Neither cache dtype continues the other's snapshot.
        let e = full.state_bytes_for(&layout).unwrap_err();
        assert_eq!(e.code, ErrorCode::StateMismatch, "{name}: {}", e.message);
        let mut f32_state = full.new_state().unwrap();
        full.forward(&prompt[..12], f32_state.as_mut(), LogitsWanted::Last).unwrap();
        let e = half.state_bytes_for(&f32_state.layout()).unwrap_err();
        assert_eq!(e.code, ErrorCode::StateMismatch, "{name}: {}", e.message);
    }
}

/// Through the session API, as `--save-state` / `--state` use it: a generation's exported state
/// continues in a fresh generation of a model loaded with the same option (the same tokens as one
/// uninterrupted generation), and a model loaded with the other cache type names the difference.
#[test]
fn a_session_snapshot_with_an_f16_cache_continues_and_names_a_cache_mismatch() {
    let greedy = |max_tokens| GenerateOptions { max_tokens, temperature: 0.0, ..Default::default() };
    for name in ["llama-tiny", "granite-hybrid-tiny"] {
        let f16 = LoadOptions { kv_cache: KvDtype::F16, ..Default::default() };
        let half = Arc::new(LoadedModel::load_with(&fixture(name), &f16).unwrap());
        let full = Arc::new(LoadedModel::load(&fixture(name)).unwrap());
        let prompt = Prompt::Ids(vec![3, 1, 4, 1, 5, 9, 2, 6]);
        let whole = ids_of(&run_all(&mut half.generate(prompt.clone(), greedy(10), None).unwrap()));
        let mut head = half.generate(prompt, greedy(4), None).unwrap();
        let first = ids_of(&run_all(&mut head));
        let state = head.export_state().unwrap();
        let header = &state[..snapshot::HEADER_BYTES];
        assert_eq!(half.snapshot_length(header).unwrap(), state.len(), "{name}");
        let rest = ids_of(&run_all(&mut half.generate(Prompt::Ids(vec![]), greedy(6), Some(&state)).unwrap()));
        assert_eq!([first, rest].concat(), whole, "{name}: continued from the snapshot");
        let e = full.snapshot_length(header).unwrap_err();
        assert_eq!(e.code, ErrorCode::StateMismatch, "{name}");
        assert!(e.message.contains("kvCache") && e.message.contains("16,"), "{name}: {}", e.message);
        let e = full.generate(Prompt::Ids(vec![]), greedy(1), Some(&state)).err().expect("refused");
        assert!(e.message.contains("kvCache"), "{name}: {}", e.message);
    }
}

#[test]
fn ssm_models_take_the_option_and_have_no_cache() {
    let m = load("mamba2-tiny", KvDtype::F16);
    assert_eq!(m.info().state_bytes_per_token, 0);
    assert!(!m.info().architecture.contains_key("kvCacheDtype"));
}

#[test]
fn a_bad_kv_cache_value_names_the_option() {
    for bad in ["bf16", "F16", ""] {
        let e = LoadOptions::from_names(Some(bad), None).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidOption, "{bad:?}");
        assert!(e.message.contains("kvCache"), "{}", e.message);
    }
    assert_eq!(LoadOptions::from_names(Some("f16"), None).unwrap().kv_cache, KvDtype::F16);
    assert_eq!(LoadOptions::from_names(Some("f32"), None).unwrap().kv_cache, KvDtype::F32);
    assert_eq!(LoadOptions::from_names(None, None).unwrap(), LoadOptions::default());
}
