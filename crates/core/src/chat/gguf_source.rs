//! The chat template a GGUF header carries (`tokenizer.chat_template`, what llama.cpp's converter
//! copies from `tokenizer_config.json`), with `bos_token` / `eos_token` as the texts of the header's
//! BOS / EOS ids — what transformers would pass to the same template.

use candle_core::quantized::gguf_file::Value;

use super::template::ChatTemplate;
use crate::error::{bad_config, Result};
use crate::loader::GgufFile;

const TEMPLATE_KEY: &str = "tokenizer.chat_template";

/// `Ok(None)` when the header has no template; a template that is not a string, not UTF-8 or does
/// not compile → `E_BAD_CONFIG` naming the file and key.
pub fn load(gguf: &GgufFile) -> Result<Option<ChatTemplate>> {
    let origin = format!("{} ({TEMPLATE_KEY})", gguf.label);
    let source = match gguf.metadata.get(TEMPLATE_KEY) {
        None => return Ok(None),
        // The reader replaced bytes that are not UTF-8: that is not the template the file's author wrote.
        Some(Value::String(_)) if gguf.facts.non_utf8_keys.contains(TEMPLATE_KEY) => {
            return Err(bad_config(format!("{origin}: is not valid UTF-8 (corrupt)")))
        }
        Some(Value::String(s)) => s,
        Some(_) => return Err(bad_config(format!("{origin}: must be a string"))),
    };
    let special = crate::tokenizer::gguf_special_tokens(&gguf.metadata, &gguf.label).ok();
    let text = |id: Option<u32>| id.and_then(|id| token_text(gguf, id));
    let bos = text(special.as_ref().and_then(|s| s.bos));
    let eos = text(special.as_ref().and_then(|s| s.eos));
    ChatTemplate::new(source, bos, eos, &origin).map(Some)
}

fn token_text(gguf: &GgufFile, id: u32) -> Option<&str> {
    match gguf.metadata.get("tokenizer.ggml.tokens")? {
        Value::Array(tokens) => match tokens.get(id as usize)? {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        },
        _ => None,
    }
}
