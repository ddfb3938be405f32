//! The byte format of an exported generation state ("snapshot").
//!
//! All integers little-endian. A fixed-size header says everything needed to know the total length
//! (so a reader never reads more than that, see [`Header::total_len`]) and what the model state is,
//! then the payload:
//!
//! | offset | size | field                                                                                   |
//! |--------|------|-----------------------------------------------------------------------------------------|
//! | 0      | 8    | magic `PHXSTATE`                                                                        |
//! | 8      | 4    | format version (u32, currently 3; 2 had no state layout, 1 no checksum)                 |
//! | 12     | 8    | model shape fingerprint (u64, [`crate::session::LoadedModel::fingerprint`])            |
//! | 20     | 8    | weights identity (u64, [`crate::LanguageModel::weights_identity`])                     |
//! | 28     | 4    | `n`: number of token ids in the history (u32, 1 ≤ n ≤ [`MAX_HISTORY`])                 |
//! | 32     | 8    | `m`: byte length of the model state (u64)                                              |
//! | 40     | 8    | tokens the model state has consumed (u64; always `n - 1`, see the invariant)           |
//! | 48     | 16   | state family, ASCII, NUL-padded (`mamba`)                                              |
//! | 64     | 8    | state dtype, ASCII, NUL-padded (`f32`)                                                 |
//! | 72     | 4    | `r`: rank of the state dims (u32, ≤ 8)                                                 |
//! | 76     | 64   | state dims (8 × u64, the first `r` used, the rest 0)                                   |
//! | 140    | 4    | CRC-32 (IEEE) of bytes 0..140 followed by every byte after the header                   |
//! | 144    | 4·n  | token history (u32 each): every token of the context, prompt + generated                |
//! | 144+4n | m    | `ModelState::to_bytes()` (fixed size for an SSM; grows with the tokens for a KV cache) |
//!
//! Invariant: the model state has consumed every history token **except the last**, which is still
//! pending. The next step feeds it (together with any new prompt) and samples from the logits that
//! follow — exactly what the uninterrupted generation would have done, so a restored generation
//! yields the same tokens. The history also feeds the repetition penalty and the detokeniser context.

use crate::error::{state_mismatch, Result};
use crate::model::StateLayout;

pub const MAGIC: &[u8; 8] = b"PHXSTATE";
pub const VERSION: u32 = 3;
/// Bytes of the fixed header; [`Header::total_len`] needs exactly these.
pub const HEADER_BYTES: usize = 144;
/// Most history tokens a snapshot may hold (64 MiB of ids): bounds what a reader accepts.
pub const MAX_HISTORY: usize = 1 << 24;
const CRC_AT: usize = 140;
const FAMILY_BYTES: usize = 16;
const DTYPE_BYTES: usize = 8;
const MAX_RANK: usize = 8;

/// A parsed snapshot (not yet checked against a model). The model state stays in the caller's
/// bytes: a KV cache snapshot can be hundreds of MB, and it is read straight into the new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot<'a> {
    pub fingerprint: u64,
    pub weights_identity: u64,
    pub layout: StateLayout,
    pub history: Vec<u32>,
    pub state: &'a [u8],
}

/// The header fields (checked for magic, version and bounds, not against a model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub fingerprint: u64,
    pub weights_identity: u64,
    pub layout: StateLayout,
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

fn padded(text: &str, width: usize) -> Vec<u8> {
    let mut out = text.as_bytes()[..text.len().min(width)].to_vec();
    out.resize(width, 0);
    out
}

pub fn encode(fingerprint: u64, weights_identity: u64, layout: &StateLayout, history: &[u32], state: &[u8]) -> Vec<u8> {
    let write = |out: &mut Vec<u8>| {
        out.extend_from_slice(state);
        Ok(())
    };
    encode_with(fingerprint, weights_identity, layout, history, state.len(), write)
        .expect("copying a slice cannot fail")
}

