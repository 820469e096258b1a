//! `AllOf` binding: several rate limiters acquired together, all or nothing.
//!
//! The immediate paths (`try_acquire`, and `acquire()` when every limiter admits at once) are
//! one native call over `admission_core::take_all`. Waiting goes to the Python class's
//! `_acquire_slow`, which queues in each limiter.

use admission_core::{take_all, untake_all, Part, RateLimit};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::acquire::{self, acquire_slow, Limiter, Owner};
use crate::args::{count, timeout};
use crate::bucket::TokenBucket;
use crate::errors;
use crate::rate::{wake_all, PyWaker};
use crate::window::SlidingWindow;

/// One rate limiter of a combination (here, and a reservation's: `crate::reservation`).
pub(crate) enum Member {
    Bucket(Py<TokenBucket>),
    Window(Py<SlidingWindow>),
}

impl Member {
    /// The limiter `obj` is, or None when it is not a rate limiter.
    pub(crate) fn of(obj: &Bound<'_, PyAny>) -> Option<Self> {
        if let Ok(b) = obj.cast::<TokenBucket>() {
            Some(Self::Bucket(b.clone().unbind()))
        } else if let Ok(w) = obj.cast::<SlidingWindow>() {
            Some(Self::Window(w.clone().unbind()))
        } else {
            None
        }
    }

    pub(crate) fn limit(&self) -> &dyn RateLimit<PyWaker> {
        match self {
            Self::Bucket(b) => &b.get().state.core,
            Self::Window(w) => &w.get().state.core,
        }
    }

    pub(crate) fn now(&self, py: Python<'_>) -> PyResult<u64> {
        match self {
            Self::Bucket(b) => b.get().state.now(py),
            Self::Window(w) => w.get().state.now(py),
        }
    }

    pub(crate) fn object(&self, py: Python<'_>) -> Py<PyAny> {
        match self {
            Self::Bucket(b) => b.clone_ref(py).into_any(),
            Self::Window(w) => w.clone_ref(py).into_any(),
        }
    }
}

/// Native half of `admission.AllOf`.
#[pyclass(frozen, subclass, module = "admission._native")]
pub struct AllOf {
    members: Vec<Member>,
}

/// How an immediate all-or-nothing attempt ended.
enum Attempt {
    Admitted,
    /// Refused by the member at this index (the ones before it were asked too).
    Refused(usize),
}

impl AllOf {
    /// Admits `costs` in every member now, or in none; a refusal is not counted.
    pub(crate) fn try_take(&self, py: Python<'_>, costs: &[u64]) -> PyResult<bool> {
        Ok(matches!(self.attempt(py, costs)?, Attempt::Admitted))
    }

    /// The cost for each member: all 1 when `costs` is None.
    fn costs(&self, costs: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<u64>> {
        let n = self.members.len();
        let Some(costs) = costs.filter(|c| !c.is_none()) else {
            return Ok(vec![1; n]);
        };
        let items: Vec<Bound<'_, PyAny>> = match costs.cast::<PyTuple>() {
            Ok(t) => t.iter().collect(),
            Err(_) => costs.try_iter()?.collect::<PyResult<_>>()?,
        };
        if items.len() != n {
            return Err(PyValueError::new_err(format!(
                "costs must have one entry per limiter ({n}), got {}",
                costs.repr()?
            )));
        }
        items.iter().map(|c| count("cost", Some(c), 1)).collect()
    }

    fn attempt(&self, py: Python<'_>, costs: &[u64]) -> PyResult<Attempt> {
        let parts = self
            .members
            .iter()
            .zip(costs)
            .map(|(m, &cost)| {
                Ok(Part {
                    limit: m.limit(),
                    now: m.now(py)?,
                    cost,
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let (outcome, records) = match take_all(&parts) {
            Ok(()) => return Ok(Attempt::Admitted),
            Err(refused) => refused,
        };
        let now = parts[..records.len()]
            .iter()
            .zip(&self.members)
            .map(|(part, m)| m.now(py).map(|n| n.max(part.now)))
            .collect::<PyResult<Vec<_>>>()?;
        wake_all(py, untake_all(&parts, &records, &now))?;
        match outcome {
            Ok(i) => Ok(Attempt::Refused(i)),
            Err(e) => {
                // Refused by an error (a cost over the capacity): counted where it was raised.
                self.members[records.len()].limit().counters().rejected();
                Err(errors::acquire(py, e))
            }
        }
    }
}

impl Limiter for AllOf {
    const QUALNAME: &'static str = "AllOf.acquire";

    #[inline(always)]
    fn try_now(&self, py: Python<'_>, _n: u64, costs: &[u64]) -> PyResult<bool> {
        self.try_take(py, costs)
    }

    /// The Python path `_acquire_slow(costs, timeout)` on every framework.
    fn wait(
        slf: &Bound<'_, Self>,
        _n: u64,
        costs: &[u64],
        timeout: Option<f64>,
        _event_loop: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        acquire_slow(slf.as_any(), PyTuple::new(slf.py(), costs)?, timeout)
    }
}

#[pymethods]
impl AllOf {
    #[new]
    #[pyo3(signature = (*limiters))]
    fn new(limiters: &Bound<'_, PyTuple>) -> PyResult<Self> {
        if limiters.is_empty() {
            return Err(PyValueError::new_err(
                "all_of() needs at least one rate limiter",
            ));
        }
        let members = limiters
            .iter()
            .map(|lim| match Member::of(&lim) {
                Some(member) => Ok(member),
                None => Err(PyTypeError::new_err(format!(
                    "all_of() takes TokenBucket or SlidingWindow objects, got {}",
                    lim.repr()?
                ))),
            })
            .collect::<PyResult<_>>()?;
        Ok(Self { members })
    }

    /// The limiters, in the order given.
    #[getter]
    fn limiters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.members.iter().map(|m| m.object(py)))
    }

    /// Admits now in every limiter, or in none (a refusal charges none); never waits.
    #[pyo3(signature = (costs=None))]
    fn try_acquire(&self, py: Python<'_>, costs: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let costs = self.costs(costs)?;
        match self.attempt(py, &costs)? {
            Attempt::Admitted => Ok(true),
            Attempt::Refused(i) => {
                // Each limiter asked counts the refusal, as it would for its own try_acquire.
                for m in &self.members[..=i] {
                    m.limit().counters().rejected();
                }
                Ok(false)
            }
        }
    }

    /// Like `try_acquire`, but a refusal is not counted: for a caller that waits next, whose
    /// request is then counted once, by its real outcome.
    #[pyo3(signature = (costs=None))]
    fn _try_take(&self, py: Python<'_>, costs: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let costs = self.costs(costs)?;
        self.try_take(py, &costs)
    }

    /// Awaitable (an `Acquire`): nothing is taken until it is awaited; then immediate when
    /// every limiter admits at once, else the Python slow path `_acquire_slow(costs,
    /// timeout)`, which queues in each. On trio, a checkpoint either way.
    #[pyo3(signature = (costs=None, timeout=None))]
    fn acquire<'py>(
        slf: &Bound<'py, Self>,
        costs: Option<&Bound<'py, PyAny>>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let parsed = slf.get().costs(costs)?;
        let limit = self::timeout(timeout)?;
        acquire::acquire(slf.py(), Owner::new(slf.clone().unbind(), parsed), 0, limit)
    }

    /// `async with`: the acquisition's decision made at once (it is awaited at once).
    fn __aenter__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let costs = vec![1; slf.get().members.len()];
        acquire::enter(slf, 0, &costs, None)
    }
}
