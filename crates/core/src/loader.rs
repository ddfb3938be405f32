//! Named-tensor source for every supported weight format, with the tensor-name mapping in one place.
//!
//! Formats: HF `model.safetensors` (memory-mapped), sharded safetensors (`model.safetensors.index.json`),
//! and PyTorch zip checkpoints (`pytorch_model.bin`, read with candle's pickle reader — it reconstructs
//! tensor descriptions only and executes nothing). Tensors are kept as raw bytes until asked for, then
//! handed out as f32 with a shape check: little-endian f32 data that is aligned in its file buffer is
//! borrowed in place (no copy, so a memory-mapped checkpoint is resident once), anything else converted.
//! A model may also be one GGUF file (`gguf`): its tensors come under the same HF names.

pub mod files;
pub mod gguf;
pub mod gguf_guard;
pub(crate) mod gguf_names;
mod pickle_guard;
mod pth;
mod pth_tensor;
pub mod quant_kind;
pub mod read_plan;
mod safetensors_file;
pub(crate) mod shown;

use std::collections::HashMap;
use std::sync::Arc;

pub use files::{FileBytes, FileRefusal, ModelFiles};
pub use gguf::GgufFile;
pub use quant_kind::QuantKind;

use crate::error::{bad_weights, model_not_found, Result};

pub const SAFETENSORS_FILE: &str = "model.safetensors";
pub const SAFETENSORS_INDEX_FILE: &str = "model.safetensors.index.json";
pub const PTH_FILE: &str = "pytorch_model.bin";
/// Weight containers in the order they are looked for: the first one present is used.
pub const WEIGHT_CONTAINERS: [&str; 3] = [SAFETENSORS_INDEX_FILE, SAFETENSORS_FILE, PTH_FILE];

/// Element types a checkpoint may store: floats, or ggml block-quantized types (GGUF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDType {
    F32,
    F16,
    BF16,
    F64,
    Quant(QuantKind),
}

impl WeightDType {
    /// Bytes per value of a float type; `None` for block-quantized types (see [`Self::tensor_bytes`]).
    pub fn size(self) -> Option<usize> {
        match self {
            WeightDType::F16 | WeightDType::BF16 => Some(2),
            WeightDType::F32 => Some(4),
            WeightDType::F64 => Some(8),
            WeightDType::Quant(_) => None,
        }
    }

    /// Bytes a tensor of `shape` takes; `None` on overflow or (quantized) rows of partial blocks.
    pub fn tensor_bytes(self, shape: &[usize]) -> Option<usize> {
        match self {
            WeightDType::Quant(kind) => kind.tensor_bytes(shape),
            float => shape.iter().try_fold(float.size()?, |acc, &dim| acc.checked_mul(dim)),
        }
    }

    /// Name as `info` and messages give it (`f32`, `Q4_K`).
    pub fn name(self) -> &'static str {
        match self {
            WeightDType::F32 => "f32",
            WeightDType::F16 => "f16",
            WeightDType::BF16 => "bf16",
            WeightDType::F64 => "f64",
            WeightDType::Quant(kind) => kind.name(),
        }
    }
}

/// Which container the weights came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    Safetensors,
    ShardedSafetensors,
    Pth,
    /// One `.gguf` file holding metadata, tensors and tokenizer.
    Gguf,
}

impl WeightFormat {
    /// The file that decides the container (the index for shards; for GGUF the file's name is
    /// [`ModelFiles::gguf_file`]).
    pub fn container_file(self) -> &'static str {
        match self {
            WeightFormat::Safetensors => SAFETENSORS_FILE,
            WeightFormat::ShardedSafetensors => SAFETENSORS_INDEX_FILE,
            WeightFormat::Pth => PTH_FILE,
            WeightFormat::Gguf => "*.gguf",
        }
    }
}

