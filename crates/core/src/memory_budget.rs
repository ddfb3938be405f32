//! A memory and time budget for work whose allocations file content decides (a model's chat template).
//!
//! Why an allocator and not checks on values: minijinja bounds instructions (fuel), not value sizes,
//! and its operators (`~`, `+`, `*`) and filters (`join`, `replace`, `indent`, `format`, …) can each
//! build a huge value in one instruction. Checking every way a value can grow would be a list that is
//! never complete; counting bytes where they are allocated covers them all.
//!
//! How: the process's global allocator is the system one plus a per-thread counter that is armed only
//! on a thread running budgeted work (elsewhere the cost is one relaxed load and a branch). A
//! budgeted job runs on its own thread. An allocation that would take it past its budget cannot fail
//! (a null return aborts the process) nor unwind (undefined behaviour in an allocator), so that thread
//! reports the overrun to the waiting caller and sleeps forever: its memory stays held but bounded by
//! the budget, and the caller gets an error. A process keeps at most [`MAX_STOPPED`] such threads;
//! later budgeted jobs are refused.
//!
//! On wasm32 there are no threads to stop: the job runs inline under the same count, and past the
//! budget the instance traps at once (rather than growing its memory to 4 GiB first). Just before,
//! the caller's report (prepared before the job ran) goes to the hook the glue set with
//! [`set_overrun_hook`]: wasm-bindgen refuses every call into a trapped module, so the JS layer must
//! hear it first; it then replaces the trapped instance and throws that error. The deadline needs a
//! clock, which wasm32 has only through the host: the glue sets one with [`set_clock`].

/// What a budgeted job may use, and what is reported when it overruns (on wasm32 the report is handed
/// to the overrun hook just before the trap: nothing can be returned from a trapped module).
#[derive(Debug, Clone, Copy)]
pub struct Budget<'a> {
    /// Live bytes the job may hold at once.
    pub bytes: usize,
    /// Milliseconds the job may run.
    pub millis: u64,
    /// The caller's wire-form error for a job past `bytes`.
    pub over_bytes: &'a str,
    /// The caller's wire-form error for a job past `millis`.
    pub over_time: &'a str,
}

/// Why a budgeted job gave no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// It tried to hold more than its budget; its thread is stopped for good.
    OverBudget,
    /// It ran past its time; its thread is stopped for good at its next allocation.
    TooLong,
    /// [`MAX_STOPPED`] jobs are already stopped in this process; this one was not run.
    TooManyStopped,
    /// It panicked outside any `catch_unwind` of its own.
    Panicked,
    /// The operating system refused a thread for it.
    NoThread,
}

/// Most over-budget jobs a process keeps stopped (each holds up to its budget).
pub const MAX_STOPPED: usize = 4;

#[cfg(not(target_arch = "wasm32"))]
pub use native::run_with_budget;
#[cfg(target_arch = "wasm32")]
pub use wasm::{run_with_budget, set_clock, set_overrun_hook};

/// Natively a job past its budget never traps the process, so there is nothing to hear about.
#[cfg(not(target_arch = "wasm32"))]
pub fn set_overrun_hook(_hook: fn(&str)) {}

/// Natively the deadline uses `std::time::Instant`.
#[cfg(not(target_arch = "wasm32"))]
pub fn set_clock(_now_ms: fn() -> f64) {}

/// Hands memory the allocator holds free back to the OS now. mimalloc purges freed pages only
/// when the thread that owns them allocates again; a chat's KV cache and snapshots (tens of MB each,
/// freed when a turn ends) otherwise stayed resident while the process sat idle between turns.
#[cfg(not(target_arch = "wasm32"))]
pub fn release_free_memory() {
    // SAFETY: mi_collect takes no pointers; any thread may call it.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// WASM memory never shrinks: nothing to hand back.
#[cfg(target_arch = "wasm32")]
pub fn release_free_memory() {}

/// Calls [`release_free_memory`] when dropped. As the last field of a struct that owns large
/// allocations (a model's weights), it runs after the fields before it are freed.
#[derive(Debug, Default)]
pub struct ReleaseOnDrop;

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        release_free_memory();
    }
}

