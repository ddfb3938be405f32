//! Typed reads of the `tokenizer.ggml.*` keys of a GGUF header, as candle's reader hands them.
//!
//! Every value is hostile: a wrong GGUF type, a count that disagrees with the token list or an id past
//! it is an `E_TOKENIZER` naming the key (never quoting the value, which is file content).

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

use crate::error::{tokenizer_error, PhoenixError, Result};

/// Keys (gguf-py `constants.py`, `Keys.Tokenizer`).
pub const MODEL: &str = "tokenizer.ggml.model";
pub const PRE: &str = "tokenizer.ggml.pre";
pub const TOKENS: &str = "tokenizer.ggml.tokens";
pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
pub const SCORES: &str = "tokenizer.ggml.scores";
pub const MERGES: &str = "tokenizer.ggml.merges";
pub const BOS_ID: &str = "tokenizer.ggml.bos_token_id";
pub const EOS_ID: &str = "tokenizer.ggml.eos_token_id";
pub const UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
pub const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
pub const ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";

/// Most tokens a vocabulary may list (the largest real ones are ~262k; this is 16× that).
pub const MAX_TOKENS: usize = 1 << 22;
/// Most merges a BPE vocabulary may list.
pub const MAX_MERGES: usize = 1 << 22;

/// The header's key/value pairs plus the name errors should show (the file).
pub struct Metadata<'a> {
    kv: &'a HashMap<String, Value>,
    source: &'a str,
}

impl<'a> Metadata<'a> {
    pub fn new(kv: &'a HashMap<String, Value>, source: &'a str) -> Self {
        Self { kv, source }
    }

    /// `E_TOKENIZER` "<file>: GGUF key `key`: why".
    pub fn error(&self, key: &str, why: impl std::fmt::Display) -> PhoenixError {
        tokenizer_error(format!("{}: GGUF key `{key}`: {why}", self.source))
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.kv.get(key)
    }

    fn required(&self, key: &str) -> Result<&'a Value> {
        self.get(key).ok_or_else(|| self.error(key, "missing (the file carries no tokenizer)"))
    }

    pub fn string(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.error(key, format!("expected a string, found {}", type_name(other)))),
        }
    }

    pub fn required_string(&self, key: &str) -> Result<&'a str> {
        self.required(key)?;
        Ok(self.string(key)?.unwrap_or_default())
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.error(key, format!("expected a bool, found {}", type_name(other)))),
        }
    }

    /// A token id: any integer type, checked against the vocabulary size.
    pub fn token_id(&self, key: &str, vocab_size: usize) -> Result<Option<u32>> {
        let Some(value) = self.get(key) else { return Ok(None) };
        let id = integer(value)
            .ok_or_else(|| self.error(key, format!("expected an integer id, found {}", type_name(value))))?;
        match u32::try_from(id) {
            Ok(id) if (id as usize) < vocab_size => Ok(Some(id)),
            _ => Err(self.error(key, format!("id {id} is outside the vocabulary of {vocab_size} tokens"))),
        }
    }

    /// An array of strings, at most `max` long.
    pub fn strings(&self, key: &str, max: usize) -> Result<Option<Vec<&'a str>>> {
        let Some(items) = self.array(key, max)? else { return Ok(None) };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(self.error(key, format!("element {i} is {}, expected a string", type_name(other)))),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// An array of integers (any width) that must have exactly `len` elements.
    pub fn integers(&self, key: &str, len: usize) -> Result<Option<Vec<i64>>> {
        let Some(items) = self.array_of_len(key, len)? else { return Ok(None) };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                integer(v)
                    .ok_or_else(|| self.error(key, format!("element {i} is {}, expected an integer", type_name(v))))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// An array of numbers (float or integer, as llama.cpp accepts scores) of exactly `len` elements.
    pub fn numbers(&self, key: &str, len: usize) -> Result<Option<Vec<f32>>> {
        let Some(items) = self.array_of_len(key, len)? else { return Ok(None) };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::F32(x) if x.is_finite() => Ok(*x),
                Value::F64(x) if x.is_finite() => Ok(*x as f32),
                Value::F32(_) | Value::F64(_) => Err(self.error(key, format!("element {i} is not a finite number"))),
                other => integer(other)
                    .map(|n| n as f32)
                    .ok_or_else(|| self.error(key, format!("element {i} is {}, expected a number", type_name(other)))),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn array(&self, key: &str, max: usize) -> Result<Option<&'a [Value]>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) if items.len() > max => {
                Err(self.error(key, format!("{} elements, more than the {max} allowed", items.len())))
            }
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(other) => Err(self.error(key, format!("expected an array, found {}", type_name(other)))),
        }
    }

    fn array_of_len(&self, key: &str, len: usize) -> Result<Option<&'a [Value]>> {
        let items = self.array(key, MAX_TOKENS)?;
        match items {
            Some(items) if items.len() != len => {
                Err(self.error(key, format!("{} elements, but `{TOKENS}` has {len} (one per token)", items.len())))
            }
            other => Ok(other),
        }
    }
}

fn integer(value: &Value) -> Option<i64> {
    Some(match *value {
        Value::U8(v) => v.into(),
        Value::I8(v) => v.into(),
        Value::U16(v) => v.into(),
        Value::I16(v) => v.into(),
        Value::U32(v) => v.into(),
        Value::I32(v) => v.into(),
        Value::U64(v) => i64::try_from(v).ok()?,
        Value::I64(v) => v,
        _ => return None,
    })
}

/// The GGUF type of a value, for messages (never its contents).
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::U8(_) => "a u8",
        Value::I8(_) => "an i8",
        Value::U16(_) => "a u16",
        Value::I16(_) => "an i16",
        Value::U32(_) => "a u32",
        Value::I32(_) => "an i32",
        Value::U64(_) => "a u64",
        Value::I64(_) => "an i64",
        Value::F32(_) => "an f32",
        Value::F64(_) => "an f64",
        Value::Bool(_) => "a bool",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
    }
}