/// The weight container of `files`: a single GGUF file, else the first of [`WEIGHT_CONTAINERS`] present.
pub fn detect_container(files: &ModelFiles) -> Result<WeightFormat> {
    if files.gguf_file()?.is_some() {
        return Ok(WeightFormat::Gguf);
    }
    match WEIGHT_CONTAINERS.into_iter().find(|file| files.has(file)) {
        Some(SAFETENSORS_INDEX_FILE) => Ok(WeightFormat::ShardedSafetensors),
        Some(SAFETENSORS_FILE) => Ok(WeightFormat::Safetensors),
        Some(_) => Ok(WeightFormat::Pth),
        None => Err(model_not_found(format!(
            "{}: no weights found (expected {SAFETENSORS_FILE}, {SAFETENSORS_INDEX_FILE} or {PTH_FILE})",
            files.describe_root()
        ))),
    }
}

/// The files holding the weights of `format` (the shards the index names, each once, sorted).
/// Reads only the shard index; a listed shard that is missing is `E_BAD_WEIGHTS`.
pub fn weight_files(files: &ModelFiles, format: WeightFormat) -> Result<Vec<String>> {
    match format {
        WeightFormat::ShardedSafetensors => safetensors_file::shard_files(files),
        WeightFormat::Gguf => Ok(files.gguf_file()?.into_iter().collect()),
        other => Ok(vec![other.container_file().to_string()]),
    }
}

/// What a describe can check of the weight files without reading tensor data: each safetensors
/// file's header against the file's length, so a truncated download is reported when the model is
/// listed, not first when it loads (same `E_BAD_WEIGHTS` message as the load's). Only for a folder on
/// disk, where a mapped file's header pages are all that is read; a reader without a file system
/// (WASM) hands describe no weight bytes, and its load checks the same.
pub fn check_weight_headers(files: &ModelFiles, format: WeightFormat, weight_files: &[String]) -> Result<()> {
    if !files.is_folder() || !matches!(format, WeightFormat::Safetensors | WeightFormat::ShardedSafetensors) {
        return Ok(());
    }
    for file in weight_files {
        // Only the header is this check's business: a file that cannot be opened (a FIFO, a dangling
        // link) is reported by the load, as for every other reader.
        let Ok(bytes) = files.bytes(file) else { continue };
        safetensors_file::check_header(&bytes, &files.describe(file))?;
    }
    Ok(())
}

/// The format name every layer reports: config dialect + weight container.
pub fn format_name(layout: crate::config::ConfigLayout, container: WeightFormat) -> &'static str {
    use crate::config::ConfigLayout::*;
    match (layout, container) {
        (_, WeightFormat::Gguf) => "gguf",
        (HuggingFace, WeightFormat::Safetensors) => "hf-safetensors",
        (HuggingFace, WeightFormat::ShardedSafetensors) => "hf-safetensors-sharded",
        (HuggingFace, WeightFormat::Pth) => "hf-pth",
        (StateSpaces, WeightFormat::Safetensors) => "state-spaces-safetensors",
        (StateSpaces, WeightFormat::ShardedSafetensors) => "state-spaces-safetensors-sharded",
        (StateSpaces, WeightFormat::Pth) => "state-spaces-pth",
    }
}

/// One tensor as stored: dtype, shape and a byte range of a (shared) file buffer.
#[derive(Clone)]
pub struct RawTensor {
    pub dtype: WeightDType,
    pub shape: Vec<usize>,
    /// File the tensor came from (for messages).
    pub file: String,
    bytes: Arc<FileBytes>,
    start: usize,
    end: usize,
}

impl RawTensor {
    fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    /// Bytes of stored data.
    pub fn byte_len(&self) -> usize {
        self.end - self.start
    }
}

/// All tensors of a model, by their stored names.
pub struct TensorStore {
    pub format: WeightFormat,
    /// Q/K projection rows are in the order llama.cpp's converter writes for Llama (GGUF): RoPE must
    /// turn adjacent pairs `(2j, 2j+1)` instead of `(j, j + d/2)`.
    pub rope_interleaved: bool,
    tensors: HashMap<String, RawTensor>,
}

