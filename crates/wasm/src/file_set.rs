//! `ModelFileSet`: a model's files being copied into WASM memory, whole or chunk by chunk. Chunks let
//! the JS side stream a multi-hundred-MB checkpoint from disk / the network straight into the buffer
//! the core will keep, instead of holding a full JS copy next to the WASM one. Which files to read is
//! the core's decision (`loader::read_plan`), asked through `filesToRead`.
//!
//! The same set describes a model without its weights (`describe`): the reader then adds only the
//! files the core's describe reads (`describeReads`) and reports the others it found (`found`).
//!
//! A GGUF model is one file: named by the caller (`modelFile`, a path to a `.gguf` file), or the one
//! `.gguf` among the names a reader lists (`listing`); the core picks it and plans its reads.

use js_sys::Uint8Array;
use phoenix_core::describe;
use phoenix_core::error::{invalid_option, unsupported_model, Result};
use phoenix_core::loader::read_plan::{self, ReadProgress};
use phoenix_core::loader::{FileRefusal, ModelFiles, SAFETENSORS_INDEX_FILE};
use phoenix_core::session::LoadedModel;
use wasm_bindgen::prelude::*;

use crate::{convert, guarded, RawModel};

/// One file: its bytes so far and the size announced by `begin`.
struct File {
    name: String,
    bytes: Vec<u8>,
    size: usize,
    /// Found by the reader but not read (`found`): enough to describe, not to load.
    unread: bool,
}

#[wasm_bindgen]
pub struct ModelFileSet {
    files: Vec<File>,
    /// Files the reader found but would not read (see `refuse`).
    refused: Vec<(String, FileRefusal)>,
    /// Folder path or base URL the files come from, for messages.
    root: Option<String>,
    /// The file the caller named as the model (`modelFile`).
    named: Option<String>,
    /// Every file name the source holds, when its reader can list them (`listing`).
    listed: Option<Vec<String>>,
}

impl ModelFileSet {
    /// The GGUF file that is the model, if any (the core's choice from what the caller said).
    fn gguf(&self) -> Result<Option<String>> {
        read_plan::model_gguf(self.named.as_deref(), self.listed.as_deref(), self.root.as_deref().unwrap_or_default())
    }

    /// Whether the model file `gguf` shares its folder with other `.gguf` files (the reader listed it).
    fn shares_folder(&self, gguf: Option<&str>) -> bool {
        gguf.is_some_and(|g| read_plan::gguf_shares_folder(g, self.listed.as_deref()))
    }

    fn get(&self, name: &str) -> Option<&File> {
        self.files.iter().find(|f| f.name == name)
    }

    fn begin_file(&mut self, name: String, size: u64) -> Result<&mut File> {
        if self.get(&name).is_some() {
            return Err(invalid_option(format!("files: {name} was given twice")));
        }
        let mut bytes = Vec::new();
        // Reserve it all now: a file that cannot fit WASM's 4 GiB address space (a 5 GB checkpoint
        // too) fails here, as a typed error, instead of as an allocation trap halfway through the copy.
        let fits = usize::try_from(size).ok().filter(|&len| bytes.try_reserve_exact(len).is_ok());
        let Some(size) = fits else {
            return Err(unsupported_model(format!(
                "{name} ({size} bytes) does not fit in WASM memory: of its 4 GiB address space, {} bytes are taken \
                 (by the models loaded in this instance, and this model's files so far); dispose models or use the \
                 native backend",
                memory_in_use()
            )));
        };
        self.files.push(File { name, bytes, size, unread: false });
        Ok(self.files.last_mut().expect("just pushed"))
    }

    /// Takes the files and refusals out (the set is empty afterwards), refusing a file cut short
    /// and, unless `unread_ok`, one only looked for; `unread_ok` still requires the bytes of what
    /// describe reads.
    fn take_files(&mut self, unread_ok: bool) -> Result<ModelFiles> {
        let gguf = self.gguf()?;
        let files = std::mem::take(&mut self.files);
        let refused = std::mem::take(&mut self.refused);
        if let Some(short) = files.iter().find(|f| !f.unread && f.bytes.len() != f.size) {
            return Err(invalid_option(format!(
                "files: {} ended after {} of its {} bytes",
                short.name,
                short.bytes.len(),
                short.size
            )));
        }
        if let Some(unread) =
            files.iter().find(|f| f.unread && (!unread_ok || describe::describe_reads(&f.name, gguf.as_deref())))
        {
            return Err(invalid_option(format!(
                "files: {} was only found, not read; its bytes are needed",
                unread.name
            )));
        }
        let files = files.into_iter().map(|f| (f.name, f.bytes)).collect();
        let model = ModelFiles::from_memory_refusing(self.root.clone(), files, refused);
        let shares = self.shares_folder(gguf.as_deref());
        Ok(match gguf {
            Some(name) => model.with_gguf(name).sharing_folder(shares),
            None => model,
        })
    }
}

#[wasm_bindgen]
impl ModelFileSet {
    #[wasm_bindgen(constructor)]
    pub fn new(root: Option<String>) -> ModelFileSet {
        ModelFileSet {
            files: Vec::new(),
            refused: Vec::new(),
            root: root.filter(|r| !r.is_empty()),
            named: None,
            listed: None,
        }
    }

    /// Names the model: the source was a path / URL to this file inside `root` (the core accepts
    /// a `.gguf` file and refuses anything else as a native load of the same path does).
    #[wasm_bindgen(js_name = modelFile)]
    pub fn model_file(&mut self, name: String) -> std::result::Result<(), JsError> {
        guarded(|| {
            read_plan::model_gguf(Some(&name), None, self.root.as_deref().unwrap_or_default())?;
            self.named = Some(name);
            Ok(())
        })
    }

