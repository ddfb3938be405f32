//! JS values ⇄ core types. Objects cross the boundary through serde (`serde-wasm-bindgen`), using
//! the camelCase shapes the core already derives, so field names match `ts/binding/types.ts` and
//! the napi glue without a second hand-written list.

use js_sys::{Array, Float32Array, Reflect};
use phoenix_core::error::{invalid_option, Result};
use phoenix_core::generate::{RawGenerateOptions, Step};
use phoenix_core::session::{js_numbers, GenerationStats, Prompt, Score, ScoreOptions};
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;

/// Plain objects for maps, `null` for `None`, numbers (not BigInt) for 64-bit sizes.
fn to_js<T: Serialize>(value: &T) -> Result<JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| phoenix_core::error::internal(format!("cannot convert a result to JS: {e}")))
}

pub fn info_to_js(info: &phoenix_core::session::LoadedModelInfo) -> Result<JsValue> {
    to_js(info)
}

/// `RawModelLayout` of types.ts (the core's serde shape: camelCase, engine kind in lowercase).
pub fn layout_to_js(layout: &phoenix_core::describe::ModelLayout) -> Result<JsValue> {
    to_js(layout)
}

/// `RawFamily` of types.ts: one entry of the core's family registry.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RawFamily {
    name: &'static str,
    model_types: &'static [&'static str],
    engine: phoenix_core::models::EngineKind,
}

pub fn families_to_js() -> Result<JsValue> {
    let families: Vec<RawFamily> = phoenix_core::models::FAMILIES
        .iter()
        .map(|f| RawFamily { name: f.name, model_types: f.model_types, engine: f.engine })
        .collect();
    to_js(&families)
}

pub fn build_info_to_js(info: &phoenix_core::session::BuildInfo) -> Result<JsValue> {
    to_js(info)
}

/// `RawStep` of types.ts.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RawStep {
    token_id: Option<u32>,
    text: String,
    finish_reason: Option<&'static str>,
}

pub fn step_to_js(step: Option<Step>) -> Result<JsValue> {
    match step {
        None => Ok(JsValue::NULL),
        Some(s) => {
            to_js(&RawStep { token_id: s.token_id, text: s.text, finish_reason: s.finish_reason.map(|r| r.as_str()) })
        }
    }
}

pub fn stats_to_js(stats: &GenerationStats) -> Result<JsValue> {
    to_js(stats)
}

/// Token ids as a plain `number[]` (wasm-bindgen would return a `Uint32Array` for `Vec<u32>`).
pub fn ids_to_js(ids: &[u32]) -> Array {
    ids.iter().map(|&id| JsValue::from(id)).collect()
}

/// `RawPrompt` of types.ts: `{ text?, ids? }`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawPrompt {
    text: Option<String>,
    ids: Option<Vec<f64>>,
}

pub fn prompt_from_js(value: JsValue) -> Result<Prompt> {
    let raw: RawPrompt = if value.is_undefined() || value.is_null() {
        RawPrompt::default()
    } else {
        serde_wasm_bindgen::from_value(value).map_err(|e| invalid_option(format!("prompt: {e}")))?
    };
    let ids = raw.ids.map(|ids| js_numbers::ids_from_numbers("prompt.ids", &ids)).transpose()?;
    Prompt::from_parts(raw.text, ids)
}

/// Generation options; `undefined` / `null` = all defaults (a missing seed is drawn by the core).
pub fn options_from_js(value: JsValue) -> Result<RawGenerateOptions> {
    if value.is_undefined() || value.is_null() {
        return Ok(RawGenerateOptions::default());
    }
    serde_wasm_bindgen::from_value(value).map_err(|e| invalid_option(format!("options: {e}")))
}

/// `score()` options; `undefined` / `null` = defaults.
pub fn score_options_from_js(value: JsValue) -> Result<ScoreOptions> {
    if value.is_undefined() || value.is_null() {
        return Ok(ScoreOptions::default());
    }
    serde_wasm_bindgen::from_value(value).map_err(|e| invalid_option(format!("score options: {e}")))
}

/// `RawScore` of types.ts: the serde fields, plus `logits` as one `Float32Array` when asked for
/// (not a serde array of numbers: it can hold millions of values).
pub fn score_to_js(score: Score) -> Result<JsValue> {
    let object = to_js(&score)?;
    if let Some(logits) = &score.logits {
        Reflect::set(&object, &JsValue::from_str("logits"), &Float32Array::from(logits.as_slice()))
            .map_err(|_| phoenix_core::error::internal("cannot convert a result to JS: setting `logits`"))?;
    }
    Ok(object)
}

/// `RawChatMessage[]` of types.ts.
pub fn messages_from_js(value: JsValue) -> Result<Vec<phoenix_core::chat::ChatMessage>> {
    serde_wasm_bindgen::from_value(value).map_err(|e| invalid_option(format!("messages: {e}")))
}

/// `RawChatPrompt` of types.ts.
pub fn chat_prompt_to_js(prompt: &phoenix_core::chat::ChatPrompt) -> Result<JsValue> {
    to_js(prompt)
}
