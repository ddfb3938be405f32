//! The byte format of an exported generation state ("snapshot").
//!
//! All integers little-endian. A fixed-size header says everything needed to know the total length
//! (so a reader never reads more than that, see [`total_len`]), then the payload:
//!
//! | offset | size | field                                                                                   |
//! |--------|------|-----------------------------------------------------------------------------------------|
//! | 0      | 8    | magic `PHXSTATE`                                                                        |
//! | 8      | 4    | format version (u32, currently 2; version 1 had no checksum or weights identity)        |
//! | 12     | 8    | model shape fingerprint (u64, [`crate::session::LoadedModel::fingerprint`])            |
//! | 20     | 8    | weights identity (u64, [`crate::LanguageModel::weights_identity`])                     |
//! | 28     | 4    | `n`: number of token ids in the history (u32, 1 ≤ n ≤ [`MAX_HISTORY`])                 |
//! | 32     | 8    | `m`: byte length of the model state (u64; the model's `state_bytes`)                   |
//! | 40     | 4    | CRC-32 (IEEE) of bytes 0..40 followed by every byte after the header                    |
//! | 44     | 4·n  | token history (u32 each): every token of the context, prompt + generated                |
//! | 44+4n  | m    | `ModelState::to_bytes()` (fixed size for a given SSM)                                  |
//!
//! Size: `44 + 4·n + m` bytes — the model state is fixed for an SSM, the history grows by 4 bytes per
//! token of context.
//!
//! Invariant: the model state has consumed every history token **except the last**, which is still
//! pending. The next step feeds it (together with any new prompt) and samples from the logits that
//! follow — exactly what the uninterrupted generation would have done, so a restored generation
//! yields the same tokens. The history also feeds the repetition penalty and the detokeniser context.

use crate::error::{state_mismatch, Result};

pub const MAGIC: &[u8; 8] = b"PHXSTATE";
pub const VERSION: u32 = 2;
/// Bytes of the fixed header; [`total_len`] needs exactly these.
pub const HEADER_BYTES: usize = 44;
/// Most history tokens a snapshot may hold (64 MiB of ids): bounds what a reader accepts.
pub const MAX_HISTORY: usize = 1 << 24;
const CRC_AT: usize = 40;

/// A parsed snapshot (not yet checked against a model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub fingerprint: u64,
    pub weights_identity: u64,
    pub history: Vec<u32>,
    pub state: Vec<u8>,
}

/// The header fields (checked for magic, version and bounds, not against a model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fingerprint: u64,
    pub weights_identity: u64,
    pub history_len: usize,
    pub state_len: usize,
    crc: u32,
}

impl Header {
    /// Length of the whole snapshot this header announces.
    pub fn total_len(&self) -> usize {
        // Bounded by parse: n ≤ MAX_HISTORY and m fits usize; no overflow on 64-bit or wasm32 for
        // any state that could have been allocated.
        HEADER_BYTES.saturating_add(4 * self.history_len).saturating_add(self.state_len)
    }
}

