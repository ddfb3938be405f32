//! Walks a GGUF header before candle's reader sees it. candle allocates what the header declares
//! (`vec![0; len]`, one `Value` per array element), so every count and length is first checked
//! here against the bytes left in the file and against totals no real model comes near; the tensor
//! types, names and data ranges are checked too. Nothing is allocated from a header number before
//! it passed its check.

use std::collections::HashSet;

use crate::error::{bad_weights, unsupported_model, PhoenixError, Result};
use crate::loader::shown::shown_name;
use crate::loader::QuantKind;

/// `GGUF` as the file's first four bytes.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// ggml's default alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most tensors a header may list (the largest real models have a few thousand).
const MAX_TENSORS: u64 = 1 << 16;
/// Most metadata entries (real files: a few dozen).
const MAX_KEYS: u64 = 1 << 16;
/// Most values in all metadata arrays together: a 262k-token vocabulary with scores, types and
/// merges is ~1M; each value costs candle a 32-byte enum.
const MAX_VALUES: u64 = 1 << 23;
/// Most bytes of all metadata strings together (a large vocabulary with a chat template: ~10 MB).
const MAX_STRING_BYTES: u64 = 256 << 20;
/// Longest key or tensor name.
const MAX_NAME: u64 = 1 << 16;
/// Deepest nesting of arrays.
const MAX_DEPTH: usize = 3;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;

/// One tensor as its header entry gives it (dimensions in ggml `ne[]` order, fastest first).
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub name: String,
    pub ne: Vec<u64>,
    pub ggml_type: u32,
    pub offset: u64,
}

/// What a checked header says, and where tensor data starts.
#[derive(Debug, Clone)]
pub struct HeaderFacts {
    pub version: u32,
    pub alignment: u64,
    /// Byte where tensor data starts (the header's end rounded up to `alignment`).
    pub data_start: u64,
    pub tensors: Vec<TensorEntry>,
    /// Metadata keys with a string value (or array element) that is not UTF-8, which GGUF strings
    /// must be. candle's reader replaces such bytes with U+FFFD: the users of a key whose text must
    /// be exact (the vocabulary, the chat template) refuse it instead of running on altered text.
    pub non_utf8_keys: HashSet<String>,
}

/// ggml's name of tensor type `id` (`None` for ids ggml does not define).
pub fn ggml_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return None,
    })
}

/// The block type of ggml type id `id`, when it is one of [`QuantKind`].
pub fn quant_kind(id: u32) -> Option<QuantKind> {
    Some(match id {
        2 => QuantKind::Q4_0,
        3 => QuantKind::Q4_1,
        6 => QuantKind::Q5_0,
        7 => QuantKind::Q5_1,
        8 => QuantKind::Q8_0,
        12 => QuantKind::Q4K,
        13 => QuantKind::Q5K,
        14 => QuantKind::Q6K,
        _ => return None,
    })
}

/// The ggml type ids this build holds: F32, F16, BF16 and the block types of [`QuantKind`].
fn type_is_held(id: u32) -> bool {
    matches!(id, 0 | 1 | 30) || quant_kind(id).is_some()
}

