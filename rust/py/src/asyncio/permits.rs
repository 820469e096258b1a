//! `Permits`: a semaphore's state, shared by its Python object and its asyncio waiters.
//!
//! The `Semaphore` binding and each `Waiter` hold it by `Arc`, so the waiter never reaches
//! into the binding: the binding depends on this runtime, not the other way round. A waiter
//! also keeps the semaphore's Python object alive (and visits it for the garbage collector),
//! so the state outlives neither.

use admission_core::semaphore::Semaphore as CoreSemaphore;
use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use super::deadlines::DeadlinesByLoop;

pub(crate) struct Permits {
    /// The permit accounting and FIFO queue; its wakers are the waiters (a native `Waiter`,
    /// or a Python callable for the thread and trio paths).
    pub(crate) core: CoreSemaphore<Py<PyAny>>,
    /// The timeouts of its asyncio waiters, one loop timer per event loop.
    pub(crate) deadlines: DeadlinesByLoop,
}

impl Permits {
    pub(crate) fn new(core: CoreSemaphore<Py<PyAny>>) -> Self {
        Self {
            core,
            deadlines: DeadlinesByLoop::default(),
        }
    }

    /// The garbage collector's traversal of the owner object: the queued wakers and the
    /// deadlines. Never blocks.
    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        let mut result = Ok(());
        self.core.visit_waiters(|w| {
            if result.is_ok() {
                result = visit.call(w);
            }
        });
        result?;
        self.deadlines.traverse(visit)
    }

    /// Drops every waiter and deadline without waking anyone (the owner is being collected).
    pub(crate) fn clear(&self) {
        drop(self.core.abandon_waiters());
        self.deadlines.clear();
    }
}
