//! What the two rate-limiter classes share: clock, reservation protocol, async fast path.
//!
//! Each `#[pyclass]` holds a `RateState<L>` and its methods are one-line delegations here,
//! so `TokenBucket` and `SlidingWindow` cannot drift apart.

use std::sync::Arc;

use admission_core::{
    AcquireError, Adjust, CountersSnapshot, Decision as CoreDecision, Entered, HistogramSnapshot,
    RateLimit, RateTicket as CoreTicket, Refusal, Status, Wakers, Withdrawal, WAIT_BOUNDS_NS,
};
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyString;
use pyo3::{PyTraverseError, PyVisit};

use crate::args::{count, max_wait_ns, ns_to_s};
use crate::clock::{Clock, ClockArg, ManualClock};
use crate::decision::Decision;
use crate::errors;

/// A waiter's waker: a Python callable, called with no arguments (maybe twice: when the
/// waiter becomes the head of the queue, and when it is granted).
pub struct PyWaker(Py<PyAny>);

impl Clone for PyWaker {
    fn clone(&self) -> Self {
        // The core clones a waker under its lock, always called from a method holding the GIL.
        Python::attach(|py| Self(self.0.clone_ref(py)))
    }
}

/// Calls every waker; a failing one does not stop the others. Raises the first failure.
pub(crate) fn wake_all(py: Python<'_>, wakers: Wakers<PyWaker>) -> PyResult<()> {
    let mut first_error = None;
    for waker in wakers {
        if let Err(e) = waker.0.call0(py) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// A request waiting on a rate limiter (see `admission_core::waitq`).
#[pyclass(frozen, module = "admission._native")]
pub struct RateTicket {
    inner: Arc<CoreTicket>,
}

#[pymethods]
impl RateTicket {
    /// Units of cost requested.
    #[getter]
    fn cost(&self) -> u64 {
        self.inner.cost()
    }

    /// `(record, time)` of its grant, for `_untake` (None before it is granted): what gives
    /// back the unused part of a reservation that waited.
    #[getter]
    fn _grant(&self) -> Option<(u64, u64)> {
        self.inner.grant()
    }
}

pub struct RateState<L> {
    pub core: L,
    clock: Clock,
    /// The manual clock, when there is one: waits advance it instead of sleeping.
    clock_obj: Option<Py<ManualClock>>,
    name: Option<String>,
}

/// The finite upper bounds of the wait histogram's buckets, in seconds.
pub fn wait_bounds_s() -> Vec<f64> {
    WAIT_BOUNDS_NS.iter().map(|&b| ns_to_s(b)).collect()
}

/// `(finite upper bounds in seconds, per-bucket counts including +Inf, sum in seconds)`.
pub fn histogram_tuple(h: &HistogramSnapshot) -> (Vec<f64>, Vec<u64>, f64) {
    (wait_bounds_s(), h.counts.to_vec(), ns_to_s(h.sum_ns))
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

impl<L: RateLimit<PyWaker>> RateState<L> {
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
        }
    }

    #[inline(always)]
    pub fn try_acquire(&self, py: Python<'_>, cost: u64) -> PyResult<bool> {
        self.core
            .try_acquire(self.clock.now(py)?, cost)
            .map_err(|e| errors::acquire(py, e))
    }

    pub fn peek(&self, py: Python<'_>, cost: u64) -> PyResult<Decision> {
        self.core
            .peek(self.clock.now(py)?, cost)
            .map(|d: CoreDecision| Decision::from(d))
            .map_err(|e| errors::acquire(py, e))
    }

    /// Admits `cost` now if it fits and nobody waits, counting only an admission.
    #[inline(always)]
    pub fn try_take(&self, py: Python<'_>, cost: u64) -> PyResult<bool> {
        self.core
            .try_take(self.clock.now(py)?, cost)
            .map_err(|e| errors::acquire(py, e))
    }

    /// Admits at once (None), or queues the request (its ticket); `waker` is called when it
    /// becomes the head and when it is granted. Raises `AcquireTimeout` (counted) when it
    /// could not be admitted within `timeout` seconds, without queueing.
    pub fn enqueue(
        &self,
        py: Python<'_>,
        cost: &Bound<'_, PyAny>,
        timeout_s: Option<f64>,
        waker: Py<PyAny>,
        admit_now: bool,
    ) -> PyResult<Option<RateTicket>> {
        let cost = count("cost", Some(cost), 1)?;
        let max_wait = max_wait_ns("timeout", timeout_s)?;
        let now = self.clock.now(py)?;
        match self
            .core
            .enqueue(now, cost, max_wait, PyWaker(waker), admit_now)
        {
            Ok(Entered::Admitted) => Ok(None),
            Ok(Entered::Queued { ticket, .. }) => Ok(Some(RateTicket { inner: ticket })),
            Err(AcquireError::WouldExceedDeadline { needed_ns }) => Err(
                errors::acquire_timeout_needed(py, timeout_s.unwrap_or(0.0), ns_to_s(needed_ns)),
            ),
            Err(e) => Err(errors::acquire(py, e)),
        }
    }

    /// Grants the heads whose turn has come and wakes them (and a new head).
    pub fn poll(&self, py: Python<'_>) -> PyResult<()> {
        let wakers = self.core.poll(self.clock.now(py)?);
        wake_all(py, wakers)
    }

    /// `("granted" | "head" | "queued" | "ended", seconds until the head's turn)`.
    pub fn status<'py>(
        &self,
        py: Python<'py>,
        ticket: &RateTicket,
    ) -> PyResult<(Bound<'py, PyString>, f64)> {
        let now = self.clock.now(py)?;
        Ok(match self.core.status(&ticket.inner, now) {
            Status::Granted => (intern!(py, "granted").clone(), 0.0),
            Status::Head { due_ns } => (intern!(py, "head").clone(), ns_to_s(due_ns - now)),
            Status::Queued => (intern!(py, "queued").clone(), 0.0),
            Status::Ended => (intern!(py, "ended").clone(), 0.0),
        })
    }

    /// Takes a granted request, counting it admitted with its wait (on this limiter's clock,
    /// so virtual time under a manual or loop clock).
    pub fn consume(&self, py: Python<'_>, ticket: &RateTicket) -> PyResult<bool> {
        let waited = self
            .clock
            .now(py)?
            .saturating_sub(ticket.inner.enqueued_ns());
        Ok(self.core.consume(&ticket.inner, waited))
    }

    /// Admits `cost` now without counting it: `(record, time)` for `untake`, or None.
    pub fn take(&self, py: Python<'_>, cost: &Bound<'_, PyAny>) -> PyResult<Option<(u64, u64)>> {
        let cost = count("cost", Some(cost), 1)?;
        let now = self.clock.now(py)?;
        match self.core.take(now, cost) {
            Ok(taken) => Ok(taken.map(|record| (record, now))),
            Err(e) => Err(errors::acquire(py, e)),
        }
    }

    /// Undoes a `take`.
    pub fn untake(&self, py: Python<'_>, cost: u64, record: u64, taken_at: u64) -> PyResult<()> {
        let wakers = self
            .core
            .untake(self.clock.now(py)?, cost, record, taken_at);
        wake_all(py, wakers)
    }

    /// Counts an admission made with `take`; `waited` (seconds) records its wait.
    pub fn commit(&self, cost: u64, waited: Option<f64>) -> PyResult<()> {
        let waited = waited.map(|w| max_wait_ns("waited", Some(w))).transpose()?;
        self.core.commit(cost, waited);
        Ok(())
    }

    /// Withdraws a request whose waiter gave up; an unused grant goes back. Returns
    /// `"removed"`, `"gave_back"` or `"ended"` (it had ended before: nothing changed).
    pub fn withdraw<'py>(
        &self,
        py: Python<'py>,
        ticket: &RateTicket,
        timed_out: bool,
    ) -> PyResult<Bound<'py, PyString>> {
        let how = if timed_out {
            Refusal::TimedOut
        } else {
            Refusal::Cancelled
        };
        let (what, wakers) = self.core.withdraw(&ticket.inner, self.clock.now(py)?, how);
        wake_all(py, wakers)?;
        Ok(match what {
            Withdrawal::Removed => intern!(py, "removed"),
            Withdrawal::GaveBack => intern!(py, "gave_back"),
            Withdrawal::AlreadyEnded(_) => intern!(py, "ended"),
        }
        .clone())
    }

    /// Now, on this limiter's clock.
    pub fn now(&self, py: Python<'_>) -> PyResult<u64> {
        self.clock.now(py)
    }

    pub fn waiting(&self) -> u64 {
        self.core.waiting()
    }

    pub fn oldest_wait(&self, py: Python<'_>) -> PyResult<f64> {
        Ok(ns_to_s(self.core.oldest_wait_ns(self.clock.now(py)?)))
    }

    pub fn wait_histogram(&self) -> (Vec<f64>, Vec<u64>, f64) {
        histogram_tuple(&self.core.wait_histogram())
    }

    /// Adds this limiter's final figures to the retired totals (see [`crate::metrics::retire`]).
    pub fn retire(&self, kind: &'static str) {
        crate::metrics::retire(kind, self.name.as_deref(), self.core.counters(), || {
            self.core.wait_histogram()
        });
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

    pub fn clock_kind(&self) -> &'static str {
        self.clock.kind()
    }

    pub fn clock(&self, py: Python<'_>) -> Option<Py<ManualClock>> {
        self.clock_obj.as_ref().map(|c| c.clone_ref(py))
    }

    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        let mut result = Ok(());
        self.core.visit_waiters(&mut |w: &PyWaker| {
            if result.is_ok() {
                result = visit.call(&w.0);
            }
        });
        if let Some(c) = &self.clock_obj {
            visit.call(c)?;
        }
        result
    }

    pub fn clear(&self) {
        // Dropped after the lock is released: dropping them can run Python code.
        drop(self.core.abandon_waiters());
    }
}

