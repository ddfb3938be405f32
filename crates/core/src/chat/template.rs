//! A compiled chat template and its sandboxed render.
//!
//! The environment is set up as transformers' `_compile_jinja_template` sets up jinja2: blocks trimmed
//! and left-stripped, the trailing newline of the source dropped, `raise_exception`, `strftime_now`
//! and a `tojson` that writes what Python's `json.dumps` writes (no HTML escaping). Python's string
//! and dict methods (`.strip()`, `.startswith()`, `.items()`) come from minijinja-contrib's pycompat.
//!
//! Limits, because a template is a model file: its source is at most [`MAX_TEMPLATE_BYTES`], a render
//! runs at most [`FUEL`] instructions and minijinja's recursion limit, its output is cut off past
//! [`MAX_OUTPUT_BYTES`], and the conversation is bounded ([`MAX_MESSAGES`], [`MAX_MESSAGES_BYTES`]).
//! Fuel bounds instructions, not value sizes (`ns.x = ns.x ~ ns.x` doubles a string per instruction),
//! so a render also runs under a memory budget, [`MAX_RENDER_MEMORY`] (see [`crate::memory_budget`]);
//! a template that overruns it is refused from then on without rendering again. Nor does fuel bound
//! what an instruction costs (a `replace` over a 1 MiB string is one), so a render also has
//! [`MAX_RENDER_MILLIS`]; past it the template is refused from then on too.
//! minijinja has no file system, imports or attribute access to host objects: nothing outside the
//! template's own values can be reached.

use std::sync::{Arc, OnceLock};

use minijinja::value::Value;
use minijinja::{context, Environment, ErrorKind};

use super::functions::{self, RAISED};
use super::ChatMessage;
use crate::error::{bad_config, internal, invalid_option, Result};
use crate::memory_budget::{self, Refused};

/// Longest template source accepted (real templates are a few KiB; tool-calling ones ~20 KiB).
pub const MAX_TEMPLATE_BYTES: usize = 1 << 20;
/// Longest rendered prompt (far beyond any context window; the tokenizer then bounds it again).
pub const MAX_OUTPUT_BYTES: usize = 16 << 20;
/// Most messages in one conversation, and their total text.
pub const MAX_MESSAGES: usize = 10_000;
pub const MAX_MESSAGES_BYTES: usize = 8 << 20;
/// Instructions one render may execute (a real template spends well under 1000 per message).
pub const FUEL: u64 = 10_000_000;
/// Bytes a render's own values may hold at once (the conversation is built before it starts): room
/// for copies of the largest conversation and the largest output, far below a process's memory.
pub const MAX_RENDER_MEMORY: usize = 128 << 20;
/// Milliseconds a render may take: real templates take milliseconds, and a render that spends its
/// whole fuel on cheap instructions well under a second.
pub const MAX_RENDER_MILLIS: u64 = 5_000;

const TEMPLATE_NAME: &str = "chat_template";