impl TensorStore {
    /// Detects the weight container in `files` and indexes its tensors (no conversion yet).
    pub fn open(files: &ModelFiles) -> Result<Self> {
        let format = detect_container(files)?;
        if format == WeightFormat::Gguf {
            let file = gguf::GgufFile::open_model(files)?;
            let arch = gguf_names::GgufArch::parse(file.architecture()?, &file.label)?;
            let tensors = gguf_names::to_hf(arch, &file.tensors, &file.label)?;
            return Ok(Self { format, rope_interleaved: arch.qk_interleaved(), tensors });
        }
        let list = match format {
            WeightFormat::ShardedSafetensors => safetensors_file::read_sharded(files)?,
            WeightFormat::Safetensors => {
                safetensors_file::read(files.bytes(SAFETENSORS_FILE)?, &files.describe(SAFETENSORS_FILE))?
            }
            WeightFormat::Pth => pth::read(files.bytes(PTH_FILE)?, &files.describe(PTH_FILE))?,
            WeightFormat::Gguf => unreachable!("read above"),
        };
        Ok(Self { format, rope_interleaved: false, tensors: list.into_iter().collect() })
    }

    /// Looks a canonical (HF) name up under every spelling a checkpoint may use.
    fn resolve(&self, name: &str) -> Option<&RawTensor> {
        stored_names(name).iter().find_map(|n| self.tensors.get(n))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.resolve(name).is_some()
    }

    /// Shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.resolve(name).map(|t| t.shape.as_slice())
    }

    /// Stored dtype of a tensor, if present.
    pub fn dtype(&self, name: &str) -> Option<WeightDType> {
        self.resolve(name).map(|t| t.dtype)
    }

    /// Loads `name` (canonical HF spelling) as f32, checking it has shape `expected`. A quantized
    /// tensor (a norm a converter quantized) is dequantized.
    pub fn load_f32(&self, name: &str, expected: &[usize]) -> Result<F32Buf> {
        let t = self.get(name, expected)?;
        if let WeightDType::Quant(kind) = t.dtype {
            let data = QuantData::of(t, name, kind)?;
            return data.dequantized().map(Buf::Owned).ok_or_else(|| {
                bad_weights(format!("{}: tensor `{}` does not fit in memory as f32", t.file, shown::shown_name(name)))
            });
        }
        match Buf::<f32>::borrow(t) {
            Some(view) => Ok(view),
            None => {
                Ok(F32Buf::Owned(to_f32(t.dtype, t.data()).ok_or_else(|| {
                    bad_weights(format!("{}: tensor `{name}` does not fit in memory as f32", t.file))
                })?))
            }
        }
    }

    /// Loads a large matrix `name` in the dtype it is stored in (f16 / bf16 stay half precision,
    /// quantized blocks stay quantized, borrowed from the file; f64 becomes f32), checking it has
    /// shape `expected`.
    pub fn load_matrix(&self, name: &str, expected: &[usize]) -> Result<MatrixData> {
        let t = self.get(name, expected)?;
        let too_big = || bad_weights(format!("{}: tensor `{name}` does not fit in memory", t.file));
        Ok(match t.dtype {
            WeightDType::F16 => MatrixData::F16(match Buf::borrow(t) {
                Some(view) => view,
                None => Buf::Owned(to_half(t.data(), half::f16::from_bits).ok_or_else(too_big)?),
            }),
            WeightDType::BF16 => MatrixData::BF16(match Buf::borrow(t) {
                Some(view) => view,
                None => Buf::Owned(to_half(t.data(), half::bf16::from_bits).ok_or_else(too_big)?),
            }),
            WeightDType::F32 | WeightDType::F64 => MatrixData::F32(self.load_f32(name, expected)?),
            WeightDType::Quant(kind) => MatrixData::Quant(QuantData::of(t, name, kind)?),
        })
    }

    /// Like [`Self::load_f32`], and every value must be finite: for the small per-channel tensors
    /// (norms, biases, `A_log`, `D`, conv taps) where one NaN silently skews every output.
    pub fn load_f32_finite(&self, name: &str, expected: &[usize]) -> Result<F32Buf> {
        let values = self.load_f32(name, expected)?;
        if let Some(at) = values.iter().position(|v| !v.is_finite()) {
            let file = &self.get(name, expected)?.file;
            return Err(bad_weights(format!(
                "{file}: tensor `{name}` holds a non-finite value (NaN or infinity) at element {at}"
            )));
        }
        Ok(values)
    }

    /// Layers the checkpoint holds: one past the highest `i` of any `backbone.layers.{i}.` tensor
    /// (0 when there are none).
    pub fn layer_count(&self) -> usize {
        self.layers_under("backbone.layers.")
    }

    /// One past the highest `i` of any `{prefix}{i}.` tensor (0 when there are none).
    pub fn layers_under(&self, prefix: &str) -> usize {
        self.tensors
            .keys()
            .filter_map(|k| k.strip_prefix(prefix)?.split('.').next()?.parse::<usize>().ok())
            .map(|i| i.saturating_add(1))
            .max()
            .unwrap_or(0)
    }

    fn get(&self, name: &str, expected: &[usize]) -> Result<&RawTensor> {
        let t =
            self.resolve(name).ok_or_else(|| bad_weights(format!("tensor `{name}` is missing from the weights")))?;
        if t.shape != expected {
            return Err(bad_weights(format!(
                "tensor `{name}` in {} has shape {:?}, expected {:?}",
                t.file, t.shape, expected
            )));
        }
        Ok(t)
    }
}

