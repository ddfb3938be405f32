//! Where a model's files come from: a folder on disk (memory-mapped) or in-memory bytes (WASM, tests).
//! Everything above this module only asks for a file by its name inside the model folder.
//!
//! A model folder is untrusted, so every read here is guarded the same way:
//! - names are plain file names ([`plain_file_name`], the one rule for shard names too);
//! - a file must resolve (symlinks followed) inside the model folder or the folder holding it (the
//!   models dir), so a `config.json` linked to `/etc/passwd` is refused, not read;
//! - it is opened without blocking (a FIFO's open would wait for a writer) and checked with `fstat`
//!   on the opened descriptor: only regular files are read (no FIFO, device or folder);
//! - whole-file reads of metadata are capped ([`JSON_FILE_CAP`], [`TOKENIZER_FILE_CAP`]); weights are
//!   memory-mapped, so their size costs address space, not memory.

use std::collections::HashMap;
use std::io::Read;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::chat::{CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE};
use crate::config::CONFIG_FILE;
use crate::error::{model_not_found, ErrorCode, PhoenixError, Result};
use crate::tokenizer::TOKENIZER_FILE;

/// Largest `config.json` / `model.safetensors.index.json` read. Real ones are a few KB (an index of
/// a 70B checkpoint is under 100 KB); anything far bigger is not metadata.
pub const JSON_FILE_CAP: usize = 4 << 20;
/// Largest `tokenizer.json` read. Real ones reach ~20 MB (large multilingual vocabularies).
pub const TOKENIZER_FILE_CAP: usize = 64 << 20;

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

/// Why `name` is not a plain file name inside a folder, if it is not one: the one rule for every
/// name a model's files give (shards of an index) and every file the core opens.
pub fn plain_file_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        Err("it is empty")
    } else if name == "." || name == ".." {
        Err("it names a folder")
    } else if name.contains(['/', '\\']) {
        Err("it holds a path separator")
    } else if name.contains('\0') {
        Err("it holds a NUL character")
    } else if name.contains(':') {
        Err("it holds a drive or stream separator (`:`)")
    } else {
        Ok(())
    }
}

/// The code a problem with `file` (not its absence) is reported under: that of the file's role.
fn code_for(file: &str) -> ErrorCode {
    match file {
        // The chat template's files are configuration too (a bad template is E_BAD_CONFIG).
        CONFIG_FILE | TOKENIZER_CONFIG_FILE | CHAT_TEMPLATE_FILE => ErrorCode::BadConfig,
        TOKENIZER_FILE => ErrorCode::Tokenizer,
        _ => ErrorCode::BadWeights,
    }
}

fn problem(file: &str, message: String) -> PhoenixError {
    PhoenixError::new(code_for(file), message)
}

/// Why a model file is not read. A folder source finds these itself; a source without a file system
/// (WASM reading a folder through Node) is told them by its reader, and reports them with the same
/// code and message as the native loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRefusal {
    /// A FIFO, device, socket or folder where a file was expected.
    NotRegular,
    /// The file resolves (links followed) outside the model folder and the models dir.
    Outside,
    /// A link whose target does not exist.
    Dangling,
}

impl FileRefusal {
    /// A refusal from its wire name: `not-regular`, `outside` or `dangling`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "not-regular" => Some(Self::NotRegular),
            "outside" => Some(Self::Outside),
            "dangling" => Some(Self::Dangling),
            _ => None,
        }
    }

    /// The typed error for model file `file`, shown to users as `shown`.
    fn error(self, file: &str, shown: &str) -> PhoenixError {
        match self {
            Self::NotRegular => problem(file, not_regular_message(shown)),
            Self::Outside => {
                problem(file, format!("{shown} resolves outside the model folder and the models dir; refused"))
            }
            Self::Dangling => model_not_found(format!("{shown} not found (or a dangling link)")),
        }
    }
}

