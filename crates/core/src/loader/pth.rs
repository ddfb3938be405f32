//! PyTorch zip checkpoints (`pytorch_model.bin`, as saved by `torch.save(state_dict)`).
//!
//! candle's `pickle::Stack` interprets the pickle opcodes into plain objects (it never imports or runs
//! Python code), and `Object::into_tensor_info` turns each `_rebuild_tensor_v2` call into a dtype, layout
//! and storage entry name. We do the zip handling ourselves over a byte buffer, so the same code reads a
//! memory-mapped file or bytes handed over in memory (candle's `PthTensors` needs a path).

use std::io::{Cursor, Read};
use std::sync::Arc;

use candle_core::pickle::{Object, Stack};
use candle_core::DType;

use super::{raw_tensor, FileBytes, RawTensor, WeightDType};
use crate::error::{bad_weights, Result};

pub(super) fn read(bytes: Arc<FileBytes>, label: &str) -> Result<Vec<(String, RawTensor)>> {
    let corrupt = |what: String| bad_weights(format!("{label}: not a readable PyTorch checkpoint: {what}"));
    let mut zip = zip::ZipArchive::new(Cursor::new(&bytes[..])).map_err(|e| corrupt(e.to_string()))?;
    let names: Vec<String> = zip.file_names().filter_map(|n| n.ok()).map(|n| n.into_owned()).collect();
    let pkl =
        names.iter().find(|n| n.ends_with("data.pkl")).ok_or_else(|| corrupt("no data.pkl entry".to_string()))?.clone();
    let dir_name = std::path::PathBuf::from(pkl.strip_suffix(".pkl").unwrap_or(&pkl));

    let object = {
        let entry = zip.by_name(&pkl).map_err(|e| corrupt(e.to_string()))?;
        let mut reader = std::io::BufReader::new(entry);
        let mut stack = Stack::empty();
        stack.read_loop(&mut reader).map_err(|e| corrupt(format!("pickle: {e}")))?;
        stack.finalize().map_err(|e| corrupt(format!("pickle: {e}")))?
    };
    let entries = match object {
        Object::Dict(entries) => entries,
        // `OrderedDict` pickles as a reduce/build around the dict items.
        Object::Build { args, .. } => match *args {
            Object::Dict(entries) => entries,
            _ => return Err(corrupt("top-level object is not a state dict".to_string())),
        },
        Object::Reduce { args, .. } => match *args {
            Object::Dict(entries) => entries,
            _ => return Err(corrupt("top-level object is not a state dict".to_string())),
        },
        _ => return Err(corrupt("top-level object is not a state dict".to_string())),
    };

    let mut out = Vec::new();
    for (key, value) in entries {
        let info = match value.into_tensor_info(key, &dir_name) {
            Ok(Some(info)) => info,
            Ok(None) => continue, // not a tensor (e.g. metadata)
            Err(e) => return Err(corrupt(format!("tensor entry: {e}"))),
        };
        let name = info.name.clone();
        let dtype = match info.dtype {
            DType::F32 => WeightDType::F32,
            DType::F16 => WeightDType::F16,
            DType::BF16 => WeightDType::BF16,
            DType::F64 => WeightDType::F64,
            other => return Err(bad_weights(format!("{label}: tensor `{name}` has unsupported dtype {other:?}"))),
        };
        if !info.layout.is_contiguous() {
            return Err(bad_weights(format!("{label}: tensor `{name}` is not stored contiguously")));
        }
        let mut storage = Vec::new();
        zip.by_name(&info.path)
            .map_err(|e| corrupt(format!("storage {} of tensor `{name}`: {e}", info.path)))?
            .read_to_end(&mut storage)
            .map_err(|e| corrupt(format!("storage {} of tensor `{name}`: {e}", info.path)))?;
        let start = info.layout.start_offset() * dtype.size();
        let shape = info.layout.dims().to_vec();
        let len = shape.iter().product::<usize>() * dtype.size();
        let tensor = raw_tensor(label, &name, dtype, shape, Arc::new(FileBytes::Owned(storage)), start, start + len)?;
        out.push((name, tensor));
    }
    Ok(out)
}
