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
    let info = build_info();
    assert_eq!(info.threads, 2);
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert!(!info.simd.is_empty());
}
