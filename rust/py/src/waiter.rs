//! `Waiter`: the asyncio waiting path of `Semaphore.acquire()` in one native object.
//!
//! When permits are not free, `acquire()` returns a `Waiter` instead of a coroutine. It is
//! the awaitable, the queued ticket, the waker and the future the task blocks on, all at
//! once: an asyncio `Task` accepts any object that follows the future protocol
//! (`_asyncio_future_blocking`, `get_loop`, `add_done_callback`, `cancel`, `result`), so no
//! coroutine frame, `asyncio.Future` or Python-level waker exists per waiter, and the
//! task's wake-up goes through a shared `WakeBatch` instead of one `Handle` per task.
//!
//! Life of a waiter, all on its loop's thread (wakes from other threads hop there first):
//! 1. The first `__next__` (the task's first step) queues the request, or is admitted at
//!    once if permits were freed since the call. Nothing is queued before it is awaited, so
//!    an acquisition that is never awaited holds nothing.
//! 2. Queued, it yields itself; the task registers its wake-up with `add_done_callback`.
//! 3. A release, close, resize, timeout or cancellation settles it and schedules the task.
//! 4. The task calls `result()`, then resumes the awaiting coroutine, which reads the end
//!    (`None`, or the exception) from `__next__`.
//!
//! No permit is ever lost: permits granted to a waiter that is cancelled at the same moment,
//! or whose coroutine is thrown into or closed before it saw them, are released (passed to
//! the next waiter), and so are permits of a granted waiter that is dropped unseen.

use std::sync::Arc;
use std::thread::{self, ThreadId};

use admission_core::semaphore::{Enqueued, Outcome, SemaphoreError, Ticket as CoreTicket};
use pyo3::exceptions::{PyBaseException, PyRuntimeError, PyStopIteration};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::batch::{self, Callback};
use crate::deadlines::Deadlines;
use crate::errors;
use crate::semaphore::{wake_all, Semaphore};

/// How a waiter's wait ended.
enum End {
    /// The permits are held by the waiter.
    Granted,
    Closed,
    /// The limit was lowered below the request.
    TooLarge,
    TimedOut,
    /// `cancel(msg)` (the task was cancelled) or the coroutine was abandoned.
    Cancelled(Option<Py<PyAny>>),
}

enum Phase {
    /// Made by `acquire()`, not awaited yet: nothing queued.
    Idle,
    Queued(Arc<CoreTicket>),
    Settled(End),
}

/// A queued asyncio acquisition of semaphore permits (see the module documentation).
#[pyclass(module = "admission._native")]
pub struct Waiter {
    semaphore: Py<Semaphore>,
    n: u64,
    /// Seconds; `None` (or infinite) waits as long as it takes.
    timeout: Option<f64>,
    event_loop: Py<PyAny>,
    thread: ThreadId,
    phase: Phase,
    /// `_asyncio_future_blocking`: `None` until yielded to a task, so that before it is
    /// awaited `asyncio.isfuture` says no and `ensure_future` wraps it like any awaitable.
    blocking: Option<bool>,
    /// The awaiting coroutine has seen the end (or gave up): nothing more to hand over.
    consumed: bool,
    callbacks: Vec<Callback>,
}

static COPY_CONTEXT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

impl Waiter {
    /// The waiting acquisition of `n` permits of `semaphore`, on `event_loop` (running in
    /// this thread).
    pub(crate) fn create(
        semaphore: &Bound<'_, Semaphore>,
        n: u64,
        timeout: Option<f64>,
        event_loop: Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let waiter = Self {
            semaphore: semaphore.clone().unbind(),
            n,
            timeout,
            event_loop: event_loop.unbind(),
            thread: thread::current().id(),
            phase: Phase::Idle,
            blocking: None,
            consumed: false,
            callbacks: Vec::new(),
        };
        Ok(Py::new(semaphore.py(), waiter)?.into_any())
    }

