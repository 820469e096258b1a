//! `@breaker`: the native wrapper of a decorated function (`BreakerFunction`) and, for a
//! coroutine function, the awaitable each call returns (`BreakerAwaitable`).
//!
//! A Python wrapper cost a decorated call two frames, an argument tuple and a `BreakerCall`
//! object: six times a plain call. Here the wrapper is called through CPython's vectorcall
//! protocol (PyO3 gives a pyclass `tp_call` only, which packs the arguments into a tuple and
//! a dict): its arguments reach the wrapped function as they came, without a copy. PyO3 has
//! no way to declare the vectorcall slot, so `enable_vectorcall` writes the type's
//! `tp_vectorcall_offset` once and each object carries the entry point (see its SAFETY
//! comment). The outcome is classified exactly as `with breaker:` does
//! (`CircuitBreaker::finish`); `failure_if` is called only when set.
//!
//! A coroutine function's wrapper returns a `BreakerAwaitable`, which behaves as the
//! coroutine of `async def w(*a, **k): return await fn(*a, **k)` with the breaker around the
//! `await`: nothing happens until its first step, which takes the permit (or raises
//! `CircuitOpen`) and only then calls the function; `send`, `throw` and `close` are forwarded
//! to the function's awaitable; its end records the outcome. A call that is cancelled,
//! closed or dropped before its end gives its permit back (a half-open probe's place).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::Once;