fn not_regular_message(shown: &str) -> String {
    format!("{shown} is not a regular file (a folder, FIFO, socket or device); refused")
}

enum Source {
    Dir {
        dir: PathBuf,
        /// Real paths a file of the model may resolve into: the folder and the folder holding it.
        roots: Vec<PathBuf>,
        /// Whole files are memory-mapped (default) or read into memory ([`ModelFiles::read_not_mapped`]).
        map: bool,
    },
    /// In-memory files, the files its reader refused, and, when known, where they were read from (a
    /// folder path or base URL).
    Memory { files: HashMap<String, Arc<FileBytes>>, refused: HashMap<String, FileRefusal>, root: Option<String> },
}

/// A model folder's files, addressed by name (`config.json`, `model.safetensors`, …).
pub struct ModelFiles {
    source: Source,
    /// The `.gguf` file named as the model (a path to the file), inside the source's folder.
    gguf: Option<String>,
    /// That file shares its folder with other `.gguf` files (loose ones in a models dir): the
    /// folder is not its own, so nothing beside it (a `tokenizer.json`, a chat template) is its.
    shares_folder: bool,
    /// That file's header once read: config, tensors and tokenizer are read from one parse.
    pub(super) parsed_gguf: std::sync::OnceLock<Arc<super::GgufFile>>,
}

/// Whether folder `dir` holds a `.gguf` entry other than `name` (looking at a bounded number of
/// entries: a folder with more is treated as shared).
fn another_gguf_in(dir: &Path, name: &str) -> bool {
    const MAX_ENTRIES: usize = 100_000;
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    let mut seen = 0usize;
    for entry in entries {
        seen += 1;
        if seen > MAX_ENTRIES {
            return true;
        }
        let Ok(entry) = entry else { continue };
        // A folder named `x.gguf` is not a model file (as in `gguf_file`).
        let Ok(other) = entry.file_name().into_string() else { continue };
        if other != name && is_gguf_name(&other) && !entry.file_type().is_ok_and(|t| t.is_dir()) {
            return true;
        }
    }
    false
}

/// Whether `name` is a GGUF file name (`*.gguf`, any case).
pub fn is_gguf_name(name: &str) -> bool {
    name.len() > 5 && name.is_char_boundary(name.len() - 5) && name[name.len() - 5..].eq_ignore_ascii_case(".gguf")
}

/// The GGUF file that is the model among the `.gguf` names of a folder without `config.json`: the
/// one there is, none, or `E_MODEL_NOT_FOUND` when there are several (which one is meant?). The one
/// rule for folders on disk and for readers that list their files (WASM).
pub fn the_one_gguf(mut found: Vec<String>, root: &str) -> Result<Option<String>> {
    found.retain(|n| is_gguf_name(n) && plain_file_name(n).is_ok());
    found.sort();
    found.dedup();
    match found.len() {
        0 | 1 => Ok(found.pop()),
        n => Err(model_not_found(format!(
            "{root} holds {n} .gguf files and no {CONFIG_FILE}; name the one to load (a path to the file)"
        ))),
    }
}

