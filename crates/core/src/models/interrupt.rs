//! Stopping a long forward between layers, at the caller's request.
//!
//! A generation's prompt pieces and `score` run under [`with_stop`]; each family's layer loop calls
//! [`check`] before each layer, which fails with `E_ABORTED` once the caller's stop function says
//! so. The family's forward then puts its state back as it was before the call (a KV cache cuts its
//! new rows; recurrent states go back to the tensors of the call's start), so the caller holds a
//! state with exactly the tokens it had fed. Without this a cancel waited for the rest of a
//! 512-token piece: ~0.5 s for SmolLM2-135M natively, ~7 s on WASM.
//!
//! Only forwards of more than one token are stopped (see `forward::in_pieces`): a one-token step is
//! short, and Mamba-2's and Granite's decode steps update their states in place, leaving nothing to
//! go back to.
//!
//! On wasm32 nothing can write the caller's flag while a call runs (the instance's memory is not
//! shared with the host), so the glue installs a host poll ([`set_host_poll`]) that reads a flag the
//! host can write while the call runs (a SharedArrayBuffer cell in Node's worker thread).

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::{aborted, Result};

/// Says whether the caller wants the running call to stop.
pub type StopFn = Arc<dyn Fn() -> bool + Send + Sync>;

thread_local! {
    static STOP: RefCell<Option<StopFn>> = const { RefCell::new(None) };
}

static HOST_POLL: OnceLock<fn() -> bool> = OnceLock::new();

/// Installs the host's poll, consulted by [`check`] inside a [`with_stop`] scope as well as the
/// scope's own function (the WASM glue; the first one installed stays).
pub fn set_host_poll(poll: fn() -> bool) {
    let _ = HOST_POLL.set(poll);
}

/// Runs `f` with this thread's stop function set to `stop` (`None`: nothing stops it), restoring
/// the previous one afterwards, also when `f` unwinds.
pub fn with_stop<R>(stop: Option<StopFn>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<StopFn>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            STOP.with(|s| *s.borrow_mut() = previous);
        }
    }
    let previous = STOP.with(|s| s.replace(stop));
    let _restore = Restore(previous);
    f()
}

/// A stop function that says "stop" once `flag` (a cancel flag) is set.
pub fn stop_on(flag: &Arc<AtomicBool>) -> StopFn {
    let flag = Arc::clone(flag);
    Arc::new(move || flag.load(Ordering::Relaxed))
}

/// This thread's stop function, to carry into the thread pool with the work.
pub(crate) fn current() -> Option<StopFn> {
    STOP.with(|s| s.borrow().clone())
}

/// `E_ABORTED` when the call running on this thread was asked to stop. Called by each family before
/// each layer; outside a [`with_stop`] scope it costs a thread-local read.
pub fn check() -> Result<()> {
    let stop = STOP.with(|s| s.borrow().as_ref().map(Arc::clone));
    let Some(stop) = stop else {
        return Ok(());
    };
    if stop() || HOST_POLL.get().is_some_and(|poll| poll()) {
        return Err(aborted("forward: stopped between layers at the caller's request"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn check_fails_only_inside_a_scope_whose_function_says_stop() {
        assert!(check().is_ok(), "no scope");
        let flag = Arc::new(AtomicBool::new(false));
        with_stop(Some(stop_on(&flag)), || {
            assert!(check().is_ok());
            flag.store(true, Ordering::Relaxed);
            assert_eq!(check().unwrap_err().code, ErrorCode::Aborted);
            // An inner scope without a function (a one-token step) is never stopped.
            with_stop(None, || assert!(check().is_ok()));
            assert!(check().is_err(), "the outer scope is back");
        });
        assert!(check().is_ok(), "the scope ended");
    }

    #[test]
    fn the_scope_is_restored_when_its_work_panics() {
        let stop: StopFn = Arc::new(|| true);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            with_stop(Some(stop), || panic!("a kernel's bug"))
        }));
        assert!(result.is_err());
        assert!(check().is_ok(), "the scope outlived its panic");
    }
}
