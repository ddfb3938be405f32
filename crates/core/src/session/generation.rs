//! One running generation: its own model state, token history, sampler and stop criteria.
//!
//! Feeding is lazy: the model state always holds every history token except the last (see
//! [`super::snapshot`]). A step feeds what is pending — the whole prompt minus its last token as
//! a prefill (in the model's own pieces, checking for cancellation between their layers), then the last
//! token as a one-token call — samples, and appends the sample to the history unfed. A fresh run,
//! a run restored from a snapshot and a run that continues a snapshot with more prompt therefore go
//! through the same calls and give the same tokens. On quantized weights the first step's one-token
//! call keeps its activations in f32, as the prefill does, when it feeds a prompt token; a step that
//! feeds a sampled token — every later step, and the first step of a run restored with no new prompt,
//! whose pending token the saved run had sampled — rounds them to 8 bits (llama.cpp's decode, the
//! fast path), so that restored run matches the uninterrupted one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{finite, handles, snapshot, LoadedModel, Prompt};
use crate::error::{invalid_option, state_mismatch, tokenizer_error, ErrorCode, PhoenixError, Result};
use crate::generate::clock::now_ms;
use crate::generate::rng::fresh_seed;
use crate::generate::{FinishReason, GenerateOptions, Sampler, Step, StopStrings, StreamDetokenizer};
use crate::model::{LogitsWanted, ModelState};
use crate::models::interrupt::{stop_on, with_stop};
use crate::ops::{with_exact_activations, with_int8_prompts};
use crate::tokenizer::Tokenizer;

/// Counters for `stats()`. Times are wall milliseconds from the core's clock (`generate::clock`).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationStats {
    /// Prompt tokens this generation added (a restored history is not counted); after a cancel
    /// before the first token, those the state took in (the prefill stopped part-way).
    pub prompt_tokens: usize,
    /// Tokens of context the given state supplied (its history, or for a chat the start of it the
    /// conversation shares): 0 without a state.
    pub restored_tokens: usize,
    pub generated_tokens: usize,
    /// Feeding the prompt and sampling the first token.
    pub prefill_ms: f64,
    /// Every later step.
    pub decode_ms: f64,
}

/// Asks a [`Generation`] to dispose itself, from any thread (see [`Generation::dispose_handle`]).
#[derive(Clone)]
pub struct DisposeHandle {
    cancel: Arc<AtomicBool>,
    dispose: Arc<AtomicBool>,
}

impl DisposeHandle {
    /// Cancels the running step (a prefill stops at its next layer) and marks the generation for
    /// disposal when that step ends.
    pub fn request(&self) {
        self.dispose.store(true, Ordering::Relaxed);
        self.cancel.store(true, Ordering::Relaxed);
    }
}

pub struct Generation {
    /// Released (`None`) once the generation finishes with nothing left to feed, so a finished
    /// generation whose JS handle has not been garbage-collected yet does not keep the weights alive.
    model: Option<Arc<LoadedModel>>,
    /// The model's fingerprint and weights identity, kept for `export_state` after the model is released.
    fingerprint: u64,
    weights_identity: u64,
    /// `None` once disposed: [`Self::dispose`] frees it without waiting for the handle's collector.
    state: Option<Box<dyn ModelState>>,
    /// The model's `state_bytes` and `state_bytes_per_token`, kept for [`Self::state_bytes`] after
    /// the model is released.
    state_size: (usize, usize),
    /// Every token of the context: restored history, prompt, generated.
    history: Vec<u32>,
    /// How many of `history` the state has consumed.
    fed: usize,
    /// A text prompt not tokenized yet, with whether to add special tokens (see `take_prompt`).
    pending_text: Option<(String, bool)>,
    /// How a text prompt relates to a restored history (see [`PromptScope`]).
    scope: PromptScope,
    /// The restored history's last (pending) token is a prompt token of this call, even when no
    /// token follows it: a chat's conversation holds it (see the module's note on f32 activations).
    pending_is_prompt: bool,
    max_tokens: usize,
    /// See [`GenerateOptions::max_tokens_strict`].
    max_tokens_strict: bool,
    /// `GenerateOptions::int8_prompt`: prompt pieces run under `ops::with_int8_prompts`.
    int8_prompt: bool,
    /// The model's context limit in tokens (`None`: no limit, SSMs).
    context_length: Option<usize>,
    /// The model's EOS ids and the caller's stop ids.
    stop_ids: Vec<u32>,
    sampler: Sampler,
    tokenizer: Option<Arc<Tokenizer>>,
    /// Built by `take_prompt` (it needs the tokenized prompt as context).
    detokenizer: Option<StreamDetokenizer>,
    stop_strings: StopStrings,
    cancel: Arc<AtomicBool>,
    /// Set from any thread by a [`DisposeHandle`]; honoured between steps.
    dispose_requested: Arc<AtomicBool>,
    finished: Option<FinishReason>,
    /// A failed step leaves the state half-advanced: later calls repeat the error.
    failed: Option<PhoenixError>,
    stats: GenerationStats,
    /// It continues a snapshot: non-finite logits may come from the snapshot's values, not only the weights.
    restored: bool,
}

