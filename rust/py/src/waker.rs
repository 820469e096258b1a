//! `FutureWaker`: wakes an asyncio waiter by resolving its future, from any thread.
//!
//! A semaphore is released by whoever holds it: a task on the waiter's loop (the common
//! case: resolve the future directly, no Python frame in between) or another thread or loop
//! (hop onto the waiter's loop with `call_soon_threadsafe`, then resolve it there).

use std::sync::{Arc, OnceLock};
use std::thread::{self, ThreadId};

use admission_core::{Outcome, Ticket as CoreTicket};
use pyo3::intern;
use pyo3::prelude::*;

use crate::semaphore::outcome_str;

/// Resolves `future` with `True` on its loop's thread, if it is still pending. When made by
/// `Semaphore._enqueue_future` it is also the waiter's ticket (one object per waiter).
#[pyclass(frozen, module = "admission._native")]
pub struct FutureWaker {
    event_loop: Py<PyAny>,
    future: Py<PyAny>,
    thread: ThreadId,
    /// Set once the request is queued.
    pub(crate) ticket: OnceLock<Arc<CoreTicket>>,
}

impl FutureWaker {
    pub(crate) fn create(event_loop: Py<PyAny>, future: Py<PyAny>) -> Self {
        Self {
            event_loop,
            future,
            thread: thread::current().id(),
            ticket: OnceLock::new(),
        }
    }
}

#[pymethods]
impl FutureWaker {
    /// Made on the loop's thread, by the task that will await `future`.
    #[new]
    fn new(event_loop: Py<PyAny>, future: Py<PyAny>) -> Self {
        Self::create(event_loop, future)
    }

    /// The queued request's outcome (see `Ticket.outcome`); `"waiting"` until settled.
    #[getter]
    fn outcome<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyString> {
        let outcome = self.ticket.get().map_or(Outcome::Waiting, |t| t.outcome());
        outcome_str(py, outcome)
    }

    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if thread::current().id() != this.thread {
            // Runs `self()` again on the loop's thread. A closed loop raises RuntimeError:
            // its tasks are gone, and nobody is left to wake.
            let scheduled = this
                .event_loop
                .bind(py)
                .call_method1(intern!(py, "call_soon_threadsafe"), (slf,));
            return match scheduled {
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyRuntimeError>(py) => Ok(()),
                other => other.map(drop),
            };
        }
        let future = this.future.bind(py);
        if !future.call_method0(intern!(py, "done"))?.is_truthy()? {
            future.call_method1(intern!(py, "set_result"), (true,))?;
        }
        Ok(())
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.event_loop)?;
        visit.call(&self.future)
    }
}
