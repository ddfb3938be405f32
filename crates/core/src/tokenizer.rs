//! Text ⇄ token ids, wrapping the Hugging Face `tokenizers` crate (pure-Rust regex, no network).
//!
//! Loads from a model folder's `tokenizer.json` or from its bytes (the WASM build has no files).
//! Streaming text output lives in [`crate::generate::detokenize`]; this module only does whole-sequence
//! encode / decode. Normalisation is bounded: see [`expansion`].

mod expansion;
mod gguf;

use std::path::Path;

pub use expansion::{Expansion, MAX_FACTOR as MAX_NORMALIZER_GROWTH, MAX_NORMALIZED_BYTES};
pub use gguf::{gguf_special_tokens, tokenizer_from_gguf, GgufSpecialTokens};

use crate::error::{tokenizer_error, ErrorCode, Result};
use crate::loader::files::{read_regular_file, TOKENIZER_FILE_CAP};
use crate::loader::shown::json_problem;
use crate::loader::ModelFiles;

/// The file name looked for inside a model folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// A loaded `tokenizer.json`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// One past the largest id the tokenizer knows (base vocabulary and added tokens); ids at or
    /// above it have no text, e.g. the padded rows of an embedding matrix.
    id_limit: usize,
    /// Worst-case growth of a text through the normalizers (checked before every encode).
    expansion: Expansion,
    /// Where it came from, for error messages (`…/tokenizer.json` or `<bytes>`).
    source: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("source", &self.source).field("id_limit", &self.id_limit).finish()
    }
}

impl Tokenizer {
    /// Reads `path` (a `tokenizer.json`). Missing, unreadable or malformed → `E_TOKENIZER` naming the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        let bytes = read_regular_file(path, TOKENIZER_FILE_CAP, ErrorCode::Tokenizer)
            .map_err(|e| tokenizer_error(format!("cannot read tokenizer: {}", e.message)))?;
        Self::from_bytes_named(&bytes, shown)
    }

    /// Parses the contents of a `tokenizer.json` held in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::from_bytes_named(bytes, "<tokenizer.json bytes>".to_string())
    }

    /// Like [`Tokenizer::from_bytes`], with the name errors should show.
    pub fn from_bytes_named(bytes: &[u8], source: String) -> Result<Self> {
        // The parser's own message can quote the file; say where and what kind of problem instead.
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| {
            let why = e.downcast_ref::<serde_json::Error>().map(json_problem).unwrap_or_else(|| "unreadable".into());
            tokenizer_error(format!("{source}: not a valid tokenizer.json: {why}"))
        })?;
        Self::from_built(inner, source)
    }

    /// Wraps a tokenizer built in code (from a GGUF header) with the same checks as a parsed one.
    fn from_built(inner: tokenizers::Tokenizer, source: String) -> Result<Self> {
        let id_limit = inner.get_vocab(true).values().map(|&id| id as usize + 1).max().unwrap_or(0);
        if id_limit == 0 {
            return Err(tokenizer_error(format!("{source}: the tokenizer has an empty vocabulary")));
        }
        let expansion = normalizer_expansion(&inner, &source)?;
        Ok(Self { inner, id_limit, expansion, source })
    }

    /// One past the largest token id this tokenizer can produce or decode.
    pub fn id_limit(&self) -> usize {
        self.id_limit
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Encodes `text`; with `add_special_tokens` the post-processor adds its tokens (e.g. a BOS id).
    /// A text whose worst-case normalised length exceeds [`MAX_NORMALIZED_BYTES`] → `E_TOKENIZER`
    /// (checked before the normalizers run, so a hostile normalizer chain cannot exhaust memory).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let limit = self.expansion.max_input_bytes();
        if text.len() > limit {
            return Err(tokenizer_error(format!(
                "{}: a text of {} bytes is too long to tokenize: this tokenizer's normalizers may grow it {}x (+{} bytes per piece between added tokens), and at most {MAX_NORMALIZED_BYTES} normalised bytes are allowed ({limit} bytes of text)",
                self.source,
                text.len(),
                self.expansion.factor,
                self.expansion.extra
            )));
        }
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| tokenizer_error(format!("{}: cannot encode text: {e}", self.source)))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Decodes `ids` to text; ids the tokenizer does not know decode to nothing (as in `tokenizers`).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| tokenizer_error(format!("{}: cannot decode ids: {e}", self.source)))
    }

    /// Whether `id` is an added token marked special (`<|im_end|>`, `<|eot_id|>`): the kind chat
    /// templates end turns with.
    pub fn is_special(&self, id: u32) -> bool {
        self.inner.get_added_tokens_decoder().get(&id).is_some_and(|t| t.special)
    }

    /// The id of a token string (`<|endoftext|>` → 0), if the tokenizer has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

/// The normalizers' worst-case growth; unbounded or beyond [`MAX_NORMALIZER_GROWTH`] → `E_TOKENIZER`.
fn normalizer_expansion(inner: &tokenizers::Tokenizer, source: &str) -> Result<Expansion> {
    let refuse = |why: String| tokenizer_error(format!("{source}: normalizer refused: {why}"));
    let normalizer = serde_json::to_value(inner.get_normalizer()).map_err(|e| refuse(e.to_string()))?;
    let expansion = expansion::of_normalizer(&normalizer).map_err(refuse)?;
    // `per_byte`, not `factor`: a long `Prepend` is paid again for every piece between added tokens.
    let growth = expansion.per_byte();
    if growth.is_nan() || growth > MAX_NORMALIZER_GROWTH {
        return Err(refuse(format!(
            "its steps may grow a text {}x (+{} bytes per piece between added tokens), more than the {MAX_NORMALIZER_GROWTH}x allowed (a chain of expanding `Replace` steps or an oversized replacement or prepended text)",
            expansion.factor, expansion.extra
        )));
    }
    Ok(expansion)
}

/// Loads `tokenizer.json` from `files` if it is there. Absent → `Ok(None)`; present but broken →
/// `E_TOKENIZER` naming the file.
pub fn load_optional(files: &ModelFiles) -> Result<Option<Tokenizer>> {
    if files.gguf_file()?.is_some() {
        let gguf = crate::loader::GgufFile::open_model(files)?;
        return crate::loader::gguf::gguf_tokenizer(files, &gguf).map(Some);
    }
    if !files.has(TOKENIZER_FILE) {
        return Ok(None);
    }
    let shown = files.describe(TOKENIZER_FILE);
    let bytes = files
        .read_capped(TOKENIZER_FILE, TOKENIZER_FILE_CAP)
        .map_err(|e| tokenizer_error(format!("{shown}: cannot read tokenizer: {}", e.message)))?;
    Tokenizer::from_bytes_named(&bytes, shown).map(Some)
}
