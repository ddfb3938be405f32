//! How text read from a model's files may appear in error messages: never verbatim. A file that is
//! not what it claims (say `config.json` linked to `/etc/passwd`) must not leak into a message, so
//! JSON problems are reported by kind and position, and names read from files (tensor, shard,
//! `model_type`) are shown only when they look like names.

/// Longest name shown as is.
const MAX_SHOWN: usize = 96;

/// `name` as is when it is short and made of name characters, else `<N-byte name>`.
pub(crate) fn shown_name(name: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if !name.is_empty() && name.len() <= MAX_SHOWN && name.chars().all(plain) {
        name.to_string()
    } else {
        format!("<{}-byte name>", name.len())
    }
}

/// A JSON value's kind, for "must be X, got Y" messages.
pub(crate) fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "true/false",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// What is wrong with a JSON document, by kind and position (serde's own text can quote values).
pub(crate) fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let kind = match e.classify() {
        Category::Io => "unreadable JSON",
        Category::Syntax => "invalid JSON",
        Category::Eof => "JSON ends too early",
        Category::Data => "a JSON value of the wrong kind or an unknown name",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shown_only_when_they_look_like_names() {
        assert_eq!(shown_name("backbone.layers.0.mixer.A_log"), "backbone.layers.0.mixer.A_log");
        assert_eq!(shown_name("model-00001-of-00002.safetensors"), "model-00001-of-00002.safetensors");
        assert_eq!(shown_name("root:x:0:0:root:/root:/bin/bash"), "<31-byte name>");
        assert_eq!(shown_name(&"a".repeat(200)), "<200-byte name>");
        assert_eq!(shown_name(""), "<0-byte name>");
    }

    #[test]
    fn json_problems_never_quote_the_document() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        enum Kind {
            A,
        }
        let e = serde_json::from_str::<Kind>("\"root:SECRET\"").unwrap_err();
        assert!(e.to_string().contains("SECRET"), "serde quotes it: the reason for json_problem");
        let shown = json_problem(&e);
        assert!(!shown.contains("SECRET") && shown.contains("line 1"), "{shown}");
        let e = serde_json::from_str::<serde_json::Value>("{\n\"a\": SECRET}").unwrap_err();
        assert!(json_problem(&e).starts_with("invalid JSON at line 2"), "{}", json_problem(&e));
    }
}
