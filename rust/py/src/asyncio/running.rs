//! `running_loop()`: the asyncio loop running in this thread, without a system call.
//!
//! On CPython 3.10 and 3.11, `asyncio._get_running_loop()` calls `getpid()` on every call,
//! to notice a fork. That system call (about 0.2 µs here) was the largest single cost of a
//! waiting acquisition. asyncio keeps the running loop in the thread's state dict as a
//! holder object, and replaces the holder each time the running loop is set (started,
//! stopped, another loop). So the answer is cached in the same dict, next to the holder it
//! was computed for: while the holder is the same object, so is the answer. The cache owns
//! the holder, so its address cannot be reused by a new holder while cached. In a forked
//! child, asyncio says no loop runs although the holder is the parent's: the cache is
//! dropped there (`os.register_at_fork`). From 3.12 on, asyncio's own lookup makes no
//! system call, and is called directly.
//!
//! A loop stays referenced by the cache after it stops, until this thread next waits on
//! another loop (or ends): one loop object per thread at most.

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple};

static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// asyncio's own key for the running-loop holder (its C accelerator, 3.7 to 3.11).
const HOLDER_KEY: &str = "__asyncio_running_event_loop__";
/// Our key: `(holder, loop or None)`.
const CACHE_KEY: &str = "__admission_running_loop__";

/// The asyncio (or uvloop) loop running in this thread; None on trio or outside any loop.
pub(crate) fn running_loop(py: Python<'_>) -> PyResult<Option<Bound<'_, PyAny>>> {
    // Each build targets one CPython version (`Py_3_12` comes from pyo3-build-config).
    if cfg!(Py_3_12) {
        return lookup(py); // no system call from 3.12 on
    }
    let Some(dict) = thread_dict(py) else {
        return lookup(py);
    };
    // No holder: asyncio's pure-Python fallback is in use (or no loop was ever set here).
    let Some(holder) = dict.get_item(intern!(py, HOLDER_KEY))? else {
        return lookup(py);
    };
    if let Some(cached) = dict.get_item(intern!(py, CACHE_KEY))? {
        if let Ok(cached) = cached.cast::<PyTuple>() {
            if cached.len() == 2 && cached.get_item(0)?.is(&holder) {
                let event_loop = cached.get_item(1)?;
                return Ok((!event_loop.is_none()).then_some(event_loop));
            }
        }
    }
    let event_loop = lookup(py)?;
    let answer = event_loop
        .as_ref()
        .map_or_else(|| py.None().into_bound(py), Bound::clone);
    dict.set_item(intern!(py, CACHE_KEY), (holder, answer))?;
    Ok(event_loop)
}

/// asyncio's lookup: `None` instead of an error when no loop runs.
fn lookup(py: Python<'_>) -> PyResult<Option<Bound<'_, PyAny>>> {
    let get_loop = GET_RUNNING_LOOP.import(py, "asyncio", "_get_running_loop")?;
    let event_loop = get_loop.call0()?;
    Ok((!event_loop.is_none()).then_some(event_loop))
}

/// This thread's state dict (where asyncio keeps the running-loop holder).
fn thread_dict(py: Python<'_>) -> Option<Bound<'_, PyDict>> {
    // SAFETY: the GIL is held (`py`), so this thread has a thread state and the call is
    // allowed. The result is NULL (no error set) or a borrowed reference to that state's
    // dict, which lives as long as the thread state, i.e. beyond this call; taking our own
    // reference at once makes it an owned `Bound`. The dict is a plain `dict`.
    unsafe {
        let dict = ffi::PyThreadState_GetDict();
        if dict.is_null() {
            return None;
        }
        Some(Bound::from_borrowed_ptr(py, dict).cast_into_unchecked::<PyDict>())
    }
}

/// Forgets this thread's cached answer (after a fork, in the child: the only thread left).
#[pyfunction]
pub(crate) fn _forget_running_loop(py: Python<'_>) -> PyResult<()> {
    if let Some(dict) = thread_dict(py) {
        if dict.contains(intern!(py, CACHE_KEY))? {
            dict.del_item(intern!(py, CACHE_KEY))?;
        }
    }
    Ok(())
}

/// Registers `_forget_running_loop` to run in forked children (module initialisation).
pub(crate) fn register_fork_hook(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let os = py.import("os")?;
    if !os.hasattr("register_at_fork")? {
        return Ok(()); // no fork on this platform
    }
    let hook = m.getattr("_forget_running_loop")?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("after_in_child", hook)?;
    os.call_method("register_at_fork", (), Some(&kwargs))
        .map(drop)
        .map_err(|e| PyRuntimeError::new_err(format!("os.register_at_fork failed: {e}")))
}