/// What a prompt is, next to a restored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PromptScope {
    /// More context after the state's history (`generate`).
    Continues,
    /// A text holding the whole context (a rendered conversation, `chat`): the state is reused when
    /// the text's tokens begin with its history, so only the rest is fed; otherwise (an earlier turn
    /// was edited, or the state holds another conversation) a KV cache is cut back to the start both
    /// share, and a state that cannot be cut starts afresh from the text.
    Whole,
}

impl Generation {
    pub(super) fn start(
        model: Arc<LoadedModel>,
        prompt: Prompt,
        options: GenerateOptions,
        state: Option<&[u8]>,
    ) -> Result<Self> {
        Self::start_scoped(model, prompt, options, state, PromptScope::Continues)
    }

    pub(super) fn start_scoped(
        model: Arc<LoadedModel>,
        prompt: Prompt,
        options: GenerateOptions,
        state: Option<&[u8]>,
        scope: PromptScope,
    ) -> Result<Self> {
        let info = model.model_info();
        let vocab = info.vocab_size;
        let context_length = info.context_length;
        let tokenizer = model.tokenizer().cloned();

        let mut model_state = model.model().new_state()?;
        let mut history = Vec::new();
        if let Some(bytes) = state {
            let snap = snapshot::decode(bytes)?;
            model.check_snapshot_origin(snap.fingerprint, snap.weights_identity, &snap.layout)?;
            if let Some(bad) = snap.history.iter().find(|&&id| id as usize >= vocab) {
                return Err(state_mismatch(format!(
                    "state: token id {bad} is outside this model's vocabulary (size {vocab})"
                )));
            }
            model.check_state_len(&snap.layout, snap.state.len())?;
            model_state.load_bytes(&snap.state, snap.layout.tokens)?;
            history = snap.history;
        }
        let fed = history.len().saturating_sub(1);
        let restored_tokens = history.len();

        // A text prompt is tokenized by the first step (on the binding's worker thread), not here.
        let mut prompt_tokens = 0;
        let pending_text = match prompt {
            Prompt::Ids(ids) => {
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(invalid_option(format!(
                        "prompt: token id {bad} is outside the vocabulary (size {vocab})"
                    )));
                }
                prompt_tokens = ids.len();
                history.extend(ids);
                None
            }
            Prompt::Text(text) => {
                if tokenizer.is_none() {
                    return Err(tokenizer_error("prompt: a text prompt needs a tokenizer.json in the model folder"));
                }
                Some((text, options.add_special_tokens.unwrap_or(state.is_none())))
            }
        };
        if history.is_empty() && pending_text.is_none() {
            return Err(empty_prompt());
        }

        if !options.stop_strings.is_empty() && tokenizer.is_none() {
            return Err(tokenizer_error("option `stop` needs a tokenizer.json in the model folder"));
        }
        let id_limit = tokenizer.as_ref().map_or(vocab, |t| t.id_limit().min(vocab));
        let mut stop_ids = info.eos_token_ids.clone();
        stop_ids.extend_from_slice(&options.stop_token_ids);