impl ModelFiles {
    /// A folder on disk, or a `.gguf` file (the model is that file; files beside it, such as a
    /// `tokenizer.json`, are looked up in its folder). A missing path or a path that is neither
    /// gives `E_MODEL_NOT_FOUND`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        if let Some(name) = dir.file_name().and_then(|n| n.to_str()).filter(|n| is_gguf_name(n)) {
            if dir.is_file() || std::fs::symlink_metadata(dir).is_ok_and(|m| !m.is_dir()) {
                let parent = match dir.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                let mut files = Self::from_dir(&parent)?;
                files.shares_folder = another_gguf_in(&parent, name);
                files.gguf = Some(name.to_string());
                return Ok(files);
            }
        }
        if !dir.exists() {
            let what = match dir.file_name().and_then(|n| n.to_str()) {
                Some(n) if is_gguf_name(n) => "model file",
                _ => "model folder",
            };
            return Err(model_not_found(format!("{what} {} does not exist", dir.display())));
        }
        if !dir.is_dir() {
            return Err(model_not_found(format!("model path {} is not a folder", dir.display())));
        }
        let real = std::fs::canonicalize(dir)
            .map_err(|e| model_not_found(format!("cannot resolve model folder {}: {e}", dir.display())))?;
        // The models dir as the caller named it (the folder may itself be a link into it), and the
        // real parent of the real folder.
        let named_parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut roots = vec![real.clone()];
        roots.extend(std::fs::canonicalize(named_parent).ok());
        roots.extend(real.parent().map(Path::to_path_buf));
        Ok(Self {
            source: Source::Dir { dir: dir.to_path_buf(), roots, map: true },
            gguf: None,
            shares_folder: false,
            parsed_gguf: Default::default(),
        })
    }

    /// Files already in memory, as `(name, bytes)` pairs (names as they would be inside the folder).
    pub fn from_memory(files: Vec<(String, Vec<u8>)>) -> Self {
        Self::from_memory_named(None, files)
    }

    /// Like [`Self::from_memory`], with the folder path or base URL the files were read from, so
    /// messages name `<root>/config.json` rather than a bare file name.
    pub fn from_memory_named(root: Option<String>, files: Vec<(String, Vec<u8>)>) -> Self {
        Self::from_memory_refusing(root, files, Vec::new())
    }

    /// Like [`Self::from_memory_named`], plus files the reader found but refused to read: reading
    /// one of them fails exactly as it does for a folder on disk.
    pub fn from_memory_refusing(
        root: Option<String>,
        files: Vec<(String, Vec<u8>)>,
        refused: Vec<(String, FileRefusal)>,
    ) -> Self {
        let files = files.into_iter().map(|(name, bytes)| (name, Arc::new(FileBytes::Owned(bytes)))).collect();
        let refused = refused.into_iter().collect();
        Self {
            source: Source::Memory { files, refused, root: root.filter(|r| !r.is_empty()) },
            gguf: None,
            shares_folder: false,
            parsed_gguf: Default::default(),
        }
    }

    /// The GGUF file that is the model: the file named as the model, else the one `.gguf` of a
    /// folder without `config.json`. `None` for a Hugging Face folder; several `.gguf` files and no
    /// `config.json` is `E_MODEL_NOT_FOUND` (which one is meant?).
    pub fn gguf_file(&self) -> Result<Option<String>> {
        if let Some(name) = &self.gguf {
            return Ok(Some(name.clone()));
        }
        if self.has(CONFIG_FILE) {
            return Ok(None);
        }
        let found: Vec<String> = match &self.source {
            Source::Memory { files, refused, .. } => {
                files.keys().chain(refused.keys()).filter(|n| is_gguf_name(n)).cloned().collect()
            }
            Source::Dir { dir, .. } => std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .filter(|n| is_gguf_name(n) && plain_file_name(n).is_ok())
                        // A folder named `x.gguf` is not a model file (a link to a file is).
                        .filter(|n| !dir.join(n).is_dir())
                        .take(64)
                        .collect()
                })
                .unwrap_or_default(),
        };
        the_one_gguf(found, &self.describe_root())
    }

    /// The same files with `name` as the model (a path to a `.gguf` file, read by a caller that has
    /// no file system): [`Self::gguf_file`] then answers `name` whatever else the files hold.
    pub fn with_gguf(mut self, name: String) -> Self {
        self.gguf = Some(name);
        self
    }

    /// Marks the GGUF model file as sharing its folder with other `.gguf` files: nothing beside it
    /// counts as its own ([`super::read_plan::gguf_shares_folder`] decides from a reader's listing).
    pub fn sharing_folder(mut self, shares: bool) -> Self {
        self.shares_folder = shares;
        self
    }

    /// How to name `file` in messages: its full path for folders, its name otherwise.
    pub fn describe(&self, file: &str) -> String {
        match &self.source {
            Source::Dir { dir, .. } => dir.join(file).display().to_string(),
            Source::Memory { root: Some(root), .. } => in_root(root, file),
            Source::Memory { root: None, .. } => file.to_string(),
        }
    }

    /// How to name the whole model in messages.
    pub fn describe_root(&self) -> String {
        match &self.source {
            Source::Dir { dir, .. } => dir.display().to_string(),
            Source::Memory { root: Some(root), .. } => root.clone(),
            Source::Memory { root: None, .. } => "<in-memory model files>".to_string(),
        }
    }

    /// Whether the files are read from a folder on disk (mapped on demand) rather than handed over.
    pub fn is_folder(&self) -> bool {
        matches!(self.source, Source::Dir { .. })
    }

    /// Whether the folder has an entry called `file` (of any kind: reading it then says what is
    /// wrong with a FIFO or a folder, instead of calling it absent).
    pub fn has(&self, file: &str) -> bool {
        if plain_file_name(file).is_err() {
            return false;
        }
        if self.shares_folder && self.gguf.as_deref() != Some(file) {
            // A stray tokenizer.json among loose GGUFs would silently retokenize every one of them.
            return false;
        }
        match &self.source {
            Source::Dir { dir, .. } => std::fs::symlink_metadata(dir.join(file)).is_ok(),
            Source::Memory { files, refused, .. } => files.contains_key(file) || refused.contains_key(file),
        }
    }

    /// The same folder with whole files read into memory instead of memory-mapped (llama.cpp's
    /// `--no-mmap`): a file truncated or rewritten in place later cannot fault a loaded model.
    pub fn read_not_mapped(mut self) -> Self {
        if let Source::Dir { map, .. } = &mut self.source {
            *map = false;
        }
        self
    }

    /// The bytes of `file` (memory-mapped for folders unless [`Self::read_not_mapped`]). Missing
    /// file gives `E_MODEL_NOT_FOUND`.
    pub fn bytes(&self, file: &str) -> Result<Arc<FileBytes>> {
        match &self.source {
            Source::Memory { .. } => self.memory_file(file).cloned(),
            Source::Dir { map, .. } => {
                let (f, len, shown) = self.open(file)?;
                #[cfg(not(target_arch = "wasm32"))]
                {
                    if !*map {
                        return read_whole(f, len, &shown).map_err(|e| problem(file, e.message));
                    }
                    // SAFETY: the mapping is read-only; model files are not expected to change while
                    // loaded (the same assumption every mmap-based loader, candle's included, makes).
                    let map = unsafe { memmap2::Mmap::map(&f) }
                        .map_err(|e| problem(file, format!("cannot map {shown}: {e}")))?;
                    // Pages faulted in cold come as 2 MiB folios, mapped as huge pages: decode streams
                    // every weight per token, and 4 KiB pages (a TLB walk and a prefetch restart per
                    // page) cost it up to a third of its speed. Advice only: refused, nothing changes.
                    #[cfg(unix)]
                    let _ = map.advise(memmap2::Advice::HugePage);
                    Ok(Arc::new(FileBytes::Mapped(map)))
                }
                #[cfg(target_arch = "wasm32")]
                {
                    let _ = map;
                    read_whole(f, len, &shown).map_err(|e| problem(file, e.message))
                }
            }
        }
    }

    /// The whole of `file`, refused when it holds more than `cap` bytes.
    pub fn read_capped(&self, file: &str, cap: usize) -> Result<Vec<u8>> {
        match &self.source {
            Source::Memory { .. } => {
                let bytes = self.memory_file(file)?;
                check_cap(bytes.len() as u64, cap, &self.describe(file)).map_err(|m| problem(file, m))?;
                Ok(bytes.to_vec())
            }
            Source::Dir { .. } => {
                let (f, len, shown) = self.open(file)?;
                read_capped(f, len, cap, &shown).map_err(|e| problem(file, e.message))
            }
        }
    }

    /// `file` as UTF-8 text (metadata: at most [`JSON_FILE_CAP`] bytes).
    pub fn text(&self, file: &str) -> Result<String> {
        let bytes = self.read_capped(file, JSON_FILE_CAP)?;
        String::from_utf8(bytes).map_err(|_| problem(file, format!("{} is not valid UTF-8", self.describe(file))))
    }

    fn memory_file(&self, file: &str) -> Result<&Arc<FileBytes>> {
        let Source::Memory { files, refused, .. } = &self.source else {
            unreachable!("memory_file is for memory sources")
        };
        self.check_name(file)?;
        if let Some(refusal) = refused.get(file) {
            return Err(refusal.error(file, &self.describe(file)));
        }
        files
            .get(file)
            .ok_or_else(|| model_not_found(format!("{} is missing from the model files", self.describe(file))))
    }

    fn check_name(&self, file: &str) -> Result<()> {
        plain_file_name(file).map_err(|why| {
            problem(
                file,
                format!(
                    "{}: cannot open a model file whose name is not a plain file name: {why}",
                    self.describe_root()
                ),
            )
        })
    }

    /// Opens `file` of a folder source after the name, containment and file-kind checks; returns the
    /// open file, its size and how to name it.
    fn open(&self, file: &str) -> Result<(std::fs::File, u64, String)> {
        let Source::Dir { dir, roots, .. } = &self.source else { unreachable!("open is for folders") };
        self.check_name(file)?;
        let path = dir.join(file);
        let shown = path.display().to_string();
        let real = std::fs::canonicalize(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => FileRefusal::Dangling.error(file, &shown),
            _ => model_not_found(format!("cannot open {shown}: {e}")),
        })?;
        // The `.gguf` file the caller named is the model they chose, so a link to it is followed
        // wherever it leads (a Hugging Face cache snapshot links each file into `../../blobs/<hash>`),
        // as a model folder named through a link is; files the model names keep the containment rule.
        let named_by_caller = self.gguf.as_deref() == Some(file);
        if !named_by_caller && !roots.iter().any(|root| real.starts_with(root)) {
            return Err(FileRefusal::Outside.error(file, &shown));
        }
        let f = open_nonblocking(&real).map_err(|e| model_not_found(format!("cannot open {shown}: {e}")))?;
        let len = regular_len(&f, &shown).map_err(|m| problem(file, m))?;
        Ok((f, len, shown))
    }
}

