//! What every family's `forward` does around its own layers: refuse empty or out-of-vocabulary ids,
//! take the state as the family's own type and shape, keep within a context limit, and feed long
//! inputs through the stack in pieces, computing the head only for the rows asked for.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};

use web_time::{Duration, Instant};

use candle_core::Tensor;

use super::interrupt;
use crate::error::{invalid_option, state_mismatch, Result};
use crate::model::{LogitsWanted, ModelState};
use crate::nn::Linear;
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

/// Vocabulary rows per block of a many-row head: SmolLM2's 49152-token head over a 512-token
/// piece is ~14 GFLOP (~1 s on WASM), so it is computed in blocks with a stop check between them.
const HEAD_BLOCK_ROWS: usize = 2048;

/// `head(rows)` (`rows`: `[m, d]`, normed) `* scale` appended to `logits` row by row. Several rows
/// (score's every-position logits) are computed in blocks of vocabulary rows, each value the bits
/// the whole product gives it ([`Linear::forward_rows`]), with an [`interrupt::check`] before each
/// block, so a cancel does not wait for the whole head.
pub(crate) fn head_logits(head: &Linear, rows: &Tensor, scale: Option<f64>, logits: &mut Vec<f32>) -> Result<()> {
    let scaled = |t: Tensor| -> Result<Tensor> {
        Ok(match scale {
            Some(s) => t.affine(s, 0.0)?,
            None => t,
        })
    };
    let (m, vocab) = (rows.dim(0)?, head.weight().rows);
    if m <= 1 || vocab <= HEAD_BLOCK_ROWS {
        logits.extend(scaled(head.forward(rows)?)?.flatten_all()?.to_vec1::<f32>()?);
        return Ok(());
    }
    let start = logits.len();
    logits.resize(start + m * vocab, 0.0);
    for first in (0..vocab).step_by(HEAD_BLOCK_ROWS) {
        interrupt::check()?;
        let block = first..vocab.min(first + HEAD_BLOCK_ROWS);
        let width = block.len();
        let values = scaled(head.forward_rows(rows, block)?)?.flatten_all()?.to_vec1::<f32>()?;
        for (row, part) in values.chunks_exact(width).enumerate() {
            let at = start + row * vocab + first;
            logits[at..at + width].copy_from_slice(part);
        }
    }
    Ok(())
}

/// Feeds `ids` to `run` in pieces of at most `chunk` tokens and returns the logits `which` asks for
/// (`vocab_size` per row). `run(piece, head, logits)` advances the state by the piece and appends
/// the head's rows when `head` is set: on every piece for `All`, on the last one only for `Last`.
/// The caller's stop function ([`interrupt::with_stop`]) goes with the work when `ids` holds more
/// than one token; a one-token step is never stopped part-way (see [`interrupt`]).
pub(crate) fn in_pieces(
    ids: &[u32],
    chunk: usize,
    which: LogitsWanted,
    vocab_size: usize,
    mut run: impl FnMut(&[u32], Option<LogitsWanted>, &mut Vec<f32>) -> Result<()> + Send,
) -> Result<Vec<f32>> {
    let stop = if ids.len() > 1 { interrupt::current() } else { None };
    on_pool(|| {
        interrupt::with_stop(stop, || {
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
    })
}

/// Runs `f` on a worker of the kernels' thread pool (directly when this thread is one). Each
/// kernel's parallel loop then forks and joins inside the pool, the caller taking its share. Called
/// from outside the pool (a binding's worker thread), every loop — ~150 per decoded token of a
/// 24-layer Mamba — injected its job and put the caller to sleep until it was done: a futex
/// wake-up and sleep per kernel call. That holds for a one-thread pool too (its loops, e.g. the
/// attention's, still go through the pool): one hand-over per forward instead of one per loop.
/// The caller's thread-local activation scope (`ops::ActivationScope`) goes with the work.
///
/// While `f` runs, the pool's other threads stay awake ([`stay_awake`]): between two kernels an
/// idle rayon worker goes to sleep on a futex, and waking it for the next kernel's share took a
/// scheduler round trip per loop (a VM's vCPU halt and wake-up): ~8 % of a Mamba-2 decode's CPU
/// time was the kernel's scheduler. llama.cpp's threads spin between ops likewise.
fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        let scope = activation_scope();
        let done = AtomicBool::new(false);
        rayon::scope(|s| {
            let runner = rayon::current_thread_index();
            if rayon::current_num_threads() > 1 {
                let done = &done;
                s.spawn_broadcast(move |_, at| {
                    if Some(at.index()) != runner {
                        stay_awake(done);
                    }
                });
            }
            // Set even when `f` panics, so that the other threads stop and the scope ends.
            let _done = SetOnDrop(&done);
            with_activation_scope(scope, f)
        })
    }
}

