//! `SlidingWindow` binding over the core exact sliding log.

use admission_core::{AcquireError, SlidingWindow as CoreWindow};
use pyo3::prelude::*;

use crate::args::{count, count_i64, max_wait_ns, ns_to_s, real};
use crate::clock::{Clock, ManualClock};
use crate::decision::Decision;
use crate::errors;

/// Native exact sliding window. The public class is `admission.SlidingWindow`.
#[pyclass(frozen, subclass, weakref, module = "admission._native")]
pub struct SlidingWindow {
    core: CoreWindow,
    clock: Clock,
    clock_obj: Option<Py<ManualClock>>,
    name: Option<String>,
}

#[pymethods]
impl SlidingWindow {
    #[new]
    #[pyo3(signature = (limit, window, *, clock=None, name=None))]
    fn new(
        limit: &Bound<'_, PyAny>,
        window: &Bound<'_, PyAny>,
        clock: Option<&Bound<'_, ManualClock>>,
        name: Option<String>,
    ) -> PyResult<Self> {
        let limit = count("limit", Some(limit), 0)?;
        let window = real("window", window)?;
        let core = CoreWindow::new(limit, window).map_err(errors::config)?;
        Ok(Self {
            core,
            clock: Clock::from_arg(clock),
            clock_obj: clock.map(|c| c.clone().unbind()),
            name,
        })
    }

    /// Admits `cost` now if it fits in the window; never waits.
    #[pyo3(signature = (cost=None))]
    fn try_acquire(&self, py: Python<'_>, cost: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let cost = count("cost", cost, 1)?;
        self.core
            .try_acquire(self.clock.now(), cost)
            .map_err(|e| errors::acquire(py, e))
    }

    /// What `try_acquire(cost)` would decide now, without consuming anything.
    #[pyo3(signature = (cost=None))]
    fn peek(&self, py: Python<'_>, cost: Option<&Bound<'_, PyAny>>) -> PyResult<Decision> {
        let cost = count("cost", cost, 1)?;
        self.core
            .peek(self.clock.now(), cost)
            .map(Decision::from)
            .map_err(|e| errors::acquire(py, e))
    }

    /// See `TokenBucket._reserve`; the token is the reservation's timestamp.
    #[pyo3(signature = (cost, max_wait=None))]
    fn _reserve(&self, py: Python<'_>, cost: i64, max_wait: Option<f64>) -> PyResult<(bool, f64, u64)> {
        let cost = count_i64("cost", cost)?;
        let max_wait = max_wait_ns("timeout", max_wait)?;
        let now = self.clock.now();
        match self.core.reserve(now, cost, max_wait) {
            Ok(at) => Ok((true, ns_to_s(at - now), at)),
            Err(AcquireError::WouldExceedDeadline { needed_ns }) => {
                self.core.count_timed_out();
                Ok((false, ns_to_s(needed_ns), 0))
            }
            Err(e) => Err(errors::acquire(py, e)),
        }
    }

    fn _commit(&self, cost: i64) -> PyResult<()> {
        self.core.commit(count_i64("cost", cost)?);
        Ok(())
    }

    #[pyo3(signature = (cost, token, timed_out=false))]
    fn _refund(&self, cost: i64, token: u64, timed_out: bool) -> PyResult<()> {
        self.core.refund(token, count_i64("cost", cost)?, timed_out);
        Ok(())
    }

    fn _counters(&self) -> (u64, u64, u64, u64, u64) {
        let c = self.core.counters().snapshot();
        (c.admitted, c.admitted_cost, c.rejected, c.timed_out, c.cancelled)
    }

    /// Entries in the window's log right now (each costs 16 bytes).
    fn _log_len(&self) -> usize {
        self.core.log_len()
    }

    #[getter]
    fn limit(&self) -> u64 {
        self.core.limit()
    }

    #[getter]
    fn window(&self) -> f64 {
        ns_to_s(self.core.window_ns())
    }

    #[getter]
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    #[getter]
    fn clock(&self, py: Python<'_>) -> Option<Py<ManualClock>> {
        self.clock_obj.as_ref().map(|c| c.clone_ref(py))
    }
}
