//! Generation building blocks (processors, sampler, stop strings, streaming detokeniser, options,
//! tokenizer) and session logic on a deterministic stand-in model. Real-model tests: `session_models.rs`.

use crate::common;

use std::sync::Arc;

use common::toy_model::ToyModel;
use common::*;
use phoenix_core::generate::processors as p;
use phoenix_core::generate::{
    FinishReason, GenerateOptions, RawGenerateOptions, Sampler, StopStrings, StreamDetokenizer,
};
use phoenix_core::loader::ModelFiles;
use phoenix_core::session::{LoadedModel, Prompt};
use phoenix_core::tokenizer::Tokenizer;
use phoenix_core::ErrorCode;

const NEG: f32 = f32::NEG_INFINITY;

fn probs_to_logits(probs: &[f64]) -> Vec<f32> {
    probs.iter().map(|p| p.ln() as f32).collect()
}

fn phoenix_tokenizer() -> Tokenizer {
    Tokenizer::from_file(&phoenix_dir().join("tokenizer.json")).unwrap()
}

fn neox_tokenizer() -> Tokenizer {
    Tokenizer::from_file(&neox_tokenizer_path()).unwrap()
}

// ---------------------------------------------------------------- processors

#[test]
fn repetition_penalty_divides_positive_and_multiplies_negative_once_per_id() {
    let mut l = vec![2.0, -2.0, 1.0, 3.0];
    p::repetition_penalty(&mut l, &[0, 1, 1, 1], 2.0, &mut Vec::new());
    assert_eq!(l, vec![1.0, -4.0, 1.0, 3.0]);
}

#[test]
fn temperature_scales_logits() {
    let mut l = vec![1.0, -2.0, 0.5];
    p::temperature(&mut l, 0.5);
    assert_eq!(l, vec![2.0, -4.0, 1.0]);
}

#[test]
fn top_k_keeps_the_k_largest_and_their_ties() {
    let mut l = vec![1.0, 3.0, 2.0, 3.0, 0.0];
    p::top_k(&mut l, 2, &mut Vec::new());
    assert_eq!(l, vec![NEG, 3.0, NEG, 3.0, NEG]);
    let mut l = vec![1.0, 3.0, 2.0, 3.0, 0.0];
    p::top_k(&mut l, 3, &mut Vec::new());
    assert_eq!(l, vec![NEG, 3.0, 2.0, 3.0, NEG]);
    let mut l = vec![1.0, 3.0];
    p::top_k(&mut l, 1_000_000, &mut Vec::new()); // larger than the vocabulary: no-op
    assert_eq!(l, vec![1.0, 3.0]);
}

#[test]
fn top_p_keeps_the_smallest_nucleus_reaching_p() {
    // probs 0.5, 0.3, 0.15, 0.05: ascending cumulative 0.05, 0.20, 0.50, 1.0; p = 0.75 drops cum ≤ 0.25.
    let base = probs_to_logits(&[0.5, 0.3, 0.15, 0.05]);
    let mut l = base.clone();
    p::top_p(&mut l, 0.75, &mut Vec::new());
    assert_eq!(l, vec![base[0], base[1], NEG, NEG]);
    // Tiny p keeps only the top token; p = 1 is off.
    let mut l = base.clone();
    p::top_p(&mut l, 1e-6, &mut Vec::new());
    assert_eq!(l, vec![base[0], NEG, NEG, NEG]);
    let mut l = base.clone();
    p::top_p(&mut l, 1.0, &mut Vec::new());
    assert_eq!(l, base);
}

#[test]
fn min_p_drops_tokens_below_a_fraction_of_the_top_probability() {
    let base = probs_to_logits(&[0.5, 0.3, 0.15, 0.05]);
    let mut l = base.clone();
    p::min_p(&mut l, 0.2); // threshold 0.1
    assert_eq!(l, vec![base[0], base[1], base[2], NEG]);
    let mut l = base.clone();
    p::min_p(&mut l, 1.0); // only the top survives
    assert_eq!(l, vec![base[0], NEG, NEG, NEG]);
}

#[test]
fn vocabulary_rows_beyond_the_tokenizer_are_masked() {
    let mut l = vec![0.0, 1.0, 9.0, 9.5];
    p::mask_from(&mut l, 2);
    assert_eq!(l, vec![0.0, 1.0, NEG, NEG]);
    assert_eq!(p::argmax(&l), Some(1));
    // The sampler masks too, even when the padded rows hold the largest logits.
    let opts = GenerateOptions { temperature: 1.0, seed: Some(1), ..Default::default() };
    let mut s = Sampler::new(&opts, 1, 2);
    for _ in 0..200 {
        let mut l = vec![0.0, 1.0, 50.0, 50.0];
        assert!(s.sample(&mut l, &[]).unwrap() < 2);
    }
}

#[test]
fn argmax_takes_the_first_of_equal_maxima_and_ignores_nan() {
    assert_eq!(p::argmax(&[1.0, f32::NAN, 3.0, 3.0]), Some(2));
    assert_eq!(p::argmax(&[NEG, NEG]), None);
}

#[test]
fn an_infinite_logit_wins_instead_of_being_skipped() {
    // A temperature can overflow a huge finite logit to +inf: it is the most likely token, not a hole.
    let inf = f32::INFINITY;
    assert_eq!(p::argmax(&[1.0, inf, 3.0, inf]), Some(1));
    for u in [0.0, 0.5, 0.999] {
        assert_eq!(p::sample_softmax(&[1.0, 2.0, inf, 3.0], u), Some(2));
    }
}