    /// Every file name the source holds (a folder's entries, a file map's keys), for a reader that
    /// can list them: a folder holding one `.gguf` and no `config.json` is that GGUF model.
    pub fn listing(&mut self, names: Vec<String>) {
        self.listed = Some(names);
    }

    /// Whether describing reads the bytes of `name` (else the reader only says it exists: `found`).
    #[wasm_bindgen(js_name = describeReads)]
    pub fn describe_reads(&self, name: &str) -> std::result::Result<bool, JsError> {
        guarded(|| Ok(describe::describe_reads(name, self.gguf()?.as_deref())))
    }

    /// Adds a whole file (copied into WASM memory).
    pub fn add(&mut self, name: String, bytes: &Uint8Array) -> std::result::Result<(), JsError> {
        guarded(|| {
            let file = self.begin_file(name, bytes.length() as u64)?;
            file.bytes.resize(file.size, 0);
            bytes.copy_to(&mut file.bytes);
            Ok(())
        })
    }

    /// Starts a file of `size` bytes whose contents follow through `append`.
    pub fn begin(&mut self, name: String, size: f64) -> std::result::Result<(), JsError> {
        guarded(|| {
            if !(size >= 0.0 && size.fract() == 0.0 && size <= MAX_SAFE_INTEGER) {
                return Err(invalid_option(format!("files: size of {name} must be a byte count, got {size}")));
            }
            self.begin_file(name, size as u64).map(|_| ())
        })
    }

    /// Appends the next chunk of the file begun last.
    pub fn append(&mut self, chunk: &Uint8Array) -> std::result::Result<(), JsError> {
        guarded(|| {
            let file = self.files.last_mut().ok_or_else(|| invalid_option("files: append before begin"))?;
            let (start, len) = (file.bytes.len(), chunk.length() as usize);
            if start + len > file.size {
                return Err(invalid_option(format!(
                    "files: {} is longer than the {} bytes announced",
                    file.name, file.size
                )));
            }
            file.bytes.resize(start + len, 0);
            chunk.copy_to(&mut file.bytes[start..]);
            Ok(())
        })
    }

    /// Records that the reader found `name` without reading it (describing needs only the bytes of
    /// `describeReads()`; a load refuses a set holding such a file).
    pub fn found(&mut self, name: String) -> std::result::Result<(), JsError> {
        guarded(|| {
            self.begin_file(name, 0)?.unread = true;
            Ok(())
        })
    }

    /// Records that the reader found `name` but refused to read it (`reason`: `not-regular`,
    /// `outside` or `dangling`); loading then fails on it as the native folder loader does.
    pub fn refuse(&mut self, name: String, reason: String) -> std::result::Result<(), JsError> {
        guarded(|| {
            let refusal = FileRefusal::parse(&reason)
                .ok_or_else(|| invalid_option(format!("files: unknown refusal {reason:?} for {name}")))?;
            self.refused.push((name, refusal));
            Ok(())
        })
    }

    /// The next file names to read (empty: done), given the ones found `absent`. The core decides
    /// the order and the weight container; an index's shards follow once the index is in the set.
    #[wasm_bindgen(js_name = filesToRead)]
    pub fn files_to_read(&self, absent: Vec<String>) -> std::result::Result<Vec<String>, JsError> {
        guarded(|| {
            let present: Vec<String> = self.files.iter().map(|f| f.name.clone()).collect();
            let refused: Vec<String> = self.refused.iter().map(|(n, _)| n.clone()).collect();
            let root = self.root.clone().unwrap_or_default();
            let index = self.get(SAFETENSORS_INDEX_FILE).map(|f| f.bytes.as_slice());
            let gguf = self.gguf()?;
            read_plan::files_to_read(&ReadProgress {
                present: &present,
                absent: &absent,
                refused: &refused,
                index,
                root: &root,
                gguf: gguf.as_deref(),
                gguf_shares_folder: self.shares_folder(gguf.as_deref()),
            })
        })
    }

    /// Loads the model from the files added so far; the set is empty afterwards (its buffers now
    /// belong to the model, no copy).
    /// `kv_cache`: the `kvCache` load option (`"f32"`, `"f16"`; absent: f32), checked by the core.
    pub fn load(&mut self, kv_cache: Option<String>) -> std::result::Result<RawModel, JsError> {
        let model = guarded(|| {
            // Files handed over are in memory already: `useMmap` means nothing here.
            let options = phoenix_core::LoadOptions::from_names(kv_cache.as_deref(), None)?;
            LoadedModel::from_files_with(&self.take_files(false)?, &options)
        })?;
        Ok(RawModel::new(model))
    }

    /// What the core would load from these files (`RawModelLayout` of types.ts), as
    /// `describeModel` of the native addon reports it for a folder; the set is empty afterwards.
    pub fn describe(&mut self) -> std::result::Result<JsValue, JsError> {
        guarded(|| convert::layout_to_js(&describe::describe(&self.take_files(true)?)?))
    }
}

/// Bytes of linear memory the instance has grown to (0 off wasm32, where this crate only runs tests).
fn memory_in_use() -> usize {
    #[cfg(target_arch = "wasm32")]
    {
        core::arch::wasm32::memory_size(0).saturating_mul(65_536)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}

/// JS's largest exact integer: sizes above it are not byte counts a reader could report.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;