/// `GlobalAlloc` for the invoking module's `BudgetedAllocator`: every call forwards to `$inner` with
/// the same arguments (that is its safety), after charging or crediting the bytes through the
/// module's own `charge` / `credit` (native: per thread; wasm32: the one instance).
macro_rules! budgeted_global_alloc {
    ($inner:expr) => {
        unsafe impl GlobalAlloc for BudgetedAllocator {
            #[inline]
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                charge(layout.size());
                $inner.alloc(layout)
            }

            #[inline]
            unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                charge(layout.size());
                $inner.alloc_zeroed(layout)
            }

            #[inline]
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                credit(layout.size());
                $inner.dealloc(ptr, layout)
            }

            #[inline]
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                if new_size > layout.size() {
                    charge(new_size - layout.size());
                } else {
                    credit(layout.size() - new_size);
                }
                $inner.realloc(ptr, layout, new_size)
            }
        }
    };
}

#[cfg(target_arch = "wasm32")]
mod wasm {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::{Cell, RefCell};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use super::{Budget, Refused};

    /// The system allocator (dlmalloc), counting live bytes while a budgeted job runs.
    pub struct BudgetedAllocator;

    #[global_allocator]
    static ALLOCATOR: BudgetedAllocator = BudgetedAllocator;

    // One thread: plain atomics are loads and stores. `LIMIT == 0`: no job is running.
    static LIMIT: AtomicUsize = AtomicUsize::new(0);
    static USED: AtomicUsize = AtomicUsize::new(0);
    /// The host's clock (`fn() -> f64`, ms) as an address; 0 until the glue sets one.
    static CLOCK: AtomicUsize = AtomicUsize::new(0);
    /// The running job's deadline on that clock (f64 bits).
    static DEADLINE: AtomicU64 = AtomicU64::new(0);

    thread_local! {
        static OVER_BYTES: RefCell<String> = const { RefCell::new(String::new()) };
        static OVER_TIME: RefCell<String> = const { RefCell::new(String::new()) };
        static HOOK: Cell<Option<fn(&str)>> = const { Cell::new(None) };
    }

