//! `Waiter`: the asyncio waiting path of `Semaphore.acquire()` in one native object.
//!
//! When permits are not free at the first step of `acquire()` (see `acquire.rs`), the
//! awaiting coroutine is handed a `Waiter` (made by [`super::wait`]) instead of a coroutine. It is
//! the awaitable, the queued ticket, the waker and the future the task blocks on, all at
//! once: an asyncio `Task` accepts any object that follows the future protocol
//! (`_asyncio_future_blocking`, `_loop`, `add_done_callback`, `cancel`, `result`), so no
//! coroutine frame, `asyncio.Future` or Python-level waker exists per waiter, and the
//! task's wake-up goes through a shared `WakeBatch` instead of one `Handle` per task. The
//! Task's C code reads `result` by C string on every wake-up; the type answers that lookup
//! without making a string or a bound method (`result_lookup`).
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
//! or whose coroutine is thrown into or closed before it saw them, are passed on to the next
//! waiter, and so are permits of a granted waiter that is dropped unseen. A grant is counted
//! as admitted (and its wait recorded) only when the coroutine takes it; one passed on is
//! counted as cancelled.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use admission_core::semaphore::{Enqueued, Outcome, SemaphoreError, Ticket as CoreTicket};
use admission_core::{Refusal, Wakers};
use pyo3::exceptions::{PyBaseException, PyRuntimeError, PyStopIteration, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;

use super::batch::{self, Callback, Callbacks};
use super::deadlines::{Deadlines, Expiry};
use super::permits::Permits;
use super::result_lookup;
use crate::critical::{try_with_state, with_state, CriticalCell, Guarded};
use crate::errors;

/// How a waiter's wait ended.
enum End {
    /// The permits are held by the waiter, granted after waiting this many nanoseconds
    /// (counted as admitted only when the awaiting coroutine takes them: see `step`).
    Granted(u64),
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

/// What changes during a waiter's life (guarded by the waiter's critical section: see
/// `CriticalCell`).
pub(crate) struct State {
    phase: Phase,
    /// `_asyncio_future_blocking`: `None` until yielded to a task, so that before it is
    /// awaited `asyncio.isfuture` says no and `ensure_future` wraps it like any awaitable.
    blocking: Option<bool>,
    /// The awaiting coroutine has seen the end (or gave up): nothing more to hand over.
    consumed: bool,
    callbacks: Callbacks,
}

/// A queued asyncio acquisition of semaphore permits (see the module documentation).
#[pyclass(frozen, module = "admission._native")]
pub struct Waiter {
    /// The semaphore's Python object: kept alive while this waits (and visited by the garbage
    /// collector, which breaks the cycle through the semaphore's queue).
    owner: Py<PyAny>,
    /// What it waits on: the semaphore's permits and deadline timers.
    permits: Arc<Permits>,
    n: u64,
    /// Seconds; `None` (or infinite) waits as long as it takes.
    timeout: Option<f64>,
    /// The loop it waits on, as the struct member `_loop`: with no `get_loop` method, that is
    /// where asyncio's Task looks, reading it without a call or a bound-method object.
    #[pyo3(get, name = "_loop")]
    event_loop: Py<PyAny>,
    /// The loop's thread (`this_thread()` when made).
    thread: u64,
    state: CriticalCell<State>,
}

impl Guarded for Waiter {
    type State = State;
    fn cell(&self) -> &CriticalCell<State> {
        &self.state
    }
}

static COPY_CONTEXT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Spare tickets kept per thread: at most this many (a few tens of kilobytes).
const MAX_SPARE_TICKETS: usize = 1024;

thread_local! {
    /// Tickets of finished waits, made into the tickets of the next waits on this thread.
    /// Without them each wait allocated one on the Rust heap, and glibc's malloc later
    /// consolidated the thousand freed blocks of a burst in one costly sweep.
    static SPARE_TICKETS: RefCell<Vec<Arc<CoreTicket>>> = const { RefCell::new(Vec::new()) };
}

/// This thread's number: unique for the process's life, and cheaper than
/// `thread::current().id()` (which clones the thread handle).
fn this_thread() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static ID: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    ID.with(|id| *id)
}

/// Keeps a finished wait's ticket for reuse, if nothing else references it.
fn recycle(ticket: Arc<CoreTicket>) {
    if Arc::strong_count(&ticket) == 1 {
        SPARE_TICKETS.with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < MAX_SPARE_TICKETS {
                spare.push(ticket);
            }
        });
    }
}

