//! PyTorch zip checkpoints (`pytorch_model.bin`, as saved by `torch.save(state_dict)`).
//!
//! The pickle (`<archive>/data.pkl`) is first replayed by `pickle_guard` (bounded depth, objects, memo
//! and length), then decoded by candle's `pickle::Stack`, which interprets the opcodes into plain objects
//! and never imports or runs Python code; `pth_tensor` reads each state-dict value as a view into a
//! storage (`<archive>/data/<key>`). torch.save stores zip entries uncompressed, so each storage is a byte
//! range of the checkpoint itself: tensors borrow it (no read, no copy, however many tensors share it).
//! The same code serves a memory-mapped file and bytes handed over in memory.

use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::ops::Range;
use std::sync::Arc;

use candle_core::pickle::{Object, Stack};
use zip::{CompressionMethod, ZipArchive};

use super::pickle_guard;
use super::pth_tensor::{tensor_view, StorageId, TensorView};
use super::{raw_tensor, FileBytes, RawTensor};
use crate::error::{bad_weights, Result};

pub(super) fn read(bytes: Arc<FileBytes>, label: &str) -> Result<Vec<(String, RawTensor)>> {
    let corrupt = |what: String| bad_weights(format!("{label}: not a readable PyTorch checkpoint: {what}"));
    let mut zip = ZipArchive::new(Cursor::new(&bytes[..])).map_err(|e| corrupt(e.to_string()))?;
    let pkl = zip
        .file_names()
        .filter_map(|n| n.ok())
        .find(|n| n == "data.pkl" || n.ends_with("/data.pkl"))
        .ok_or_else(|| corrupt("no data.pkl entry".to_string()))?
        .to_string();
    let prefix = &pkl[..pkl.len() - "data.pkl".len()];

    let pickle = &bytes[stored_range(&mut zip, bytes.len(), &pkl).map_err(|e| corrupt(format!("data.pkl: {e}")))?];
    pickle_guard::check(pickle).map_err(|e| corrupt(format!("data.pkl: {e}")))?;
    let mut stack = Stack::empty();
    // After the guard's replay candle should not fail; its messages can quote objects, so they stay out.
    let object = stack
        .read_loop(&mut &pickle[..])
        .and_then(|()| stack.finalize())
        .map_err(|_| corrupt("data.pkl: the pickle could not be decoded".to_string()))?;
    let entries = state_dict_entries(object).ok_or_else(|| corrupt("top-level object is not a state dict".into()))?;

    let mut storages: HashMap<String, (StorageId, Range<usize>)> = HashMap::new();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (key, value) in &entries {
        let Object::Unicode(name) = key else { continue };
        let view = match tensor_view(value) {
            Ok(Some(view)) => view,
            Ok(None) => continue, // not a tensor (e.g. metadata)
            Err(problem) => return Err(bad_weights(format!("{label}: tensor `{name}` {problem}"))),
        };
        if !seen.insert(name.clone()) {
            return Err(bad_weights(format!("{label}: tensor `{name}` appears twice in the state dict")));
        }
        let storage_bytes = match storages.get(&view.storage.key) {
            Some((id, range)) if *id == view.storage => range.clone(),
            Some(_) => {
                return Err(bad_weights(format!(
                    "{label}: tensor `{name}` describes its storage with another dtype or size than an earlier tensor"
                )))
            }
            None => {
                let range = storage_range(&mut zip, bytes.len(), prefix, &view.storage)
                    .map_err(|e| bad_weights(format!("{label}: storage of tensor `{name}`: {e}")))?;
                storages.insert(view.storage.key.clone(), (view.storage.clone(), range.clone()));
                range
            }
        };
        // The view lies inside its storage (pth_tensor checked it in elements) and the storage's bytes are
        // exactly its elements (storage_range checked), so this cannot fail; checked all the same.
        let (start, end) = view_bytes(&view, &storage_bytes)
            .ok_or_else(|| bad_weights(format!("{label}: tensor `{name}` lies outside its storage")))?;
        let tensor = raw_tensor(label, name, view.storage.dtype, view.shape, bytes.clone(), start, end)?;
        out.push((name.clone(), tensor));
    }
    Ok(out)
}

/// Byte range of `view` in the checkpoint, given the byte range of its storage.
fn view_bytes(view: &TensorView, storage: &Range<usize>) -> Option<(usize, usize)> {
    let size = view.storage.dtype.size()?;
    let start = storage.start.checked_add(view.offset.checked_mul(size)?)?;
    let end = start.checked_add(view.numel.checked_mul(size)?)?;
    (end <= storage.end).then_some((start, end))
}

/// The key/value pairs of the top-level state dict (`OrderedDict` decodes as a dict, possibly rebuilt).
fn state_dict_entries(object: Object) -> Option<Vec<(Object, Object)>> {
    match object {
        Object::Dict(entries) => Some(entries),
        Object::Build { args, .. } | Object::Reduce { args, .. } => match *args {
            Object::Dict(entries) => Some(entries),
            _ => None,
        },
        _ => None,
    }
}

/// Byte range of storage `id` in the checkpoint: its entry must hold exactly `numel` elements.
fn storage_range(
    zip: &mut ZipArchive<Cursor<&[u8]>>,
    archive_len: usize,
    prefix: &str,
    id: &StorageId,
) -> std::result::Result<Range<usize>, String> {
    let range = stored_range(zip, archive_len, &format!("{prefix}data/{}", id.key))?;
    let want = id
        .numel
        .checked_mul(id.dtype.size().ok_or("storage dtype has no element size")?)
        .ok_or("storage size overflows")?;
    if range.len() != want {
        return Err(format!(
            "entry holds {} bytes, the pickle declares {} elements of {:?} ({want} bytes)",
            range.len(),
            id.numel,
            id.dtype
        ));
    }
    Ok(range)
}

/// Where an uncompressed entry's bytes lie in the archive, checked against the archive's length.
fn stored_range(
    zip: &mut ZipArchive<Cursor<&[u8]>>,
    archive_len: usize,
    name: &str,
) -> std::result::Result<Range<usize>, String> {
    let index = zip.index_for_name(name).ok_or("entry is missing from the archive")?;
    let entry = zip.by_index_raw(index).map_err(|e| e.to_string())?;
    if entry.encrypted() || entry.compression() != CompressionMethod::Stored || entry.compressed_size() != entry.size()
    {
        return Err("entry is compressed or encrypted (torch.save stores entries as they are)".to_string());
    }
    let start = entry.data_start().and_then(|s| usize::try_from(s).ok()).ok_or("entry has no data offset")?;
    let end = usize::try_from(entry.size()).ok().and_then(|len| start.checked_add(len));
    match end {
        Some(end) if end <= archive_len => Ok(start..end),
        _ => Err(format!("entry of {} bytes runs past the end of the file", entry.size())),
    }
}
