//! The tokenizer built from a GGUF header gives llama.cpp's ids:
//! - `gpt2` byte-level BPE: the real SmolLM2-135M-Instruct Q4_1 file (`npm run models:fetch` places it in
//!   `models/`; `PHOENIX_SMOLLM2_GGUF` points elsewhere; without it those tests say SKIPPED);
//! - `llama` SentencePiece: `test/fixtures/gguf-tokenizer/spm-tiny.gguf` (committed, see its script).
//!
//! The expected ids were written by llama.cpp itself (node-llama-cpp, same files):
//! `test/fixtures/gguf-tokenizer/make-llamacpp-ids.mjs`.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use candle_core::quantized::gguf_file::{Content, Value};
use phoenix_core::generate::StreamDetokenizer;
use phoenix_core::tokenizer::{gguf_special_tokens, tokenizer_from_gguf, Tokenizer};

const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The real file's metadata (trusted here: tests read it with candle directly), or `None` (skip).
fn smollm2_metadata(test: &str) -> Option<(HashMap<String, Value>, String)> {
    let path =
        std::env::var_os("PHOENIX_SMOLLM2_GGUF").map(PathBuf::from).unwrap_or_else(|| repo().join("models").join(FILE));
    if !path.is_file() {
        let line = format!("SKIPPED {test}: {} is absent (run `npm run models:fetch`)\n", path.display());
        let _ = std::io::stderr().write_all(line.as_bytes());
        return None;
    }
    let mut file = std::fs::File::open(&path).unwrap();
    let content = Content::read(&mut file).unwrap();
    Some((content.metadata, path.display().to_string()))
}

struct Case {
    text: String,
    ids: Vec<u32>,
}

fn llamacpp_cases(fixture: &str) -> Vec<Case> {
    let path = repo().join("test/fixtures/gguf-tokenizer").join(fixture);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(json["parseSpecial"], true);
    assert_eq!(json["addSpecial"], false);
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_string(),
            ids: c["ids"].as_array().unwrap().iter().map(|id| id.as_u64().unwrap() as u32).collect(),
        })
        .collect()
}

fn smollm2_tokenizer(test: &str) -> Option<Tokenizer> {
    let (metadata, source) = smollm2_metadata(test)?;
    Some(tokenizer_from_gguf(&metadata, &source).unwrap())
}

fn spm_tiny() -> (HashMap<String, Value>, String) {
    let path = repo().join("test/fixtures/gguf-tokenizer/spm-tiny.gguf");
    let content = Content::read(&mut std::fs::File::open(&path).unwrap()).unwrap();
    (content.metadata, path.display().to_string())
}

/// Every fixture string encodes (no BOS/EOS) to exactly llama.cpp's ids.
fn assert_ids_equal_llamacpp(tokenizer: &Tokenizer, fixture: &str) {
    let cases = llamacpp_cases(fixture);
    let fixture = fixture.to_string();
    assert!(cases.len() >= 200, "the fixture holds a few hundred strings");
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            let ours = tokenizer.encode(&c.text, false).unwrap();
            (ours != c.ids).then(|| format!("{:?}: llama.cpp {:?}, ours {:?}", c.text, c.ids, ours))
        })
        .collect();
    assert!(wrong.is_empty(), "{fixture}: {} of {} strings differ:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
}

#[test]
fn byte_level_bpe_ids_equal_llamacpp_on_every_fixture_string() {
    let Some(tokenizer) = smollm2_tokenizer("byte_level_bpe_ids_equal_llamacpp_on_every_fixture_string") else {
        return;
    };
    assert_ids_equal_llamacpp(&tokenizer, "smollm2-llamacpp-ids.json");
}

/// The same vocabulary under each other pre-tokenizer (`tokenizer.ggml.pre`) gives llama.cpp's ids
/// for a file that names it (`make-pre-variants.py` wrote them; each differs from `smollm` somewhere).
#[test]
fn every_pre_tokenizer_gives_llamacpp_ids() {
    let Some((mut metadata, source)) = smollm2_metadata("every_pre_tokenizer_gives_llamacpp_ids") else { return };
    for pre in ["gpt-2", "llama-bpe", "qwen2", "default", "dbrx"] {
        metadata.insert("tokenizer.ggml.pre".to_string(), Value::String(pre.to_string()));
        let tokenizer = tokenizer_from_gguf(&metadata, &source).unwrap();
        assert_ids_equal_llamacpp(&tokenizer, &format!("smollm2-pre-{pre}-llamacpp-ids.json"));
    }
}

#[test]
fn byte_level_bpe_decodes_llamacpp_ids_to_the_text() {
    let Some(tokenizer) = smollm2_tokenizer("byte_level_bpe_decodes_llamacpp_ids_to_the_text") else { return };
    for case in llamacpp_cases("smollm2-llamacpp-ids.json") {
        let back = tokenizer.decode(&case.ids, false).unwrap();
        assert_eq!(back, case.text, "llama.cpp's ids {:?} decode to another text", case.ids);
    }
}

#[test]
fn sentencepiece_ids_equal_llamacpp_on_every_fixture_string() {
    let (metadata, source) = spm_tiny();
    let tokenizer = tokenizer_from_gguf(&metadata, &source).unwrap();
    assert_ids_equal_llamacpp(&tokenizer, "spm-tiny-llamacpp-ids.json");
}

