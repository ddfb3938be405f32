//! One attention layer's KV cache for one sequence: keys and values of every token seen so far,
//! token-major (`[tokens, kv_heads · head_dim]`, the layout the k / v projections produce, so an
//! append is one copy), in f32 or f16 ([`KvDtype`]). Storage grows in blocks of [`BLOCK_TOKENS`]
//! tokens (at least doubling), never per token, and a failed growth is a typed error, not an abort.
//!
//! f16 halves the bytes a decode step streams through attention (llama.cpp's default cache type);
//! values are rounded once, on append (`ops::kv_half`), and read back exactly.
//!
//! A hybrid model keeps one of these per attention layer next to its SSM states; the bytes of a cache
//! are exactly its tokens' keys then values (little-endian, in the cache's dtype), so a state made
//! of several caches snapshots as their concatenation.

use half::f16;

use crate::error::{invalid_option, state_mismatch, Result};
use crate::ops::attention::KvSlice;
use crate::ops::kv_half;

/// Tokens a cache grows by at least.
pub const BLOCK_TOKENS: usize = 256;

/// What a cache holds its keys and values in. f32 by default: logits stay as close to a float64
/// reference as the weights allow, and the same on every binding (an f16 rounding can turn a
/// last-bit difference between two SIMD levels' sums into a whole f16 step).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KvDtype {
    #[default]
    F32,
    F16,
}

impl KvDtype {
    /// Bytes of one value.
    pub fn size(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 => 2,
        }
    }

    /// Bytes one token adds to a cache of `width` values per row: its key and its value
    /// (`None` when it overflows). The one rule behind every cache size the core reports.
    pub fn bytes_per_token(self, width: usize) -> Option<usize> {
        width.checked_mul(2 * self.size())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
        }
    }
}

/// Keys or values, `[tokens, width]`.
#[derive(Clone, Debug)]
enum Rows {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl Rows {
    fn new(dtype: KvDtype) -> Self {
        match dtype {
            KvDtype::F32 => Rows::F32(Vec::new()),
            KvDtype::F16 => Rows::F16(Vec::new()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Rows::F32(v) => v.len(),
            Rows::F16(v) => v.len(),
        }
    }

    fn capacity(&self) -> usize {
        match self {
            Rows::F32(v) => v.capacity(),
            Rows::F16(v) => v.capacity(),
        }
    }

    fn try_reserve_exact(&mut self, extra: usize) -> std::result::Result<(), std::collections::TryReserveError> {
        match self {
            Rows::F32(v) => v.try_reserve_exact(extra),
            Rows::F16(v) => v.try_reserve_exact(extra),
        }
    }

    fn truncate(&mut self, len: usize) {
        match self {
            Rows::F32(v) => v.truncate(len),
            Rows::F16(v) => v.truncate(len),
        }
    }

    /// Appends `x` (room reserved by the caller), rounded to the dtype.
    fn extend(&mut self, x: &[f32]) {
        match self {
            Rows::F32(v) => v.extend_from_slice(x),
            Rows::F16(v) => {
                let at = v.len();
                v.resize(at + x.len(), f16::ZERO);
                kv_half::narrow(x, &mut v[at..]);
            }
        }
    }

    fn slice(&self) -> KvSlice<'_> {
        match self {
            Rows::F32(v) => KvSlice::F32(v),
            Rows::F16(v) => KvSlice::F16(v),
        }
    }

    fn write_bytes(&self, out: &mut Vec<u8>) {
        match self {
            Rows::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Rows::F16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        }
    }

    /// Rows of `dtype` from little-endian `bytes` (a whole number of values); a non-finite value is
    /// refused, named by its element index counted from `first`.
    fn read(dtype: KvDtype, bytes: &[u8], first: usize) -> Result<Self> {
        let rows = match dtype {
            KvDtype::F32 => Rows::F32(read_values(bytes, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))?),
            KvDtype::F16 => Rows::F16(read_values(bytes, |b| f16::from_le_bytes([b[0], b[1]]))?),
        };
        let at = match &rows {
            Rows::F32(v) => v.iter().position(|x| !x.is_finite()),
            Rows::F16(v) => v.iter().position(|x| !x.is_finite()),
        };
        match at {
            Some(at) => Err(state_mismatch(format!(
                "kv cache: snapshot holds a non-finite value (NaN or infinity) at element {}",
                first + at
            ))),
            None => Ok(rows),
        }
    }
}

