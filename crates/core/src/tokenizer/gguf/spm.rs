//! BPE merges for a SentencePiece (`llama`-model) vocabulary, derived from its scores.
//!
//! llama.cpp's SPM tokenizer repeatedly merges the adjacent pair whose concatenation is a token with
//! the highest score. A `tokenizers` BPE model does the same when its merges are every split of every
//! token into two tokens, ranked by the merged token's score (highest first), which is how
//! `tokenizers`' own `SentencePieceExtractor` converts a SentencePiece model: ties keep (left id,
//! right id) order, and the sort is stable.

use std::collections::HashMap;

/// Upper bound on the byte comparisons spent enumerating splits (Σ len² over tokens): ~0.5 s of
/// work. Real vocabularies need far less (Llama-2: ~2·10⁶; a 256k vocabulary: ~10⁸).
pub const MAX_SPLIT_WORK: u64 = 1 << 31;

/// Every `(left, right)` pair of tokens whose concatenation is a token, best merge first.
/// `Err` when the vocabulary's tokens are too long to enumerate within [`MAX_SPLIT_WORK`].
pub fn merges_from_scores<'a>(tokens: &[&'a str], scores: &[f32]) -> Result<Vec<(&'a str, &'a str)>, String> {
    let work: u64 = tokens.iter().map(|t| (t.len() as u64).saturating_mul(t.len() as u64)).fold(0, u64::saturating_add);
    if work > MAX_SPLIT_WORK {
        return Err(format!(
            "its tokens are too long to derive SentencePiece merges from (Σ length² = {work} > {MAX_SPLIT_WORK})"
        ));
    }
    let id_of: HashMap<&str, usize> = tokens.iter().enumerate().map(|(id, &t)| (t, id)).collect();
    let mut ranked: Vec<(f32, usize, usize, &'a str, &'a str)> = Vec::new();
    for (merged_id, &merged) in tokens.iter().enumerate() {
        let mut local = Vec::new();
        for (at, _) in merged.char_indices().skip(1) {
            let (left, right) = merged.split_at(at);
            if let (Some(&l), Some(&r)) = (id_of.get(left), id_of.get(right)) {
                local.push((scores[merged_id], l, r, left, right));
            }
        }
        local.sort_by_key(|&(_, l, r, _, _)| (l, r));
        ranked.extend(local);
    }
    // Stable: equal scores keep token order, then (left id, right id).
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    Ok(ranked.into_iter().map(|(_, _, _, l, r)| (l, r)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_follow_the_merged_tokens_scores() {
        let tokens = ["a", "b", "c", "ab", "bc", "abc"];
        let scores = [0.0, 0.0, 0.0, -2.0, -1.0, -3.0];
        let merges = merges_from_scores(&tokens, &scores).unwrap();
        assert_eq!(merges, vec![("b", "c"), ("a", "b"), ("a", "bc"), ("ab", "c")]);
    }

    #[test]
    fn absurdly_long_tokens_are_refused() {
        let long = "x".repeat(1 << 16);
        let tokens = vec![long.as_str(); 1 << 10];
        let scores = vec![0.0; tokens.len()];
        assert!(merges_from_scores(&tokens, &scores).unwrap_err().contains("too long"));
    }
}
