//! `Semaphore` binding over the core permit accounting and FIFO queue.
//!
//! Waiters are queued with their waker: a native asyncio `Waiter`, or a Python callable (a
//! `threading.Event.set`, trio's wake-up). The core returns the wakers it granted; they are
//! woken here (`asyncio::wake_all`), after the core's lock is released.

use std::sync::Arc;

use admission_core::semaphore::{
    Enqueued, Outcome, Semaphore as CoreSemaphore, Ticket as CoreTicket,
};
use admission_core::Refusal;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyString;
use pyo3::{PyTraverseError, PyVisit};

use crate::acquire::{self, acquire_slow, Limiter, Owner};
use crate::args::{count, count_arg, label, ns_to_s, timeout, Arg};
use crate::asyncio::{self, wake_all, Permits};
use crate::errors;
use crate::metrics::retire;
use crate::rate::{counters_tuple, histogram_tuple};
use crate::ready::ready;

/// The outcome's name, as a Python string made once per name and then shared.
fn outcome_str(py: Python<'_>, outcome: Outcome) -> Bound<'_, PyString> {
    match outcome {
        Outcome::Waiting => intern!(py, "waiting"),
        Outcome::Granted => intern!(py, "granted"),
        Outcome::Closed => intern!(py, "closed"),
        Outcome::Cancelled => intern!(py, "cancelled"),
        Outcome::TooLarge => intern!(py, "too_large"),
    }
    .clone()
}

/// A queued request for permits. Its `outcome` is final once it is not `"waiting"`.
#[pyclass(frozen, module = "admission._native")]
pub struct Ticket {
    inner: Arc<CoreTicket>,
}

#[pymethods]
impl Ticket {
    /// Permits requested.
    #[getter]
    fn n(&self) -> u64 {
        self.inner.n()
    }

    /// `"waiting"`, `"granted"`, `"closed"`, `"cancelled"` or `"too_large"`.
    #[getter]
    fn outcome<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        outcome_str(py, self.inner.outcome())
    }
}

/// Native semaphore. The public class is `admission.Semaphore`.
#[pyclass(frozen, subclass, weakref, module = "admission._native")]
pub struct Semaphore {
    /// Shared with its asyncio waiters.
    permits: Arc<Permits>,
    name: Option<String>,
}

impl Semaphore {
    pub(crate) fn core(&self) -> &CoreSemaphore<Py<PyAny>> {
        &self.permits.core
    }

    /// Passes on `n` permits granted to a waiter that gave up before taking them (counted as
    /// `how`, not admitted), waking whoever they go to.
    fn pass_on_n(&self, py: Python<'_>, n: u64, how: Refusal) -> PyResult<()> {
        let wakers = self
            .core()
            .pass_on(n, how)
            .map_err(|e| errors::semaphore(py, e))?;
        wake_all(py, wakers)
    }

    #[inline(always)]
    fn release_n(&self, py: Python<'_>, n: u64) -> PyResult<()> {
        let wakers = self
            .core()
            .release(n)
            .map_err(|e| errors::semaphore(py, e))?;
        if wakers.is_empty() {
            return Ok(());
        }
        wake_all(py, wakers)
    }
}

impl Limiter for Semaphore {
    const QUALNAME: &'static str = "Semaphore.acquire";

    #[inline(always)]
    fn try_now(&self, py: Python<'_>, n: u64, _costs: &[u64]) -> PyResult<bool> {
        self.core()
            .try_take(n)
            .map_err(|e| errors::semaphore(py, e))
    }

    /// A native `Waiter` on asyncio; the Python path `_acquire_slow` on trio.
    fn wait(
        slf: &Bound<'_, Self>,
        n: u64,
        _costs: &[u64],
        timeout: Option<f64>,
        event_loop: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        match event_loop {
            Some(event_loop) => {
                asyncio::wait(slf.as_any(), &slf.get().permits, n, timeout, event_loop)
            }
            None => acquire_slow(slf.as_any(), n, timeout),
        }
    }
}