#[test]
fn processors_run_in_hf_order() {
    // Penalty first: token 0 (seen) goes 4.0 → 2.0, so token 1 (3.0) wins greedy.
    let opts = GenerateOptions { repeat_penalty: 2.0, ..Default::default() };
    let mut s = Sampler::new(&opts, 0, 3);
    assert_eq!(s.sample(&mut [4.0, 3.0, 0.0], &[0]).unwrap(), 1);
    // Temperature before top-p: at T = 0.1 the distribution is sharp, so top-p 0.5 keeps one token.
    let opts = GenerateOptions { temperature: 0.1, top_p: 0.5, ..Default::default() };
    let mut s = Sampler::new(&opts, 0, 3);
    let mut l = vec![1.0, 0.9, 0.0];
    s.process(&mut l, &[]);
    assert_eq!(l, vec![10.0, NEG, NEG]);
    // top-k before min-p: k = 2 removes token 2, then min-p 0.5 (relative to the top) removes token 1.
    let opts = GenerateOptions { temperature: 1.0, top_k: 2, min_p: 0.5, ..Default::default() };
    let mut s = Sampler::new(&opts, 0, 3);
    let mut l = probs_to_logits(&[0.6, 0.25, 0.15]);
    s.process(&mut l, &[]);
    assert!(l[0].is_finite() && l[1] == NEG && l[2] == NEG);
}

// ---------------------------------------------------------------- sampler

#[test]
fn same_seed_same_tokens_different_seed_different_tokens() {
    let opts = GenerateOptions { temperature: 1.0, ..Default::default() };
    let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
    // One draw per position of a growing context.
    let draw = |seed: u64| {
        let mut s = Sampler::new(&opts, seed, 50);
        let history: Vec<u32> = vec![0; 200];
        (0..200).map(|at| s.sample(&mut logits.clone(), &history[..at]).unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));
}

#[test]
fn tiny_temperatures_act_greedy_instead_of_overflowing() {
    let opts = GenerateOptions { temperature: 1e-30, ..Default::default() };
    let mut s = Sampler::new(&opts, 5, 3);
    assert_eq!(s.sample(&mut [10.0, 30.0, -20.0], &[]).unwrap(), 1);
}

#[test]
fn sampling_follows_the_softmax_distribution() {
    let probs = [0.5, 0.3, 0.15, 0.05];
    let opts = GenerateOptions { temperature: 1.0, ..Default::default() };
    let mut s = Sampler::new(&opts, 123, 4);
    let n = 40_000;
    let mut counts = [0usize; 4];
    // Each draw at the next position of a growing context (the way a generation draws).
    let mut history = Vec::with_capacity(n);
    for _ in 0..n {
        let id = s.sample(&mut probs_to_logits(&probs), &history).unwrap();
        counts[id as usize] += 1;
        history.push(id);
    }
    for (c, p) in counts.iter().zip(probs) {
        let freq = *c as f64 / n as f64;
        assert!((freq - p).abs() < 0.01, "freq {freq} vs p {p}");
    }
}

// ---------------------------------------------------------------- stop strings

#[test]
fn stop_string_split_across_pushes_is_caught_and_never_emitted() {
    let mut s = StopStrings::new(vec!["world".into()]);
    let a = s.push("Hel");
    assert_eq!((a.emit.as_str(), a.stopped), ("Hel", false));
    let b = s.push("lo wor"); // "wor" may start "world": held back
    assert_eq!((b.emit.as_str(), b.stopped), ("lo ", false));
    let c = s.push("ld!");
    assert_eq!((c.emit.as_str(), c.stopped), ("", true));
}

#[test]
fn held_text_is_released_when_it_stops_matching_or_at_the_end() {
    let mut s = StopStrings::new(vec!["\n\n".into(), "END".into()]);
    assert_eq!(s.push("a\n").emit, "a");
    assert_eq!(s.push("b E").emit, "\nb ");
    assert_eq!(s.push("N").emit, "");
    assert_eq!(s.finish(), "EN");
    // Multi-byte characters: held back on char boundaries only.
    let mut s = StopStrings::new(vec!["日本語".into()]);
    assert_eq!(s.push("x日本").emit, "x");
    let c = s.push("語です");
    assert!(c.stopped);
    assert_eq!(c.emit, "");
}

#[test]
fn the_earliest_stop_string_wins() {
    let mut s = StopStrings::new(vec!["cd".into(), "b".into()]);
    let c = s.push("abcd");
    assert_eq!((c.emit.as_str(), c.stopped), ("a", true));
}

// ---------------------------------------------------------------- tokenizer + streaming

#[test]
fn phoenix_tokenizer_encodes_like_reference_and_prepends_bos() {
    let t = phoenix_tokenizer();
    let prompt = "Once upon a time, there was a little";
    let with = t.encode(prompt, true).unwrap();
    assert_eq!(with, vec![0, 393, 394, 259, 380, 12, 388, 286, 259, 381]);
    assert_eq!(t.encode(prompt, false).unwrap(), with[1..].to_vec());
    assert_eq!(t.decode(&with, true).unwrap(), prompt);
    assert_eq!(t.decode(&with, false).unwrap(), format!("<|endoftext|>{prompt}"));
    assert_eq!(t.id_limit(), 4096);
}

#[test]
fn neox_tokenizer_matches_known_encodings() {
    let t = neox_tokenizer();
    let cases: [(&str, &[u32]); 3] = [
        ("Hey how are you doing?", &[8262, 849, 403, 368, 2509, 32]),
        (
            "Mamba is a state-space model. ¿Qué tal? 日本語 🙂",
            &[46, 31834, 310, 247, 1375, 14, 5641, 1566, 15, 25769, 3864, 860, 5269, 32, 209, 49868, 19119, 241, 42908],
        ),
        ("  leading spaces\n\nnew lines\ttabs", &[50276, 16378, 8470, 187, 187, 1826, 3104, 186, 33754]),
    ];
    for (text, ids) in cases {
        assert_eq!(t.encode(text, false).unwrap(), ids, "{text:?}");
        assert_eq!(t.decode(ids, true).unwrap(), text);
    }
}