    /// Called by the semaphore when a release, close or resize settled the ticket.
    pub(crate) fn wake(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let end = {
            let this = slf.borrow();
            if thread::current().id() != this.thread {
                // Released from another thread: continue on the loop's thread. A closed
                // loop has no tasks left to wake.
                let event_loop = this.event_loop.clone_ref(py);
                drop(this);
                return match event_loop
                    .bind(py)
                    .call_method1(intern!(py, "call_soon_threadsafe"), (slf,))
                {
                    Err(e) if e.is_instance_of::<PyRuntimeError>(py) => Ok(()),
                    other => other.map(drop),
                };
            }
            let Phase::Queued(ticket) = &this.phase else {
                return Ok(()); // settled already (cancelled or timed out first)
            };
            match ticket.outcome() {
                Outcome::Granted => End::Granted,
                Outcome::Closed => End::Closed,
                Outcome::TooLarge => End::TooLarge,
                Outcome::Waiting | Outcome::Cancelled => return Ok(()),
            }
        };
        Self::settle(slf, end)
    }

    /// Records the end and schedules the done-callbacks. (A deadline it had is left in its
    /// semaphore's queue: dropped from there once it reaches the head.)
    fn settle(slf: &Bound<'_, Self>, end: End) -> PyResult<()> {
        let py = slf.py();
        let (callbacks, event_loop) = {
            let mut this = slf.borrow_mut();
            this.phase = Phase::Settled(end);
            (
                std::mem::take(&mut this.callbacks),
                this.event_loop.clone_ref(py),
            )
        };
        batch::schedule(py, event_loop.bind(py), slf.as_any(), callbacks)
    }

    /// Still in the semaphore's queue.
    pub(crate) fn is_queued(&self) -> bool {
        matches!(self.phase, Phase::Queued(_))
    }

    /// The deadline came: leave the queue, unless the permits were granted first.
    pub(crate) fn expire(slf: &Bound<'_, Self>) -> PyResult<()> {
        let ticket = match &slf.borrow().phase {
            Phase::Queued(ticket) => Arc::clone(ticket),
            Phase::Idle | Phase::Settled(_) => return Ok(()),
        };
        let (outcome, wakers) = Self::withdraw(slf, &ticket, true);
        let end = match outcome {
            Outcome::Granted => End::Granted, // granted as the timeout expired: keep it
            Outcome::Closed => End::Closed,
            Outcome::TooLarge => End::TooLarge,
            Outcome::Cancelled | Outcome::Waiting => End::TimedOut,
        };
        Self::settle(slf, end)?;
        wake_all(slf.py(), wakers)
    }

    /// Withdraws the queued `ticket`. Returns its final outcome (`Granted`: the permits were
    /// handed over first and are held) and the wakers of the waiters its leaving let in:
    /// wake them after settling this waiter, so that it is scheduled first.
    fn withdraw(
        slf: &Bound<'_, Self>,
        ticket: &Arc<CoreTicket>,
        timed_out: bool,
    ) -> (Outcome, Vec<Py<PyAny>>) {
        slf.borrow().semaphore.get().core.cancel(ticket, timed_out)
    }

    /// Gives the waiter's permits back (to the next waiter, if any).
    fn release(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (semaphore, n) = {
            let this = slf.borrow();
            (this.semaphore.clone_ref(py), this.n)
        };
        semaphore.get().release_n(py, n)
    }

    /// The awaiting coroutine will not see the end: withdraw, or pass granted permits on.
    fn abandon(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let mut this = slf.borrow_mut();
        if this.consumed {
            return Ok(());
        }
        this.consumed = true;
        this.callbacks.clear();
        let previous = std::mem::replace(&mut this.phase, Phase::Settled(End::Cancelled(None)));
        drop(this);
        match previous {
            Phase::Queued(ticket) => {
                let (outcome, wakers) = Self::withdraw(slf, &ticket, false);
                wake_all(py, wakers)?;
                if outcome == Outcome::Granted {
                    Self::release(slf)?;
                }
            }
            Phase::Settled(End::Granted) => Self::release(slf)?,
            Phase::Idle | Phase::Settled(_) => {}
        }
        Ok(())
    }

    /// The end as the awaiting coroutine sees it: `Ok` (permits held) or the exception.
    fn outcome(&self, py: Python<'_>) -> PyResult<()> {
        match &self.phase {
            Phase::Settled(End::Granted) => Ok(()),
            Phase::Settled(End::Closed) => Err(errors::closed_while_waiting(py)),
            Phase::Settled(End::TooLarge) => Err(errors::semaphore(
                py,
                SemaphoreError::Capacity {
                    n: self.n,
                    limit: self.semaphore.get().core.limit(),
                },
            )),
            Phase::Settled(End::TimedOut) => {
                Err(errors::acquire_timeout(py, self.timeout.unwrap_or(0.0)))
            }
            Phase::Settled(End::Cancelled(msg)) => Err(errors::cancelled(py, msg.as_ref())),
            Phase::Idle | Phase::Queued(_) => Err(errors::invalid_state(py, "Result is not set.")),
        }
    }

