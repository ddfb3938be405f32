//! The globals and filters transformers adds to a chat template's environment, with the semantics
//! of its Python definitions (`transformers.utils.chat_template_utils`).

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Error, ErrorKind, Output, State};

/// Marks an error as a template's own `raise_exception` (so it maps to `E_INVALID_OPTION`).
pub(super) const RAISED: &str = "\u{0}raise_exception\u{0}";
/// Longest `strftime_now` format accepted.
const MAX_STRFTIME_FORMAT: usize = 256;
/// Deepest `indent` `tojson` accepts (Python accepts any; a huge one only inflates output).
const MAX_INDENT: usize = 64;

/// `raise_exception(message)`: the template refuses the conversation.
pub(super) fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, format!("{RAISED}{message}")))
}

/// `strftime_now(format)`: the current time formatted like Python's `datetime.now().strftime`.
/// In UTC: the WASM build has no time zone, and native and WASM render alike.
pub(super) fn strftime_now(format: String) -> Result<Value, Error> {
    use chrono::format::StrftimeItems;
    if format.len() > MAX_STRFTIME_FORMAT {
        return Err(Error::new(ErrorKind::InvalidOperation, "strftime_now: the format is too long"));
    }
    let items = StrftimeItems::new(&format).parse().map_err(|_| {
        Error::new(ErrorKind::InvalidOperation, "strftime_now: the format is not a valid strftime format")
    })?;
    let since_epoch = web_time::SystemTime::now()
        .duration_since(web_time::UNIX_EPOCH)
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, "strftime_now: the clock is before 1970"))?;
    let secs = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
    let now = chrono::DateTime::from_timestamp(secs, since_epoch.subsec_nanos())
        .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "strftime_now: the clock is out of range"))?;
    let mut text = String::new();
    std::fmt::Write::write_fmt(&mut text, format_args!("{}", now.format_with_items(items.iter())))
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, "strftime_now: the format cannot be applied"))?;
    Ok(Value::from(text))
}

/// `value | tojson(indent=None, separators=None, sort_keys=False, ensure_ascii=False)`: Python's
/// `json.dumps` text (transformers overrides jinja's HTML-escaping `tojson` with it).
pub(super) fn tojson(value: Value, args: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = args.get("indent")?;
    let separators: Option<Vec<String>> = args.get("separators")?;
    let sort_keys: Option<bool> = args.get("sort_keys")?;
    let ensure_ascii: Option<bool> = args.get("ensure_ascii")?;
    args.assert_all_used()?;
    if indent.is_some_and(|n| n > MAX_INDENT) {
        return Err(Error::new(ErrorKind::InvalidOperation, "tojson: indent is too large"));
    }
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: separators must be two strings")),
        // Python's defaults: ', ' without indent, ',' with one (the newline separates items).
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let formatter = PyJson { item_sep, key_sep, indent: indent.map(|n| " ".repeat(n)), level: 0, has_value: false };
    let mut bytes = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut bytes, formatter);
    let result = if sort_keys == Some(true) {
        serde_json::to_value(&value).and_then(|mut v| {
            sort_all_keys(&mut v);
            serde::Serialize::serialize(&v, &mut ser)
        })
    } else {
        serde::Serialize::serialize(&value, &mut ser)
    };
    result.map_err(|_| Error::new(ErrorKind::BadSerialization, "tojson: the value cannot be written as JSON"))?;
    let text = String::from_utf8(bytes).map_err(|_| Error::new(ErrorKind::BadSerialization, "tojson: not UTF-8"))?;
    Ok(Value::from_safe_string(if ensure_ascii == Some(true) { ascii_escaped(&text) } else { text }))
}

/// Python's `sort_keys=True`, at every level (explicit: serde_json's map keeps insertion order when
/// its `preserve_order` feature is on anywhere in the build).
fn sort_all_keys(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.sort_keys();
            map.values_mut().for_each(sort_all_keys);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(sort_all_keys),
        _ => {}
    }
}