#[test]
fn streaming_detokenizer_emits_only_whole_characters() {
    let t = Arc::new(neox_tokenizer());
    let text = "Mamba is a state-space model. ¿Qué tal? 日本語 🙂";
    let ids = t.encode(text, false).unwrap();
    let mut d = StreamDetokenizer::new(Arc::clone(&t), &[], true).unwrap();
    let pieces: Vec<String> = ids.iter().map(|&id| d.push(id).unwrap()).collect();
    assert_eq!(d.finish().unwrap(), "");
    for piece in &pieces {
        assert!(!piece.contains('\u{FFFD}'), "partial character leaked: {pieces:?}");
    }
    assert_eq!(pieces.concat(), text);
    // 日本語 spans byte-level tokens that split a character: one id emits nothing until it completes.
    assert!(pieces.iter().any(|p| p.is_empty()), "{pieces:?}");
    assert!(pieces.iter().any(|p| p.contains('語')));
    assert_eq!(pieces.last().unwrap(), " 🙂");
}

#[test]
fn streaming_detokenizer_uses_prompt_context_and_matches_full_decode() {
    let t = Arc::new(phoenix_tokenizer());
    let prompt = t.encode("Once upon a time, there was a little", true).unwrap();
    let continuation = t.encode(" girl named Lily. She loved to play.", false).unwrap();
    let mut d = StreamDetokenizer::new(Arc::clone(&t), &prompt, true).unwrap();
    let streamed: String =
        continuation.iter().map(|&id| d.push(id).unwrap()).collect::<String>() + &d.finish().unwrap();
    let mut all = prompt.clone();
    all.extend(&continuation);
    let whole = t.decode(&all, true).unwrap();
    let head = t.decode(&prompt, true).unwrap();
    assert_eq!(streamed, whole[head.len()..]);
}

#[test]
fn an_incomplete_character_at_the_end_is_flushed_lossily() {
    let t = Arc::new(neox_tokenizer());
    // A rare character that byte-level BPE splits over several tokens.
    let ids = ["🦀", "🧬", "𝄞", "🫠"]
        .iter()
        .map(|c| t.encode(&format!("a {c}"), false).unwrap())
        .find(|ids| t.decode(&ids[..ids.len() - 1], true).unwrap().ends_with('\u{FFFD}'))
        .expect("a character split across tokens");
    let cut = &ids[..ids.len() - 1];
    let mut d = StreamDetokenizer::new(Arc::clone(&t), &[], true).unwrap();
    let streamed: String = cut.iter().map(|&id| d.push(id).unwrap()).collect();
    assert!(!streamed.contains('\u{FFFD}'), "{streamed:?}");
    let flushed = d.finish().unwrap();
    assert!(flushed.ends_with('\u{FFFD}'));
    assert_eq!(streamed + &flushed, t.decode(cut, true).unwrap());
    // With the last id the character completes.
    let mut d = StreamDetokenizer::new(Arc::clone(&t), &[], true).unwrap();
    let full: String = ids.iter().map(|&id| d.push(id).unwrap()).collect();
    assert_eq!(full, t.decode(&ids, true).unwrap());
}

#[test]
fn missing_or_broken_tokenizer_is_e_tokenizer_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("phx-tok-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("tokenizer.json");
    let _ = std::fs::remove_file(&missing);
    let e = Tokenizer::from_file(&missing).unwrap_err();
    assert_eq!(e.code, ErrorCode::Tokenizer);
    assert!(e.message.contains("tokenizer.json"), "{}", e.message);
    std::fs::write(&missing, b"{ not json").unwrap();
    let e = Tokenizer::from_file(&missing).unwrap_err();
    assert_eq!(e.code, ErrorCode::Tokenizer);
    assert!(e.message.contains(&missing.display().to_string()), "{}", e.message);
    let folder = ModelFiles::from_dir(&dir).unwrap();
    let e = phoenix_core::tokenizer::load_optional(&folder).unwrap_err();
    assert_eq!(e.code, ErrorCode::Tokenizer);
    assert!(e.message.contains(&missing.display().to_string()), "{}", e.message);
    // In memory, with the folder it came from: the message names the same file.
    let root = Some(dir.display().to_string());
    let in_memory = ModelFiles::from_memory_named(root, vec![("tokenizer.json".into(), b"{ not json".to_vec())]);
    let e = phoenix_core::tokenizer::load_optional(&in_memory).unwrap_err();
    assert!(e.message.contains(&missing.display().to_string()), "{}", e.message);
    std::fs::remove_file(&missing).unwrap();
    assert!(phoenix_core::tokenizer::load_optional(&folder).unwrap().is_none());
    std::fs::remove_dir(&dir).unwrap();
}

// ---------------------------------------------------------------- options

