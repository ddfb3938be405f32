//! The byte format of an exported generation state ("snapshot").
//!
//! All integers little-endian:
//!
//! | offset      | size      | field                                                                  |
//! |-------------|-----------|------------------------------------------------------------------------|
//! | 0           | 8         | magic `PHXSTATE`                                                       |
//! | 8           | 4         | format version (u32, currently 1)                                      |
//! | 12          | 8         | model fingerprint (u64, [`crate::session::LoadedModel::fingerprint`])  |
//! | 20          | 4         | `n`: number of token ids in the history (u32, ≥ 1)                     |
//! | 24          | 4·n       | token history (u32 each): every token of the context, prompt + generated |
//! | 24+4n       | 8         | `m`: byte length of the model state (u64)                              |
//! | 32+4n       | m         | `ModelState::to_bytes()` (fixed size for a given SSM)                  |
//!
//! Invariant: the model state has consumed every history token **except the last**, which is still
//! pending. The next step feeds it (together with any new prompt) and samples from the logits that
//! follow — exactly what the uninterrupted generation would have done, so a restored generation
//! yields the same tokens. The history also feeds the repetition penalty and the detokeniser context.

use crate::error::{state_mismatch, Result};

pub const MAGIC: &[u8; 8] = b"PHXSTATE";
pub const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 8 + 4;

/// A parsed snapshot (not yet checked against a model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub fingerprint: u64,
    pub history: Vec<u32>,
    pub state: Vec<u8>,
}

pub fn encode(fingerprint: u64, history: &[u32], state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 4 * history.len() + 8 + state.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&fingerprint.to_le_bytes());
    out.extend_from_slice(&(history.len() as u32).to_le_bytes());
    for id in history {
        out.extend_from_slice(&id.to_le_bytes());
    }
    out.extend_from_slice(&(state.len() as u64).to_le_bytes());
    out.extend_from_slice(state);
    out
}

/// Parses `bytes`; anything malformed or truncated → `E_STATE_MISMATCH`.
pub fn decode(bytes: &[u8]) -> Result<Snapshot> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(8)? != MAGIC {
        return Err(state_mismatch("state: not a phoenix-local state snapshot (bad magic)"));
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(state_mismatch(format!("state: snapshot format version {version}, this build reads {VERSION}")));
    }
    let fingerprint = r.u64()?;
    let n = r.u32()? as usize;
    if n == 0 {
        return Err(state_mismatch("state: the snapshot holds no tokens"));
    }
    let history_bytes = r.take(n.checked_mul(4).ok_or_else(|| truncated(bytes.len()))?)?;
    let history = history_bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let m = usize::try_from(r.u64()?).map_err(|_| truncated(bytes.len()))?;
    let state = r.take(m)?.to_vec();
    if r.at != bytes.len() {
        return Err(state_mismatch(format!(
            "state: {} trailing bytes after the snapshot ({} bytes expected)",
            bytes.len() - r.at,
            r.at
        )));
    }
    Ok(Snapshot { fingerprint, history, state })
}

fn truncated(len: usize) -> crate::PhoenixError {
    state_mismatch(format!("state: snapshot truncated or corrupt ({len} bytes)"))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end =
            self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| truncated(self.bytes.len()))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn round_trip_and_every_truncation_is_a_state_mismatch() {
        let bytes = encode(0xABCD, &[0, 5, 7], &[1, 2, 3, 4, 5]);
        let s = decode(&bytes).unwrap();
        assert_eq!(s, Snapshot { fingerprint: 0xABCD, history: vec![0, 5, 7], state: vec![1, 2, 3, 4, 5] });
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]).unwrap_err().code, ErrorCode::StateMismatch, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer).unwrap_err().code, ErrorCode::StateMismatch);
    }
}