/// The values of `bytes`, `size_of::<T>()` bytes each, into storage reserved without aborting.
fn read_values<T>(bytes: &[u8], value: impl Fn(&[u8]) -> T) -> Result<Vec<T>> {
    let size = std::mem::size_of::<T>();
    let mut v = Vec::new();
    v.try_reserve_exact(bytes.len() / size).map_err(|_| state_mismatch("kv cache: snapshot does not fit in memory"))?;
    v.extend(bytes.chunks_exact(size).map(value));
    Ok(v)
}

#[derive(Clone, Debug)]
pub struct KvCache {
    /// Values per token in each of K and V (`kv_heads · head_dim`).
    width: usize,
    tokens: usize,
    dtype: KvDtype,
    keys: Rows,
    values: Rows,
}

impl KvCache {
    pub fn new(kv_heads: usize, head_dim: usize, dtype: KvDtype) -> Self {
        Self {
            width: kv_heads.saturating_mul(head_dim),
            tokens: 0,
            dtype,
            keys: Rows::new(dtype),
            values: Rows::new(dtype),
        }
    }

    /// Tokens held.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Values per token in K (and in V).
    pub fn width(&self) -> usize {
        self.width
    }

    pub fn dtype(&self) -> KvDtype {
        self.dtype
    }

    /// `[tokens, width]` keys.
    pub(crate) fn keys(&self) -> KvSlice<'_> {
        self.keys.slice()
    }

    /// `[tokens, width]` values.
    pub(crate) fn values(&self) -> KvSlice<'_> {
        self.values.slice()
    }

    /// Appends rows of keys and values (`n · width` values each), rounded to the cache's dtype.
    pub fn append(&mut self, keys: &[f32], values: &[f32]) -> Result<()> {
        if keys.len() != values.len() || self.width == 0 || !keys.len().is_multiple_of(self.width) {
            return Err(crate::error::internal(format!(
                "kv cache: {} keys / {} values are not whole rows of {}",
                keys.len(),
                values.len(),
                self.width
            )));
        }
        let n = keys.len() / self.width;
        self.reserve(n)?;
        self.keys.extend(keys);
        self.values.extend(values);
        self.tokens += n;
        Ok(())
    }

    /// Drops every token from `tokens` on (no-op when it holds fewer): undoes a forward pass that
    /// failed part-way, so all layers of a state keep the same token count.
    pub fn truncate(&mut self, tokens: usize) {
        if tokens < self.tokens {
            self.keys.truncate(tokens * self.width);
            self.values.truncate(tokens * self.width);
            self.tokens = tokens;
        }
    }

    /// Room for `more` tokens: capacity rounded up to a whole block and at least doubled. After it,
    /// appending up to `more` tokens cannot fail.
    pub fn reserve(&mut self, more: usize) -> Result<()> {
        let need = self.tokens.checked_add(more).ok_or_else(|| too_long(self.tokens, more))?;
        let have = self.keys.capacity() / self.width;
        if need <= have {
            return Ok(());
        }
        let target = need.next_multiple_of(BLOCK_TOKENS).max(have.saturating_mul(2));
        let extra =
            target.checked_mul(self.width).map(|t| t - self.keys.len()).ok_or_else(|| too_long(self.tokens, more))?;
        for v in [&mut self.keys, &mut self.values] {
            v.try_reserve_exact(extra).map_err(|_| too_long(self.tokens, more))?;
        }
        Ok(())
    }

    /// Bytes of `tokens` tokens' keys and values (`None` when it overflows).
    pub fn bytes_for(&self, tokens: usize) -> Option<usize> {
        tokens.checked_mul(self.dtype.bytes_per_token(self.width)?)
    }

    /// Appends the keys then the values of the tokens held, little-endian in the cache's dtype.
    pub fn write_bytes(&self, out: &mut Vec<u8>) {
        self.keys.write_bytes(out);
        self.values.write_bytes(out);
    }

    /// Replaces the contents with `tokens` tokens read from `bytes` (exactly [`Self::bytes_for`]
    /// long, as written by [`Self::write_bytes`]); non-finite values are refused.
    pub fn read_bytes(&mut self, bytes: &[u8], tokens: usize) -> Result<()> {
        let want =
            self.bytes_for(tokens).ok_or_else(|| state_mismatch(format!("kv cache: {tokens} tokens is too many")))?;
        if bytes.len() != want {
            return Err(state_mismatch(format!(
                "kv cache: {} bytes for {tokens} tokens of width {} in {}, expected {want}",
                bytes.len(),
                self.width,
                self.dtype.as_str()
            )));
        }
        let (k, v) = bytes.split_at(want / 2);
        let keys = Rows::read(self.dtype, k, 0)?;
        let values = Rows::read(self.dtype, v, k.len() / self.dtype.size())?;
        *self = Self { width: self.width, tokens, dtype: self.dtype, keys, values };
        Ok(())
    }
}