#[pymethods]
impl Semaphore {
    #[new]
    #[pyo3(signature = (limit, *, name=None))]
    fn new(
        py: Python<'_>,
        limit: &Bound<'_, PyAny>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let limit = count("limit", Some(limit), 0)?;
        let name = label("name", name)?;
        let core = CoreSemaphore::new(limit).map_err(|e| errors::semaphore(py, e))?;
        Ok(Self {
            permits: Arc::new(Permits::new(core)),
            name,
        })
    }

    /// Takes `n` permits if they are free and nobody is waiting; never waits.
    #[pyo3(signature = (n=Arg::OMITTED), text_signature = "($self, n=1)")]
    #[inline]
    fn try_acquire(&self, py: Python<'_>, n: Arg<'_, '_>) -> PyResult<bool> {
        let n = count_arg("n", n, 1)?;
        self.core()
            .try_acquire(n)
            .map_err(|e| errors::semaphore(py, e))
    }

    /// Like `try_acquire`, but a refusal is not counted: for a caller that queues next, whose
    /// request is then counted once, by its real outcome.
    fn _try_take(&self, py: Python<'_>, n: &Bound<'_, PyAny>) -> PyResult<bool> {
        let n = count("n", Some(n), 1)?;
        self.core()
            .try_take(n)
            .map_err(|e| errors::semaphore(py, e))
    }

    /// Counts a request refused without an outcome of the core's (it may not wait here).
    fn _reject(&self) {
        self.core().counters().rejected();
    }

    /// True when an acquisition of one permit would have to wait: no permit is free, or
    /// someone is queued (newcomers never pass a waiter).
    fn locked(&self) -> bool {
        self.core().locked()
    }

    /// `with semaphore:` takes a free permit natively; only when it must wait does it call
    /// the Python blocking path, `acquire_blocking(1)`.
    fn __enter__(slf: &Bound<'_, Self>) -> PyResult<Py<Self>> {
        let py = slf.py();
        let taken = slf
            .get()
            .core()
            .try_take(1)
            .map_err(|e| errors::semaphore(py, e))?;
        if !taken {
            slf.call_method1(intern!(py, "acquire_blocking"), (1,))?;
        }
        Ok(slf.clone().unbind())
    }

