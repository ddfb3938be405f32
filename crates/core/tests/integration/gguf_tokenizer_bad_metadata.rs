//! A GGUF header's tokenizer metadata is hostile: every malformed key is a typed `E_TOKENIZER` that
//! names the key (and never quotes the file's strings), never a panic or a silently different
//! tokenizer. Also the flags (add BOS/EOS, space prefix) and token types on small hand-made vocabularies.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use phoenix_core::error::ErrorCode;
use phoenix_core::tokenizer::{gguf_special_tokens, tokenizer_from_gguf};

const SOURCE: &str = "hostile.gguf";
/// A string in the vocabulary that must never appear in an error message.
const SECRET: &str = "SECRETtoken";

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
}

fn ints(items: &[i32]) -> Value {
    Value::Array(items.iter().map(|&i| Value::I32(i)).collect())
}

/// A tiny byte-level BPE vocabulary: `ab`, `Ġab` ("␠ab") as merges, `<|end|>` a control token,
/// `<tool>` a user-defined one.
fn gpt2() -> HashMap<String, Value> {
    let tokens = ["<|end|>", "a", "b", "ab", "Ġ", "Ġab", SECRET, "<tool>", "<|start|>"];
    HashMap::from([
        ("tokenizer.ggml.model".to_string(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".to_string(), Value::String("gpt-2".into())),
        ("tokenizer.ggml.tokens".to_string(), strings(&tokens)),
        ("tokenizer.ggml.token_type".to_string(), ints(&[3, 1, 1, 1, 1, 1, 1, 4, 3])),
        ("tokenizer.ggml.merges".to_string(), strings(&["a b", "Ġ ab"])),
        ("tokenizer.ggml.bos_token_id".to_string(), Value::U32(8)),
        ("tokenizer.ggml.eos_token_id".to_string(), Value::U32(0)),
    ])
}

/// A tiny SentencePiece vocabulary with the 256 byte tokens.
fn llama() -> HashMap<String, Value> {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    for t in ["▁", "h", "i", "▁h", "hi", "▁hi"] {
        tokens.push(t.to_string());
        types.push(1);
    }
    let n = tokens.len();
    // Scores: "▁hi" best, then "▁h", then "hi".
    let mut scores = vec![0.0f32; n];
    scores[n - 1] = -1.0;
    scores[n - 3] = -2.0;
    scores[n - 2] = -3.0;
    for s in scores.iter_mut().take(n - 3).skip(3 + 256) {
        *s = -10.0;
    }
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    HashMap::from([
        ("tokenizer.ggml.model".to_string(), Value::String("llama".into())),
        ("tokenizer.ggml.tokens".to_string(), strings(&refs)),
        ("tokenizer.ggml.token_type".to_string(), ints(&types)),
        ("tokenizer.ggml.scores".to_string(), Value::Array(scores.into_iter().map(Value::F32).collect())),
    ])
}

fn id_of(md: &HashMap<String, Value>, token: &str) -> u32 {
    let Value::Array(tokens) = &md["tokenizer.ggml.tokens"] else { unreachable!() };
    tokens.iter().position(|t| matches!(t, Value::String(s) if s == token)).unwrap() as u32
}

/// `tokenizer_from_gguf` refuses `md` with `E_TOKENIZER` naming `key` and the file.
fn refused(md: &HashMap<String, Value>, key: &str) -> String {
    let err = tokenizer_from_gguf(md, SOURCE).expect_err(&format!("accepted a bad `{key}`"));
    assert_eq!(err.code, ErrorCode::Tokenizer, "{}", err.message);
    assert!(err.message.contains(SOURCE) && err.message.contains(&format!("`{key}`")), "{}", err.message);
    assert!(!err.message.contains(SECRET), "the message quotes the file: {}", err.message);
    err.message
}

fn with(mut md: HashMap<String, Value>, key: &str, value: Value) -> HashMap<String, Value> {
    md.insert(key.to_string(), value);
    md
}

fn without(mut md: HashMap<String, Value>, key: &str) -> HashMap<String, Value> {
    md.remove(key);
    md
}

#[test]
fn the_hand_made_vocabularies_work() {
    let t = tokenizer_from_gguf(&gpt2(), SOURCE).unwrap();
    assert_eq!(t.encode("ab ab", false).unwrap(), [3, 5]);
    // Control and user-defined tokens are matched in the text first, whole.
    assert_eq!(t.encode("<|start|>ab<tool>ab<|end|>", false).unwrap(), [8, 3, 7, 3, 0]);
    // Skipping special tokens drops control tokens, not user-defined ones.
    assert_eq!(t.decode(&[8, 3, 7, 5, 0], true).unwrap(), "ab<tool> ab");
    assert_eq!(t.decode(&[8, 3, 7, 5, 0], false).unwrap(), "<|start|>ab<tool> ab<|end|>");

    let md = llama();
    let t = tokenizer_from_gguf(&md, SOURCE).unwrap();
    let hi = id_of(&md, "▁hi");
    // Space prefix, BOS (llama.cpp adds one for SentencePiece unless the header says otherwise).
    assert_eq!(t.encode("hi", true).unwrap(), [1, hi]);
    // Bytes with no piece fall back to <0xNN> tokens and decode back.
    let ids = t.encode("hé", false).unwrap();
    assert_eq!(ids, [id_of(&md, "▁h"), 3 + 0xC3, 3 + 0xA9]);
    assert_eq!(t.decode(&ids, false).unwrap(), "hé");
}

#[test]
fn add_bos_add_eos_and_space_prefix_flags_are_honoured() {
    let md = with(
        with(gpt2(), "tokenizer.ggml.add_bos_token", Value::Bool(true)),
        "tokenizer.ggml.add_eos_token",
        Value::Bool(true),
    );
    assert_eq!(tokenizer_from_gguf(&md, SOURCE).unwrap().encode("ab", true).unwrap(), [8, 3, 0]);
    assert_eq!(tokenizer_from_gguf(&md, SOURCE).unwrap().encode("ab", false).unwrap(), [3]);
    // gpt2 without the flag: no BOS; llama-bpe without it: BOS (llama.cpp's defaults).
    assert_eq!(tokenizer_from_gguf(&gpt2(), SOURCE).unwrap().encode("ab", true).unwrap(), [3]);
    let llama3 = with(gpt2(), "tokenizer.ggml.pre", Value::String("llama-bpe".into()));
    assert_eq!(tokenizer_from_gguf(&llama3, SOURCE).unwrap().encode("ab", true).unwrap(), [8, 3]);
    let s = gguf_special_tokens(&llama3, SOURCE).unwrap();
    assert_eq!((s.bos, s.eos, s.add_bos, s.add_eos), (Some(8), Some(0), true, false));

    let md = with(llama(), "tokenizer.ggml.add_bos_token", Value::Bool(false));
    let hi = id_of(&md, "▁hi");
    assert_eq!(tokenizer_from_gguf(&md, SOURCE).unwrap().encode("hi", true).unwrap(), [hi]);
    let md = with(md, "tokenizer.ggml.add_space_prefix", Value::Bool(false));
    let t = tokenizer_from_gguf(&md, SOURCE).unwrap();
    assert_eq!(t.encode("hi", true).unwrap(), [id_of(&md, "hi")]);
    assert_eq!(t.decode(&[id_of(&md, "hi")], false).unwrap(), "hi");
}

#[test]
fn end_of_generation_ids_are_eos_eot_and_the_texts_llamacpp_knows() {
    // `<|im_end|>` typed NORMAL: llama.cpp makes it a control token (one id in text) that ends a turn.
    let mut md = gpt2();
    let tokens = ["<|end|>", "a", "b", "ab", "Ġ", "Ġab", "<|im_end|>", "<tool>", "<|start|>"];
    md.insert("tokenizer.ggml.tokens".into(), strings(&tokens));
    md.insert("tokenizer.ggml.eot_token_id".into(), Value::U32(7));
    let s = gguf_special_tokens(&md, SOURCE).unwrap();
    assert_eq!(s.end_of_generation, [0, 6, 7]);
    let t = tokenizer_from_gguf(&md, SOURCE).unwrap();
    assert_eq!(t.encode("ab<|im_end|>", false).unwrap(), [3, 6]);
    assert_eq!(t.decode(&[3, 6], true).unwrap(), "ab");
    refused(&with(md, "tokenizer.ggml.eot_token_id", Value::U32(9)), "tokenizer.ggml.eot_token_id");
}

#[test]
fn missing_keys_are_named() {
    refused(&without(gpt2(), "tokenizer.ggml.model"), "tokenizer.ggml.model");
    refused(&without(gpt2(), "tokenizer.ggml.tokens"), "tokenizer.ggml.tokens");
    refused(&without(gpt2(), "tokenizer.ggml.merges"), "tokenizer.ggml.merges");
    refused(&without(llama(), "tokenizer.ggml.scores"), "tokenizer.ggml.scores");
    refused(&HashMap::new(), "tokenizer.ggml.model");
    // BOS to be added, but no BOS id (llama.cpp would silently use id 11 for a gpt2 vocabulary).
    let md = with(without(gpt2(), "tokenizer.ggml.bos_token_id"), "tokenizer.ggml.add_bos_token", Value::Bool(true));
    refused(&md, "tokenizer.ggml.bos_token_id");
    let md = with(without(gpt2(), "tokenizer.ggml.eos_token_id"), "tokenizer.ggml.add_eos_token", Value::Bool(true));
    refused(&md, "tokenizer.ggml.eos_token_id");
}

#[test]
fn unknown_models_and_pre_tokenizers_are_refused_by_name() {
    let message = refused(&with(gpt2(), "tokenizer.ggml.model", Value::String("bert".into())), "tokenizer.ggml.model");
    assert!(message.contains("not supported"), "{message}");
    let message =
        refused(&with(gpt2(), "tokenizer.ggml.pre", Value::String("deepseek-coder".into())), "tokenizer.ggml.pre");
    assert!(message.contains("`deepseek-coder`"), "{message}");
    // A long or odd name is not echoed.
    let odd = format!("{SECRET}\n{}", "x".repeat(100));
    let message = refused(&with(gpt2(), "tokenizer.ggml.pre", Value::String(odd)), "tokenizer.ggml.pre");
    assert!(message.contains("unknown pre-tokenizer"), "{message}");
}

#[test]
fn wrong_gguf_types_are_named() {
    let cases: Vec<(&str, Value)> = vec![
        ("tokenizer.ggml.model", Value::U32(2)),
        ("tokenizer.ggml.pre", Value::Array(vec![])),
        ("tokenizer.ggml.tokens", Value::String(SECRET.into())),
        ("tokenizer.ggml.tokens", Value::Array(vec![Value::String("a".into()), Value::U8(1)])),
        ("tokenizer.ggml.token_type", strings(&["1"; 9])),
        ("tokenizer.ggml.token_type", Value::F32(1.0)),
        ("tokenizer.ggml.merges", ints(&[1, 2])),
        ("tokenizer.ggml.merges", Value::Array(vec![Value::Array(vec![])])),
        ("tokenizer.ggml.bos_token_id", Value::String("1".into())),
        ("tokenizer.ggml.bos_token_id", Value::F64(1.0)),
        ("tokenizer.ggml.eos_token_id", Value::Bool(true)),
        ("tokenizer.ggml.add_bos_token", Value::U8(1)),
        ("tokenizer.ggml.add_eos_token", Value::String("true".into())),
    ];
    for (key, value) in cases {
        refused(&with(gpt2(), key, value), key);
    }
    refused(&with(llama(), "tokenizer.ggml.scores", strings(&["0"; 265])), "tokenizer.ggml.scores");
    refused(&with(llama(), "tokenizer.ggml.add_space_prefix", Value::I32(0)), "tokenizer.ggml.add_space_prefix");
}

#[test]
fn counts_ids_and_merges_are_checked_against_the_vocabulary() {
    // One type per token, one score per token.
    refused(&with(gpt2(), "tokenizer.ggml.token_type", ints(&[1; 8])), "tokenizer.ggml.token_type");
    refused(&with(gpt2(), "tokenizer.ggml.token_type", ints(&[1; 10])), "tokenizer.ggml.token_type");
    let n = match &llama()["tokenizer.ggml.tokens"] {
        Value::Array(t) => t.len(),
        _ => unreachable!(),
    };
    let scores = |n: usize| Value::Array(vec![Value::F32(0.0); n]);
    refused(&with(llama(), "tokenizer.ggml.scores", scores(n - 1)), "tokenizer.ggml.scores");
    let mut nan = vec![Value::F32(0.0); n];
    nan[n - 1] = Value::F32(f32::NAN);
    refused(&with(llama(), "tokenizer.ggml.scores", Value::Array(nan)), "tokenizer.ggml.scores");
    // Ids past the vocabulary or negative.
    for id in [Value::U32(9), Value::U64(u64::MAX), Value::I32(-1), Value::I64(1 << 40)] {
        refused(&with(gpt2(), "tokenizer.ggml.bos_token_id", id.clone()), "tokenizer.ggml.bos_token_id");
        refused(&with(gpt2(), "tokenizer.ggml.eos_token_id", id), "tokenizer.ggml.eos_token_id");
    }
    for id in [Value::U32(n as u32), Value::I16(-1)] {
        refused(&with(llama(), "tokenizer.ggml.unknown_token_id", id), "tokenizer.ggml.unknown_token_id");
    }
    // Merges naming a token the vocabulary lacks (either side, or the merged result), or not a pair.
    for merge in [format!("{SECRET} zz"), "a c".to_string(), "b a".to_string(), "ab".to_string(), " ".to_string()] {
        let md = with(gpt2(), "tokenizer.ggml.merges", strings(&["a b", &merge]));
        refused(&md, "tokenizer.ggml.merges");
    }
    // An empty vocabulary, an empty token, the same token twice.
    refused(&with(gpt2(), "tokenizer.ggml.tokens", Value::Array(vec![])), "tokenizer.ggml.tokens");
    let tokens = ["<|end|>", "a", "b", "ab", "Ġ", "Ġab", "", "<tool>", "<|start|>"];
    refused(&with(gpt2(), "tokenizer.ggml.tokens", strings(&tokens)), "tokenizer.ggml.tokens");
    let tokens = ["<|end|>", "a", "b", "ab", "Ġ", "Ġab", SECRET, "<tool>", SECRET];
    refused(&with(gpt2(), "tokenizer.ggml.tokens", strings(&tokens)), "tokenizer.ggml.tokens");
}

#[test]
fn huge_arrays_are_refused_before_use() {
    // More tokens than any real vocabulary (the header reader already holds them; nothing is built).
    let huge = Value::Array(vec![Value::Bool(false); (1 << 22) + 1]);
    refused(&with(gpt2(), "tokenizer.ggml.tokens", huge.clone()), "tokenizer.ggml.tokens");
    refused(&with(gpt2(), "tokenizer.ggml.merges", huge), "tokenizer.ggml.merges");
    // Control tokens too large to match in every text (9 MiB in all).
    let big: Vec<String> = (0..9).map(|i| format!("{i}{}", "y".repeat(1 << 20))).collect();
    let mut tokens: Vec<&str> = vec!["<|end|>", "a", "b", "ab", "Ġ", "Ġab", SECRET, "<tool>", "<|start|>"];
    tokens.extend(big.iter().map(String::as_str));
    let mut md = with(gpt2(), "tokenizer.ggml.tokens", strings(&tokens));
    md.insert("tokenizer.ggml.token_type".into(), ints(&[[3, 1, 1, 1, 1, 1, 1, 4, 3].as_slice(), &[3; 9]].concat()));
    let message = refused(&md, "tokenizer.ggml.token_type");
    assert!(message.contains("bytes allowed"), "{message}");
    // SentencePiece tokens too long to derive merges from in bounded time.
    let long: Vec<String> = (0..1024).map(|i| format!("{i}{}", "x".repeat(1 << 16))).collect();
    let refs: Vec<&str> = long.iter().map(String::as_str).collect();
    let md = HashMap::from([
        ("tokenizer.ggml.model".to_string(), Value::String("llama".into())),
        ("tokenizer.ggml.tokens".to_string(), strings(&refs)),
        ("tokenizer.ggml.scores".to_string(), Value::Array(vec![Value::F32(0.0); refs.len()])),
    ]);
    let message = refused(&md, "tokenizer.ggml.tokens");
    assert!(message.contains("too long"), "{message}");
}
