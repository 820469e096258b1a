//! Python bindings of the admission core: argument checks, clock choice, error mapping.
//! No decisions are made here; each method is one call into `admission_core`.
//!
//! Two parts: the bindings of the primitives (`semaphore`, `bucket` and `window` with what
//! they share in `rate`, `allof`, the awaitable `acquire`, `clock`, ...), and `asyncio`, the
//! runtime their asyncio waiters run on (see its module documentation). The bindings use the
//! runtime; the runtime uses no binding.

use pyo3::prelude::*;

// The waiter's `tp_getattr` slot is written through the full `PyTypeObject`, and a frozen
// class's state is guarded by its object's critical section (`critical.rs`): both need the
// full C API of CPython. Free-threaded builds compile (`make lint` checks it); see
// DEVELOPERS.md for what is left before the module declares `gil_used = false`.
#[cfg(Py_LIMITED_API)]
compile_error!("admission's bindings use the full C API: they cannot be built for abi3");
#[cfg(any(PyPy, GraalPy))]
compile_error!("admission's bindings are for CPython");

mod acquire;
mod allof;
mod args;
mod asyncio;
mod breaker;
mod bucket;
mod client;
mod client_json;
mod client_reset;
mod clock;
mod contextvar;
mod critical;
mod decision;
mod decorated;
mod errors;
#[cfg(target_os = "linux")]
mod huge_pages;
mod keyed;
mod metrics;
mod rate;
mod ready;
mod reservation;
mod semaphore;
#[cfg(target_os = "linux")]
mod shm;
mod window;

/// Large blocks (a keyed limiter's tables at scale) on huge pages: see `huge_pages`.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: huge_pages::HugePageAlloc = huge_pages::HugePageAlloc;

/// Native half of `admission`. Import `admission`, not this module.
// `gil_used = true` until a free-threaded CPython test run proves the bindings (the core's
// thread safety is proven by its own tests and loom models): DEVELOPERS.md, "Free-threaded
// CPython".
#[pymodule(gil_used = true)]
mod _native {
    #[pymodule_export]
    use crate::acquire::Acquire;
    #[pymodule_export]
    use crate::allof::AllOf;
    #[pymodule_export]
    use crate::asyncio::{
        _count_result_lookups, _forget_running_loop, Deadlines, Waiter, WakeBatch,
    };
    #[pymodule_export]
    use crate::breaker::{BreakerCall, CircuitBreaker};
    #[pymodule_export]
    use crate::bucket::TokenBucket;
    #[pymodule_export]
    use crate::client::{estimate_tokens, read_quotas, sync_quotas, usage_tokens, TokenTally};
    #[pymodule_export]
    use crate::clock::{LoopClock, ManualClock};
    #[pymodule_export]
    use crate::decision::Decision;
    #[pymodule_export]
    use crate::decorated::{BreakerAwaitable, BreakerFunction};
    #[pymodule_export]
    use crate::keyed::{KeyedSemaphore, KeyedSlidingWindow, KeyedTokenBucket};
    #[pymodule_export]
    use crate::metrics::{_drain_retired, _track_retired, Scrape};
    #[pymodule_export]
    use crate::rate::RateTicket;
    #[pymodule_export]
    use crate::ready::Ready;
    #[pymodule_export]
    use crate::reservation::{take_now, Reservation};
    #[pymodule_export]
    use crate::semaphore::{Semaphore, Ticket};
    #[cfg(target_os = "linux")]
    #[pymodule_export]
    use crate::shm::{SharedKeyedTokenBucket, SharedSegment, SharedSemaphore, SharedTokenBucket};
    #[pymodule_export]
    use crate::window::SlidingWindow;

    use pyo3::prelude::*;

    /// The clock the limiters use by default: monotonic nanoseconds since an early point in
    /// this process.
    #[pyfunction]
    fn monotonic_ns() -> u64 {
        admission_core::clock::monotonic_ns()
    }

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("MAX_PERMITS", admission_core::MAX_PERMITS)?;
        let bounds = crate::rate::wait_bounds_s();
        m.add("WAIT_BOUNDS", pyo3::types::PyTuple::new(m.py(), bounds)?)?;
        crate::acquire::register_coroutine(m.py())?;
        #[cfg(target_os = "linux")]
        crate::shm::init();
        crate::decorated::register_coroutine(m.py())?;
        crate::asyncio::init(m)
    }
}