    // Three optional positionals, not `*args`: no tuple is built per call.
    #[pyo3(signature = (exc_type=None, exc=None, tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let _ = (exc_type, exc, tb);
        self.release_n(py, 1)
    }

    /// Gives back `n` permits; the longest waiter gets them first.
    #[pyo3(signature = (n=Arg::OMITTED), text_signature = "($self, n=1)")]
    #[inline]
    fn release(&self, py: Python<'_>, n: Arg<'_, '_>) -> PyResult<()> {
        self.release_n(py, count_arg("n", n, 1)?)
    }

    /// Awaitable acquisition of `n` permits (an `Acquire`): nothing is taken until it is
    /// awaited (or run as a Task's coroutine). Then immediate when free and nobody waits (no
    /// Task, no Future, no suspension); else a native `Waiter` on asyncio; on trio the Python
    /// path `_acquire_slow(n, timeout)`, a checkpoint either way.
    #[pyo3(signature = (n=Arg::OMITTED, timeout=None), text_signature = "($self, n=1, timeout=None)")]
    #[inline]
    fn acquire<'py>(
        slf: &Bound<'py, Self>,
        n: Arg<'_, 'py>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let n = count_arg("n", n, 1)?;
        let limit = self::timeout(timeout)?;
        acquire::acquire(
            slf.py(),
            Owner::new(slf.clone().unbind(), Vec::new()),
            n,
            limit,
        )
    }

    /// `async with`: the acquisition's decision made at once (it is awaited at once).
    fn __aenter__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        acquire::enter(slf, 1, &[], None)
    }

    /// `acquire(n, timeout)` decided now, for an `__aenter__` built on it (awaited at once):
    /// the shared `Ready` when admitted, else what to wait on.
    #[pyo3(signature = (n, timeout=None))]
    fn _acquire_now<'py>(
        slf: &Bound<'py, Self>,
        n: &Bound<'py, PyAny>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let n = count("n", Some(n), 1)?;
        let limit = self::timeout(timeout)?;
        acquire::enter(slf, n, &[], limit)
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
        self.release_n(py, 1)?;
        ready(py)
    }

    /// Admits at once (returns None) or queues the request (returns its Ticket); `waker` is
    /// called with no arguments when the ticket's outcome is settled by someone else.
    fn _enqueue(
        &self,
        py: Python<'_>,
        n: &Bound<'_, PyAny>,
        waker: Py<PyAny>,
    ) -> PyResult<Option<Ticket>> {
        let n = count("n", Some(n), 1)?;
        match self.core().enqueue(n, waker) {
            Ok(Enqueued::Acquired) => Ok(None),
            Ok(Enqueued::Queued(inner)) => Ok(Some(Ticket { inner })),
            Err(e) => Err(errors::semaphore(py, e)),
        }
    }

    /// Withdraws a queued request; returns its final outcome. `"granted"` means the permits
    /// were handed over first: the caller holds them and must release them.
    #[pyo3(signature = (ticket, timed_out=false))]
    fn _cancel<'py>(
        &self,
        py: Python<'py>,
        ticket: &Bound<'_, Ticket>,
        timed_out: bool,
    ) -> PyResult<Bound<'py, PyString>> {
        let (outcome, wakers) = self.core().cancel(&ticket.get().inner, timed_out);
        wake_all(py, wakers)?;
        Ok(outcome_str(py, outcome))
    }

    /// Ends a granted ticket whose waiter takes the permits: counts the admission and its wait.
    fn _commit(&self, ticket: &Bound<'_, Ticket>) {
        self.core().commit(&ticket.get().inner);
    }

    /// Ends a granted ticket whose waiter gave up before taking the permits: counts it as
    /// cancelled (timed out with `timed_out`) and passes the permits on.
    #[pyo3(signature = (ticket, timed_out=false))]
    fn _pass_on(
        &self,
        py: Python<'_>,
        ticket: &Bound<'_, Ticket>,
        timed_out: bool,
    ) -> PyResult<()> {
        let how = if timed_out {
            Refusal::TimedOut
        } else {
            Refusal::Cancelled
        };
        self.pass_on_n(py, ticket.get().inner.n(), how)
    }

    /// Refuses new requests and wakes every waiter with `Closed`; held permits stay valid.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        wake_all(py, self.core().close())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.core().is_closed()
    }

    #[getter]
    fn limit(&self) -> u64 {
        self.core().limit()
    }

    #[setter]
    fn set_limit(&self, py: Python<'_>, limit: &Bound<'_, PyAny>) -> PyResult<()> {
        let limit = count("limit", Some(limit), 0)?;
        let wakers = self
            .core()
            .set_limit(limit)
            .map_err(|e| errors::semaphore(py, e))?;
        wake_all(py, wakers)
    }

    #[getter]
    fn in_use(&self) -> u64 {
        self.core().in_use()
    }

    #[getter]
    fn available(&self) -> u64 {
        self.core().available()
    }

    #[getter]
    fn waiting(&self) -> u64 {
        self.core().waiting()
    }

    #[getter]
    fn high_water(&self) -> u64 {
        self.core().high_water()
    }

    #[getter]
    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn _counters(&self) -> (u64, u64, u64, u64, u64) {
        counters_tuple(&self.core().counters().snapshot())
    }

    /// `(upper bounds in seconds, per-bucket counts with +Inf last, sum of waits in seconds)`:
    /// waits from queueing to being granted; admissions that never waited count as zero waits.
    fn _wait_histogram(&self) -> (Vec<f64>, Vec<u64>, f64) {
        histogram_tuple(&self.core().wait_histogram())
    }

    /// Seconds the head of the queue has waited so far (0.0 when nobody waits).
    fn _oldest_wait(&self) -> f64 {
        ns_to_s(self.core().oldest_wait_ns())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.permits.traverse(&visit)
    }

    fn __clear__(&self) {
        self.permits.clear();
    }
}

impl Drop for Semaphore {
    fn drop(&mut self) {
        retire(
            "semaphore",
            self.name.as_deref(),
            self.core().counters(),
            || self.core().wait_histogram(),
        );
    }
}