    /// Runs `job` inline; past the budget's bytes or time the instance traps, leaving the matching
    /// report for the overrun hook.
    pub fn run_with_budget<T: Send + 'static>(
        budget: Budget<'_>,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Refused> {
        OVER_BYTES.with(|r| *r.borrow_mut() = budget.over_bytes.to_string());
        OVER_TIME.with(|r| *r.borrow_mut() = budget.over_time.to_string());
        if let Some(now) = clock() {
            DEADLINE.store((now() + budget.millis as f64).to_bits(), Ordering::Relaxed);
        }
        USED.store(0, Ordering::Relaxed);
        LIMIT.store(budget.bytes.max(1), Ordering::Relaxed);
        let value = job();
        LIMIT.store(0, Ordering::Relaxed);
        Ok(value)
    }

    /// Called with the report of a job past its budget, just before the instance traps.
    pub fn set_overrun_hook(hook: fn(&str)) {
        HOOK.with(|h| h.set(Some(hook)));
    }

    /// The host's clock in milliseconds, for budgeted jobs' deadlines (none until it is set).
    pub fn set_clock(now_ms: fn() -> f64) {
        CLOCK.store(now_ms as usize, Ordering::Relaxed);
    }

    fn clock() -> Option<fn() -> f64> {
        let address = CLOCK.load(Ordering::Relaxed);
        // SAFETY: only `set_clock` stores a non-zero value, and it stores a `fn() -> f64`.
        (address != 0).then(|| unsafe { std::mem::transmute::<usize, fn() -> f64>(address) })
    }

    #[inline(always)]
    fn charge(bytes: usize) {
        let limit = LIMIT.load(Ordering::Relaxed);
        if limit != 0 {
            let used = USED.load(Ordering::Relaxed).saturating_add(bytes);
            if used > limit {
                stop(&OVER_BYTES);
            }
            if let Some(now) = clock() {
                if now() > f64::from_bits(DEADLINE.load(Ordering::Relaxed)) {
                    stop(&OVER_TIME);
                }
            }
            USED.store(used, Ordering::Relaxed);
        }
    }

    #[inline(always)]
    fn credit(bytes: usize) {
        if LIMIT.load(Ordering::Relaxed) != 0 {
            USED.store(USED.load(Ordering::Relaxed).saturating_sub(bytes), Ordering::Relaxed);
        }
    }

    /// Reports, then traps: neither failing (an abort, with no report) nor unwinding is allowed in an
    /// allocator. With the budget off, the hook may allocate (dlmalloc has not been entered yet).
    #[cold]
    #[inline(never)]
    fn stop(report: &'static std::thread::LocalKey<RefCell<String>>) -> ! {
        LIMIT.store(0, Ordering::Relaxed);
        if let Some(hook) = HOOK.with(Cell::get) {
            report.with(|r| hook(&r.borrow()));
        }
        core::arch::wasm32::unreachable()
    }

    // SAFETY: see the macro.
    budgeted_global_alloc!(System);
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::alloc::{GlobalAlloc, Layout};
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    use super::{Budget, Refused, MAX_STOPPED};

    /// Stack of a budgeted thread (as a main thread's: a template's recursion limit is counted in
    /// Rust frames of minijinja's evaluator).
    const STACK_BYTES: usize = 8 << 20;

    /// The system allocator, counting live bytes on threads running under a budget.
    pub struct BudgetedAllocator;

    #[global_allocator]
    static ALLOCATOR: BudgetedAllocator = BudgetedAllocator;

    /// This thread's budget: `limit == 0` means none (every thread but a budgeted job's).
    struct Meter {
        limit: Cell<usize>,
        used: Cell<usize>,
        /// When the job must have ended; set with `limit`.
        deadline: Cell<Option<Instant>>,
        /// Where an overrun is reported; set while `limit != 0`.
        report: Cell<*const Report>,
    }

    thread_local! {
        // `const` and without Drop: reading it never allocates nor registers a destructor.
        static METER: Meter = const {
            Meter { limit: Cell::new(0), used: Cell::new(0), deadline: Cell::new(None), report: Cell::new(std::ptr::null()) }
        };
    }

    /// How far a job got, shared between its thread and the caller waiting on it.
    enum State<T> {
        Running,
        Finished(T),
        Panicked,
    }

    /// A job's state, type-erased for the allocator (which only ever signals an overrun).
    struct Report {
        over_budget: std::sync::atomic::AtomicBool,
        /// Set with `over_budget` when the overrun was the deadline's.
        too_long: std::sync::atomic::AtomicBool,
        lock: Mutex<()>,
        changed: Condvar,
    }

    impl Report {
        fn lock(&self) -> MutexGuard<'_, ()> {
            self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }

    /// Stopped jobs in this process.
    static STOPPED: AtomicUsize = AtomicUsize::new(0);
    /// Budgeted threads metering now (stopped ones excluded): while 0, which is nearly always, an
    /// allocation costs one relaxed load more than the system allocator's, not a thread-local read
    /// (a call to `__tls_get_addr` in the Node addon, a shared library).
    static METERING: AtomicUsize = AtomicUsize::new(0);

    /// Runs `job` on a thread of its own whose live allocations may not exceed `budget.bytes` and
    /// that must end within `budget.millis`. (The reports are for the wasm32 version, which cannot
    /// return an error once it traps.)
    pub fn run_with_budget<T: Send + 'static>(
        budget: Budget<'_>,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Refused> {
        run_counting(budget.bytes, Duration::from_millis(budget.millis), &STOPPED, MAX_STOPPED, job)
    }

    /// [`run_with_budget`] with the stopped-job counter and cap as parameters (tests use their own).
    pub(super) fn run_counting<T: Send + 'static>(
        budget: usize,
        time: Duration,
        stopped: &'static AtomicUsize,
        max_stopped: usize,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Refused> {
        if stopped.load(Ordering::Acquire) >= max_stopped {
            return Err(Refused::TooManyStopped);
        }
        let report = Arc::new(Report {
            over_budget: Default::default(),
            too_long: Default::default(),
            lock: Mutex::new(()),
            changed: Condvar::new(),
        });
        // Far-off deadlines (Duration::MAX) saturate to none.
        let deadline = Instant::now().checked_add(time);
        let slot: Arc<Mutex<State<T>>> = Arc::new(Mutex::new(State::Running));
        let (thread_report, thread_slot) = (report.clone(), slot.clone());
        let worker = std::thread::Builder::new()
            .name("phoenix-budgeted".into())
            .stack_size(STACK_BYTES)
            .spawn(move || {
                METERING.fetch_add(1, Ordering::SeqCst);
                METER.with(|m| {
                    m.used.set(0);
                    m.deadline.set(deadline);
                    m.report.set(Arc::as_ptr(&thread_report));
                    m.limit.set(budget.max(1));
                });
                let outcome = crate::error::catching(job);
                METER.with(|m| m.limit.set(0));
                METERING.fetch_sub(1, Ordering::SeqCst);
                let state = match outcome {
                    Ok(value) => State::Finished(value),
                    Err(_) => State::Panicked,
                };
                *thread_slot.lock().unwrap_or_else(|p| p.into_inner()) = state;
                let _guard = thread_report.lock();
                thread_report.changed.notify_all();
            })
            .map_err(|_| Refused::NoThread)?;

        let mut guard = report.lock();
        loop {
            let late = deadline.is_some_and(|d| Instant::now() >= d);
            if report.over_budget.load(Ordering::Acquire) || late {
                drop(guard);
                stopped.fetch_add(1, Ordering::AcqRel);
                // Detached: it sleeps forever holding its (bounded) memory, or (late, allocating
                // nothing) runs on until its next allocation stops it or it ends.
                drop(worker);
                return Err(
                    if report.too_long.load(Ordering::Acquire) || !report.over_budget.load(Ordering::Acquire) {
                        Refused::TooLong
                    } else {
                        Refused::OverBudget
                    },
                );
            }
            let mut state = slot.lock().unwrap_or_else(|p| p.into_inner());
            match std::mem::replace(&mut *state, State::Running) {
                State::Running => {}
                State::Finished(value) => {
                    drop((state, guard));
                    let _ = worker.join();
                    return Ok(value);
                }
                State::Panicked => {
                    drop((state, guard));
                    let _ = worker.join();
                    return Err(Refused::Panicked);
                }
            }
            drop(state);
            guard = match deadline {
                Some(d) => {
                    let wait = d.saturating_duration_since(Instant::now());
                    report.changed.wait_timeout(guard, wait).unwrap_or_else(|p| p.into_inner()).0
                }
                None => report.changed.wait(guard).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }

    /// Counts `bytes` more on a budgeted thread; past the budget, stops the thread (never returns).
    #[inline(always)]
    fn charge(bytes: usize) {
        if METERING.load(Ordering::Relaxed) == 0 {
            return;
        }
        let _ = METER.try_with(|m| {
            let limit = m.limit.get();
            if limit != 0 {
                let used = m.used.get().saturating_add(bytes);
                if used > limit && !std::thread::panicking() {
                    stop(m, false);
                }
                // `Instant::now` is a vDSO call that allocates nothing.
                if m.deadline.get().is_some_and(|d| Instant::now() >= d) && !std::thread::panicking() {
                    stop(m, true);
                }
                m.used.set(used);
            }
        });
    }

    #[inline(always)]
    fn credit(bytes: usize) {
        if METERING.load(Ordering::Relaxed) == 0 {
            return;
        }
        let _ = METER.try_with(|m| {
            if m.limit.get() != 0 {
                m.used.set(m.used.get().saturating_sub(bytes));
            }
        });
    }

    /// Reports the overrun and sleeps forever. Allocates nothing: the flag, the futex-based mutex
    /// and condvar, and `sleep` do not. (A panicking thread is let through instead: the panic
    /// machinery may hold the panic hook's locks while it allocates a little.)
    #[cold]
    #[inline(never)]
    fn stop(m: &Meter, late: bool) -> ! {
        let report = m.report.get();
        m.limit.set(0);
        METERING.fetch_sub(1, Ordering::SeqCst);
        // SAFETY: set with `limit` by `run_counting`, from an `Arc` the job's closure owns; this
        // thread never returns from here, so the closure (and the `Arc`) is never dropped.
        let report = unsafe { &*report };
        {
            let _guard = report.lock();
            report.too_long.store(late, Ordering::Release);
            report.over_budget.store(true, Ordering::Release);
            report.changed.notify_all();
        }
        loop {
            std::thread::sleep(std::time::Duration::from_secs(u32::MAX as u64));
        }
    }

    // SAFETY: see the macro; the counters are this thread's. mimalloc rather than the system
    // allocator: glibc's malloc gave each prefill layer's multi-MB outputs back to the OS and faulted
    // them in again (50–60 k page faults per 512-token Mamba-130M prefill, ~20 % of its time).
    budgeted_global_alloc!(mimalloc::MiMalloc);
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use std::time::{Duration, Instant};

    use super::native::run_counting;
    use super::Refused;

    const TIME: Duration = Duration::from_secs(60);

    #[test]
    fn jobs_within_the_budget_return_and_over_it_are_stopped_up_to_the_cap() {
        static STOPPED: AtomicUsize = AtomicUsize::new(0);
        const BUDGET: usize = 1 << 20;
        // Allocations come and go: only live bytes count.
        let churn =
            run_counting(BUDGET, TIME, &STOPPED, 2, || (0..100).map(|_| vec![1u8; BUDGET / 2].len()).sum::<usize>());
        assert_eq!(churn, Ok(100 * BUDGET / 2));
        let grow = || {
            let mut s = String::new();
            for _ in 0..40 {
                s = format!("{s}{s}x");
            }
            s.len()
        };
        assert_eq!(run_counting(BUDGET, TIME, &STOPPED, 2, grow), Err(Refused::OverBudget));
        assert_eq!(run_counting(BUDGET, TIME, &STOPPED, 2, || vec![0u8; 1 << 40].len()), Err(Refused::OverBudget));
        assert_eq!(run_counting(BUDGET, TIME, &STOPPED, 2, || 1), Err(Refused::TooManyStopped));
        // The caller's thread is not budgeted.
        assert_eq!(vec![0u8; 4 * BUDGET].len(), 4 * BUDGET);
        let panicked =
            run_counting(BUDGET, TIME, Box::leak(Box::new(AtomicUsize::new(0))), 2, || -> usize { panic!("job") });
        assert_eq!(panicked, Err(Refused::Panicked));
    }

    /// Past its time a job is given up on: one that allocates is stopped there (its thread sleeps,
    /// holding what it had), one that allocates nothing is left to end on its own; both count.
    #[test]
    fn jobs_past_their_time_are_given_up_on() {
        static STOPPED: AtomicUsize = AtomicUsize::new(0);
        let short = Duration::from_millis(50);
        let started = Instant::now();
        let allocating = || -> usize {
            loop {
                std::hint::black_box(vec![0u8; 64]);
            }
        };
        assert_eq!(run_counting(1 << 20, short, &STOPPED, 3, allocating), Err(Refused::TooLong));
        let spinning = || {
            let until = Instant::now() + Duration::from_millis(400);
            let mut n = 0u64;
            while Instant::now() < until {
                n = n.wrapping_add(1);
            }
            n
        };
        assert_eq!(run_counting(1 << 20, short, &STOPPED, 3, spinning), Err(Refused::TooLong));
        assert!(started.elapsed() < Duration::from_millis(350), "{:?}", started.elapsed());
        assert_eq!(run_counting(1 << 20, short, &STOPPED, 3, || 7), Ok(7));
        assert_eq!(STOPPED.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