fn spare_ticket() -> Option<Arc<CoreTicket>> {
    SPARE_TICKETS.with(|spare| spare.borrow_mut().pop())
}

/// Calls every waker of a semaphore: a native waiter is woken without a Python call, any
/// other waker (the thread and trio paths' callables) is called. A failing waker does not
/// stop the others; the first failure is raised.
pub(crate) fn wake_all(py: Python<'_>, wakers: Wakers<Py<PyAny>>) -> PyResult<()> {
    let mut first_error = None;
    for waker in wakers {
        let waker = waker.into_bound(py);
        let woken = match waker.cast::<Waiter>() {
            Ok(waiter) => Waiter::wake(waiter),
            Err(_) => waker.call0().map(drop),
        };
        if let Err(e) = woken {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// How a semaphore's [`Deadlines`] see its waiters.
static EXPIRY: Expiry = Expiry {
    waiting: |entry| entry.cast::<Waiter>().is_ok_and(Waiter::is_queued),
    expire: |entry| match entry.cast::<Waiter>() {
        Ok(waiter) => Waiter::expire(waiter),
        Err(_) => Ok(()),
    },
};

impl Waiter {
    /// The waiting acquisition of `n` permits of `permits` (whose Python object is `owner`),
    /// on `event_loop` (running in this thread).
    pub(crate) fn create(
        owner: &Bound<'_, PyAny>,
        permits: &Arc<Permits>,
        n: u64,
        timeout: Option<f64>,
        event_loop: Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let waiter = Self {
            owner: owner.clone().unbind(),
            permits: Arc::clone(permits),
            n,
            timeout,
            event_loop: event_loop.unbind(),
            thread: this_thread(),
            state: CriticalCell::new(State {
                phase: Phase::Idle,
                blocking: None,
                consumed: false,
                callbacks: Callbacks::default(),
            }),
        };
        Ok(Py::new(owner.py(), waiter)?.into_any())
    }

    /// Called by the semaphore when a release, close or resize settled the ticket.
    fn wake(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this_thread() != this.thread {
            // Released from another thread: continue on the loop's thread. A closed loop
            // will never resume the awaiting coroutine: what it was granted goes back.
            return match this.event_loop.bind(py).call_method1(
                intern!(py, "call_soon_threadsafe"),
                (slf.getattr(intern!(py, "_wake"))?,),
            ) {
                Err(e) if e.is_instance_of::<PyRuntimeError>(py) => Self::abandon(slf),
                other => other.map(drop),
            };
        }
        let (outcome, waited_ns) = with_state(slf, |s| match &s.phase {
            Phase::Queued(ticket) => (Some(ticket.outcome()), ticket.waited_ns()),
            Phase::Idle | Phase::Settled(_) => (None, 0), // settled already (cancelled, timed out)
        });
        let end = match outcome {
            Some(Outcome::Granted) => End::Granted(waited_ns),
            Some(Outcome::Closed) => End::Closed,
            Some(Outcome::TooLarge) => End::TooLarge,
            Some(Outcome::Waiting | Outcome::Cancelled) | None => return Ok(()),
        };
        Self::settle(slf, end)
    }

    /// Records the end and schedules the done-callbacks. (A deadline it had is left in its
    /// semaphore's queue: dropped from there once it reaches the head.)
    fn settle(slf: &Bound<'_, Self>, end: End) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (previous, callbacks) = with_state(slf, |s| {
            let previous = std::mem::replace(&mut s.phase, Phase::Settled(end));
            (previous, std::mem::take(&mut s.callbacks))
        });
        if let Phase::Queued(ticket) = previous {
            recycle(ticket);
        }
        if batch::schedule(py, this.event_loop.bind(py), slf.as_any(), callbacks)? {
            return Ok(());
        }
        // Its loop is closed: the awaiting coroutine will never see this end, so permits
        // granted to it go back (to the next waiter) now, not when this object is freed.
        Self::abandon(slf)
    }

    /// Still in the semaphore's queue (or being settled right now).
    fn is_queued(slf: &Bound<'_, Self>) -> bool {
        try_with_state(slf, |s| matches!(s.phase, Phase::Queued(_))).unwrap_or(true)
    }

    /// The queued ticket, if it is queued.
    fn ticket(slf: &Bound<'_, Self>) -> Option<Arc<CoreTicket>> {
        with_state(slf, |s| match &s.phase {
            Phase::Queued(ticket) => Some(Arc::clone(ticket)),
            Phase::Idle | Phase::Settled(_) => None,
        })
    }

    /// The deadline came: leave the queue, unless the permits were granted first.
    fn expire(slf: &Bound<'_, Self>) -> PyResult<()> {
        let Some(ticket) = Self::ticket(slf) else {
            return Ok(());
        };
        let (outcome, wakers) = slf.get().withdraw(&ticket, true);
        let end = match outcome {
            // Granted as the timeout expired: keep it.
            Outcome::Granted => End::Granted(ticket.waited_ns()),
            Outcome::Closed => End::Closed,
            Outcome::TooLarge => End::TooLarge,
            Outcome::Cancelled | Outcome::Waiting => End::TimedOut,
        };
        Self::settle(slf, end)?;
        recycle(ticket);
        wake_all(slf.py(), wakers)
    }

    /// Withdraws the queued `ticket`. Returns its final outcome (`Granted`: the permits were
    /// handed over first and are held) and the wakers of the waiters its leaving let in:
    /// wake them after settling this waiter, so that it is scheduled first.
    fn withdraw(&self, ticket: &Arc<CoreTicket>, timed_out: bool) -> (Outcome, Wakers<Py<PyAny>>) {
        self.permits.core.cancel(ticket, timed_out)
    }

    /// Passes the permits granted to this waiter on (to the next waiter, if any), counted as
    /// cancelled: the awaiting coroutine never took them.
    fn pass_on(&self, py: Python<'_>) -> PyResult<()> {
        let wakers = self
            .permits
            .core
            .pass_on(self.n, Refusal::Cancelled)
            .map_err(|e| errors::semaphore(py, e))?;
        wake_all(py, wakers)
    }

    /// The awaiting coroutine will not see the end: withdraw, or pass granted permits on.
    fn abandon(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let taken = with_state(slf, |s| {
            if s.consumed {
                return None;
            }
            s.consumed = true;
            let phase = std::mem::replace(&mut s.phase, Phase::Settled(End::Cancelled(None)));
            Some((phase, std::mem::take(&mut s.callbacks)))
        });
        // The callbacks are dropped here, outside the guard: dropping one may run finalizers.
        let previous = taken.map(|(phase, _callbacks)| phase);
        match previous {
            Some(Phase::Queued(ticket)) => {
                let (outcome, wakers) = this.withdraw(&ticket, false);
                recycle(ticket);
                wake_all(py, wakers)?;
                if outcome == Outcome::Granted {
                    this.pass_on(py)?;
                }
            }
            Some(Phase::Settled(End::Granted(_))) => this.pass_on(py)?,
            Some(Phase::Idle | Phase::Settled(_)) | None => {}
        }
        Ok(())
    }

    /// The end as the awaiting coroutine sees it: `Ok` (permits held) or the exception.
    fn outcome(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let end = with_state(slf, |s| match &s.phase {
            Phase::Settled(End::Granted(_)) => Ok(None),
            Phase::Settled(End::Closed) => Ok(Some(Failure::Closed)),
            Phase::Settled(End::TooLarge) => Ok(Some(Failure::TooLarge)),
            Phase::Settled(End::TimedOut) => Ok(Some(Failure::TimedOut)),
            Phase::Settled(End::Cancelled(msg)) => Ok(Some(Failure::Cancelled(
                msg.as_ref().map(|m| m.clone_ref(py)),
            ))),
            Phase::Idle | Phase::Queued(_) => Err(()),
        });
        match end {
            Ok(None) => Ok(()),
            Ok(Some(failure)) => Err(slf.get().error(py, failure)),
            Err(()) => Err(errors::invalid_state(py, "Result is not set.")),
        }
    }

    /// The exception for a wait that ended without the permits.
    fn error(&self, py: Python<'_>, failure: Failure) -> PyErr {
        match failure {
            Failure::Closed => errors::closed_while_waiting(py),
            Failure::TooLarge => errors::semaphore(
                py,
                SemaphoreError::Capacity {
                    n: self.n,
                    limit: self.permits.core.limit(),
                },
            ),
            Failure::TimedOut => errors::acquire_timeout(py, self.timeout.unwrap_or(0.0)),
            Failure::Cancelled(msg) => errors::cancelled(py, msg.as_ref()),
        }
    }

    /// Registers the deadline `timeout` seconds from now with the semaphore's shared timer.
    fn time_out_after(slf: &Bound<'_, Self>, timeout: f64) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let event_loop = this.event_loop.bind(py);
        let now: f64 = event_loop.call_method0(intern!(py, "time"))?.extract()?;
        let deadlines = this.permits.deadlines.on(event_loop, &EXPIRY)?;
        Deadlines::add(&deadlines, now + timeout, slf.as_any())
    }

    /// One step of the awaiting coroutine: `Some(self)` to wait, `None` when admitted.
    fn step(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let py = slf.py();
        let this = slf.get();
        let next = with_state(slf, |s| {
            if s.consumed {
                return Step::Reused;
            }
            match &s.phase {
                Phase::Idle => Step::Enqueue,
                Phase::Queued(_) => {
                    // Resumed without being settled: wait on.
                    s.blocking = Some(true);
                    Step::Wait
                }
                Phase::Settled(end) => {
                    s.consumed = true;
                    match end {
                        End::Granted(waited_ns) => Step::Taken(*waited_ns),
                        _ => Step::Done,
                    }
                }
            }
        });
        match next {
            Step::Reused => {
                return Err(PyRuntimeError::new_err(
                    "cannot reuse an already awaited acquisition",
                ))
            }
            Step::Wait => return Ok(Some(slf.clone().into_any().unbind())),
            Step::Done => return Self::outcome(slf).map(|()| None),
            Step::Taken(waited_ns) => {
                // The coroutine takes its grant: now it is an admission.
                this.permits.core.commit_grant(this.n, waited_ns);
                return Ok(None);
            }
            Step::Enqueue => {}
        }
        let enqueued = this.permits.core.enqueue_reusing(
            this.n,
            slf.clone().into_any().unbind(),
            spare_ticket(),
        );
        match enqueued {
            Ok(Enqueued::Acquired) => {
                // Permits were freed between the call and the first step.
                with_state(slf, |s| {
                    s.phase = Phase::Settled(End::Granted(0));
                    s.consumed = true;
                });
                Ok(None)
            }
            Ok(Enqueued::Queued(ticket)) => {
                with_state(slf, |s| {
                    s.phase = Phase::Queued(ticket);
                    s.blocking = Some(true);
                });
                if let Some(timeout) = this.timeout.filter(|t| t.is_finite()) {
                    if let Err(e) = Self::time_out_after(slf, timeout) {
                        Self::abandon(slf)?;
                        return Err(e);
                    }
                }
                Ok(Some(slf.clone().into_any().unbind()))
            }
            Err(e) => {
                with_state(slf, |s| s.consumed = true);
                Err(errors::semaphore(py, e))
            }
        }
    }
}

/// What `step` does next, decided under the state's guard.
enum Step {
    Reused,
    Enqueue,
    Wait,
    /// Settled without the permits: raise the end.
    Done,
    /// Granted after waiting this many nanoseconds: taken now.
    Taken(u64),
}

/// A wait that ended without the permits (the exception is built outside the state's guard).
enum Failure {
    Closed,
    TooLarge,
    TimedOut,
    Cancelled(Option<Py<PyAny>>),
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
    // (The loop is the `_loop` member; see the struct.)

    #[getter(_asyncio_future_blocking)]
    fn get_blocking(slf: &Bound<'_, Self>) -> Option<bool> {
        with_state(slf, |s| s.blocking)
    }

    #[setter(_asyncio_future_blocking)]
    fn set_blocking(slf: &Bound<'_, Self>, value: bool) {
        with_state(slf, |s| s.blocking = Some(value));
    }

    #[pyo3(signature = (func, *, context=None))]
    fn add_done_callback(
        slf: &Bound<'_, Self>,
        func: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let context = match context {
            // SAFETY: a type check of a live object, with the GIL held.
            Some(c) if unsafe { ffi::PyContext_CheckExact(c.as_ptr()) } != 0 => c,
            Some(c) if !c.is_none(py) => {
                return Err(PyTypeError::new_err(format!(
                    "context must be a contextvars.Context, not {}",
                    c.bind(py).get_type().name()?
                )))
            }
            _ => COPY_CONTEXT
                .import(py, "contextvars", "copy_context")?
                .call0()?
                .unbind(),
        };
        let this = slf.get();
        let callback = Callback { func, context };
        let callback = with_state(slf, |s| {
            if matches!(s.phase, Phase::Settled(_)) {
                return Some(callback);
            }
            s.callbacks.push(callback);
            None
        });
        match callback {
            None => Ok(()),
            Some(callback) => batch::schedule(
                py,
                this.event_loop.bind(py),
                slf.as_any(),
                Callbacks::from_iter([callback]),
            )
            .map(drop),
        }
    }

    /// Removes every registration of `func`; returns how many there were.
    fn remove_done_callback(slf: &Bound<'_, Self>, func: &Bound<'_, PyAny>) -> PyResult<usize> {
        let py = slf.py();
        // Compared outside the guard (`==` may run Python code); callbacks added meanwhile
        // are kept after the survivors.
        let mut callbacks = with_state(slf, |s| std::mem::take(&mut s.callbacks));
        let before = callbacks.len();
        let mut error = None;
        callbacks.retain(|cb| match cb.func.bind(py).eq(func) {
            Ok(equal) => !equal,
            Err(e) => {
                error.get_or_insert(e);
                true
            }
        });
        let removed = before - callbacks.len();
        with_state(slf, |s| {
            let added = std::mem::replace(&mut s.callbacks, callbacks);
            for cb in added {
                s.callbacks.push(cb);
            }
        });
        match error {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }

    /// Stops waiting: the request leaves the queue (permits handed over at this instant
    /// are passed on) and the waiting task gets `CancelledError`. False once settled.
    #[pyo3(signature = (msg=None))]
    fn cancel(slf: &Bound<'_, Self>, msg: Option<Py<PyAny>>) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        let phase = with_state(slf, |s| match &s.phase {
            Phase::Settled(_) => None,
            Phase::Idle => Some(None),
            Phase::Queued(ticket) => Some(Some(Arc::clone(ticket))),
        });
        let Some(ticket) = phase else {
            return Ok(false);
        };
        let Some(ticket) = ticket else {
            Self::settle(slf, End::Cancelled(msg))?;
            return Ok(true);
        };
        let (outcome, wakers) = this.withdraw(&ticket, false);
        Self::settle(slf, End::Cancelled(msg))?;
        recycle(ticket);
        wake_all(py, wakers)?;
        if outcome == Outcome::Granted {
            this.pass_on(py)?; // handed over as it was cancelled: pass it on
        }
        Ok(true)
    }

    fn cancelled(slf: &Bound<'_, Self>) -> bool {
        with_state(slf, |s| {
            matches!(s.phase, Phase::Settled(End::Cancelled(_)))
        })
    }

    fn done(slf: &Bound<'_, Self>) -> bool {
        with_state(slf, |s| matches!(s.phase, Phase::Settled(_)))
    }

    fn result(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::outcome(slf)
    }

    fn exception(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let py = slf.py();
        let (settled, cancelled) = with_state(slf, |s| match &s.phase {
            Phase::Idle | Phase::Queued(_) => (false, None),
            Phase::Settled(End::Cancelled(msg)) => {
                (true, Some(msg.as_ref().map(|m| m.clone_ref(py))))
            }
            Phase::Settled(_) => (true, None),
        });
        if !settled {
            return Err(errors::invalid_state(py, "Exception is not set."));
        }
        if let Some(msg) = cancelled {
            return Err(errors::cancelled(py, msg.as_ref()));
        }
        Ok(Self::outcome(slf)
            .err()
            .map(|e| e.into_value(py).into_any()))
    }

    /// Settles the waiter from its ticket's outcome (a wake-up from another thread, run on
    /// the loop's thread).
    fn _wake(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::wake(slf)
    }

    /// Same as `result()`: what `PyObject_GetAttrString(waiter, "result")` returns (see
    /// `result_lookup`).
    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::outcome(slf)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> String {
        let state = with_state(slf, |s| match &s.phase {
            Phase::Idle => "not awaited",
            Phase::Queued(_) => "waiting",
            Phase::Settled(End::Granted(_)) => "granted",
            Phase::Settled(End::Closed) => "closed",
            Phase::Settled(End::TooLarge) => "too large",
            Phase::Settled(End::TimedOut) => "timed out",
            Phase::Settled(End::Cancelled(_)) => "cancelled",
        });
        format!("<admission semaphore waiter n={} {state}>", slf.get().n)
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.owner)?;
        visit.call(&self.event_loop)?;
        // SAFETY: the collector's traversal (see `peek_for_gc`).
        let Some(state) = (unsafe { self.state.peek_for_gc() }) else {
            return Ok(());
        };
        for cb in state.callbacks.iter() {
            visit.call(&cb.func)?;
            visit.call(&cb.context)?;
        }
        if let Phase::Settled(End::Cancelled(Some(msg))) = &state.phase {
            visit.call(msg)?;
        }
        Ok(())
    }

    fn __clear__(slf: &Bound<'_, Self>) {
        let callbacks = with_state(slf, |s| std::mem::take(&mut s.callbacks));
        drop(callbacks); // outside the guard: dropping may run finalizers
    }
}