/// Checks the header of GGUF file `bytes` (named `label` in messages).
pub fn check_header(bytes: &[u8], label: &str) -> Result<HeaderFacts> {
    let mut r = Reader { bytes, at: 0, label, values: 0, string_bytes: 0, non_utf8_keys: HashSet::new() };
    let magic = r.take(4, "magic")?;
    if magic != GGUF_MAGIC {
        return Err(bad_weights(format!("{label}: not a GGUF file (wrong magic bytes)")));
    }
    let version = r.u32("version")?;
    if !(version == 2 || version == 3) {
        return Err(unsupported_model(format!("{label}: GGUF version {version} is not supported (2 or 3)")));
    }
    let tensor_count = r.u64("tensor count")?;
    let kv_count = r.u64("metadata count")?;
    // Each entry takes at least 13 (key) / 24 (tensor) bytes: a count the file cannot hold is a lie.
    if tensor_count > MAX_TENSORS || kv_count > MAX_KEYS {
        return Err(r.corrupt(&format!("declares {tensor_count} tensors and {kv_count} metadata entries (too many)")));
    }
    let needed = kv_count * 13 + tensor_count * 24;
    if needed > r.left() {
        return Err(r.corrupt(&format!(
            "declares {tensor_count} tensors and {kv_count} metadata entries, more than its {} bytes can hold",
            bytes.len()
        )));
    }
    let mut alignment = DEFAULT_ALIGNMENT;
    let mut keys = HashSet::new();
    for _ in 0..kv_count {
        let key = r.string("metadata key")?;
        let value_type = r.u32("metadata value type")?;
        if key == "general.alignment" {
            if value_type != 4 {
                return Err(r.corrupt("`general.alignment` is not a u32"));
            }
            let a = r.u32("general.alignment")? as u64;
            if a == 0 || !a.is_power_of_two() || a > 1 << 20 {
                return Err(r.corrupt(&format!("`general.alignment` = {a} is not a power of two up to 2^20")));
            }
            alignment = a;
        } else {
            r.value(value_type, 0, &key)?;
        }
        if !keys.insert(key.clone()) {
            return Err(r.corrupt(&format!("metadata key `{}` appears twice", shown_name(&key))));
        }
    }
    let mut names = HashSet::new();
    let mut tensors = Vec::new();
    tensors.try_reserve_exact(tensor_count as usize).map_err(|_| r.corrupt("too many tensors"))?;
    for _ in 0..tensor_count {
        let name = r.string("tensor name")?;
        let n_dims = r.u32("tensor dimension count")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(r.corrupt(&format!("tensor `{}` has {n_dims} dimensions (1 to 4)", shown_name(&name))));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(r.u64("tensor dimension")?);
        }
        let ggml_type = r.u32("tensor type")?;
        let offset = r.u64("tensor offset")?;
        if !names.insert(name.clone()) {
            return Err(r.corrupt(&format!("tensor `{}` is listed twice", shown_name(&name))));
        }
        tensors.push(TensorEntry { name, ne, ggml_type, offset });
    }
    let data_start = r.at.div_ceil(alignment as usize) as u64 * alignment;
    let file_len = bytes.len() as u64;
    let mut ranges = Vec::with_capacity(tensors.len());
    for t in &tensors {
        ranges.push(check_tensor(t, alignment, data_start, file_len, label)?);
    }
    check_disjoint(&tensors, ranges, label)?;
    let non_utf8_keys = r.non_utf8_keys;
    Ok(HeaderFacts { version, alignment, data_start, tensors, non_utf8_keys })
}

/// A tensor's type is one this build holds, its rows are whole blocks of that type, its offset is
/// aligned and its data lies in the file. Returns its data range (file offsets).
fn check_tensor(
    t: &TensorEntry,
    alignment: u64,
    data_start: u64,
    file_len: u64,
    label: &str,
) -> Result<std::ops::Range<u64>> {
    let name = shown_name(&t.name);
    match ggml_type_name(t.ggml_type) {
        None => {
            return Err(unsupported_model(format!(
                "{label}: tensor `{name}` has ggml type id {}, which this build does not know",
                t.ggml_type
            )))
        }
        Some(type_name) if !type_is_held(t.ggml_type) => {
            return Err(unsupported_model(format!(
                "{label}: tensor `{name}` is stored as {type_name}, a type this build cannot run (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)"
            )))
        }
        Some(_) => {}
    }
    if !t.offset.is_multiple_of(alignment) {
        return Err(bad_weights(format!(
            "{label}: tensor `{name}` starts at data offset {}, not a multiple of the alignment {alignment}",
            t.offset
        )));
    }
    let block = block_elems(t.ggml_type);
    if !t.ne[0].is_multiple_of(block) {
        return Err(bad_weights(format!(
            "{label}: tensor `{name}` has rows of {} values, not whole {} blocks of {block}",
            t.ne[0],
            ggml_type_name(t.ggml_type).unwrap_or("?")
        )));
    }
    let start = data_start.checked_add(t.offset);
    let end = start.zip(tensor_size(t.ggml_type, &t.ne)).and_then(|(start, size)| start.checked_add(size));
    match start.zip(end) {
        Some((start, end)) if end <= file_len => Ok(start..end),
        _ => Err(bad_weights(format!(
            "{label}: tensor `{name}` (shape {:?}, data offset {}) reaches past the end of the file ({file_len} bytes; truncated or corrupt)",
            t.ne, t.offset
        ))),
    }
}

/// No byte of tensor data belongs to two tensors (llama.cpp lays them out one after the other and
/// refuses other layouts): overlapping ranges would make one tensor silently read another's data.
fn check_disjoint(tensors: &[TensorEntry], ranges: Vec<std::ops::Range<u64>>, label: &str) -> Result<()> {
    let mut order: Vec<usize> = (0..tensors.len()).filter(|&i| !ranges[i].is_empty()).collect();
    order.sort_unstable_by_key(|&i| ranges[i].start);
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if ranges[b].start < ranges[a].end {
            return Err(bad_weights(format!(
                "{label}: tensors `{}` and `{}` overlap in the file (data offsets {} and {}; corrupt)",
                shown_name(&tensors[a].name),
                shown_name(&tensors[b].name),
                tensors[a].offset,
                tensors[b].offset
            )));
        }
    }
    Ok(())
}

