//! Maps core errors onto the exception family defined in `admission.errors`.
//!
//! The exception classes live in Python (so they are ordinary, documented, picklable classes
//! with attributes); they are imported once and cached.

use admission_core::{AcquireError, ConfigError, SemaphoreError};
use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

static CAPACITY_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static CLOSED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static ACQUIRE_TIMEOUT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static CANCELLED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static INVALID_STATE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn raise<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyErr {
    raise_from(py, cell, "admission.errors", name, args)
}

fn raise_from<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    module: &str,
    name: &str,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyErr {
    match cell.import(py, module, name) {
        Ok(cls) => match cls.call1(args) {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

pub fn config(err: ConfigError) -> PyErr {
    PyValueError::new_err(err.message)
}

pub fn acquire(py: Python<'_>, err: AcquireError) -> PyErr {
    match err {
        AcquireError::Capacity { cost, capacity } => {
            raise(py, &CAPACITY_ERROR, "CapacityError", (cost, capacity))
        }
        // Callers turn deadline misses into `AcquireTimeout` with their own timeout.
        AcquireError::WouldExceedDeadline { .. } => PyValueError::new_err(err.to_string()),
        AcquireError::ClockOutOfRange { .. } => PyOverflowError::new_err(err.to_string()),
    }
}

pub fn semaphore(py: Python<'_>, err: SemaphoreError) -> PyErr {
    match err {
        SemaphoreError::Closed => raise(py, &CLOSED, "Closed", ("the semaphore is closed",)),
        SemaphoreError::Capacity { n, limit } => {
            raise(py, &CAPACITY_ERROR, "CapacityError", (n, limit))
        }
        SemaphoreError::OverRelease { .. } | SemaphoreError::BadLimit { .. } => {
            PyValueError::new_err(err.to_string())
        }
    }
}

/// A semaphore waiter woken by `close()`.
pub fn closed_while_waiting(py: Python<'_>) -> PyErr {
    raise(
        py,
        &CLOSED,
        "Closed",
        ("the semaphore was closed while waiting",),
    )
}

/// A waiter not admitted within `timeout` seconds (the wait depended on other holders).
pub fn acquire_timeout(py: Python<'_>, timeout: f64) -> PyErr {
    raise(py, &ACQUIRE_TIMEOUT, "AcquireTimeout", (timeout,))
}

/// `AcquireTimeout` for a request known at once to need `needed` seconds, over its timeout.
pub fn acquire_timeout_needed(py: Python<'_>, timeout: f64, needed: f64) -> PyErr {
    raise(py, &ACQUIRE_TIMEOUT, "AcquireTimeout", (timeout, needed))
}

/// `asyncio.CancelledError`, with the message given to `cancel(msg)` if any.
pub fn cancelled(py: Python<'_>, msg: Option<&Py<PyAny>>) -> PyErr {
    match msg {
        Some(msg) => raise_from(py, &CANCELLED, "asyncio", "CancelledError", (msg,)),
        None => raise_from(py, &CANCELLED, "asyncio", "CancelledError", ()),
    }
}

/// `asyncio.InvalidStateError`: a future's result asked for before it is done.
pub fn invalid_state(py: Python<'_>, message: &str) -> PyErr {
    raise_from(
        py,
        &INVALID_STATE,
        "asyncio",
        "InvalidStateError",
        (message,),
    )
}
