//! safetensors containers: one file, or shards listed by `model.safetensors.index.json`.
//!
//! A sharded checkpoint is read as its index says: each tensor comes from the shard `weight_map`
//! names, and a shard holding a tensor the map places elsewhere (or nowhere), or a map entry its shard
//! lacks, is refused — never "the last shard read wins".

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use safetensors::{Dtype, SafeTensorError, SafeTensors};

use super::files::{plain_file_name, JSON_FILE_CAP};
use super::shown::{json_problem, shown_name};
use super::{raw_tensor, FileBytes, ModelFiles, RawTensor, WeightDType, SAFETENSORS_INDEX_FILE};
use crate::error::{bad_weights, Result};

/// Indexes every tensor of one safetensors buffer. Header and size errors name `label`.
pub(super) fn read(bytes: Arc<FileBytes>, label: &str) -> Result<Vec<(String, RawTensor)>> {
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad_weights(format!("{label}: not a valid safetensors file: {}", header_problem(&e))))?;
    let base = bytes.as_ptr() as usize;
    let mut out = Vec::new();
    out.try_reserve_exact(st.len()).map_err(|_| bad_weights(format!("{label}: too many tensors")))?;
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            Dtype::F32 => WeightDType::F32,
            Dtype::F16 => WeightDType::F16,
            Dtype::BF16 => WeightDType::BF16,
            Dtype::F64 => WeightDType::F64,
            other => {
                let name = shown_name(&name);
                return Err(bad_weights(format!("{label}: tensor `{name}` has unsupported dtype {other:?}")));
            }
        };
        let start = view.data().as_ptr() as usize - base;
        let end = start + view.data().len();
        out.push((name.clone(), raw_tensor(label, &name, dtype, view.shape().to_vec(), bytes.clone(), start, end)?));
    }
    Ok(out)
}

/// Checks a safetensors buffer's header and that its tensor data covers the buffer exactly, without
/// indexing the tensors: the same message [`read`] gives for these faults, from the header pages alone.
pub(super) fn check_header(bytes: &[u8], label: &str) -> Result<()> {
    SafeTensors::read_metadata(bytes)
        .map(|_| ())
        .map_err(|e| bad_weights(format!("{label}: not a valid safetensors file: {}", header_problem(&e))))
}

/// What is wrong with a safetensors header, without quoting it (serde's messages name bad values).
fn header_problem(e: &SafeTensorError) -> String {
    use SafeTensorError::*;
    match e {
        InvalidHeader(_) => "header is not UTF-8 text".to_string(),
        InvalidHeaderDeserialization(e) | JsonError(e) => format!("header: {}", json_problem(e)),
        HeaderTooLarge => "header too large".to_string(),
        HeaderTooSmall | InvalidHeaderLength => "header length is invalid (truncated or corrupt)".to_string(),
        TensorNotFound(_) | InvalidOffset(_) => {
            "a tensor's data offsets are invalid (truncated or corrupt)".to_string()
        }
        TensorInvalidInfo | InvalidTensorView(..) => "a tensor's dtype, shape and offsets disagree".to_string(),
        MetadataIncompleteBuffer => "tensor data does not cover the file (truncated or corrupt)".to_string(),
        ValidationOverflow => "a tensor's size overflows".to_string(),
        MisalignedSlice => "a tensor's data is misaligned".to_string(),
        _ => "unreadable header".to_string(),
    }
}

/// `model.safetensors.index.json`: which shard holds each tensor.
pub(super) struct ShardIndex {
    /// Tensor name → shard file name (a plain file name, checked).
    pub weight_map: BTreeMap<String, String>,
}

impl ShardIndex {
    /// Parses the index (text `text`, named `label` in messages); every shard name must be a plain
    /// file name inside the model folder.
    pub(super) fn parse(text: &str, label: &str) -> Result<Self> {
        if text.len() > JSON_FILE_CAP {
            return Err(bad_weights(format!("{label} is too large ({} bytes; at most {JSON_FILE_CAP})", text.len())));
        }
        let index: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad_weights(format!("{label}: {}", json_problem(&e))))?;
        let map = index
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad_weights(format!("{label}: field `weight_map` missing or not an object")))?;
        let mut weight_map = BTreeMap::new();
        for (tensor, file) in map {
            let tensor_shown = shown_name(tensor);
            let file = file
                .as_str()
                .ok_or_else(|| bad_weights(format!("{label}: weight_map entry `{tensor_shown}` is not a file name")))?;
            plain_file_name(file).map_err(|why| {
                bad_weights(format!(
                    "{label}: weight_map entry `{tensor_shown}` names a shard that is not a plain file name inside the model folder ({why})"
                ))
            })?;
            weight_map.insert(tensor.clone(), file.to_string());
        }
        Ok(Self { weight_map })
    }

    /// The shard files, each once.
    pub(super) fn shards(&self) -> BTreeSet<&str> {
        self.weight_map.values().map(String::as_str).collect()
    }
}

/// The shard files `model.safetensors.index.json` names, sorted, each once; every one must exist.
pub(super) fn shard_files(files: &ModelFiles) -> Result<Vec<String>> {
    let index_label = files.describe(SAFETENSORS_INDEX_FILE);
    let index = ShardIndex::parse(&files.text(SAFETENSORS_INDEX_FILE)?, &index_label)?;
    let shards: Vec<String> = index.shards().into_iter().map(str::to_string).collect();
    if shards.is_empty() {
        return Err(bad_weights(format!("{index_label}: weight_map lists no shards")));
    }
    if let Some(missing) = shards.iter().find(|s| !files.has(s)) {
        return Err(bad_weights(format!(
            "{index_label}: shard {} (named in weight_map) is missing",
            files.describe(missing)
        )));
    }
    Ok(shards)
}

/// Reads `model.safetensors.index.json` and indexes every shard it names, as the map says.
pub(super) fn read_sharded(files: &ModelFiles) -> Result<Vec<(String, RawTensor)>> {
    let index_label = files.describe(SAFETENSORS_INDEX_FILE);
    let index = ShardIndex::parse(&files.text(SAFETENSORS_INDEX_FILE)?, &index_label)?;
    let mut out = Vec::new();
    for shard in index.shards() {
        if !files.has(shard) {
            return Err(bad_weights(format!(
                "{index_label}: shard {} (named in weight_map) is missing",
                files.describe(shard)
            )));
        }
        let label = files.describe(shard);
        for (name, tensor) in read(files.bytes(shard)?, &label)? {
            match index.weight_map.get(&name) {
                Some(home) if home == shard => out.push((name, tensor)),
                Some(home) => {
                    return Err(bad_weights(format!(
                        "{label}: holds tensor `{}`, which weight_map of {index_label} places in {}",
                        shown_name(&name),
                        shown_name(home)
                    )))
                }
                None => {
                    return Err(bad_weights(format!(
                        "{label}: holds tensor `{}`, which weight_map of {index_label} does not list",
                        shown_name(&name)
                    )))
                }
            }
        }
    }
    let found: HashSet<&str> = out.iter().map(|(name, _)| name.as_str()).collect();
    if let Some((name, shard)) = index.weight_map.iter().find(|(name, _)| !found.contains(name.as_str())) {
        return Err(bad_weights(format!(
            "{index_label}: weight_map places tensor `{}` in {}, which does not hold it",
            shown_name(name),
            files.describe(shard)
        )));
    }
    Ok(out)
}
