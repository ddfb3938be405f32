//! Streaming detokenisation: turns generated ids into text one id at a time, emitting only whole
//! UTF-8 characters.
//!
//! Byte-level BPE can split one character over several tokens (each alone decodes to U+FFFD), and
//! some decoders depend on context (SentencePiece's leading-space handling). So, as in text-generation-
//! inference, we decode a small window twice — `decode(window)` minus `decode(window without the new
//! ids)` — and only emit when the result is longer and does not end in an incomplete character.
//! The window starts with the last tokens of the prompt, so the first generated token sees its context.

use std::sync::Arc;

use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// How many prompt tokens seed the window (enough for any decoder's look-behind).
const CONTEXT_TOKENS: usize = 4;
const REPLACEMENT: char = '\u{FFFD}';

pub struct StreamDetokenizer {
    tokenizer: Arc<Tokenizer>,
    skip_special_tokens: bool,
    /// Window of ids: `[prefix_offset..read_offset)` is already-emitted context, after it pending ids.
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl StreamDetokenizer {
    /// `context` is the text so far as ids (the prompt); only its tail is kept.
    pub fn new(tokenizer: Arc<Tokenizer>, context: &[u32], skip_special_tokens: bool) -> Result<Self> {
        let mut ids = context[context.len().saturating_sub(CONTEXT_TOKENS)..].to_vec();
        // A context ending inside a character (a state saved mid-emoji) cannot serve as an emitted
        // prefix: drop the incomplete tail; the next ids complete that character anyway.
        while !ids.is_empty() && tokenizer.decode(&ids, skip_special_tokens)?.ends_with(REPLACEMENT) {
            ids.pop();
        }
        let read_offset = ids.len();
        Ok(Self { tokenizer, skip_special_tokens, ids, prefix_offset: 0, read_offset })
    }

    /// Adds one id; returns the text it completes (empty while a character is still incomplete).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let prefix = self.decode(self.prefix_offset, self.read_offset)?;
        let full = self.decode(self.prefix_offset, self.ids.len())?;
        if full.len() <= prefix.len() || full.ends_with(REPLACEMENT) {
            return Ok(String::new());
        }
        let new_text = suffix_after(&full, &prefix);
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        // Keep the window small: drop ids before the new prefix.
        self.ids.drain(..self.prefix_offset);
        self.read_offset -= self.prefix_offset;
        self.prefix_offset = 0;
        Ok(new_text)
    }

    /// Text still pending at the end (an incomplete character decodes lossily, as `decode` would).
    pub fn finish(&mut self) -> Result<String> {
        if self.read_offset == self.ids.len() {
            return Ok(String::new());
        }
        let prefix = self.decode(self.prefix_offset, self.read_offset)?;
        let full = self.decode(self.prefix_offset, self.ids.len())?;
        self.ids.clear();
        self.prefix_offset = 0;
        self.read_offset = 0;
        Ok(if full.len() > prefix.len() { suffix_after(&full, &prefix) } else { String::new() })
    }

    fn decode(&self, from: usize, to: usize) -> Result<String> {
        self.tokenizer.decode(&self.ids[from..to], self.skip_special_tokens)
    }
}

/// `full` minus its leading `prefix`. Decoders normally extend the prefix unchanged; if one does not,
/// fall back to the longest common prefix on a character boundary (never panics, never repeats text).
fn suffix_after(full: &str, prefix: &str) -> String {
    if let Some(rest) = full.strip_prefix(prefix) {
        return rest.to_string();
    }
    let common = full
        .char_indices()
        .zip(prefix.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or_else(|| prefix.len().min(full.len()));
    let mut at = common;
    while !full.is_char_boundary(at) {
        at -= 1;
    }
    full[at..].to_string()
}
