//! How much a `tokenizer.json`'s normalizers can grow a text, known before any text is normalised.
//!
//! A normalizer runs over the whole prompt in one go inside the `tokenizers` crate, so a chain of
//! `Replace` steps that each turn one character into many (or one `Replace` with a huge `content`)
//! would grow memory without bound from a short prompt. Every normalizer type has a worst case of the
//! form `out ≤ factor · in + extra` (UTF-8 bytes); a `Sequence` composes its steps. The crate runs the
//! normalizers once per piece of text between added tokens, so `extra` counts once per piece (up to
//! once per input byte, see [`Expansion::per_byte`]). At load, a bound whose per-byte growth exceeds
//! [`MAX_FACTOR`] is refused; at encode time, a text whose worst-case normalised
//! length exceeds [`MAX_NORMALIZED_BYTES`] is refused before the normaliser runs.
//!
//! Per-step worst cases (UTF-8 bytes out per byte in):
//! - `NFC`, `NFD`: 3; `NFKC`, `NFKD`: 11 (Unicode UAX #15, "Stability of normalized forms").
//! - `Lowercase`: 2 (a 2-byte capital may lower to 3 bytes); `ByteLevel`: 2 (each byte becomes a
//!   character of at most 2 bytes); `Strip`, `StripAccents`, `Nmt`: 1.
//! - `BertNormalizer`: 5/3 for the spaces put around CJK characters, × 3 when it strips accents
//!   (NFD), × 2 when it lowercases.
//! - `Prepend`: 1, plus its text once.
//! - `Replace`: a literal pattern of `p ≥ 1` bytes by `c` bytes: max(1, c/p); a regex (which may match
//!   the empty string between characters) or an empty pattern: 1 + c per byte, plus `c` at the end.
//! - `Precompiled` (SentencePiece charsmap): each grapheme or character (≥ 1 byte) becomes at most the
//!   longest replacement string stored in the charsmap.

use serde_json::Value;

/// Largest worst-case growth (normalised bytes per input byte) a tokenizer may declare. Real
/// tokenizers stay far below it (GPT-NeoX: 3, BERT: 10, SentencePiece charsmaps: ~33, with a
/// `Replace(" " → "▁")` after it ~99).
pub const MAX_FACTOR: f64 = 256.0;

/// Largest normalised text (worst case, UTF-8 bytes) one encode may produce. The `tokenizers` crate
/// keeps two offsets per normalised byte and a `Token` (with its string) per token in the splits and
/// again in the `Encoding`: measured ~130 bytes of memory per byte of English-like text (SmolLM2's
/// byte-level BPE, 3.4 bytes per token), so 8 MiB peaks near 1.1 GB; 32 MiB had reached 5.5 GB. 8 MiB
/// is ~2M tokens, past every supported context and hours of an SSM's prefill.
pub const MAX_NORMALIZED_BYTES: usize = 8 << 20;

/// `out ≤ factor · in + extra`, in UTF-8 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expansion {
    pub factor: f64,
    pub extra: f64,
}

impl Expansion {
    pub const IDENTITY: Expansion = Expansion { factor: 1.0, extra: 0.0 };

    const fn scale(factor: f64) -> Self {
        Expansion { factor, extra: 0.0 }
    }

    /// This step, then `next`.
    fn then(self, next: Expansion) -> Expansion {
        Expansion { factor: self.factor * next.factor, extra: self.extra * next.factor + next.extra }
    }

    /// Growth per input byte of a whole text. The `tokenizers` crate normalises each piece between
    /// added tokens separately, so `extra` is paid once per piece, and a text of `n` bytes has at
    /// most `n + 1` pieces (every added token is at least one byte): `out ≤ (factor + extra)·n + extra`.
    pub fn per_byte(&self) -> f64 {
        self.factor + self.extra
    }

    /// Worst-case normalised length of `input_bytes` bytes (saturating, never overflows).
    pub fn worst_case(&self, input_bytes: usize) -> f64 {
        self.per_byte() * input_bytes as f64 + self.extra
    }

    /// Longest input (bytes) whose worst case fits [`MAX_NORMALIZED_BYTES`].
    pub fn max_input_bytes(&self) -> usize {
        (((MAX_NORMALIZED_BYTES as f64) - self.extra).max(0.0) / self.per_byte()) as usize
    }
}

