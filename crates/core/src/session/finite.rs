//! Logits straight from the model must be finite: a NaN or ±inf means overflowing or corrupt weights,
//! and passing it on would print `null` scores or make the sampler silently skip a value.

use crate::error::{bad_weights, Result};

/// What [`check_rows`] blames: the weights.
pub const WEIGHTS: &str = "the weights";
/// What a run that continues a snapshot blames: a snapshot's checksum proves it intact, not its
/// values sensible, so they may be what overflowed.
pub const WEIGHTS_OR_STATE: &str = "the weights or the restored state (the snapshot continued)";

/// Checks `logits` (rows of `vocab` values for context positions `first_position..`, of
/// `total_positions` in all). The first non-finite value → `E_BAD_WEIGHTS` naming its position.
pub fn check_rows(logits: &[f32], vocab: usize, first_position: usize, total_positions: usize) -> Result<()> {
    check_rows_blaming(logits, vocab, first_position, total_positions, WEIGHTS)
}

/// [`check_rows`] naming `suspect` ([`WEIGHTS`], [`WEIGHTS_OR_STATE`]) as what overflowed.
pub fn check_rows_blaming(
    logits: &[f32],
    vocab: usize,
    first_position: usize,
    total_positions: usize,
    suspect: &str,
) -> Result<()> {
    match logits.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(at) => {
            let value = logits[at];
            let kind = if value.is_nan() {
                "NaN"
            } else if value > 0.0 {
                "+inf"
            } else {
                "-inf"
            };
            let (row, column) = (at / vocab.max(1), at % vocab.max(1));
            Err(bad_weights(format!(
                "model produced a non-finite logit ({kind}) at position {} of {total_positions} (token column {column}): {suspect} overflow or hold non-finite values",
                first_position + row
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn names_the_first_non_finite_value_and_its_position() {
        assert!(check_rows(&[0.0, 1.0, -3.0, 4.0], 2, 0, 2).is_ok());
        for (bad, kind) in [(f32::NAN, "NaN"), (f32::INFINITY, "+inf"), (f32::NEG_INFINITY, "-inf")] {
            let e = check_rows(&[0.0, 1.0, 2.0, bad], 2, 5, 7).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadWeights);
            assert!(e.message.contains(&format!("({kind}) at position 6 of 7 (token column 1)")), "{}", e.message);
        }
    }
}
