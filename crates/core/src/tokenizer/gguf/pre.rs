//! The pre-tokenizer a `gpt2`-model GGUF names in `tokenizer.ggml.pre`, as llama.cpp runs it.
//!
//! llama.cpp (`llama-vocab.cpp`, `llm_tokenizer_bpe`) splits text with a list of regexes applied one
//! after the other, each to the pieces the previous one left, keeping matches and the text between
//! them as separate pieces; then each piece is byte-level encoded and BPE-merged. In `tokenizers` that
//! is a `Sequence` of `Split(regex, Isolated)` steps followed by `ByteLevel` (whose own regex is the
//! GPT-2 one, used where the last llama.cpp regex is exactly GPT-2's). The regexes are llama.cpp's
//! (its adapted forms, e.g. `(?:'[sS]|…)` for a case-insensitive group); the names are its aliases.

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

/// GPT-2's regex; `ByteLevel { use_regex: true }` applies exactly this one.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What a `tokenizer.ggml.pre` name means besides its regexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreTokenizer {
    /// Regexes applied before the byte-level step, in order.
    pub splits: &'static [&'static str],
    /// Whether GPT-2's regex follows the splits (run by `ByteLevel` itself).
    pub gpt2_regex_last: bool,
    /// A word that is a whole token is taken as is, before any merge (llama.cpp `ignore_merges`).
    pub ignore_merges: bool,
    /// llama.cpp's default for adding BOS, before `tokenizer.ggml.add_bos_token` overrides it.
    pub add_bos_default: bool,
}

impl PreTokenizer {
    const fn new(splits: &'static [&'static str], gpt2_regex_last: bool) -> Self {
        Self { splits, gpt2_regex_last, ignore_merges: false, add_bos_default: false }
    }

    /// The pre-tokenizer llama.cpp uses for `name`; `None` for a name it does not know or that this
    /// project does not implement (the caller refuses it: a wrong split silently changes every id).
    pub fn named(name: &str) -> Option<Self> {
        Some(match name {
            // LLAMA_VOCAB_PRE_TYPE_DEFAULT.
            "default" => Self::new(&[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"], false),
            // LLAMA_VOCAB_PRE_TYPE_GPT2 (and MPT, OLMO, JAIS, TRILLION, GRANITE_DOCLING: the same regex).
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de" | "a.x-4.0"
            | "mellum" | "exaone4" | "mpt" | "olmo" | "jais" | "trillion" | "granite-docling" => Self::new(&[], true),
            // LLAMA_VOCAB_PRE_TYPE_STARCODER and the types sharing its regexes (digits split one by one).
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
                Self::new(&[r"\p{N}"], true)
            }
            // LLAMA_VOCAB_PRE_TYPE_LLAMA3: also takes whole-token words as is, and adds BOS.
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2"
            | "jina-v5-nano" => Self { ignore_merges: true, add_bos_default: true, ..Self::new(&[LLAMA3], false) },
            // DBRX / SMAUG: llama3's regex without its flags.
            "dbrx" | "smaug-bpe" => Self::new(&[LLAMA3], false),
            // LLAMA_VOCAB_PRE_TYPE_QWEN2 (and STABLELM2, HUNYUAN, SOLAR_OPEN: the same regex).
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" | "stablelm2" | "hunyuan" | "solar-open" => {
                Self::new(&[QWEN2], false)
            }
            _ => return None,
        })
    }

    /// The `tokenizers` pre-tokenizer: the splits, then byte-level encoding.
    pub fn build(&self) -> Result<PreTokenizerWrapper, String> {
        let mut steps = Vec::with_capacity(self.splits.len() + 4);
        for regex in self.splits {
            let split = Split::new(SplitPattern::Regex(regex.to_string()), SplitDelimiterBehavior::Isolated, false)
                .map_err(|e| format!("pre-tokenizer regex does not compile: {e}"))?;
            steps.push(PreTokenizerWrapper::Split(split));
        }
        steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, self.gpt2_regex_last)));
        Ok(PreTokenizerWrapper::Sequence(Sequence::new(steps)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_pre_tokenizer_builds_and_unknown_names_are_none() {
        let names = [
            "default",
            "gpt-2",
            "olmo",
            "smollm",
            "starcoder",
            "mellum2",
            "llama-bpe",
            "llama3",
            "jina-v5-nano",
            "dbrx",
            "qwen2",
            "stablelm2",
            "solar-open",
        ];
        for name in names {
            PreTokenizer::named(name).unwrap().build().unwrap();
        }
        let llama3 = PreTokenizer::named("llama-bpe").unwrap();
        assert!(llama3.ignore_merges && llama3.add_bos_default);
        assert_eq!(PreTokenizer::named("dbrx").unwrap().splits, llama3.splits);
        assert!(!PreTokenizer::named("dbrx").unwrap().add_bos_default);
        for unknown in ["", "Default", "gpt2", "deepseek-coder", "tekken", "chatglm-bpe", "roberta-bpe"] {
            assert!(PreTokenizer::named(unknown).is_none(), "{unknown}");
        }
    }
}
