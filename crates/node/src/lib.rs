//! napi-rs glue: exposes `RawBinding` of `ts/binding/types.ts` (loadModel, buildInfo, setThreads,
//! RawModel, RawGeneration). It only converts values and moves work off the JS thread; every model,
//! tokenizer and sampling decision is made in `phoenix_core`.
//!
//! Errors: every core call runs inside `catch_panic` (a panic becomes `E_INTERNAL` instead of
//! unwinding into Node) and surfaces as a JS `Error` whose message is `[E_CODE] message`.

mod convert;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use napi::bindgen_prelude::{AsyncTask, Float32Array, ObjectFinalize, Uint8Array};
use napi::{Env, Task};
use napi_derive::napi;
use phoenix_core::error::catch_panic;
use phoenix_core::generate::Step;
use phoenix_core::session::{
    self, handles, js_numbers, DisposeHandle, Generation, LoadedModel, Prompt, Score, ScoreOptions,
};

pub use convert::{
    BuildInfo, RawChatMessage, RawChatPrompt, RawFamily, RawGenerateOptions, RawGenerationStats, RawLoadOptions,
    RawModelInfo, RawModelLayout, RawPrompt, RawScore, RawScoreOptions, RawStep,
};

/// Runs a core call with panics caught; maps the error to a JS Error carrying the wire form.
fn guarded<T>(f: impl FnOnce() -> phoenix_core::Result<T>) -> napi::Result<T> {
    catch_panic(f).map_err(|e| napi::Error::from_reason(e.to_wire()))
}

// ------------------------------------------------------------------------------------ module fns

pub struct LoadModelTask {
    dir: PathBuf,
    options: Option<RawLoadOptions>,
}

impl Task for LoadModelTask {
    type Output = Arc<LoadedModel>;
    type JsValue = RawModel;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guarded(|| LoadedModel::load_with(&self.dir, &RawLoadOptions::to_core(self.options.as_ref())?).map(Arc::new))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(RawModel { inner: std::cell::RefCell::new(Some(output)) })
    }
}

/// Loads a model folder (config.json + weights [+ tokenizer.json]) on a libuv worker thread.
#[napi(ts_return_type = "Promise<RawModel>")]
pub fn load_model(dir: String, options: Option<RawLoadOptions>) -> AsyncTask<LoadModelTask> {
    AsyncTask::new(LoadModelTask { dir: PathBuf::from(dir), options })
}

pub struct DescribeModelTask {
    dir: PathBuf,
}

impl Task for DescribeModelTask {
    type Output = phoenix_core::describe::ModelLayout;
    type JsValue = RawModelLayout;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guarded(|| phoenix_core::describe::describe_dir(&self.dir))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(output.into())
    }
}

/// What the core would load from a model folder (family, engine kind, format, the files a load
/// reads), from config.json and the shard index only — no weights; on a libuv worker thread.
#[napi(ts_return_type = "Promise<RawModelLayout>")]
pub fn describe_model(dir: String) -> AsyncTask<DescribeModelTask> {
    AsyncTask::new(DescribeModelTask { dir: PathBuf::from(dir) })
}

/// The model families this build runs (the core's registry).
#[napi]
pub fn supported_families() -> Vec<RawFamily> {
    phoenix_core::models::FAMILIES
        .iter()
        .map(|f| RawFamily {
            name: f.name.to_string(),
            model_types: f.model_types.iter().map(|t| t.to_string()).collect(),
            engine: f.engine.as_str().to_string(),
        })
        .collect()
}

/// Core version, detected SIMD level and worker thread count (refuses an unknown `PHOENIX_SIMD`).
#[napi]
pub fn build_info() -> napi::Result<BuildInfo> {
    guarded(|| session::build_info().map(Into::into))
}

/// Sizes the core's worker pool (0 = one per core). Only before the first model call, and only
/// once (the same value again is fine): rayon's global pool cannot be resized once running.
#[napi]
pub fn set_threads(n: f64) -> napi::Result<()> {
    guarded(|| session::set_threads(js_numbers::count_from_number("setThreads", n, session::MAX_THREADS)?))
}