fn too_long(have: usize, more: usize) -> crate::error::PhoenixError {
    invalid_option(format!("kv cache: {have} + {more} tokens do not fit in memory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(s: KvSlice) -> Vec<f32> {
        match s {
            KvSlice::F32(v) => v.to_vec(),
            KvSlice::F16(v) => v.iter().map(|h| h.to_f32()).collect(),
        }
    }

    #[test]
    fn grows_in_blocks_and_round_trips() {
        for dtype in [KvDtype::F32, KvDtype::F16] {
            let mut c = KvCache::new(2, 3, dtype);
            let row: Vec<f32> = (0..6).map(|i| i as f32 * 0.1).collect();
            c.append(&row, &row).unwrap();
            let cap = c.keys.capacity();
            assert_eq!(cap, BLOCK_TOKENS * 6);
            for _ in 1..BLOCK_TOKENS {
                c.append(&row, &row).unwrap();
            }
            assert_eq!(c.keys.capacity(), cap, "no reallocation inside a block");
            c.append(&row, &row).unwrap();
            assert_eq!(c.tokens(), BLOCK_TOKENS + 1);
            assert_eq!(c.keys.capacity(), 2 * cap);
            let mut bytes = Vec::new();
            c.write_bytes(&mut bytes);
            assert_eq!(bytes.len(), c.bytes_for(c.tokens()).unwrap());
            assert_eq!(bytes.len(), c.tokens() * 6 * 2 * dtype.size(), "{dtype:?}: values in the cache's dtype");
            let mut d = KvCache::new(2, 3, dtype);
            d.read_bytes(&bytes, c.tokens()).unwrap();
            assert_eq!((f32s(d.keys()), f32s(d.values()), d.tokens()), (f32s(c.keys()), f32s(c.values()), c.tokens()));
            assert!(d.read_bytes(&bytes[4..], c.tokens()).is_err());
            d.truncate(2);
            assert_eq!(
                (d.tokens(), f32s(d.keys()), f32s(d.values())),
                (2, f32s(c.keys())[..12].to_vec(), f32s(c.values())[..12].to_vec())
            );
            // A NaN among the values (not the keys) is refused and named by its element.
            let mut nan = bytes.clone();
            let at = bytes.len() / 2 + dtype.size();
            match dtype {
                KvDtype::F32 => nan[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes()),
                KvDtype::F16 => nan[at..at + 2].copy_from_slice(&f16::NAN.to_le_bytes()),
            }
            let e = d.read_bytes(&nan, c.tokens()).unwrap_err();
            assert!(e.message.contains(&format!("element {}", c.tokens() * 6 + 1)), "{}", e.message);
            assert_eq!(d.tokens(), 2, "a refused snapshot leaves the cache as it was");
        }
    }

    #[test]
    fn an_f16_cache_rounds_once_on_append_and_saturates() {
        let mut c = KvCache::new(1, 4, KvDtype::F16);
        let keys = [0.1f32, -1e6, 3.0e-6, f32::MAX];
        let values = [1.0f32 / 3.0, 70000.0, -65519.0, 2.5];
        c.append(&keys, &values).unwrap();
        let want = |x: f32| f16::from_f32(x.clamp(-65504.0, 65504.0)).to_f32();
        assert_eq!(f32s(c.keys()), keys.map(want).to_vec());
        assert_eq!(f32s(c.values()), values.map(want).to_vec());
        assert!(f32s(c.keys()).iter().chain(&f32s(c.values())).all(|x| x.is_finite()));
        assert_eq!(c.bytes_for(10), Some(10 * 4 * 2 * 2));
    }
}