/// The bound of a serialised normalizer (`tokenizer.json`'s `normalizer`, `null` = none).
/// `Err` names the step whose growth cannot be bounded.
pub fn of_normalizer(normalizer: &Value) -> Result<Expansion, String> {
    if normalizer.is_null() {
        return Ok(Expansion::IDENTITY);
    }
    let kind = normalizer.get("type").and_then(Value::as_str).unwrap_or("");
    let text_len = |field: &str| normalizer.get(field).and_then(Value::as_str).map_or(0, str::len) as f64;
    let flag = |field: &str| normalizer.get(field).and_then(Value::as_bool);
    Ok(match kind {
        "Sequence" => {
            let steps =
                normalizer.get("normalizers").and_then(Value::as_array).ok_or("Sequence without `normalizers`")?;
            let mut total = Expansion::IDENTITY;
            for step in steps {
                total = total.then(of_normalizer(step)?);
            }
            total
        }
        "NFC" | "NFD" => Expansion::scale(3.0),
        "NFKC" | "NFKD" => Expansion::scale(11.0),
        "Lowercase" | "ByteLevel" => Expansion::scale(2.0),
        "Strip" | "StripAccents" | "Nmt" => Expansion::IDENTITY,
        "BertNormalizer" => {
            let lowercase = flag("lowercase").unwrap_or(true);
            let strip_accents = flag("strip_accents").unwrap_or(lowercase);
            let mut e = Expansion::scale(if flag("handle_chinese_chars").unwrap_or(true) { 5.0 / 3.0 } else { 1.0 });
            if strip_accents {
                e = e.then(Expansion::scale(3.0));
            }
            if lowercase {
                e = e.then(Expansion::scale(2.0));
            }
            e
        }
        "Prepend" => Expansion { factor: 1.0, extra: text_len("prepend") },
        "Replace" => {
            let content = text_len("content");
            let pattern = normalizer.get("pattern");
            match pattern.and_then(|p| p.get("String")).and_then(Value::as_str) {
                Some(literal) if !literal.is_empty() => Expansion::scale((content / literal.len() as f64).max(1.0)),
                _ => Expansion { factor: 1.0 + content, extra: content },
            }
        }
        "Precompiled" => {
            let charsmap = normalizer.get("precompiled_charsmap").and_then(Value::as_str).unwrap_or("");
            Expansion::scale(longest_charsmap_replacement(charsmap)?.max(1) as f64)
        }
        other => return Err(format!("normalizer type `{other}` has no known growth bound")),
    })
}

/// Longest replacement in a SentencePiece charsmap (base64 of `[u32 trie bytes][trie][replacements]`,
/// replacements NUL-terminated; a lookup may start anywhere inside one, so the longest NUL-free run).
fn longest_charsmap_replacement(base64_charsmap: &str) -> Result<usize, String> {
    let blob = base64::decode(base64_charsmap).map_err(|_| "Precompiled charsmap is not base64".to_string())?;
    let trie_bytes = blob.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let replacements = trie_bytes
        .and_then(|t| t.checked_add(4))
        .and_then(|start| blob.get(start..))
        .ok_or("Precompiled charsmap is truncated")?;
    Ok(replacements.split(|&b| b == 0).map(<[u8]>::len).max().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn replace(from: &str, to: &str) -> Value {
        json!({ "type": "Replace", "pattern": { "String": from }, "content": to })
    }

    #[test]
    fn steps_compose_and_chains_of_growing_replaces_are_unbounded() {
        let llama = json!({ "type": "Sequence", "normalizers": [
            { "type": "Prepend", "prepend": "▁" }, replace(" ", "▁") ] });
        assert_eq!(of_normalizer(&llama).unwrap(), Expansion { factor: 3.0, extra: 9.0 });
        assert_eq!(of_normalizer(&json!({ "type": "NFC" })).unwrap().factor, 3.0);
        assert_eq!(of_normalizer(&Value::Null).unwrap(), Expansion::IDENTITY);
        let chain = json!({ "type": "Sequence", "normalizers": vec![replace("a", "aaaaaaaa"); 4] });
        assert_eq!(of_normalizer(&chain).unwrap().factor, 4096.0);
        let huge = replace("a", &"b".repeat(100_000));
        assert!(of_normalizer(&huge).unwrap().factor > MAX_FACTOR);
        let regex = json!({ "type": "Replace", "pattern": { "Regex": "" }, "content": "xy" });
        assert_eq!(of_normalizer(&regex).unwrap(), Expansion { factor: 3.0, extra: 2.0 });
    }

    #[test]
    fn a_charsmap_is_bounded_by_its_longest_replacement() {
        let mut blob = 4u32.to_le_bytes().to_vec();
        blob.extend_from_slice(&[0; 4]); // a (meaningless) 4-byte trie
        blob.extend_from_slice(b"ab\0abcdefg\0c\0");
        let n = json!({ "type": "Precompiled", "precompiled_charsmap": base64::encode(&blob) });
        assert_eq!(of_normalizer(&n).unwrap().factor, 7.0);
    }
}
