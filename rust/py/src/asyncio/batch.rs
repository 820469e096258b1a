//! Running the done-callbacks of native waiters: one loop handle per wave of wake-ups.
//!
//! An `asyncio.Future` schedules each done-callback with its own `loop.call_soon`, which
//! builds a `Handle` in Python: about a microsecond per woken task, most of the cost of a
//! contended semaphore. A release often wakes several waiters in one turn of the loop (each
//! holder releasing in turn), so the callbacks are collected in a `WakeBatch` instead, and
//! the batch is scheduled once: the first wake-up of a turn pays one `call_soon`, the others
//! an append. Each callback still runs in its own context (the task's, as `Handle` runs it),
//! in the order the waiters were woken, with errors reported to the loop's exception handler.
//!
//! The open batch is per thread (a thread runs one loop at a time) and remembers its loop:
//! a wake-up for another loop starts a new batch. The thread only has a weak reference to it;
//! the loop's ready queue owns it, so a batch left on a loop that is closed without running
//! it is freed with that queue (and the permits of the waiters in it are given back). A batch detaches itself before it runs, so
//! wake-ups caused by the callbacks it runs go to the next turn, as with `call_soon`: a
//! chain of waiters cannot monopolise one turn of the loop.

use std::cell::RefCell;

use admission_core::Wakers;
use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyWeakrefMethods, PyWeakrefReference};

use crate::critical::{with_state, CriticalCell, Guarded};

/// A done-callback, its context and the future it is called with.
pub(crate) struct Callback {
    pub func: Py<PyAny>,
    pub context: Py<PyAny>,
}

/// A future's done-callbacks, in registration order. A task registers exactly one, and
/// `Wakers` keeps the first inline: no allocation, and no separate cache line to fetch when
/// it wakes.
pub(crate) type Callbacks = Wakers<Callback>;

/// Room for the wake-ups of a typical turn (one per holder releasing), so that a batch
/// rarely grows.
const BATCH_CAPACITY: usize = 16;

/// Callbacks, each with the future it is called with.
pub(crate) type Entries = Vec<(Callback, Py<PyAny>)>;

/// Callbacks to run in the next turn of one event loop (scheduled there by `call_soon`).
#[pyclass(frozen, weakref, module = "admission._native")]
pub struct WakeBatch {
    event_loop: Py<PyAny>,
    entries: CriticalCell<Entries>,
}

impl Guarded for WakeBatch {
    type State = Entries;
    fn cell(&self) -> &CriticalCell<Entries> {
        &self.entries
    }
}

thread_local! {
    /// The batch that this thread's wake-ups join, until it starts running.
    static OPEN: RefCell<Option<Py<PyWeakrefReference>>> = const { RefCell::new(None) };
}

