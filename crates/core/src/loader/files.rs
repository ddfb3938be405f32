//! Where a model's files come from: a folder on disk (memory-mapped) or in-memory bytes (WASM, tests).
//! Everything above this module only asks for a file by its name inside the model folder.

use std::collections::HashMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{model_not_found, Result};

/// The bytes of one file, either memory-mapped or owned.
pub enum FileBytes {
    #[cfg(not(target_arch = "wasm32"))]
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

enum Source {
    Dir(PathBuf),
    /// In-memory files and, when known, where they were read from (a folder path or base URL).
    Memory {
        files: HashMap<String, Arc<FileBytes>>,
        root: Option<String>,
    },
}

/// A model folder's files, addressed by name (`config.json`, `model.safetensors`, …).
pub struct ModelFiles {
    source: Source,
}

impl ModelFiles {
    /// A folder on disk. A missing path or a path that is not a folder gives `E_MODEL_NOT_FOUND`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        if !dir.exists() {
            return Err(model_not_found(format!("model folder {} does not exist", dir.display())));
        }
        if !dir.is_dir() {
            return Err(model_not_found(format!("model path {} is not a folder", dir.display())));
        }
        Ok(Self { source: Source::Dir(dir.to_path_buf()) })
    }

    /// Files already in memory, as `(name, bytes)` pairs (names as they would be inside the folder).
    pub fn from_memory(files: Vec<(String, Vec<u8>)>) -> Self {
        Self::from_memory_named(None, files)
    }

    /// Like [`Self::from_memory`], with the folder path or base URL the files were read from, so
    /// messages name `<root>/config.json` rather than a bare file name.
    pub fn from_memory_named(root: Option<String>, files: Vec<(String, Vec<u8>)>) -> Self {
        let files = files.into_iter().map(|(name, bytes)| (name, Arc::new(FileBytes::Owned(bytes)))).collect();
        Self { source: Source::Memory { files, root: root.filter(|r| !r.is_empty()) } }
    }

    /// How to name `file` in messages: its full path for folders, its name otherwise.
    pub fn describe(&self, file: &str) -> String {
        match &self.source {
            Source::Dir(dir) => dir.join(file).display().to_string(),
            Source::Memory { root: Some(root), .. } => in_root(root, file),
            Source::Memory { root: None, .. } => file.to_string(),
        }
    }

    /// How to name the whole model in messages.
    pub fn describe_root(&self) -> String {
        match &self.source {
            Source::Dir(dir) => dir.display().to_string(),
            Source::Memory { root: Some(root), .. } => root.clone(),
            Source::Memory { root: None, .. } => "<in-memory model files>".to_string(),
        }
    }

    pub fn has(&self, file: &str) -> bool {
        match &self.source {
            Source::Dir(dir) => dir.join(file).is_file(),
            Source::Memory { files, .. } => files.contains_key(file),
        }
    }

    /// The bytes of `file` (memory-mapped for folders). Missing file gives `E_MODEL_NOT_FOUND`.
    pub fn bytes(&self, file: &str) -> Result<Arc<FileBytes>> {
        match &self.source {
            Source::Memory { files, .. } => files
                .get(file)
                .cloned()
                .ok_or_else(|| model_not_found(format!("{} is missing from the model files", self.describe(file)))),
            Source::Dir(dir) => {
                let path = dir.join(file);
                let f = std::fs::File::open(&path)
                    .map_err(|e| model_not_found(format!("cannot open {}: {e}", path.display())))?;
                #[cfg(not(target_arch = "wasm32"))]
                {
                    // SAFETY: the mapping is read-only; model files are not expected to change while
                    // loaded (the same assumption every mmap-based loader, candle's included, makes).
                    let map = unsafe { memmap2::Mmap::map(&f) }
                        .map_err(|e| model_not_found(format!("cannot map {}: {e}", path.display())))?;
                    Ok(Arc::new(FileBytes::Mapped(map)))
                }
                #[cfg(target_arch = "wasm32")]
                {
                    use std::io::Read;
                    let mut v = Vec::new();
                    let mut f = f;
                    f.read_to_end(&mut v)
                        .map_err(|e| model_not_found(format!("cannot read {}: {e}", path.display())))?;
                    Ok(Arc::new(FileBytes::Owned(v)))
                }
            }
        }
    }

    /// `file` as UTF-8 text.
    pub fn text(&self, file: &str) -> Result<String> {
        let bytes = self.bytes(file)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| crate::error::bad_config(format!("{} is not valid UTF-8", self.describe(file))))
    }
}

/// `file` named inside `root`, a folder path or base URL given as text (with or without a final `/`).
pub(crate) fn in_root(root: &str, file: &str) -> String {
    if root.is_empty() {
        file.to_string()
    } else if root.ends_with('/') {
        format!("{root}{file}")
    } else {
        format!("{root}/{file}")
    }
}
