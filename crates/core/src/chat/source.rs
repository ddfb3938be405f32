//! Where a model folder keeps its chat template: `chat_template.jinja` (what transformers ≥ 4.51
//! saves, and prefers), else `chat_template` in `tokenizer_config.json`, a string or a list of
//! `{name, template}` of which `default` is the one `apply_chat_template` uses. `bos_token` and
//! `eos_token` (strings or `{content}` objects) come from `tokenizer_config.json`. A GGUF model
//! without those side files uses the template its header carries.

use super::template::{ChatTemplate, MAX_TEMPLATE_BYTES};
use crate::error::{bad_config, Result};
use crate::loader::files::JSON_FILE_CAP;
use crate::loader::shown::{json_kind, json_problem};
use crate::loader::{GgufFile, ModelFiles};

pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// The folder's chat template, if it has one. A file that is present but unreadable, malformed or
/// holding a template that does not compile → `E_BAD_CONFIG` naming the file.
pub fn load_optional(files: &ModelFiles) -> Result<Option<ChatTemplate>> {
    if !files.has(TOKENIZER_CONFIG_FILE) && !files.has(CHAT_TEMPLATE_FILE) && files.gguf_file()?.is_some() {
        return super::gguf_source::load(&*GgufFile::open_model(files)?);
    }
    let config = match files.has(TOKENIZER_CONFIG_FILE) {
        true => Some(read_json(files)?),
        false => None,
    };
    let special = |key: &str| config.as_ref().and_then(|c| special_token(c.get(key)?));
    let (bos, eos) = (special("bos_token"), special("eos_token"));
    if files.has(CHAT_TEMPLATE_FILE) {
        let shown = files.describe(CHAT_TEMPLATE_FILE);
        let bytes = files.read_capped(CHAT_TEMPLATE_FILE, MAX_TEMPLATE_BYTES)?;
        let source = String::from_utf8(bytes).map_err(|_| bad_config(format!("{shown}: not valid UTF-8")))?;
        return ChatTemplate::new(&source, bos.as_deref(), eos.as_deref(), &shown).map(Some);
    }
    let Some(config) = config else { return Ok(None) };
    let shown = files.describe(TOKENIZER_CONFIG_FILE);
    let source = match config.get("chat_template") {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(serde_json::Value::Array(named)) => default_of(named, &shown)?,
        Some(other) => {
            return Err(bad_config(format!(
                "{shown}: field `chat_template` must be a string or a list of named templates, got {}",
                json_kind(other)
            )))
        }
    };
    ChatTemplate::new(source, bos.as_deref(), eos.as_deref(), &format!("{shown} (chat_template)")).map(Some)
}

fn read_json(files: &ModelFiles) -> Result<serde_json::Value> {
    let shown = files.describe(TOKENIZER_CONFIG_FILE);
    let bytes = files.read_capped(TOKENIZER_CONFIG_FILE, JSON_FILE_CAP)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad_config(format!("{shown}: {}", json_problem(&e))))?;
    if !value.is_object() {
        return Err(bad_config(format!("{shown}: must be a JSON object, got {}", json_kind(&value))));
    }
    Ok(value)
}

/// The `default` entry of the list form `[{"name": "default", "template": "…"}, …]`.
fn default_of<'a>(named: &'a [serde_json::Value], shown: &str) -> Result<&'a str> {
    for entry in named {
        let name = entry.get("name").and_then(|n| n.as_str());
        let template = entry.get("template").and_then(|t| t.as_str());
        match (name, template) {
            (Some("default"), Some(template)) => return Ok(template),
            (Some(_), Some(_)) => {}
            _ => {
                return Err(bad_config(format!(
                    "{shown}: field `chat_template` entries must be objects with string `name` and `template`"
                )))
            }
        }
    }
    Err(bad_config(format!("{shown}: field `chat_template` lists named templates but none is called `default`")))
}

/// A special token as `tokenizer_config.json` writes it: `"<s>"` or `{"content": "<s>", …}`.
fn special_token(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}
