//! Bindings of the keyed limiters: `KeyedTokenBucket`, `KeyedSlidingWindow`, `KeyedSemaphore`
//! over `admission_core::keyed`. Argument checks, key conversion, counting; no decisions.
//!
//! A key whose state is lent (its callers wait; see `admission/keyed.py`) is answered by the
//! Python half, through `_lent_*` methods, so the fast path never looks at Python objects.

use admission_core::keyed::{Access, Full, KeyState, Keyed, KeyedCounts};
use admission_core::keyed_state::{
    BucketConfig, BucketKey, PermitConfig, PermitKey, WindowConfig, WindowKey,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyInt, PyString};
use pyo3::IntoPyObjectExt;

use crate::args::{count, label, real};
use crate::clock::{Clock, ClockArg, ManualClock};
use crate::decision::Decision;
use crate::errors;

/// Shards of a map unless told otherwise: enough that threads rarely meet on one lock, few
/// enough that at scale each shard's table spans whole huge pages (at a million keys, 16
/// tables of 4 MiB: see `huge_pages`; 64 tables of 1 MiB would get none).
const DEFAULT_SHARDS: usize = 16;

/// `_lend`'s answers besides a state: the key is lent already, or no key is at rest to make
/// room for it.
const ALREADY_LENT: i64 = -1;
const NO_ROOM: i64 = -2;

/// A keyed limiter's map with its clock and name.
pub struct KeyedState<S: KeyState> {
    pub map: Keyed<S>,
    clock: Clock,
    clock_obj: Option<Py<ManualClock>>,
    name: Option<String>,
}

/// The bytes that identify `key`: a str's UTF-8, bytes as they are, an int's decimal digits
/// (so `42` and `"42"` are the same key). Anything else is a `TypeError`.
#[inline]
pub(crate) fn with_key_bytes<R>(key: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    if let Ok(s) = key.cast::<PyString>() {
        return Ok(f(s.to_str()?.as_bytes()));
    }
    if let Ok(b) = key.cast::<PyBytes>() {
        return Ok(f(b.as_bytes()));
    }
    if key.is_instance_of::<PyInt>() && !key.is_instance_of::<PyBool>() {
        return Ok(f(key.str()?.to_str()?.as_bytes()));
    }
    Err(PyTypeError::new_err(format!(
        "key must be str, bytes or int, got {}",
        key.get_type().name()?
    )))
}

/// Asks the processor to fetch the slot where `id`'s search starts, so that with a million
/// keys (a map far larger than the caches) the trip to memory overlaps the clock's read that
/// comes before the update instead of following it: about a tenth of such a call.
#[inline]
fn prefetch<S: KeyState>(map: &Keyed<S>, id: [u64; 2]) {
    #[cfg(target_arch = "x86_64")]
    map.prefetch(id, |address| {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is a hint with no architectural effect: it reads nothing into
        // the program, writes nothing and never faults, whatever the address (here that of a
        // slot of a live table). SSE, which it needs, is part of x86-64's baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(address.cast()) }
    });
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (map, id);
}

fn seconds_to_ns(arg: &str, seconds: f64) -> PyResult<u64> {
    if seconds.is_nan() || seconds <= 0.0 {
        return Err(PyValueError::new_err(format!(
            "{arg} must be a number of seconds > 0, got {seconds}"
        )));
    }
    Ok(
        if seconds.is_infinite() || seconds * 1e9 >= u64::MAX as f64 {
            u64::MAX
        } else {
            (seconds * 1e9).round().max(1.0) as u64
        },
    )
}

impl<S: KeyState> KeyedState<S> {
    fn new(
        config: S::Config,
        max_keys: u64,
        idle_ttl: &Bound<'_, PyAny>,
        shards: Option<usize>,
        clock: Option<&ClockArg<'_>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let idle_ns = seconds_to_ns("idle_ttl", real("idle_ttl", idle_ttl)?)?;
        let map = Keyed::new(config, max_keys, idle_ns, shards.unwrap_or(DEFAULT_SHARDS))
            .map_err(errors::config)?;
        Ok(Self {
            map,
            clock: Clock::from_arg(clock),
            clock_obj: match clock {
                Some(ClockArg::Manual(c)) => Some(c.clone().unbind()),
                _ => None,
            },
            name: label("name", name)?,
        })
    }

    #[inline]
    fn now(&self, py: Python<'_>) -> PyResult<u64> {
        self.clock.now(py)
    }

    #[inline]
    fn id(&self, key: &Bound<'_, PyAny>) -> PyResult<[u64; 2]> {
        with_key_bytes(key, |bytes| self.map.id(bytes))
    }

