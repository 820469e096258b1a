//! The clock a limiter reads: the process's monotonic clock, or a shared manual clock.

use std::sync::{Arc, Mutex};

use admission_core::clock::{monotonic_ns, ManualClock as CoreManualClock};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::args::{ns_to_s, real};
use crate::asyncio::running_loop;

/// Where a limiter gets `now` from. An enum, not a trait object: the default arm is inlined
/// into the hot path.
#[derive(Debug, Clone)]
pub enum Clock {
    Monotonic,
    Manual(Arc<CoreManualClock>),
    /// The running event loop's clock (`loop.time()` on asyncio, `trio.current_time()`),
    /// carried on across loops (see [`LoopTime`]).
    Loop(Arc<Mutex<LoopTime>>),
}

/// A limiter's time on `LoopClock`: the running loop's clock, rebased whenever the limiter
/// finds itself under another loop so that its time carries on from where it was.
///
/// Loops' clocks have their own origins (trio's starts at a large random offset; a virtual
/// asyncio loop at 0). Read raw, a limiter used under one loop and then another would see
/// its time jump back by hours (blocked until it catches up) or forward. Rebased, no time
/// passes between the last read under the old loop and the first under the new one.
#[derive(Debug, Default)]
pub struct LoopTime {
    /// Identity of the loop (asyncio loop object or trio run token) read last.
    source: usize,
    /// Its last raw reading, to notice a new loop at a reused address (time going back).
    last_raw: u64,
    /// Added to the raw reading.
    offset: i128,
    /// The last time returned.
    last: u64,
}

impl LoopTime {
    fn rebase(&mut self, source: usize, raw: u64) -> u64 {
        if source != self.source || raw < self.last_raw {
            self.offset = i128::from(self.last) - i128::from(raw);
            self.source = source;
        }
        self.last_raw = raw;
        let now = (i128::from(raw) + self.offset).clamp(0, i128::from(u64::MAX)) as u64;
        self.last = self.last.max(now);
        self.last
    }
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
            Some(ClockArg::Loop(_)) => Self::Loop(Arc::default()),
        }
    }

    /// "monotonic", "manual" or "loop".
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Monotonic => "monotonic",
            Self::Manual(_) => "manual",
            Self::Loop(_) => "loop",
        }
    }

    #[inline(always)]
    pub fn now(&self, py: Python<'_>) -> PyResult<u64> {
        match self {
            Self::Monotonic => Ok(monotonic_ns()),
            Self::Manual(c) => Ok(c.now_ns()),
            Self::Loop(time) => {
                let (source, raw) = loop_now(py)?;
                let mut time = time.lock().unwrap_or_else(|p| p.into_inner());
                Ok(time.rebase(source, raw))
            }
        }
    }
}

static SYS_MODULES: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Now on the running event loop's clock, in nanoseconds.
fn loop_now_ns(py: Python<'_>) -> PyResult<u64> {
    loop_now(py).map(|(_, ns)| ns)
}

/// The running loop's identity (its address) and its clock's reading, in nanoseconds.
fn loop_now(py: Python<'_>) -> PyResult<(usize, u64)> {
    let (source, seconds): (usize, f64) = if let Some(lp) = running_loop(py)? {
        (
            lp.as_ptr() as usize,
            lp.call_method0(intern!(py, "time"))?.extract()?,
        )
    } else {
        // Per decision under trio: the lookups are cached (`sys.modules` is one dict for the
        // process's life) and the keys interned.
        let modules = SYS_MODULES.import(py, "sys", "modules")?;
        let trio = modules.get_item(intern!(py, "trio")).ok();
        let reading = trio.and_then(|t| {
            let now = t.getattr(intern!(py, "current_time")).ok()?.call0().ok()?;
            let token = t
                .getattr(intern!(py, "lowlevel"))
                .ok()?
                .getattr(intern!(py, "current_trio_token"))
                .ok()?
                .call0()
                .ok()?;
            Some((token.as_ptr() as usize, now))
        });
        match reading {
            Some((token, t)) => (token, t.extract()?),
            None => {
                return Err(PyRuntimeError::new_err(
                    "LoopClock needs a running event loop (asyncio or trio) in this thread",
                ))
            }
        }
    };
    if !(seconds.is_finite() && seconds >= 0.0) {
        return Err(PyRuntimeError::new_err(format!(
            "the event loop's clock returned {}, not a time >= 0",
            admission_core::error::Num(seconds)
        )));
    }
    Ok((source, (seconds * 1e9) as u64))
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
            "{arg} must be a finite number of seconds >= 0, got {}",
            admission_core::error::Num(seconds)
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
