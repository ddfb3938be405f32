//! A loaded model ready to serve requests: weights + optional tokenizer, scoring (`logits`, `score`) and
//! stepwise generation with exportable state. Bindings wrap exactly this; they add no logic.

mod finite;
mod generation;
mod score;

pub mod handles;
pub mod js_numbers;
pub mod runtime;
pub mod snapshot;

use std::path::Path;
use std::sync::Arc;

pub use generation::{DisposeHandle, Generation, GenerationStats};
pub use runtime::{build_info, set_threads, BuildInfo, MAX_THREADS};
pub use score::{Score, ScoreOptions};

use crate::chat::{self, ChatMessage, ChatPrompt, ChatTemplate};
use crate::error::{invalid_option, state_mismatch, tokenizer_error, PhoenixError, Result};
use crate::generate::{GenerateOptions, RawGenerateOptions};
use crate::loader::ModelFiles;
use crate::memory_budget::ReleaseOnDrop;
use crate::model::{LanguageModel, LoadOptions, LogitsWanted, ModelInfo};
use crate::tokenizer::{self, Tokenizer};

/// Most logits one `logits` call returns (2^28 f32 = 1 GiB).
pub const MAX_LOGITS_VALUES: usize = 1 << 28;

/// What a generation starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Tokenized with the model's tokenizer (special tokens per `GenerateOptions::add_special_tokens`).
    Text(String),
    Ids(Vec<u32>),
}

impl Prompt {
    /// From the binding's `{ text?, ids? }`: both given is an error, neither is an empty prompt.
    pub fn from_parts(text: Option<String>, ids: Option<Vec<u32>>) -> Result<Self> {
        match (text, ids) {
            (Some(_), Some(_)) => Err(invalid_option("prompt: give either `text` or `ids`, not both")),
            (Some(text), None) => Ok(Prompt::Text(text)),
            (None, ids) => Ok(Prompt::Ids(ids.unwrap_or_default())),
        }
    }
}

/// `info()` of a loaded model: the architecture facts plus whether text in/out is available.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadedModelInfo {
    #[serde(flatten)]
    pub model: ModelInfo,
    pub has_tokenizer: bool,
    /// Whether the model has a chat template (`chat` needs one).
    pub has_chat_template: bool,
    /// Bytes of a snapshot's fixed header: what [`LoadedModel::snapshot_length`] needs to read.
    pub snapshot_header_bytes: usize,
}

/// A model with its tokenizer. Share it as `Arc<LoadedModel>`: every [`Generation`] holds a clone,
/// so the weights are freed when the last owner (handle or running generation) drops it.
pub struct LoadedModel {
    model: Box<dyn LanguageModel>,
    tokenizer: Option<Arc<Tokenizer>>,
    chat: ChatSupport,
    fingerprint: u64,
    /// Last: purges the allocator once the weights above are freed (an unloaded model's memory goes
    /// back to the OS, not only to the allocator).
    _release: ReleaseOnDrop,
}

/// The model's chat template, or why it has none. A broken template never fails the load (plain
/// generation does not need it): `chat` reports the stored error.
enum ChatSupport {
    Absent,
    Broken(PhoenixError),
    /// `end_of_turn` is worked out on the first chat, not at load: it renders the template, and a
    /// template is file content, so loading a model (to list, describe or complete text) never runs it.
    Ready {
        template: ChatTemplate,
        end_of_turn: std::sync::OnceLock<Vec<u32>>,
    },
}