/// A chat template ready to render conversations.
pub struct ChatTemplate {
    /// Shared with the render thread, which outlives the call if the render is stopped.
    env: Arc<Environment<'static>>,
    bos_token: String,
    eos_token: String,
    origin: String,
    /// Set when a render ran out of memory or time: the template is refused from then on.
    stopped: OnceLock<crate::PhoenixError>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("origin", &self.origin).finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`. `bos_token` / `eos_token` are the texts templates see as `bos_token` and
    /// `eos_token` (empty when `None`); `origin` names where the source came from in messages (a
    /// file path, or `model.gguf: tokenizer.chat_template`). A source that is too long or does not
    /// compile → `E_BAD_CONFIG` naming `origin`.
    pub fn new(source: &str, bos_token: Option<&str>, eos_token: Option<&str>, origin: &str) -> Result<Self> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(bad_config(format!(
                "{origin}: the chat template is {} bytes, more than the {MAX_TEMPLATE_BYTES} allowed",
                source.len()
            )));
        }
        if source.trim().is_empty() {
            return Err(bad_config(format!("{origin}: the chat template is empty")));
        }
        let env = compile_with_room(source, origin)?;
        Ok(Self {
            env: Arc::new(env),
            bos_token: bos_token.unwrap_or_default().to_string(),
            eos_token: eos_token.unwrap_or_default().to_string(),
            origin: origin.to_string(),
            stopped: OnceLock::new(),
        })
    }

    /// Where the template came from (for messages).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Renders `messages` (with the assistant's turn opened when `add_generation_prompt`).
    /// A conversation past the limits, or one the template refuses through `raise_exception`
    /// → `E_INVALID_OPTION`; a template that fails otherwise or runs past its limits → `E_BAD_CONFIG`
    /// naming the template.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        check_messages(messages)?;
        if let Some(e) = self.stopped.get() {
            return Err(e.clone());
        }
        let ctx = context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
            tools => Value::from(()),
            documents => Value::from(()),
        };
        let env = Arc::clone(&self.env);
        let over_budget = bad_config(format!(
            "{}: the chat template built values past the {} MiB a render may hold; it was stopped and is not rendered again",
            self.origin,
            MAX_RENDER_MEMORY >> 20
        ));
        let too_long = bad_config(format!(
            "{}: the chat template ran past the {} s a render may take; it was stopped and is not rendered again",
            self.origin,
            MAX_RENDER_MILLIS / 1000
        ));
        let (over_bytes, over_time) = (over_budget.to_wire(), too_long.to_wire());
        let budget = memory_budget::Budget {
            bytes: MAX_RENDER_MEMORY,
            millis: MAX_RENDER_MILLIS,
            over_bytes: &over_bytes,
            over_time: &over_time,
        };
        match memory_budget::run_with_budget(budget, move || render_captured(&env, ctx)) {
            Ok(Rendered::Text(bytes)) => String::from_utf8(bytes).map_err(|_| internal_utf8(&self.origin)),
            Ok(Rendered::Overflowed) => Err(bad_config(format!(
                "{}: the chat template's output grew past {MAX_OUTPUT_BYTES} bytes",
                self.origin
            ))),
            Ok(Rendered::Failed(e)) => Err(self.failed(&e)),
            Ok(Rendered::Panicked) | Err(Refused::Panicked) => Err(bad_config(format!(
                "{}: the template engine failed on this chat template and conversation (an internal error of minijinja, e.g. reverse-slicing an empty list)",
                self.origin
            ))),
            Err(Refused::OverBudget) => Err(self.stopped.get_or_init(|| over_budget).clone()),
            Err(Refused::TooLong) => Err(self.stopped.get_or_init(|| too_long).clone()),
            Err(Refused::TooManyStopped) => Err(bad_config(format!(
                "{}: not rendered: {} chat templates have already been stopped in this process for holding more than {} MiB or running past {} s (each keeps its memory); restart the process to chat again",
                self.origin,
                memory_budget::MAX_STOPPED,
                MAX_RENDER_MEMORY >> 20,
                MAX_RENDER_MILLIS / 1000
            ))),
            Err(Refused::NoThread) => {
                Err(internal(format!("{}: no thread could be started to render the chat template", self.origin)))
            }
        }
    }

    fn failed(&self, e: &minijinja::Error) -> crate::PhoenixError {
        if let Some(reason) = raised(e) {
            return invalid_option(format!(
                "messages: the chat template of {} refused the conversation: {reason}",
                self.origin
            ));
        }
        let limit = match e.kind() {
            ErrorKind::OutOfFuel => " (it ran past the limit of instructions a render may execute)",
            _ => "",
        };
        bad_config(format!("{}: the chat template failed: {}{limit}", self.origin, described(e)))
    }
}

/// An error by kind and line: minijinja's detail can quote the template's text.
/// Stack bytes the compile thread gets per byte of source, on top of [`COMPILE_STACK_BASE`]: parsing
/// and code generation recurse once per link of a postfix chain (`x.a.a.a…`, `x|e|e…`, two bytes a
/// link), ~400 bytes of stack each; a 50,000-link filter chain overflowed an 8 MiB stack and killed
/// the process (a stack overflow cannot be caught). Virtual reservation only: untouched pages cost nothing.
#[cfg(not(target_arch = "wasm32"))]
const COMPILE_STACK_PER_SOURCE_BYTE: usize = 512;
#[cfg(not(target_arch = "wasm32"))]
const COMPILE_STACK_BASE: usize = 16 << 20;

/// Compiles `source` on a thread whose stack fits the deepest expression it can spell (see
/// [`COMPILE_STACK_PER_SOURCE_BYTE`]); on wasm32 (no threads) inline, where an overflow traps the
/// instance, which the binding reports and replaces, instead of the process.
fn compile_with_room(source: &str, origin: &str) -> Result<Environment<'static>> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let (source, origin) = (source.to_string(), origin.to_string());
        let stack = COMPILE_STACK_BASE + source.len().saturating_mul(COMPILE_STACK_PER_SOURCE_BYTE);
        let shown = origin.clone();
        std::thread::Builder::new()
            .name("chat-template-compile".into())
            .stack_size(stack)
            .spawn(move || compile(&source, &origin))
            .map_err(|_| internal(format!("{shown}: no thread could be started to compile the chat template")))?
            .join()
            .map_err(|_| bad_config(format!("{shown}: the template engine failed while compiling the chat template")))?
    }
    #[cfg(target_arch = "wasm32")]
    {
        compile(source, origin)
    }
}

/// The environment transformers gives jinja2, with the template compiled into it.
fn compile(source: &str, origin: &str) -> Result<Environment<'static>> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_fuel(Some(FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(functions::python_formatter);
    env.add_function("raise_exception", functions::raise_exception);
    env.add_function("strftime_now", functions::strftime_now);
    env.add_filter("tojson", functions::tojson);
    let source = super::generation_tag::generation_tags_as_ifs(source).into_owned();
    env.add_template_owned(TEMPLATE_NAME, source)
        .map_err(|e| bad_config(format!("{origin}: the chat template does not compile: {}", described(&e))))?;
    Ok(env)
}

/// minijinja's details that are fixed texts naming a limit (never template content), worth showing.
const LIMIT_DETAILS: [&str; 3] =
    ["range has too many elements", "recursion limit exceeded", "template exceeds maximum recursion limits"];

fn described(e: &minijinja::Error) -> String {
    let mut kind = e.kind().to_string();
    if let Some(detail) = e.detail().filter(|d| LIMIT_DETAILS.contains(d)) {
        kind = format!("{kind} ({detail})");
    }
    match e.line() {
        Some(line) => format!("{kind} at line {line}"),
        None => kind,
    }
}

/// The message a template gave `raise_exception` (bounded, printable), if that is what failed.
fn raised(e: &minijinja::Error) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(m) = err.downcast_ref::<minijinja::Error>() {
            if let Some(message) = m.detail().and_then(|d| d.strip_prefix(RAISED)) {
                let shown: String = message.chars().filter(|c| !c.is_control()).take(200).collect();
                return Some(shown);
            }
        }
        current = err.source();
    }
    None
}

fn check_messages(messages: &[ChatMessage]) -> Result<()> {
    if messages.len() > MAX_MESSAGES {
        return Err(invalid_option(format!(
            "messages: at most {MAX_MESSAGES} messages are allowed, got {}",
            messages.len()
        )));
    }
    let total = messages.iter().try_fold(0usize, |acc, m| acc.checked_add(m.role.len())?.checked_add(m.content.len()));
    if !matches!(total, Some(n) if n <= MAX_MESSAGES_BYTES) {
        return Err(invalid_option(format!(
            "messages: their text is more than the {MAX_MESSAGES_BYTES} bytes allowed"
        )));
    }
    Ok(())
}

fn internal_utf8(origin: &str) -> crate::PhoenixError {
    crate::error::internal(format!("{origin}: the chat template's output is not UTF-8"))
}

/// How one render ended, as its thread hands it back.
enum Rendered {
    Text(Vec<u8>),
    Overflowed,
    Failed(minijinja::Error),
    Panicked,
}

/// Renders the template into a [`CappedOutput`] (on the budgeted thread).
fn render_captured(env: &Environment<'static>, ctx: Value) -> Rendered {
    let template = match env.get_template(TEMPLATE_NAME) {
        Ok(t) => t,
        Err(e) => return Rendered::Failed(e),
    };
    let mut out = CappedOutput::default();
    // minijinja 2.24 panics on some templates (reverse-slicing an empty list, `[][::-1]`): that is
    // this template failing, not the process.
    let rendered =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| template.render_captured_to(ctx, &mut out).map(drop)));
    match rendered {
        Ok(Ok(())) => Rendered::Text(out.bytes),
        Ok(Err(_)) if out.overflowed => Rendered::Overflowed,
        Ok(Err(e)) => Rendered::Failed(e),
        Err(_) => Rendered::Panicked,
    }
}

/// The render's output, refusing to grow past [`MAX_OUTPUT_BYTES`].
#[derive(Default)]
struct CappedOutput {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > MAX_OUTPUT_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("chat template output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