/// Checks generation options that do not depend on a model (types, ranges), before loading one.
#[napi]
pub fn check_generate_options(options: RawGenerateOptions) -> napi::Result<()> {
    guarded(|| phoenix_core::generate::RawGenerateOptions::from(options).check_without_model())
}

/// Checks load options (`kvCache`, `useMmap`) without a model, as `loadModel` would.
#[napi]
pub fn check_load_options(options: RawLoadOptions) -> napi::Result<()> {
    guarded(|| RawLoadOptions::to_core(Some(&options)).map(drop))
}

// ------------------------------------------------------------------------------------ CancelFlag

/// A flag JS sets to stop a call running off its thread (`score`): the core checks it between steps.
#[napi]
pub struct CancelFlag {
    flag: Arc<AtomicBool>,
}

#[napi]
impl CancelFlag {
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self { flag: Default::default() }
    }

    #[napi]
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }
}

// ------------------------------------------------------------------------------------ RawModel

/// A loaded model. `dispose()` drops this handle's reference to the weights; running generations
/// hold their own, so the memory goes when the last of them ends.
#[napi]
pub struct RawModel {
    /// A cell, so that `dispose` takes `&self`: with `&mut self`, napi-rs refused a dispose while a
    /// `tokenize` / `score` promise of the same handle was pending ("cannot be borrowed mutably").
    inner: std::cell::RefCell<Option<Arc<LoadedModel>>>,
}

impl RawModel {
    fn model(&self) -> napi::Result<Arc<LoadedModel>> {
        self.inner.borrow().clone().ok_or_else(|| napi::Error::from_reason(handles::disposed_model().to_wire()))
    }
}

pub struct LogitsTask {
    model: Arc<LoadedModel>,
    ids: Vec<u32>,
}

impl Task for LogitsTask {
    type Output = Vec<f32>;
    type JsValue = Float32Array;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guarded(|| self.model.logits(&self.ids))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(Float32Array::new(output))
    }
}

pub struct ScoreTask {
    model: Arc<LoadedModel>,
    ids: Vec<u32>,
    options: ScoreOptions,
    cancel: Arc<AtomicBool>,
}

impl Task for ScoreTask {
    type Output = Score;
    type JsValue = RawScore;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guarded(|| self.model.score_cancellable(&self.ids, self.options, &self.cancel))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(output.into())
    }
}

pub struct TokenizeTask {
    model: Arc<LoadedModel>,
    text: String,
    add_special_tokens: bool,
}

impl Task for TokenizeTask {
    type Output = Vec<u32>;
    type JsValue = Vec<u32>;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guarded(|| self.model.tokenize(&self.text, self.add_special_tokens))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(output)
    }
}

#[napi]
impl RawModel {
    #[napi]
    pub fn info(&self) -> napi::Result<RawModelInfo> {
        let model = self.model()?;
        guarded(|| Ok(model.info().into()))
    }

    /// Text → ids on a libuv worker (a tokenizer's normalizers can be slow on long text).
    #[napi(ts_return_type = "Promise<number[]>")]
    pub fn tokenize(&self, text: String, add_special_tokens: bool) -> napi::Result<AsyncTask<TokenizeTask>> {
        let model = self.model()?;
        Ok(AsyncTask::new(TokenizeTask { model, text, add_special_tokens }))
    }

    /// Total bytes of the snapshot whose header is `head` (its first `snapshotHeaderBytes`), if this
    /// model can continue it; the core decides.
    #[napi]
    pub fn snapshot_length(&self, head: Uint8Array) -> napi::Result<f64> {
        let model = self.model()?;
        guarded(|| model.snapshot_length(&head).map(|n| n as f64))
    }

    #[napi]
    pub fn detokenize(&self, ids: Vec<f64>, skip_special_tokens: bool) -> napi::Result<String> {
        let model = self.model()?;
        guarded(|| model.detokenize(&js_numbers::ids_from_numbers("detokenize", &ids)?, skip_special_tokens))
    }

