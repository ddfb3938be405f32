//! wasm-bindgen glue: the `RawBinding` surface of `ts/binding/types.ts` over `phoenix_core`, for
//! `wasm32-unknown-unknown`. Like `crates/node`, it only converts values; every model, tokenizer and
//! sampling decision is made in the core. Two things differ from the napi glue, both forced by the
//! platform:
//!
//! - No file system: the model arrives as in-memory files (`ModelFileSet`, filled whole or in chunks,
//!   in the order the core asks for). Reading a folder (Node) or fetching URLs (browser) happens in
//!   the JS entry (`crates/wasm/js/`), which also gives `loadModel(source)` its `RawBinding` shape.
//! - No threads: calls run on the calling JS thread (a Web Worker in the browser) and return
//!   already-settled promises; the core's `setThreads` only validates its argument there.
//!
//! Errors are JS `Error`s whose message is the core's wire form `[E_CODE] message`. Panics depend on
//! the build (scripts/build-wasm.sh, `PHOENIX_WASM_PANIC`): with `panic=unwind` (WASM exception
//! handling) the core's `catch_panic` turns them into `E_INTERNAL` exactly as natively; with
//! `panic=abort` a panic is a WASM trap: the panic hook below keeps its message for `lastPanic()`,
//! and the JS layer (`js/binding.js`) turns the trap into `[E_INTERNAL] …` and re-instantiates.

mod convert;
mod file_set;

pub use file_set::ModelFileSet;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use js_sys::{Array, Float32Array, Promise};
use phoenix_core::error::{invalid_option, Result};
use phoenix_core::session::{self, handles, js_numbers, Generation, LoadedModel};
use wasm_bindgen::prelude::*;

/// Maps a core error to a JS `Error` carrying the wire form.
fn js_error(e: phoenix_core::PhoenixError) -> JsError {
    JsError::new(&e.to_wire())
}

/// Runs a core call with panics caught (panic=unwind builds; with panic=abort a panic traps).
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> std::result::Result<T, JsError> {
    // A panic this call caught must not be reported for a later trap.
    LAST_PANIC.with(|p| p.borrow_mut().take());
    phoenix_core::error::catch_panic(f).map_err(js_error)
}

/// A settled promise, so async-shaped methods of `RawModel` / `RawGeneration` keep their types.
fn settled(result: std::result::Result<JsValue, JsError>) -> Promise {
    match result {
        Ok(v) => Promise::resolve(&v),
        Err(e) => Promise::reject(&JsValue::from(e)),
    }
}

// ------------------------------------------------------------------------------------ panics

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

#[wasm_bindgen(start)]
fn start() {
    std::panic::set_hook(Box::new(|info| {
        let message = info.to_string();
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(message));
    }));
}

/// The message of the panic that trapped this instance, if any (read by the JS entry after a trap).
#[wasm_bindgen(js_name = lastPanic)]
pub fn last_panic() -> Option<String> {
    LAST_PANIC.with(|p| p.borrow().clone())
}

thread_local! {
    static ON_STOP: RefCell<Option<js_sys::Function>> = const { RefCell::new(None) };
}

/// `onStop(report => …)`: called with the core's wire-form error when the core is about to trap this
/// instance on purpose (a chat template past its memory or time budget); after the trap no call gets in.
#[wasm_bindgen(js_name = onStop)]
pub fn on_stop(listener: js_sys::Function) {
    ON_STOP.with(|s| *s.borrow_mut() = Some(listener));
    // The deadline of budgeted work (a chat template's render) needs the host's clock.
    phoenix_core::memory_budget::set_clock(js_sys::Date::now);
    phoenix_core::memory_budget::set_overrun_hook(|report| {
        ON_STOP.with(|s| {
            if let Some(listener) = &*s.borrow() {
                let _ = listener.call1(&JsValue::NULL, &JsValue::from_str(report));
            }
        })
    });
}