/// [`encode`] with the state written straight into the snapshot by `write_state` (no separate copy
/// of a KV cache that may be hundreds of MB); `state_hint` is its expected length, for the one
/// allocation. The header's state length and checksum are filled in after it.
pub fn encode_with(
    fingerprint: u64,
    weights_identity: u64,
    layout: &StateLayout,
    history: &[u32],
    state_hint: usize,
    write_state: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<Vec<u8>> {
    assert!(layout.dims.len() <= MAX_RANK, "state rank {} > {MAX_RANK}", layout.dims.len());
    let mut out = Vec::new();
    out.try_reserve_exact(HEADER_BYTES.saturating_add(4 * history.len()).saturating_add(state_hint))
        .map_err(|_| state_mismatch("state snapshot does not fit in memory"))?;
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&fingerprint.to_le_bytes());
    out.extend_from_slice(&weights_identity.to_le_bytes());
    out.extend_from_slice(&(history.len() as u32).to_le_bytes());
    let state_len_at = out.len();
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&layout.tokens.to_le_bytes());
    out.extend_from_slice(&padded(&layout.family, FAMILY_BYTES));
    out.extend_from_slice(&padded(&layout.dtype, DTYPE_BYTES));
    out.extend_from_slice(&(layout.dims.len() as u32).to_le_bytes());
    for i in 0..MAX_RANK {
        out.extend_from_slice(&(layout.dims.get(i).copied().unwrap_or(0) as u64).to_le_bytes());
    }
    out.extend_from_slice(&[0; 4]);
    debug_assert_eq!(out.len(), HEADER_BYTES);
    for id in history {
        out.extend_from_slice(&id.to_le_bytes());
    }
    let state_at = out.len();
    write_state(&mut out)?;
    let state_len = (out.len() - state_at) as u64;
    out[state_len_at..state_len_at + 8].copy_from_slice(&state_len.to_le_bytes());
    let crc = checksum(&out);
    out[CRC_AT..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Parses the fixed header at the start of `bytes` (only its first [`HEADER_BYTES`] are read).
/// Bad magic, another version, an empty or oversized history, a malformed layout → `E_STATE_MISMATCH`.
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
    let tokens = r.u64()?;
    if tokens != history_len as u64 - 1 {
        return Err(state_mismatch(format!(
            "state: the model state has consumed {tokens} tokens, but the history holds {history_len} (expected one more than consumed)"
        )));
    }
    let family = r.text(FAMILY_BYTES, "family")?;
    let dtype = r.text(DTYPE_BYTES, "dtype")?;
    let rank = r.u32()? as usize;
    if rank > MAX_RANK {
        return Err(state_mismatch(format!("state: the state layout has rank {rank}, at most {MAX_RANK}")));
    }
    let mut dims = Vec::with_capacity(rank);
    for i in 0..MAX_RANK {
        let dim = r.u64()?;
        if i < rank {
            dims.push(
                usize::try_from(dim).map_err(|_| state_mismatch("state: a state dim does not fit this machine"))?,
            );
        } else if dim != 0 {
            return Err(state_mismatch(format!("state: dim slot {i} past the state's rank {rank} is not 0")));
        }
    }
    let crc = r.u32()?;
    let layout = StateLayout { family, dtype, dims, tokens };
    Ok(Header { fingerprint, weights_identity, layout, history_len, state_len, crc })
}

/// Parses and verifies `bytes`: exact length, checksum; anything malformed → `E_STATE_MISMATCH`.
pub fn decode(bytes: &[u8]) -> Result<Snapshot<'_>> {
    let header = parse_header(bytes)?;
    let total = header.total_len();
    if bytes.len() != total {
        return Err(state_mismatch(format!(
            "state: the snapshot is {} bytes but its header says {total} (truncated or with trailing bytes)",
            bytes.len()
        )));
    }
    if checksum(bytes) != header.crc {
        return Err(state_mismatch("state: checksum mismatch: the snapshot was damaged after it was saved (the checksum catches damage; it does not authenticate)"));
    }
    let history_end = HEADER_BYTES + 4 * header.history_len;
    let history = bytes[HEADER_BYTES..history_end]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Snapshot {
        fingerprint: header.fingerprint,
        weights_identity: header.weights_identity,
        layout: header.layout,
        history,
        state: &bytes[history_end..],
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
    /// A NUL-padded ASCII name (letters, digits, `_`, `-`): only such a name is ever shown in a message.
    fn text(&mut self, width: usize, what: &str) -> Result<String> {
        let b = self.take(width)?;
        let used = b.iter().position(|&c| c == 0).unwrap_or(width);
        let ok = used > 0
            && b[..used].iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
            && b[used..].iter().all(|&c| c == 0);
        if !ok {
            return Err(state_mismatch(format!("state: the state {what} in the snapshot header is malformed")));
        }
        Ok(String::from_utf8_lossy(&b[..used]).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn layout() -> StateLayout {
        StateLayout { family: "mamba".into(), dtype: "f32".into(), dims: vec![2, 3, 4, 5], tokens: 2 }
    }

    fn sample() -> Vec<u8> {
        encode(0xABCD, 0x1234, &layout(), &[0, 5, 7], &[1, 2, 3, 4, 5])
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
                layout: layout(),
                history: vec![0, 5, 7],
                state: &[1, 2, 3, 4, 5]
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
        assert!(e.message.contains("version 1") && e.message.contains("only version 3"), "{}", e.message);
    }

    #[test]
    fn the_layout_is_checked_for_form_and_consistency() {
        // A token count that disagrees with the history, an unterminated or non-name family, a rank
        // past the dims field: all refused (each with a valid checksum, so the parser itself decides).
        let with = |edit: &dyn Fn(&mut StateLayout)| {
            let mut l = layout();
            edit(&mut l);
            encode(1, 2, &l, &[0, 5, 7], &[1, 2, 3])
        };
        assert!(decode(&with(&|l| l.tokens = 3)).unwrap_err().message.contains("consumed 3 tokens"));
        assert!(decode(&with(&|l| l.family = "ma mba".into())).unwrap_err().message.contains("family"));
        assert!(decode(&with(&|l| l.family = String::new())).unwrap_err().message.contains("family"));
        let mut rank = sample();
        rank[72..76].copy_from_slice(&9u32.to_le_bytes());
        assert!(parse_header(&rank).unwrap_err().message.contains("rank 9"));
        // Unused dim slots must be 0 (rank 4: slots 4..8), so one layout has one encoding.
        let mut slot = sample();
        slot[76 + 8 * 7] = 7;
        assert!(parse_header(&slot).unwrap_err().message.contains("dim slot 7"));
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
