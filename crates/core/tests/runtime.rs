//! Thread-pool sizing and build info. Its own test binary: rayon's global pool is per process.

use phoenix_core::session::{build_info, set_threads};
use phoenix_core::ErrorCode;

#[test]
fn threads_can_be_set_once_then_only_confirmed() {
    assert_eq!(set_threads(5000).unwrap_err().code, ErrorCode::InvalidOption);
    set_threads(2).unwrap();
    set_threads(2).unwrap(); // the same value again is fine
    let e = set_threads(3).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidOption);
    assert!(e.message.contains("setThreads(3)"), "{}", e.message);
    assert_eq!(rayon::current_num_threads(), 2);
    let info = build_info().unwrap();
    assert_eq!(info.threads, 2);
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert!(!info.simd.is_empty());
}

/// `info` names the level the kernels run at: under `PHOENIX_SIMD` (CI runs this file once per
/// level), the capped one, not the CPU's widest.
#[cfg(target_arch = "x86_64")]
#[test]
fn build_info_names_the_simd_level_the_kernels_use() {
    use phoenix_core::ops::{simd_level, SimdLevel};
    let expected = match simd_level() {
        SimdLevel::Avx512 => "avx512f",
        SimdLevel::Avx2 => "avx2+fma",
        SimdLevel::Baseline => "baseline (sse2)",
    };
    assert_eq!(build_info().unwrap().simd, expected);
    if std::env::var("PHOENIX_SIMD").as_deref() == Ok("baseline") {
        assert_eq!(simd_level(), SimdLevel::Baseline);
    }
}