#[test]
fn option_validation_names_the_option_and_range() {
    let bad: Vec<(RawGenerateOptions, &str)> = vec![
        (RawGenerateOptions { temperature: Some(-0.5), ..Default::default() }, "temperature"),
        (RawGenerateOptions { temperature: Some(f64::NAN), ..Default::default() }, "temperature"),
        (RawGenerateOptions { top_p: Some(0.0), ..Default::default() }, "topP"),
        (RawGenerateOptions { top_p: Some(1.5), ..Default::default() }, "topP"),
        (RawGenerateOptions { min_p: Some(-0.1), ..Default::default() }, "minP"),
        (RawGenerateOptions { min_p: Some(1.1), ..Default::default() }, "minP"),
        (RawGenerateOptions { repeat_penalty: Some(0.0), ..Default::default() }, "repeatPenalty"),
        (RawGenerateOptions { repeat_penalty: Some(-1.0), ..Default::default() }, "repeatPenalty"),
        (RawGenerateOptions { repeat_penalty: Some(1e-40), ..Default::default() }, "repeatPenalty"),
        (RawGenerateOptions { repeat_penalty: Some(1e7), ..Default::default() }, "repeatPenalty"),
        (RawGenerateOptions { max_tokens: Some(0.0), ..Default::default() }, "maxTokens"),
        (RawGenerateOptions { max_tokens: Some(1e12), ..Default::default() }, "maxTokens"),
        (RawGenerateOptions { max_tokens: Some(2.5), ..Default::default() }, "maxTokens"),
        (RawGenerateOptions { max_tokens: Some(-1.0), ..Default::default() }, "maxTokens"),
        (RawGenerateOptions { top_k: Some(-3.0), ..Default::default() }, "topK"),
        (RawGenerateOptions { repeat_last_n: Some(0.5), ..Default::default() }, "repeatLastN"),
        (RawGenerateOptions { seed: Some(-1.0), ..Default::default() }, "seed"),
        (RawGenerateOptions { seed: Some(1.5), ..Default::default() }, "seed"),
        (RawGenerateOptions { stop_token_ids: Some(vec![4096.0]), ..Default::default() }, "stopTokenIds"),
        (RawGenerateOptions { stop_strings: Some(vec!["".into()]), ..Default::default() }, "stop"),
    ];
    for (raw, name) in bad {
        let e = raw.resolve(4096).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidOption, "{raw:?}");
        assert!(e.message.contains(&format!("`{name}`")), "{name}: {}", e.message);
    }
    let e = RawGenerateOptions { top_p: Some(1.5), ..Default::default() }.resolve(10).unwrap_err();
    assert!(e.message.contains("(0, 1]"), "{}", e.message);
    // Huge top-k is fine; defaults are greedy.
    let ok = RawGenerateOptions { top_k: Some(1e9), seed: Some(42.0), ..Default::default() }.resolve(4096).unwrap();
    assert_eq!((ok.top_k, ok.seed, ok.temperature, ok.max_tokens), (1_000_000_000, Some(42), 0.0, 256));
}

#[test]
fn options_deserialize_from_camel_case_json() {
    let raw: RawGenerateOptions =
        serde_json::from_str(r#"{"maxTokens": 5, "topP": 0.9, "stopStrings": ["\n"], "addSpecialTokens": false}"#)
            .unwrap();
    let o = raw.resolve(100).unwrap();
    assert_eq!(
        (o.max_tokens, o.top_p, o.stop_strings.clone(), o.add_special_tokens),
        (5, 0.9, vec!["\n".to_string()], Some(false))
    );
}

// ---------------------------------------------------------------- session logic (stand-in model)

fn toy(vocab: usize, layers: usize, eos: Vec<u32>, with_tokenizer: bool) -> Arc<LoadedModel> {
    let tok = with_tokenizer.then(phoenix_tokenizer);
    Arc::new(LoadedModel::new(Box::new(ToyModel::new(vocab, layers, eos)), tok).unwrap())
}

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions { max_tokens: n, ..Default::default() }
}

fn sampled(n: usize, seed: u64) -> GenerateOptions {
    GenerateOptions {
        max_tokens: n,
        temperature: 0.9,
        top_p: 0.95,
        top_k: 200,
        repeat_penalty: 1.3,
        seed: Some(seed),
        ..Default::default()
    }
}

#[test]
fn empty_prompt_without_state_is_rejected() {
    let m = toy(4096, 2, vec![], true);
    let e = m.generate(Prompt::Ids(vec![]), greedy(3), None).err().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidOption);
    assert!(e.message.contains("prompt is empty"));
    // A text prompt is tokenized by the first step (on the binding's worker thread): the error comes from there.
    let mut g = m
        .generate(Prompt::Text(String::new()), GenerateOptions { add_special_tokens: Some(false), ..greedy(3) }, None)
        .unwrap();
    let e = g.next_step().unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidOption);
    assert!(e.message.contains("prompt is empty"));
}

#[test]
fn text_needs_a_tokenizer_and_ids_are_checked() {
    let m = toy(300, 2, vec![], false);
    assert!(!m.info().has_tokenizer);
    assert_eq!(m.generate(Prompt::Text("hi".into()), greedy(3), None).err().unwrap().code, ErrorCode::Tokenizer);
    assert_eq!(m.tokenize("hi", true).unwrap_err().code, ErrorCode::Tokenizer);
    let opts = GenerateOptions { stop_strings: vec!["x".into()], ..greedy(3) };
    assert_eq!(m.generate(Prompt::Ids(vec![1]), opts, None).err().unwrap().code, ErrorCode::Tokenizer);
    let e = m.generate(Prompt::Ids(vec![300]), greedy(3), None).err().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidOption);
    assert_eq!(m.logits(&[]).unwrap_err().code, ErrorCode::InvalidOption);
    // Without a tokenizer, id-level generation still works (text stays empty).
    let steps = run_all(&mut m.generate(Prompt::Ids(vec![1, 2]), greedy(4), None).unwrap());
    assert_eq!(ids_of(&steps).len(), 4);
    assert_eq!(text_of(&steps), "");
}

#[test]
fn a_tokenizer_larger_than_the_model_is_rejected() {
    let e = LoadedModel::new(Box::new(ToyModel::new(1000, 2, vec![])), Some(phoenix_tokenizer())).err().unwrap();
    assert_eq!(e.code, ErrorCode::Tokenizer);
}

