//! What every family's `forward` does around its own layers: refuse empty or out-of-vocabulary ids,
//! take the state as the family's own type and shape, keep within a context limit, and feed long
//! inputs through the stack in pieces, computing the head only for the rows asked for.

use std::fmt::Debug;

use crate::error::{invalid_option, state_mismatch, Result};
use crate::model::{LogitsWanted, ModelState};
use crate::ops::{activation_scope, with_activation_scope};

/// At least one id, every one inside the vocabulary.
pub(crate) fn check_ids(ids: &[u32], vocab_size: usize) -> Result<()> {
    if ids.is_empty() {
        return Err(invalid_option("forward: `ids` must hold at least one token"));
    }
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab_size) {
        return Err(invalid_option(format!("forward: token id {bad} is outside the vocabulary (size {vocab_size})")));
    }
    Ok(())
}

/// `state` as family type `S` with shape `want` (`shape` reads it); `E_STATE_MISMATCH` otherwise.
pub(crate) fn own_state<'a, S: 'static, T: PartialEq + Debug>(
    state: &'a mut dyn ModelState,
    family: &str,
    shape: impl Fn(&S) -> T,
    want: T,
) -> Result<&'a mut S> {
    let st = state
        .as_any_mut()
        .downcast_mut::<S>()
        .ok_or_else(|| state_mismatch(format!("forward: the state was not created by a {family} model")))?;
    let got = shape(st);
    if got != want {
        return Err(state_mismatch(format!("forward: state shape {got:?} does not match this model ({want:?})")));
    }
    Ok(st)
}

/// `E_INVALID_OPTION` when `new` tokens after `held` ones would pass a context of `limit` tokens
/// (checked before any work, so the state is untouched).
pub(crate) fn check_context(held: u64, new: usize, limit: usize) -> Result<()> {
    let room = (limit as u64).saturating_sub(held);
    if new as u64 > room {
        return Err(invalid_option(format!(
            "forward: {new} tokens after the {held} already in the context exceed the model's context length ({limit}, `max_position_embeddings`)"
        )));
    }
    Ok(())
}

/// Feeds `ids` to `run` in pieces of at most `chunk` tokens and returns the logits `which` asks for
/// (`vocab_size` per row). `run(piece, head, logits)` advances the state by the piece and appends
/// the head's rows when `head` is set: on every piece for `All`, on the last one only for `Last`.
pub(crate) fn in_pieces(
    ids: &[u32],
    chunk: usize,
    which: LogitsWanted,
    vocab_size: usize,
    mut run: impl FnMut(&[u32], Option<LogitsWanted>, &mut Vec<f32>) -> Result<()> + Send,
) -> Result<Vec<f32>> {
    on_pool(|| {
        let all = which == LogitsWanted::All;
        let rows = if all { ids.len() } else { 1 };
        let mut logits = Vec::with_capacity(rows.saturating_mul(vocab_size));
        let pieces = ids.len().div_ceil(chunk);
        for (i, piece) in ids.chunks(chunk).enumerate() {
            let head = if all || i + 1 == pieces { Some(which) } else { None };
            run(piece, head, &mut logits)?;
        }
        Ok(logits)
    })
}

/// Runs `f` on a worker of the kernels' thread pool (directly when this thread is one). Each
/// kernel's parallel loop then forks and joins inside the pool, the caller taking its share. Called
/// from outside the pool (a binding's worker thread), every loop — ~150 per decoded token of a
/// 24-layer Mamba — injected its job and put the caller to sleep until it was done: a futex
/// wake-up and sleep per kernel call. That holds for a one-thread pool too (its loops, e.g. the
/// attention's, still go through the pool): one hand-over per forward instead of one per loop.
/// The caller's thread-local activation scope (`ops::ActivationScope`) goes with the work.
fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        let scope = activation_scope();
        rayon::scope(|_| with_activation_scope(scope, f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{with_exact_activations, with_int8_prompts, ActivationScope};

    /// A forward's pieces run on a pool thread, under the caller's activation scope, and a job run
    /// there afterwards does not inherit it.
    #[test]
    fn pieces_run_in_the_pool_under_the_callers_activation_scope() {
        let seen = |want: ActivationScope| {
            let mut calls = 0;
            let logits = in_pieces(&[1, 2, 3], 2, LogitsWanted::Last, 1, |piece, _, logits| {
                assert!(rayon::current_thread_index().is_some(), "not on a pool thread");
                assert_eq!(activation_scope(), want);
                calls += 1;
                logits.extend(piece.iter().map(|&id| id as f32));
                Ok(())
            });
            assert_eq!(calls, 2);
            logits.unwrap()
        };
        // The global pool (of any size), called from outside it (the test harness's thread), as
        // from a binding's worker thread.
        let both = ActivationScope { exact: true, int8_prompts: true };
        assert_eq!(with_int8_prompts(|| with_exact_activations(|| seen(both))), vec![1.0, 2.0, 3.0]);
        let exact = ActivationScope { exact: true, int8_prompts: false };
        assert_eq!(with_exact_activations(|| seen(exact)), vec![1.0, 2.0, 3.0]);
        assert_eq!(seen(ActivationScope::default()), vec![1.0, 2.0, 3.0]);
        assert!(rayon::scope(|_| activation_scope() == ActivationScope::default()), "the scope leaked into the pool");
    }
}