/// Gives the `Waiter` type the `result` shortcut (see `result_lookup`); called once, from
/// the module's init, before any waiter exists.
pub(super) fn install_result_shortcut(py: Python<'_>) {
    result_lookup::install(&py.get_type::<Waiter>());
}

/// Counts asyncio's lookups of `result` by C string on waiters from now on (`True`), or stops
/// counting (`False`); returns the lookups counted since counting started. For the test that
/// checks the Task still looks `result` up that way (`result_lookup`); single-threaded use only.
#[pyfunction]
pub(crate) fn _count_result_lookups(py: Python<'_>, counting: bool) -> u64 {
    result_lookup::count_lookups(&py.get_type::<Waiter>(), counting)
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // Granted, but the coroutine never resumed to see it (its task was destroyed, or
        // its loop closed first): the permits go back rather than leak.
        let state = self.state.get_mut();
        if !state.consumed && matches!(state.phase, Phase::Settled(End::Granted(_))) {
            Python::attach(|py| {
                if let Err(e) = self.pass_on(py) {
                    // Nobody to raise to: reported as `sys.unraisablehook` reports it, with
                    // what failed in place of the object (this one is being destroyed).
                    let context = PyString::new(py, DROPPED_GRANT);
                    e.write_unraisable(py, Some(context.as_any()));
                }
            });
        }
    }
}

/// What `Drop for Waiter` reports a failure of.
const DROPPED_GRANT: &str =
    "admission: passing on the permits of a semaphore waiter dropped before it took them";
