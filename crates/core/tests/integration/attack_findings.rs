//! Attacks on the hardened core that its first fixes missed (issue 8, attack share).

use phoenix_core::tokenizer::{Tokenizer, MAX_NORMALIZED_BYTES};
use phoenix_core::ErrorCode;
use serde_json::json;

/// A minimal word-level tokenizer.json with one added token (`<s>`, not normalised, so the text is
/// split around it before normalisation) and the given normalizer.
fn tokenizer_json(normalizer: serde_json::Value) -> Vec<u8> {
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{ "id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true }],
        "normalizer": normalizer,
        "pre_tokenizer": { "type": "Whitespace" },
        "post_processor": null,
        "decoder": null,
        "model": { "type": "WordLevel", "vocab": { "<s>": 0, "[UNK]": 1, "a": 2 }, "unk_token": "[UNK]" }
    });
    serde_json::to_vec(&doc).unwrap()
}

/// The normalizers run once per piece between added tokens: a `Prepend` of 1 MB (a factor of 1
/// with 1 MB "extra") was accepted, and `"<s>a"` × 3000 (12 KB of prompt) grew to 3 GB and aborted
/// the process. The prepended text counts once per piece, so such a tokenizer is refused at load.
#[test]
fn a_long_prepend_is_refused_because_it_is_paid_once_per_piece_between_added_tokens() {
    let bytes = tokenizer_json(json!({ "type": "Prepend", "prepend": "x".repeat(1_000_000) }));
    let error = Tokenizer::from_bytes(&bytes).expect_err("a 1 MB Prepend must be refused");
    assert_eq!(error.code, ErrorCode::Tokenizer);
    assert!(error.message.contains("normalizer refused"), "{}", error.message);
}

/// Below the load limit, the encode-time bound must still hold per piece: with a 250-byte Prepend,
/// 140 000 `<s>a` pieces (560 KB of text) normalise to 35 MB — over the 8 MiB cap — and must be
/// refused before normalising (the old bound, 560 KB × 1 + 250 bytes, let it through).
#[test]
fn the_encode_limit_counts_the_prepend_once_per_piece() {
    let tokenizer = Tokenizer::from_bytes(&tokenizer_json(json!({ "type": "Prepend", "prepend": "x".repeat(250) })))
        .expect("a 250-byte Prepend is within the growth limit");
    let pieces = 140_000;
    let text = "<s>a".repeat(pieces);
    assert!(pieces * 250 > MAX_NORMALIZED_BYTES, "the attack must exceed the cap");
    let error = tokenizer.encode(&text, false).expect_err("the worst case exceeds the normalised-bytes cap");
    assert_eq!(error.code, ErrorCode::Tokenizer);
    assert!(error.message.contains("too long to tokenize"), "{}", error.message);
    // A short text of the same shape still tokenizes.
    let ids = tokenizer.encode(&"<s>a".repeat(100), false).unwrap();
    assert_eq!(ids.iter().filter(|&&id| id == 0).count(), 100);
}

/// serde (and the `tokenizers` crate inside it) quote the value they reject: a tokenizer.json that is
/// a link to a secret, or carries one, had it repeated in the `E_TOKENIZER` message.
#[test]
fn a_malformed_tokenizer_is_refused_without_quoting_its_contents() {
    let secret = "root:x:0:0:SECRET-HASH";
    let mut doc: serde_json::Value = serde_json::from_slice(&tokenizer_json(serde_json::Value::Null)).unwrap();
    doc["model"]["vocab"]["a"] = json!(secret); // a string where an id belongs
    let wrong_type = serde_json::to_vec(&doc).unwrap();
    let not_json = format!("{secret} is not JSON").into_bytes();
    let mut unknown_model = doc.clone();
    unknown_model["model"] = json!({ "type": secret });
    let unknown_model = serde_json::to_vec(&unknown_model).unwrap();
    for bytes in [wrong_type, not_json, unknown_model] {
        let error = Tokenizer::from_bytes(&bytes).expect_err("malformed tokenizer.json");
        assert_eq!(error.code, ErrorCode::Tokenizer);
        assert!(!error.message.contains("SECRET"), "the message quotes the file: {}", error.message);
        assert!(error.message.contains("at line 1 column"), "the message says where: {}", error.message);
    }
}
