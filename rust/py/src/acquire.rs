//! `Acquire`: the awaitable an `acquire(...)` call returns, which decides on its first step.
//!
//! Calling `acquire()` only records the request: nothing is taken until the awaitable runs.
//! So an acquisition that never runs (a forgotten `await`, `asyncio.wait_for(acquire(), 0)`
//! on 3.11, a task cancelled before its first step) holds nothing. The first step is either
//! `__await__` (`await limiter.acquire()`, the usual case) or the first `send`/`__next__`
//! when a Task drives the object itself as its coroutine (`asyncio.create_task(acquire())`:
//! the type is registered as a `collections.abc.Coroutine`, so asyncio accepts it).
//!
//! The first step decides, by the framework running in this thread:
//! - asyncio (and uvloop), or no framework at all (a coroutine driven by hand with `send`):
//!   the owner's native fast path. Admitted at once, the await finishes without suspending
//!   (no Task, no Future, no yield: `__await__` hands back the shared `Ready`); otherwise the
//!   owner's waiting awaitable (the semaphore's native `Waiter`).
//! - trio: the owner's Python slow path `_acquire_slow(n, timeout)`, which makes every call
//!   a checkpoint, as trio requires (`checkpoint_if_cancelled`, then
//!   `cancel_shielded_checkpoint` when admitted at once). trio is looked for only when it is
//!   imported and no asyncio loop runs here.
//!
//! # Entry point for a limiter
//! Implement [`Limiter`] for the limiter's class, then return
//! [`acquire`]`(py, Owner::new(slf, costs), n, timeout)` from its `acquire` method, and
//! [`enter`]`(slf, n, costs, timeout)` (the same decision, made at once) from `__aenter__`. This module names no
//! limiter: the limiters depend on it, not the other way round.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pyo3::exceptions::{PyBaseException, PyRuntimeError, PyStopIteration, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;
use pyo3::PyClass;

use crate::asyncio::{running_loop, Waiter};
use crate::critical::{with_state, CriticalCell, Guarded};
use crate::ready::ready;

