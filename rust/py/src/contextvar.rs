//! `contextvars.ContextVar` reads and writes through the C API, without a method call each.

use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;

/// The value of `var` in the current context, or `None` if it has none.
#[inline]
pub fn get<'py>(var: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = var.py();
    let mut value = ptr::null_mut();
    // SAFETY: the GIL is held (we have a `Bound`); `var` is a live object (CPython checks that
    // it is a ContextVar and raises TypeError otherwise). With a NULL default, `value` is set
    // to a new reference, or left NULL when the variable has no value; -1 means an error.
    let rc = unsafe { ffi::PyContextVar_Get(var.as_ptr(), ptr::null_mut(), &mut value) };
    if rc < 0 {
        return Err(PyErr::fetch(py));
    }
    if value.is_null() {
        return Ok(None);
    }
    // SAFETY: `value` is a new (owned) reference, not NULL.
    Ok(Some(unsafe { Bound::from_owned_ptr(py, value) }))
}

/// Sets `var` to `value` in the current context.
#[inline]
pub fn set(var: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = var.py();
    // SAFETY: the GIL is held; both objects are live. The result is a new reference to a
    // Token (which we drop at once), or NULL with an exception set.
    let token = unsafe { ffi::PyContextVar_Set(var.as_ptr(), value.as_ptr()) };
    if token.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: an owned, non-NULL reference: dropping the Bound releases it.
    drop(unsafe { Bound::from_owned_ptr(py, token) });
    Ok(())
}
