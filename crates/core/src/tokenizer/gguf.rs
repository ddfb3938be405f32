//! A [`Tokenizer`] built from the vocabulary a GGUF file carries in its header (`tokenizer.ggml.*`),
//! tokenizing as llama.cpp does for that file.
//!
//! - `tokenizer.ggml.model = "gpt2"`: byte-level BPE from `tokens` + `merges`, with the pre-tokenizer
//!   `tokenizer.ggml.pre` names ([`pre`]; an unknown name is refused, never defaulted).
//! - `tokenizer.ggml.model = "llama"`: SentencePiece BPE from `tokens` + `scores` ([`spm`]), `<0xNN>`
//!   byte fallback, spaces as `▁` and (unless `add_space_prefix` is false) a `▁` before each piece of
//!   text, as llama.cpp adds one at the start and after every special token.
//!
//! Token types (gguf-py `TokenType`): CONTROL and UNKNOWN tokens become special added tokens and
//! USER_DEFINED ones plain added tokens, so text like `<|im_start|>` is one id (llama.cpp's
//! `parse_special`). BOS/EOS are added by the post-processor when `add_bos_token`/`add_eos_token`
//! (or llama.cpp's default for the model and pre-tokenizer) say so.

mod metadata;
mod pre;
mod special;
mod spm;

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::AddedToken;

use self::metadata::{Metadata, MAX_MERGES, MAX_TOKENS};
use self::pre::PreTokenizer;
pub use self::special::GgufSpecialTokens;
use super::Tokenizer;
use crate::error::Result;

/// gguf-py `TokenType` values.
const CONTROL: i64 = 3;
const UNKNOWN: i64 = 2;
const USER_DEFINED: i64 = 4;

/// Most bytes of text all control and user-defined tokens together may hold (matched in every text
/// before tokenizing; real vocabularies hold a few KiB to a few hundred KiB).
const MAX_ADDED_TOKEN_BYTES: usize = 8 << 20;

/// SentencePiece's word-boundary mark, which stands for a space in a `llama`-model vocabulary.
const SPM_SPACE: &str = "\u{2581}";

/// The tokenizer a GGUF header describes. `source` names the file in error messages. Missing keys,
/// wrong GGUF types, counts that disagree, ids past the vocabulary, merges naming unknown tokens, an
/// unknown model or pre-tokenizer: `E_TOKENIZER` naming the key.
pub fn tokenizer_from_gguf(metadata: &HashMap<String, Value>, source: &str) -> Result<Tokenizer> {
    let md = Metadata::new(metadata, source);
    let kind = Kind::read(&md)?;
    let vocab = Vocabulary::read(&md)?;
    let special = special::read(&md, &vocab.tokens, kind.is_sentencepiece(), kind.add_bos_default())?;
    let mut inner = match &kind {
        Kind::ByteLevelBpe(pre) => byte_level_bpe(&md, &vocab, pre)?,
        Kind::SentencePiece => sentencepiece_bpe(&md, &vocab, special.unk)?,
    };
    add_typed_tokens(&md, &mut inner, &vocab)?;
    inner.with_post_processor(Some(special::post_processor(&md, &vocab.tokens, &special)?));
    Tokenizer::from_built(inner, source.to_string())
}

/// The BOS/EOS/UNK ids, add-BOS/EOS flags and end-of-generation ids of a GGUF vocabulary (for stop
/// tokens and prompts), with the same checks as [`tokenizer_from_gguf`].
pub fn gguf_special_tokens(metadata: &HashMap<String, Value>, source: &str) -> Result<GgufSpecialTokens> {
    let md = Metadata::new(metadata, source);
    let kind = Kind::read(&md)?;
    let vocab = Vocabulary::read(&md)?;
    special::read(&md, &vocab.tokens, kind.is_sentencepiece(), kind.add_bos_default())
}

/// `tokenizer.ggml.model`: the two kinds of vocabulary implemented.
enum Kind {
    /// `gpt2`, with the pre-tokenizer `tokenizer.ggml.pre` names.
    ByteLevelBpe(PreTokenizer),
    /// `llama`.
    SentencePiece,
}

impl Kind {
    fn read(md: &Metadata) -> Result<Self> {
        match md.required_string(metadata::MODEL)? {
            "gpt2" => Ok(Kind::ByteLevelBpe(pre_tokenizer(md)?)),
            "llama" => Ok(Kind::SentencePiece),
            _ => Err(md.error(
                metadata::MODEL,
                "this tokenizer model is not supported (supported: `gpt2` byte-level BPE, `llama` SentencePiece)",
            )),
        }
    }

