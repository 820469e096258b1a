//! `TokenBucket` binding over the core GCRA.

use admission_core::{AcquireError, Gcra};
use pyo3::prelude::*;

use crate::args::{count, count_i64, max_wait_ns, ns_to_s, real};
use crate::clock::{Clock, ManualClock};
use crate::decision::Decision;
use crate::errors;

/// Native token bucket (GCRA). The public class is `admission.TokenBucket`.
#[pyclass(frozen, subclass, weakref, module = "admission._native")]
pub struct TokenBucket {
    core: Gcra,
    clock: Clock,
    clock_obj: Option<Py<ManualClock>>,
    rate: f64,
    per: f64,
    name: Option<String>,
}

#[pymethods]
impl TokenBucket {
    #[new]
    #[pyo3(signature = (rate, per=None, burst=None, *, clock=None, name=None))]
    fn new(
        rate: &Bound<'_, PyAny>,
        per: Option<&Bound<'_, PyAny>>,
        burst: Option<&Bound<'_, PyAny>>,
        clock: Option<&Bound<'_, ManualClock>>,
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
            core,
            clock: Clock::from_arg(clock),
            clock_obj: clock.map(|c| c.clone().unbind()),
            rate,
            per,
            name,
        })
    }

    /// Admits `cost` now if the bucket holds that many tokens; never waits.
    #[pyo3(signature = (cost=None))]
    #[inline]
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

    /// Reserves `cost` at the earliest time it fits, if within `max_wait` seconds.
    /// Returns `(reserved, seconds, token)`: when reserved, wait `seconds` then `_commit`
    /// (or `_refund(cost, token, ...)`); when not, `seconds` is the wait it would have needed.
    #[pyo3(signature = (cost, max_wait=None))]
    fn _reserve(&self, py: Python<'_>, cost: i64, max_wait: Option<f64>) -> PyResult<(bool, f64, u64)> {
        let cost = count_i64("cost", cost)?;
        let max_wait = max_wait_ns("timeout", max_wait)?;
        match self.core.reserve(self.clock.now(), cost, max_wait) {
            Ok(wait) => Ok((true, ns_to_s(wait), 0)),
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
        let _ = token; // a bucket refund needs no position: GCRA state is one number
        self.core.refund(count_i64("cost", cost)?, timed_out);
        Ok(())
    }

    /// `(admitted, admitted_cost, rejected, timed_out, cancelled)`.
    fn _counters(&self) -> (u64, u64, u64, u64, u64) {
        let c = self.core.counters().snapshot();
        (c.admitted, c.admitted_cost, c.rejected, c.timed_out, c.cancelled)
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
        self.core.burst()
    }

    #[getter]
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    #[getter]
    fn clock(&self, py: Python<'_>) -> Option<Py<ManualClock>> {
        self.clock_obj.as_ref().map(|c| c.clone_ref(py))
    }

    /// Seconds per token, as used internally (rounded up to whole nanoseconds).
    #[getter]
    fn emission_interval(&self) -> f64 {
        ns_to_s(self.core.emission_ns())
    }
}
