//! `CircuitBreaker` binding over the core breaker, and `BreakerCall`, one permitted call.
//!
//! `with breaker:` and `async with breaker:` need per-call state (the permit and the start
//! time) that `__exit__` can find, and the breaker is shared by every task and thread. It is
//! kept in a `contextvars.ContextVar` of the breaker: each asyncio task, trio task and thread
//! has its own context, and nested blocks chain through `BreakerCall::outer`.

use std::sync::atomic::{AtomicBool, Ordering};

use admission_core::breaker::{
    Breaker, BreakerConfig, CallOutcome, Mode, Permit, Refused, Transition, WindowKind,
};
use admission_core::MAX_SPAN_NS;
use pyo3::exceptions::{PyBaseException, PyException, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyTuple, PyType};

use crate::args::{count, label, ns_to_s, real};
use crate::clock::{Clock, ClockArg, ManualClock};
use crate::contextvar;
use crate::ready::ready;

static CIRCUIT_OPEN: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static CONTEXT_VAR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// A positive number of seconds as nanoseconds, at most 73 years.
fn span_ns(arg: &str, obj: &Bound<'_, PyAny>) -> PyResult<u64> {
    let seconds = real(arg, obj)?;
    let ns = seconds * 1e9;
    if !(ns >= 1.0 && ns <= MAX_SPAN_NS as f64) {
        return Err(PyValueError::new_err(format!(
            "{arg} must be a positive number of seconds (at most 73 years), got {}",
            obj.repr()?
        )));
    }
    Ok(ns.round() as u64)
}

/// A tuple of exception classes (`failure_on`, `ignore`).
fn exception_classes<'py>(arg: &str, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let bad = || {
        PyTypeError::new_err(format!(
            "{arg} must be a tuple of exception classes, got {}",
            obj.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    };
    let tuple = obj.cast::<PyTuple>().map_err(|_| bad())?;
    for item in tuple.iter() {
        let is_exception = item
            .cast::<PyType>()
            .is_ok_and(|t| t.is_subclass_of::<PyBaseException>().unwrap_or(false));
        if !is_exception {
            return Err(bad());
        }
    }
    Ok(tuple.clone())
}

/// Native circuit breaker. The public class is `admission.CircuitBreaker`.
#[pyclass(frozen, subclass, weakref, module = "admission._native")]
pub struct CircuitBreaker {
    core: Breaker,
    clock: Clock,
    clock_obj: Option<Py<ManualClock>>,
    name: Option<String>,
    failure_on: Py<PyTuple>,
    ignore: Py<PyTuple>,
    /// This breaker's `ContextVar`: the innermost `BreakerCall` of the current context.
    calls: Py<PyAny>,
    /// Whether `calls` was ever set in any context; until then it is not read (a closed
    /// breaker whose calls are not timed never sets it).
    calls_used: AtomicBool,
}

impl CircuitBreaker {
    /// Reports a transition to `self._transitioned(from, to, open_for)` (the Python class
    /// logs it and tells listeners). Its errors cannot be the caller's: they are reported as
    /// unraisable.
    pub(crate) fn report(slf: &Bound<'_, Self>, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        let py = slf.py();
        let args = (t.from.as_str(), t.to.as_str(), ns_to_s(t.open_ns));
        if let Err(err) = slf.call_method1(intern!(py, "_transitioned"), args) {
            err.write_unraisable(py, Some(slf.as_any()));
        }
    }

    fn refused(slf: &Bound<'_, Self>, refused: Refused) -> PyErr {
        let py = slf.py();
        let (retry_after, state) = match refused {
            Refused::Open { retry_after_ns } => (ns_to_s(retry_after_ns), "open"),
            Refused::Probing => (0.0, "half_open"),
        };
        let name = slf.get().name.as_deref();
        match CIRCUIT_OPEN.import(py, "admission.errors", "CircuitOpen") {
            Ok(cls) => match cls.call1((retry_after, name, state)) {
                Ok(exc) => PyErr::from_value(exc),
                Err(e) => e,
            },
            Err(e) => e,
        }
    }