    fn is_sentencepiece(&self) -> bool {
        matches!(self, Kind::SentencePiece)
    }

    /// llama.cpp adds BOS by default for SentencePiece and for some pre-tokenizers (Llama 3's).
    fn add_bos_default(&self) -> bool {
        match self {
            Kind::ByteLevelBpe(pre) => pre.add_bos_default,
            Kind::SentencePiece => true,
        }
    }
}

/// The token list and per-token types, checked against each other.
struct Vocabulary<'a> {
    tokens: Vec<&'a str>,
    types: Option<Vec<i64>>,
}

impl<'a> Vocabulary<'a> {
    fn read(md: &Metadata<'a>) -> Result<Self> {
        let tokens = md
            .strings(metadata::TOKENS, MAX_TOKENS)?
            .ok_or_else(|| md.error(metadata::TOKENS, "missing (the file carries no tokenizer)"))?;
        if tokens.is_empty() {
            return Err(md.error(metadata::TOKENS, "the vocabulary is empty"));
        }
        if let Some(i) = tokens.iter().position(|t| t.is_empty()) {
            return Err(md.error(metadata::TOKENS, format!("token {i} is empty")));
        }
        let mut seen = HashMap::with_capacity(tokens.len());
        for (id, &token) in tokens.iter().enumerate() {
            if let Some(first) = seen.insert(token, id) {
                return Err(md.error(metadata::TOKENS, format!("tokens {first} and {id} are the same string")));
            }
        }
        let types = md.integers(metadata::TOKEN_TYPE, tokens.len())?;
        Ok(Self { tokens, types })
    }

    fn len(&self) -> usize {
        self.tokens.len()
    }

    fn type_of(&self, id: usize) -> Option<i64> {
        self.types.as_ref().map(|t| t[id])
    }

    fn vocab(&self) -> Vocab {
        self.tokens.iter().enumerate().map(|(id, &t)| (t.to_string(), id as u32)).collect()
    }
}

fn pre_tokenizer(md: &Metadata) -> Result<PreTokenizer> {
    // llama.cpp reads a missing `pre` as `default` (with a warning that quality degrades); so do we,
    // but a name it carries must be one we implement.
    let name = md.string(metadata::PRE)?.unwrap_or("default");
    PreTokenizer::named(name).ok_or_else(|| {
        md.error(
            metadata::PRE,
            format!(
                "unknown pre-tokenizer `{}` (supported: default, gpt-2, smollm, starcoder, llama-bpe, llama3, qwen2, dbrx and their llama.cpp aliases)",
                shown_name(name)
            ),
        )
    })
}

/// `gpt2`: byte-level BPE over `tokens` and `merges`.
fn byte_level_bpe(md: &Metadata, vocab: &Vocabulary, pre: &PreTokenizer) -> Result<tokenizers::Tokenizer> {
    let merges = md
        .strings(metadata::MERGES, MAX_MERGES)?
        .ok_or_else(|| md.error(metadata::MERGES, "missing (a `gpt2` vocabulary needs its BPE merges)"))?;
    let ids: HashMap<&str, usize> = vocab.tokens.iter().enumerate().map(|(id, &t)| (t, id)).collect();
    let mut pairs = Vec::with_capacity(merges.len());
    for (i, merge) in merges.iter().enumerate() {
        // llama.cpp splits at the first space after the first byte (a space is never inside a
        // byte-level token, but may start one's text in other vocabularies).
        let at = merge.as_bytes().iter().skip(1).position(|&b| b == b' ').map(|p| p + 1);
        let (left, right) = match at {
            Some(at) => (&merge[..at], &merge[at + 1..]),
            None => return Err(md.error(metadata::MERGES, format!("merge {i} is not two tokens separated by a space"))),
        };
        let merged = format!("{left}{right}");
        for part in [left, right, merged.as_str()] {
            if !ids.contains_key(part) {
                return Err(md.error(
                    metadata::MERGES,
                    format!("merge {i} names a token that is not in `{}`", metadata::TOKENS),
                ));
            }
        }
        pairs.push((left.to_string(), right.to_string()));
    }
    let model = BPE::builder()
        .vocab_and_merges(vocab.vocab(), pairs)
        .ignore_merges(pre.ignore_merges)
        .build()
        .map_err(|e| md.error(metadata::MERGES, format!("cannot build the BPE model: {e}")))?;
    let mut inner = tokenizers::Tokenizer::new(model);
    let name = md.string(metadata::PRE)?.unwrap_or("default");
    let pre_tokenizer = pre.build().map_err(|e| md.error(metadata::PRE, format!("`{}`: {e}", shown_name(name))))?;
    inner.with_pre_tokenizer(Some(pre_tokenizer));
    inner.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::default())));
    Ok(inner)
}