/// Schedules `callbacks`, each to be called with `future`, on `event_loop`, which runs in
/// this thread. A closed loop has nothing left to wake: they are dropped, and the answer is
/// false (the caller gives back what the callbacks would have been told of).
pub(crate) fn schedule(
    py: Python<'_>,
    event_loop: &Bound<'_, PyAny>,
    future: &Bound<'_, PyAny>,
    callbacks: Callbacks,
) -> PyResult<bool> {
    if callbacks.is_empty() {
        return Ok(true);
    }
    let entries = callbacks
        .into_iter()
        .map(|cb| (cb, future.clone().unbind()));
    // No borrow of OPEN is held while Python code runs (`call_soon` is Python).
    if let Some(batch) = open_batch(py)? {
        if batch.get().event_loop.bind(py).is(event_loop) {
            with_state(&batch, |batch| batch.extend(entries));
            return Ok(true);
        }
    }
    let mut batch_entries = Vec::with_capacity(BATCH_CAPACITY);
    batch_entries.extend(entries);
    match post(event_loop, batch_entries) {
        Ok(batch) => {
            let weak = PyWeakrefReference::new(batch.bind(py))?.unbind();
            OPEN.with(|o| *o.borrow_mut() = Some(weak));
            Ok(true)
        }
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyRuntimeError>(py) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A new batch of `entries`, scheduled with `event_loop.call_soon` (which raises
/// `RuntimeError` if the loop is closed).
fn post(event_loop: &Bound<'_, PyAny>, entries: Entries) -> PyResult<Py<WakeBatch>> {
    let py = event_loop.py();
    let batch = Py::new(
        py,
        WakeBatch {
            event_loop: event_loop.clone().unbind(),
            entries: CriticalCell::new(entries),
        },
    )?;
    event_loop.call_method1(intern!(py, "call_soon"), (batch.clone_ref(py),))?;
    Ok(batch)
}

/// This thread's open batch, if it is still alive.
fn open_batch(py: Python<'_>) -> PyResult<Option<Bound<'_, WakeBatch>>> {
    let weak = OPEN.with(|o| o.borrow().as_ref().map(|w| w.clone_ref(py)));
    match weak {
        Some(weak) => weak.bind(py).upgrade_as::<WakeBatch>(),
        None => Ok(None),
    }
}

#[pymethods]
impl WakeBatch {
    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if open_batch(py)?.is_some_and(|b| b.is(slf)) {
            OPEN.with(|o| *o.borrow_mut() = None);
        }
        let entries = with_state(slf, std::mem::take);
        let event_loop = slf.get().event_loop.bind(py);
        let mut entries = entries.into_iter();
        while let Some((cb, future)) = entries.next() {
            let Err(err) = run_in_context(py, &cb, &future) else {
                continue;
            };
            if err.is_instance_of::<PyKeyboardInterrupt>(py)
                || err.is_instance_of::<PySystemExit>(py)
            {
                // Propagates, as from a `Handle`; the callbacks not run yet go to the next
                // turn instead of being lost.
                let rest: Vec<_> = entries.collect();
                if !rest.is_empty() {
                    post(event_loop, rest)?;
                }
                return Err(err);
            }
            report(py, event_loop, &cb.func, err)?;
        }
        Ok(())
    }

    fn __repr__(slf: &Bound<'_, Self>) -> String {
        let n = with_state(slf, |entries| entries.len());
        format!("<admission wake batch of {n} callbacks>")
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.event_loop)?;
        // SAFETY: the collector's traversal (see `peek_for_gc`).
        for (cb, future) in unsafe { self.entries.peek_for_gc() }.into_iter().flatten() {
            visit.call(&cb.func)?;
            visit.call(&cb.context)?;
            visit.call(future)?;
        }
        Ok(())
    }

    fn __clear__(slf: &Bound<'_, Self>) {
        let entries = with_state(slf, std::mem::take);
        drop(entries); // outside the guard: dropping may run finalizers
    }
}

/// `cb.context.run(cb.func, future)`, without looking up and binding `run`.
fn run_in_context(py: Python<'_>, cb: &Callback, future: &Py<PyAny>) -> PyResult<()> {
    let context = cb.context.as_ptr();
    // SAFETY: we hold the GIL and every pointer is a live object we hold a reference to.
    // `add_done_callback` only accepts a `contextvars.Context` (`PyContext_Enter` checks it
    // again). The context is left whatever the call did, as `Context.run` does: entering
    // succeeded, so it is this thread's current context again once the call has returned.
    unsafe {
        if ffi::PyContext_Enter(context) < 0 {
            return Err(PyErr::fetch(py));
        }
        let result = ffi::PyObject_CallOneArg(cb.func.as_ptr(), future.as_ptr());
        let called = Bound::from_owned_ptr_or_err(py, result).map(drop);
        if ffi::PyContext_Exit(context) < 0 {
            return Err(PyErr::fetch(py));
        }
        called
    }
}

/// What `Handle._run` does with a callback's exception: the loop's exception handler.
fn report(
    py: Python<'_>,
    event_loop: &Bound<'_, PyAny>,
    func: &Py<PyAny>,
    err: PyErr,
) -> PyResult<()> {
    let context = PyDict::new(py);
    let func_repr = func
        .bind(py)
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_default();
    context.set_item("message", format!("Exception in callback {func_repr}"))?;
    context.set_item("exception", err.value(py))?;
    event_loop.call_method1(intern!(py, "call_exception_handler"), (context,))?;
    Ok(())
}
