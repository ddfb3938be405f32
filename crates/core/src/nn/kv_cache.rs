//! One attention layer's KV cache for one sequence: keys and values of every token seen so far, f32,
//! token-major (`[tokens, kv_heads · head_dim]`, the layout the k / v projections produce, so an
//! append is one copy). Storage grows in blocks of [`BLOCK_TOKENS`] tokens (at least doubling), never
//! per token, and a failed growth is a typed error, not an abort.
//!
//! A hybrid model keeps one of these per attention layer next to its SSM states; the bytes of a cache
//! are exactly its tokens' keys then values, so a state made of several caches snapshots as their
//! concatenation.

use crate::error::{invalid_option, state_mismatch, Result};

/// Tokens a cache grows by at least.
pub const BLOCK_TOKENS: usize = 256;

#[derive(Clone, Debug)]
pub struct KvCache {
    /// Values per token in each of K and V (`kv_heads · head_dim`).
    width: usize,
    tokens: usize,
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl KvCache {
    pub fn new(kv_heads: usize, head_dim: usize) -> Self {
        Self { width: kv_heads.saturating_mul(head_dim), tokens: 0, keys: Vec::new(), values: Vec::new() }
    }

    /// Tokens held.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Values per token in K (and in V).
    pub fn width(&self) -> usize {
        self.width
    }

    /// `[tokens, width]` keys.
    pub fn keys(&self) -> &[f32] {
        &self.keys
    }

    /// `[tokens, width]` values.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Appends rows of keys and values (`n · width` values each).
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
        self.keys.extend_from_slice(keys);
        self.values.extend_from_slice(values);
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
        tokens.checked_mul(self.width)?.checked_mul(8)
    }

    /// Appends the keys then the values of the tokens held, little-endian f32.
    pub fn write_bytes(&self, out: &mut Vec<u8>) {
        for v in self.keys.iter().chain(&self.values) {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// Replaces the contents with `tokens` tokens read from `bytes` (exactly [`Self::bytes_for`]
    /// long, as written by [`Self::write_bytes`]); non-finite values are refused.
    pub fn read_bytes(&mut self, bytes: &[u8], tokens: usize) -> Result<()> {
        let want =
            self.bytes_for(tokens).ok_or_else(|| state_mismatch(format!("kv cache: {tokens} tokens is too many")))?;
        if bytes.len() != want {
            return Err(state_mismatch(format!(
                "kv cache: {} bytes for {tokens} tokens of width {}, expected {want}",
                bytes.len(),
                self.width
            )));
        }
        let mut all = Vec::new();
        all.try_reserve_exact(bytes.len() / 4)
            .map_err(|_| state_mismatch("kv cache: snapshot does not fit in memory"))?;
        all.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        if let Some(at) = all.iter().position(|v| !v.is_finite()) {
            return Err(state_mismatch(format!(
                "kv cache: snapshot holds a non-finite value (NaN or infinity) at element {at}"
            )));
        }
        let values = all.split_off(all.len() / 2);
        *self = Self { width: self.width, tokens, keys: all, values };
        Ok(())
    }
}

fn too_long(have: usize, more: usize) -> crate::error::PhoenixError {
    invalid_option(format!("kv cache: {have} + {more} tokens do not fit in memory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_in_blocks_and_round_trips() {
        let mut c = KvCache::new(2, 3);
        let row: Vec<f32> = (0..6).map(|i| i as f32).collect();
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
        let mut d = KvCache::new(2, 3);
        d.read_bytes(&bytes, c.tokens()).unwrap();
        assert_eq!((d.keys(), d.values(), d.tokens()), (c.keys(), c.values(), c.tokens()));
        assert!(d.read_bytes(&bytes[4..], c.tokens()).is_err());
        d.truncate(2);
        assert_eq!((d.tokens(), d.keys(), d.values()), (2, &c.keys()[..12], &c.values()[..12]));
        let mut nan = bytes.clone();
        nan[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(d.read_bytes(&nan, c.tokens()).is_err());
    }
}