    /// Registers the deadline `timeout` seconds from now with the semaphore's shared timer.
    fn time_out_after(
        slf: &Bound<'_, Self>,
        semaphore: &Py<Semaphore>,
        event_loop: &Bound<'_, PyAny>,
        timeout: f64,
    ) -> PyResult<()> {
        let py = slf.py();
        let now: f64 = event_loop.call_method0(intern!(py, "time"))?.extract()?;
        let deadlines = semaphore.get().deadlines(event_loop)?;
        Deadlines::add(&deadlines, now + timeout, slf)
    }

    /// One step of the awaiting coroutine: `Some(self)` to wait, `None` when admitted.
    fn step(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let py = slf.py();
        let mut this = slf.borrow_mut();
        if this.consumed {
            return Err(PyRuntimeError::new_err(
                "cannot reuse an already awaited acquisition",
            ));
        }
        match &this.phase {
            Phase::Idle => {}
            Phase::Queued(_) => {
                // Resumed without being settled: wait on.
                this.blocking = Some(true);
                return Ok(Some(slf.clone().into_any().unbind()));
            }
            Phase::Settled(_) => {
                this.consumed = true;
                return this.outcome(py).map(|()| None);
            }
        }
        let enqueued = this
            .semaphore
            .get()
            .core
            .enqueue(this.n, slf.clone().into_any().unbind());
        match enqueued {
            Ok(Enqueued::Acquired) => {
                // Permits were freed between the call and the first step.
                this.phase = Phase::Settled(End::Granted);
                this.consumed = true;
                Ok(None)
            }
            Ok(Enqueued::Queued(ticket)) => {
                this.phase = Phase::Queued(ticket);
                this.blocking = Some(true);
                let timeout = this.timeout.filter(|t| t.is_finite());
                let semaphore = this.semaphore.clone_ref(py);
                let event_loop = this.event_loop.clone_ref(py);
                drop(this);
                if let Some(timeout) = timeout {
                    if let Err(e) =
                        Self::time_out_after(slf, &semaphore, event_loop.bind(py), timeout)
                    {
                        Self::abandon(slf)?;
                        return Err(e);
                    }
                }
                Ok(Some(slf.clone().into_any().unbind()))
            }
            Err(e) => {
                this.consumed = true;
                Err(errors::semaphore(py, e))
            }
        }
    }
}