impl<L: RateLimit<PyWaker> + Adjust> RateState<L> {
    /// Charges `cost` as used now, beyond the capacity if need be; counts nothing.
    pub fn charge(&self, py: Python<'_>, cost: u64) -> PyResult<()> {
        self.core.charge(self.clock.now(py)?, cost);
        Ok(())
    }

    /// A reservation of `reserved` settled at `actual`: the admitted cost counted follows.
    pub fn resettle(&self, reserved: u64, actual: u64) {
        self.core.counters().resettle(reserved, actual);
    }

    /// Admits nothing for `seconds` from now.
    pub fn pause(&self, py: Python<'_>, seconds: f64) -> PyResult<()> {
        let span = max_wait_ns("seconds", Some(seconds))?;
        let now = self.clock.now(py)?;
        self.core.pause_until(now, now.saturating_add(span));
        Ok(())
    }

    /// The provider says `remaining` is left, full again after `reset_after` seconds.
    pub fn sync(&self, py: Python<'_>, remaining: u64, reset_after: Option<f64>) -> PyResult<()> {
        let reset = reset_after
            .map(|r| max_wait_ns("reset_after", Some(r)))
            .transpose()?;
        self.core.sync(self.clock.now(py)?, remaining, reset);
        Ok(())
    }
}

