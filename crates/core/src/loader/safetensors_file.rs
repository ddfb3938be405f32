//! safetensors containers: one file, or shards listed by `model.safetensors.index.json`.

use std::collections::BTreeSet;
use std::sync::Arc;

use safetensors::{Dtype, SafeTensors};

use super::{raw_tensor, FileBytes, ModelFiles, RawTensor, WeightDType, SAFETENSORS_INDEX_FILE};
use crate::error::{bad_weights, Result};

/// Indexes every tensor of one safetensors buffer. Header and size errors name `label`.
pub(super) fn read(bytes: Arc<FileBytes>, label: &str) -> Result<Vec<(String, RawTensor)>> {
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad_weights(format!("{label}: not a valid safetensors file (truncated or corrupt): {e}")))?;
    let base = bytes.as_ptr() as usize;
    let mut out = Vec::with_capacity(st.len());
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            Dtype::F32 => WeightDType::F32,
            Dtype::F16 => WeightDType::F16,
            Dtype::BF16 => WeightDType::BF16,
            Dtype::F64 => WeightDType::F64,
            other => {
                return Err(bad_weights(format!("{label}: tensor `{name}` has unsupported dtype {other:?}")));
            }
        };
        let start = view.data().as_ptr() as usize - base;
        let end = start + view.data().len();
        out.push((name.clone(), raw_tensor(label, &name, dtype, view.shape().to_vec(), bytes.clone(), start, end)?));
    }
    Ok(out)
}

/// The shard files `model.safetensors.index.json` (text `text`, named `label` in messages) lists.
pub(super) fn index_shards(text: &str, label: &str) -> Result<BTreeSet<String>> {
    let index: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| bad_weights(format!("{label}: invalid JSON at line {} column {}: {e}", e.line(), e.column())))?;
    let map = index
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad_weights(format!("{label}: field `weight_map` missing or not an object")))?;
    map.iter()
        .map(|(tensor, file)| {
            file.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad_weights(format!("{label}: weight_map entry `{tensor}` is not a file name")))
        })
        .collect()
}

/// Reads `model.safetensors.index.json` and indexes every shard it names.
pub(super) fn read_sharded(files: &ModelFiles) -> Result<Vec<(String, RawTensor)>> {
    let index_label = files.describe(SAFETENSORS_INDEX_FILE);
    let mut out = Vec::new();
    for shard in index_shards(&files.text(SAFETENSORS_INDEX_FILE)?, &index_label)? {
        if !files.has(&shard) {
            return Err(bad_weights(format!("{index_label}: shard {} is missing", files.describe(&shard))));
        }
        out.extend(read(files.bytes(&shard)?, &files.describe(&shard))?);
    }
    Ok(out)
}
