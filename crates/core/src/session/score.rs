//! `score`: how likely the model finds a token sequence. Per-token log-probabilities, their sum and
//! the perplexity are computed here, once, for every binding; the full logits leave the core only
//! when the caller asks for them (they are `ids × vocabulary` floats).
//!
//! Numerics: the model's logits are f32; each row's log-softmax is computed in f64 (max-shifted,
//! `exp` and the sum in f64), and the log-likelihood is an f64 sum.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rayon::prelude::*;

use super::{finite, LoadedModel, MAX_LOGITS_VALUES};
use crate::error::{aborted, invalid_option, ErrorCode, Result};
use crate::model::LogitsWanted;
use crate::models::interrupt::{stop_on, with_stop};

/// Options of [`LoadedModel::score`] (a binding's `{ includeLogits? }`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ScoreOptions {
    /// Also return every position's logits (bounded by [`MAX_LOGITS_VALUES`]).
    pub include_logits: bool,
}

/// What [`LoadedModel::score`] returns for `n` ids.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Score {
    /// `n`: the ids scored.
    pub token_count: usize,
    /// `ln p(ids[i] | ids[..i])` for `i` in `1..n` (`n - 1` values: the first id has no prediction).
    pub token_logprobs: Vec<f64>,
    /// The sum of `token_logprobs` (0 for a single id).
    pub log_likelihood: f64,
    /// `exp(-log_likelihood / (n - 1))`; `None` for a single id.
    pub perplexity: Option<f64>,
    /// The most likely next token after each position (`n` values; a tie goes to the lowest id).
    pub next_argmax: Vec<u32>,
    /// `n × vocab` logits, row-major, when [`ScoreOptions::include_logits`] asked for them. The
    /// bindings hand them over as a typed array, not through serde.
    #[serde(skip)]
    pub logits: Option<Vec<f32>>,
}

impl LoadedModel {
    /// Scores `ids` in a fresh context. Ids outside the vocabulary or none at all → `E_INVALID_OPTION`;
    /// with `include_logits`, more than [`MAX_LOGITS_VALUES`] logits → `E_INVALID_OPTION`; a
    /// non-finite logit → `E_BAD_WEIGHTS`. Without logits, memory stays bounded by one prefill piece.
    pub fn score(&self, ids: &[u32], options: ScoreOptions) -> Result<Score> {
        self.score_cancellable(ids, options, &Arc::new(AtomicBool::new(false)))
    }