/// Element types weights are held in: `f32`, or `f16` / `bf16` kept as stored.
pub trait Element: Copy + Send + Sync + 'static {
    /// The stored dtype that can be borrowed as `Self` without conversion.
    const DTYPE: WeightDType;
}
impl Element for f32 {
    const DTYPE: WeightDType = WeightDType::F32;
}
impl Element for half::f16 {
    const DTYPE: WeightDType = WeightDType::F16;
}
impl Element for half::bf16 {
    const DTYPE: WeightDType = WeightDType::BF16;
}

/// Weights of element type `T`: borrowed in place from the (memory-mapped) file buffer, or
/// converted and owned.
pub enum Buf<T: Element> {
    Owned(Vec<T>),
    /// `len` values at byte `start` of `bytes`; only built when aligned and little-endian.
    Borrowed {
        bytes: Arc<FileBytes>,
        start: usize,
        len: usize,
    },
}

/// f32 weights (see [`Buf`]).
pub type F32Buf = Buf<f32>;

impl<T: Element> Buf<T> {
    /// Zero-copy view of a tensor stored as `T` whose data is aligned for `T`, on a little-endian machine.
    fn borrow(t: &RawTensor) -> Option<Self> {
        let size = std::mem::size_of::<T>();
        let aligned = (t.data().as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>());
        (cfg!(target_endian = "little") && t.dtype == T::DTYPE && aligned).then(|| Buf::Borrowed {
            bytes: t.bytes.clone(),
            start: t.start,
            len: (t.end - t.start) / size,
        })
    }
}

impl<T: Element> Buf<T> {
    /// `len` values from value `start` on, as a buffer of their own: a narrower view of the same
    /// file bytes when borrowed, a copy when owned.
    fn slice(&self, start: usize, len: usize) -> Self {
        match self {
            Buf::Owned(v) => Buf::Owned(v[start..start + len].to_vec()),
            Buf::Borrowed { bytes, start: at, .. } => {
                Buf::Borrowed { bytes: bytes.clone(), start: at + start * std::mem::size_of::<T>(), len }
            }
        }
    }
}

impl<T: Element> From<Vec<T>> for Buf<T> {
    fn from(v: Vec<T>) -> Self {
        Buf::Owned(v)
    }
}

impl<T: Element> std::ops::Deref for Buf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Buf::Owned(v) => v,
            Buf::Borrowed { bytes, start, len } => {
                let data = &bytes[*start..*start + *len * std::mem::size_of::<T>()];
                // SAFETY: `borrow` checked alignment for `T`, that the stored dtype is `T`'s (f32 /
                // f16 / bf16: plain little-endian bit patterns, every one valid), and that the range
                // holds `len` values; the buffer is immutable and kept alive by the Arc.
                unsafe { std::slice::from_raw_parts(data.as_ptr() as *const T, *len) }
            }
        }
    }
}

/// A block-quantized tensor's bytes, a range of the (memory-mapped or in-memory) file buffer: never
/// copied, never dequantized at load. Rows are whole blocks.
pub struct QuantData {
    pub kind: QuantKind,
    bytes: Arc<FileBytes>,
    start: usize,
    end: usize,
}