    /// A permit for one call now and its start time, or `CircuitOpen`.
    ///
    /// A closed breaker whose calls are not timed admits without the time (the clock is
    /// read once per call, at its end, where the window needs it): the start is then 0,
    /// which no one reads. Should the breaker open between the look at its mode and the
    /// permit, the refusal is measured from 0 (the instant the open time ends), and the time
    /// left is recomputed from the clock (a call refused there with 0 s left could have been a
    /// probe only if the whole open time, at least 1 ns, passed within that race).
    pub(crate) fn permit(slf: &Bound<'_, Self>, py: Python<'_>) -> PyResult<(Permit, u64)> {
        let this = slf.get();
        let untimed = !this.times_calls() && this.core.mode() == Mode::Closed;
        let now = if untimed { 0 } else { this.clock.now(py)? };
        match this.core.try_acquire(now) {
            Ok((permit, transition)) => {
                Self::report(slf, transition);
                Ok((permit, now))
            }
            Err(Refused::Open { retry_after_ns }) if untimed => {
                let until = retry_after_ns;
                let retry_after_ns = until.saturating_sub(this.clock.now(py)?);
                Err(Self::refused(slf, Refused::Open { retry_after_ns }))
            }
            Err(refused) => Err(Self::refused(slf, refused)),
        }
    }

