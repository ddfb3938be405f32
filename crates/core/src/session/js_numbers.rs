//! Checked conversions from JS numbers (f64), shared by the node and WASM bindings so both reject
//! the same inputs with the same `E_INVALID_OPTION` messages.

use crate::error::{invalid_option, Result};

/// Token ids from a JS `number[]`: each must be an integer in `0..=u32::MAX` (the vocabulary bound
/// is checked later, where the model is known).
pub fn ids_from_numbers(what: &str, values: &[f64]) -> Result<Vec<u32>> {
    values
        .iter()
        .map(|&v| {
            if v.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&v) {
                Ok(v as u32)
            } else {
                Err(invalid_option(format!("{what}: token id {v} is not a non-negative integer")))
            }
        })
        .collect()
}

/// A count from a JS number: an integer in `0..=max`.
pub fn count_from_number(what: &str, value: f64, max: usize) -> Result<usize> {
    if value.fract() == 0.0 && (0.0..=max as f64).contains(&value) {
        Ok(value as usize)
    } else {
        Err(invalid_option(format!("{what}: must be an integer in 0..={max}, got {}", shown(value))))
    }
}

/// A JS number as JS prints it, for messages that quote what the caller gave: `Infinity`, `NaN`,
/// `1e+300` (Rust's `{}` would write `inf`, or 301 digits).
pub fn shown(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let magnitude = value.abs();
    if magnitude != 0.0 && !(1e-7..1e21).contains(&magnitude) {
        // JS switches to exponent form outside [1e-7, 1e21) and always signs the exponent.
        let text = format!("{value:e}");
        return match text.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
            _ => text,
        };
    }
    format!("{value}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn ids_must_be_non_negative_integers() {
        assert_eq!(ids_from_numbers("ids", &[0.0, 7.0, 4294967295.0]).unwrap(), vec![0, 7, u32::MAX]);
        for bad in [-1.0, 1.5, f64::NAN, f64::INFINITY, 4294967296.0] {
            let e = ids_from_numbers("prompt.ids", &[bad]).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidOption);
            assert!(e.message.starts_with("prompt.ids:"), "{}", e.message);
        }
    }

    #[test]
    fn numbers_are_shown_as_js_prints_them() {
        let cases = [
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
            (1e300, "1e+300"),
            (-2.5e21, "-2.5e+21"),
            (1e-9, "1e-9"),
            (18446744073709551615.0, "18446744073709552000"),
            (-1.0, "-1"),
            (0.5, "0.5"),
            (0.0, "0"),
        ];
        for (value, js) in cases {
            assert_eq!(shown(value), js, "{value}");
        }
    }

    #[test]
    fn counts_are_bounded_integers() {
        assert_eq!(count_from_number("n", 3.0, 8).unwrap(), 3);
        for bad in [-1.0, 0.5, 9.0, f64::NAN] {
            assert_eq!(count_from_number("n", bad, 8).unwrap_err().code, ErrorCode::InvalidOption);
        }
    }
}
