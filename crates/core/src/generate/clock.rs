//! Milliseconds for generation stats. `std::time::Instant` panics on `wasm32-unknown-unknown`, so
//! there the core reports 0 and the WASM glue measures time on the JS side.

#[cfg(not(target_arch = "wasm32"))]
pub fn now_ms() -> f64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1000.0
}

#[cfg(target_arch = "wasm32")]
pub fn now_ms() -> f64 {
    0.0
}
