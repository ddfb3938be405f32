//! Typed access to `config.json` fields with errors that name the file and the field (with its
//! path, e.g. `rope_scaling.factor`), shared by every family's config parser.

use serde_json::{Map, Value};

use crate::error::{bad_config, PhoenixError, Result};
use crate::loader::shown::json_kind;

use super::json::as_f64;
use super::CONFIG_FILE as FILE;

pub(crate) struct Fields<'a> {
    pub obj: &'a Map<String, Value>,
    /// Path of `obj` inside the file (`""` at the top, `"rope_scaling."` inside that object).
    pub prefix: String,
}

impl<'a> Fields<'a> {
    pub fn new(obj: &'a Map<String, Value>, prefix: &str) -> Self {
        Self { obj, prefix: prefix.to_string() }
    }

    /// The full name of `key` for messages.
    pub fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub fn err(&self, key: &str, want: &str, got: &Value) -> PhoenixError {
        bad_config(format!("{FILE}: field `{}` must be {want}, got {}", self.name(key), json_kind(got)))
    }

    /// A `config.json` error about `key` that is not about its type (`must be > 0`, …).
    pub fn invalid(&self, key: &str, what: &str) -> PhoenixError {
        bad_config(format!("{FILE}: field `{}` {what}", self.name(key)))
    }

    pub fn missing(&self, key: &str) -> PhoenixError {
        bad_config(format!("{FILE}: required field `{}` is missing", self.name(key)))
    }

    /// The value of `key`; `null` counts as absent (transformers writes `null` for unset options).
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.err(key, "a non-negative integer", v)),
        }
    }

    pub fn usize_req(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?.ok_or_else(|| self.missing(key))
    }

    /// A number, or a tagged / bare non-finite float (see [`super::json`]).
    pub fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => as_f64(v).map(Some).ok_or_else(|| self.err(key, "a number", v)),
        }
    }

    /// A finite number.
    pub fn finite_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.f64_opt(key)? {
            Some(x) if !x.is_finite() => Err(self.invalid(key, "must be a finite number")),
            other => Ok(other),
        }
    }

    /// A list of numbers (tagged non-finite floats allowed).
    pub fn f64_list_opt(&self, key: &str) -> Result<Option<Vec<f64>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| as_f64(v).ok_or_else(|| self.err(key, "a list of numbers", v)))
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(v) => Err(self.err(key, "a list of numbers", v)),
        }
    }

    pub fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| self.err(key, "true or false", v)),
        }
    }

    pub fn str_opt(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.err(key, "a string", v)),
        }
    }

    /// A list of strings (e.g. `layer_types`).
    pub fn str_list_opt(&self, key: &str) -> Result<Option<Vec<&'a str>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().ok_or_else(|| self.err(key, "a list of strings", v)))
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(v) => Err(self.err(key, "a list of strings", v)),
        }
    }

    /// A nested object as fields of its own (`rope_scaling`, `ssm_cfg`, …).
    pub fn object_opt(&self, key: &str) -> Result<Option<Fields<'a>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Fields { obj: m, prefix: format!("{}.", self.name(key)) })),
            Some(v) => Err(self.err(key, "an object", v)),
        }
    }

    pub fn token_id_opt(&self, key: &str) -> Result<Option<u32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => as_u32(v).map(Some).ok_or_else(|| self.err(key, "a token id", v)),
        }
    }

    /// `eos_token_id` may be one id or a list of ids.
    pub fn token_ids_opt(&self, key: &str) -> Result<Option<Vec<u32>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| as_u32(v).ok_or_else(|| self.err(key, "a token id or a list of token ids", v)))
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(v) => as_u32(v).map(|id| Some(vec![id])).ok_or_else(|| self.err(key, "a token id", v)),
        }
    }
}

fn as_u32(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}
