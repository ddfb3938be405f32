//! Picks the next token from a row of logits: the processors of [`super::processors`] in HF order,
//! then argmax (temperature 0) or a seeded draw.

use super::options::GenerateOptions;
use super::processors as p;
use super::rng::Rng;
use crate::error::{internal, Result};

/// Below this, dividing logits by the temperature can overflow f32 and the distribution is one-hot
/// to f32 precision anyway: such temperatures sample greedily.
pub const MIN_SAMPLING_TEMPERATURE: f32 = 1e-5;

#[derive(Debug, Clone)]
pub struct Sampler {
    temperature: f32,
    top_k: usize,
    top_p: f32,
    min_p: f32,
    repeat_penalty: f32,
    repeat_last_n: usize,
    /// Ids at or above it are masked (the tokenizer's size; the model's vocabulary may be padded).
    id_limit: usize,
    /// Draws come from `Rng::at_position(seed, position)`: see there.
    seed: u64,
    ids_scratch: Vec<u32>,
    values_scratch: Vec<f32>,
    pairs_scratch: Vec<(f32, u32)>,
}

impl Sampler {
    pub fn new(options: &GenerateOptions, seed: u64, id_limit: usize) -> Self {
        Self {
            temperature: if options.temperature < MIN_SAMPLING_TEMPERATURE { 0.0 } else { options.temperature },
            top_k: options.top_k,
            top_p: options.top_p,
            min_p: options.min_p,
            repeat_penalty: options.repeat_penalty,
            repeat_last_n: options.repeat_last_n,
            id_limit,
            seed,
            ids_scratch: Vec::new(),
            values_scratch: Vec::new(),
            pairs_scratch: Vec::new(),
        }
    }

    /// Applies the processors to `logits` in place. `history` is every token so far (prompt
    /// included); the repetition penalty looks at its last `repeat_last_n` (0 = all).
    pub fn process(&mut self, logits: &mut [f32], history: &[u32]) {
        p::mask_from(logits, self.id_limit);
        let recent = match self.repeat_last_n {
            0 => history,
            n => &history[history.len().saturating_sub(n)..],
        };
        p::repetition_penalty(logits, recent, self.repeat_penalty, &mut self.ids_scratch);
        if self.temperature == 0.0 {
            return; // greedy: HF applies only the processors above, no warpers
        }
        p::temperature(logits, self.temperature);
        p::top_k(logits, self.top_k, &mut self.values_scratch);
        p::top_p(logits, self.top_p, &mut self.pairs_scratch);
        p::min_p(logits, self.min_p);
    }

    /// Processes `logits` (modified in place) and picks a token.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> Result<u32> {
        self.process(logits, history);
        let picked = if self.temperature == 0.0 {
            p::argmax(logits)
        } else {
            // The token sampled here takes position `history.len()` of the context.
            let u = Rng::at_position(self.seed, history.len() as u64).next_f64();
            p::sample_softmax(logits, u)
        };
        picked.ok_or_else(|| internal("the model produced no finite logits (all NaN or -inf)"))
    }
}
