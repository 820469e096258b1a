//! `TokenBucket` binding over the core GCRA.

use admission_core::Gcra;
use pyo3::prelude::*;

use crate::args::{count, ns_to_s, real};
use crate::clock::{ClockArg, ManualClock};
use crate::decision::Decision;
use crate::errors;
use crate::rate::RateState;
use crate::ready::ready;

/// Native token bucket (GCRA). The public class is `admission.TokenBucket`.
#[pyclass(frozen, subclass, weakref, module = "admission._native")]
pub struct TokenBucket {
    state: RateState<Gcra>,
    rate: f64,
    per: f64,
}

#[pymethods]
impl TokenBucket {
    #[new]
    #[pyo3(signature = (rate, per=None, burst=None, *, clock=None, name=None))]
    fn new(
        rate: &Bound<'_, PyAny>,
        per: Option<&Bound<'_, PyAny>>,
        burst: Option<&Bound<'_, PyAny>>,
        clock: Option<ClockArg<'_>>,
        name: Option<String>,
    ) -> PyResult<Self> {
        let rate = real("rate", rate)?;
        let per = per.map_or(Ok(1.0), |p| real("per", p))?;
        // Default burst: one period's worth (at least 1), the usual "N per period" reading.
        let default_burst = if rate.is_finite() && rate >= 1.0 {
            rate.floor() as u64
        } else {
            1
        };
        let burst = count("burst", burst, default_burst)?;
        let core = Gcra::new(rate, per, burst).map_err(errors::config)?;
        Ok(Self {
            state: RateState::new(core, clock.as_ref(), name),
            rate,
            per,
        })
    }

    /// Admits `cost` now if the bucket holds that many tokens; never waits.
    #[pyo3(signature = (cost=None))]
    fn try_acquire(&self, py: Python<'_>, cost: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        self.state.try_acquire(py, cost)
    }

    /// What `try_acquire(cost)` would decide now, without consuming anything.
    #[pyo3(signature = (cost=None))]
    fn peek(&self, py: Python<'_>, cost: Option<&Bound<'_, PyAny>>) -> PyResult<Decision> {
        self.state.peek(py, cost)
    }

    /// Awaitable admission of `cost`: immediate when tokens are there, else FIFO wait.
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

    /// `(admitted, admitted_cost, rejected, timed_out, cancelled)`.
    fn _counters(&self) -> (u64, u64, u64, u64, u64) {
        self.state.counters()
    }

    #[getter]
    fn rate(&self) -> f64 {
        self.rate
    }

    #[getter]
    fn per(&self) -> f64 {
        self.per
    }

    #[getter]
    fn burst(&self) -> u64 {
        self.state.core.burst()
    }

    #[getter]
    fn name(&self) -> Option<&str> {
        self.state.name()
    }

    #[getter]
    fn clock(&self, py: Python<'_>) -> Option<Py<ManualClock>> {
        self.state.clock(py)
    }

    /// Seconds per token, as used internally (rounded up to whole nanoseconds).
    #[getter]
    fn emission_interval(&self) -> f64 {
        ns_to_s(self.state.core.emission_ns())
    }
}

impl Drop for TokenBucket {
    fn drop(&mut self) {
        self.state.retire("token_bucket");
    }
}