impl LoadedModel {
    /// Loads a model folder: weights and config via [`crate::models::load_model_dir`], plus
    /// `tokenizer.json` if present (absent → no text I/O; present but broken → `E_TOKENIZER`).
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with(dir, &LoadOptions::default())
    }

    /// [`Self::load`] with load options (the KV cache's dtype).
    pub fn load_with(dir: &Path, options: &LoadOptions) -> Result<Self> {
        let files = ModelFiles::from_dir(dir)?;
        Self::from_files_with(&if options.use_mmap { files } else { files.read_not_mapped() }, options)
    }

    /// Loads from any file source (a folder, or files in memory as the WASM glue has them).
    pub fn from_files(files: &ModelFiles) -> Result<Self> {
        Self::from_files_with(files, &LoadOptions::default())
    }

    /// [`Self::from_files`] with load options.
    pub fn from_files_with(files: &ModelFiles, options: &LoadOptions) -> Result<Self> {
        let model = crate::models::load_model_files_with(files, options)?;
        let tokenizer = tokenizer::load_optional(files)?;
        let template = chat::load_optional(files);
        Ok(Self::new(model, tokenizer)?.with_chat_template(template))
    }

    /// Attaches the model's chat template: `Ok(Some(_))` e.g. from [`ChatTemplate::new`] over GGUF
    /// metadata, `Ok(None)` when the model has none, `Err(_)` when it has a broken one — the load
    /// still succeeds and `chat` reports that error. The ids that end the assistant's turn are
    /// worked out, with the tokenizer, on the first chat.
    pub fn with_chat_template(self, template: Result<Option<ChatTemplate>>) -> Self {
        let chat = match template {
            Err(e) => ChatSupport::Broken(e),
            Ok(None) => ChatSupport::Absent,
            Ok(Some(template)) => ChatSupport::Ready { template, end_of_turn: Default::default() },
        };
        Self { chat, ..self }
    }

    /// Assembles a loaded model from parts (e.g. loaded from in-memory bytes by the WASM glue).
    /// A tokenizer with more ids than the model has rows → `E_TOKENIZER`.
    pub fn new(model: Box<dyn LanguageModel>, tokenizer: Option<Tokenizer>) -> Result<Self> {
        let vocab = model.info().vocab_size;
        if let Some(t) = &tokenizer {
            if t.id_limit() > vocab {
                return Err(tokenizer_error(format!(
                    "{}: the tokenizer has ids up to {} but the model's vocabulary has only {vocab} rows",
                    t.source(),
                    t.id_limit() - 1
                )));
            }
        }
        let fingerprint = fingerprint(model.info());
        Ok(Self {
            model,
            tokenizer: tokenizer.map(Arc::new),
            chat: ChatSupport::Absent,
            fingerprint,
            _release: ReleaseOnDrop,
        })
    }

    pub fn info(&self) -> LoadedModelInfo {
        LoadedModelInfo {
            model: self.model.info().clone(),
            has_tokenizer: self.tokenizer.is_some(),
            has_chat_template: matches!(self.chat, ChatSupport::Ready { .. }),
            snapshot_header_bytes: snapshot::HEADER_BYTES,
        }
    }

    pub fn model_info(&self) -> &ModelInfo {
        self.model.info()
    }

    pub fn model(&self) -> &dyn LanguageModel {
        self.model.as_ref()
    }

    pub fn tokenizer(&self) -> Option<&Arc<Tokenizer>> {
        self.tokenizer.as_ref()
    }

    /// Identifies the model *shape* (family, sizes, state layout) that exported states depend on.
    /// The same weights loaded from another format (HF safetensors vs state-spaces `.bin`) agree.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Identifies the weight values ([`crate::weights_identity`]); snapshots carry it.
    pub fn weights_identity(&self) -> u64 {
        self.model.weights_identity()
    }

    /// The exact byte length of the snapshot whose first [`snapshot::HEADER_BYTES`] bytes are `head`,
    /// if this model can continue it: the header must be well formed, from this model (shape and
    /// weights) and announce this model's state size. Lets a reader read exactly that many bytes of
    /// a state file, never more. Anything else → `E_STATE_MISMATCH`.
    pub fn snapshot_length(&self, head: &[u8]) -> Result<usize> {
        let header = snapshot::parse_header(head)?;
        self.check_snapshot_origin(header.fingerprint, header.weights_identity, &header.layout)?;
        self.check_state_len(&header.layout, header.state_len)?;
        Ok(header.total_len())
    }

    /// The model state of a snapshot must be one this model can continue (family, dtype, dims) and
    /// hold exactly the bytes that layout and token count take → `E_STATE_MISMATCH` otherwise.
    pub(crate) fn check_state_len(&self, layout: &crate::model::StateLayout, state_len: usize) -> Result<()> {
        let expected =
            self.model.state_bytes_for(layout).map_err(|e| state_mismatch(format!("state: {}", e.message)))?;
        if state_len != expected {
            return Err(state_mismatch(format!(
                "state: the snapshot holds a {state_len}-byte model state, this model's is {expected} bytes for {} tokens",
                layout.tokens
            )));
        }
        Ok(())
    }

    /// A snapshot saved from another model shape or other weights, or with another KV cache dtype
    /// (the `kvCache` load option) → `E_STATE_MISMATCH`.
    pub(crate) fn check_snapshot_origin(
        &self,
        fingerprint: u64,
        weights_identity: u64,
        layout: &crate::model::StateLayout,
    ) -> Result<()> {
        let info = self.model.info();
        let own = self.model.new_state()?.layout();
        // Only a KV cache's dtype is chosen at load; any other difference is the layout check's.
        let kv_cache = info.state_bytes_per_token > 0;
        if kv_cache && (&own.family, &own.dims) == (&layout.family, &layout.dims) && own.dtype != layout.dtype {
            return Err(state_mismatch(format!(
                "state: the snapshot's state is {}, this model's is {} (saved with another `kvCache` load option, or not by this model)",
                layout.dtype, own.dtype
            )));
        }
        if fingerprint != self.fingerprint {
            return Err(state_mismatch(format!(
                "state: saved from a different model (fingerprint {fingerprint:016x}, this model {:016x}: {} with {} layers, hidden {})",
                self.fingerprint, info.model_type, info.num_layers, info.hidden_size
            )));
        }
        if weights_identity != self.weights_identity() {
            return Err(state_mismatch(format!(
                "state: saved from a model of the same shape but other weights (weights identity {weights_identity:016x}, this model {:016x})",
                self.weights_identity()
            )));
        }
        Ok(())
    }

    pub fn tokenize(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.require_tokenizer("tokenize")?.encode(text, add_special_tokens)
    }

    /// Ids outside the model's vocabulary → `E_INVALID_OPTION`.
    pub fn detokenize(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let tokenizer = self.require_tokenizer("detokenize")?;
        self.check_ids("ids", ids)?;
        tokenizer.decode(ids, skip_special_tokens)
    }

    /// Logits after every position of `ids` (fresh context): `ids.len() * vocab_size` floats, row-major.
    pub fn logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(invalid_option("logits: `ids` is empty"));
        }
        self.check_ids("ids", ids)?;
        let vocab = self.model.info().vocab_size;
        score::check_logits_budget("logits", ids.len(), vocab)?;
        let mut state = self.model.new_state()?;
        let logits = self.model.forward(ids, state.as_mut(), LogitsWanted::All)?;
        finite::check_rows(&logits, vocab, 0, ids.len())?;
        Ok(logits)
    }

    /// Starts a generation (nothing runs until its first [`Generation::next_step`]). With `state`
    /// (bytes from [`Generation::export_state`]), `prompt` continues that context and may be empty.
    pub fn generate(
        self: &Arc<Self>,
        prompt: Prompt,
        options: GenerateOptions,
        state: Option<&[u8]>,
    ) -> Result<Generation> {
        options.validate(self.model.info().vocab_size)?;
        Generation::start(Arc::clone(self), prompt, options, state)
    }

    /// [`LoadedModel::generate`] with options as a binding receives them.
    pub fn generate_raw(
        self: &Arc<Self>,
        prompt: Prompt,
        options: &RawGenerateOptions,
        state: Option<&[u8]>,
    ) -> Result<Generation> {
        let options = options.resolve(self.model.info().vocab_size)?;
        Generation::start(Arc::clone(self), prompt, options, state)
    }

    /// `messages` rendered with the model's chat template (the assistant's turn opened when
    /// `add_generation_prompt`), with the ids that end the assistant's turn: the template's
    /// end-of-turn token and the model's EOS ids. No template → `E_INVALID_OPTION` saying so.
    pub fn chat_prompt(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<ChatPrompt> {
        let (template, end_of_turn) = match &self.chat {
            ChatSupport::Ready { template, end_of_turn } => (template, end_of_turn),
            ChatSupport::Broken(e) => return Err(e.clone()),
            ChatSupport::Absent => {
                // Name where this model's template would have been.
                let looked = if self.model.info().format == "gguf" {
                    "no tokenizer.chat_template in its GGUF header".to_string()
                } else {
                    format!("none in {} or {}", chat::TOKENIZER_CONFIG_FILE, chat::CHAT_TEMPLATE_FILE)
                };
                return Err(invalid_option(format!(
                    "messages: this model has no chat template ({looked}); give a text prompt instead"
                )));
            }
        };
        if messages.is_empty() {
            return Err(invalid_option("messages: the conversation is empty"));
        }
        let text = template.render(messages, add_generation_prompt)?;
        let end_of_turn = end_of_turn.get_or_init(|| match &self.tokenizer {
            Some(t) => chat::end_of_turn_ids(template, t),
            None => Vec::new(),
        });
        let mut stop_token_ids = end_of_turn.clone();
        for &id in &self.model.info().eos_token_ids {
            if !stop_token_ids.contains(&id) {
                stop_token_ids.push(id);
            }
        }
        Ok(ChatPrompt { text, stop_token_ids })
    }

    /// Starts the assistant's reply to `messages`: the rendered conversation is the prompt (tokenized
    /// without adding special tokens unless `addSpecialTokens` says so: the template wrote them), and
    /// the generation also stops at the template's end-of-turn token, whose text is not returned.
    ///
    /// With `state` (a snapshot exported after an earlier turn, e.g. the previous reply's), the
    /// conversation's tokens that the state's history already holds are not fed again: only the rest
    /// is (the next turn's, typically), when the rendered conversation begins with that history.
    /// When it does not (an earlier message was changed, or the state is another conversation's), a
    /// KV cache keeps the start both share and the rest is fed; a recurrent state cannot forget
    /// tokens, so the whole conversation is fed from a fresh state (`restoredTokens` 0 in the stats). A state of another
    /// model or shape is still `E_STATE_MISMATCH`.
    pub fn generate_chat_raw(
        self: &Arc<Self>,
        messages: &[ChatMessage],
        options: &RawGenerateOptions,
        state: Option<&[u8]>,
    ) -> Result<Generation> {
        let mut options = options.resolve(self.model.info().vocab_size)?;
        let prompt = self.chat_prompt(messages, true)?;
        for id in prompt.stop_token_ids {
            if !options.stop_token_ids.contains(&id) {
                options.stop_token_ids.push(id);
            }
        }
        options.add_special_tokens = Some(options.add_special_tokens.unwrap_or(false));
        let prompt = Prompt::Text(prompt.text);
        Generation::start_scoped(Arc::clone(self), prompt, options, state, generation::PromptScope::Whole)
    }

    fn require_tokenizer(&self, what: &str) -> Result<&Arc<Tokenizer>> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| tokenizer_error(format!("{what}: this model folder has no {}", tokenizer::TOKENIZER_FILE)))
    }

    fn check_ids(&self, what: &str, ids: &[u32]) -> Result<()> {
        let vocab = self.model.info().vocab_size;
        match ids.iter().find(|&&id| id as usize >= vocab) {
            Some(bad) => {
                Err(invalid_option(format!("{what}: token id {bad} is outside the vocabulary (size {vocab})")))
            }
            None => Ok(()),
        }
    }
}

/// FNV-1a over the shape facts, so the value is the same on every platform and Rust version.
fn fingerprint(info: &ModelInfo) -> u64 {
    // `architecture` is a sorted map: its JSON is the same on every platform. `kvCacheDtype` is left
    // out so f32-cache fingerprints stay those of the builds before the option; an f16 cache still
    // changes `per_token`, but `check_snapshot_origin` names that mismatch before comparing these.
    let mut architecture = info.architecture.clone();
    architecture.remove("kvCacheDtype");
    let architecture = serde_json::to_string(&architecture).unwrap_or_default();
    let shape = format!(
        "{}|{}|vocab={}|hidden={}|layers={}|params={}|state_bytes={}|per_token={}|{architecture}",
        info.family,
        info.model_type,
        info.vocab_size,
        info.hidden_size,
        info.num_layers,
        info.param_count,
        info.state_bytes,
        info.state_bytes_per_token,
    );
    shape.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}
