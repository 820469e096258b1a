//! The `result` shortcut: asyncio's Task finds a waiter's `result` without a string or a
//! bound method.
//!
//! On every wake-up, the Task's C code calls `PyObject_CallMethod(fut, "result", NULL)` on the
//! future it waited for (CPython 3.10 to 3.14, `task_wakeup` in `Modules/_asynciomodule.c`),
//! which looks `result` up by C string: `PyObject_GetAttrString`. By the generic path that
//! lookup makes a new `str`, hashes it, misses the type's attribute cache (keyed by the
//! string's address), walks the MRO, binds a method object and frees both: about a thousand
//! instructions per wait. `PyObject_GetAttrString` asks the type's `tp_getattr` slot first,
//! when it has one; [`install`] gives the waiter's type a slot that answers `"result"` with the
//! object itself, whose call (`__call__`) does what `result()` does. Every other name goes the
//! generic way.
//!
//! # Soundness
//! - The slot is written once, at module initialisation, on a heap type this extension made,
//!   before any instance exists, with the GIL held (on a free-threaded build, before any other
//!   thread can reach the type): nothing reads it while it is written. `PyType_Modified` then
//!   drops what CPython cached about the type. [`count_lookups`] rewrites it later, for tests
//!   only, with the same requirement: no waiter in use by another thread meanwhile.
//! - Lookups by `str` (`getattr(waiter, "result")`, `waiter.result`, `PyObject_GetAttr`) go to
//!   `tp_getattro`, which stays `PyObject_GenericGetAttr` and takes precedence whenever it is
//!   set: their behaviour does not change. Only C-string lookups reach `tp_getattr`.
//! - CPython calls the slot with a live object of the type (or of a subtype: the types it is
//!   installed on are final), a NUL-terminated name, and the GIL held or the object's critical
//!   section entered; the slot returns a new reference, or NULL with an exception set (from
//!   the generic lookup), as the slot's contract requires. It cannot unwind: nothing in it
//!   panics.
//! - The answer is the object instead of a bound method: correct only because the type's
//!   `__call__` is its `result()`. A type [`install`] is used on must keep that true.
//!
//! If CPython stops looking `result` up by C string, nothing breaks: the slot is merely no
//! longer reached and the wake-ups take the generic path, slower. The unit test
//! `test_asyncio_task_looks_result_up_by_c_string` counts the slot's calls (with
//! [`count_lookups`]) and fails then, so the shortcut is removed or moved instead of silently
//! kept.

use std::ffi::{c_char, CStr};
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// Gives `ty` the `result` shortcut (see the module documentation for what it requires).
pub(super) fn install(ty: &Bound<'_, PyType>) {
    set_slot(ty, getattr_string);
}

/// Counts the shortcut's lookups of `result` from now on (`counting`), or stops counting.
/// Returns the lookups counted since counting last started. For tests only: it rewrites the
/// slot, so no waiter may be in use by another thread meanwhile.
pub(super) fn count_lookups(ty: &Bound<'_, PyType>, counting: bool) -> u64 {
    let counted = COUNTED.swap(0, Ordering::Relaxed);
    set_slot(
        ty,
        if counting {
            getattr_string_counting
        } else {
            getattr_string
        },
    );
    counted
}

static COUNTED: AtomicU64 = AtomicU64::new(0);

type Getattr = unsafe extern "C" fn(*mut ffi::PyObject, *mut c_char) -> *mut ffi::PyObject;

fn set_slot(ty: &Bound<'_, PyType>, slot: Getattr) {
    // SAFETY: `ty` is a live heap type of this extension (a `Bound` proves it is live and that
    // the thread is attached); see the module documentation for why nothing reads the slot
    // while it is written. `slot` has the slot's signature and cannot unwind.
    unsafe {
        (*ty.as_type_ptr()).tp_getattr = Some(slot);
        ffi::PyType_Modified(ty.as_type_ptr());
    }
}

/// The slot: `"result"` is the object itself, any other name the generic lookup.
unsafe extern "C" fn getattr_string(
    obj: *mut ffi::PyObject,
    name: *mut c_char,
) -> *mut ffi::PyObject {
    // SAFETY: CPython's contract for the slot (see the module documentation): a live object,
    // a NUL-terminated name, the thread attached; the new reference returned is the caller's.
    unsafe {
        if CStr::from_ptr(name).to_bytes() == b"result" {
            ffi::Py_INCREF(obj);
            return obj;
        }
        let name = ffi::PyUnicode_FromString(name);
        if name.is_null() {
            return std::ptr::null_mut();
        }
        let attr = ffi::PyObject_GetAttr(obj, name); // by `tp_getattro`: the generic lookup
        ffi::Py_DECREF(name);
        attr
    }
}

/// `getattr_string`, counting the lookups of `"result"` (installed by [`count_lookups`]).
unsafe extern "C" fn getattr_string_counting(
    obj: *mut ffi::PyObject,
    name: *mut c_char,
) -> *mut ffi::PyObject {
    // SAFETY: as for `getattr_string`, whose contract this one has.
    unsafe {
        if CStr::from_ptr(name).to_bytes() == b"result" {
            COUNTED.fetch_add(1, Ordering::Relaxed);
        }
        getattr_string(obj, name)
    }
}