/// The `#[pymethods]` block of a rate-limiter class: the methods every rate limiter shares,
/// delegating to its `state: RateState<_>`, followed by the class's own `$extra` items
/// (constructor, specific getters). PyO3 allows one `#[pymethods]` block per class, hence
/// one macro rather than a trait. Also implements `acquire::Limiter` for the class (waiting is
/// in Python on every framework: `admission._rate_wait`), and retires the limiter's counters
/// on drop, as `$kind`.
macro_rules! rate_limiter_pymethods {
    ($ty:ident, $kind:literal, { $($extra:tt)* }) => {
        impl crate::acquire::Limiter for $ty {
            const QUALNAME: &'static str = concat!(stringify!($ty), ".acquire");

            #[inline(always)]
            fn try_now(&self, py: Python<'_>, n: u64, _costs: &[u64]) -> PyResult<bool> {
                self.state.try_take(py, n)
            }

            fn wait(
                slf: &Bound<'_, Self>,
                n: u64,
                _costs: &[u64],
                timeout: Option<f64>,
                _event_loop: Option<Bound<'_, PyAny>>,
            ) -> PyResult<Py<PyAny>> {
                crate::acquire::acquire_slow(slf.as_any(), n, timeout)
            }
        }

        #[pyo3::pymethods]
        impl $ty {
            $($extra)*

            /// Admits `cost` now if it fits; never waits.
            #[pyo3(signature = (cost=crate::args::Arg::OMITTED), text_signature = "($self, cost=1)")]
            fn try_acquire(&self, py: Python<'_>, cost: crate::args::Arg<'_, '_>) -> PyResult<bool> {
                self.state.try_acquire(py, crate::args::count_arg("cost", cost, 1)?)
            }

            /// What `try_acquire(cost)` would decide now, without consuming anything.
            #[pyo3(signature = (cost=crate::args::Arg::OMITTED), text_signature = "($self, cost=1)")]
            fn peek(&self, py: Python<'_>, cost: crate::args::Arg<'_, '_>) -> PyResult<Decision> {
                self.state.peek(py, crate::args::count_arg("cost", cost, 1)?)
            }

            /// Awaitable admission of `cost` (an `Acquire`): nothing is taken until it is
            /// awaited (or run as a Task's coroutine); then immediate when it fits and nobody
            /// waits, else a FIFO wait. On trio, a checkpoint either way.
            #[pyo3(
                signature = (cost=crate::args::Arg::OMITTED, timeout=None),
                text_signature = "($self, cost=1, timeout=None)"
            )]
            fn acquire<'py>(
                slf: &Bound<'py, Self>,
                cost: crate::args::Arg<'_, 'py>,
                timeout: Option<&Bound<'py, PyAny>>,
            ) -> PyResult<Py<PyAny>> {
                let cost = crate::args::count_arg("cost", cost, 1)?;
                let limit = crate::args::timeout(timeout)?;
                crate::acquire::acquire(
                    slf.py(),
                    crate::acquire::Owner::new(slf.clone().unbind(), Vec::new()),
                    cost,
                    limit,
                )
            }

            /// `async with`: the acquisition's decision made at once (it is awaited at once).
            fn __aenter__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
                crate::acquire::enter(slf, 1, &[], None)
            }

            /// `with limiter:` (threads): admits natively when it fits and nobody waits;
            /// otherwise waits in `acquire_blocking(1)`.
            fn __enter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, Self>> {
                let py = slf.py();
                if !slf.get().state.try_take(py, 1)? {
                    slf.call_method1(pyo3::intern!(py, "acquire_blocking"), (1,))?;
                }
                Ok(slf.clone())
            }

            // Three optional positionals, not `*args`: no tuple is built per call.
            #[pyo3(signature = (exc_type=None, exc=None, tb=None))]
            fn __exit__(
                &self,
                exc_type: Option<&Bound<'_, PyAny>>,
                exc: Option<&Bound<'_, PyAny>>,
                tb: Option<&Bound<'_, PyAny>>,
            ) {
                let _ = (exc_type, exc, tb);
            }

            /// Admits `cost` now if it fits and nobody waits; a refusal is not counted (the
            /// caller queues next, and is counted by its outcome).
            fn _try_take(&self, py: Python<'_>, cost: &Bound<'_, PyAny>) -> PyResult<bool> {
                self.state.try_take(py, crate::args::count("cost", Some(cost), 1)?)
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

            /// Admits at once (None) or queues the request (its ticket); `waker` is called
            /// when it becomes the head of the queue and when it is granted.
            /// With `admit_now=False` it always queues (granted by the next `_poll`).
            #[pyo3(signature = (cost, timeout, waker, admit_now=true))]
            fn _enqueue(
                &self,
                py: Python<'_>,
                cost: &Bound<'_, PyAny>,
                timeout: Option<f64>,
                waker: Py<PyAny>,
                admit_now: bool,
            ) -> PyResult<Option<crate::rate::RateTicket>> {
                self.state.enqueue(py, cost, timeout, waker, admit_now)
            }

            /// Admits `cost` now without counting it: `(record, time)` for `_untake`, or None.
            fn _take(&self, py: Python<'_>, cost: &Bound<'_, PyAny>) -> PyResult<Option<(u64, u64)>> {
                self.state.take(py, cost)
            }

            /// Undoes a `_take` (all-or-nothing acquisitions of several limiters).
            fn _untake(&self, py: Python<'_>, cost: u64, record: u64, taken_at: u64) -> PyResult<()> {
                self.state.untake(py, cost, record, taken_at)
            }

            /// Counts an admission made with `_take`; `waited` (seconds) records its wait.
            #[pyo3(signature = (cost, waited=None))]
            fn _commit(&self, cost: u64, waited: Option<f64>) -> PyResult<()> {
                self.state.commit(cost, waited)
            }

            /// Charges `cost` as used now, beyond the capacity if need be, counting nothing:
            /// a reservation's overage, or a replacement inheriting its predecessor's use.
            fn _charge(&self, py: Python<'_>, cost: u64) -> PyResult<()> {
                self.state.charge(py, cost)
            }

            /// Counts a reservation of `reserved` as having cost `actual` (admitted cost).
            fn _resettle(&self, reserved: u64, actual: u64) {
                self.state.resettle(reserved, actual)
            }

            /// Admits nothing for `seconds` from now; waiters keep their order.
            fn _pause(&self, py: Python<'_>, seconds: f64) -> PyResult<()> {
                self.state.pause(py, seconds)
            }

            /// The provider says `remaining` is left now, full again after `reset_after` s.
            #[pyo3(signature = (remaining, reset_after=None))]
            fn _sync(&self, py: Python<'_>, remaining: u64, reset_after: Option<f64>) -> PyResult<()> {
                self.state.sync(py, remaining, reset_after)
            }

            /// Grants the waiters whose turn has come and wakes them.
            fn _poll(&self, py: Python<'_>) -> PyResult<()> {
                self.state.poll(py)
            }

            /// `(stand, seconds until the head's turn)`.
            fn _status<'py>(
                &self,
                py: Python<'py>,
                ticket: &crate::rate::RateTicket,
            ) -> PyResult<(Bound<'py, pyo3::types::PyString>, f64)> {
                self.state.status(py, ticket)
            }

            /// Takes a granted request, counting it admitted with its wait.
            fn _consume(&self, py: Python<'_>, ticket: &crate::rate::RateTicket) -> PyResult<bool> {
                self.state.consume(py, ticket)
            }

            /// Withdraws a request whose waiter gave up (an unused grant goes back).
            #[pyo3(signature = (ticket, timed_out=false))]
            fn _withdraw<'py>(
                &self,
                py: Python<'py>,
                ticket: &crate::rate::RateTicket,
                timed_out: bool,
            ) -> PyResult<Bound<'py, pyo3::types::PyString>> {
                self.state.withdraw(py, ticket, timed_out)
            }

            /// `(upper bounds in seconds, per-bucket counts with +Inf last, sum of waits in seconds)`;
            /// admissions that never waited are counted as zero waits.
            fn _wait_histogram(&self) -> (Vec<f64>, Vec<u64>, f64) {
                self.state.wait_histogram()
            }

            /// Requests waiting in the queue right now.
            #[getter]
            fn waiting(&self) -> u64 {
                self.state.waiting()
            }

            /// Seconds the head of the queue has waited so far (0.0 when nobody waits).
            fn _oldest_wait(&self, py: Python<'_>) -> PyResult<f64> {
                self.state.oldest_wait(py)
            }

            fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
                self.state.traverse(&visit)
            }

            fn __clear__(&self) {
                self.state.clear()
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

            /// `"monotonic"`, `"manual"` or `"loop"`: the clock the limiter decides on.
            #[getter]
            fn _clock_kind(&self) -> &'static str {
                self.state.clock_kind()
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