    /// [`Self::score`] that ends with `E_ABORTED` once `cancel` is set: checked before each of the
    /// model's prefill pieces and between the layers of a piece (`models::interrupt`), so a cancel
    /// takes effect within one layer's time.
    pub fn score_cancellable(&self, ids: &[u32], options: ScoreOptions, cancel: &Arc<AtomicBool>) -> Result<Score> {
        if ids.is_empty() {
            return Err(invalid_option("score: `ids` is empty"));
        }
        self.check_ids("ids", ids)?;
        let vocab = self.model.info().vocab_size;
        if options.include_logits {
            check_logits_budget("score", ids.len(), vocab)?;
        }
        let mut logits = options.include_logits.then(|| Vec::with_capacity(ids.len() * vocab));
        let mut token_logprobs = Vec::with_capacity(ids.len() - 1);
        let mut next_argmax = Vec::with_capacity(ids.len());

        // The model's own prefill pieces give bit-identical logits to one call (see
        // `LanguageModel::prefill_chunk`); a model without pieces is cut so one piece's logits stay
        // within the one-call limit.
        let piece = self.model.prefill_chunk().min(MAX_LOGITS_VALUES / vocab.max(1)).max(1);
        let mut state = self.model.new_state()?;
        let stop = stop_on(cancel);
        // A cancel seen anywhere in a piece gives the whole piece up.
        let cancelled = |start: usize| aborted(format!("score: cancelled after {start} of {} ids", ids.len()));
        for (index, chunk) in ids.chunks(piece).enumerate() {
            let start = index * piece;
            if cancel.load(Ordering::Relaxed) {
                return Err(cancelled(start));
            }
            let rows =
                with_stop(Some(Arc::clone(&stop)), || self.model.forward(chunk, state.as_mut(), LogitsWanted::All))
                    .map_err(|e| if e.code == ErrorCode::Aborted { cancelled(start) } else { e })?;
            finite::check_rows(&rows, vocab, start, ids.len())?;
            // In blocks, with the cancel checked between them: a piece's log-softmax over a large
            // vocabulary takes ~0.3 s on WASM (512 rows of SmolLM2's 49152).
            let mut scored: Vec<(u32, Option<f64>)> = Vec::with_capacity(chunk.len());
            for (block, values) in rows.chunks(ROWS_PER_CANCEL_CHECK * vocab.max(1)).enumerate() {
                if cancel.load(Ordering::Relaxed) {
                    return Err(cancelled(start));
                }
                let first = start + block * ROWS_PER_CANCEL_CHECK;
                scored.par_extend(
                    values
                        .par_chunks(vocab)
                        .enumerate()
                        .map(|(row, values)| row_facts(values, ids.get(first + row + 1).copied())),
                );
            }
            for (argmax, logprob) in scored {
                next_argmax.push(argmax);
                token_logprobs.extend(logprob);
            }
            if let Some(all) = logits.as_mut() {
                all.extend_from_slice(&rows);
            }
        }

        // From +0.0: `Sum` for floats starts at -0.0, which a single id would report.
        let log_likelihood = token_logprobs.iter().fold(0.0, |sum, lp| sum + lp);
        let perplexity = (!token_logprobs.is_empty()).then(|| (-log_likelihood / token_logprobs.len() as f64).exp());
        Ok(Score { token_count: ids.len(), token_logprobs, log_likelihood, perplexity, next_argmax, logits })
    }
}

/// Rows of a piece's logits turned into log-probs between two looks at the cancel flag.
const ROWS_PER_CANCEL_CHECK: usize = 64;

/// Refuses a call whose `len × vocab` logits would exceed [`MAX_LOGITS_VALUES`]: the output could
/// not be allocated, and the allocation would abort the host (native) or trap (WASM).
pub(super) fn check_logits_budget(what: &str, len: usize, vocab: usize) -> Result<()> {
    if len.checked_mul(vocab).is_none_or(|n| n > MAX_LOGITS_VALUES) {
        return Err(invalid_option(format!(
            "{what}: {len} ids x {vocab} vocabulary columns exceeds the {MAX_LOGITS_VALUES}-value limit of one call; score in pieces"
        )));
    }
    Ok(())
}

/// One logits row: its argmax (first of equal maxima) and, when the next id is known,
/// `log_softmax(row)[next]` in f64.
fn row_facts(row: &[f32], next: Option<u32>) -> (u32, Option<f64>) {
    let mut argmax = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[argmax] {
            argmax = i;
        }
    }
    let logprob = next.map(|id| {
        let max = row[argmax] as f64;
        let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        row[id as usize] as f64 - max - sum.ln()
    });
    (argmax as u32, logprob)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_facts_is_a_stable_log_softmax() {
        // Large logits: a naive exp would overflow f32 and f64.
        let row = [1000.0f32, 1001.0, 999.0, 1001.0];
        let (argmax, logprob) = row_facts(&row, Some(0));
        assert_eq!(argmax, 1, "a tie goes to the lowest id");
        let lse = 1001.0 + ((-1.0f64).exp() + 1.0 + (-2.0f64).exp() + 1.0).ln();
        assert!((logprob.unwrap() - (1000.0 - lse)).abs() < 1e-12);
        assert_eq!(row_facts(&row, None).1, None);
    }

    #[test]
    fn the_logits_budget_refuses_overflowing_and_oversized_calls() {
        assert!(check_logits_budget("score", 2, 3).is_ok());
        assert!(check_logits_budget("score", MAX_LOGITS_VALUES, 1).is_ok());
        assert!(check_logits_budget("score", MAX_LOGITS_VALUES + 1, 1).is_err());
        assert!(check_logits_budget("score", usize::MAX, 2).unwrap_err().message.starts_with("score: "));
    }
}
