//! Process-wide runtime facts and knobs the bindings expose: build info and the worker thread count.

use std::sync::OnceLock;

use crate::error::{invalid_option, Result};

/// `buildInfo()` of the bindings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BuildInfo {
    /// phoenix-core's version.
    pub version: String,
    /// The widest SIMD instruction set this CPU offers to the kernels (detected at run time).
    pub simd: String,
    /// Worker threads the core uses (or will use once started).
    pub threads: usize,
}

/// Upper bound accepted by [`set_threads`] (catches garbage such as a wrapped negative number).
pub const MAX_THREADS: usize = 1024;

static CONFIGURED_THREADS: OnceLock<usize> = OnceLock::new();

/// The bindings' `buildInfo()`.
///
/// `E_INVALID_OPTION` when `PHOENIX_SIMD` names no level: the bindings call this first thing after
/// loading, so a misspelt cap stops the program instead of running every kernel uncapped.
pub fn build_info() -> Result<BuildInfo> {
    if let Some(cap) = crate::ops::unknown_simd_cap() {
        return Err(invalid_option(format!(
            "PHOENIX_SIMD={cap:?} is not a SIMD level: use one of {} (or leave it unset)",
            crate::ops::SIMD_CAPS.join(", ")
        )));
    }
    Ok(BuildInfo { version: env!("CARGO_PKG_VERSION").to_string(), simd: simd().to_string(), threads: threads() })
}

/// Sets the size of the global rayon pool all kernels run on; `0` = one thread per core. On wasm32
/// (one thread) it only validates `n`.
///
/// rayon's global pool can be built only once, and is built implicitly by the first parallel
/// kernel: so call this before loading or running any model. Calling it again with the same
/// number is a no-op; a different number, or any call after the pool started, is
/// `E_INVALID_OPTION` (the pool keeps its size).
pub fn set_threads(n: usize) -> Result<()> {
    if n > MAX_THREADS {
        return Err(invalid_option(format!("setThreads({n}): the thread count must be in 0..={MAX_THREADS}")));
    }
    if cfg!(target_arch = "wasm32") {
        // No threads on wasm32: any valid count is accepted; the kernels run on the calling thread.
        return Ok(());
    }
    let wanted = if n == 0 { default_threads() } else { n };
    if let Some(&current) = CONFIGURED_THREADS.get() {
        return if current == wanted {
            Ok(())
        } else {
            Err(invalid_option(format!(
                "setThreads({n}): the thread pool already runs {current} threads; it can be sized only once, before the first model call"
            )))
        };
    }
    match rayon::ThreadPoolBuilder::new().num_threads(wanted).build_global() {
        Ok(()) => {
            let _ = CONFIGURED_THREADS.set(wanted);
            Ok(())
        }
        Err(_) => {
            let current = rayon::current_num_threads();
            let _ = CONFIGURED_THREADS.set(current);
            if current == wanted {
                Ok(())
            } else {
                Err(invalid_option(format!(
                    "setThreads({n}): the thread pool already started with {current} threads; call setThreads before loading or running a model"
                )))
            }
        }
    }
}

/// Threads in use, without starting the pool (starting it would make `set_threads` fail).
fn threads() -> usize {
    if cfg!(target_arch = "wasm32") {
        return 1;
    }
    CONFIGURED_THREADS.get().copied().unwrap_or_else(default_threads)
}

/// What rayon picks by default: `RAYON_NUM_THREADS`, else one per available core.
fn default_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// The vector level the kernels run at: the CPU's widest, or lower when `PHOENIX_SIMD` caps it (so
/// `info` says what runs, not what the CPU could do).
fn simd() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        match crate::ops::simd_level() {
            crate::ops::SimdLevel::Avx512 => "avx512f",
            crate::ops::SimdLevel::Avx2 => "avx2+fma",
            crate::ops::SimdLevel::Baseline => "baseline (sse2)",
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        "neon"
    }
    #[cfg(target_arch = "wasm32")]
    {
        if cfg!(target_feature = "simd128") {
            "simd128"
        } else {
            "none"
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "wasm32")))]
    {
        "none"
    }
}
