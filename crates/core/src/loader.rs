//! Named-tensor source for every supported weight format, with the tensor-name mapping in one place.
//!
//! Formats: HF `model.safetensors` (memory-mapped), sharded safetensors (`model.safetensors.index.json`),
//! and PyTorch zip checkpoints (`pytorch_model.bin`, read with candle's pickle reader — it reconstructs
//! tensor descriptions only and executes nothing). Tensors are kept as raw bytes until asked for, then
//! handed out as f32 with a shape check: little-endian f32 data that is aligned in its file buffer is
//! borrowed in place (no copy, so a memory-mapped checkpoint is resident once), anything else converted.

pub mod files;
mod pickle_guard;
mod pth;
mod pth_tensor;
pub mod read_plan;
mod safetensors_file;
pub(crate) mod shown;

use std::collections::HashMap;
use std::sync::Arc;

pub use files::{FileBytes, FileRefusal, ModelFiles};

use crate::error::{bad_weights, model_not_found, Result};

pub const SAFETENSORS_FILE: &str = "model.safetensors";
pub const SAFETENSORS_INDEX_FILE: &str = "model.safetensors.index.json";
pub const PTH_FILE: &str = "pytorch_model.bin";
/// Weight containers in the order they are looked for: the first one present is used.
pub const WEIGHT_CONTAINERS: [&str; 3] = [SAFETENSORS_INDEX_FILE, SAFETENSORS_FILE, PTH_FILE];

/// Element types a checkpoint may store; all are converted to f32 on load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDType {
    F32,
    F16,
    BF16,
    F64,
}

impl WeightDType {
    pub fn size(self) -> usize {
        match self {
            WeightDType::F16 | WeightDType::BF16 => 2,
            WeightDType::F32 => 4,
            WeightDType::F64 => 8,
        }
    }
}

/// Which container the weights came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    Safetensors,
    ShardedSafetensors,
    Pth,
}

impl WeightFormat {
    /// The file that decides the container (the index for shards).
    pub fn container_file(self) -> &'static str {
        match self {
            WeightFormat::Safetensors => SAFETENSORS_FILE,
            WeightFormat::ShardedSafetensors => SAFETENSORS_INDEX_FILE,
            WeightFormat::Pth => PTH_FILE,
        }
    }
}

/// The weight container of `files`: the first of [`WEIGHT_CONTAINERS`] present.
pub fn detect_container(files: &ModelFiles) -> Result<WeightFormat> {
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
        other => Ok(vec![other.container_file().to_string()]),
    }
}

/// The format name every layer reports: config dialect + weight container.
pub fn format_name(layout: crate::config::ConfigLayout, container: WeightFormat) -> &'static str {
    use crate::config::ConfigLayout::*;
    match (layout, container) {
        (HuggingFace, WeightFormat::Safetensors) => "hf-safetensors",
        (HuggingFace, WeightFormat::ShardedSafetensors) => "hf-safetensors-sharded",
        (HuggingFace, WeightFormat::Pth) => "hf-pth",
        (StateSpaces, WeightFormat::Safetensors) => "state-spaces-safetensors",
        (StateSpaces, WeightFormat::ShardedSafetensors) => "state-spaces-safetensors-sharded",
        (StateSpaces, WeightFormat::Pth) => "state-spaces-pth",
    }
}

/// One tensor as stored: dtype, shape and a byte range of a (shared) file buffer.
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
}

/// All tensors of a model, by their stored names.
pub struct TensorStore {
    pub format: WeightFormat,
    tensors: HashMap<String, RawTensor>,
}

impl TensorStore {
    /// Detects the weight container in `files` and indexes its tensors (no conversion yet).
    pub fn open(files: &ModelFiles) -> Result<Self> {
        let format = detect_container(files)?;
        let list = match format {
            WeightFormat::ShardedSafetensors => safetensors_file::read_sharded(files)?,
            WeightFormat::Safetensors => {
                safetensors_file::read(files.bytes(SAFETENSORS_FILE)?, &files.describe(SAFETENSORS_FILE))?
            }
            WeightFormat::Pth => pth::read(files.bytes(PTH_FILE)?, &files.describe(PTH_FILE))?,
        };
        Ok(Self { format, tensors: list.into_iter().collect() })
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

    /// Loads `name` (canonical HF spelling) as f32, checking it has shape `expected`.
    pub fn load_f32(&self, name: &str, expected: &[usize]) -> Result<F32Buf> {
        let t = self.get(name, expected)?;
        match F32Buf::borrow(t) {
            Some(view) => Ok(view),
            None => {
                Ok(F32Buf::Owned(to_f32(t.dtype, t.data()).ok_or_else(|| {
                    bad_weights(format!("{}: tensor `{name}` does not fit in memory as f32", t.file))
                })?))
            }
        }
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
        self.tensors
            .keys()
            .filter_map(|k| k.strip_prefix("backbone.layers.")?.split('.').next()?.parse::<usize>().ok())
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

/// f32 weights: borrowed in place from the (memory-mapped) file buffer, or converted and owned.
pub enum F32Buf {
    Owned(Vec<f32>),
    /// `len` f32 values at byte `start` of `bytes`; only built when aligned and little-endian.
    Borrowed {
        bytes: Arc<FileBytes>,
        start: usize,
        len: usize,
    },
}

impl F32Buf {
    /// Zero-copy view of an f32 tensor whose data is 4-byte aligned on a little-endian machine.
    fn borrow(t: &RawTensor) -> Option<Self> {
        let aligned = (t.data().as_ptr() as usize) % std::mem::align_of::<f32>() == 0;
        (cfg!(target_endian = "little") && t.dtype == WeightDType::F32 && aligned).then(|| F32Buf::Borrowed {
            bytes: t.bytes.clone(),
            start: t.start,
            len: (t.end - t.start) / 4,
        })
    }
}

impl From<Vec<f32>> for F32Buf {
    fn from(v: Vec<f32>) -> Self {
        F32Buf::Owned(v)
    }
}

impl std::ops::Deref for F32Buf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            F32Buf::Owned(v) => v,
            F32Buf::Borrowed { bytes, start, len } => {
                let data = &bytes[*start..*start + *len * 4];
                // SAFETY: `borrow` checked 4-byte alignment and that the range holds `len` f32s; the
                // buffer is immutable and kept alive by the Arc for as long as this view exists.
                unsafe { std::slice::from_raw_parts(data.as_ptr() as *const f32, *len) }
            }
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
    out.try_reserve_exact(data.len() / dtype.size()).ok()?;
    match dtype {
        WeightDType::F32 => out.extend(data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        WeightDType::F16 => out.extend(data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())),
        WeightDType::BF16 => out.extend(data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        WeightDType::F64 => {
            out.extend(data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("chunk of 8")) as f32))
        }
    }
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
    let want = shape.iter().try_fold(dtype.size(), |acc, &dim| acc.checked_mul(dim));
    if end < start || end > bytes.len() || Some(end - start) != want {
        let name = shown::shown_name(name);
        return Err(bad_weights(format!(
            "{file_label}: tensor `{name}` data range {start}..{end} does not hold {dtype:?} {shape:?} (file truncated or corrupt)"
        )));
    }
    Ok(RawTensor { dtype, shape, file: file_label.to_string(), bytes, start, end })
}

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
