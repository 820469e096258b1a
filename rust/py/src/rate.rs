//! What the two rate-limiter classes share: clock, reservation protocol, async fast path.
//!
//! Each `#[pyclass]` holds a `RateState<L>` and its methods are one-line delegations here,
//! so `TokenBucket` and `SlidingWindow` cannot drift apart.

use std::sync::atomic::{AtomicI64, Ordering};

use admission_core::{
    retired, AcquireError, Counters, CountersSnapshot, Decision as CoreDecision, HistogramSnapshot,
    RateLimit, Refusal, WAIT_BOUNDS_NS,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::args::{count, count_i64, max_wait_ns, ns_to_s, timeout};
use crate::clock::{Clock, ClockArg, ManualClock};
use crate::decision::Decision;
use crate::errors;
use crate::ready::{acquire_slow, ready};

pub struct RateState<L> {
    pub core: L,
    clock: Clock,
    /// The manual clock, when there is one: blocking waits advance it instead of sleeping.
    clock_obj: Option<Py<ManualClock>>,
    name: Option<String>,
    /// Requests sleeping on a reservation right now (kept by the Python slow path).
    waiting: AtomicI64,
}

/// The finite upper bounds of the wait histogram's buckets, in seconds.
pub fn wait_bounds_s() -> Vec<f64> {
    WAIT_BOUNDS_NS.iter().map(|&b| ns_to_s(b)).collect()
}

/// `(finite upper bounds in seconds, per-bucket counts including +Inf, sum in seconds)`.
pub fn histogram_tuple(h: &HistogramSnapshot) -> (Vec<f64>, Vec<u64>, f64) {
    (wait_bounds_s(), h.counts.to_vec(), ns_to_s(h.sum_ns))
}

/// Adds a dropped primitive's final figures to the retired totals when a metrics exporter
/// keeps them (see `admission_core::retired`); only then are they read.
pub fn retire(
    kind: &'static str,
    name: Option<&str>,
    counters: &Counters,
    waits: impl FnOnce() -> HistogramSnapshot,
) {
    if retired::enabled() {
        retired::retire(kind, name, counters.snapshot(), waits());
    }
}

/// `(admitted, admitted_cost, rejected, timed_out, cancelled)`.
pub fn counters_tuple(c: &CountersSnapshot) -> (u64, u64, u64, u64, u64) {
    (
        c.admitted,
        c.admitted_cost,
        c.rejected,
        c.timed_out,
        c.cancelled,
    )
}

pub fn refusal(outcome: &str) -> PyResult<Refusal> {
    match outcome {
        "rejected" => Ok(Refusal::Rejected),
        "timed_out" => Ok(Refusal::TimedOut),
        "cancelled" => Ok(Refusal::Cancelled),
        other => Err(PyValueError::new_err(format!(
            "outcome must be 'rejected', 'timed_out' or 'cancelled', got {other:?}"
        ))),
    }
}

impl<L: RateLimit> RateState<L> {
    pub fn new(core: L, clock: Option<&ClockArg<'_>>, name: Option<String>) -> Self {
        let clock_obj = match clock {
            Some(ClockArg::Manual(c)) => Some(c.clone().unbind()),
            _ => None,
        };
        Self {
            core,
            clock: Clock::from_arg(clock),
            clock_obj,
            name,
            waiting: AtomicI64::new(0),
        }
    }

    #[inline(always)]
    pub fn try_acquire(&self, py: Python<'_>, cost: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let cost = count("cost", cost, 1)?;
        self.core
            .try_acquire(self.clock.now(py)?, cost)
            .map_err(|e| errors::acquire(py, e))
    }

    pub fn peek(&self, py: Python<'_>, cost: Option<&Bound<'_, PyAny>>) -> PyResult<Decision> {
        let cost = count("cost", cost, 1)?;
        self.core
            .peek(self.clock.now(py)?, cost)
            .map(|d: CoreDecision| Decision::from(d))
            .map_err(|e| errors::acquire(py, e))
    }

    /// Immediate admission (returns the shared `Ready`), else the Python slow path's coroutine
    /// `slf._acquire_slow(cost, timeout)`, which waits for a reservation.
    #[inline(always)]
    pub fn acquire<'py>(
        &self,
        slf: &Bound<'py, PyAny>,
        cost: Option<&Bound<'py, PyAny>>,
        timeout_arg: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let cost = count("cost", cost, 1)?;
        let limit = timeout(timeout_arg)?;
        match self.core.reserve(self.clock.now(py)?, cost, 0) {
            Ok(r) => {
                debug_assert_eq!(r.wait_ns, 0);
                self.core.commit(cost);
                ready(py)
            }
            Err(AcquireError::WouldExceedDeadline { .. }) => acquire_slow(slf, cost, limit),
            Err(e) => Err(errors::acquire(py, e)),
        }
    }

    pub fn reserve(
        &self,
        py: Python<'_>,
        cost: &Bound<'_, PyAny>,
        max_wait: Option<f64>,
    ) -> PyResult<(bool, f64, u64)> {
        let cost = count("cost", Some(cost), 1)?;
        let max_wait = max_wait_ns("timeout", max_wait)?;
        match self.core.reserve(self.clock.now(py)?, cost, max_wait) {
            Ok(r) => Ok((true, ns_to_s(r.wait_ns), r.token)),
            Err(AcquireError::WouldExceedDeadline { needed_ns }) => {
                Ok((false, ns_to_s(needed_ns), 0))
            }
            Err(e) => Err(errors::acquire(py, e)),
        }
    }

    /// Ends a used reservation; `waited` (seconds) records how long the request waited.
    pub fn commit(&self, cost: i64, waited: Option<f64>) -> PyResult<()> {
        let cost = count_i64("cost", cost)?;
        match waited {
            None => self.core.commit(cost),
            Some(w) => self
                .core
                .commit_waited(cost, max_wait_ns("waited", Some(w))?),
        }
        Ok(())
    }

    pub fn add_waiting(&self, delta: i64) {
        self.waiting.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed).max(0) as u64
    }

    pub fn wait_histogram(&self) -> (Vec<f64>, Vec<u64>, f64) {
        histogram_tuple(&self.core.wait_histogram())
    }

    /// Adds this limiter's final figures to the retired totals (see [`retire`]).
    pub fn retire(&self, kind: &'static str) {
        retire(kind, self.name.as_deref(), self.core.counters(), || {
            self.core.wait_histogram()
        });
    }

    pub fn refund(&self, cost: i64, token: u64, outcome: &str) -> PyResult<()> {
        self.core
            .refund(count_i64("cost", cost)?, token, refusal(outcome)?);
        Ok(())
    }

    pub fn count(&self, outcome: &str) -> PyResult<()> {
        self.core.counters().refused(refusal(outcome)?);
        Ok(())
    }

    pub fn counters(&self) -> (u64, u64, u64, u64, u64) {
        counters_tuple(&self.core.counters().snapshot())
    }

    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub fn clock(&self, py: Python<'_>) -> Option<Py<ManualClock>> {
        self.clock_obj.as_ref().map(|c| c.clone_ref(py))
    }
}

