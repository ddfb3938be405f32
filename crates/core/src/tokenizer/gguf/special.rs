//! BOS/EOS/UNK ids, the add-BOS/EOS flags and the end-of-generation ids of a GGUF vocabulary, with
//! llama.cpp's defaults (`llama_vocab::impl::load`), and the post-processor that adds BOS/EOS.

use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::PostProcessorWrapper;

use super::metadata::{self, Metadata};
use crate::error::Result;

/// Token texts llama.cpp treats as ending a generation whatever the header says (and as control
/// tokens even when typed otherwise): its list, as of the vendored llama.cpp.
const END_OF_GENERATION_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>",
    "[e~[",
];

/// Keys whose ids also end a generation (llama.cpp's EOT, EOM and fill-in-the-middle pad/repo/sep).
const END_OF_GENERATION_KEYS: &[&str] = &[
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
    "tokenizer.ggml.fim_pad_token_id",
    "tokenizer.ggml.fim_rep_token_id",
    "tokenizer.ggml.fim_sep_token_id",
];

/// The special ids and flags of a GGUF vocabulary, after llama.cpp's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufSpecialTokens {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    /// Whether encoding with special tokens prepends `bos` / appends `eos`.
    pub add_bos: bool,
    pub add_eos: bool,
    /// Ids that end a generation, ascending: `eos`, the EOT/EOM/FIM ids the header names, and every
    /// token whose text llama.cpp treats as an end (`<|im_end|>`, `<|eot_id|>`, `<|endoftext|>`, …).
    pub end_of_generation: Vec<u32>,
}

/// Whether llama.cpp treats a token with this text as a control token ending a generation.
pub fn is_end_of_generation_text(token: &str) -> bool {
    END_OF_GENERATION_TEXTS.contains(&token)
}

pub fn read(md: &Metadata, tokens: &[&str], sentencepiece: bool, add_bos_default: bool) -> Result<GgufSpecialTokens> {
    let n = tokens.len();
    // llama.cpp's defaults for a SentencePiece vocabulary: BOS 1, EOS 2, UNK 0 (when it has them).
    let default = |id: u32| (sentencepiece && (id as usize) < n).then_some(id);
    let bos = md.token_id(metadata::BOS_ID, n)?.or(default(1));
    let eos = md.token_id(metadata::EOS_ID, n)?.or(default(2));
    let unk = md.token_id(metadata::UNK_ID, n)?.or(default(0));
    let add_bos = md.bool(metadata::ADD_BOS)?.unwrap_or(add_bos_default);
    let add_eos = md.bool(metadata::ADD_EOS)?.unwrap_or(false);
    if add_bos && bos.is_none() {
        return Err(md.error(metadata::BOS_ID, format!("missing, but BOS is to be added (`{}`)", metadata::ADD_BOS)));
    }
    if add_eos && eos.is_none() {
        return Err(md.error(metadata::EOS_ID, format!("missing, but EOS is to be added (`{}`)", metadata::ADD_EOS)));
    }
    let mut end_of_generation: Vec<u32> = eos.into_iter().collect();
    for key in END_OF_GENERATION_KEYS {
        end_of_generation.extend(md.token_id(key, n)?);
    }
    end_of_generation
        .extend(tokens.iter().enumerate().filter(|(_, t)| is_end_of_generation_text(t)).map(|(id, _)| id as u32));
    end_of_generation.sort_unstable();
    end_of_generation.dedup();
    Ok(GgufSpecialTokens { bos, eos, unk, add_bos, add_eos, end_of_generation })
}

/// Adds BOS / EOS around an encoded text as the flags say (the template names them by role, so any
/// token text works).
pub fn post_processor(md: &Metadata, tokens: &[&str], special: &GgufSpecialTokens) -> Result<PostProcessorWrapper> {
    let refuse = |e: String| md.error(metadata::TOKENS, e);
    let mut roles = Vec::new();
    let mut template_tokens = Vec::new();
    for (role, id, on) in [("BOS", special.bos, special.add_bos), ("EOS", special.eos, special.add_eos)] {
        if let (Some(id), true) = (id, on) {
            let text = tokens[id as usize].to_string();
            template_tokens
                .push(SpecialToken::new(role.to_string(), vec![id], vec![text]).map_err(|e| refuse(e.to_string()))?);
            roles.push(role);
        }
    }
    let around = |sequence: &str| {
        let mut pieces: Vec<&str> = Vec::new();
        if roles.contains(&"BOS") {
            pieces.push("BOS");
        }
        pieces.push(sequence);
        if roles.contains(&"EOS") {
            pieces.push("EOS");
        }
        pieces.join(" ")
    };
    let single = around("$A:0");
    let pair = format!("{single} {}", around("$B:1"));
    let mut builder = TemplateProcessing::builder();
    builder.try_single(single).map_err(refuse)?;
    builder.try_pair(pair).map_err(refuse)?;
    let processor = builder.special_tokens(template_tokens).build().map_err(|e| refuse(e.to_string()))?;
    Ok(PostProcessorWrapper::Template(processor))
}
