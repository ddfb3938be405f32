//! Chat: turning a conversation into the prompt text a model was trained on, with the model's own
//! Jinja chat template, rendered as Hugging Face transformers' `apply_chat_template` renders it.
//!
//! A template comes from `chat_template` in `tokenizer_config.json` (a string, or the list of named
//! templates whose `default` is used), from `chat_template.jinja` beside it, or from a caller that
//! holds the source (GGUF metadata `tokenizer.chat_template`) through [`ChatTemplate::new`].
//! Templates are model files, so hostile: see [`template`] for the limits a render runs under.

mod end_of_turn;
mod functions;
mod generation_tag;
mod gguf_source;
mod source;
pub mod template;

pub use end_of_turn::end_of_turn_ids;
pub use source::{load_optional, CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE};
pub use template::{
    ChatTemplate, MAX_MESSAGES, MAX_MESSAGES_BYTES, MAX_OUTPUT_BYTES, MAX_RENDER_MEMORY, MAX_RENDER_MILLIS,
    MAX_TEMPLATE_BYTES,
};

/// One turn of a conversation, as templates read it (`message['role']`, `message.content`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, … (the template decides what it accepts).
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// A rendered conversation: the prompt text and the ids that end the assistant's turn.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatPrompt {
    /// The template's output; it already holds any BOS the template writes, so it is tokenized
    /// without adding special tokens (as transformers' `apply_chat_template(tokenize=True)` does).
    pub text: String,
    /// Token ids that end the assistant's turn (see [`end_of_turn_ids`]); generation stops there.
    pub stop_token_ids: Vec<u32>,
}
