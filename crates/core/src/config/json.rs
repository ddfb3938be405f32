//! Reading a `config.json` text as transformers writes it. transformers 4.x serialises non-finite
//! floats as Python's bare `Infinity` / `-Infinity` / `NaN` (not JSON); 5.x writes
//! `{"__float__": "Infinity"}`. Both must load, so bare literals become the 5.x form before serde
//! sees them, and [`super::fields::Fields::f64_opt`] reads that form as a float.

use serde_json::Value;

use crate::error::{bad_config, Result};
use crate::loader::shown::json_problem;

use super::CONFIG_FILE;

/// Parses `text`, accepting Python's non-finite literals outside strings. Errors name the line and
/// column of the original text, never its contents.
pub fn parse_config(text: &str) -> Result<Value> {
    let first = match serde_json::from_str(text) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let original = || bad_config(format!("{CONFIG_FILE}: {}", json_problem(&first)));
    let rewritten = with_tagged_non_finite(text).ok_or_else(original)?;
    serde_json::from_str(&rewritten).map_err(|_| original())
}

/// The literals Python's `json.dumps` writes for non-finite floats, with their tagged form.
const LITERALS: [(&str, &str); 3] = [
    ("-Infinity", r#"{"__float__":"-Infinity"}"#),
    ("Infinity", r#"{"__float__":"Infinity"}"#),
    ("NaN", r#"{"__float__":"NaN"}"#),
];

/// `text` with every bare non-finite literal outside strings replaced by its tagged form; `None`
/// when there is none (the parse error was something else).
fn with_tagged_non_finite(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 64);
    let (mut in_string, mut escaped, mut changed) = (false, false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some((lit, tagged)) = LITERALS.iter().find(|(lit, _)| starts_token(rest, lit, &out)) {
            out.push_str(tagged);
            rest = &rest[lit.len()..];
            changed = true;
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    changed.then_some(out)
}

/// Whether `rest` starts with the whole token `lit` (not part of a longer word).
fn starts_token(rest: &str, lit: &str, before: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    rest.starts_with(lit)
        && !rest[lit.len()..].chars().next().is_some_and(word)
        && !before.chars().next_back().is_some_and(word)
}

/// The float a config value holds: a JSON number or a tagged `{"__float__": "Infinity"}`.
pub(crate) fn as_f64(v: &Value) -> Option<f64> {
    if let Some(x) = v.as_f64() {
        return Some(x);
    }
    let tag = v.as_object().filter(|o| o.len() == 1)?.get("__float__")?.as_str()?;
    match tag {
        "Infinity" | "inf" => Some(f64::INFINITY),
        "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn both_generations_spell_infinity_and_both_load() {
        let v4 = parse_config(r#"{"time_step_limit": [0.0, Infinity], "x": -Infinity, "n": NaN}"#).unwrap();
        let v5 = parse_config(r#"{"time_step_limit": [0.0, {"__float__": "Infinity"}]}"#).unwrap();
        for v in [&v4, &v5] {
            assert_eq!(as_f64(&v["time_step_limit"][1]), Some(f64::INFINITY));
            assert_eq!(as_f64(&v["time_step_limit"][0]), Some(0.0));
        }
        assert_eq!(as_f64(&v4["x"]), Some(f64::NEG_INFINITY));
        assert!(as_f64(&v4["n"]).unwrap().is_nan());
    }

    #[test]
    fn literals_inside_strings_and_words_stay_as_they_are() {
        let v = parse_config(r#"{"name": "Infinity \" NaN", "a": 1, "b": Infinity}"#).unwrap();
        assert_eq!(v["name"], "Infinity \" NaN");
        let e = parse_config(r#"{"a": Infinityx}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadConfig);
        assert!(e.message.contains("line 1"), "{}", e.message);
    }

    #[test]
    fn other_syntax_errors_name_the_original_position_not_the_text() {
        let e = parse_config("{\n \"a\": Infinity,\n \"secret\": oops\n}").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadConfig);
        assert!(e.message.contains("line 2") && !e.message.contains("secret"), "{}", e.message);
    }
}
