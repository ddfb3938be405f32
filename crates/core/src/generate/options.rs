//! Sampling and stopping options: [`RawGenerateOptions`] is what a binding receives from JS (plain
//! numbers, every field optional, camelCase as in `ts/binding/types.ts`); [`GenerateOptions`] is the
//! validated, typed form. Errors are `E_INVALID_OPTION` naming the option (by its JS name) and the
//! allowed range.

use crate::error::{invalid_option, Result};
use crate::session::js_numbers::shown;

/// Upper bound on `maxTokens`: far beyond any sensible request, low enough to catch garbage
/// (negative numbers wrapped to u32, `Infinity`, …).
pub const MAX_TOKENS_LIMIT: usize = 1 << 20;
/// Upper bound on the number / length of stop strings (they are searched at every step).
pub const MAX_STOP_STRINGS: usize = 64;
pub const MAX_STOP_STRING_BYTES: usize = 1024;
/// Largest integer a JS number holds exactly (for `seed`).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// Options as JS passes them (`RawGenerateOptions` in `ts/binding/types.ts`).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RawGenerateOptions {
    pub max_tokens: Option<f64>,
    pub temperature: Option<f64>,
    pub top_k: Option<f64>,
    pub top_p: Option<f64>,
    pub min_p: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub repeat_last_n: Option<f64>,
    pub seed: Option<f64>,
    pub stop_token_ids: Option<Vec<f64>>,
    pub stop_strings: Option<Vec<String>>,
    pub add_special_tokens: Option<bool>,
    pub fit_to_context: Option<bool>,
    pub int8_prompt: Option<bool>,
}

/// Validated options. `Default` is: 256 tokens, greedy (temperature 0, as the models'
/// `generation_config.json` and transformers.js default to), every filter off, repetition window 64.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Tokens to generate at most (1 ..= [`MAX_TOKENS_LIMIT`]).
    pub max_tokens: usize,
    /// Whether `max_tokens` is a strict request (`maxTokens` given without `fitToContext`). A model
    /// with a context limit refuses a strict count that does not fit (`E_INVALID_OPTION`); any other
    /// count is cut to the room left, and the generation ends with finish reason `length` there.
    pub max_tokens_strict: bool,
    /// 0 = greedy (argmax); otherwise logits are divided by it before sampling (below 1e-5: greedy).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (ties kept); 0 = off.
    pub top_k: usize,
    /// Nucleus: keep the smallest set of most likely tokens whose probability reaches `top_p`; 1 = off.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one; 0 = off.
    pub min_p: f32,
    /// HF repetition penalty over the recent tokens (prompt included); 1 = off.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at; 0 = all.
    pub repeat_last_n: usize,
    /// Sampling seed; `None` = a fresh one. Same seed, model and options → same tokens.
    pub seed: Option<u64>,
    /// Extra ids that end the generation (the model's EOS ids always do).
    pub stop_token_ids: Vec<u32>,
    /// Texts that end the generation; the emitted text stops just before the first one.
    pub stop_strings: Vec<String>,
    /// Prepend the tokenizer's special tokens to a text prompt. `None` = yes for a fresh prompt,
    /// no when continuing a saved state (a BOS in mid-context would read as end-of-text).
    pub add_special_tokens: Option<bool>,
    /// Quantized weights: the prompt's products round their activations to 8 bits and multiply int8
    /// blocks, as llama.cpp does (faster; logits move by ~0.1–1). Off: f32 activations, the float
    /// product of the dequantized weights. The token that picks the first answer keeps f32 either way.
    pub int8_prompt: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            max_tokens_strict: false,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: None,
            stop_token_ids: Vec::new(),
            stop_strings: Vec::new(),
            add_special_tokens: None,
            int8_prompt: false,
        }
    }
}

/// The range of `repeatPenalty`: past it a penalised logit (|logit| up to ~1e3) can leave f32.
pub const MIN_REPEAT_PENALTY: f32 = 1e-6;
pub const MAX_REPEAT_PENALTY: f32 = 1e6;

impl GenerateOptions {
    /// Checks every range. `vocab_size` bounds `stop_token_ids`.
    pub fn validate(&self, vocab_size: usize) -> Result<()> {
        if self.max_tokens == 0 || self.max_tokens > MAX_TOKENS_LIMIT {
            return Err(range("maxTokens", "an integer in 1..=1048576", self.max_tokens as f64));
        }
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(range("temperature", "a finite number >= 0 (0 = greedy)", self.temperature.into()));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(range("topP", "a number in (0, 1] (1 = off)", self.top_p.into()));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(range("minP", "a number in [0, 1] (0 = off)", self.min_p.into()));
        }
        // Bounded so a penalised logit stays finite: 1e-40 passed "> 0" and divided logits into
        // infinities (EOS at once, or one token repeated).
        if !(MIN_REPEAT_PENALTY..=MAX_REPEAT_PENALTY).contains(&self.repeat_penalty) {
            return Err(range("repeatPenalty", "a number in [1e-6, 1e6] (1 = off)", self.repeat_penalty.into()));
        }
        if let Some(&bad) = self.stop_token_ids.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(invalid_option(format!(
                "option `stopTokenIds` must hold token ids in 0..{vocab_size}, got {bad}"
            )));
        }
        if self.stop_strings.len() > MAX_STOP_STRINGS {
            return Err(invalid_option(format!(
                "option `stop` may hold at most {MAX_STOP_STRINGS} strings, got {}",
                self.stop_strings.len()
            )));
        }
        for s in &self.stop_strings {
            if s.is_empty() {
                return Err(invalid_option("option `stop` must not contain an empty string"));
            }
            if s.len() > MAX_STOP_STRING_BYTES {
                return Err(invalid_option(format!(
                    "option `stop` entries must be at most {MAX_STOP_STRING_BYTES} bytes, got one of {}",
                    s.len()
                )));
            }
        }
        Ok(())
    }

    /// Whether sampling is argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