pub fn encode(fingerprint: u64, weights_identity: u64, history: &[u32], state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + 4 * history.len() + state.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&fingerprint.to_le_bytes());
    out.extend_from_slice(&weights_identity.to_le_bytes());
    out.extend_from_slice(&(history.len() as u32).to_le_bytes());
    out.extend_from_slice(&(state.len() as u64).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    for id in history {
        out.extend_from_slice(&id.to_le_bytes());
    }
    out.extend_from_slice(state);
    let crc = checksum(&out);
    out[CRC_AT..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Parses the fixed header at the start of `bytes` (only its first [`HEADER_BYTES`] are read).
/// Bad magic, another version, an empty or oversized history → `E_STATE_MISMATCH`.
pub fn parse_header(bytes: &[u8]) -> Result<Header> {
    let mut r = Reader { bytes: &bytes[..bytes.len().min(HEADER_BYTES)], at: 0 };
    if r.take(8).ok() != Some(MAGIC.as_slice()) {
        return Err(state_mismatch("state: not a phoenix-local state snapshot (bad magic)"));
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(state_mismatch(format!(
            "state: snapshot format version {version}, this build reads only version {VERSION} (save the state again with this version)"
        )));
    }
    if bytes.len() < HEADER_BYTES {
        return Err(state_mismatch(format!(
            "state: {} bytes is shorter than a snapshot header ({HEADER_BYTES} bytes)",
            bytes.len()
        )));
    }
    let fingerprint = r.u64()?;
    let weights_identity = r.u64()?;
    let history_len = r.u32()? as usize;
    if history_len == 0 {
        return Err(state_mismatch("state: the snapshot holds no tokens"));
    }
    if history_len > MAX_HISTORY {
        return Err(state_mismatch(format!(
            "state: the snapshot header claims {history_len} history tokens, more than the {MAX_HISTORY} a snapshot may hold"
        )));
    }
    let state_len = usize::try_from(r.u64()?)
        .ok()
        .filter(|&m| m <= isize::MAX as usize / 2)
        .ok_or_else(|| state_mismatch("state: the snapshot header claims an impossible model-state size"))?;
    let crc = r.u32()?;
    Ok(Header { fingerprint, weights_identity, history_len, state_len, crc })
}

/// Parses and verifies `bytes`: exact length, checksum; anything malformed → `E_STATE_MISMATCH`.
pub fn decode(bytes: &[u8]) -> Result<Snapshot> {
    let header = parse_header(bytes)?;
    let total = header.total_len();
    if bytes.len() != total {
        return Err(state_mismatch(format!(
            "state: the snapshot is {} bytes but its header says {total} (truncated or with trailing bytes)",
            bytes.len()
        )));
    }
    if checksum(bytes) != header.crc {
        return Err(state_mismatch("state: checksum mismatch: the snapshot was damaged or edited after it was saved"));
    }
    let history_end = HEADER_BYTES + 4 * header.history_len;
    let history = bytes[HEADER_BYTES..history_end]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Snapshot {
        fingerprint: header.fingerprint,
        weights_identity: header.weights_identity,
        history,
        state: bytes[history_end..].to_vec(),
    })
}

/// CRC-32 of the header without its checksum field, then the payload.
fn checksum(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[..CRC_AT]);
    h.update(&bytes[HEADER_BYTES..]);
    h.finalize()
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| state_mismatch("state: snapshot header truncated"))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn sample() -> Vec<u8> {
        encode(0xABCD, 0x1234, &[0, 5, 7], &[1, 2, 3, 4, 5])
    }

    #[test]
    fn round_trip_and_every_truncation_is_a_state_mismatch() {
        let bytes = sample();
        assert_eq!(bytes.len(), HEADER_BYTES + 3 * 4 + 5);
        assert_eq!(parse_header(&bytes).unwrap().total_len(), bytes.len());
        let s = decode(&bytes).unwrap();
        assert_eq!(
            s,
            Snapshot {
                fingerprint: 0xABCD,
                weights_identity: 0x1234,
                history: vec![0, 5, 7],
                state: vec![1, 2, 3, 4, 5]
            }
        );
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]).unwrap_err().code, ErrorCode::StateMismatch, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer).unwrap_err().code, ErrorCode::StateMismatch);
    }

    #[test]
    fn a_flipped_bit_anywhere_is_a_state_mismatch() {
        let bytes = sample();
        for at in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[at] ^= bit;
                let e = decode(&bad).unwrap_err();
                assert_eq!(e.code, ErrorCode::StateMismatch, "byte {at} bit {bit:#x}");
            }
        }
        let mut payload = bytes.clone();
        *payload.last_mut().unwrap() ^= 1;
        assert!(decode(&payload).unwrap_err().message.contains("checksum"));
    }

    #[test]
    fn a_version_1_snapshot_is_refused_with_a_clear_message() {
        // The version-1 layout: magic, version 1, fingerprint, n, history, m, state.
        let mut v1 = MAGIC.to_vec();
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&0xABCDu64.to_le_bytes());
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&7u32.to_le_bytes());
        v1.extend_from_slice(&4u64.to_le_bytes());
        v1.extend_from_slice(&[1, 2, 3, 4]);
        let e = decode(&v1).unwrap_err();
        assert_eq!(e.code, ErrorCode::StateMismatch);
        assert!(e.message.contains("version 1") && e.message.contains("only version 2"), "{}", e.message);
    }

    #[test]
    fn the_header_bounds_what_a_reader_accepts() {
        let mut huge = sample();
        huge[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_header(&huge).unwrap_err().code, ErrorCode::StateMismatch);
        let mut huge_state = sample();
        huge_state[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(parse_header(&huge_state).unwrap_err().code, ErrorCode::StateMismatch);
    }
}
