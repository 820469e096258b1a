//! `SlidingWindow` binding over the core exact sliding log.

use admission_core::SlidingWindow as CoreWindow;
use pyo3::prelude::*;

use crate::args::{count, ns_to_s, real};
use crate::clock::{ClockArg, ManualClock};
use crate::decision::Decision;
use crate::errors;
use crate::rate::RateState;
use crate::ready::ready;

/// Native exact sliding window. The public class is `admission.SlidingWindow`.
#[pyclass(frozen, subclass, weakref, module = "admission._native")]
pub struct SlidingWindow {
    state: RateState<CoreWindow>,
}

#[pymethods]
impl SlidingWindow {
    #[new]
    #[pyo3(signature = (limit, window, *, clock=None, name=None))]
    fn new(
        limit: &Bound<'_, PyAny>,
        window: &Bound<'_, PyAny>,
        clock: Option<ClockArg<'_>>,
        name: Option<String>,
    ) -> PyResult<Self> {
        let limit = count("limit", Some(limit), 0)?;
        let window = real("window", window)?;
        let core = CoreWindow::new(limit, window).map_err(errors::config)?;
        Ok(Self {
            state: RateState::new(core, clock.as_ref(), name),
        })
    }

    /// Admits `cost` now if it fits in the window; never waits.
    #[pyo3(signature = (cost=None))]
    fn try_acquire(&self, py: Python<'_>, cost: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        self.state.try_acquire(py, cost)
    }

    /// What `try_acquire(cost)` would decide now, without consuming anything.
    #[pyo3(signature = (cost=None))]
    fn peek(&self, py: Python<'_>, cost: Option<&Bound<'_, PyAny>>) -> PyResult<Decision> {
        self.state.peek(py, cost)
    }

    /// Awaitable admission of `cost`: immediate when it fits, else FIFO wait.
    #[pyo3(signature = (cost=None, timeout=None))]
    fn acquire<'py>(
        slf: &Bound<'py, Self>,
        cost: Option<&Bound<'py, PyAny>>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        slf.get().state.acquire(slf.as_any(), cost, timeout)
    }

    fn __aenter__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        slf.get().state.acquire(slf.as_any(), None, None)
    }

    #[pyo3(signature = (*_exc_info))]
    fn __aexit__(&self, py: Python<'_>, _exc_info: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        ready(py)
    }

    #[pyo3(signature = (cost, max_wait=None))]
    fn _reserve(
        &self,
        py: Python<'_>,
        cost: &Bound<'_, PyAny>,
        max_wait: Option<f64>,
    ) -> PyResult<(bool, f64, u64)> {
        self.state.reserve(py, cost, max_wait)
    }

    /// Ends a used reservation; `waited` (seconds) records the request's wait.
    #[pyo3(signature = (cost, waited=None))]
    fn _commit(&self, cost: i64, waited: Option<f64>) -> PyResult<()> {
        self.state.commit(cost, waited)
    }

    /// Moves the gauge of requests sleeping on a reservation (the slow path keeps it).
    fn _add_waiting(&self, delta: i64) {
        self.state.add_waiting(delta)
    }

    /// `(upper bounds in seconds, per-bucket counts with +Inf last, sum of waits in seconds)`;
    /// admissions that never waited are counted as zero waits.
    fn _wait_histogram(&self) -> (Vec<f64>, Vec<u64>, f64) {
        self.state.wait_histogram()
    }

    /// Requests waiting for a reservation to come due right now.
    #[getter]
    fn waiting(&self) -> u64 {
        self.state.waiting()
    }

    fn _refund(&self, cost: i64, token: u64, outcome: &str) -> PyResult<()> {
        self.state.refund(cost, token, outcome)
    }

    fn _count(&self, outcome: &str) -> PyResult<()> {
        self.state.count(outcome)
    }

    fn _counters(&self) -> (u64, u64, u64, u64, u64) {
        self.state.counters()
    }

    /// Entries in the window's log right now (each costs 16 bytes).
    fn _log_len(&self) -> usize {
        self.state.core.log_len()
    }

    #[getter]
    fn limit(&self) -> u64 {
        self.state.core.limit()
    }

    #[getter]
    fn window(&self) -> f64 {
        ns_to_s(self.state.core.window_ns())
    }

    #[getter]
    fn name(&self) -> Option<&str> {
        self.state.name()
    }

    #[getter]
    fn clock(&self, py: Python<'_>) -> Option<Py<ManualClock>> {
        self.state.clock(py)
    }
}

impl Drop for SlidingWindow {
    fn drop(&mut self) {
        self.state.retire("sliding_window");
    }
}