/// Python's `ensure_ascii`: every non-ASCII character as `\uXXXX` (UTF-16 units). Non-ASCII only
/// occurs inside JSON strings, so escaping the whole text is the same as escaping each string.
fn ascii_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// Writes values as jinja2 prints Python values (`str(value)`): None, True, False, float reprs, and
/// lists / dicts as their Python repr (`['a', 'b']`, `{'k': 1}`), not minijinja's JSON-like text.
pub(super) fn python_formatter(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
    let python = match value.kind() {
        ValueKind::None => Some("None".to_string()),
        ValueKind::Bool if value.is_true() => Some("True".to_string()),
        ValueKind::Bool => Some("False".to_string()),
        ValueKind::Number if !value.is_integer() => f64::try_from(value.clone()).ok().map(py_float),
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable => {
            let mut text = String::new();
            py_repr(value, &mut text, 0)?;
            Some(text)
        }
        _ => None,
    };
    match python {
        Some(text) => out.write_str(&text).map_err(|_| Error::new(ErrorKind::WriteFailure, "formatting failed")),
        None => minijinja::escape_formatter(out, state, value),
    }
}

/// Deepest nesting a printed list / dict may have (the values are the template's own).
const MAX_REPR_DEPTH: usize = 64;

/// Python's `repr` of a value, as `str(list)` / `str(dict)` show their items.
fn py_repr(value: &Value, out: &mut String, depth: usize) -> Result<(), Error> {
    if depth > MAX_REPR_DEPTH {
        return Err(Error::new(ErrorKind::InvalidOperation, "a printed value is nested too deeply"));
    }
    match value.kind() {
        ValueKind::None | ValueKind::Undefined => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number if !value.is_integer() => match f64::try_from(value.clone()) {
            Ok(f) => out.push_str(&py_float(f)),
            Err(_) => out.push_str(&value.to_string()),
        },
        ValueKind::String => py_str_repr(value.as_str().unwrap_or_default(), out),
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, item) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr(&item, out, depth + 1)?;
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr(&key, out, depth + 1)?;
                out.push_str(": ");
                py_repr(&value.get_item(&key)?, out, depth + 1)?;
            }
            out.push('}');
        }
        _ => out.push_str(&value.to_string()),
    }
    Ok(())
}

/// Python's `repr(str)`: single quotes unless the text has one and no double quote; escapes for
/// backslashes, the quote, and characters Python does not print as they are.
fn py_str_repr(text: &str, out: &mut String) {
    let quote = if text.contains('\'') && !text.contains('"') { '"' } else { '\'' };
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x100 && (c.is_control() || (c.is_whitespace() && c != ' ')) => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() || (c.is_whitespace() && c != ' ') => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Python's `repr(float)`: shortest round-trip digits, `1.0` not `1`, exponent as `1e+16` / `1e-05`.
fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // Rust's `{:?}` switches to an exponent at the same thresholds as Python (< 1e-4, >= 1e16).
    let debug = format!("{f:?}");
    match debug.split_once('e') {
        None => debug,
        Some((mantissa, exp)) => {
            let mantissa = mantissa.strip_suffix(".0").unwrap_or(mantissa);
            let (sign, digits) = exp.strip_prefix('-').map_or(('+', exp), |d| ('-', d));
            format!("{mantissa}e{sign}{digits:0>2}")
        }
    }
}

/// `json.dumps` layout: configurable separators, optional indentation (`indent=0` still breaks lines).
struct PyJson {
    item_sep: String,
    key_sep: String,
    indent: Option<String>,
    level: usize,
    has_value: bool,
}

impl PyJson {
    fn newline<W: ?Sized + std::io::Write>(&self, w: &mut W) -> std::io::Result<()> {
        if let Some(indent) = &self.indent {
            w.write_all(b"\n")?;
            for _ in 0..self.level {
                w.write_all(indent.as_bytes())?;
            }
        }
        Ok(())
    }

    fn open<W: ?Sized + std::io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> std::io::Result<()> {
        self.level += 1;
        self.has_value = false;
        w.write_all(bracket)
    }

    fn close<W: ?Sized + std::io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> std::io::Result<()> {
        self.level -= 1;
        if self.has_value {
            self.newline(w)?;
        }
        w.write_all(bracket)
    }

    fn item<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if !first {
            w.write_all(self.item_sep.as_bytes())?;
        }
        self.newline(w)
    }
}

impl serde_json::ser::Formatter for PyJson {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"[")
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"]")
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        self.item(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"{")
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"}")
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        self.item(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(self.key_sep.as_bytes())
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}
