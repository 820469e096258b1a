//! `CriticalCell`: the mutable state of a frozen pyclass, guarded by its object's critical
//! section.
//!
//! A non-frozen pyclass checks every borrow with atomic read-modify-writes (PyO3 keeps them
//! atomic for free-threaded builds). A waiting acquisition touches its waiter's state about
//! ten times, so those locked instructions were a measurable part of its cost. Here the state
//! of a frozen class sits in a `CriticalCell`, reached only through [`with_state`], which
//! enters the owning object's critical section (`Py_BEGIN_CRITICAL_SECTION`): on a
//! free-threaded CPython that locks the object's own mutex; with the GIL it is nothing at all,
//! and the GIL, which the caller holds, serialises the accesses. Either way one thread at a
//! time reaches the state, for the same cost as before with the GIL.
//!
//! A critical section is given up while its thread blocks inside it (on a free-threaded
//! build), as the GIL is while a thread waits for it. The closures given to [`with_state`]
//! therefore must not call into Python (nothing in them may run Python code, drop the last
//! reference to an object, or block); a flag catches a second entry while one is running (in
//! this thread, or in another one that got in while the first was given up): it panics (an
//! exception in Python), and never hands out a second `&mut`.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::pyclass::boolean_struct::True;
use pyo3::sync::critical_section::with_critical_section;
use pyo3::{Bound, PyClass};

pub(crate) struct CriticalCell<T> {
    value: UnsafeCell<T>,
    /// A `with_state` on this cell is running. Read and written only inside the owner's
    /// critical section (or by the garbage collector, which runs alone): relaxed loads and
    /// stores suffice, and they compile to plain moves, as a `Cell` would.
    busy: AtomicBool,
}

// SAFETY: the value is reached only through `with_state`, inside the critical section of the
// object holding the cell (`Guarded::cell` returns one of its own fields), and only while
// `busy` was false: on a free-threaded build the object's mutex orders the accesses of
// different threads, and with the GIL the GIL does (a `Bound` proves it is held). `busy` rules
// out two `&mut T` at once even where the critical section was given up. `peek_for_gc` reads
// it while the collector runs alone. `T: Send` because any thread may be the one inside.
unsafe impl<T: Send> Sync for CriticalCell<T> {}

/// A frozen pyclass with its mutable state in a [`CriticalCell`].
pub(crate) trait Guarded: PyClass<Frozen = True> + Sync {
    type State;
    /// The cell: a field of `self` (its critical section is `self`'s).
    fn cell(&self) -> &CriticalCell<Self::State>;
}

impl<T> CriticalCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self {
            value: UnsafeCell::new(value),
            busy: AtomicBool::new(false),
        }
    }

    /// Exclusive access through `&mut self` (no other reference can exist).
    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    /// Shared access for the garbage collector's `tp_traverse`, which gets no token. `None`
    /// while a `with_state` is running: skipping references there only makes the collector
    /// keep objects alive, never free them early.
    ///
    /// # Safety
    /// Called by the collector's traversal: the GIL is held, or (free-threaded) every other
    /// thread is stopped; and no Python code runs while the reference is used.
    pub(crate) unsafe fn peek_for_gc(&self) -> Option<&T> {
        if self.busy.load(Ordering::Relaxed) {
            return None;
        }
        // SAFETY: no `with_state` is running (`busy` is false), and none can start while the
        // reference is used (the caller's contract: nothing else runs meanwhile).
        Some(unsafe { &*self.value.get() })
    }
}

/// Runs `f` with exclusive access to `obj`'s state, inside `obj`'s critical section. `f`
/// must not call into Python (see the module documentation); if it does and that enters the
/// state again, the inner call panics.
#[inline(always)]
pub(crate) fn with_state<O: Guarded, R>(
    obj: &Bound<'_, O>,
    f: impl FnOnce(&mut O::State) -> R,
) -> R {
    let cell = obj.get().cell();
    with_critical_section(obj.as_any(), || {
        assert!(
            !cell.busy.load(Ordering::Relaxed),
            "a native object's state was entered twice at once"
        );
        // SAFETY: in `obj`'s critical section, and `busy` is false.
        unsafe { cell.enter(f) }
    })
}

/// [`with_state`], or `None` if a `with_state` on `obj` is running (re-entry).
#[inline(always)]
pub(crate) fn try_with_state<O: Guarded, R>(
    obj: &Bound<'_, O>,
    f: impl FnOnce(&mut O::State) -> R,
) -> Option<R> {
    let cell = obj.get().cell();
    with_critical_section(obj.as_any(), || {
        // SAFETY: in `obj`'s critical section, and `busy` is false.
        (!cell.busy.load(Ordering::Relaxed)).then(|| unsafe { cell.enter(f) })
    })
}

impl<T> CriticalCell<T> {
    /// Runs `f` on the value, with `busy` set meanwhile.
    ///
    /// # Safety
    /// Called inside the critical section of the object holding the cell, with `busy` false.
    #[inline(always)]
    unsafe fn enter<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        struct Reset<'a>(&'a AtomicBool);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Relaxed);
            }
        }
        self.busy.store(true, Ordering::Relaxed);
        let _reset = Reset(&self.busy);
        // SAFETY: `busy` was false and is true until `_reset` drops, and every entry checks it
        // inside the same critical section: this is the only reference to the value (see the
        // `Sync` proof).
        f(unsafe { &mut *self.value.get() })
    }
}