#[test]
fn generation_runs_to_max_tokens_and_then_returns_none() {
    let m = toy(4096, 2, vec![], true);
    let mut g = m.generate(Prompt::Text("Once upon a time".into()), greedy(5), None).unwrap();
    let steps = run_all(&mut g);
    assert_eq!(steps.len(), 5);
    assert_eq!(finish_of(&steps), Some(FinishReason::Length));
    assert!(steps[..4].iter().all(|s| s.finish_reason.is_none()));
    assert!(g.next_step().unwrap().is_none());
    let st = g.stats();
    assert_eq!((st.prompt_tokens, st.generated_tokens), (5, 5)); // BOS + 4 words
    assert_eq!(g.token_ids().len(), 10);
    // The streamed text is the decode of the generated ids.
    assert_eq!(text_of(&steps), m.detokenize(&ids_of(&steps), true).unwrap());
}

#[test]
fn eos_and_user_stop_ids_end_with_stop_and_emit_no_text_for_it() {
    let m = toy(4096, 2, vec![], true);
    let free = ids_of(&run_all(&mut m.generate(Prompt::Ids(vec![0, 5]), greedy(6), None).unwrap()));
    let stop_at = free[2];
    let opts = GenerateOptions { stop_token_ids: vec![stop_at], ..greedy(6) };
    let steps = run_all(&mut m.generate(Prompt::Ids(vec![0, 5]), opts, None).unwrap());
    let first = free.iter().position(|&t| t == stop_at).unwrap();
    assert_eq!(ids_of(&steps), free[..=first].to_vec());
    assert_eq!(finish_of(&steps), Some(FinishReason::Stop));
    assert_eq!(text_of(&steps), m.detokenize(&free[..first], true).unwrap());
    // The model's EOS ids stop it as well.
    let m_eos = toy(4096, 2, vec![stop_at], true);
    let steps = run_all(&mut m_eos.generate(Prompt::Ids(vec![0, 5]), greedy(6), None).unwrap());
    assert_eq!(ids_of(&steps), free[..=first].to_vec());
}

#[test]
fn stop_strings_across_token_boundaries_end_the_text_before_them() {
    let m = toy(4096, 2, vec![], true);
    let free_steps = run_all(&mut m.generate(Prompt::Ids(vec![0]), greedy(40), None).unwrap());
    let free_text = text_of(&free_steps);
    // A two-character stop string: the last character of one token's text + the first of the next.
    let pieces: Vec<&str> = free_steps.iter().map(|s| s.text.as_str()).collect();
    let i = (1..pieces.len() - 1).find(|&i| !pieces[i].is_empty() && !pieces[i + 1].is_empty()).unwrap();
    let stop = format!("{}{}", pieces[i].chars().last().unwrap(), pieces[i + 1].chars().next().unwrap());
    let first = free_text.find(&stop).unwrap();
    let opts = GenerateOptions { stop_strings: vec![stop.clone()], ..greedy(40) };
    let steps = run_all(&mut m.generate(Prompt::Ids(vec![0]), opts, None).unwrap());
    assert_eq!(finish_of(&steps), Some(FinishReason::Stop), "stop {stop:?}");
    assert_eq!(text_of(&steps), free_text[..first], "stop {stop:?}");
}

#[test]
fn cancel_ends_at_the_next_step_with_abort() {
    let m = toy(4096, 2, vec![], true);
    let mut g = m.generate(Prompt::Ids(vec![0, 7]), greedy(100), None).unwrap();
    g.next_step().unwrap().unwrap();
    g.next_step().unwrap().unwrap();
    let handle = g.cancel_handle();
    handle.store(true, std::sync::atomic::Ordering::Relaxed);
    let last = g.next_step().unwrap().unwrap();
    assert_eq!((last.token_id, last.finish_reason), (None, Some(FinishReason::Abort)));
    assert!(g.next_step().unwrap().is_none());
    assert_eq!(g.stats().generated_tokens, 2);
}

/// Starts a 1001-token prompt on `model`, hands its cancel flag to `cancel` (which the model's
/// prefill callback sets) and checks that the first step ends with `abort`.
fn first_step_aborts(
    model: ToyModel,
    cancel: &std::sync::OnceLock<Arc<std::sync::atomic::AtomicBool>>,
) -> (Arc<LoadedModel>, Vec<u32>, phoenix_core::session::Generation) {
    let m = Arc::new(LoadedModel::new(Box::new(model), None).unwrap());
    let prompt: Vec<u32> = (0..1001).map(|i| i % 4000).collect();
    let mut g = m.generate(Prompt::Ids(prompt.clone()), greedy(5), None).unwrap();
    cancel.set(g.cancel_handle()).unwrap();
    let step = g.next_step().unwrap().unwrap();
    assert_eq!((step.token_id, step.finish_reason), (None, Some(FinishReason::Abort)));
    (m, prompt, g)
}

#[test]
fn cancel_during_a_long_prefill_stops_between_pieces_and_exports_what_was_read() {
    use std::sync::atomic::Ordering;
    use std::sync::Mutex;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let cancel: Arc<std::sync::OnceLock<Arc<std::sync::atomic::AtomicBool>>> = Arc::default();
    let (seen, flag) = (Arc::clone(&calls), Arc::clone(&cancel));
    // Cancels from inside the first prefill piece, as another thread would while it runs.
    let model = ToyModel::new(4096, 2, vec![]).with_prefill_chunk(100, move |n| {
        seen.lock().unwrap().push(n);
        if let Some(flag) = flag.get() {
            flag.store(true, Ordering::Relaxed);
        }
    });
    let (m, prompt, mut g) = first_step_aborts(model, &cancel);
    assert_eq!(*calls.lock().unwrap(), vec![100], "one prefill piece ran, then the cancel was seen");
    assert_eq!(g.stats().generated_tokens, 0);
    assert_eq!(g.stats().prompt_tokens, 100, "the prompt tokens fed, not the 1001 given");
    // The snapshot holds what was read (100 tokens, the next one pending) and reads no further: an
    // abort stays quick even when the caller asks for the state.
    let state = g.export_state().unwrap();
    assert_eq!(*calls.lock().unwrap(), vec![100], "no forward call at export");
    let read = toy(4096, 2, vec![], false).generate(Prompt::Ids(prompt[..101].to_vec()), greedy(5), None).unwrap();
    assert_eq!(state, { read }.export_state().unwrap());
    // Continuing it with the rest of the prompt gives what the uncancelled run gives.
    let whole = ids_of(&run_all(&mut m.generate(Prompt::Ids(prompt.clone()), greedy(5), None).unwrap()));
    let rest = m.generate(Prompt::Ids(prompt[101..].to_vec()), greedy(5), Some(&state)).unwrap();
    assert_eq!(ids_of(&run_all(&mut { rest })), whole);
}