    /// Logits for every position (`ids.length * vocabSize`, row-major), computed off the JS thread.
    #[napi(ts_return_type = "Promise<Float32Array>")]
    pub fn logits(&self, ids: Vec<f64>) -> napi::Result<AsyncTask<LogitsTask>> {
        let model = self.model()?;
        let ids = guarded(|| js_numbers::ids_from_numbers("logits", &ids))?;
        Ok(AsyncTask::new(LogitsTask { model, ids }))
    }

    /// Per-token log-probs, log-likelihood, perplexity (and logits when asked), off the JS thread;
    /// `E_ABORTED` once `cancel` is cancelled (checked between the layers of each prefill piece).
    #[napi(ts_return_type = "Promise<RawScore>")]
    pub fn score(
        &self,
        ids: Vec<f64>,
        options: Option<RawScoreOptions>,
        cancel: Option<&CancelFlag>,
    ) -> napi::Result<AsyncTask<ScoreTask>> {
        let model = self.model()?;
        let ids = guarded(|| js_numbers::ids_from_numbers("score", &ids))?;
        let options = options.map_or_else(ScoreOptions::default, ScoreOptions::from);
        let cancel = cancel.map_or_else(Default::default, |c| Arc::clone(&c.flag));
        Ok(AsyncTask::new(ScoreTask { model, ids, options, cancel }))
    }

    /// Starts a generation (cheap: the prefill runs in the first `next()`).
    #[napi]
    pub fn generate(
        &self,
        prompt: RawPrompt,
        options: RawGenerateOptions,
        state: Option<Uint8Array>,
    ) -> napi::Result<RawGeneration> {
        let model = self.model()?;
        let generation = guarded(|| {
            let prompt = Prompt::from_parts(
                prompt.text,
                prompt.ids.map(|ids| js_numbers::ids_from_numbers("prompt.ids", &ids)).transpose()?,
            )?;
            model.generate_raw(prompt, &options.into(), state.as_deref())
        })?;
        Ok(RawGeneration::new(generation))
    }

    /// `messages` rendered with the model's chat template, with the ids that end the assistant's turn.
    #[napi]
    pub fn render_chat(
        &self,
        messages: Vec<RawChatMessage>,
        add_generation_prompt: bool,
    ) -> napi::Result<RawChatPrompt> {
        let model = self.model()?;
        let messages: Vec<_> = messages.into_iter().map(Into::into).collect();
        guarded(|| model.chat_prompt(&messages, add_generation_prompt).map(Into::into))
    }

    /// Starts the assistant's reply to `messages`: the template renders here (bounded), the prefill
    /// runs in the first `next()`.
    #[napi]
    pub fn generate_chat(
        &self,
        messages: Vec<RawChatMessage>,
        options: RawGenerateOptions,
        state: Option<Uint8Array>,
    ) -> napi::Result<RawGeneration> {
        let model = self.model()?;
        let messages: Vec<_> = messages.into_iter().map(Into::into).collect();
        let generation = guarded(|| model.generate_chat_raw(&messages, &options.into(), state.as_deref()))?;
        Ok(RawGeneration::new(generation))
    }

    #[napi]
    pub fn dispose(&self) {
        self.inner.borrow_mut().take();
    }
}

// ------------------------------------------------------------------------------------ RawGeneration

/// One running generation. `next()` steps run on libuv workers; await each before the next call
/// (a step holds the generation's lock, so `exportState` / `stats` / `tokenIds` wait for it).
///
/// Its model state (a transformer's KV cache: tens of MB per long prompt) lives until `dispose()` or
/// until V8 collects the handle; the bytes are reported to V8 as external memory after each step, so
/// its collector counts them instead of letting finished generations' caches accumulate.
#[napi(custom_finalize)]
pub struct RawGeneration {
    inner: Arc<Mutex<Generation>>,
    cancel: Arc<AtomicBool>,
    dispose: DisposeHandle,
    memory: Arc<ReportedMemory>,
}

/// What this handle has told V8 it holds; `finalized` once the handle was collected (a step still
/// resolving then reports nothing more).
#[derive(Default)]
struct ReportedMemory {
    bytes: AtomicI64,
    finalized: AtomicBool,
}