use admission_core::breaker::Permit;
use pyo3::exceptions::{PyRuntimeError, PyStopIteration, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::Borrowed;

use crate::breaker::CircuitBreaker;
use crate::critical::{with_state, CriticalCell, Guarded};

/// A function decorated with a `CircuitBreaker`: calling it calls the function through the
/// breaker. The public surface is `CircuitBreaker.__call__`.
// `repr(C)`: `vectorcall` is the first field, at a fixed offset in every object.
#[repr(C)]
#[pyclass(frozen, dict, weakref, module = "admission._native")]
pub struct BreakerFunction {
    /// CPython's entry point for a call of this object (`tp_vectorcall_offset` points here);
    /// `None` makes CPython use `__call__` (a test hook measures the difference).
    vectorcall: Option<ffi::vectorcallfunc>,
    breaker: Py<CircuitBreaker>,
    func: Py<PyAny>,
    failure_if: Option<Py<PyAny>>,
    is_async: bool,
}

static VECTORCALL: Once = Once::new();

extern "C" {
    // CPython's C API (`Include/cpython/classobject.h`), which pyo3-ffi does not declare:
    // `types.MethodType(func, self)`, as a function's `__get__` makes it.
    fn PyMethod_New(func: *mut ffi::PyObject, self_: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

/// Declares `BreakerFunction`'s vectorcall slot, given one of its objects (the offset of the
/// field is read off a real object rather than computed from PyO3's private layout).
fn enable_vectorcall(obj: &Bound<'_, BreakerFunction>) {
    VECTORCALL.call_once(|| {
        let field = ptr::from_ref(&obj.get().vectorcall) as usize;
        let offset = field - obj.as_ptr() as usize;
        let tp = obj.get_type();
        let tp = tp.as_type_ptr();
        // SAFETY: the GIL (or, free-threaded, `Once`) makes this the only writer, and no
        // `BreakerFunction` has been called yet (this is the first one made, not yet returned
        // to Python). Every object of the type (no subclass: the class is final) holds an
        // `Option<vectorcallfunc>`, which has the C layout of a nullable function pointer, at
        // `offset` from its start: exactly what `tp_vectorcall_offset` with
        // `Py_TPFLAGS_HAVE_VECTORCALL` promises CPython. A NULL entry falls back to `tp_call`
        // (`__call__`), which the type also has. No Python code runs here.
        unsafe {
            (*tp).tp_vectorcall_offset = offset as ffi::Py_ssize_t;
            #[cfg(not(Py_GIL_DISABLED))]
            {
                (*tp).tp_flags |= ffi::Py_TPFLAGS_HAVE_VECTORCALL;
            }
            // Free-threaded builds keep the flags in an atomic (other threads read them).
            #[cfg(Py_GIL_DISABLED)]
            (*tp).tp_flags.fetch_or(
                ffi::Py_TPFLAGS_HAVE_VECTORCALL,
                std::sync::atomic::Ordering::Relaxed,
            );
            ffi::PyType_Modified(tp);
        }
    });
}

/// Runs a vectorcall body: catches panics (an exception instead of unwinding into C) and
/// hands the result to CPython as a new reference, or NULL with the exception set.
///
/// # Safety
/// Called by CPython with the GIL held (the thread attached).
unsafe fn trampoline(body: impl FnOnce(Python<'_>) -> PyResult<Py<PyAny>>) -> *mut ffi::PyObject {
    // SAFETY: CPython calls vectorcall functions with the thread attached.
    let py = unsafe { Python::assume_attached() };
    let err = match catch_unwind(AssertUnwindSafe(|| body(py))) {
        Ok(Ok(result)) => return result.into_ptr(),
        Ok(Err(err)) => err,
        Err(_) => PanicException::new_err("a BreakerFunction call panicked"),
    };
    err.restore(py);
    ptr::null_mut()
}

/// The vectorcall entry of a decorated sync function.
unsafe extern "C" fn call_sync(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls this with the thread attached, `callable` a live
    // `BreakerFunction` (the only type whose objects hold this entry), and `args`/`nargsf`/
    // `kwnames` valid for this call: they are passed on unchanged to the wrapped function
    // (`PY_VECTORCALL_ARGUMENTS_OFFSET` included: our caller allowed `args[-1]` to be
    // written, and the callee restores it).
    unsafe {
        trampoline(|py| {
            let slf = Borrowed::from_ptr(py, callable).cast_unchecked::<BreakerFunction>();
            let func = slf.get().func.as_ptr();
            run_sync(&slf, || {
                ffi::PyObject_Vectorcall(func, args, nargsf, kwnames)
            })
        })
    }
}

/// The vectorcall entry of a decorated coroutine function: the arguments are kept for the
/// first step (the function is called only once the permit is taken).
unsafe extern "C" fn call_async(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: as in `call_sync`; `args` holds `nargs` positional arguments followed by one
    // value per name in `kwnames`, all borrowed for this call (copied into new references).
    unsafe {
        trampoline(|py| {
            let slf = Borrowed::from_ptr(py, callable).cast_unchecked::<BreakerFunction>();
            let nargs = ffi::PyVectorcall_NARGS(nargsf) as usize;
            let names = (!kwnames.is_null()).then(|| Borrowed::from_ptr(py, kwnames));
            let nkw = names.as_ref().map_or(0, |n| n.len().unwrap_or(0));
            let items: &[*mut ffi::PyObject] = if nargs + nkw == 0 {
                &[]
            } else {
                std::slice::from_raw_parts(args, nargs + nkw)
            };
            let positional = PyTuple::new(
                py,
                items[..nargs].iter().map(|p| Borrowed::from_ptr(py, *p)),
            )?;
            let kwargs = match names {
                None => None,
                Some(names) => {
                    let dict = PyDict::new(py);
                    for (name, value) in names.try_iter()?.zip(&items[nargs..]) {
                        dict.set_item(name?, Borrowed::from_ptr(py, *value))?;
                    }
                    Some(dict.unbind())
                }
            };
            BreakerAwaitable::unstarted(&slf, positional.unbind(), kwargs)
        })
    }
}

/// One sync call through the breaker: `call` calls the function (a new reference, or NULL
/// with an exception set).
fn run_sync(
    slf: &Bound<'_, BreakerFunction>,
    call: impl FnOnce() -> *mut ffi::PyObject,
) -> PyResult<Py<PyAny>> {
    let py = slf.py();
    let this = slf.get();
    let breaker = this.breaker.bind(py);
    let (permit, start) = CircuitBreaker::permit(breaker, py)?;
    let result = call();
    if result.is_null() {
        return Err(ended_by(breaker, permit, start, PyErr::fetch(py)));
    }
    // SAFETY: a new reference, not NULL.
    let result = unsafe { Bound::from_owned_ptr(py, result) };
    returned(breaker, this.failure_if.as_ref(), permit, start, &result)?;
    Ok(result.unbind())
}

/// Records a call that returned `result`: a failure if `failure_if(result)` is true, else a
/// success. An exception from `failure_if` propagates and the permit goes back unused (the
/// call came to no verdict), as when the Python wrapper's `BreakerCall` was dropped unended.
fn returned(
    breaker: &Bound<'_, CircuitBreaker>,
    failure_if: Option<&Py<PyAny>>,
    permit: Permit,
    start: u64,
    result: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let failed = match failure_if {
        None => false,
        Some(predicate) => match predicate.bind(breaker.py()).call1((result,)) {
            Ok(verdict) => verdict.is_truthy(),
            Err(err) => Err(err),
        }
        .inspect_err(|_| breaker.get().give_back(permit))?,
    };
    if failed {
        CircuitBreaker::fail(breaker, permit, start)
    } else {
        CircuitBreaker::finish(breaker, permit, start, None)
    }
}

/// Records a call that raised `err` and returns the error to raise: `err`, or an error in
/// recording it (with `err` as its context, as an exception raised in an `except` block).
fn ended_by(breaker: &Bound<'_, CircuitBreaker>, permit: Permit, start: u64, err: PyErr) -> PyErr {
    let py = breaker.py();
    match CircuitBreaker::finish(breaker, permit, start, Some(err.value(py).as_any())) {
        Ok(()) => err,
        Err(recording) => {
            recording.set_context(py, Some(err));
            recording
        }
    }
}

impl BreakerFunction {
    fn breaker_of(&self) -> &Py<CircuitBreaker> {
        &self.breaker
    }
}

#[pymethods]
impl BreakerFunction {
    /// Wraps `func` (the public `CircuitBreaker.__call__` copies its metadata).
    /// `is_async`: each call returns an awaitable. `vectorcall=False` (a test hook) leaves
    /// calls to `__call__`.
    #[new]
    #[pyo3(signature = (breaker, func, failure_if, is_async, *, vectorcall=true))]
    fn new(
        py: Python<'_>,
        breaker: Py<CircuitBreaker>,
        func: Py<PyAny>,
        failure_if: Option<Py<PyAny>>,
        is_async: bool,
        vectorcall: bool,
    ) -> PyResult<Py<Self>> {
        if !func.bind(py).is_callable() {
            return Err(PyTypeError::new_err("func must be callable"));
        }
        let entry: ffi::vectorcallfunc = if is_async { call_async } else { call_sync };
        let obj = Bound::new(
            py,
            Self {
                vectorcall: vectorcall.then_some(entry),
                breaker,
                func,
                failure_if: failure_if.filter(|f| !f.is_none(py)),
                is_async,
            },
        )?;
        enable_vectorcall(&obj);
        Ok(obj.unbind())
    }

    /// A call without vectorcall (`PyObject_Call` with a tuple and a dict).
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        slf: &Bound<'_, Self>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let this = slf.get();
        if this.is_async {
            // The caller may change its dict before the first step: a copy is kept.
            let kwargs = kwargs.map(|k| k.copy()).transpose()?;
            return BreakerAwaitable::unstarted(
                slf,
                args.clone().unbind(),
                kwargs.map(Bound::unbind),
            );
        }
        let kwargs = kwargs.map_or(ptr::null_mut(), |k| k.as_ptr());
        // SAFETY: GIL held; `func` and `args` are live, `kwargs` live or NULL.
        run_sync(slf, || unsafe {
            ffi::PyObject_Call(this.func.as_ptr(), args.as_ptr(), kwargs)
        })
    }

    /// Binds like a function: as a class attribute, `instance.method` is a bound method.
    fn __get__(
        slf: &Bound<'_, Self>,
        instance: Option<&Bound<'_, PyAny>>,
        owner: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let _ = owner;
        let py = slf.py();
        match instance {
            Some(obj) if !obj.is_none() => {
                // SAFETY: GIL held; both live; a new reference or NULL with an exception.
                let method = unsafe { PyMethod_New(slf.as_ptr(), obj.as_ptr()) };
                if method.is_null() {
                    return Err(PyErr::fetch(py));
                }
                // SAFETY: a new reference, not NULL.
                Ok(unsafe { Bound::from_owned_ptr(py, method) }.unbind())
            }
            _ => Ok(slf.clone().into_any().unbind()),
        }
    }

    /// Pickled by reference, as a function is: its module and qualified name.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.getattr(intern!(slf.py(), "__qualname__"))
    }

    /// The breaker calls go through.
    #[getter]
    fn breaker(&self, py: Python<'_>) -> Py<CircuitBreaker> {
        self.breaker_of().clone_ref(py)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        Ok(format!(
            "<function {} through a circuit breaker>",
            slf.getattr(intern!(slf.py(), "__qualname__"))
                .or_else(|_| slf.get().func.bind(slf.py()).repr().map(Bound::into_any))?
        ))
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.breaker)?;
        visit.call(&self.func)?;
        if let Some(f) = &self.failure_if {
            visit.call(f)?;
        }
        Ok(())
    }
}

pub(crate) enum State {
    /// Not started: the arguments, kept for the call.
    Fresh {
        args: Py<PyTuple>,
        kwargs: Option<Py<PyDict>>,
    },
    /// The function was called through a permit; its awaitable's iterator runs.
    Running {
        inner: Py<PyAny>,
        permit: Permit,
        start: u64,
    },
    /// Finished, thrown into or closed.
    Done,
}

/// The awaitable a decorated coroutine function returns (see the module documentation):
/// a coroutine to asyncio and trio (`collections.abc.Coroutine`).
#[pyclass(frozen, module = "admission._native")]
pub struct BreakerAwaitable {
    function: Py<BreakerFunction>,
    state: CriticalCell<State>,
}

impl Guarded for BreakerAwaitable {
    type State = State;
    fn cell(&self) -> &CriticalCell<State> {
        &self.state
    }
}

/// What one step gave: a value to yield to the driver, or the function's result.
enum Step {
    Yield(Py<PyAny>),
    Return(Py<PyAny>),
}

impl BreakerAwaitable {
    /// A call of `function` with these arguments, not started yet.
    fn unstarted(
        function: &Bound<'_, BreakerFunction>,
        args: Py<PyTuple>,
        kwargs: Option<Py<PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let awaitable = Self {
            function: function.clone().unbind(),
            state: CriticalCell::new(State::Fresh { args, kwargs }),
        };
        Ok(Bound::new(function.py(), awaitable)?.into_any().unbind())
    }

    fn take(slf: &Bound<'_, Self>) -> State {
        with_state(slf, |s| std::mem::replace(s, State::Done))
    }

    fn set(slf: &Bound<'_, Self>, state: State) {
        let previous = with_state(slf, |s| std::mem::replace(s, state));
        drop(previous); // outside the critical section: dropping may run Python code
    }

    /// The running call: its awaitable's iterator, permit and start.
    fn running(slf: &Bound<'_, Self>) -> Option<(Py<PyAny>, Permit, u64)> {
        with_state(slf, |s| match s {
            State::Running {
                inner,
                permit,
                start,
            } => Some((inner.clone_ref(slf.py()), *permit, *start)),
            State::Fresh { .. } | State::Done => None,
        })
    }

    fn breaker<'a, 'py>(slf: &'a Bound<'py, Self>) -> &'a Bound<'py, CircuitBreaker> {
        slf.get().function.get().breaker_of().bind(slf.py())
    }

    /// The first step: the permit (or `CircuitOpen`), then the call of the function.
    fn start(
        slf: &Bound<'_, Self>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<(Py<PyAny>, Permit, u64)> {
        let py = slf.py();
        let fresh = with_state(slf, |s| matches!(s, State::Fresh { .. }));
        if fresh && !value.is_none() {
            return Err(PyTypeError::new_err(
                "can't send non-None value to a just-started coroutine",
            ));
        }
        let State::Fresh { args, kwargs } = Self::take(slf) else {
            return Err(PyRuntimeError::new_err(
                "cannot reuse already awaited coroutine",
            ));
        };
        let function = slf.get().function.get();
        let breaker = Self::breaker(slf);
        let (permit, start) = CircuitBreaker::permit(breaker, py)?;
        let inner = function
            .func
            .bind(py)
            .call(args.bind(py), kwargs.as_ref().map(|k| k.bind(py)))
            .and_then(|awaitable| awaitable_iter(&awaitable))
            .map_err(|err| ended_by(breaker, permit, start, err))?;
        Self::set(
            slf,
            State::Running {
                inner: inner.clone_ref(py),
                permit,
                start,
            },
        );
        Ok((inner, permit, start))
    }

    /// One step: `send(value)` into the function's awaitable (started first if fresh).
    fn step(slf: &Bound<'_, Self>, value: &Bound<'_, PyAny>) -> PyResult<Step> {
        let py = slf.py();
        let (inner, permit, start) = match Self::running(slf) {
            Some(running) => running,
            None => Self::start(slf, value)?,
        };
        let mut result: *mut ffi::PyObject = ptr::null_mut();
        // SAFETY: GIL held; `inner` and `value` are live; `result` receives a new reference
        // (or stays NULL with an exception set on error).
        let status = unsafe { ffi::PyIter_Send(inner.as_ptr(), value.as_ptr(), &mut result) };
        match status {
            // SAFETY: a new reference, per PyIter_Send's contract.
            ffi::PySendResult::PYGEN_NEXT => Ok(Step::Yield(unsafe {
                Bound::from_owned_ptr(py, result).unbind()
            })),
            ffi::PySendResult::PYGEN_RETURN => {
                // SAFETY: as above.
                let result = unsafe { Bound::from_owned_ptr(py, result) };
                Self::returned(slf, permit, start, &result)?;
                Ok(Step::Return(result.unbind()))
            }
            ffi::PySendResult::PYGEN_ERROR => {
                Err(Self::raised(slf, permit, start, PyErr::fetch(py)))
            }
        }
    }

    fn returned(
        slf: &Bound<'_, Self>,
        permit: Permit,
        start: u64,
        result: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        Self::set(slf, State::Done);
        let failure_if = slf.get().function.get().failure_if.as_ref();
        returned(Self::breaker(slf), failure_if, permit, start, result)
    }

    fn raised(slf: &Bound<'_, Self>, permit: Permit, start: u64, err: PyErr) -> PyErr {
        Self::set(slf, State::Done);
        ended_by(Self::breaker(slf), permit, start, err)
    }
}

/// The iterator `await obj` drives: a coroutine (or a generator-based one) itself, else what
/// its type's `__await__` returns (CPython's checks and messages).
fn awaitable_iter(obj: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let py = obj.py();
    // SAFETY: type checks of a live object, GIL held.
    let is_coroutine = unsafe {
        ffi::Py_TYPE(obj.as_ptr()) == &raw mut ffi::PyCoro_Type
            || ffi::PyGen_CheckExact(obj.as_ptr()) != 0
                && obj
                    .getattr(intern!(py, "gi_code"))?
                    .getattr(intern!(py, "co_flags"))?
                    .extract::<u32>()?
                    & 0x100 // CO_ITERABLE_COROUTINE (types.coroutine)
                    != 0
    };
    if is_coroutine {
        return Ok(obj.clone().unbind());
    }
    let kind = obj.get_type();
    let Ok(await_) = kind.getattr(intern!(py, "__await__")) else {
        return Err(PyTypeError::new_err(format!(
            "object {} can't be used in 'await' expression",
            kind.name()?
        )));
    };
    let iter = await_.call1((obj,))?;
    // SAFETY: type checks of a live object, GIL held.
    let (is_iter, is_coro) = unsafe {
        (
            ffi::PyIter_Check(iter.as_ptr()) != 0,
            ffi::Py_TYPE(iter.as_ptr()) == &raw mut ffi::PyCoro_Type,
        )
    };
    if !is_iter || is_coro {
        return Err(PyTypeError::new_err(format!(
            "__await__() returned {} of type '{}'",
            if is_coro {
                "a coroutine"
            } else {
                "non-iterator"
            },
            iter.get_type().name()?
        )));
    }
    Ok(iter.unbind())
}

#[pymethods]
impl BreakerAwaitable {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let py = slf.py();
        match Self::step(slf, &py.None().into_bound(py))? {
            Step::Yield(value) => Ok(Some(value)),
            // NULL without an exception: `StopIteration(None)`, without creating it.
            Step::Return(result) if result.is_none(py) => Ok(None),
            Step::Return(result) => Err(PyStopIteration::new_err((result,))),
        }
    }

    /// Coroutine protocol: the first `send(None)` takes the permit and calls the function.
    fn send(slf: &Bound<'_, Self>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        match Self::step(slf, value)? {
            Step::Yield(value) => Ok(value),
            Step::Return(result) => Err(PyStopIteration::new_err((result,))),
        }
    }

    /// Coroutine protocol: into an unstarted call, the exception is raised and nothing is
    /// taken; into a running one, it is thrown into the function's awaitable.
    #[pyo3(signature = (typ, val=None, tb=None))]
    fn throw(
        slf: &Bound<'_, Self>,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let Some((inner, permit, start)) = Self::running(slf) else {
            Self::set(slf, State::Done);
            return Err(crate::acquire::thrown(typ, val)?);
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
            Err(err) if err.is_instance_of::<PyStopIteration>(py) => {
                // The function caught it and returned: a result like any other.
                let value = err.value(py).getattr(intern!(py, "value"))?;
                Self::returned(slf, permit, start, &value)?;
                Err(err)
            }
            Err(err) => Err(Self::raised(slf, permit, start, err)),
        }
    }

    /// Coroutine protocol: an unstarted call is dropped (nothing was taken); a running one
    /// closes the function's awaitable and gives its permit back.
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let State::Running {
            inner,
            permit,
            start,
        } = Self::take(slf)
        else {
            return Ok(());
        };
        match inner.call_method0(py, intern!(py, "close")) {
            Ok(_) => {
                Self::breaker(slf).get().give_back(permit);
                Ok(())
            }
            // It ignored GeneratorExit or failed while closing: recorded as raised there.
            Err(err) => Err(ended_by(Self::breaker(slf), permit, start, err)),
        }
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let state = with_state(slf, |s| match s {
            State::Fresh { .. } => "not started",
            State::Running { .. } => "running",
            State::Done => "done",
        });
        let function = slf.get().function.bind(slf.py());
        let name = function.getattr(intern!(slf.py(), "__qualname__"))?;
        Ok(format!("<admission breaker call {name} {state}>"))
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.function)?;
        // SAFETY: the collector's traversal (see `peek_for_gc`).
        match unsafe { self.state.peek_for_gc() } {
            Some(State::Fresh { args, kwargs }) => {
                visit.call(args)?;
                visit.call(kwargs)
            }
            Some(State::Running { inner, .. }) => visit.call(inner),
            Some(State::Done) | None => Ok(()),
        }
    }

    fn __clear__(slf: &Bound<'_, Self>) {
        if let State::Running { inner, permit, .. } = Self::take(slf) {
            Self::breaker(slf).get().give_back(permit);
            drop(inner);
        }
    }
}