        let state_size = (info.state_bytes, info.state_bytes_per_token);
        let restored = state.is_some();
        let mut generation = Self {
            restored,
            sampler: Sampler::new(&options, options.seed.unwrap_or_else(fresh_seed), id_limit),
            fingerprint: model.fingerprint(),
            weights_identity: model.weights_identity(),
            model: Some(model),
            state: Some(model_state),
            state_size,
            history,
            fed,
            pending_text,
            scope,
            pending_is_prompt: false,
            max_tokens: options.max_tokens,
            max_tokens_strict: options.max_tokens_strict,
            int8_prompt: options.int8_prompt,
            context_length,
            stop_ids,
            tokenizer,
            detokenizer: None,
            stop_strings: StopStrings::new(options.stop_strings),
            cancel: Arc::new(AtomicBool::new(false)),
            dispose_requested: Arc::new(AtomicBool::new(false)),
            finished: None,
            failed: None,
            stats: GenerationStats { prompt_tokens, restored_tokens, ..Default::default() },
        };
        if generation.pending_text.is_none() {
            generation.fit_to_context()?;
        }
        Ok(generation)
    }

    /// Tokenizes a pending text prompt into the history and sets up the streaming detokeniser (with
    /// the whole context so far). Runs once, inside the first step or export.
    fn take_prompt(&mut self) -> Result<()> {
        if let Some((text, add_special)) = self.pending_text.take() {
            let tokenizer = self.tokenizer.as_ref().ok_or_else(|| tokenizer_error("prompt: no tokenizer"))?;
            let ids = tokenizer.encode(&text, add_special)?;
            let ids = match self.scope {
                PromptScope::Whole if self.restored => {
                    // Every token of the rendered conversation is the caller's, the pending one too
                    // (a state holding the whole conversation leaves nothing after it).
                    self.pending_is_prompt = true;
                    self.continue_or_restart(ids)?
                }
                _ => ids,
            };
            self.stats.prompt_tokens += ids.len();
            self.history.extend(ids);
            if self.history.is_empty() {
                return Err(empty_prompt());
            }
            self.fit_to_context()?;
        }
        if self.detokenizer.is_none() && self.finished.is_none() {
            if let Some(t) = &self.tokenizer {
                self.detokenizer = Some(StreamDetokenizer::new(Arc::clone(t), &self.history, true)?);
            }
        }
        Ok(())
    }

    /// For a whole-context prompt (`ids`) after a restored state: the ids past the state's history when
    /// they begin with it; else, for a state that can forget its last tokens (a KV cache), the ids past
    /// the start they share, the state cut back to it; otherwise a fresh state and empty history, and
    /// all of `ids`.
    fn continue_or_restart(&mut self, ids: Vec<u32>) -> Result<Vec<u32>> {
        let continues = !self.history.is_empty() && ids.starts_with(&self.history);
        if continues && ids.len() > self.history.len() {
            return Ok(ids[self.history.len()..].to_vec());
        }
        let common = self.history.iter().zip(&ids).take_while(|(a, b)| a == b).count();
        // Tokens the state has read that are still the conversation's, leaving at least two to feed:
        // the last token is then read in one piece with another, as a fresh read takes it (read alone,
        // by the one-row kernels, its logits differ in the last bits, and a near-tie later can flip).
        let keep = common.min(self.fed).min(ids.len().saturating_sub(2));
        if keep > 0 && self.state.as_mut().ok_or_else(handles::disposed_generation)?.truncate(keep) {
            self.history.truncate(keep);
            self.fed = keep;
            self.stats.restored_tokens = keep;
            return Ok(ids[keep..].to_vec());
        }
        if continues {
            // The state holds the whole conversation and cannot be cut back (an SSM): its pending
            // token is read alone, with f32 activations as a prompt's last token (`pending_is_prompt`).
            return Ok(Vec::new());
        }
        let model = self.model.as_ref().ok_or_else(released)?;
        self.state = Some(model.model().new_state()?);
        self.history.clear();
        self.fed = 0;
        self.restored = false;
        self.stats.restored_tokens = 0;
        Ok(ids)
    }

    /// Checks the context (restored history + prompt) plus the tokens to generate against the
    /// model's context limit, before any forward pass: a strict `maxTokens` that does not fit is
    /// `E_INVALID_OPTION`; any other is cut to the room left.
    fn fit_to_context(&mut self) -> Result<()> {
        let Some(limit) = self.context_length else { return Ok(()) };
        let used = self.history.len();
        let room = limit.saturating_sub(used);
        let held = if used == 1 { "1 token of context".to_string() } else { format!("{used} tokens of context") };
        if room == 0 {
            let what = if self.restored { "prompt and restored state" } else { "the prompt" };
            let verb = if used == 1 { "leaves" } else { "leave" };
            return Err(invalid_option(format!(
                "prompt: {held} ({what}) {verb} no room in the model's context of {limit} tokens"
            )));
        }
        if self.max_tokens <= room {
            return Ok(());
        }
        if self.max_tokens_strict {
            return Err(invalid_option(format!(
                "maxTokens: {held} plus maxTokens {} exceed the model's context of {limit} tokens (at most {room} more fit)",
                self.max_tokens
            )));
        }
        self.max_tokens = room;
        Ok(())
    }

    /// Runs one step: on the first call the prefill plus the first sample, later one decode step.
    /// `Ok(None)` once finished; the step that finishes carries the finish reason.
    pub fn next_step(&mut self) -> Result<Option<Step>> {
        self.dispose_if_requested();
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.finished.is_some() {
            return Ok(None);
        }
        let result = self.step();
        if let Err(e) = &result {
            self.fail(e.clone());
        }
        // A dispose asked for while this step ran (it also cancelled it): free the state now.
        self.dispose_if_requested();
        result.map(Some)
    }

    fn step(&mut self) -> Result<Step> {
        self.take_prompt()?;
        if self.cancel.load(Ordering::Relaxed) {
            let text = self.flush()?.0;
            return Ok(self.finish(FinishReason::Abort, None, text));
        }
        let first = self.stats.generated_tokens == 0;
        // Whether the pending token is a prompt token (see the module's note on f32 activations).
        let prompt_pending = first && (self.stats.prompt_tokens > 0 || self.pending_is_prompt);
        let started = now_ms();
        let Some(mut logits) = self.feed_pending(prompt_pending)? else {
            // Cancelled during the prefill: the state holds the prompt up to `fed` (an export
            // saves that much, without reading the rest), nothing was sampled.
            self.stats.prefill_ms += now_ms() - started;
            let text = self.flush()?.0;
            return Ok(self.finish(FinishReason::Abort, None, text));
        };
        let position = self.history.len() - 1;
        let suspect = if self.restored { finite::WEIGHTS_OR_STATE } else { finite::WEIGHTS };
        finite::check_rows_blaming(&logits, logits.len(), position, self.history.len(), suspect)?;
        self.fed = self.history.len();
        let token = self.sampler.sample(&mut logits, &self.history)?;
        self.history.push(token);
        self.stats.generated_tokens += 1;
        let elapsed = now_ms() - started;
        if first {
            self.stats.prefill_ms += elapsed;
        } else {
            self.stats.decode_ms += elapsed;
        }

        if self.stop_ids.contains(&token) {
            // The stop token's own text is never emitted (like a stop string).
            let text = self.flush()?.0;
            return Ok(self.finish(FinishReason::Stop, Some(token), text));
        }
        let piece = match &mut self.detokenizer {
            Some(d) => d.push(token)?,
            None => String::new(),
        };
        let check = self.stop_strings.push(&piece);
        if check.stopped {
            return Ok(self.finish(FinishReason::Stop, Some(token), check.emit));
        }
        if self.stats.generated_tokens >= self.max_tokens {
            let (rest, stopped) = self.flush()?;
            let reason = if stopped { FinishReason::Stop } else { FinishReason::Length };
            return Ok(self.finish(reason, Some(token), check.emit + &rest));
        }
        Ok(Step { token_id: Some(token), text: check.emit, finish_reason: None })
    }

    /// Feeds every unfed history token and returns the logits after the last; `None` when cancelled
    /// during the prefill (`fed` says how far it got: the pieces fed whole). The last token goes through the prefill
    /// with the rest: fed alone as a decode step it cost one more pass over every weight (~2-3 % of a
    /// 512-token Mamba-130M prefill). The piece holding it runs with f32 activations when `exact_last`
    /// (a prompt token picking the generation's first token, see `with_exact_activations`).
    fn feed_pending(&mut self, exact_last: bool) -> Result<Option<Vec<f32>>> {
        // `fed` < the history's length always holds here (the last token is never fed before its
        // step); clamped so a step always feeds at least that token.
        self.fed = self.fed.min(self.history.len() - 1);
        self.feed_to(self.history.len(), true, exact_last)
    }

    /// Feeds pending history tokens except the last, restoring the invariant.
    fn feed_all_but_last(&mut self) -> Result<()> {
        self.feed_to(self.history.len() - 1, false, false).map(|_| ())
    }

    /// Feeds history tokens `fed..upto` in the model's prefill pieces (same results as one call) and
    /// returns the logits after the last piece, computed with f32 activations when `exact_last`;
    /// `None` when there was nothing to feed, or when `cancellable` and a cancel came — between
    /// pieces, or between the layers of a piece of several tokens, which the model then takes back
    /// (see `models::interrupt`): either way `fed` counts what the state holds.
    fn feed_to(&mut self, upto: usize, cancellable: bool, exact_last: bool) -> Result<Option<Vec<f32>>> {
        if self.fed >= upto {
            return Ok(None);
        }
        let model = Arc::clone(self.model.as_ref().ok_or_else(released)?);
        let piece = model.model().prefill_chunk().max(1);
        let stop = cancellable.then(|| stop_on(&self.cancel));
        loop {
            let end = upto.min(self.fed.saturating_add(piece));
            let ids = &self.history[self.fed..end];
            let state = self.state.as_deref_mut().ok_or_else(handles::disposed_generation)?;
            let mut feed = || with_stop(stop.clone(), || model.model().forward(ids, state, LogitsWanted::Last));
            let mut scoped = || if exact_last && end == upto { with_exact_activations(&mut feed) } else { feed() };
            let logits = match if self.int8_prompt { with_int8_prompts(&mut scoped) } else { scoped() } {
                Ok(logits) => logits,
                Err(e) if cancellable && e.code == ErrorCode::Aborted => {
                    // Stopped between layers (by our flag, or on WASM the host's): the state is as
                    // it was before this piece. The flag is set for the host's stop too, so later
                    // steps see the cancel.
                    self.cancel.store(true, Ordering::Relaxed);
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            self.fed = end;
            if end == upto {
                return Ok(Some(logits));
            }
            // Between pieces only: the step checked before the first.
            if cancellable && self.cancel.load(Ordering::Relaxed) {
                return Ok(None);
            }
        }
    }

    /// Releases text still held by the detokeniser and the stop-string matcher. `.1`: whether that
    /// text completed a stop string (the text then ends before it).
    fn flush(&mut self) -> Result<(String, bool)> {
        let rest = match &mut self.detokenizer {
            Some(d) => d.finish()?,
            None => String::new(),
        };
        let check = self.stop_strings.push(&rest);
        if check.stopped {
            return Ok((check.emit, true));
        }
        Ok((check.emit + &self.stop_strings.finish(), false))
    }

    fn finish(&mut self, reason: FinishReason, token_id: Option<u32>, text: String) -> Step {
        self.finished = Some(reason);
        if reason == FinishReason::Abort && self.stats.generated_tokens == 0 {
            // Cancelled before or during the prefill: count the prompt tokens fed, not those given
            // (the unfed tail of the history is prompt, and the restored state's pending token).
            let unfed = self.history.len().saturating_sub(self.fed);
            self.stats.prompt_tokens = self.stats.prompt_tokens.saturating_sub(unfed);
        }
        self.detokenizer = None; // holds the tokenizer: free it with the weights
        let all_read = self.pending_text.is_none() && self.fed + 1 >= self.history.len();
        if all_read || reason == FinishReason::Abort {
            self.model = None; // export_state needs no more forward calls
            self.tokenizer = None;
        }
        Step { token_id, text, finish_reason: Some(reason) }
    }

    /// A failed step may leave the state half-advanced: keep the error, release the model.
    fn fail(&mut self, e: PhoenixError) {
        self.failed = Some(e);
        self.model = None;
        self.detokenizer = None;
        self.tokenizer = None;
    }

    /// Ends the generation: a running prefill stops at its next layer, a decode step at its end
    /// (that step reports `abort`). Thread-safe.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// A flag that cancels this generation when set; usable while a step runs on another thread.
    pub fn cancel_handle(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    /// The context so far as a snapshot (format in [`super::snapshot`]). Runs a pending prefill
    /// first, so the saved state is ready to continue from — except after an abort or a cancel not
    /// yet seen by a step: then it holds the tokens read so far (a prompt cut short reads no
    /// further; continuing a chat from it reads the rest of the conversation then).
    pub fn export_state(&mut self) -> Result<Vec<u8>> {
        self.dispose_if_requested();
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.finished == Some(FinishReason::Abort) {
            let read = self.history.len().min(self.fed + 1);
            return self.encode(&self.history[..read]);
        }
        let started = now_ms();
        if let Err(e) = self.take_prompt() {
            self.fail(e.clone());
            return Err(e);
        }
        if self.cancel.load(Ordering::Relaxed) {
            // Cancelled before its next step: that step ends it without reading more, so neither
            // does the export (a prompt cut short is not read to its end first).
            let read = self.history.len().min(self.fed + 1);
            return self.encode(&self.history[..read]);
        }
        let pending = self.fed + 1 < self.history.len();
        if let Err(e) = self.feed_all_but_last() {
            self.fail(e.clone());
            return Err(e);
        }
        if pending {
            self.stats.prefill_ms += now_ms() - started;
        }
        self.encode(&self.history)
    }

    /// The state with `history` (every token it has read, and one pending) as a snapshot.
    fn encode(&self, history: &[u32]) -> Result<Vec<u8>> {
        let state = self.state.as_deref().ok_or_else(handles::disposed_generation)?;
        let write = |out: &mut Vec<u8>| state.append_bytes(out);
        snapshot::encode_with(
            self.fingerprint,
            self.weights_identity,
            &state.layout(),
            history,
            self.state_bytes(),
            write,
        )
    }

    /// Ends the generation and frees what it holds — the model state (a KV cache, SSM states), the
    /// history, its reference to the weights — now instead of when the binding's handle is collected.
    /// Later steps and exports fail with "generation disposed"; `stats` still answers.
    pub fn dispose(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.dispose_requested.store(true, Ordering::Relaxed);
        if self.state.is_none() {
            return;
        }
        self.failed = Some(handles::disposed_generation());
        self.free_state(); // before `fed` is reset: it sizes the state
        self.history = Vec::new();
        self.fed = 0;
        self.pending_text = None;
        self.model = None;
        self.tokenizer = None;
        self.detokenizer = None;
    }

    /// Drops the model state; one of at least [`RELEASE_AFTER_BYTES`] (a long context's KV cache)
    /// also has the allocator hand its pages back to the OS (see `memory_budget::release_free_memory`).
    fn free_state(&mut self) {
        let held = self.state_bytes();
        self.state = None;
        if held >= RELEASE_AFTER_BYTES {
            crate::memory_budget::release_free_memory();
        }
    }

    /// A handle that asks for a dispose from any thread — for a binding whose step runs on another
    /// thread while the caller disposes: the running step is cancelled, and the state freed as it ends
    /// (or by the next [`Self::dispose_if_requested`]).
    pub fn dispose_handle(&self) -> DisposeHandle {
        DisposeHandle { cancel: Arc::clone(&self.cancel), dispose: Arc::clone(&self.dispose_requested) }
    }

    /// Disposes the generation if a [`DisposeHandle`] asked for it.
    pub fn dispose_if_requested(&mut self) {
        if self.dispose_requested.load(Ordering::Relaxed) {
            self.dispose();
        }
    }

    pub fn stats(&self) -> GenerationStats {
        self.stats
    }

    /// Every token of the context: restored history, prompt and generated tokens (stop tokens included).
    /// A text prompt appears once the first step (or an export) has tokenized it.
    pub fn token_ids(&self) -> &[u32] {
        &self.history
    }

    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finished
    }

    pub fn is_finished(&self) -> bool {
        self.finished.is_some() || self.failed.is_some()
    }

    /// Bytes of model state held for the tokens fed so far (SSM states, KV cache; a cache's spare
    /// capacity not counted). A finished generation keeps them until its handle is dropped, so a
    /// binding with a garbage collector reports them to it (V8 otherwise sees only a small object
    /// and lets finished generations' caches pile up: ~30 MB each for a 512-token SmolLM prompt).
    pub fn state_bytes(&self) -> usize {
        if self.state.is_none() {
            return 0;
        }
        let (fixed, per_token) = self.state_size;
        fixed.saturating_add(self.fed.saturating_mul(per_token))
    }

    /// The model, while the generation still needs it (`None` once finished).
    pub fn model(&self) -> Option<&Arc<LoadedModel>> {
        self.model.as_ref()
    }
}

impl Drop for Generation {
    /// A generation dropped without `dispose` (its JS handle collected) frees its state the same way.
    fn drop(&mut self) {
        self.free_state();
    }
}

/// Model state past which freeing it also purges the allocator's free pages. Smaller states stay
/// with the allocator for reuse: purging after every short generation made the next prefill fault
/// its buffers in again (~7.5 k page faults for a 512-token SmolLM prompt, a few % of its time).
const RELEASE_AFTER_BYTES: usize = 32 << 20;

fn empty_prompt() -> PhoenixError {
    invalid_option("prompt is empty (give text or ids, or a state to continue)")
}

fn released() -> PhoenixError {
    crate::error::internal("generation: the model was released when the generation finished")
}