/// A limiter an `acquire()` can be for: its class implements this next to its `acquire`.
pub(crate) trait Limiter:
    PyClass<Frozen = pyo3::pyclass::boolean_struct::True> + Sync
{
    /// The `acquire` method's qualified name, for reprs (asyncio's Task shows its
    /// coroutine's).
    const QUALNAME: &'static str;

    /// Admits `n` (or `costs`, one per limiter of an `all_of`) now if the limiter can without
    /// waiting (counted as admitted); `false` if the request must wait. An error refuses it
    /// (and is counted by the limiter).
    fn try_now(&self, py: Python<'_>, n: u64, costs: &[u64]) -> PyResult<bool>;

    /// The awaitable that waits for it on `event_loop` (asyncio), or on trio (`None`).
    fn wait(
        slf: &Bound<'_, Self>,
        n: u64,
        costs: &[u64],
        timeout: Option<f64>,
        event_loop: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>>;
}

/// The limiter an acquisition is for, whatever its class (see [`Limiter`]).
pub(crate) struct Owner {
    limiter: Py<PyAny>,
    /// `Limiter` of the class `limiter` was made from ([`Owner::new`], the one constructor).
    kind: &'static Kind,
    /// An `all_of`'s cost for each of its limiters (empty for a single limiter).
    costs: Vec<u64>,
}

/// A [`Limiter`]'s methods for an object known to be of its class.
struct Kind {
    qualname: &'static str,
    /// # Safety
    /// The object is of the class this `Kind` was made for.
    try_now: unsafe fn(&Bound<'_, PyAny>, u64, &[u64]) -> PyResult<bool>,
    /// # Safety
    /// As for `try_now`.
    #[allow(clippy::type_complexity)]
    wait: unsafe fn(
        &Bound<'_, PyAny>,
        u64,
        &[u64],
        Option<f64>,
        Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>>,
}

struct KindOf<L>(PhantomData<L>);

impl<L: Limiter> KindOf<L> {
    const KIND: Kind = Kind {
        qualname: L::QUALNAME,
        try_now: try_now_of::<L>,
        wait: wait_of::<L>,
    };
}

/// # Safety
/// `limiter` is an `L`.
#[inline(always)]
unsafe fn try_now_of<L: Limiter>(
    limiter: &Bound<'_, PyAny>,
    n: u64,
    costs: &[u64],
) -> PyResult<bool> {
    debug_assert!(limiter.is_instance_of::<L>());
    // SAFETY: the caller's contract.
    let limiter = unsafe { limiter.cast_unchecked::<L>() };
    limiter.get().try_now(limiter.py(), n, costs)
}

/// # Safety
/// `limiter` is an `L`.
unsafe fn wait_of<L: Limiter>(
    limiter: &Bound<'_, PyAny>,
    n: u64,
    costs: &[u64],
    timeout: Option<f64>,
    event_loop: Option<Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    debug_assert!(limiter.is_instance_of::<L>());
    // SAFETY: the caller's contract.
    let limiter = unsafe { limiter.cast_unchecked::<L>() };
    L::wait(limiter, n, costs, timeout, event_loop)
}

impl Owner {
    /// An acquisition for `limiter`; `costs` are an `all_of`'s (else empty).
    pub(crate) fn new<L: Limiter>(limiter: Py<L>, costs: Vec<u64>) -> Self {
        Self {
            limiter: limiter.into_any(),
            kind: &KindOf::<L>::KIND,
            costs,
        }
    }

    /// See [`Limiter::try_now`].
    #[inline(always)]
    fn try_now(&self, py: Python<'_>, n: u64) -> PyResult<bool> {
        // SAFETY: `kind` was made for the class of `limiter` (`Owner::new`; the fields are
        // private to this module, which never changes them).
        unsafe { (self.kind.try_now)(self.limiter.bind(py), n, &self.costs) }
    }

    /// See [`Limiter::wait`].
    fn wait(
        &self,
        py: Python<'_>,
        n: u64,
        timeout: Option<f64>,
        event_loop: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        // SAFETY: as in `try_now`.
        unsafe { (self.kind.wait)(self.limiter.bind(py), n, &self.costs, timeout, event_loop) }
    }

    fn qualname(&self) -> &'static str {
        self.kind.qualname
    }

    fn visit(&self, visit: &pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.limiter)
    }
}

/// The waiting path of an awaitable acquisition that could not be admitted at once, where
/// it is written in Python: the coroutine `limiter._acquire_slow(n, timeout)`.
#[cold]
pub(crate) fn acquire_slow<'py>(
    limiter: &Bound<'py, PyAny>,
    n: impl IntoPyObject<'py>,
    timeout: Option<f64>,
) -> PyResult<Py<PyAny>> {
    let py = limiter.py();
    Ok(limiter
        .call_method1(intern!(py, "_acquire_slow"), (n, timeout))?
        .unbind())
}

/// What the first step decided.
enum First {
    /// Admitted at once: nothing to wait for.
    Admitted,
    /// Wait on (or, on trio, run) this awaitable.
    Wait(Py<PyAny>),
}

/// Set once `trio` has been seen in `sys.modules`.
static TRIO_SEEN: AtomicBool = AtomicBool::new(false);
static ON_TRIO: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Whether trio has been imported in this process. Until it has, `sys.modules` is looked up
/// only when its size changed since the last look: a dict lookup that misses costs about
/// 160 instructions, a tenth of an admission, on every acquisition's fast path. (Importing
/// trio adds dozens of modules; only a program that removes a module and puts a `trio` in
/// its place in one step could hide it, and then its trio tasks would merely not checkpoint
/// on the immediate path.)
#[inline(always)]
fn trio_imported(py: Python<'_>) -> bool {
    if TRIO_SEEN.load(Ordering::Relaxed) {
        return true;
    }
    // SAFETY: the GIL is held. `PyImport_GetModuleDict` returns a borrowed reference to the
    // interpreter's `sys.modules` dict; `PyDict_Size` of a dict cannot fail.
    let modules = unsafe { ffi::PyImport_GetModuleDict() };
    let size = unsafe { ffi::PyDict_Size(modules) } as usize;
    if size == MODULES_SEEN.load(Ordering::Relaxed) {
        return false;
    }
    let key = intern!(py, "trio");
    // SAFETY: as above; `PyDict_GetItem` returns a borrowed reference (or NULL, without an
    // exception) that is only compared with NULL; `key` is a live str.
    let seen = unsafe { !ffi::PyDict_GetItem(modules, key.as_ptr()).is_null() };
    if seen {
        TRIO_SEEN.store(true, Ordering::Relaxed);
    } else {
        MODULES_SEEN.store(size, Ordering::Relaxed);
    }
    seen
}

/// The size of `sys.modules` when trio was last found missing from it.
static MODULES_SEEN: AtomicUsize = AtomicUsize::new(usize::MAX);

/// trio's run context (a `threading.local` holding `task` while a trio task runs here), or
/// `None` if this trio keeps it elsewhere (then `admission._backend.on_trio` asks trio).
static TRIO_CONTEXT: PyOnceLock<Option<Py<PyAny>>> = PyOnceLock::new();

/// Where this thread's dict of trio's run context is kept alive: in the thread state's dict,
/// so exactly as long as the thread state (and the context's own dict for this thread is the
/// same object for that long).
const TRIO_LOCALS_KEY: &str = "__admission_trio_locals__";

thread_local! {
    /// `(thread state id, that thread state's dict of trio's run context)`, the dict kept
    /// alive by the thread state (`TRIO_LOCALS_KEY`). Thread state ids are never reused, so a
    /// matching id means the pointer is live; 0 is never an id.
    static TRIO_LOCALS: Cell<(i64, *mut ffi::PyObject)> =
        const { Cell::new((0, std::ptr::null_mut())) };
}

/// Whether a trio task is running in this thread (trio is imported): what
/// `trio.lowlevel.in_trio_task()` says, without its `hasattr` (an exception when not) and,
/// after the first call in a thread, with one dict lookup.
#[inline(always)]
fn trio_running(py: Python<'_>) -> PyResult<bool> {
    // SAFETY: the GIL is held, so this thread has a thread state.
    let id = unsafe { ffi::PyThreadState_GetID(ffi::PyThreadState_Get()) };
    let (cached, locals) = TRIO_LOCALS.with(Cell::get);
    if cached != id || locals.is_null() {
        return trio_running_slow(py, id);
    }
    let task = intern!(py, "task");
    // SAFETY: `locals` is a dict kept alive by this very thread state (see `TRIO_LOCALS`);
    // the GIL is held; the result is a borrowed reference only compared with NULL, and an
    // exception is set only on error.
    unsafe {
        let found = ffi::PyDict_GetItemWithError(locals, task.as_ptr());
        if found.is_null() && !ffi::PyErr_Occurred().is_null() {
            return Err(PyErr::fetch(py));
        }
        Ok(!found.is_null())
    }
}

#[cold]
fn trio_running_slow(py: Python<'_>, id: i64) -> PyResult<bool> {
    let context = TRIO_CONTEXT.get_or_init(py, || {
        py.import("trio._core._run")
            .and_then(|m| m.getattr("GLOBAL_RUN_CONTEXT"))
            .ok()
            .map(Bound::unbind)
    });
    let locals = context
        .as_ref()
        .and_then(|c| c.bind(py).getattr(intern!(py, "__dict__")).ok())
        .and_then(|d| d.cast_into::<PyDict>().ok());
    let Some(locals) = locals else {
        let on_trio = ON_TRIO.import(py, "admission._backend", "on_trio")?;
        return on_trio.call0()?.is_truthy();
    };
    // SAFETY: the GIL is held; a borrowed reference to this thread state's dict, or NULL.
    let state = unsafe { ffi::PyThreadState_GetDict() };
    if !state.is_null() {
        // SAFETY: `state` is a live dict (see above); we take our own reference at once.
        let state = unsafe { Bound::from_borrowed_ptr(py, state) };
        state.set_item(intern!(py, TRIO_LOCALS_KEY), &locals)?;
        TRIO_LOCALS.with(|c| c.set((id, locals.as_ptr())));
    }
    locals.contains(intern!(py, "task"))
}

/// Whether a trio task is running in this thread (cheap when trio was never imported).
#[inline(always)]
pub(crate) fn on_trio(py: Python<'_>) -> PyResult<bool> {
    Ok(trio_imported(py) && trio_running(py)?)
}

/// The limiter a first step decides for: an [`Owner`] (the class known at run time), or the
/// limiter itself (known at compile time: `__aenter__`, whose fast path is then inlined).
trait Decider {
    fn try_now(&self, py: Python<'_>, n: u64) -> PyResult<bool>;
    fn wait(
        &self,
        py: Python<'_>,
        n: u64,
        timeout: Option<f64>,
        event_loop: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>>;
}

impl Decider for Owner {
    #[inline(always)]
    fn try_now(&self, py: Python<'_>, n: u64) -> PyResult<bool> {
        Owner::try_now(self, py, n)
    }

    fn wait(
        &self,
        py: Python<'_>,
        n: u64,
        timeout: Option<f64>,
        event_loop: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        Owner::wait(self, py, n, timeout, event_loop)
    }
}

/// A limiter of a known class, with an `all_of`'s costs.
struct Known<'a, 'py, L>(&'a Bound<'py, L>, &'a [u64]);

impl<L: Limiter> Decider for Known<'_, '_, L> {
    #[inline(always)]
    fn try_now(&self, py: Python<'_>, n: u64) -> PyResult<bool> {
        self.0.get().try_now(py, n, self.1)
    }

    fn wait(
        &self,
        _py: Python<'_>,
        n: u64,
        timeout: Option<f64>,
        event_loop: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        L::wait(self.0, n, self.1, timeout, event_loop)
    }
}

/// The first step: decide by the framework running in this thread (see the module docs).
/// The running asyncio loop is looked up only when the request must wait.
#[inline(always)]
fn first_step(
    py: Python<'_>,
    limiter: &impl Decider,
    n: u64,
    timeout: Option<f64>,
) -> PyResult<First> {
    if on_trio(py)? {
        // trio: the Python path, a checkpoint whether or not it must wait.
        return limiter.wait(py, n, timeout, None).map(First::Wait);
    }
    // asyncio, or no framework (a coroutine driven by hand): the native fast path.
    if limiter.try_now(py, n)? {
        return Ok(First::Admitted);
    }
    limiter
        .wait(py, n, timeout, running_loop(py)?)
        .map(First::Wait)
}

/// The awaitable of `owner.acquire(n, timeout)`: decides on its first step (module docs).
/// This is the entry point a limiter's `acquire` method returns.
///
/// Allocation-free in the common case: the last `Acquire` made is kept, and reused as soon
/// as nothing else references it (an `await acquire()` drops it at its first step). Only the
/// cache holds it then, so nobody can tell it is the same object.
#[inline(always)]
pub(crate) fn acquire(
    py: Python<'_>,
    owner: Owner,
    n: u64,
    timeout: Option<f64>,
) -> PyResult<Py<PyAny>> {
    let request = Request { owner, n, timeout };
    let spare = spare::with(py, |spare| {
        spare
            .as_ref()
            // SAFETY: reading the reference count of a live object, with the thread attached.
            .filter(|obj| unsafe { ffi::Py_REFCNT(obj.as_ptr()) } == 1)
            .map(|obj| obj.clone_ref(py))
    });
    if let Some(obj) = spare {
        // Replaced outside the guard: what it held (an acquisition dropped unstarted keeps
        // its owner until now) may run Python code when dropped.
        let previous = with_state(obj.bind(py), |i| {
            i.qualname = request.owner.qualname();
            i.n = request.n;
            std::mem::replace(&mut i.state, State::Fresh(request))
        });
        drop(previous);
        return Ok(obj.into_any());
    }
    let obj = Py::new(
        py,
        Acquire {
            inner: CriticalCell::new(Inner {
                qualname: request.owner.qualname(),
                n: request.n,
                state: State::Fresh(request),
            }),
        },
    )?;
    spare::with(py, |spare| {
        spare.get_or_insert_with(|| obj.clone_ref(py));
    });
    Ok(obj.into_any())
}

/// The `Acquire` kept for reuse (see [`acquire`]): with the GIL, one for the interpreter, in a
/// static the GIL guards (a thread-local costs a call to `__tls_get_addr` in an extension
/// module, a tenth of an `await bucket.acquire()`); without the GIL, one per thread.
mod spare {
    use pyo3::prelude::*;

    use super::Acquire;

    #[cfg(not(Py_GIL_DISABLED))]
    struct Slot(std::cell::UnsafeCell<Option<Py<Acquire>>>);

    // SAFETY: the slot is reached only through `with`, which needs a `Python` token: on a build
    // with the GIL, the calling thread holds the GIL, which serialises every access. `with`'s
    // callers only read, clone or store a reference in it (no Python code runs, the GIL is
    // not released), so one access ends before the next begins.
    #[cfg(not(Py_GIL_DISABLED))]
    unsafe impl Sync for Slot {}

    #[cfg(not(Py_GIL_DISABLED))]
    static SLOT: Slot = Slot(std::cell::UnsafeCell::new(None));

    /// Runs `f` on the slot. `f` must not run Python code.
    #[cfg(not(Py_GIL_DISABLED))]
    #[inline(always)]
    pub(super) fn with<R>(_py: Python<'_>, f: impl FnOnce(&mut Option<Py<Acquire>>) -> R) -> R {
        // SAFETY: see the `Sync` proof: the GIL is held and no other access is running.
        f(unsafe { &mut *SLOT.0.get() })
    }

    #[cfg(Py_GIL_DISABLED)]
    thread_local! {
        static SLOT: std::cell::RefCell<Option<Py<Acquire>>> =
            const { std::cell::RefCell::new(None) };
    }

    /// Runs `f` on this thread's slot. `f` must not run Python code.
    #[cfg(Py_GIL_DISABLED)]
    #[inline(always)]
    pub(super) fn with<R>(_py: Python<'_>, f: impl FnOnce(&mut Option<Py<Acquire>>) -> R) -> R {
        SLOT.with(|slot| f(&mut slot.borrow_mut()))
    }
}

/// What `__aenter__` returns: the same decision, made now (`async with` awaits at once, so
/// nothing can come between the call and the first step). Shared `Ready` when admitted.
/// `costs` are an `all_of`'s (else empty).
#[inline(always)]
pub(crate) fn enter<L: Limiter>(
    limiter: &Bound<'_, L>,
    n: u64,
    costs: &[u64],
    timeout: Option<f64>,
) -> PyResult<Py<PyAny>> {
    let py = limiter.py();
    match first_step(py, &Known(limiter, costs), n, timeout)? {
        First::Admitted => ready(py),
        First::Wait(awaitable) => Ok(awaitable),
    }
}

/// An acquisition not started yet.
struct Request {
    owner: Owner,
    n: u64,
    timeout: Option<f64>,
}

enum State {
    /// Not started: nothing taken, nothing queued.
    Fresh(Request),
    /// Driven as a coroutine (by a Task's `send`), delegating to the waiting awaitable.
    Delegating(Py<PyAny>),
    /// Finished, awaited, thrown into or closed.
    Done,
}

pub(crate) struct Inner {
    state: State,
    /// For reprs: the method's qualified name and the request's size.
    qualname: &'static str,
    n: u64,
}

/// An acquisition that has not run yet (see the module documentation). Not constructible
/// from Python.
#[pyclass(frozen, module = "admission._native")]
pub struct Acquire {
    inner: CriticalCell<Inner>,
}

impl Guarded for Acquire {
    type State = Inner;
    fn cell(&self) -> &CriticalCell<Inner> {
        &self.inner
    }
}

impl Acquire {
    /// Takes the state out, leaving `Done`; returns the request if it had not started.
    fn start(slf: &Bound<'_, Self>) -> PyResult<Request> {
        match Self::take(slf) {
            State::Fresh(request) => Ok(request),
            other => {
                let restore = matches!(other, State::Delegating(_));
                if restore {
                    Self::set(slf, other);
                }
                Err(Self::reused())
            }
        }
    }

    fn take(slf: &Bound<'_, Self>) -> State {
        with_state(slf, |i| std::mem::replace(&mut i.state, State::Done))
    }

    fn set(slf: &Bound<'_, Self>, state: State) {
        let previous = with_state(slf, |i| std::mem::replace(&mut i.state, state));
        drop(previous); // outside the guard: dropping may run Python code
    }

    fn delegate(slf: &Bound<'_, Self>) -> Option<Py<PyAny>> {
        with_state(slf, |i| match &i.state {
            State::Delegating(inner) => Some(inner.clone_ref(slf.py())),
            State::Fresh(_) | State::Done => None,
        })
    }

    fn reused() -> PyErr {
        PyRuntimeError::new_err("cannot reuse an already awaited acquisition")
    }

    /// One step as a coroutine: `Some(yielded)`, or `None` when finished (admitted).
    fn step(slf: &Bound<'_, Self>, value: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
        let py = slf.py();
        let inner = match Self::delegate(slf) {
            Some(inner) => inner,
            None => {
                if !value.is_none() && matches!(Self::peek(slf), Peek::Fresh) {
                    return Err(PyTypeError::new_err(
                        "can't send non-None value to a just-started coroutine",
                    ));
                }
                let request = Self::start(slf)?;
                match first_step(py, &request.owner, request.n, request.timeout)? {
                    First::Admitted => return Ok(None),
                    First::Wait(awaitable) => {
                        // A coroutine (trio's path) is sent to directly; the Waiter is its
                        // own iterator.
                        Self::set(slf, State::Delegating(awaitable.clone_ref(py)));
                        awaitable
                    }
                }
            }
        };
        let mut result: *mut ffi::PyObject = std::ptr::null_mut();
        // SAFETY: GIL held; `inner` and `value` are live objects; `result` receives a new
        // reference (or NULL with an exception set on error).
        let status = unsafe { ffi::PyIter_Send(inner.as_ptr(), value.as_ptr(), &mut result) };
        match status {
            ffi::PySendResult::PYGEN_NEXT => {
                // SAFETY: a new reference, per PyIter_Send's contract.
                Ok(Some(unsafe { Bound::from_owned_ptr(py, result) }.unbind()))
            }
            ffi::PySendResult::PYGEN_RETURN => {
                // SAFETY: as above; the return value (None) is dropped.
                drop(unsafe { Bound::from_owned_ptr(py, result) });
                Self::set(slf, State::Done);
                Ok(None)
            }
            ffi::PySendResult::PYGEN_ERROR => {
                Self::set(slf, State::Done);
                Err(PyErr::fetch(py))
            }
        }
    }

    fn peek(slf: &Bound<'_, Self>) -> Peek {
        with_state(slf, |i| match &i.state {
            State::Fresh(_) => Peek::Fresh,
            State::Delegating(_) => Peek::Waiting,
            State::Done => Peek::Done,
        })
    }
}

enum Peek {
    Fresh,
    Waiting,
    Done,
}

/// The exception `throw(typ, val, tb)` raises (the generator protocol's forms).
pub(crate) fn thrown(typ: &Bound<'_, PyAny>, val: Option<&Bound<'_, PyAny>>) -> PyResult<PyErr> {
    Ok(match val {
        Some(v) if v.is_instance_of::<PyBaseException>() => PyErr::from_value(v.clone()),
        Some(v) if !v.is_none() => PyErr::from_value(typ.call1((v,))?),
        _ => PyErr::from_value(typ.clone()),
    })
}

#[pymethods]
impl Acquire {
    /// `await acquire()`: the first step. Returns the shared `Ready` when admitted at once,
    /// else the waiting awaitable's iterator (the awaiting coroutine then talks to it
    /// directly).
    fn __await__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let request = Self::start(slf)?;
        match first_step(py, &request.owner, request.n, request.timeout)? {
            First::Admitted => ready(py),
            First::Wait(awaitable) => {
                let bound = awaitable.bind(py);
                if bound.is_instance_of::<Waiter>() {
                    return Ok(awaitable);
                }
                Ok(bound.call_method0(intern!(py, "__await__"))?.unbind())
            }
        }
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let none = slf.py().None().into_bound(slf.py());
        Self::step(slf, &none)
    }

    /// Coroutine protocol: the first `send(None)` is the first step.
    fn send(slf: &Bound<'_, Self>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        match Self::step(slf, value)? {
            Some(yielded) => Ok(yielded),
            None => Err(PyStopIteration::new_err(())),
        }
    }

    /// Coroutine protocol: into an unstarted acquisition, the exception is raised and nothing
    /// is taken; into a waiting one, the wait ends (permits granted to it are passed on).
    #[pyo3(signature = (typ, val=None, tb=None))]
    fn throw(
        slf: &Bound<'_, Self>,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let Some(inner) = Self::delegate(slf) else {
            Self::set(slf, State::Done);
            return Err(thrown(typ, val)?);
        };
        let inner = inner.bind(py);
        // Forwarded with as many arguments as given (3.12 deprecates the three-argument form).
        let result = match (val, tb) {
            (None, None) => inner.call_method1(intern!(py, "throw"), (typ,)),
            (val, None) => inner.call_method1(intern!(py, "throw"), (typ, val)),
            (val, tb) => inner.call_method1(intern!(py, "throw"), (typ, val, tb)),
        };
        match result {
            Ok(yielded) => Ok(yielded.unbind()),
            Err(e) => {
                Self::set(slf, State::Done);
                Err(e)
            }
        }
    }

    /// Coroutine protocol: an unstarted acquisition is dropped (nothing was taken); a waiting
    /// one is withdrawn (permits granted to it are passed on).
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if let State::Delegating(inner) = Self::take(slf) {
            inner.call_method0(py, intern!(py, "close"))?;
        }
        Ok(())
    }

    #[getter]
    fn __qualname__(slf: &Bound<'_, Self>) -> &'static str {
        with_state(slf, |i| i.qualname)
    }

    #[getter]
    fn __name__(&self) -> &'static str {
        "acquire"
    }

    fn __repr__(slf: &Bound<'_, Self>) -> String {
        let (state, n) = with_state(slf, |i| {
            let state = match &i.state {
                State::Fresh(_) => "not started",
                State::Delegating(_) => "waiting",
                State::Done => "done",
            };
            (state, i.n)
        });
        format!("<admission acquire n={n} {state}>")
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        // SAFETY: the collector's traversal (see `peek_for_gc`).
        match unsafe { self.inner.peek_for_gc() }.map(|i| &i.state) {
            Some(State::Fresh(request)) => request.owner.visit(&visit),
            Some(State::Delegating(inner)) => visit.call(inner),
            Some(State::Done) | None => Ok(()),
        }
    }

    fn __clear__(slf: &Bound<'_, Self>) {
        Self::set(slf, State::Done);
    }
}

/// Registers `Acquire` as a `collections.abc.Coroutine` (module init), so that asyncio's
/// `create_task` and `ensure_future` accept it.
pub(crate) fn register_coroutine(py: Python<'_>) -> PyResult<()> {
    let coroutine = py.import("collections.abc")?.getattr("Coroutine")?;
    coroutine.call_method1("register", (py.get_type::<Acquire>(),))?;
    Ok(())
}
