//! `Ready`: the awaitable returned when admission is immediate.
//!
//! `await` on it finishes at once with `None`: `__await__` returns the object itself and its
//! `__next__` returns NULL without setting an exception, which CPython reads as
//! `StopIteration(None)` without creating an exception object. No Task, Future or coroutine
//! frame is created and the awaiting task never suspends. One shared instance serves every
//! call, so the fast path allocates nothing.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// An already-completed awaitable (the result of an immediate admission).
#[pyclass(frozen, module = "admission._native")]
pub struct Ready;

#[pymethods]
impl Ready {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(&self) -> Option<()> {
        None
    }

    /// Generator protocol, for callers that drive awaitables with `send`.
    fn send(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let _ = value;
        Err(pyo3::exceptions::PyStopIteration::new_err(()))
    }

    fn __repr__(&self) -> &'static str {
        "<admission ready>"
    }
}

static READY: PyOnceLock<Py<Ready>> = PyOnceLock::new();

/// The shared `Ready` instance.
#[inline]
pub fn ready(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let obj = READY.get_or_try_init(py, || Py::new(py, Ready))?;
    Ok(obj.clone_ref(py).into_any())
}