impl ReportedMemory {
    /// Brings V8's external-memory count to the generation's state size now. Runs on the JS thread;
    /// skipped while a step holds the lock (the next resolve catches up).
    fn update(&self, env: &Env, generation: &Mutex<Generation>) -> napi::Result<()> {
        if self.finalized.load(Ordering::Relaxed) {
            return Ok(());
        }
        let Ok(g) = generation.try_lock() else { return Ok(()) };
        let now = i64::try_from(g.state_bytes()).unwrap_or(i64::MAX);
        drop(g);
        let delta = now - self.bytes.swap(now, Ordering::Relaxed);
        if delta != 0 {
            env.adjust_external_memory(delta)?;
        }
        Ok(())
    }
}

impl RawGeneration {
    fn new(generation: Generation) -> Self {
        Self {
            cancel: generation.cancel_handle(),
            dispose: generation.dispose_handle(),
            inner: Arc::new(Mutex::new(generation)),
            memory: Arc::new(ReportedMemory::default()),
        }
    }
}

impl ObjectFinalize for RawGeneration {
    fn finalize(self, env: Env) -> napi::Result<()> {
        self.memory.finalized.store(true, Ordering::Relaxed);
        let held = self.memory.bytes.swap(0, Ordering::Relaxed);
        if held != 0 {
            env.adjust_external_memory(-held)?;
        }
        Ok(())
    }
}

fn lock(generation: &Mutex<Generation>) -> phoenix_core::Result<MutexGuard<'_, Generation>> {
    generation.lock().map_err(|_| handles::unusable_generation())
}

pub struct NextTask {
    generation: Arc<Mutex<Generation>>,
    memory: Arc<ReportedMemory>,
}

impl Task for NextTask {
    type Output = Option<Step>;
    type JsValue = Option<RawStep>;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guarded(|| lock(&self.generation)?.next_step())
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        self.memory.update(&env, &self.generation)?;
        Ok(output.map(RawStep::from))
    }
}

#[napi]
impl RawGeneration {
    /// The prefill on the first call, then one decode step per call; `null` once finished.
    #[napi(ts_return_type = "Promise<RawStep | null>")]
    pub fn next(&self) -> AsyncTask<NextTask> {
        AsyncTask::new(NextTask { generation: Arc::clone(&self.inner), memory: Arc::clone(&self.memory) })
    }

    /// Ends the generation: a running prefill stops between two layers, a decode step at its end (that
    /// step reports finishReason `abort`).
    /// Never blocks, even while a step runs.
    #[napi]
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Frees the generation's state now; while a step runs on a worker, that step is cancelled and
    /// the state freed as it ends. Never blocks.
    #[napi]
    pub fn dispose(&self, env: Env) -> napi::Result<()> {
        self.dispose.request();
        if let Ok(mut g) = self.inner.try_lock() {
            g.dispose_if_requested();
        }
        self.memory.update(&env, &self.inner)
    }

    #[napi]
    pub fn export_state(&self, env: Env) -> napi::Result<Uint8Array> {
        // An export runs a pending prefill: the state may have grown.
        let bytes = guarded(|| lock(&self.inner)?.export_state())?;
        self.memory.update(&env, &self.inner)?;
        Ok(Uint8Array::new(bytes))
    }

    #[napi]
    pub fn stats(&self) -> napi::Result<RawGenerationStats> {
        guarded(|| Ok(lock(&self.inner)?.stats().into()))
    }

    #[napi]
    pub fn token_ids(&self) -> napi::Result<Vec<u32>> {
        guarded(|| Ok(lock(&self.inner)?.token_ids().to_vec()))
    }
}

/// Test hook (feature `test-hooks` only): panics inside a core-call wrapper, to check that a panic
/// reaches JS as `[E_INTERNAL] …` instead of unwinding into Node.
#[cfg(feature = "test-hooks")]
#[napi]
pub fn debug_panic() -> napi::Result<()> {
    guarded(|| -> phoenix_core::Result<()> { panic!("debug panic") })
}
