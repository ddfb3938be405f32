//! A GGUF file (llama.cpp's single-file format, v2/v3): metadata and tensor index read with candle's
//! `gguf_file` after [`super::gguf_guard`] checked the header, tensor data left in the (memory-mapped)
//! file buffer. Nothing is dequantized: F32/F16/BF16 tensors become the usual raw tensors, ggml block
//! types `WeightDType::Quant`.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;

use super::gguf_guard::{check_header, HeaderFacts};
use super::shown::shown_name;
use super::{raw_tensor, FileBytes, ModelFiles, QuantKind, RawTensor, WeightDType};
use crate::error::{bad_config, bad_weights, tokenizer_error, Result};
use crate::tokenizer::{Tokenizer, TOKENIZER_FILE};

/// A parsed GGUF file.
pub struct GgufFile {
    /// How messages name the file.
    pub label: String,
    pub metadata: HashMap<String, Value>,
    /// Tensors by their GGUF names, in PyTorch dimension order (ggml's `ne[]` reversed).
    pub tensors: HashMap<String, RawTensor>,
    pub facts: HeaderFacts,
}

impl GgufFile {
    /// Reads the GGUF model of `files` (its one `.gguf` file), once per `files`.
    pub fn open_model(files: &ModelFiles) -> Result<Arc<Self>> {
        if let Some(parsed) = files.parsed_gguf.get() {
            return Ok(parsed.clone());
        }
        let name = files.gguf_file()?.ok_or_else(|| bad_weights(format!("{}: no GGUF file", files.describe_root())))?;
        let parsed = Arc::new(Self::read(files.bytes(&name)?, &files.describe(&name))?);
        Ok(files.parsed_gguf.get_or_init(|| parsed).clone())
    }

    /// Checks and reads GGUF `bytes` (named `label` in messages).
    pub fn read(bytes: Arc<FileBytes>, label: &str) -> Result<Self> {
        let facts = check_header(&bytes, label)?;
        // The guard walked every count and length; candle reads the same checked header.
        let content = Content::read(&mut Cursor::new(&bytes[..]))
            .map_err(|_| bad_weights(format!("{label}: the GGUF reader refused the header (corrupt)")))?;
        if content.tensor_data_offset != facts.data_start {
            return Err(bad_weights(format!("{label}: GGUF header and tensor data disagree (corrupt)")));
        }
        let mut tensors = HashMap::new();
        for (name, info) in &content.tensor_infos {
            let dtype = weight_dtype(info.ggml_dtype).ok_or_else(|| {
                bad_weights(format!("{label}: tensor `{}` has a type this build does not hold", shown_name(name)))
            })?;
            let shape = info.shape.dims().to_vec();
            let start = usize::try_from(facts.data_start + info.offset).map_err(|_| {
                bad_weights(format!("{label}: tensor `{}` lies past the address space", shown_name(name)))
            })?;
            let size = dtype.tensor_bytes(&shape).ok_or_else(|| {
                bad_weights(format!(
                    "{label}: tensor `{}` of shape {shape:?} is not whole {} blocks",
                    shown_name(name),
                    dtype.name()
                ))
            })?;
            let end = start.checked_add(size).ok_or_else(|| bad_weights(format!("{label}: tensor size overflows")))?;
            tensors.insert(name.clone(), raw_tensor(label, name, dtype, shape, bytes.clone(), start, end)?);
        }
        Ok(Self { label: label.to_string(), metadata: content.metadata, tensors, facts })
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.str_req("general.architecture")
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    fn wrong_type(&self, key: &str, want: &str) -> crate::error::PhoenixError {
        bad_config(format!("{}: metadata `{}` is not {want}", self.label, shown_name(key)))
    }

    fn missing(&self, key: &str) -> crate::error::PhoenixError {
        bad_config(format!("{}: metadata `{}` is missing", self.label, shown_name(key)))
    }

    /// A non-negative integer of any width.
    pub fn u64_opt(&self, key: &str) -> Result<Option<u64>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        as_u64(v).map(Some).ok_or_else(|| self.wrong_type(key, "a non-negative integer"))
    }