impl Drop for BreakerAwaitable {
    fn drop(&mut self) {
        match self.state.get_mut() {
            // Dropped while running (its driver let go of it): no verdict, the permit goes
            // back, as the Python wrapper's coroutine gave it back when its finalizer closed it.
            State::Running { permit, .. } => {
                self.function.get().breaker_of().get().give_back(*permit);
            }
            // Never awaited: the warning a coroutine gives (a forgotten `await`).
            State::Fresh { .. } => Python::attach(|py| self.warn_unawaited(py)),
            State::Done => {}
        }
    }
}

impl BreakerAwaitable {
    /// `RuntimeWarning: coroutine '...' was never awaited`, as CPython's coroutines warn from
    /// their finalizer: an exception pending in this thread is kept, an error (warnings as
    /// errors) is unraisable.
    fn warn_unawaited(&self, py: Python<'_>) {
        let pending = PyErr::take(py);
        let function = self.function.bind(py);
        let name = function
            .getattr(intern!(py, "__qualname__"))
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        let message = format!("coroutine '{name}' was never awaited");
        if let Ok(message) = std::ffi::CString::new(message) {
            let category = py.get_type::<pyo3::exceptions::PyRuntimeWarning>();
            if let Err(err) = PyErr::warn(py, category.as_any(), &message, 1) {
                err.write_unraisable(py, Some(function.as_any()));
            }
        }
        if let Some(pending) = pending {
            pending.restore(py);
        }
    }
}

/// Registers `BreakerAwaitable` as a `collections.abc.Coroutine` (module init), so that
/// asyncio's `create_task` and `ensure_future` accept it.
pub(crate) fn register_coroutine(py: Python<'_>) -> PyResult<()> {
    let coroutine = py.import("collections.abc")?.getattr("Coroutine")?;
    coroutine.call_method1("register", (py.get_type::<BreakerAwaitable>(),))?;
    Ok(())
}