/// Values per block of held type `id` (1 for the float types).
fn block_elems(id: u32) -> u64 {
    quant_kind(id).map_or(1, |kind| kind.block_elems() as u64)
}

/// Bytes of a tensor of held type `id` with dimensions `ne` (ggml order); `None` on overflow or a
/// row of partial blocks.
fn tensor_size(id: u32, ne: &[u64]) -> Option<u64> {
    let (block_elems, block_bytes): (u64, u64) = match id {
        0 => (1, 4),
        1 | 30 => (1, 2),
        other => {
            let kind = quant_kind(other)?;
            (kind.block_elems() as u64, kind.block_bytes() as u64)
        }
    };
    let (&row, rest) = ne.split_first()?;
    if row % block_elems != 0 {
        return None;
    }
    rest.iter().try_fold((row / block_elems).checked_mul(block_bytes)?, |acc, &d| acc.checked_mul(d))
}

/// A cursor over the header bytes that refuses to read or promise past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    label: &'a str,
    values: u64,
    string_bytes: u64,
    non_utf8_keys: HashSet<String>,
}

impl<'a> Reader<'a> {
    fn left(&self) -> u64 {
        (self.bytes.len() - self.at) as u64
    }

    fn corrupt(&self, what: &str) -> PhoenixError {
        bad_weights(format!("{}: GGUF header {what} (truncated or corrupt)", self.label))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if (n as u64) > self.left() {
            return Err(self.corrupt(&format!("ends inside the {what}")));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }

    /// A length-prefixed string, checked against the bytes left and the totals.
    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.string_len(what)?;
        if (what == "metadata key" || what == "tensor name") && len > MAX_NAME {
            return Err(self.corrupt(&format!("has a {what} of {len} bytes")));
        }
        Ok(String::from_utf8_lossy(self.take(len as usize, what)?).into_owned())
    }

    fn string_len(&mut self, what: &str) -> Result<u64> {
        let len = self.u64(what)?;
        if len > self.left() {
            return Err(self.corrupt(&format!("declares a {what} of {len} bytes, past the end of the file")));
        }
        self.string_bytes += len;
        if self.string_bytes > MAX_STRING_BYTES {
            return Err(self.corrupt(&format!("holds more than {MAX_STRING_BYTES} bytes of strings")));
        }
        Ok(len)
    }

    /// Skips one metadata value of type `value_type`, counting what candle would allocate.
    fn value(&mut self, value_type: u32, depth: usize, key: &str) -> Result<()> {
        let fixed = |t: u32| -> Option<usize> {
            Some(match t {
                0 | 1 | 7 => 1,
                2 | 3 => 2,
                4..=6 => 4,
                10..=12 => 8,
                _ => return None,
            })
        };
        if let Some(n) = fixed(value_type) {
            self.take(n, "metadata value")?;
            return Ok(());
        }
        match value_type {
            8 => {
                let len = self.string_len("metadata string")?;
                let text = self.take(len as usize, "metadata string")?;
                if std::str::from_utf8(text).is_err() && !self.non_utf8_keys.contains(key) {
                    self.non_utf8_keys.insert(key.to_string());
                }
                Ok(())
            }
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(self.corrupt(&format!("nests arrays deeper than {MAX_DEPTH} levels")));
                }
                let elem = self.u32("array element type")?;
                let len = self.u64("array length")?;
                let min_size = match elem {
                    8 => 8,
                    9 => 12,
                    t => fixed(t).ok_or_else(|| self.bad_type(t, key))? as u64,
                };
                if len.saturating_mul(min_size) > self.left() {
                    return Err(self.corrupt(&format!(
                        "declares an array `{}` of {len} values, more than the file holds",
                        shown_name(key)
                    )));
                }
                self.values = self.values.saturating_add(len);
                if self.values > MAX_VALUES {
                    return Err(self.corrupt(&format!("holds more than {MAX_VALUES} metadata values")));
                }
                match fixed(elem) {
                    Some(n) => {
                        self.take(n * len as usize, "array")?;
                    }
                    None => {
                        for _ in 0..len {
                            self.value(elem, depth + 1, key)?;
                        }
                    }
                }
                Ok(())
            }
            t => Err(self.bad_type(t, key)),
        }
    }

    fn bad_type(&self, t: u32, key: &str) -> PhoenixError {
        self.corrupt(&format!("gives metadata `{}` the unknown value type {t}", shown_name(key)))
    }
}