thread_local! {
    static INTERRUPT_POLL: RefCell<Option<js_sys::Function>> = const { RefCell::new(None) };
}

/// `setInterruptPoll(() => boolean)`: consulted between the layers of a prompt's forward (a
/// generation's prefill, `score`); `true` stops it there as a cancel would. A running call cannot
/// see a cancel made on its generation meanwhile (this instance's memory is not shared), but the
/// poll can read a flag another thread writes (a SharedArrayBuffer cell).
#[wasm_bindgen(js_name = setInterruptPoll)]
pub fn set_interrupt_poll(poll: js_sys::Function) {
    INTERRUPT_POLL.with(|p| *p.borrow_mut() = Some(poll));
    phoenix_core::models::interrupt::set_host_poll(host_interrupt);
}

/// The host poll: a poll that throws counts as "go on".
fn host_interrupt() -> bool {
    INTERRUPT_POLL
        .with(|p| p.borrow().as_ref().is_some_and(|poll| poll.call0(&JsValue::NULL).is_ok_and(|v| v.is_truthy())))
}

// ------------------------------------------------------------------------------------ module fns

/// Deliberately fails inside WASM, for the tests of the JS layer's recovery: `"panic"` panics in
/// the core's call path (caught as `E_INTERNAL` by unwinding builds, a trap in abort builds),
/// `"trap"` executes `unreachable` (a trap in every build; the JS layer re-instantiates).
#[wasm_bindgen(js_name = injectFault)]
pub fn inject_fault(kind: &str) -> std::result::Result<(), JsError> {
    match kind {
        "panic" => guarded(|| panic!("fault injected on request (injectFault)")),
        #[cfg(target_arch = "wasm32")]
        "trap" => core::arch::wasm32::unreachable(),
        other => Err(js_error(invalid_option(format!("injectFault: unknown kind {other:?} (panic | trap)")))),
    }
}

/// Core version, SIMD level the module was compiled for (`simd128` or `none`), threads (1 on wasm32).
#[wasm_bindgen(js_name = buildInfo)]
pub fn build_info() -> std::result::Result<JsValue, JsError> {
    guarded(|| convert::build_info_to_js(&session::build_info()?))
}

/// The model families this build runs (the core's registry), as `supportedFamilies()` of the native addon.
#[wasm_bindgen(js_name = supportedFamilies)]
pub fn supported_families() -> std::result::Result<JsValue, JsError> {
    guarded(convert::families_to_js)
}

/// The files describing a model reads (`ModelFileSet.describe`); of the others a reader only says
/// whether they exist (`ModelFileSet.found`).
#[wasm_bindgen(js_name = describeReads)]
pub fn describe_reads() -> Vec<String> {
    phoenix_core::describe::DESCRIBE_READS.iter().map(|f| f.to_string()).collect()
}

/// Whether `name` is a GGUF file name (`*.gguf`): a URL or path ending in one names a model file.
#[wasm_bindgen(js_name = isGgufName)]
pub fn is_gguf_name(name: &str) -> bool {
    phoenix_core::loader::files::is_gguf_name(name)
}

/// The core's `setThreads` (on wasm32 it validates the count; WASM always runs on one thread).
#[wasm_bindgen(js_name = setThreads)]
pub fn set_threads(n: f64) -> std::result::Result<(), JsError> {
    guarded(|| session::set_threads(js_numbers::count_from_number("setThreads", n, session::MAX_THREADS)?))
}

/// Checks generation options that do not depend on a model (types, ranges), before loading one.
#[wasm_bindgen(js_name = checkGenerateOptions)]
pub fn check_generate_options(options: JsValue) -> std::result::Result<(), JsError> {
    guarded(|| convert::options_from_js(options)?.check_without_model())
}

/// Checks the `kvCache` load option without a model, as `ModelFileSet.load` would.
#[wasm_bindgen(js_name = checkLoadOptions)]
pub fn check_load_options(kv_cache: Option<String>) -> std::result::Result<(), JsError> {
    guarded(|| phoenix_core::LoadOptions::from_names(kv_cache.as_deref(), None).map(drop))
}