impl RawGenerateOptions {
    /// Checks every option that does not depend on a model (types and ranges; only `stopTokenIds`'
    /// upper bound needs the vocabulary), so a caller can refuse bad options before loading one.
    pub fn check_without_model(&self) -> Result<()> {
        self.resolve(usize::MAX).map(|_| ())
    }

    /// Converts JS numbers to typed options (integers must be integral and non-negative), applies
    /// the defaults of [`GenerateOptions::default`] and validates against `vocab_size`.
    pub fn resolve(&self, vocab_size: usize) -> Result<GenerateOptions> {
        let d = GenerateOptions::default();
        let opts = GenerateOptions {
            max_tokens: match self.max_tokens {
                Some(v) => count("maxTokens", v, "an integer in 1..=1048576")?,
                None => d.max_tokens,
            },
            max_tokens_strict: self.max_tokens.is_some() && self.fit_to_context != Some(true),
            temperature: float(self.temperature, d.temperature),
            top_k: match self.top_k {
                // Any non-negative integer; values above the vocabulary simply keep everything.
                Some(v) => count("topK", v, "an integer >= 0 (0 = off)")?,
                None => d.top_k,
            },
            top_p: float(self.top_p, d.top_p),
            min_p: float(self.min_p, d.min_p),
            repeat_penalty: float(self.repeat_penalty, d.repeat_penalty),
            repeat_last_n: match self.repeat_last_n {
                Some(v) => count("repeatLastN", v, "an integer >= 0 (0 = all)")?,
                None => d.repeat_last_n,
            },
            seed: match self.seed {
                Some(v) if v.fract() == 0.0 && (0.0..=MAX_SAFE_INTEGER).contains(&v) => Some(v as u64),
                Some(v) => return Err(range("seed", "an integer in 0..=9007199254740991", v)),
                None => None,
            },
            stop_token_ids: match &self.stop_token_ids {
                Some(ids) => ids
                    .iter()
                    .map(|&v| {
                        if v.fract() == 0.0 && (0.0..(vocab_size as f64)).contains(&v) {
                            Ok(v as u32)
                        } else {
                            Err(range("stopTokenIds", &format!("token ids in 0..{vocab_size}"), v))
                        }
                    })
                    .collect::<Result<_>>()?,
                None => Vec::new(),
            },
            stop_strings: self.stop_strings.clone().unwrap_or_default(),
            add_special_tokens: self.add_special_tokens,
            int8_prompt: self.int8_prompt.unwrap_or(d.int8_prompt),
        };
        opts.validate(vocab_size)?;
        Ok(opts)
    }
}

/// The error quotes `got` as JS prints it (`Infinity`, `1e+300`).
fn range(option: &str, allowed: &str, got: f64) -> crate::PhoenixError {
    invalid_option(format!("option `{option}` must be {allowed}, got {}", shown(got)))
}

/// A non-negative integral JS number as usize; beyond 2^53 (where JS integers stop being exact) it
/// is refused here, quoting the number given, rather than saturated and quoted converted.
fn count(option: &str, v: f64, allowed: &str) -> Result<usize> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= MAX_SAFE_INTEGER {
        Ok(v as usize)
    } else {
        Err(range(option, allowed, v))
    }
}

/// f64 → f32 keeping NaN / ±inf so that `validate` rejects them. A finite number beyond f32's range
/// becomes f32's largest, not infinity (a temperature of 1e300 is a valid, very flat temperature), and
/// a non-zero one below it f32's smallest of the same sign, not zero (`topP` 1e-300 is inside (0, 1]).
fn float(v: Option<f64>, default: f32) -> f32 {
    v.map(|x| {
        if !x.is_finite() {
            return x as f32;
        }
        let narrowed = x.clamp(f32::MIN.into(), f32::MAX.into()) as f32;
        if narrowed == 0.0 && x != 0.0 {
            f32::from_bits(1).copysign(x as f32) // the smallest subnormal
        } else {
            narrowed
        }
    })
    .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_without_a_model_except_for_the_vocabulary_bound() {
        let bad = RawGenerateOptions { temperature: Some(-1.0), ..Default::default() };
        let e = bad.check_without_model().unwrap_err();
        assert!(e.message.contains("temperature"), "{}", e.message);
        let seed = RawGenerateOptions { seed: Some(-3.0), ..Default::default() };
        assert!(seed.check_without_model().is_err());
        // Stop ids need the vocabulary: any id passes here, the model's check bounds it later.
        let stops = RawGenerateOptions { stop_token_ids: Some(vec![1e9]), ..Default::default() };
        stops.check_without_model().unwrap();
        assert!(stops.resolve(100).is_err());
    }
}
