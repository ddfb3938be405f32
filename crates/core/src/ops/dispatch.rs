//! Run-time selection between copies of one kernel compiled for different x86 vector extensions.
//!
//! `multiversion!` wraps an `#[inline(always)]` body in `#[target_feature]` copies (AVX-512, AVX2+FMA;
//! both with F16C, the f16 → f32 conversion every AVX2 CPU has)
//! plus the baseline build, and picks one per call from cached CPU detection. The body must be
//! `#[inline(always)]` so LLVM re-vectorises it inside each copy. Elsewhere (WASM, ARM) only the
//! baseline copy exists.

/// Widest vector extension this CPU offers (as far as our kernels care).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    Avx512,
    Avx2,
    Baseline,
}

/// The values `PHOENIX_SIMD` may take (unset or empty: no cap).
pub const SIMD_CAPS: [&str; 3] = ["avx512", "avx2", "baseline"];

/// `PHOENIX_SIMD` as set, when it is not one of [`SIMD_CAPS`]: the kernels then run uncapped, and
/// `build_info` refuses it so that a typo is not a silent full-speed run.
pub fn unknown_simd_cap() -> Option<String> {
    let cap = std::env::var("PHOENIX_SIMD").ok()?;
    (!cap.is_empty() && !SIMD_CAPS.contains(&cap.as_str())).then_some(cap)
}

/// Detected once; `PHOENIX_SIMD=baseline|avx2` caps it (for testing each copy); `avx512` keeps this
/// level but turns AMX off (`gemm_amx::available`).
pub fn simd_level() -> SimdLevel {
    use std::sync::OnceLock;
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = std::env::var("PHOENIX_SIMD").unwrap_or_default();
        let detected = detect();
        match (cap.as_str(), detected) {
            ("baseline", _) => SimdLevel::Baseline,
            ("avx2", SimdLevel::Avx512) => SimdLevel::Avx2,
            _ => detected,
        }
    })
}

#[cfg(target_arch = "x86_64")]
fn detect() -> SimdLevel {
    let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
    if avx2 && is_x86_feature_detected!("avx512f") {
        SimdLevel::Avx512
    } else if avx2 {
        SimdLevel::Avx2
    } else {
        SimdLevel::Baseline
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> SimdLevel {
    SimdLevel::Baseline
}

/// `multiversion!(pub fn name(a: A, b: B) -> R = body_fn);` defines `name` dispatching to copies of
/// `body_fn` compiled with AVX-512 / AVX2+FMA (+F16C) enabled.
/// `multiversion!(fn name(…) = body_fn, fma);`: the body takes `<const FMA: bool>`; the AVX-512 /
/// AVX2 copies get `true` (they fuse multiply-adds, see `math::madd`), the baseline copy (and WASM) `false`.
macro_rules! multiversion {
    ($vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:path) => {
        multiversion!(@copies $vis fn $name($($arg: $ty),*) $(-> $ret)?; $body, $body);
    };
    ($vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:ident, fma) => {
        multiversion!(@copies $vis fn $name($($arg: $ty),*) $(-> $ret)?; $body::<true>, $body::<false>);
    };
    // `$wide` runs in the AVX-512 and AVX2 copies, `$base` in the baseline one.
    (@copies $vis:vis fn $name:ident($($arg:ident : $ty:ty),*) $(-> $ret:ty)?; $wide:path, $base:path) => {
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma,f16c")]
                unsafe fn v512($($arg: $ty),*) $(-> $ret)? { $wide($($arg),*) }
                #[target_feature(enable = "avx2,fma,f16c")]
                unsafe fn v256($($arg: $ty),*) $(-> $ret)? { $wide($($arg),*) }
                match $crate::ops::simd_level() {
                    // SAFETY: the CPU was checked to support these features.
                    $crate::ops::SimdLevel::Avx512 => return unsafe { v512($($arg),*) },
                    $crate::ops::SimdLevel::Avx2 => return unsafe { v256($($arg),*) },
                    $crate::ops::SimdLevel::Baseline => {}
                }
            }
            $base($($arg),*)
        }
    };
}