/// The `#[pymethods]` block of a rate-limiter class: the methods every rate limiter shares,
/// delegating to its `state: RateState<_>`, followed by the class's own `$extra` items
/// (constructor, specific getters). PyO3 allows one `#[pymethods]` block per class, hence
/// one macro rather than a trait. Also retires the limiter's counters on drop, as `$kind`.
macro_rules! rate_limiter_pymethods {
    ($ty:ident, $kind:literal, { $($extra:tt)* }) => {
        #[pyo3::pymethods]
        impl $ty {
            $($extra)*

            /// Admits `cost` now if it fits; never waits.
            #[pyo3(signature = (cost=None), text_signature = "($self, cost=1)")]
            fn try_acquire(&self, py: Python<'_>, cost: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
                self.state.try_acquire(py, cost)
            }

            /// What `try_acquire(cost)` would decide now, without consuming anything.
            #[pyo3(signature = (cost=None), text_signature = "($self, cost=1)")]
            fn peek(&self, py: Python<'_>, cost: Option<&Bound<'_, PyAny>>) -> PyResult<Decision> {
                self.state.peek(py, cost)
            }

            /// Awaitable admission of `cost`: immediate when it fits, else FIFO wait.
            #[pyo3(signature = (cost=None, timeout=None), text_signature = "($self, cost=1, timeout=None)")]
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

            // Three optional positionals, not `*args`: no tuple is built per call.
            #[pyo3(signature = (exc_type=None, exc=None, tb=None))]
            fn __aexit__(
                &self,
                py: Python<'_>,
                exc_type: Option<&Bound<'_, PyAny>>,
                exc: Option<&Bound<'_, PyAny>>,
                tb: Option<&Bound<'_, PyAny>>,
            ) -> PyResult<Py<PyAny>> {
                let _ = (exc_type, exc, tb);
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
            fn name(&self) -> Option<&str> {
                self.state.name()
            }

            #[getter]
            fn clock(&self, py: Python<'_>) -> Option<Py<ManualClock>> {
                self.state.clock(py)
            }
        }

        impl Drop for $ty {
            fn drop(&mut self) {
                self.state.retire($kind);
            }
        }
    };
}

pub(crate) use rate_limiter_pymethods;
