//! Text generation building blocks, split as transformers.js splits them: options, logits processors,
//! a seeded sampler, stopping criteria and a streaming detokeniser. [`crate::session::Generation`]
//! drives them step by step; nothing here touches a model or a thread.

pub mod clock;
pub mod detokenize;
pub mod options;
pub mod processors;
pub mod rng;
pub mod sampler;
pub mod stop;

pub use detokenize::StreamDetokenizer;
pub use options::{GenerateOptions, RawGenerateOptions};
pub use rng::Rng;
pub use sampler::Sampler;
pub use stop::StopStrings;

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// An EOS / stop token id was sampled or a stop string appeared.
    Stop,
    /// `max_tokens` tokens were generated.
    Length,
    /// The caller cancelled it.
    Abort,
}

impl FinishReason {
    /// The wire form shared with TypeScript (`'stop' | 'length' | 'abort'`).
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
        }
    }
}

/// One step of a generation: the token it sampled and the text that token completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// `None` only on a final step that sampled nothing (an abort).
    pub token_id: Option<u32>,
    /// Whole UTF-8 characters newly completed (possibly empty: a split character, held-back text that
    /// may start a stop string, or a special token).
    pub text: String,
    /// Set on the last step only.
    pub finish_reason: Option<FinishReason>,
}