/// A cancel that comes while a piece runs stops it at its next layer (`models::interrupt`): the piece
/// is given up, not finished, and the state holds the pieces before it.
#[test]
fn cancel_during_a_prefill_piece_stops_it_and_keeps_the_pieces_before() {
    use std::sync::atomic::Ordering;
    use std::sync::Mutex;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let cancel: Arc<std::sync::OnceLock<Arc<std::sync::atomic::AtomicBool>>> = Arc::default();
    let (seen, flag) = (Arc::clone(&calls), Arc::clone(&cancel));
    // Cancels from inside the second prefill piece, before its first layer.
    let model = ToyModel::new(4096, 2, vec![])
        .with_prefill_chunk(100, move |n| {
            let mut seen = seen.lock().unwrap();
            seen.push(n);
            if seen.len() == 2 {
                flag.get().unwrap().store(true, Ordering::Relaxed);
            }
        })
        .with_layer_check();
    let (m, prompt, mut g) = first_step_aborts(model, &cancel);
    assert_eq!(*calls.lock().unwrap(), vec![100, 100], "the second piece was started, then stopped");
    assert!(g.next_step().unwrap().is_none());
    let state = g.export_state().unwrap();
    let read = toy(4096, 2, vec![], false).generate(Prompt::Ids(prompt[..101].to_vec()), greedy(5), None).unwrap();
    assert_eq!(state, { read }.export_state().unwrap(), "the state holds the first piece and the pending token");
    let whole = ids_of(&run_all(
        &mut toy(4096, 2, vec![], false).generate(Prompt::Ids(prompt.clone()), greedy(5), None).unwrap(),
    ));
    let rest = m.generate(Prompt::Ids(prompt[101..].to_vec()), greedy(5), Some(&state)).unwrap();
    assert_eq!(ids_of(&run_all(&mut { rest })), whole);
    assert_eq!(g.stats().prompt_tokens, 100, "the piece given up is not counted");
}

/// After a cancel before the first token, `prompt_tokens` counts what the state took in: with a
/// restored state, neither its pending token nor the unfed prompt.
#[test]
fn a_cancelled_prefill_counts_the_prompt_tokens_it_fed() {
    let m = toy(4096, 2, vec![], false);
    // Cancelled before any step: nothing fed.
    let g = m.generate(Prompt::Ids((0..50).collect()), greedy(3), None).unwrap();
    g.cancel();
    let mut g = g;
    assert_eq!(g.next_step().unwrap().unwrap().finish_reason, Some(FinishReason::Abort));
    assert_eq!((g.stats().prompt_tokens, g.stats().restored_tokens), (0, 0));
    // From a restored state of 10 tokens: still none of the 5 prompt tokens.
    let state = m.generate(Prompt::Ids((0..10).collect()), greedy(1), None).unwrap().export_state().unwrap();
    let g = m.generate(Prompt::Ids((20..25).collect()), greedy(3), Some(&state)).unwrap();
    g.cancel();
    let mut g = g;
    g.next_step().unwrap().unwrap();
    assert_eq!((g.stats().prompt_tokens, g.stats().restored_tokens), (0, 10));
    // A cancel after the first token leaves the prompt count whole.
    let mut g = m.generate(Prompt::Ids((0..50).collect()), greedy(10), None).unwrap();
    g.next_step().unwrap().unwrap();
    g.cancel();
    assert_eq!(g.next_step().unwrap().unwrap().finish_reason, Some(FinishReason::Abort));
    assert_eq!((g.stats().prompt_tokens, g.stats().generated_tokens), (50, 1));
}

#[test]
fn dispose_frees_the_state_at_once_and_later_steps_and_exports_fail() {
    let m = toy(4096, 2, vec![], false);
    let mut g = m.generate(Prompt::Ids((0..50).collect()), greedy(3), None).unwrap();
    g.next_step().unwrap().unwrap();
    assert!(g.state_bytes() > 0);
    g.dispose();
    assert_eq!(g.state_bytes(), 0, "the state is freed, not kept until the handle goes");
    assert!(g.token_ids().is_empty());
    assert!(g.model().is_none(), "no reference to the weights is kept");
    for e in [g.next_step().err().unwrap(), g.export_state().err().unwrap()] {
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::InvalidOption, "generation disposed"));
    }
    assert_eq!(g.stats().generated_tokens, 1, "stats still answer");
    g.dispose(); // twice is fine
}

