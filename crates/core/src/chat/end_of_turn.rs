//! Which token ends the assistant's turn. Chat models are trained to close their turn with the
//! token their template closes turns with (`<|im_end|>`, `<|eot_id|>`, `<|end_of_text|>`), which is
//! not always the EOS id of `config.json`. We render a probe conversation whose assistant turn holds
//! a marker, and take the first token the template writes after it when that is a special token.

use super::{ChatMessage, ChatTemplate};
use crate::tokenizer::Tokenizer;

/// Text no template or tokenizer treats specially (private-use characters around a word).
const MARKER: &str = "\u{E000}phoenix-turn-probe\u{E000}";

/// The special token id that follows an assistant message in this template, if any (empty when the
/// template writes plain text there, or refuses both probe conversations).
pub fn end_of_turn_ids(template: &ChatTemplate, tokenizer: &Tokenizer) -> Vec<u32> {
    let probes = [
        vec![ChatMessage::new("user", "Hi"), ChatMessage::new("assistant", MARKER)],
        vec![ChatMessage::new("system", "S"), ChatMessage::new("user", "Hi"), ChatMessage::new("assistant", MARKER)],
    ];
    for probe in probes {
        let Ok(text) = template.render(&probe, false) else { continue };
        let Some(at) = text.rfind(MARKER) else { continue };
        let after = text[at + MARKER.len()..].trim_start_matches([' ', '\t']);
        let Ok(ids) = tokenizer.encode(after, false) else { continue };
        return ids.first().filter(|&&id| tokenizer.is_special(id)).map(|&id| vec![id]).unwrap_or_default();
    }
    Vec::new()
}
