//! The clock a limiter reads: the process's monotonic clock, or a shared manual clock.

use std::sync::Arc;

use admission_core::clock::{monotonic_ns, ManualClock as CoreManualClock};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::args::ns_to_s;

/// Where a limiter gets `now` from. An enum, not a trait object: the default arm is inlined
/// into the hot path.
#[derive(Debug, Clone)]
pub enum Clock {
    Monotonic,
    Manual(Arc<CoreManualClock>),
}

impl Clock {
    pub fn from_arg(clock: Option<&Bound<'_, ManualClock>>) -> Self {
        match clock {
            None => Self::Monotonic,
            Some(c) => Self::Manual(Arc::clone(&c.get().inner)),
        }
    }

    #[inline(always)]
    pub fn now(&self) -> u64 {
        match self {
            Self::Monotonic => monotonic_ns(),
            Self::Manual(c) => c.now_ns(),
        }
    }
}

fn seconds_to_ns(arg: &str, seconds: f64) -> PyResult<u64> {
    if seconds.is_nan() || seconds < 0.0 || seconds.is_infinite() {
        return Err(PyValueError::new_err(format!(
            "{arg} must be a finite number of seconds >= 0, got {seconds}"
        )));
    }
    Ok((seconds * 1e9).round() as u64)
}

/// A clock that moves only when told to, for deterministic tests.
#[pyclass(frozen, module = "admission._native")]
pub struct ManualClock {
    inner: Arc<CoreManualClock>,
}

#[pymethods]
impl ManualClock {
    #[new]
    #[pyo3(signature = (start=0.0))]
    fn new(start: f64) -> PyResult<Self> {
        Ok(Self {
            inner: Arc::new(CoreManualClock::new(seconds_to_ns("start", start)?)),
        })
    }

    /// Current time in seconds.
    fn now(&self) -> f64 {
        ns_to_s(self.inner.now_ns())
    }

    /// Current time in nanoseconds.
    fn now_ns(&self) -> u64 {
        self.inner.now_ns()
    }

    /// Moves time forward by `seconds`; returns the new time in seconds.
    fn advance(&self, seconds: f64) -> PyResult<f64> {
        let delta = seconds_to_ns("seconds", seconds)?;
        Ok(ns_to_s(self.inner.advance(delta)))
    }
}
