//! Python bindings of the admission core: argument checks, clock choice, error mapping.
//! No decisions are made here; each method is one call into `admission_core`.

use pyo3::prelude::*;

mod args;
mod bucket;
mod clock;
mod decision;
mod errors;
mod rate;
mod ready;
mod semaphore;
mod window;

/// Native half of `admission`. Import `admission`, not this module.
// `gil_used = true` until a free-threaded CPython test run proves the bindings (the core's
// thread safety is proven by its own tests and loom models).
#[pymodule(gil_used = true)]
mod _native {
    #[pymodule_export]
    use crate::bucket::TokenBucket;
    #[pymodule_export]
    use crate::clock::{LoopClock, ManualClock};
    #[pymodule_export]
    use crate::decision::Decision;
    #[pymodule_export]
    use crate::ready::Ready;
    #[pymodule_export]
    use crate::semaphore::{Semaphore, Ticket};
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
        Ok(())
    }
}