/// Reads the file at `path` named by a caller (not a model folder), with the same file-kind check and
/// cap; problems come back under `code`, naming the path.
pub fn read_regular_file(path: &Path, cap: usize, code: ErrorCode) -> Result<Vec<u8>> {
    let shown = path.display().to_string();
    let f = open_nonblocking(path).map_err(|e| PhoenixError::new(code, format!("{shown}: cannot open: {e}")))?;
    let len = regular_len(&f, &shown).map_err(|m| PhoenixError::new(code, m))?;
    read_capped(f, len, cap, &shown).map_err(|e| PhoenixError::new(code, e.message))
}

/// Opens for reading without waiting: a FIFO with no writer would block a plain `open` forever.
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

/// The size of an open file when it is a regular file (`fstat` on the descriptor, so what was checked
/// is what is read), else a message naming it.
fn regular_len(f: &std::fs::File, shown: &str) -> std::result::Result<u64, String> {
    let meta = f.metadata().map_err(|e| format!("cannot inspect {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(not_regular_message(shown));
    }
    Ok(meta.len())
}

fn check_cap(len: u64, cap: usize, shown: &str) -> std::result::Result<(), String> {
    if len > cap as u64 {
        return Err(format!("{shown} is too large ({len} bytes; at most {cap} are read for this file)"));
    }
    Ok(())
}

/// Reads all of `f` (announced as `len` bytes) unless it holds more than `cap`; a file that grows
/// while read is cut at `cap + 1` and refused, never read without end.
fn read_capped(f: std::fs::File, len: u64, cap: usize, shown: &str) -> Result<Vec<u8>> {
    let fail = |m: String| PhoenixError::new(ErrorCode::Internal, m);
    check_cap(len, cap, shown).map_err(fail)?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(len as usize).map_err(|_| fail(format!("{shown} ({len} bytes) does not fit in memory")))?;
    f.take(cap as u64 + 1).read_to_end(&mut bytes).map_err(|e| fail(format!("cannot read {shown}: {e}")))?;
    check_cap(bytes.len() as u64, cap, shown).map_err(fail)?;
    Ok(bytes)
}

/// All of an open file of `len` bytes (its `fstat` size), reserved up front: a file that grows while
/// read is refused past that size; one cut short while read fails its format's own checks.
fn read_whole(f: std::fs::File, len: u64, shown: &str) -> Result<Arc<FileBytes>> {
    read_capped(f, len, len.try_into().unwrap_or(usize::MAX), shown).map(|v| Arc::new(FileBytes::Owned(v)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_file_names_pass() {
        for good in ["model.safetensors", "model-00001-of-00002.safetensors", "a..b", ".hidden"] {
            assert_eq!(plain_file_name(good), Ok(()), "{good}");
        }
        for bad in ["", ".", "..", "/etc/passwd", "../x", "a/b", "a\\b", "C:x", "a\0b"] {
            assert!(plain_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn memory_sources_apply_the_name_rule_and_caps() {
        let files = ModelFiles::from_memory(vec![
            ("../x".into(), vec![1]),
            ("config.json".into(), vec![b' '; JSON_FILE_CAP + 1]),
        ]);
        assert!(!files.has("../x"));
        assert_eq!(files.bytes("../x").err().unwrap().code, ErrorCode::BadWeights);
        let e = files.text("config.json").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadConfig);
        assert!(e.message.contains("too large"), "{}", e.message);
    }

    /// A folder named like a model file is not counted as one: the folder's one `.gguf` is found.
    #[test]
    fn a_folder_named_dot_gguf_is_not_a_model_file() {
        let dir = std::env::temp_dir().join(format!("phoenix-gguf-folder-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("fake.gguf")).unwrap();
        std::fs::write(dir.join("real.gguf"), b"GGUF").unwrap();
        let files = ModelFiles::from_dir(&dir).unwrap();
        assert_eq!(files.gguf_file().unwrap().as_deref(), Some("real.gguf"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A reader without a file system (WASM over Node) reports what it refused; the load then fails
    /// with the code and message a folder on disk gives for the same file.
    #[cfg(unix)]
    #[test]
    fn refusals_told_by_a_reader_match_the_folder_loader() {
        let dir = std::env::temp_dir().join(format!("phoenix-refusal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(dir.join(CONFIG_FILE)).unwrap(); // a folder where a file belongs
        std::os::unix::fs::symlink("/etc/hostname", dir.join(TOKENIZER_FILE)).unwrap();
        std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("model.safetensors")).unwrap();
        let disk = ModelFiles::from_dir(&dir).unwrap();
        let root = dir.display().to_string();
        let told = ModelFiles::from_memory_refusing(
            Some(root),
            vec![],
            vec![
                (CONFIG_FILE.into(), FileRefusal::NotRegular),
                (TOKENIZER_FILE.into(), FileRefusal::Outside),
                ("model.safetensors".into(), FileRefusal::Dangling),
            ],
        );
        for file in [CONFIG_FILE, TOKENIZER_FILE, "model.safetensors"] {
            assert!(told.has(file), "{file}");
            let (a, b) = (disk.bytes(file).err().unwrap(), told.bytes(file).err().unwrap());
            assert_eq!((a.code, &a.message), (b.code, &b.message), "{file}");
        }
        assert_eq!(FileRefusal::parse("outside"), Some(FileRefusal::Outside));
        assert_eq!(FileRefusal::parse("other"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