    /// How a call that raised `exc` ends: `None` for a call that did not run to a verdict
    /// (cancelled, interrupted, or an ignored error: its permit is given back).
    fn classify(
        &self,
        py: Python<'_>,
        exc: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<CallOutcome>> {
        let Some(exc) = exc else {
            return Ok(Some(CallOutcome::Success));
        };
        if exc.is_none() {
            return Ok(Some(CallOutcome::Success));
        }
        // CancelledError, trio's Cancelled, KeyboardInterrupt, SystemExit, GeneratorExit:
        // the call was stopped from outside; it says nothing about the service.
        if !exc.is_instance_of::<PyException>() || exc.is_instance(self.ignore.bind(py))? {
            return Ok(None);
        }
        if exc.is_instance(self.failure_on.bind(py))? {
            return Ok(Some(CallOutcome::Failure));
        }
        // Errors not listed as failures are the caller's business (a 404, a validation
        // error): the service answered.
        Ok(Some(CallOutcome::Success))
    }

    /// Ends a permitted call: `exc` is `None` (or Python's `None`) on success, else the
    /// exception it raised.
    pub(crate) fn finish(
        slf: &Bound<'_, Self>,
        permit: Permit,
        start: u64,
        exc: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        match this.classify(py, exc)? {
            None => this.core.release(permit),
            Some(outcome) => Self::record_outcome(slf, permit, outcome, start)?,
        }
        Ok(())
    }

    /// Records the outcome of a call that started at `start`. The clock is read only when the
    /// core asks for the time if nothing depends on reading it: the call is not timed (no
    /// slow-call duration, so its duration is never compared) and the clock is the monotonic
    /// or a manual one, which cannot fail (the loop clock raises outside a loop: read first,
    /// so that the error does not depend on the window). A closed count-based window then
    /// reads it only on a trip.
    fn record_outcome(
        slf: &Bound<'_, Self>,
        permit: Permit,
        outcome: CallOutcome,
        start: u64,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let transition = if this.times_calls() || matches!(this.clock, Clock::Loop(_)) {
            let now = this.clock.now(py)?;
            this.core
                .record(permit, outcome, now.saturating_sub(start), now)
        } else {
            this.core
                .record_with(permit, outcome, 0, || this.infallible_now(py))
        };
        Self::report(slf, transition);
        Ok(())
    }

    /// The time on a clock that cannot fail (not the loop clock).
    fn infallible_now(&self, py: Python<'_>) -> u64 {
        debug_assert!(!matches!(self.clock, Clock::Loop(_)));
        // The monotonic and manual arms of `Clock::now` are `Ok` by construction.
        self.clock.now(py).unwrap_or_default()
    }

    /// `with`/`async with`: takes a permit, and remembers it in this context's variable
    /// only when `__exit__` could not do without it: a probe (its place must go back to the
    /// right probation), a call to time (slow-call detection), or a block nested in one that
    /// did. A closed-state call needs nothing: its outcome counts if the breaker is still
    /// closed when it ends, and the variable is left alone (setting one costs more than the
    /// rest of the block).
    fn enter(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (permit, start) = Self::permit(slf, py)?;
        let this = slf.get();
        let calls = this.calls.bind(py);
        let outer = if this.calls_used.load(Ordering::Relaxed) {
            contextvar::get(calls)?.filter(|o| !o.is_none())
        } else {
            None
        };
        if !permit.is_probe() && !this.times_calls() && outer.is_none() {
            return Ok(());
        }
        this.calls_used.store(true, Ordering::Relaxed);
        let call = BreakerCall {
            breaker: slf.clone().unbind(),
            permit,
            start,
            outer: outer.map(Bound::unbind),
            done: AtomicBool::new(false),
        };
        contextvar::set(calls, Bound::new(py, call)?.as_any())
    }

    fn exit(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let calls = this.calls.bind(py);
        let current = if this.calls_used.load(Ordering::Relaxed) {
            contextvar::get(calls)?.filter(|o| !o.is_none())
        } else {
            None
        };
        let Some(current) = current else {
            // A closed-state call that kept no state (see `enter`).
            return Self::finish(slf, this.core.closed_permit(), 0, Some(exc));
        };
        let call = current
            .cast::<BreakerCall>()
            .map_err(|_| PyRuntimeError::new_err("the breaker's context variable was replaced"))?
            .get();
        let outer = call
            .outer
            .as_ref()
            .map_or_else(|| py.None(), |o| o.clone_ref(py));
        contextvar::set(calls, outer.bind(py))?;
        call.end(py, Some(exc))
    }

    /// Ends a permitted call as failed, whatever it returned (`failure_if` said so).
    pub(crate) fn fail(slf: &Bound<'_, Self>, permit: Permit, start: u64) -> PyResult<()> {
        Self::record_outcome(slf, permit, CallOutcome::Failure, start)
    }

    /// Gives back a permit whose call never came to a verdict.
    pub(crate) fn give_back(&self, permit: Permit) {
        self.core.release(permit);
    }

    /// Whether calls are timed (a slow-call duration is set).
    fn times_calls(&self) -> bool {
        self.core.config().slow_call_ns != u64::MAX
    }
}

#[pymethods]
impl CircuitBreaker {
    #[new]
    #[pyo3(signature = (
        *, failure_rate, window_calls, window_seconds, min_calls, slow_call_duration,
        slow_call_rate, open_for, open_for_max, half_open_calls, failure_on, ignore,
        clock=None, name=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        failure_rate: &Bound<'_, PyAny>,
        window_calls: Option<&Bound<'_, PyAny>>,
        window_seconds: Option<&Bound<'_, PyAny>>,
        min_calls: &Bound<'_, PyAny>,
        slow_call_duration: Option<&Bound<'_, PyAny>>,
        slow_call_rate: &Bound<'_, PyAny>,
        open_for: &Bound<'_, PyAny>,
        open_for_max: &Bound<'_, PyAny>,
        half_open_calls: &Bound<'_, PyAny>,
        failure_on: &Bound<'_, PyAny>,
        ignore: &Bound<'_, PyAny>,
        clock: Option<ClockArg<'_>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let name = label("name", name)?;
        let window = match (window_calls, window_seconds) {
            (Some(calls), None) => {
                WindowKind::Calls(u32::try_from(count("window", Some(calls), 0)?).unwrap_or(0))
            }
            (None, Some(seconds)) => WindowKind::Time {
                span_ns: span_ns("window", seconds)?,
            },
            _ => {
                return Err(PyTypeError::new_err(
                    "give exactly one of window_calls and window_seconds",
                ))
            }
        };
        let small = |arg: &'static str, obj: &Bound<'_, PyAny>| -> PyResult<u32> {
            // Out of u32 range reads as 0 or the largest value: both refused by the core.
            Ok(u32::try_from(count(arg, Some(obj), 0)?).unwrap_or(u32::MAX))
        };
        let config = BreakerConfig {
            failure_rate: real("failure_rate", failure_rate)?,
            slow_call_rate: real("slow_call_rate", slow_call_rate)?,
            slow_call_ns: match slow_call_duration {
                None => u64::MAX,
                Some(d) => span_ns("slow_call_duration", d)?,
            },
            window,
            min_calls: small("min_calls", min_calls)?,
            open_ns: span_ns("open_for", open_for)?,
            open_max_ns: span_ns("open_for_max", open_for_max)?,
            half_open_calls: small("half_open_calls", half_open_calls)?,
        };
        let core = Breaker::new(config).map_err(crate::errors::config)?;
        let var_name = format!("admission.breaker.{}", name.as_deref().unwrap_or(""));
        let calls = CONTEXT_VAR
            .import(py, "contextvars", "ContextVar")?
            .call1((var_name,))?
            .unbind();
        let clock_obj = match &clock {
            Some(ClockArg::Manual(c)) => Some(c.clone().unbind()),
            _ => None,
        };
        Ok(Self {
            clock: Clock::from_arg(clock.as_ref()),
            clock_obj,
            core,
            name,
            failure_on: exception_classes("failure_on", failure_on)?.unbind(),
            ignore: exception_classes("ignore", ignore)?.unbind(),
            calls,
            calls_used: AtomicBool::new(false),
        })
    }