#[test]
fn a_dispose_flagged_while_a_prefill_runs_cancels_it_and_frees_the_state_when_the_step_ends() {
    use std::sync::atomic::Ordering;
    let handle: Arc<std::sync::OnceLock<phoenix_core::session::DisposeHandle>> = Arc::default();
    let seen = Arc::clone(&handle);
    let pieces = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&pieces);
    // Asks for the dispose from inside the first prefill piece, as a binding's `dispose()` would from
    // the JS thread while the step runs on a worker.
    let model = ToyModel::new(4096, 2, vec![]).with_prefill_chunk(100, move |_| {
        count.fetch_add(1, Ordering::Relaxed);
        if let Some(handle) = seen.get() {
            handle.request();
        }
    });
    let m = Arc::new(LoadedModel::new(Box::new(model), None).unwrap());
    let mut g = m.generate(Prompt::Ids((0..1001).collect()), greedy(5), None).unwrap();
    assert!(handle.set(g.dispose_handle()).is_ok());
    let step = g.next_step().unwrap().unwrap();
    assert_eq!(step.finish_reason, Some(FinishReason::Abort));
    assert_eq!(pieces.load(Ordering::Relaxed), 1, "the prefill stopped after its first piece");
    assert_eq!(g.state_bytes(), 0);
    assert_eq!(g.export_state().err().unwrap().message, "generation disposed");
}

#[test]
fn a_context_limit_refuses_asked_for_tokens_that_do_not_fit_and_cuts_the_default_to_the_room_left() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let forwards = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&forwards);
    let limited = ToyModel::new(4096, 2, vec![]).with_context_length(10).with_prefill_chunk(usize::MAX, move |_| {
        seen.fetch_add(1, Ordering::Relaxed);
    });
    let m = Arc::new(LoadedModel::new(Box::new(limited), Some(phoenix_tokenizer())).unwrap());
    let asked = |n| GenerateOptions { max_tokens: n, max_tokens_strict: true, ..Default::default() };
    let prompt: Vec<u32> = (1..=6).collect();

    // 6 + 5 > 10: refused before any forward pass, naming the option and the limit.
    let e = m.generate(Prompt::Ids(prompt.clone()), asked(5), None).err().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidOption);
    assert!(e.message.contains("maxTokens") && e.message.contains("10"), "{}", e.message);
    assert_eq!(forwards.load(Ordering::Relaxed), 0);

    // 6 + 4 = 10 fits exactly.
    let steps = run_all(&mut m.generate(Prompt::Ids(prompt.clone()), asked(4), None).unwrap());
    assert_eq!((steps.len(), finish_of(&steps)), (4, Some(FinishReason::Length)));

    // The default count is cut to the room left; filling the context ends with `length`.
    let steps = run_all(&mut m.generate(Prompt::Ids(prompt.clone()), GenerateOptions::default(), None).unwrap());
    assert_eq!((steps.len(), finish_of(&steps)), (4, Some(FinishReason::Length)));

    // A prompt that fills the context leaves no room, whatever maxTokens says.
    let full: Vec<u32> = (1..=10).collect();
    let e = m.generate(Prompt::Ids(full), GenerateOptions::default(), None).err().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidOption);

    // A text prompt is checked once tokenized, still before the prefill.
    forwards.store(0, Ordering::Relaxed);
    let mut g =
        m.generate(Prompt::Text("one two three four five six seven eight nine ten".into()), asked(3), None).unwrap();
    let e = g.next_step().err().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidOption);
    assert_eq!(forwards.load(Ordering::Relaxed), 0);

    // A restored state's tokens count: 8 saved + 1 prompt token leave room for 1.
    let saved = m.generate(Prompt::Ids(prompt.clone()), asked(2), None).unwrap();
    let mut saved = saved;
    run_all(&mut saved);
    let state = saved.export_state().unwrap();
    let e = m.generate(Prompt::Ids(vec![7]), asked(2), Some(&state)).err().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidOption, "{}", e.message);
    let steps = run_all(&mut m.generate(Prompt::Ids(vec![7]), GenerateOptions::default(), Some(&state)).unwrap());
    assert_eq!((steps.len(), finish_of(&steps)), (1, Some(FinishReason::Length)));

    // `fitToContext` makes an asked-for count a cap.
    let raw = RawGenerateOptions { max_tokens: Some(50.0), fit_to_context: Some(true), ..Default::default() };
    let steps = run_all(&mut m.generate(Prompt::Ids(prompt.clone()), raw.resolve(4096).unwrap(), None).unwrap());
    assert_eq!((steps.len(), finish_of(&steps)), (4, Some(FinishReason::Length)));
    let raw = RawGenerateOptions { max_tokens: Some(50.0), ..Default::default() };
    assert!(m.generate(Prompt::Ids(prompt.clone()), raw.resolve(4096).unwrap(), None).is_err());

    // Without a limit (SSMs) nothing changes.
    let free = toy(4096, 2, vec![], false);
    assert_eq!(run_all(&mut free.generate(Prompt::Ids(full_of(300)), asked(20), None).unwrap()).len(), 20);
}

fn full_of(n: u32) -> Vec<u32> {
    (1..=n).collect()
}

#[test]
fn a_prefill_fed_in_pieces_gives_the_same_tokens_as_one_call() {
    let in_pieces = ToyModel::new(4096, 2, vec![]).with_prefill_chunk(7, |_| {});
    let pieces = Arc::new(LoadedModel::new(Box::new(in_pieces), None).unwrap());
    let whole = toy(4096, 2, vec![], false);
    let prompt: Vec<u32> = (0..50).map(|i| (i * 37) % 4000).collect();
    for opts in [greedy(20), sampled(20, 5)] {
        let a = ids_of(&run_all(&mut pieces.generate(Prompt::Ids(prompt.clone()), opts.clone(), None).unwrap()));
        let b = ids_of(&run_all(&mut whole.generate(Prompt::Ids(prompt.clone()), opts, None).unwrap()));
        assert_eq!(a, b);
    }
}