/// `llama`: SentencePiece BPE from `tokens` + `scores`, with `<0xNN>` byte fallback.
fn sentencepiece_bpe(md: &Metadata, vocab: &Vocabulary, unk: Option<u32>) -> Result<tokenizers::Tokenizer> {
    let scores = md
        .numbers(metadata::SCORES, vocab.len())?
        .ok_or_else(|| md.error(metadata::SCORES, "missing (a `llama` vocabulary ranks its merges by score)"))?;
    let merges = spm::merges_from_scores(&vocab.tokens, &scores).map_err(|e| md.error(metadata::TOKENS, e))?;
    let merges = merges.into_iter().map(|(l, r)| (l.to_string(), r.to_string())).collect();
    let mut builder = BPE::builder().vocab_and_merges(vocab.vocab(), merges).byte_fallback(true).fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(vocab.tokens[unk as usize].to_string());
    }
    let model = builder.build().map_err(|e| md.error(metadata::TOKENS, format!("cannot build the BPE model: {e}")))?;
    let add_space_prefix = md.bool(metadata::ADD_SPACE_PREFIX)?.unwrap_or(true);
    let refuse = |e: tokenizers::Error| md.error(metadata::TOKENS, e);
    let mut normalizers = Vec::new();
    if add_space_prefix {
        normalizers.push(NormalizerWrapper::Prepend(Prepend::new(SPM_SPACE.to_string())));
    }
    normalizers.push(NormalizerWrapper::Replace(Replace::new(" ", SPM_SPACE).map_err(refuse)?));
    let mut decoders = vec![
        DecoderWrapper::Replace(Replace::new(SPM_SPACE, " ").map_err(refuse)?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if add_space_prefix {
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    let mut inner = tokenizers::Tokenizer::new(model);
    inner.with_normalizer(Some(NormalizerWrapper::Sequence(NormalizerSequence::new(normalizers)))).map_err(refuse)?;
    inner.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(decoders))));
    Ok(inner)
}

/// CONTROL/UNKNOWN tokens as special added tokens, USER_DEFINED ones as plain added tokens: both are
/// matched in raw text before anything else (llama.cpp `tokenizer_st_partition`). Like llama.cpp, a
/// token with an end-of-generation text (`<|im_end|>`) is a control token whatever its type says.
fn add_typed_tokens(md: &Metadata, inner: &mut tokenizers::Tokenizer, vocab: &Vocabulary) -> Result<()> {
    let mut specials = Vec::new();
    let mut user = Vec::new();
    for (id, &token) in vocab.tokens.iter().enumerate() {
        let forced_control = special::is_end_of_generation_text(token).then_some(CONTROL);
        match forced_control.or(vocab.type_of(id)) {
            Some(CONTROL | UNKNOWN) => specials.push(AddedToken::from(token.to_string(), true).normalized(false)),
            Some(USER_DEFINED) => user.push(AddedToken::from(token.to_string(), false).normalized(false)),
            _ => {}
        }
    }
    // Every added token goes into one text matcher built at load: bound what it is built from.
    let bytes: usize = specials.iter().chain(&user).map(|t| t.content.len()).sum();
    if bytes > MAX_ADDED_TOKEN_BYTES {
        return Err(md.error(
            metadata::TOKEN_TYPE,
            format!(
                "{} control/user-defined tokens of {bytes} bytes in all, more than the {MAX_ADDED_TOKEN_BYTES} bytes allowed",
                specials.len() + user.len()
            ),
        ));
    }
    let refuse = |e: tokenizers::Error| md.error(metadata::TOKEN_TYPE, format!("cannot add the special tokens: {e}"));
    inner.add_special_tokens(specials).map_err(refuse)?;
    inner.add_tokens(user).map_err(refuse)?;
    Ok(())
}

/// A pre-tokenizer name for a message: short names as they are, anything long or odd elided.
fn shown_name(name: &str) -> String {
    if name.len() <= 40 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        name.to_string()
    } else {
        format!("<{} bytes>", name.len())
    }
}