    pub fn u64_req(&self, key: &str) -> Result<u64> {
        self.u64_opt(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let x = match v {
            Value::F32(x) => *x as f64,
            Value::F64(x) => *x,
            other => as_u64(other).map(|u| u as f64).ok_or_else(|| self.wrong_type(key, "a number"))?,
        };
        if !x.is_finite() {
            return Err(self.wrong_type(key, "a finite number"));
        }
        Ok(Some(x))
    }

    pub fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong_type(key, "a boolean")),
        }
    }

    pub fn str_opt(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong_type(key, "a string")),
        }
    }

    pub fn str_req(&self, key: &str) -> Result<&str> {
        self.str_opt(key)?.ok_or_else(|| self.missing(key))
    }

    /// An integer, or an array of integers (one per layer).
    pub fn u64_list_opt(&self, key: &str) -> Result<Option<Vec<u64>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| as_u64(v).ok_or_else(|| self.wrong_type(key, "a list of non-negative integers")))
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(v) => as_u64(v).map(|u| Some(vec![u])).ok_or_else(|| self.wrong_type(key, "an integer")),
        }
    }

    /// Length of an array value.
    pub fn array_len(&self, key: &str) -> Option<usize> {
        match self.get(key) {
            Some(Value::Array(items)) => Some(items.len()),
            _ => None,
        }
    }

    /// The dtype the large matrices are stored in: one type name, or `mixed` (what `info` shows).
    pub fn matrix_dtype(&self) -> String {
        let mut names: Vec<&str> =
            self.tensors.values().filter(|t| t.shape.len() >= 2).map(|t| t.dtype.name()).collect();
        names.sort_unstable();
        names.dedup();
        match names.as_slice() {
            [one] => one.to_string(),
            [] => "f32".to_string(),
            _ => "mixed".to_string(),
        }
    }

    /// Bytes of all tensor data.
    pub fn weight_bytes(&self) -> usize {
        self.tensors.values().map(|t| t.end - t.start).sum()
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match *v {
        Value::U8(x) => Some(x as u64),
        Value::U16(x) => Some(x as u64),
        Value::U32(x) => Some(x as u64),
        Value::U64(x) => Some(x),
        Value::I8(x) => u64::try_from(x).ok(),
        Value::I16(x) => u64::try_from(x).ok(),
        Value::I32(x) => u64::try_from(x).ok(),
        Value::I64(x) => u64::try_from(x).ok(),
        _ => None,
    }
}

/// The dtype a ggml type is held as; `None` for types the guard already refused.
fn weight_dtype(dtype: GgmlDType) -> Option<WeightDType> {
    match dtype {
        GgmlDType::F32 => Some(WeightDType::F32),
        GgmlDType::F16 => Some(WeightDType::F16),
        GgmlDType::BF16 => Some(WeightDType::BF16),
        other => QuantKind::from_ggml(other).map(WeightDType::Quant),
    }
}

/// The tokenizer of a GGUF model: `tokenizer.json` next to the file when there is one, else the
/// one its metadata describes (`tokenizer.ggml.*`, tokenizing as llama.cpp does). The one place
/// that decides it.
pub fn gguf_tokenizer(files: &ModelFiles, gguf: &GgufFile) -> Result<Tokenizer> {
    if files.has(TOKENIZER_FILE) {
        let shown = files.describe(TOKENIZER_FILE);
        let bytes = files
            .read_capped(TOKENIZER_FILE, crate::loader::files::TOKENIZER_FILE_CAP)
            .map_err(|e| tokenizer_error(format!("{shown}: cannot read tokenizer: {}", e.message)))?;
        return Tokenizer::from_bytes_named(&bytes, shown);
    }
    // A token or merge altered by the reader (invalid UTF-8 → U+FFFD) would tokenize wrongly, or
    // make two tokens one, without a word: the vocabulary must be the file's exact text.
    let altered = gguf.facts.non_utf8_keys.iter().filter(|k| k.starts_with("tokenizer.ggml.")).min();
    if let Some(key) = altered {
        return Err(tokenizer_error(format!(
            "{}: metadata `{}` holds text that is not valid UTF-8 (corrupt)",
            gguf.label,
            crate::loader::shown::shown_name(key)
        )));
    }
    crate::tokenizer::tokenizer_from_gguf(&gguf.metadata, &gguf.label)
}
