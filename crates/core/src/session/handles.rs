//! Errors for a binding handle used past its end, worded here once for both bindings.

use crate::error::{internal, invalid_option, PhoenixError};

/// A call on a model handle after `dispose()`.
pub fn disposed_model() -> PhoenixError {
    invalid_option("model disposed")
}

/// A step or export of a generation after its `dispose()`.
pub fn disposed_generation() -> PhoenixError {
    invalid_option("generation disposed")
}

/// A call on a generation after one of its calls panicked: its state may be half-advanced.
pub fn unusable_generation() -> PhoenixError {
    internal("generation unusable: an earlier step hit an internal error (panic)")
}