    /// Runs an immediate decision on `key`, counting an admission, and a refusal (for want
    /// of room too) if `count_refusal` (not when the caller will wait); `Ok(None)` when the
    /// key is lent.
    #[inline]
    fn decide<E>(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        cost: u64,
        count_refusal: bool,
        decide: impl FnOnce(&mut S, &S::Config, u64) -> Result<bool, E>,
        error: impl FnOnce(Python<'_>, E) -> PyErr,
    ) -> PyResult<Option<bool>> {
        let id = self.id(key)?;
        prefetch(&self.map, id);
        let now = self.now(py)?;
        let result = self.map.update(id, now, |state, config, counts| {
            let decided = decide(state, config, now);
            match decided {
                Ok(true) => {
                    counts.admitted += 1;
                    counts.admitted_cost += cost;
                }
                _ if count_refusal => counts.rejected += 1,
                _ => {}
            }
            decided
        });
        match result {
            Ok(Access::Here(Ok(admitted))) => Ok(Some(admitted)),
            Ok(Access::Here(Err(e))) => Err(error(py, e)),
            Ok(Access::Lent) => Ok(None),
            Err(Full) => {
                if count_refusal {
                    self.map.absorb(&KeyedCounts {
                        rejected: 1,
                        ..KeyedCounts::default()
                    });
                }
                Ok(Some(false))
            }
        }
    }

    /// Lends `key`'s state out: `convert(state)` or `ALREADY_LENT` / `NO_ROOM`.
    fn lend(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        convert: impl FnOnce(S, &S::Config, u64) -> i64,
    ) -> PyResult<i64> {
        let now = self.now(py)?;
        Ok(match self.map.lend(self.id(key)?, now) {
            Ok(Some(state)) => convert(state, self.map.config(), now),
            Ok(None) => ALREADY_LENT,
            Err(Full) => NO_ROOM,
        })
    }

    fn give_back(&self, py: Python<'_>, key: &Bound<'_, PyAny>, state: S) -> PyResult<()> {
        self.map.give_back(self.id(key)?, self.now(py)?, state);
        Ok(())
    }

    fn counts(&self) -> (u64, u64, u64, u64, u64, u64, u64, u64) {
        let c = self.map.counts();
        (
            c.admitted,
            c.admitted_cost,
            c.rejected,
            c.timed_out,
            c.cancelled,
            c.expired,
            c.evicted,
            c.refused_full,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn absorb(
        &self,
        admitted: u64,
        admitted_cost: u64,
        rejected: u64,
        timed_out: u64,
        cancelled: u64,
    ) {
        self.map.absorb(&KeyedCounts {
            admitted,
            admitted_cost,
            rejected,
            timed_out,
            cancelled,
            ..KeyedCounts::default()
        });
    }
}

/// A decision, or (for a lent key) the answer of the Python half's `method`.
#[inline]
fn lent_or<T: pyo3::PyClass>(
    slf: &Bound<'_, T>,
    decided: Option<bool>,
    method: &Bound<'_, PyString>,
    key: &Bound<'_, PyAny>,
    cost: u64,
) -> PyResult<bool> {
    match decided {
        Some(admitted) => Ok(admitted),
        None => slf.as_any().call_method1(method, (key, cost))?.extract(),
    }
}

/// The methods every keyed limiter has, written once.
macro_rules! keyed_pymethods {
    ($cls:ident, $kind:literal, { $($extra:tt)* }) => {
        #[pymethods]
        impl $cls {
            $($extra)*

            /// Keys held now (keys past `idle_ttl` are removed first, when the clock can
            /// be read: a `LoopClock` outside a running loop cannot, and the keys are then
            /// counted as they are).
            fn __len__(&self, py: Python<'_>) -> usize {
                if let Ok(now) = self.state.now(py) {
                    self.state.map.sweep(now);
                }
                self.state.map.len() as usize
            }

            /// Removes the keys unused for `idle_ttl` whose state is at rest; returns how
            /// many (this also happens on its own as keys are used).
            fn sweep(&self, py: Python<'_>) -> PyResult<u64> {
                Ok(self.state.map.sweep(self.state.now(py)?))
            }

            #[getter]
            fn max_keys(&self) -> u64 {
                self.state.map.max_keys()
            }

            #[getter]
            fn idle_ttl(&self) -> f64 {
                crate::args::ns_to_s(self.state.map.idle_ns())
            }

            #[getter]
            fn shards(&self) -> usize {
                self.state.map.shards()
            }

            #[getter]
            fn name(&self) -> Option<&str> {
                self.state.name.as_deref()
            }

            #[getter]
            fn clock(&self, py: Python<'_>) -> Option<Py<ManualClock>> {
                self.state.clock_obj.as_ref().map(|c| c.clone_ref(py))
            }

            #[getter]
            fn _clock_kind(&self) -> &'static str {
                self.state.clock.kind()
            }

            /// `(admitted, admitted_cost, rejected, timed_out, cancelled, expired, evicted,
            /// refused_full)` of the keys served here.
            fn _counts(&self) -> (u64, u64, u64, u64, u64, u64, u64, u64) {
                self.state.counts()
            }

            /// Adds the counters of a lent key's limiter (when its state comes back).
            fn _absorb(
                &self,
                admitted: u64,
                admitted_cost: u64,
                rejected: u64,
                timed_out: u64,
                cancelled: u64,
            ) {
                self.state
                    .absorb(admitted, admitted_cost, rejected, timed_out, cancelled);
            }

            #[getter]
            fn _kind(&self) -> &'static str {
                $kind
            }
        }
    };
}

/// Native keyed token bucket. The public class is `admission.KeyedTokenBucket`.
#[pyclass(frozen, subclass, weakref, module = "admission._native")]
pub struct KeyedTokenBucket {
    state: KeyedState<BucketKey>,
    rate: f64,
    per: f64,
}

keyed_pymethods!(KeyedTokenBucket, "keyed_token_bucket", {
    #[new]
    #[pyo3(
        signature = (rate, per=None, burst=None, *, max_keys=1_000_000, idle_ttl=None, shards=None, clock=None, name=None),
        text_signature = "(rate, per=1.0, burst=None, *, max_keys=1000000, idle_ttl=600.0, shards=None, clock=None, name=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        rate: &Bound<'_, PyAny>,
        per: Option<&Bound<'_, PyAny>>,
        burst: Option<&Bound<'_, PyAny>>,
        max_keys: u64,
        idle_ttl: Option<&Bound<'_, PyAny>>,
        shards: Option<usize>,
        clock: Option<ClockArg<'_>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let rate_f = real("rate", rate)?;
        let per_f = per.map_or(Ok(1.0), |p| real("per", p))?;
        let default_burst = if rate_f.is_finite() && rate_f >= 1.0 {
            rate_f.floor() as u64
        } else {
            1
        };
        let burst = count("burst", burst, default_burst)?;
        let config = BucketConfig::new(rate_f, per_f, burst).map_err(errors::config)?;
        let default_ttl = 600.0f64.into_pyobject(py)?.into_any();
        let idle_ttl = idle_ttl.unwrap_or(&default_ttl);
        Ok(Self {
            state: KeyedState::new(config, max_keys, idle_ttl, shards, clock.as_ref(), name)?,
            rate: rate_f,
            per: per_f,
        })
    }

    /// Admits `cost` for `key` now, or refuses now; never waits.
    #[pyo3(signature = (key, cost=None), text_signature = "($self, key, cost=1)")]
    fn try_acquire(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        cost: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let py = slf.py();
        let cost = count("cost", cost, 1)?;
        let this = slf.get();
        let decided = this.state.decide(
            py,
            key,
            cost,
            true,
            |s, c, now| s.try_take(c, now, cost),
            errors::acquire,
        )?;
        lent_or(slf, decided, intern!(py, "_lent_try_acquire"), key, cost)
    }

    /// `try_acquire` counting only an admission (the caller waits after a refusal).
    fn _try_take(slf: &Bound<'_, Self>, key: &Bound<'_, PyAny>, cost: u64) -> PyResult<bool> {
        let py = slf.py();
        let decided = slf.get().state.decide(
            py,
            key,
            cost,
            false,
            |s, c, now| s.try_take(c, now, cost),
            errors::acquire,
        )?;
        lent_or(slf, decided, intern!(py, "_lent_try_take"), key, cost)
    }

    /// What `try_acquire(key, cost)` would decide now; consumes nothing.
    #[pyo3(signature = (key, cost=None), text_signature = "($self, key, cost=1)")]
    fn peek(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        cost: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let cost = count("cost", cost, 1)?;
        let state = &slf.get().state;
        let now = state.now(py)?;
        match state.map.read(state.id(key)?, |s, c| {
            s.copied().unwrap_or_default().peek(c, now, cost)
        }) {
            Access::Here(Ok(d)) => Decision::from(d).into_py_any(py),
            Access::Here(Err(e)) => Err(errors::acquire(py, e)),
            Access::Lent => Ok(slf
                .call_method1(intern!(py, "_lent_peek"), (key, cost))?
                .unbind()),
        }
    }

    /// Lends the key's state to an unkeyed bucket: the whole tokens it uses (rounded up),
    /// or -1 (already lent) or -2 (no room for a new key).
    fn _lend(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<i64> {
        self.state.lend(py, key, |s, c, now| s.used(c, now) as i64)
    }

    /// Ends the loan of a key whose bucket is full again.
    fn _give_back(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        self.state.give_back(py, key, BucketKey::default())
    }

    #[getter]
    fn rate(&self) -> f64 {
        self.rate
    }

    #[getter]
    fn per(&self) -> f64 {
        self.per
    }

    #[getter]
    fn burst(&self) -> u64 {
        self.state.map.config().burst
    }
});

/// Native keyed sliding window. The public class is `admission.KeyedSlidingWindow`.
#[pyclass(frozen, subclass, weakref, module = "admission._native")]
pub struct KeyedSlidingWindow {
    state: KeyedState<WindowKey>,
    window: f64,
}

keyed_pymethods!(KeyedSlidingWindow, "keyed_sliding_window", {
    #[new]
    #[pyo3(
        signature = (limit, window, *, max_keys=1_000_000, idle_ttl=None, shards=None, clock=None, name=None),
        text_signature = "(limit, window, *, max_keys=1000000, idle_ttl=600.0, shards=None, clock=None, name=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        limit: &Bound<'_, PyAny>,
        window: &Bound<'_, PyAny>,
        max_keys: u64,
        idle_ttl: Option<&Bound<'_, PyAny>>,
        shards: Option<usize>,
        clock: Option<ClockArg<'_>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let limit = count("limit", Some(limit), 0)?;
        let window_s = real("window", window)?;
        let config = WindowConfig::new(limit, window_s).map_err(errors::config)?;
        let default_ttl = 600.0f64.into_pyobject(py)?.into_any();
        let idle_ttl = idle_ttl.unwrap_or(&default_ttl);
        Ok(Self {
            state: KeyedState::new(config, max_keys, idle_ttl, shards, clock.as_ref(), name)?,
            window: window_s,
        })
    }

    /// Admits `cost` for `key` now, or refuses now; never waits.
    #[pyo3(signature = (key, cost=None), text_signature = "($self, key, cost=1)")]
    fn try_acquire(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        cost: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let py = slf.py();
        let cost = count("cost", cost, 1)?;
        let decided = slf.get().state.decide(
            py,
            key,
            cost,
            true,
            |s, c, now| s.try_take(c, now, cost),
            errors::acquire,
        )?;
        lent_or(slf, decided, intern!(py, "_lent_try_acquire"), key, cost)
    }

    /// `try_acquire` counting only an admission (the caller waits after a refusal).
    fn _try_take(slf: &Bound<'_, Self>, key: &Bound<'_, PyAny>, cost: u64) -> PyResult<bool> {
        let py = slf.py();
        let decided = slf.get().state.decide(
            py,
            key,
            cost,
            false,
            |s, c, now| s.try_take(c, now, cost),
            errors::acquire,
        )?;
        lent_or(slf, decided, intern!(py, "_lent_try_take"), key, cost)
    }

    /// What `try_acquire(key, cost)` would decide now; consumes nothing.
    #[pyo3(signature = (key, cost=None), text_signature = "($self, key, cost=1)")]
    fn peek(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        cost: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let cost = count("cost", cost, 1)?;
        let state = &slf.get().state;
        let now = state.now(py)?;
        let fresh = WindowKey::default();
        match state.map.read(state.id(key)?, |s, c| {
            s.unwrap_or(&fresh).peek(c, now, cost)
        }) {
            Access::Here(Ok(d)) => Decision::from(d).into_py_any(py),
            Access::Here(Err(e)) => Err(errors::acquire(py, e)),
            Access::Lent => Ok(slf
                .call_method1(intern!(py, "_lent_peek"), (key, cost))?
                .unbind()),
        }
    }

    /// Lends the key's state to an unkeyed window: the cost admitted within the window now,
    /// or -1 (already lent) or -2 (no room for a new key).
    fn _lend(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<i64> {
        self.state.lend(py, key, |s, c, now| {
            s.admissions(c, now)
                .iter()
                .map(|&(_, cost)| cost)
                .sum::<u64>() as i64
        })
    }

    /// Ends the loan of a key whose window is empty again.
    fn _give_back(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        self.state.give_back(py, key, WindowKey::default())
    }

    #[getter]
    fn limit(&self) -> u64 {
        self.state.map.config().limit
    }

    #[getter]
    fn window(&self) -> f64 {
        self.window
    }
});

/// Native keyed semaphore. The public class is `admission.KeyedSemaphore`.
#[pyclass(frozen, subclass, weakref, module = "admission._native")]
pub struct KeyedSemaphore {
    state: KeyedState<PermitKey>,
}

keyed_pymethods!(KeyedSemaphore, "keyed_semaphore", {
    #[new]
    #[pyo3(
        signature = (limit, *, max_keys=1_000_000, idle_ttl=None, shards=None, clock=None, name=None),
        text_signature = "(limit, *, max_keys=1000000, idle_ttl=600.0, shards=None, clock=None, name=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        limit: &Bound<'_, PyAny>,
        max_keys: u64,
        idle_ttl: Option<&Bound<'_, PyAny>>,
        shards: Option<usize>,
        clock: Option<ClockArg<'_>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let limit = count("limit", Some(limit), 0)?;
        let config = PermitConfig::new(limit).map_err(|e| errors::semaphore(py, e))?;
        let default_ttl = 600.0f64.into_pyobject(py)?.into_any();
        let idle_ttl = idle_ttl.unwrap_or(&default_ttl);
        Ok(Self {
            state: KeyedState::new(config, max_keys, idle_ttl, shards, clock.as_ref(), name)?,
        })
    }

    /// Takes `n` of `key`'s permits now if they are free (and nobody waits for them).
    #[pyo3(signature = (key, n=None), text_signature = "($self, key, n=1)")]
    fn try_acquire(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        n: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let py = slf.py();
        let n = count("n", n, 1)?;
        let decided = slf.get().state.decide(
            py,
            key,
            n,
            true,
            |s, c, _| s.try_take(c, n),
            errors::semaphore,
        )?;
        lent_or(slf, decided, intern!(py, "_lent_try_acquire"), key, n)
    }

    /// `try_acquire` counting only an admission (the caller waits after a refusal).
    fn _try_take(slf: &Bound<'_, Self>, key: &Bound<'_, PyAny>, n: u64) -> PyResult<bool> {
        let py = slf.py();
        let decided = slf.get().state.decide(
            py,
            key,
            n,
            false,
            |s, c, _| s.try_take(c, n),
            errors::semaphore,
        )?;
        lent_or(slf, decided, intern!(py, "_lent_try_take"), key, n)
    }

    /// Gives back `n` of `key`'s permits. Giving back more than the key holds is a
    /// `ValueError`.
    #[pyo3(signature = (key, n=None), text_signature = "($self, key, n=1)")]
    fn release(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        n: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let n = count("n", n, 1)?;
        let state = &slf.get().state;
        let now = state.now(py)?;
        match state
            .map
            .update_held(state.id(key)?, now, |s, _, _| s.release(n))
        {
            Some(Access::Here(result)) => result.map_err(|e| errors::semaphore(py, e)),
            None => PyKeyedRelease::not_held(key, n),
            Some(Access::Lent) => {
                slf.call_method1(intern!(py, "_lent_release"), (key, n))?;
                Ok(())
            }
        }
    }

    /// Permits `key` holds now.
    fn in_use(slf: &Bound<'_, Self>, key: &Bound<'_, PyAny>) -> PyResult<u64> {
        let py = slf.py();
        let state = &slf.get().state;
        match state
            .map
            .read(state.id(key)?, |s, _| s.map_or(0, |s| s.held))
        {
            Access::Here(held) => Ok(held),
            Access::Lent => slf
                .call_method1(intern!(py, "_lent_in_use"), (key,))?
                .extract(),
        }
    }

    /// Lends the key's permits to an unkeyed semaphore: how many it holds, or -1 (already
    /// lent) or -2 (no room for a new key).
    fn _lend(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<i64> {
        self.state.lend(py, key, |s, _, _| s.held as i64)
    }

    /// Ends the loan of a key nobody waits for: it holds `held` permits.
    fn _give_back(&self, py: Python<'_>, key: &Bound<'_, PyAny>, held: u64) -> PyResult<()> {
        self.state.give_back(py, key, PermitKey { held })
    }

    #[getter]
    fn limit(&self) -> u64 {
        self.state.map.config().limit
    }
});

/// The error of a release for a key that holds nothing.
struct PyKeyedRelease;

impl PyKeyedRelease {
    fn not_held(key: &Bound<'_, PyAny>, n: u64) -> PyResult<()> {
        Err(PyValueError::new_err(format!(
            "released {n} permit(s) of key {} but it holds none",
            key.repr()?
        )))
    }
}