impl QuantData {
    /// The bytes of `t`, checked to be whole blocks per row (the last dimension).
    fn of(t: &RawTensor, name: &str, kind: QuantKind) -> Result<Self> {
        let cols = t.shape.last().copied().unwrap_or(0);
        if !cols.is_multiple_of(kind.block_elems()) || kind.tensor_bytes(&t.shape) != Some(t.end - t.start) {
            return Err(bad_weights(format!(
                "{}: tensor `{}` is {} with rows of {cols} values, not whole blocks of {}",
                t.file,
                shown::shown_name(name),
                kind.name(),
                kind.block_elems()
            )));
        }
        Ok(Self { kind, bytes: t.bytes.clone(), start: t.start, end: t.end })
    }

    /// Values held.
    pub fn len(&self) -> usize {
        (self.end - self.start) / self.kind.block_bytes() * self.kind.block_elems()
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The stored blocks.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    /// All values as f32; `None` when they cannot be allocated (the size comes from a file).
    fn dequantized(&self) -> Option<Vec<f32>> {
        let mut out = Vec::new();
        out.try_reserve_exact(self.len()).ok()?;
        out.resize(self.len(), 0.0);
        crate::ops::dequantize(self.kind, self.bytes(), &mut out);
        Some(out)
    }

    /// Value `i`, dequantized (its block decoded).
    fn get_f32(&self, i: usize) -> f32 {
        let (elems, size) = (self.kind.block_elems(), self.kind.block_bytes());
        let at = i / elems * size;
        let mut block = [0f32; 256];
        crate::ops::dequantize(self.kind, &self.bytes()[at..at + size], &mut block[..elems]);
        block[i % elems]
    }

    /// Values `start .. start + len` (whole blocks) as a view of the same bytes.
    fn slice(&self, start: usize, len: usize) -> Self {
        let (elems, size) = (self.kind.block_elems(), self.kind.block_bytes());
        assert!(start.is_multiple_of(elems) && len.is_multiple_of(elems), "quantized slice is not whole blocks");
        let from = self.start + start / elems * size;
        let to = from + len / elems * size;
        assert!(to <= self.end, "quantized slice past the tensor");
        Self { kind: self.kind, bytes: self.bytes.clone(), start: from, end: to }
    }
}

/// A large weight matrix as held: f32, f16 / bf16 or block-quantized, kept as stored (never widened
/// at load).
pub enum MatrixData {
    F32(Buf<f32>),
    F16(Buf<half::f16>),
    BF16(Buf<half::bf16>),
    Quant(QuantData),
}

impl MatrixData {
    pub fn len(&self) -> usize {
        match self {
            MatrixData::F32(b) => b.len(),
            MatrixData::F16(b) => b.len(),
            MatrixData::BF16(b) => b.len(),
            MatrixData::Quant(q) => q.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i` widened to f32.
    pub fn get_f32(&self, i: usize) -> f32 {
        match self {
            MatrixData::F32(b) => b[i],
            MatrixData::F16(b) => b[i].to_f32(),
            MatrixData::BF16(b) => b[i].to_f32(),
            MatrixData::Quant(q) => q.get_f32(i),
        }
    }

    /// The values split into `parts` equal consecutive pieces (a `[X, rows, cols]` stack of matrices
    /// into its `X` matrices); `len` must be a multiple of `parts` (quantized: of whole blocks, as it
    /// is when each part is whole rows).
    pub fn split(&self, parts: usize) -> Vec<MatrixData> {
        let each = self.len() / parts.max(1);
        (0..parts)
            .map(|i| match self {
                MatrixData::F32(b) => MatrixData::F32(b.slice(i * each, each)),
                MatrixData::F16(b) => MatrixData::F16(b.slice(i * each, each)),
                MatrixData::BF16(b) => MatrixData::BF16(b.slice(i * each, each)),
                MatrixData::Quant(q) => MatrixData::Quant(q.slice(i * each, each)),
            })
            .collect()
    }

    pub fn dtype_name(&self) -> &'static str {
        match self {
            MatrixData::F32(_) => "f32",
            MatrixData::F16(_) => "f16",
            MatrixData::BF16(_) => "bf16",
            MatrixData::Quant(q) => q.kind.name(),
        }
    }

    /// Bytes held (for quantized data the blocks' real size).
    pub fn byte_len(&self) -> usize {
        match self {
            MatrixData::F32(b) => b.len() * 4,
            MatrixData::F16(b) => b.len() * 2,
            MatrixData::BF16(b) => b.len() * 2,
            MatrixData::Quant(q) => q.end - q.start,
        }
    }
}

/// The one place that knows how checkpoints spell tensor names. Canonical names are the HF ones;
/// state-spaces checkpoints use `backbone.embedding.` (singular) for the embedding.
fn stored_names(canonical: &str) -> Vec<String> {
    let mut names = vec![canonical.to_string()];
    if let Some(rest) = canonical.strip_prefix("backbone.embeddings.") {
        names.push(format!("backbone.embedding.{rest}"));
    } else if let Some(rest) = canonical.strip_prefix("backbone.embedding.") {
        names.push(format!("backbone.embeddings.{rest}"));
    }
    names
}

/// Little-endian bytes of `dtype` to f32 (works on unaligned buffers); `None` when the result
/// cannot be allocated (its size comes from a file).
fn to_f32(dtype: WeightDType, data: &[u8]) -> Option<Vec<f32>> {
    let mut out = Vec::new();
    out.try_reserve_exact(data.len() / dtype.size()?).ok()?;
    match dtype {
        WeightDType::Quant(_) => return None,
        WeightDType::F32 => out.extend(data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        WeightDType::F16 => out.extend(data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())),
        WeightDType::BF16 => out.extend(data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        WeightDType::F64 => {
            out.extend(data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("chunk of 8")) as f32))
        }
    }
    Some(out)
}

/// Little-endian 16-bit values (works on unaligned buffers); `None` when they cannot be allocated.
fn to_half<T>(data: &[u8], from_bits: fn(u16) -> T) -> Option<Vec<T>> {
    let mut out = Vec::new();
    out.try_reserve_exact(data.len() / 2).ok()?;
    out.extend(data.chunks_exact(2).map(|b| from_bits(u16::from_le_bytes([b[0], b[1]]))));
    Some(out)
}

/// Checks a tensor's byte range fits its file and matches dtype × shape, then builds it.
fn raw_tensor(
    file_label: &str,
    name: &str,
    dtype: WeightDType,
    shape: Vec<usize>,
    bytes: Arc<FileBytes>,
    start: usize,
    end: usize,
) -> Result<RawTensor> {
    let want = dtype.tensor_bytes(&shape);
    if end < start || end > bytes.len() || Some(end - start) != want {
        let name = shown::shown_name(name);
        return Err(bad_weights(format!(
            "{file_label}: tensor `{name}` data range {start}..{end} does not hold {} {shape:?} (file truncated or corrupt)",
            dtype.name()
        )));
    }
    Ok(RawTensor { dtype, shape, file: file_label.to_string(), bytes, start, end })
}

#[cfg(test)]
mod quant_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_spellings_map_both_ways() {
        assert_eq!(stored_names("backbone.embeddings.weight")[1], "backbone.embedding.weight");
        assert_eq!(stored_names("backbone.embedding.weight")[1], "backbone.embeddings.weight");
        assert_eq!(stored_names("backbone.norm_f.weight").len(), 1);
    }

    #[test]
    fn converts_every_dtype() {
        let v = [1.5f32, -2.25];
        let f32b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(to_f32(WeightDType::F32, &f32b).unwrap(), v);
        let f16b: Vec<u8> = v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect();
        assert_eq!(to_f32(WeightDType::F16, &f16b).unwrap(), v);
        let bf16b: Vec<u8> = v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect();
        assert_eq!(to_f32(WeightDType::BF16, &bf16b).unwrap(), v);
        let f64b: Vec<u8> = v.iter().flat_map(|x| (*x as f64).to_le_bytes()).collect();
        assert_eq!(to_f32(WeightDType::F64, &f64b).unwrap(), v);
    }
}
