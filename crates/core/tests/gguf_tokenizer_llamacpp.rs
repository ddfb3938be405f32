//! The tokenizer built from a GGUF header gives llama.cpp's ids, on the real SmolLM2-135M-Instruct
//! Q4_1 file (`npm run models:fetch` places it in `models/`; `PHOENIX_SMOLLM2_GGUF` points elsewhere).
//! The expected ids were written by llama.cpp itself (node-llama-cpp, same file):
//! `test/fixtures/gguf-tokenizer/make-llamacpp-ids.mjs`. Without the file the tests say SKIPPED.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use candle_core::quantized::gguf_file::{Content, Value};
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

fn llamacpp_cases() -> Vec<Case> {
    let path = repo().join("test/fixtures/gguf-tokenizer/smollm2-llamacpp-ids.json");
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

#[test]
fn ids_equal_llamacpp_on_every_fixture_string() {
    let Some(tokenizer) = smollm2_tokenizer("ids_equal_llamacpp_on_every_fixture_string") else { return };
    let cases = llamacpp_cases();
    assert!(cases.len() >= 200, "the fixture holds a few hundred strings");
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            let ours = tokenizer.encode(&c.text, false).unwrap();
            (ours != c.ids).then(|| format!("{:?}: llama.cpp {:?}, ours {:?}", c.text, c.ids, ours))
        })
        .collect();
    assert!(wrong.is_empty(), "{} of {} strings differ:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
}

#[test]
fn decoding_gives_the_text_back() {
    let Some(tokenizer) = smollm2_tokenizer("decoding_gives_the_text_back") else { return };
    for case in llamacpp_cases() {
        let back = tokenizer.decode(&case.ids, false).unwrap();
        assert_eq!(back, case.text, "llama.cpp's ids {:?} decode to another text", case.ids);
    }
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
    let with_special = tokenizer.encode("<|im_start|>user\nHi<|im_end|>", true).unwrap();
    assert_eq!(with_special, tokenizer.encode("<|im_start|>user\nHi<|im_end|>", false).unwrap());
    assert_eq!(with_special.first(), tokenizer.token_to_id("<|im_start|>").as_ref());
    assert_eq!(with_special.first(), Some(&1));
    assert_eq!(with_special.last(), Some(&2));
    assert_eq!(tokenizer.id_limit(), 49152);
}
