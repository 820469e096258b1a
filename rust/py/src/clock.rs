//! The clock a limiter reads: the process's monotonic clock, or a shared manual clock.

use std::sync::Arc;

use admission_core::clock::{monotonic_ns, ManualClock as CoreManualClock};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::args::{ns_to_s, real};
use crate::running::running_loop;

/// Where a limiter gets `now` from. An enum, not a trait object: the default arm is inlined
/// into the hot path.
#[derive(Debug, Clone)]
pub enum Clock {
    Monotonic,
    Manual(Arc<CoreManualClock>),
    /// The running event loop's clock (`loop.time()` on asyncio, `trio.current_time()`).
    Loop,
}

/// A clock argument: `ManualClock`, `LoopClock`, or nothing (the monotonic clock).
#[derive(FromPyObject)]
pub enum ClockArg<'py> {
    Manual(Bound<'py, ManualClock>),
    Loop(#[allow(dead_code)] Bound<'py, LoopClock>), // only its type matters
}

impl Clock {
    pub fn from_arg(clock: Option<&ClockArg<'_>>) -> Self {
        match clock {
            None => Self::Monotonic,
            Some(ClockArg::Manual(c)) => Self::Manual(Arc::clone(&c.get().inner)),
            Some(ClockArg::Loop(_)) => Self::Loop,
        }
    }

    #[inline(always)]
    pub fn now(&self, py: Python<'_>) -> PyResult<u64> {
        match self {
            Self::Monotonic => Ok(monotonic_ns()),
            Self::Manual(c) => Ok(c.now_ns()),
            Self::Loop => loop_now_ns(py),
        }
    }
}

static SYS_MODULES: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Now on the running event loop's clock, in nanoseconds.
fn loop_now_ns(py: Python<'_>) -> PyResult<u64> {
    let seconds: f64 = if let Some(lp) = running_loop(py)? {
        lp.call_method0(intern!(py, "time"))?.extract()?
    } else {
        // Per decision under trio: the lookups are cached (`sys.modules` is one dict for the
        // process's life) and the keys interned.
        let modules = SYS_MODULES.import(py, "sys", "modules")?;
        let trio = modules.get_item(intern!(py, "trio")).ok();
        let now = trio.and_then(|t| t.getattr(intern!(py, "current_time")).ok()?.call0().ok());
        match now {
            Some(t) => t.extract()?,
            None => {
                return Err(PyRuntimeError::new_err(
                    "LoopClock needs a running event loop (asyncio or trio) in this thread",
                ))
            }
        }
    };
    if !(seconds.is_finite() && seconds >= 0.0) {
        return Err(PyRuntimeError::new_err(format!(
            "the event loop's clock returned {seconds}, not a time >= 0"
        )));
    }
    Ok((seconds * 1e9) as u64)
}

/// The running event loop's clock, for limiters used under a fake or virtual loop clock
/// (trio's `MockClock(autojump_threshold=0)`, asyncio loop-time mocks). Opt-in: reading it
/// costs a call into Python per decision, and it works only inside a running loop.
#[pyclass(frozen, module = "admission._native")]
pub struct LoopClock;

#[pymethods]
impl LoopClock {
    #[new]
    fn new() -> Self {
        Self
    }

    /// Current loop time in seconds.
    fn now(&self, py: Python<'_>) -> PyResult<f64> {
        Ok(ns_to_s(loop_now_ns(py)?))
    }

    fn __repr__(&self) -> &'static str {
        "LoopClock()"
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
    #[pyo3(signature = (start=None), text_signature = "(start=0.0)")]
    fn new(start: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let start = start.map_or(Ok(0.0), |s| real("start", s))?;
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
    fn advance(&self, seconds: &Bound<'_, PyAny>) -> PyResult<f64> {
        let delta = seconds_to_ns("seconds", real("seconds", seconds)?)?;
        Ok(ns_to_s(self.inner.advance(delta)))
    }
}
