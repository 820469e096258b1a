//! `GilCell`: mutable state of a frozen pyclass, guarded by the GIL instead of atomics.
//!
//! A non-frozen pyclass checks every borrow with atomic read-modify-writes (PyO3 keeps them
//! atomic for free-threaded builds). A waiting acquisition borrows its waiter about ten times,
//! so those locked instructions were a measurable part of its cost. This extension module
//! refuses to compile for free-threaded CPython (`lib.rs`), and declares `gil_used = true`;
//! holding a `Python<'_>` token therefore means holding the GIL, and the GIL alone
//! serialises every access here. A plain flag catches re-entry (a second `with` on
//! the same cell while the first is running, in this thread or in another one that got the
//! GIL while the first released it): it panics (an exception in Python), never aliases.

use std::cell::{Cell, UnsafeCell};

use pyo3::Python;

pub(crate) struct GilCell<T> {
    value: UnsafeCell<T>,
    busy: Cell<bool>,
}

// SAFETY: every access to `value` and `busy` goes through `with` (or `peek`), which need a
// `Python<'_>` token, i.e. the calling thread holds the GIL (see the module documentation:
// this module only compiles for GIL builds). The GIL is a mutex: accesses from different threads
// are serialised and ordered by its release/acquire, so there is no data race, and `busy`
// rules out two `&mut T` at once. `T: Send` because the value may be used from any thread
// that holds the GIL.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self {
            value: UnsafeCell::new(value),
            busy: Cell::new(false),
        }
    }

    /// Runs `f` with exclusive access to the value. `f` must not call into Python (nothing
    /// here can re-enter then); if it does and that re-enters, the inner call panics.
    #[inline]
    pub(crate) fn with<R>(&self, _py: Python<'_>, f: impl FnOnce(&mut T) -> R) -> R {
        assert!(!self.busy.replace(true), "GilCell re-entered");
        struct Reset<'a>(&'a Cell<bool>);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        let _reset = Reset(&self.busy);
        // SAFETY: `busy` was false and is now true until `_reset` drops, so this is the only
        // reference to the value (see the `Sync` proof for other threads).
        f(unsafe { &mut *self.value.get() })
    }

    /// `with`, or `None` if a `with` on this cell is running (re-entry).
    #[inline]
    pub(crate) fn try_with<R>(&self, py: Python<'_>, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        (!self.busy.get()).then(|| self.with(py, f))
    }

    /// Exclusive access through `&mut self` (no other reference can exist).
    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    /// Shared access for the garbage collector's `tp_traverse`, which runs with the GIL held
    /// but gets no token. `None` while a `with` is running: skipping references there only
    /// makes the collector keep objects alive, never free them early.
    ///
    /// # Safety
    /// The calling thread holds the GIL, and no Python code runs while the reference is used.
    pub(crate) unsafe fn peek_for_gc(&self) -> Option<&T> {
        if self.busy.get() {
            return None;
        }
        // SAFETY: no `with` is running (`busy` is false) and the caller holds the GIL, so no
        // `&mut T` exists, and none can start while the reference is used: that needs the
        // GIL, which the caller keeps (it runs no Python code meanwhile).
        Some(unsafe { &*self.value.get() })
    }
}