    /// Permission for one call now, without waiting: `True`, or `False` when the breaker is
    /// open (or half-open with every probe out). Report the call with `record`, or give an
    /// unused permission back with `release`.
    fn try_acquire(slf: &Bound<'_, Self>, py: Python<'_>) -> PyResult<bool> {
        let this = slf.get();
        match this.core.try_acquire(this.clock.now(py)?) {
            Ok((_, transition)) => {
                Self::report(slf, transition);
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// Records the outcome of a call permitted by `try_acquire`: `ok` and its `duration` in
    /// seconds. It counts in the state the breaker is in now.
    fn record(
        slf: &Bound<'_, Self>,
        py: Python<'_>,
        ok: &Bound<'_, PyAny>,
        duration: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let ok = ok
            .cast::<PyBool>()
            .map_err(|_| {
                PyTypeError::new_err(format!(
                    "ok must be a bool, got {}",
                    ok.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?
            .is_true();
        let seconds = real("duration", duration)?;
        if seconds.is_nan() || seconds < 0.0 {
            return Err(PyValueError::new_err(format!(
                "duration must be a number of seconds >= 0, got {}",
                duration.repr()?
            )));
        }
        let this = slf.get();
        let now = this.clock.now(py)?;
        let outcome = if ok {
            CallOutcome::Success
        } else {
            CallOutcome::Failure
        };
        // `as` saturates: an infinite duration is merely slow.
        let duration_ns = (seconds * 1e9) as u64;
        let transition = this
            .core
            .record(this.core.current_permit(), outcome, duration_ns, now);
        Self::report(slf, transition);
        Ok(())
    }

    /// Gives back a permission from `try_acquire` whose call did not run.
    fn release(&self) {
        self.core.release(self.core.current_permit());
    }

    /// Closes the breaker and empties its window, whatever its state (an operator's reset).
    fn reset(slf: &Bound<'_, Self>) {
        let transition = slf.get().core.reset();
        Self::report(slf, transition);
    }

    /// One permitted call (`CircuitOpen` if refused): end it with `BreakerCall.end`.
    fn _call(slf: &Bound<'_, Self>, py: Python<'_>) -> PyResult<BreakerCall> {
        let (permit, start) = Self::permit(slf, py)?;
        Ok(BreakerCall {
            breaker: slf.clone().unbind(),
            permit,
            start,
            outer: None,
            done: AtomicBool::new(false),
        })
    }

    fn __enter__(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::enter(slf)
    }

    #[pyo3(signature = (exc_type, exc, traceback))]
    fn __exit__(
        slf: &Bound<'_, Self>,
        exc_type: &Bound<'_, PyAny>,
        exc: &Bound<'_, PyAny>,
        traceback: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let _ = (exc_type, traceback);
        Self::exit(slf, exc)?;
        Ok(false)
    }

    /// On asyncio (or no framework) the permit is decided here and the awaitable completes
    /// without suspending; on trio the Python `_aenter_trio`, a checkpoint, does it.
    fn __aenter__(slf: &Bound<'_, Self>, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if crate::acquire::on_trio(py)? {
            return Ok(slf.call_method0(intern!(py, "_aenter_trio"))?.unbind());
        }
        Self::enter(slf)?;
        ready(py)
    }

    #[pyo3(signature = (exc_type, exc, traceback))]
    fn __aexit__(
        slf: &Bound<'_, Self>,
        py: Python<'_>,
        exc_type: &Bound<'_, PyAny>,
        exc: &Bound<'_, PyAny>,
        traceback: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let _ = (exc_type, traceback);
        Self::exit(slf, exc)?;
        // `Ready` completes with `None`: the exception, if any, propagates.
        ready(py)
    }

    /// "closed", "open" or "half_open". An open breaker whose time is up reads "open" until
    /// the next call turns it half-open.
    #[getter]
    fn state(&self) -> &'static str {
        self.core.mode().as_str()
    }

    /// Seconds until an open breaker lets a probe through (0.0 when not open).
    #[getter]
    fn retry_after(&self, py: Python<'_>) -> PyResult<f64> {
        Ok(ns_to_s(self.core.retry_after_ns(self.clock.now(py)?)))
    }

    #[getter]
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    #[getter]
    fn clock(&self, py: Python<'_>) -> Option<Py<ManualClock>> {
        self.clock_obj.as_ref().map(|c| c.clone_ref(py))
    }

    #[getter]
    fn _clock_kind(&self) -> &'static str {
        self.clock.kind()
    }

    #[getter]
    fn failure_rate(&self) -> f64 {
        self.core.config().failure_rate
    }

    #[getter]
    fn slow_call_rate(&self) -> f64 {
        self.core.config().slow_call_rate
    }

    /// Seconds, or `None` when no call counts as slow.
    #[getter]
    fn slow_call_duration(&self) -> Option<f64> {
        let ns = self.core.config().slow_call_ns;
        (ns != u64::MAX).then(|| ns_to_s(ns))
    }

    /// The window: a number of calls (int) or a span of seconds (float).
    #[getter]
    fn window(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self.core.config().window {
            WindowKind::Calls(n) => n.into_pyobject(py)?.into_any().unbind(),
            WindowKind::Time { span_ns } => ns_to_s(span_ns).into_pyobject(py)?.into_any().unbind(),
        })
    }

    #[getter]
    fn min_calls(&self) -> u32 {
        self.core.config().min_calls
    }

    #[getter]
    fn open_for(&self) -> f64 {
        ns_to_s(self.core.config().open_ns)
    }

    #[getter]
    fn open_for_max(&self) -> f64 {
        ns_to_s(self.core.config().open_max_ns)
    }

    #[getter]
    fn half_open_calls(&self) -> u32 {
        self.core.config().half_open_calls
    }

    #[getter]
    fn failure_on(&self, py: Python<'_>) -> Py<PyTuple> {
        self.failure_on.clone_ref(py)
    }

    #[getter]
    fn ignore(&self, py: Python<'_>) -> Py<PyTuple> {
        self.ignore.clone_ref(py)
    }

    /// `(permitted, success, failure, slow, rejected, released, opened)`.
    fn _counts(&self) -> (u64, u64, u64, u64, u64, u64, u64) {
        let c = self.core.counts();
        (
            c.permitted,
            c.success,
            c.failure,
            c.slow,
            c.rejected,
            c.released,
            c.opened,
        )
    }

    /// The window now: `(calls, failures, slow)`.
    fn _window(&self, py: Python<'_>) -> PyResult<(u64, u64, u64)> {
        let w = self.core.window(self.clock.now(py)?);
        Ok((w.calls, w.failures, w.slow))
    }

    /// Probes `(in flight, succeeded)` while half-open.
    fn _probes(&self) -> (u32, u32) {
        self.core.probes()
    }

    /// Called on every change of state; the Python class overrides it.
    fn _transitioned(&self, old: &str, new: &str, open_for: f64) {
        let _ = (old, new, open_for);
    }
}

/// One call permitted by a `CircuitBreaker`, to be ended exactly once.
#[pyclass(frozen, module = "admission._native")]
pub struct BreakerCall {
    breaker: Py<CircuitBreaker>,
    permit: Permit,
    start: u64,
    /// The enclosing call of the same breaker in this context (nested `with` blocks).
    outer: Option<Py<PyAny>>,
    done: AtomicBool,
}

#[pymethods]
impl BreakerCall {
    /// Ends the call: `exc` is `None` on success, else the exception it raised (classified by
    /// the breaker's `failure_on` and `ignore`; cancellation gives the permit back). A second
    /// call does nothing.
    #[pyo3(signature = (exc=None))]
    fn end(&self, py: Python<'_>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        if self.done.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        CircuitBreaker::finish(self.breaker.bind(py), self.permit, self.start, exc)
    }

    /// Ends the call as failed, whatever it returned (a result the breaker's `failure_if`
    /// calls a failure). A second call does nothing.
    fn fail(&self, py: Python<'_>) -> PyResult<()> {
        if self.done.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        CircuitBreaker::fail(self.breaker.bind(py), self.permit, self.start)
    }

    /// Gives the permit back unused (the call never ran). A second call does nothing.
    fn release(&self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            self.breaker.get().core.release(self.permit);
        }
    }

    /// Whether this call is one of a half-open breaker's probes.
    #[getter]
    fn probe(&self) -> bool {
        self.permit.is_probe()
    }
}

impl Drop for BreakerCall {
    fn drop(&mut self) {
        // A call dropped without an end (its coroutine never awaited, a generator closed)
        // did not run to a verdict: its probe place, if any, goes back.
        if !*self.done.get_mut() {
            self.breaker.get().core.release(self.permit);
        }
    }
}