#[test]
fn sentencepiece_decodes_llamacpp_ids_to_the_text() {
    let (metadata, source) = spm_tiny();
    let tokenizer = tokenizer_from_gguf(&metadata, &source).unwrap();
    for case in llamacpp_cases("spm-tiny-llamacpp-ids.json") {
        // A control token in the text (`<s>`) is followed by the `▁` llama.cpp puts before every
        // piece of text, and a `▁` in the text is a space to SentencePiece: only texts without
        // either come back unchanged.
        if ["<s>", "</s>", "<unk>", "\u{2581}"].iter().any(|t| case.text.contains(t)) {
            continue;
        }
        let back = tokenizer.decode(&case.ids, false).unwrap();
        assert_eq!(back, case.text, "llama.cpp's ids {:?} decode to another text", case.ids);
    }
}

#[test]
fn sentencepiece_adds_bos_as_its_header_says() {
    let (metadata, source) = spm_tiny();
    let tokenizer = tokenizer_from_gguf(&metadata, &source).unwrap();
    let special = gguf_special_tokens(&metadata, &source).unwrap();
    assert_eq!((special.bos, special.eos, special.add_bos, special.add_eos), (Some(1), Some(2), true, false));
    let plain = tokenizer.encode("Hello world", false).unwrap();
    assert_eq!(tokenizer.encode("Hello world", true).unwrap(), [vec![1], plain].concat());
}

#[test]
fn chat_markup_is_one_id_per_control_token_and_no_bos_is_added() {
    let Some((metadata, source)) = smollm2_metadata("chat_markup_is_one_id_per_control_token_and_no_bos_is_added")
    else {
        return;
    };
    let tokenizer = tokenizer_from_gguf(&metadata, &source).unwrap();
    let special = gguf_special_tokens(&metadata, &source).unwrap();
    // SmolLM2's header: BOS 1, EOS 2, add_bos_token false.
    assert_eq!((special.bos, special.eos, special.add_bos, special.add_eos), (Some(1), Some(2), false, false));
    // llama.cpp stops at <|endoftext|> (0) and <|im_end|> (2).
    assert_eq!(special.end_of_generation, [0, 2]);
    let with_special = tokenizer.encode("<|im_start|>user\nHi<|im_end|>", true).unwrap();
    assert_eq!(with_special, tokenizer.encode("<|im_start|>user\nHi<|im_end|>", false).unwrap());
    assert_eq!(with_special.first(), tokenizer.token_to_id("<|im_start|>").as_ref());
    assert_eq!(with_special.first(), Some(&1));
    assert_eq!(with_special.last(), Some(&2));
    assert_eq!(tokenizer.id_limit(), 49152);
}

/// Seeded random texts from a pool of awkward characters (no `<`, so no special token's text, and no
/// `▁`, which SentencePiece reads as a space): `count` of them, deterministic.
fn random_texts(count: usize) -> Vec<String> {
    let pool: Vec<char> =
        "aZ09 \t\n\r'.,;:!?-_/\\\"(){}[]=+*&%$#@~`|^éßøñÅΩжЖ中文字日本語한국어🙂🚀👍🏽\u{301}\u{200b}\u{a0}\u{3000}١٢٣"
            .chars()
            .collect();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    (0..count)
        .map(|_| {
            let len = next() % 40;
            (0..len)
                .map(|_| match next() % 8 {
                    // Now and then any Unicode scalar value, not only the pool's.
                    0 => char::from_u32((next() % 0x2_FFFF) as u32)
                        .filter(|c| *c != '<' && *c != '\u{2581}')
                        .unwrap_or('x'),
                    _ => pool[next() % pool.len()],
                })
                .collect()
        })
        .collect()
}

#[test]
fn random_texts_round_trip_through_both_kinds_of_vocabulary() {
    let (metadata, source) = spm_tiny();
    let spm = tokenizer_from_gguf(&metadata, &source).unwrap();
    let smollm2 = smollm2_tokenizer("random_texts_round_trip_through_both_kinds_of_vocabulary (SmolLM2 part)");
    for text in random_texts(3000) {
        let ids = spm.encode(&text, false).unwrap();
        assert_eq!(spm.decode(&ids, false).unwrap(), text, "SentencePiece ids {ids:?}");
        if let Some(t) = &smollm2 {
            let ids = t.encode(&text, false).unwrap();
            assert_eq!(t.decode(&ids, false).unwrap(), text, "byte-level BPE ids {ids:?}");
        }
    }
}

/// Streaming llama.cpp's ids one at a time (as generation does) gives the same text as decoding them
/// at once, for both kinds of vocabulary (SentencePiece's leading-space strip, byte fallback and
/// byte-level characters split over several ids).
#[test]
fn streamed_text_equals_decoded_text() {
    let (metadata, source) = spm_tiny();
    let mut tokenizers = vec![("spm-tiny-llamacpp-ids.json", tokenizer_from_gguf(&metadata, &source).unwrap())];
    if let Some(t) = smollm2_tokenizer("streamed_text_equals_decoded_text (SmolLM2 part)") {
        tokenizers.push(("smollm2-llamacpp-ids.json", t));
    }
    for (fixture, tokenizer) in tokenizers {
        let tokenizer = std::sync::Arc::new(tokenizer);
        for case in llamacpp_cases(fixture) {
            let mut stream = StreamDetokenizer::new(std::sync::Arc::clone(&tokenizer), &[], false).unwrap();
            let mut text = String::new();
            for &id in &case.ids {
                text += &stream.push(id).unwrap();
            }
            text += &stream.finish().unwrap();
            assert_eq!(text, tokenizer.decode(&case.ids, false).unwrap(), "{fixture}: ids {:?}", case.ids);
        }
    }
}