#[pymethods]
impl Waiter {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        Self::step(slf)
    }

    /// Generator protocol (used instead of `__next__` when a trace function is set).
    fn send(slf: &Bound<'_, Self>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let _ = value;
        match Self::step(slf)? {
            Some(yielded) => Ok(yielded),
            None => Err(PyStopIteration::new_err(())),
        }
    }

    /// An exception thrown into the awaiting coroutine ends the wait: permits queued for
    /// or granted to it are passed on, then the exception propagates.
    #[pyo3(signature = (typ, val=None, tb=None))]
    fn throw(
        slf: &Bound<'_, Self>,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let _ = tb;
        Self::abandon(slf)?;
        Err(match val {
            Some(v) if v.is_instance_of::<PyBaseException>() => PyErr::from_value(v.clone()),
            Some(v) if !v.is_none() => PyErr::from_value(typ.call1((v,))?),
            _ => PyErr::from_value(typ.clone()),
        })
    }

    /// The awaiting coroutine was closed: permits queued for or granted to it are passed on.
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::abandon(slf)
    }

    // --- the future protocol, as asyncio's Task uses it -------------------------------

    #[getter(_asyncio_future_blocking)]
    fn get_blocking(&self) -> Option<bool> {
        self.blocking
    }

    #[setter(_asyncio_future_blocking)]
    fn set_blocking(&mut self, value: bool) {
        self.blocking = Some(value);
    }

    fn get_loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.event_loop.clone_ref(py)
    }

    #[pyo3(signature = (func, *, context=None))]
    fn add_done_callback(
        slf: &Bound<'_, Self>,
        func: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let context = match context {
            Some(c) if !c.is_none(py) => c,
            _ => COPY_CONTEXT
                .import(py, "contextvars", "copy_context")?
                .call0()?
                .unbind(),
        };
        let callback = Callback { func, context };
        let mut this = slf.borrow_mut();
        if !matches!(this.phase, Phase::Settled(_)) {
            this.callbacks.push(callback);
            return Ok(());
        }
        let event_loop = this.event_loop.clone_ref(py);
        drop(this);
        batch::schedule(py, event_loop.bind(py), slf.as_any(), vec![callback])
    }

    /// Removes every registration of `func`; returns how many there were.
    fn remove_done_callback(&mut self, py: Python<'_>, func: &Bound<'_, PyAny>) -> PyResult<usize> {
        let before = self.callbacks.len();
        let mut error = None;
        self.callbacks.retain(|cb| match cb.func.bind(py).eq(func) {
            Ok(equal) => !equal,
            Err(e) => {
                error.get_or_insert(e);
                true
            }
        });
        match error {
            Some(e) => Err(e),
            None => Ok(before - self.callbacks.len()),
        }
    }

    /// Stops waiting: the request leaves the queue (permits handed over at this instant
    /// are passed on) and the waiting task gets `CancelledError`. False once settled.
    #[pyo3(signature = (msg=None))]
    fn cancel(slf: &Bound<'_, Self>, msg: Option<Py<PyAny>>) -> PyResult<bool> {
        let ticket = match &slf.borrow().phase {
            Phase::Settled(_) => return Ok(false),
            Phase::Idle => None,
            Phase::Queued(ticket) => Some(Arc::clone(ticket)),
        };
        let Some(ticket) = ticket else {
            Self::settle(slf, End::Cancelled(msg))?;
            return Ok(true);
        };
        let (outcome, wakers) = Self::withdraw(slf, &ticket, false);
        Self::settle(slf, End::Cancelled(msg))?;
        wake_all(slf.py(), wakers)?;
        if outcome == Outcome::Granted {
            Self::release(slf)?; // handed over as it was cancelled: pass it on
        }
        Ok(true)
    }

    fn cancelled(&self) -> bool {
        matches!(self.phase, Phase::Settled(End::Cancelled(_)))
    }

    fn done(&self) -> bool {
        matches!(self.phase, Phase::Settled(_))
    }

    fn result(&self, py: Python<'_>) -> PyResult<()> {
        self.outcome(py)
    }

    fn exception(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &self.phase {
            Phase::Idle | Phase::Queued(_) => {
                Err(errors::invalid_state(py, "Exception is not set."))
            }
            Phase::Settled(End::Cancelled(msg)) => Err(errors::cancelled(py, msg.as_ref())),
            Phase::Settled(_) => Ok(self.outcome(py).err().map(|e| e.into_value(py).into_any())),
        }
    }

    /// The waker: the semaphore calls it when it settled the ticket (any thread).
    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::wake(slf)
    }

    fn __repr__(&self) -> String {
        let state = match &self.phase {
            Phase::Idle => "not awaited",
            Phase::Queued(_) => "waiting",
            Phase::Settled(End::Granted) => "granted",
            Phase::Settled(End::Closed) => "closed",
            Phase::Settled(End::TooLarge) => "too large",
            Phase::Settled(End::TimedOut) => "timed out",
            Phase::Settled(End::Cancelled(_)) => "cancelled",
        };
        format!("<admission semaphore waiter n={} {state}>", self.n)
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.semaphore)?;
        visit.call(&self.event_loop)?;
        for cb in &self.callbacks {
            visit.call(&cb.func)?;
            visit.call(&cb.context)?;
        }
        if let Phase::Settled(End::Cancelled(Some(msg))) = &self.phase {
            visit.call(msg)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.callbacks.clear();
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // Granted, but the coroutine never resumed to see it (its task was destroyed, or
        // its loop closed first): the permits go back rather than leak.
        if !self.consumed && matches!(self.phase, Phase::Settled(End::Granted)) {
            Python::attach(|py| {
                let _ = self.semaphore.get().release_n(py, self.n);
            });
        }
    }
}
