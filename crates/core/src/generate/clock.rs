//! Milliseconds for generation stats, from a monotonic clock on every target: `web-time` is
//! `std::time::Instant` natively and the same API over `performance.now()` on wasm32, where std's
//! `Instant` panics. Both bindings therefore report the core's own timings.

use std::sync::OnceLock;

use web_time::Instant;

/// Milliseconds since the first call in this process (or WASM instance).
pub fn now_ms() -> f64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1000.0
}
