//! What custom ops' CPU bodies share: f32 slices out of candle storages, and the CUDA slot's error.

use candle_core::{bail, CpuStorage, Layout, Result, Storage};

/// The contiguous f32 values `layout` names in `storage`.
pub(crate) fn f32s<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(values) = storage else { bail!("{op}: {what} must be f32") };
    match layout.contiguous_offsets() {
        // An empty view may sit past its (empty) storage: a zero-row narrow keeps its start offset.
        Some((start, end)) if start == end => Ok(&[]),
        Some((start, end)) => match values.get(start..end) {
            Some(v) => Ok(v),
            None => bail!("{op}: {what} lies outside its storage"),
        },
        None => bail!("{op}: {what} must be contiguous"),
    }
}

/// [`f32s`] for the operand an in-place op updates.
pub(crate) fn f32s_mut<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
    op: &str,
    what: &str,
) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(values) = storage else { bail!("{op}: {what} must be f32") };
    match layout.contiguous_offsets() {
        Some((start, end)) if start == end => Ok(&mut []),
        Some((start, end)) => match values.get_mut(start..end) {
            Some(v) => Ok(v),
            None => bail!("{op}: {what} lies outside its storage"),
        },
        None => bail!("{op}: {what} must be contiguous"),
    }
}

/// The contiguous f32 values of an operand a custom op holds besides the ones candle passes it
/// (lock it with `Tensor::storage_and_layout` for as long as the slice is used).
pub(crate) fn held_f32s<'a>(storage: &'a Storage, layout: &Layout, op: &str, what: &str) -> Result<&'a [f32]> {
    match storage {
        Storage::Cpu(cpu) => f32s(cpu, layout, op, what),
        _ => bail!("{op}: {what} is not on the CPU while the op runs there"),
    }
}

/// The CUDA body of an op this build has no CUDA kernel for.
pub(crate) fn no_cuda<T>(op: &str) -> Result<T> {
    bail!("{op}: phoenix-core was not built with CUDA kernels (CPU only)")
}

/// Outputs from this many values up are zeroed by the pool's threads (a prefill's per-layer outputs,
/// 1.5–6 MB for Mamba-130M at 512 tokens); smaller ones by the allocator.
const PARALLEL_ZERO_MIN: usize = 1 << 18;

/// `len` zeros for an op's output. Fallible: too large is an error, not an abort.
///
/// Large outputs are zeroed across the thread pool: mimalloc hands back a layer's freed buffers to
/// the next layer, and its one serial memset of them was ~1.3 % of a Mamba-130M prefill's CPU time
/// with the other thread idle (a fresh buffer's page faults are taken by the same threads).
pub(crate) fn zeros(len: usize, op: &str) -> Result<Vec<f32>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    if len >= PARALLEL_ZERO_MIN && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        let mut out = reserved(len, op)?;
        out.spare_capacity_mut()[..len].par_chunks_mut(1 << 16).for_each(|chunk| {
            for v in chunk {
                v.write(0.0);
            }
        });
        // SAFETY: the first `len` values were just written (capacity ≥ len).
        unsafe { out.set_len(len) };
        return Ok(out);
    }
    let Ok(layout) = std::alloc::Layout::array::<f32>(len) else { bail!("{op}: output of {len} values is too large") };
    // SAFETY: `layout` has a non-zero size; a non-null result is `len` zeroed f32s (all-zero bits are
    // 0.0), allocated with the global allocator under exactly the layout `Vec` frees it with.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout) as *mut f32;
        if ptr.is_null() {
            bail!("{op}: output of {len} values does not fit in memory");
        }
        Ok(Vec::from_raw_parts(ptr, len, len))
    }
}

/// `len` values for an op output that its kernel writes in full before anything reads it (each
/// caller says why): no zeroing pass. Zeroing a Mamba-130M prefill's outputs cost ~1.7 % of it
/// (400 MB of memset over 24 layers). Unit tests fill the buffer with NaN instead, so an output a
/// kernel leaves unwritten shows up in every result computed from it.
pub(crate) fn for_overwrite(len: usize, op: &str) -> Result<Vec<f32>> {
    let mut out = reserved(len, op)?;
    if cfg!(test) {
        out.resize(len, f32::NAN);
    } else {
        // SAFETY: capacity ≥ len (reserved above); f32 has no invalid bit patterns, and the caller's
        // kernel writes every value before any is read (the contract of this function).
        unsafe { out.set_len(len) };
    }
    Ok(out)
}

/// An empty vector with room for `len` values; too large is an error, not an abort.
fn reserved(len: usize, op: &str) -> Result<Vec<f32>> {
    let mut out: Vec<f32> = Vec::new();
    if out.try_reserve_exact(len).is_err() {
        bail!("{op}: output of {len} values does not fit in memory");
    }
    Ok(out)
}
