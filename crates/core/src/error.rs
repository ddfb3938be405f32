//! One error type for the whole core, with stable codes shared by every binding.
//!
//! Bindings render an error as `[CODE] message` (see [`PhoenixError::to_wire`]); the TypeScript
//! layer parses that back into a typed `PhoenixError` with `.code`, so native and WASM agree.

use std::fmt;

/// Stable error codes. The string forms are part of the public API: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    ModelNotFound,
    BadConfig,
    UnsupportedModel,
    BadWeights,
    Tokenizer,
    InvalidOption,
    Aborted,
    BackendUnavailable,
    StateMismatch,
    Checksum,
    OfflineViolation,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ModelNotFound => "E_MODEL_NOT_FOUND",
            ErrorCode::BadConfig => "E_BAD_CONFIG",
            ErrorCode::UnsupportedModel => "E_UNSUPPORTED_MODEL",
            ErrorCode::BadWeights => "E_BAD_WEIGHTS",
            ErrorCode::Tokenizer => "E_TOKENIZER",
            ErrorCode::InvalidOption => "E_INVALID_OPTION",
            ErrorCode::Aborted => "E_ABORTED",
            ErrorCode::BackendUnavailable => "E_BACKEND_UNAVAILABLE",
            ErrorCode::StateMismatch => "E_STATE_MISMATCH",
            ErrorCode::Checksum => "E_CHECKSUM",
            ErrorCode::OfflineViolation => "E_OFFLINE_VIOLATION",
            ErrorCode::Internal => "E_INTERNAL",
        }
    }
}

/// An error with a stable code and a message that names the file, field or option at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoenixError {
    pub code: ErrorCode,
    pub message: String,
}

impl PhoenixError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// The form that crosses a binding boundary: `[E_CODE] message`.
    pub fn to_wire(&self) -> String {
        format!("[{}] {}", self.code.as_str(), self.message)
    }
}

impl fmt::Display for PhoenixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for PhoenixError {}

pub type Result<T> = std::result::Result<T, PhoenixError>;

/// Shorthand constructors, e.g. `bad_config(format!("{path}: field `d_model` missing"))`.
macro_rules! ctor {
    ($($name:ident => $code:ident),* $(,)?) => {
        $(pub fn $name(message: impl Into<String>) -> PhoenixError {
            PhoenixError::new(ErrorCode::$code, message)
        })*
    };
}
ctor! {
    model_not_found => ModelNotFound,
    bad_config => BadConfig,
    unsupported_model => UnsupportedModel,
    bad_weights => BadWeights,
    tokenizer_error => Tokenizer,
    invalid_option => InvalidOption,
    aborted => Aborted,
    state_mismatch => StateMismatch,
    internal => Internal,
}

/// Runs `f`, turning a panic into `E_INTERNAL` so no binding ever unwinds into its host. The panic
/// is not printed on the host's stderr (it is the error's message, with the file and line it came
/// from); `PHOENIX_PANIC_TRACE=1` prints it as Rust does, for debugging.
pub fn catch_panic<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catching(f) {
        Ok(result) => result,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            let at = PANIC_AT.with(|p| p.borrow_mut().take()).map(|at| format!(" at {at}")).unwrap_or_default();
            Err(internal(format!("internal error (caught panic{at}): {what}")))
        }
    }
}

thread_local! {
    /// How many [`catching`] scopes this thread is in: a panic inside one becomes a typed error.
    static CATCHING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// Where the last caught panic of this thread happened (`file.rs:line`), for its error.
    static PANIC_AT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// `catch_unwind` for the core's own catching scopes ([`catch_panic`], the memory-budgeted threads):
/// a panic caught here is reported by the error it becomes, not printed. Panics elsewhere (a pool
/// worker's, one that escapes) still reach Rust's hook. WASM keeps its binding's own hook.
pub fn catching<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    #[cfg(not(target_arch = "wasm32"))]
    install_quiet_hook();
    CATCHING.with(|c| c.set(c.get() + 1));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get() - 1));
    outcome
}

#[cfg(not(target_arch = "wasm32"))]
fn install_quiet_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        let trace = std::env::var_os("PHOENIX_PANIC_TRACE").is_some_and(|v| v != "0" && !v.is_empty());
        std::panic::set_hook(Box::new(move |info| {
            if trace || CATCHING.with(|c| c.get()) == 0 {
                return previous(info);
            }
            // The file's name only: a dependency's full path names the machine that built it.
            let at = info.location().map(|l| {
                let file = l.file().rsplit(['/', '\\']).next().unwrap_or_default();
                format!("{file}:{}", l.line())
            });
            PANIC_AT.with(|p| *p.borrow_mut() = at);
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_carries_code_and_message() {
        let e = bad_config("config.json: field `d_model` missing");
        assert_eq!(e.to_wire(), "[E_BAD_CONFIG] config.json: field `d_model` missing");
    }

    #[test]
    fn panics_become_internal_errors() {
        let r: Result<()> = catch_panic(|| panic!("boom"));
        let e = r.unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(e.message.contains("boom"));
        // Where it happened, by file name only (no builder's path).
        assert!(e.message.starts_with("internal error (caught panic at error.rs:"), "{}", e.message);
        // Nested scopes unwind to the inner one; the outer goes on.
        let outer: Result<u32> = catch_panic(|| Ok(catch_panic::<u32>(|| panic!("inner")).map_or(7, |_| 0)));
        assert_eq!(outer.unwrap(), 7);
    }
}