#[test]
fn snapshot_restore_gives_identical_tokens_greedy_and_seeded() {
    for opts in [greedy(30), sampled(30, 99)] {
        let a = toy(4096, 2, vec![], true);
        let straight = ids_of(&run_all(&mut a.generate(Prompt::Ids(vec![0, 11, 12]), opts.clone(), None).unwrap()));
        // Export right after the prompt, restore into a new LoadedModel, same seed.
        let state = a.generate(Prompt::Ids(vec![0, 11, 12]), opts.clone(), None).unwrap().export_state().unwrap();
        let b = toy(4096, 2, vec![], true);
        let restored = ids_of(&run_all(&mut b.generate(Prompt::Ids(vec![]), opts.clone(), Some(&state)).unwrap()));
        assert_eq!(straight, restored);
    }
}

#[test]
fn greedy_continuation_after_a_mid_generation_snapshot_is_seamless() {
    let a = toy(4096, 2, vec![], true);
    let all = ids_of(&run_all(&mut a.generate(Prompt::Ids(vec![0, 3]), greedy(20), None).unwrap()));
    let mut first = a.generate(Prompt::Ids(vec![0, 3]), greedy(8), None).unwrap();
    let head = ids_of(&run_all(&mut first));
    let state = first.export_state().unwrap();
    let b = toy(4096, 2, vec![], true);
    let mut second = b.generate(Prompt::Ids(vec![]), greedy(12), Some(&state)).unwrap();
    let tail = ids_of(&run_all(&mut second));
    assert_eq!([head, tail.clone()].concat(), all);
    assert_eq!(second.token_ids(), [vec![0, 3], all.clone()].concat());
    assert_eq!(second.stats().prompt_tokens, 0);
}

#[test]
fn a_seeded_continuation_after_a_mid_generation_snapshot_is_seamless() {
    // Each position draws from its own stream of the seed: a run restored after token k with the same
    // seed draws what the uninterrupted run drew from k on (a restarted stream would redraw its start).
    let a = toy(4096, 2, vec![], true);
    let all = ids_of(&run_all(&mut a.generate(Prompt::Ids(vec![0, 3]), sampled(24, 41), None).unwrap()));
    for k in [1, 7, 16, 23] {
        let mut first = a.generate(Prompt::Ids(vec![0, 3]), sampled(k, 41), None).unwrap();
        let head = ids_of(&run_all(&mut first));
        let state = first.export_state().unwrap();
        let b = toy(4096, 2, vec![], true);
        let tail = ids_of(&run_all(&mut b.generate(Prompt::Ids(vec![]), sampled(24 - k, 41), Some(&state)).unwrap()));
        assert_eq!([head, tail].concat(), all, "cut after {k} tokens");
    }
    // Another seed draws otherwise.
    let other = ids_of(&run_all(&mut a.generate(Prompt::Ids(vec![0, 3]), sampled(24, 42), None).unwrap()));
    assert_ne!(other, all);
}

#[test]
fn bad_states_are_state_mismatch() {
    let a = toy(4096, 2, vec![], true);
    let state = a.generate(Prompt::Ids(vec![0, 1]), greedy(3), None).unwrap().export_state().unwrap();
    let other = toy(4096, 3, vec![], true);
    let e = other.generate(Prompt::Ids(vec![]), greedy(3), Some(&state)).err().unwrap();
    assert_eq!(e.code, ErrorCode::StateMismatch);
    for cut in [0, 5, 20, state.len() - 1] {
        let e = a.generate(Prompt::Ids(vec![]), greedy(3), Some(&state[..cut])).err().unwrap();
        assert_eq!(e.code, ErrorCode::StateMismatch, "cut {cut}");
    }
    let e = a.generate(Prompt::Ids(vec![]), greedy(3), Some(b"garbage bytes here......")).err().unwrap();
    assert_eq!(e.code, ErrorCode::StateMismatch);
}

#[test]
fn text_continuation_from_a_state_skips_bos_by_default() {
    let m = toy(4096, 2, vec![], true);
    let state = m.generate(Prompt::Text("Once upon".into()), greedy(1), None).unwrap().export_state().unwrap();
    let mut g = m.generate(Prompt::Text(" a time".into()), greedy(1), Some(&state)).unwrap();
    g.export_state().unwrap(); // tokenizes the pending text prompt (as the first step would)
    let ids = g.token_ids().to_vec();
    let fresh = m.tokenize("Once upon", true).unwrap();
    assert_eq!(ids[..fresh.len()], fresh[..]);
    assert_eq!(ids[fresh.len()..], m.tokenize(" a time", false).unwrap()[..]);
}

/// `cancel()` then `export_state()` before any step: the export reads nothing (a cancelled prompt is
/// not read to its end first), holds the one pending token, and the next step reports `abort`.
#[test]
fn an_export_after_a_cancel_before_any_step_reads_nothing() {
    use std::sync::Mutex;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    let model = ToyModel::new(4096, 2, vec![]).with_prefill_chunk(100, move |n| seen.lock().unwrap().push(n));
    let m = Arc::new(LoadedModel::new(Box::new(model), None).unwrap());
    let prompt: Vec<u32> = (0..1001).map(|i| i % 4000).collect();
    let mut g = m.generate(Prompt::Ids(prompt.clone()), greedy(5), None).unwrap();
    g.cancel();
    let state = g.export_state().unwrap();
    assert!(calls.lock().unwrap().is_empty(), "the export fed the prompt: {:?}", calls.lock().unwrap());
    assert_eq!(phoenix_core::session::snapshot::decode(&state).unwrap().history, prompt[..1]);
    let step = g.next_step().unwrap().unwrap();
    assert_eq!((step.token_id, step.finish_reason), (None, Some(FinishReason::Abort)));
    // Continued with the rest of the prompt, it gives the uncancelled run's tokens.
    let whole = ids_of(&run_all(&mut m.generate(Prompt::Ids(prompt.clone()), greedy(5), None).unwrap()));
    let rest = m.generate(Prompt::Ids(prompt[1..].to_vec()), greedy(5), Some(&state)).unwrap();
    assert_eq!(ids_of(&run_all(&mut { rest })), whole);
}