// ------------------------------------------------------------------------------------ RawModel

/// A loaded model. `dispose()` drops this handle's reference to the weights; running generations
/// hold their own, so the memory goes when the last of them ends.
#[wasm_bindgen]
pub struct RawModel {
    inner: Option<Arc<LoadedModel>>,
}

// Sound to assert: a `LoadedModel` is never mutated after loading (forward passes take `&self`), so
// a panic caught mid-call cannot leave it half-updated. Needed by wasm-bindgen in panic=unwind builds.
impl std::panic::UnwindSafe for RawModel {}
impl std::panic::RefUnwindSafe for RawModel {}

impl RawModel {
    fn new(model: LoadedModel) -> Self {
        RawModel { inner: Some(Arc::new(model)) }
    }

    fn model(&self) -> std::result::Result<&Arc<LoadedModel>, JsError> {
        self.inner.as_ref().ok_or_else(|| js_error(handles::disposed_model()))
    }
}

#[wasm_bindgen]
impl RawModel {
    pub fn info(&self) -> std::result::Result<JsValue, JsError> {
        let model = self.model()?;
        guarded(|| convert::info_to_js(&model.info()))
    }

    /// `Promise<number[]>` (settled: WASM runs on the calling thread), the native addon's shape.
    pub fn tokenize(&self, text: &str, add_special_tokens: bool) -> Promise {
        settled(self.model().and_then(|model| {
            guarded(|| model.tokenize(text, add_special_tokens).map(|ids| convert::ids_to_js(&ids).into()))
        }))
    }

    /// Total bytes of the snapshot whose header is `head`, if this model can continue it.
    #[wasm_bindgen(js_name = snapshotLength)]
    pub fn snapshot_length(&self, head: &[u8]) -> std::result::Result<f64, JsError> {
        let model = self.model()?;
        guarded(|| model.snapshot_length(head).map(|n| n as f64))
    }

    pub fn detokenize(&self, ids: Vec<f64>, skip_special_tokens: bool) -> std::result::Result<String, JsError> {
        let model = self.model()?;
        guarded(|| model.detokenize(&js_numbers::ids_from_numbers("detokenize", &ids)?, skip_special_tokens))
    }

    /// `Promise<Float32Array>`: logits for every position (`ids.length * vocabSize`, row-major).
    pub fn logits(&self, ids: Vec<f64>) -> Promise {
        settled(self.model().and_then(|model| {
            guarded(|| {
                let ids = js_numbers::ids_from_numbers("logits", &ids)?;
                Ok(Float32Array::from(model.logits(&ids)?.as_slice()).into())
            })
        }))
    }

    /// `Promise<RawScore>`: per-token log-probs, log-likelihood, perplexity (and logits when asked);
    /// `E_ABORTED` when `cancelled` (the JS layer's cancel flag as the call starts: it runs on the
    /// calling thread, so nothing can set it later).
    pub fn score(&self, ids: Vec<f64>, options: JsValue, cancelled: bool) -> Promise {
        settled(self.model().and_then(|model| {
            guarded(|| {
                let ids = js_numbers::ids_from_numbers("score", &ids)?;
                let options = convert::score_options_from_js(options)?;
                convert::score_to_js(model.score_cancellable(&ids, options, &Arc::new(AtomicBool::new(cancelled)))?)
            })
        }))
    }

    /// Starts a generation (cheap: the prefill runs in the first `next()`).
    pub fn generate(
        &self,
        prompt: JsValue,
        options: JsValue,
        state: Option<Vec<u8>>,
    ) -> std::result::Result<RawGeneration, JsError> {
        let model = self.model()?;
        let generation = guarded(|| {
            let prompt = convert::prompt_from_js(prompt)?;
            let options = convert::options_from_js(options)?;
            model.generate_raw(prompt, &options, state.as_deref())
        })?;
        Ok(RawGeneration { cancel: generation.cancel_handle(), inner: generation, panicked: false })
    }