/// Longest a thread keeps spinning with nothing to run before it goes back to rayon's own idle loop
/// (and its sleep). The gaps between a forward's kernels are microseconds. The limit matters where
/// rayon started [`stay_awake`] on a thread that was waiting inside other work (it runs a queued
/// job wherever its thread next waits, e.g. inside another caller's forward, or a job stolen just
/// before): that work can only go on once this returns, so it returns as soon as it goes idle.
const AWAKE_IDLE_LIMIT: Duration = Duration::from_millis(1);

/// Runs the pool's pending work as it comes (the forward's kernels' shares) until `done`, instead
/// of sleeping between kernels; returns early after [`AWAKE_IDLE_LIMIT`] without work.
fn stay_awake(done: &AtomicBool) {
    let mut idle_since = None;
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle_since = None;
        } else if idle_since.get_or_insert_with(Instant::now).elapsed() > AWAKE_IDLE_LIMIT {
            return;
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Sets its flag when dropped.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{with_exact_activations, with_int8_prompts, ActivationScope};

    /// The head in blocks of vocabulary rows (a partial last one too) gives the whole product's
    /// bits, scaled or not, and stops between its blocks when asked.
    #[test]
    fn a_head_in_blocks_gives_the_whole_products_bits() {
        use crate::loader::{Buf, MatrixData};
        use crate::nn::WeightMatrix;
        use std::sync::Arc;
        let (vocab, d, m) = (2 * HEAD_BLOCK_ROWS + 300, 64, 7);
        let w: Vec<f32> = (0..vocab * d).map(|i| (((i * 31 + 7) % 23) as f32 - 11.0) * 0.05).collect();
        let head = Linear::head(Arc::new(WeightMatrix::new(MatrixData::F32(Buf::Owned(w)), vocab, d)), None);
        let x: Vec<f32> = (0..m * d).map(|i| (((i * 13 + 5) % 17) as f32 - 8.0) * 0.1).collect();
        let rows = Tensor::from_vec(x, (m, d), &candle_core::Device::Cpu).unwrap();
        let whole = head.forward(&rows).unwrap();
        for scale in [None, Some(0.25)] {
            let want = match scale {
                Some(s) => whole.affine(s, 0.0).unwrap(),
                None => whole.clone(),
            };
            let want: Vec<u32> =
                want.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect();
            let mut got = vec![1.5f32]; // appended after what the caller holds
            head_logits(&head, &rows, scale, &mut got).unwrap();
            assert_eq!(got[0], 1.5);
            assert_eq!(got[1..].iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want, "scale {scale:?}");
        }
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = Arc::clone(&calls);
        let stop: interrupt::StopFn = Arc::new(move || seen.fetch_add(1, Ordering::Relaxed) >= 2);
        let err = interrupt::with_stop(Some(stop), || head_logits(&head, &rows, None, &mut Vec::new())).unwrap_err();
        assert_eq!(err.code, crate::error::ErrorCode::Aborted);
        assert_eq!(calls.load(Ordering::Relaxed), 3, "stopped before the third block");
    }

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

    /// Runs `f` on a fresh thread; fails when it has not finished within a minute (a hang).
    fn within_a_minute(f: impl FnOnce() + Send + 'static) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            f();
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(60)).expect("did not finish within a minute, or panicked");
    }

    /// Several callers' forwards at once: each keeps the pool's other threads awake while it runs,
    /// and rayon starts those spinners wherever a thread next waits — inside another caller's
    /// forward too. All finish, each with its own results.
    #[test]
    fn concurrent_forwards_from_outside_the_pool_all_finish() {
        use rayon::prelude::*;
        if rayon::current_num_threads() < 2 {
            eprintln!("NOTE: a one-thread pool keeps no other thread awake; only the results are checked");
        }
        within_a_minute(|| {
            let callers: Vec<_> = (0..4u64)
                .map(|caller| {
                    std::thread::spawn(move || {
                        for round in 0..1000u64 {
                            let term = |v: u64| v * (caller + round) % 1_000_003;
                            let want: u64 = (0..20_000u64).map(term).sum();
                            let got = on_pool(|| {
                                (0..20_000u32).into_par_iter().with_min_len(500).map(|v| term(v as u64)).sum::<u64>()
                            });
                            assert_eq!(got, want, "caller {caller}, round {round}");
                        }
                    })
                })
                .collect();
            for caller in callers {
                caller.join().expect("a caller panicked");
            }
        });
    }

    /// A forward that panics ends its scope (the threads kept awake stop) and the pool goes on.
    #[test]
    fn a_panicking_forward_ends_and_the_pool_goes_on() {
        use rayon::prelude::*;
        within_a_minute(|| {
            let result = std::panic::catch_unwind(|| on_pool(|| -> u32 { panic!("a kernel's bug") }));
            assert!(result.is_err());
            assert_eq!(on_pool(|| (0..1000u32).into_par_iter().sum::<u32>()), 499_500);
        });
    }
}
