//! Maps core errors onto the exception family defined in `admission.errors`.
//!
//! The exception classes live in Python (so they are ordinary, documented, picklable classes
//! with attributes); they are imported once and cached.

use admission_core::{AcquireError, ConfigError, SemaphoreError};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

static CAPACITY_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static CLOSED: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn raise<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyErr {
    match cell.import(py, "admission.errors", name) {
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
        // Callers turn deadline misses into a result, never an exception from here.
        AcquireError::WouldExceedDeadline { .. } => PyValueError::new_err(err.to_string()),
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