    /// `RawChatPrompt`: `messages` rendered with the model's chat template, with the ids that end
    /// the assistant's turn.
    #[wasm_bindgen(js_name = renderChat)]
    pub fn render_chat(&self, messages: JsValue, add_generation_prompt: bool) -> std::result::Result<JsValue, JsError> {
        let model = self.model()?;
        guarded(|| {
            convert::chat_prompt_to_js(
                &model.chat_prompt(&convert::messages_from_js(messages)?, add_generation_prompt)?,
            )
        })
    }

    /// Starts the assistant's reply to `messages` (the prefill runs in the first `next()`).
    #[wasm_bindgen(js_name = generateChat)]
    pub fn generate_chat(
        &self,
        messages: JsValue,
        options: JsValue,
        state: Option<Vec<u8>>,
    ) -> std::result::Result<RawGeneration, JsError> {
        let model = self.model()?;
        let generation = guarded(|| {
            let messages = convert::messages_from_js(messages)?;
            model.generate_chat_raw(&messages, &convert::options_from_js(options)?, state.as_deref())
        })?;
        Ok(RawGeneration { cancel: generation.cancel_handle(), inner: generation, panicked: false })
    }

    pub fn dispose(&mut self) {
        self.inner = None;
    }
}

// ------------------------------------------------------------------------------------ RawGeneration

/// One running generation. Each `next()` runs its step synchronously and returns a settled promise.
#[wasm_bindgen]
pub struct RawGeneration {
    inner: Generation,
    cancel: Arc<AtomicBool>,
    /// Set when a call into `inner` panicked (only an unwinding build survives that): the state may
    /// be half-advanced, so, like the native addon's poisoned lock, every later call fails.
    panicked: bool,
}

// Sound to assert: `panicked` marks a generation a panic interrupted, and every method checks it.
impl std::panic::UnwindSafe for RawGeneration {}
impl std::panic::RefUnwindSafe for RawGeneration {}

impl RawGeneration {
    fn usable(&self) -> std::result::Result<(), JsError> {
        if self.panicked {
            return Err(js_error(handles::unusable_generation()));
        }
        Ok(())
    }

    /// Runs `f` on the generation, marking it unusable if `f` does not return (a caught panic).
    fn with_inner<T>(&mut self, f: impl FnOnce(&mut Generation) -> Result<T>) -> std::result::Result<T, JsError> {
        self.usable()?;
        let mut returned = false;
        let inner = &mut self.inner;
        let result = guarded(|| {
            let r = f(inner);
            returned = true;
            r
        });
        self.panicked = !returned;
        result
    }
}

#[wasm_bindgen]
impl RawGeneration {
    /// `Promise<RawStep | null>`: the prefill on the first call, then one decode step per call.
    pub fn next(&mut self) -> Promise {
        settled(self.with_inner(|g| g.next_step().and_then(convert::step_to_js)))
    }

    /// Ends the generation at the next step boundary (that step reports finishReason `abort`). A call
    /// cannot run while `next()` runs on this instance: to stop a running prefill, the host sets the
    /// flag its interrupt poll reads (`setInterruptPoll`).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Frees the generation's state now (later steps and exports fail with "generation disposed").
    pub fn dispose(&mut self) {
        self.inner.dispose();
    }

    #[wasm_bindgen(js_name = exportState)]
    pub fn export_state(&mut self) -> std::result::Result<Vec<u8>, JsError> {
        self.with_inner(|g| g.export_state())
    }

    pub fn stats(&self) -> std::result::Result<JsValue, JsError> {
        self.usable()?;
        guarded(|| convert::stats_to_js(&self.inner.stats()))
    }

    #[wasm_bindgen(js_name = tokenIds)]
    pub fn token_ids(&self) -> std::result::Result<Array, JsError> {
        self.usable()?;
        Ok(convert::ids_to_js(self.inner.token_ids()))
    }
}
