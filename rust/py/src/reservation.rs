//! `Reservation`: costs admitted at an estimate in one or more rate limiters, settled
//! afterwards at what was really used (`admission.reserve` documents the rules).
//!
//! Taking a reservation at once (`take_now`: every limiter admits now, or none does) and
//! settling it are one native call each: the client's hot path, per request. The waiting is
//! Python's (`admission._rate_wait`), which builds a `Reservation` from the grants it waited
//! for. Every rule is the limiters' own: a part settled lower gives the unused part back by
//! `RateLimit::untake` (a cancelled grant's rule: waiters first, never below a pause's
//! floor), higher is charged as a debt by `Adjust::charge`, and the admitted cost counted
//! follows the settled one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use admission_core::{Adjust, RateLimit, Wakers};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyInt, PyString, PyTuple};

use crate::allof::Member;
use crate::args::count;
use crate::errors;
use crate::rate::{wake_all, PyWaker, RateState};

/// One limit a reservation holds: what `untake` needs to give part of it back.
struct Held {
    member: Member,
    /// The cost admitted (the estimate).
    cost: u64,
    /// The limiter's record of the admission, and when it was made (its clock).
    record: u64,
    taken_at: u64,
}

impl Held {
    /// Settles this part at `cost` (not its reserved cost): the unused part back, or the
    /// overage charged; then the admitted cost counted follows. All or nothing: the clock
    /// is read first, the one step that can fail before the limiter changes; then the
    /// change and its count, which cannot fail. Returns the cost the part now stands at
    /// (`cost`, or its reserved cost if its clock could not be read), and the error.
    fn settle(&self, py: Python<'_>, cost: u64) -> (u64, Option<PyErr>) {
        let woken = match &self.member {
            Member::Bucket(b) => self.settle_in(py, &b.get().state, cost),
            Member::Window(w) => self.settle_in(py, &w.get().state, cost),
        };
        match woken {
            // Applied: a waker that fails is raised, the part stays settled.
            Ok(woken) => (cost, wake_all(py, woken).err()),
            Err(e) => (self.cost, Some(e)),
        }
    }

    /// The change itself: the waiters the unused part lets through, or the clock's error
    /// with nothing changed.
    fn settle_in<L: RateLimit<PyWaker> + Adjust>(
        &self,
        py: Python<'_>,
        state: &RateState<L>,
        cost: u64,
    ) -> PyResult<Wakers<PyWaker>> {
        let now = state.now(py)?;
        let woken = if cost < self.cost {
            state
                .core
                .untake(now, self.cost - cost, self.record, self.taken_at)
        } else {
            state.core.charge(now, cost - self.cost);
            Wakers::new()
        };
        state.resettle(self.cost, cost);
        Ok(woken)
    }
}

/// Gives back every part taken (a refused or failed `take_now`), each at a fresh reading of
/// its clock, counting nothing; then wakes the waiters this lets through. Every part is
/// given back even if a clock read fails: the first error is returned at the end.
fn untake_held(py: Python<'_>, held: &[Held]) -> PyResult<()> {
    let mut first_error = None;
    for part in held {
        let limit = part.member.limit();
        match part.member.now(py) {
            Ok(now) => {
                let now = now.max(part.taken_at);
                let woken = limit.untake(now, part.cost, part.record, part.taken_at);
                if let Err(e) = wake_all(py, woken) {
                    first_error.get_or_insert(e);
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// `error` with a note that giving back the parts taken before it failed too (`also`): the
/// error the caller should see is the first one, which made the give-back necessary.
fn noting_also(py: Python<'_>, error: PyErr, also: &PyErr) -> PyErr {
    let note = format!(
        "admission: giving back the limits taken before this error failed too: {}",
        also.value(py)
            .repr()
            .map_or_else(|_| "?".to_owned(), |r| r.to_string())
    );
    let value = error.value(py);
    // `add_note` from Python 3.11; before it, `__notes__` is the same list (PEP 678).
    let noted = if value.hasattr("add_note").unwrap_or(false) {
        value.call_method1("add_note", (note,)).map(drop)
    } else {
        match value.getattr("__notes__") {
            Ok(notes) => notes.call_method1("append", (note,)).map(drop),
            Err(_) => value.setattr("__notes__", vec![note]),
        }
    };
    drop(noted); // (a note that cannot be added: the error itself still goes up)
    error
}

/// `primary` checked against a reservation of `n` limits.
fn primary_of(primary: Option<usize>, n: usize) -> PyResult<Option<usize>> {
    match primary {
        Some(i) if i >= n => Err(PyValueError::new_err(format!(
            "primary must be the index of one of the {n} limits, got {i}"
        ))),
        _ => Ok(primary),
    }
}

/// `value` as a cost of `name`: an int from 0 to 2**64 - 1 (not a bool), with
/// `admission.reserve`'s messages.
fn checked_cost(name: &str, value: &Bound<'_, PyAny>) -> PyResult<u64> {
    if value.is_exact_instance_of::<PyInt>() {
        if let Ok(cost) = value.extract::<u64>() {
            return Ok(cost); // (the usual: a plain int that fits)
        }
    } else if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be an int, got {} {}",
            value.get_type().name()?,
            value.repr()?
        )));
    }
    match value.extract::<u64>() {
        Ok(cost) => Ok(cost),
        Err(_) if value.lt(0)? => Err(PyValueError::new_err(format!(
            "{name} must be >= 0, got {}",
            value.str()?
        ))),
        Err(_) => Err(PyValueError::new_err(format!(
            "{name} must be at most 2**64 - 1, got {}",
            value.str()?
        ))),
    }
}

/// `(a, b, ...)` as Python writes a tuple of ints: `(5,)` for one.
fn tuple_repr(costs: &[u64]) -> String {
    match costs {
        [one] => format!("({one},)"),
        _ => {
            let items: Vec<String> = costs.iter().map(u64::to_string).collect();
            format!("({})", items.join(", "))
        }
    }
}

/// Costs admitted at an estimate; `settle` them at what was really used.
///
/// >>> import admission as adm
/// >>> tpm = adm.TokenBucket(rate=1000, per=60.0)
/// >>> with tpm.reserve(800) as r:
/// ...     r.settle(300)                  # 500 go back
/// >>> tpm.stats().admitted_cost, tpm.peek(700).allowed
/// (300, True)
#[pyclass(frozen, module = "admission._native")]
pub struct Reservation {
    parts: Vec<Held>,
    /// The part `settle(actual)` settles (the others keep their cost); None: an all_of's,
    /// settled with `costs=(...)`.
    primary: Option<usize>,
    /// A settle has begun: set once, by the first `settle` (a second one is refused).
    settling: AtomicBool,
    /// The costs it stands at once settled: what was applied to each part (a part whose
    /// clock failed keeps its reserved cost). Set when the first `settle` ends.
    settled: OnceLock<Box<[u64]>>,
}

impl Reservation {
    fn reserved_costs(&self) -> impl ExactSizeIterator<Item = u64> + '_ {
        self.parts.iter().map(|p| p.cost)
    }

    /// The costs `settle(actual)` or `settle(costs=...)` asks for, checked.
    fn costs(
        &self,
        actual: Option<&Bound<'_, PyAny>>,
        costs: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Box<[u64]>> {
        let n = self.parts.len();
        match (actual, costs) {
            (Some(actual), None) => {
                let Some(primary) = self.primary else {
                    return Err(PyTypeError::new_err(format!(
                        "this reservation holds {n} limits: settle(costs=(...)) with one cost each"
                    )));
                };
                let actual = checked_cost("actual", actual)?;
                let mut new: Box<[u64]> = self.reserved_costs().collect();
                new[primary] = actual;
                Ok(new)
            }
            (None, Some(costs)) => {
                if costs.is_instance_of::<PyString>()
                    || costs.is_instance_of::<PyBytes>()
                    || costs.len()? != n
                {
                    return Err(PyValueError::new_err(format!(
                        "costs must have one entry per limiter ({n}), got {}",
                        costs.repr()?
                    )));
                }
                let new = costs
                    .try_iter()?
                    .map(|cost| checked_cost("costs", &cost?))
                    .collect::<PyResult<Box<[u64]>>>()?;
                if new.len() != n {
                    // (a sequence whose iteration disagrees with its len)
                    return Err(PyValueError::new_err(format!(
                        "costs must have one entry per limiter ({n}), got {}",
                        costs.repr()?
                    )));
                }
                Ok(new)
            }
            _ => Err(PyTypeError::new_err(
                "settle() takes the actual cost, or costs=(...) for all_of: one of them",
            )),
        }
    }

    /// The transports' settle of the primary part (`TokenTally.settle_reservation`): at
    /// `tokens`, or (None) at its estimate, which then stands. The tokens it is settled at.
    pub(crate) fn settle_primary(&self, py: Python<'_>, tokens: Option<u64>) -> PyResult<u64> {
        let Some(primary) = self.primary else {
            return Err(PyTypeError::new_err(
                "this reservation holds several limits: settle(costs=(...))",
            ));
        };
        let Some(tokens) = tokens else {
            return Ok(self.parts[primary].cost);
        };
        let mut new: Box<[u64]> = self.reserved_costs().collect();
        new[primary] = tokens;
        self.settle_at(py, new)?;
        Ok(tokens)
    }

    /// Settles every part at `new` (once only). Every part is settled even if one raises (a
    /// LoopClock read outside its loop): the first error is raised at the end, and
    /// `settled` says what each part stands at.
    fn settle_at(&self, py: Python<'_>, new: Box<[u64]>) -> PyResult<()> {
        if self.settling.swap(true, Ordering::AcqRel) {
            let before = self
                .settled
                .get()
                .map_or("(being settled)".to_owned(), |s| tuple_repr(s));
            return Err(PyRuntimeError::new_err(format!(
                "admission: this reservation was settled already at {before}"
            )));
        }
        let mut applied = new;
        let mut first_error = None;
        for (part, cost) in self.parts.iter().zip(applied.iter_mut()) {
            if *cost == part.cost {
                continue; // (the usual part of an all_of: a request is one request)
            }
            let (stands_at, error) = part.settle(py, *cost);
            *cost = stands_at;
            if let Some(e) = error {
                first_error.get_or_insert(e);
            }
        }
        // (only this call, which set `settling`, sets it)
        let _ = self.settled.set(applied);
        first_error.map_or(Ok(()), Err)
    }
}

#[pymethods]
impl Reservation {
    /// A reservation of the limits ``parts`` holds: ``(limiter, cost, (record, time))``
    /// each, as a waited-for grant gives them (`admission.reserve`); ``primary``: the part
    /// ``settle(actual)`` settles (None: settled with ``costs=``).
    #[new]
    #[pyo3(signature = (parts, primary=None))]
    fn new(parts: &Bound<'_, PyAny>, primary: Option<usize>) -> PyResult<Self> {
        let parts = parts
            .try_iter()?
            .map(|part| {
                let (limiter, cost, (record, taken_at)): (Bound<'_, PyAny>, u64, (u64, u64)) =
                    part?.extract()?;
                let Some(member) = Member::of(&limiter) else {
                    return Err(PyTypeError::new_err(format!(
                        "a reservation holds TokenBucket or SlidingWindow objects, got {}",
                        limiter.repr()?
                    )));
                };
                Ok(Held {
                    member,
                    cost,
                    record,
                    taken_at,
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let primary = primary_of(primary, parts.len())?;
        Ok(Self {
            parts,
            primary,
            settling: AtomicBool::new(false),
            settled: OnceLock::new(),
        })
    }

    /// The costs admitted, one per limiter.
    #[getter]
    fn reserved<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.reserved_costs())
    }

    /// The costs it was settled at, or None if it has not been. (A part whose clock could
    /// not be read keeps its reserved cost: what it stands at.)
    #[getter]
    fn settled<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        self.settled
            .get()
            .map(|s| PyTuple::new(py, s.iter()))
            .transpose()
    }

    /// Settles at the real cost: ``settle(actual)`` for one limiter (and for
    /// ``manager.limit(name, tokens=n)``: its tokens), ``settle(costs=(...))`` with one cost
    /// per limiter for an `all_of`. The unused part goes back (waiters first); an overage is
    /// charged as a debt. Once only: a second call raises `RuntimeError`.
    ///
    /// Raises:
    ///     TypeError / ValueError: a cost that is not an int >= 0, or the wrong number of
    ///         costs.
    ///     RuntimeError: settled already.
    #[pyo3(signature = (actual=None, *, costs=None))]
    fn settle(
        &self,
        py: Python<'_>,
        actual: Option<&Bound<'_, PyAny>>,
        costs: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let new = self.costs(actual, costs)?;
        self.settle_at(py, new)
    }

    /// Settles at zero: everything goes back (the call never used the limits).
    fn refund(&self, py: Python<'_>) -> PyResult<()> {
        self.settle_at(py, vec![0; self.parts.len()].into_boxed_slice())
    }

    fn __repr__(&self) -> String {
        let reserved: Vec<u64> = self.reserved_costs().collect();
        let settled = self
            .settled
            .get()
            .map_or("None".to_owned(), |s| tuple_repr(s));
        format!(
            "<Reservation reserved={} settled={settled}>",
            tuple_repr(&reserved)
        )
    }
}

/// The reservation of ``costs`` if every limiter admits its cost now (nobody waits, it
/// fits), else None with nothing taken nor counted: `admission.reserve.take_now`.
/// ``primary``: the limiter ``settle(actual)`` settles (None: settled with ``costs=``).
#[pyfunction]
#[pyo3(signature = (limiters, costs, primary=None))]
pub fn take_now(
    py: Python<'_>,
    limiters: &Bound<'_, PyAny>,
    costs: &Bound<'_, PyAny>,
    primary: Option<usize>,
) -> PyResult<Option<Reservation>> {
    let members = limiters
        .try_iter()?
        .map(|limiter| {
            let limiter = limiter?;
            Member::of(&limiter).ok_or_else(|| {
                PyTypeError::new_err(format!(
                    "take_now() takes TokenBucket or SlidingWindow objects, got {}",
                    limiter.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let costs = costs
        .try_iter()?
        .map(|cost| count("cost", Some(&cost?), 1))
        .collect::<PyResult<Vec<_>>>()?;
    if costs.len() != members.len() {
        return Err(PyValueError::new_err(format!(
            "costs must have one entry per limiter ({}), got {}",
            members.len(),
            costs.len()
        )));
    }
    take(py, members, &costs, primary)
}

/// `take_now` of `costs` in `members` (one each; `primary` an index of them or None).
pub(crate) fn take(
    py: Python<'_>,
    members: Vec<Member>,
    costs: &[u64],
    primary: Option<usize>,
) -> PyResult<Option<Reservation>> {
    let primary = primary_of(primary, members.len())?;
    let mut parts: Vec<Held> = Vec::with_capacity(members.len());
    for (member, &cost) in members.into_iter().zip(costs) {
        let taken = member
            .now(py)
            .and_then(|now| match member.limit().take(now, cost) {
                Ok(record) => Ok(record.map(|record| (record, now))),
                Err(e) => Err(errors::acquire(py, e)),
            });
        match taken {
            Ok(Some((record, taken_at))) => parts.push(Held {
                member,
                cost,
                record,
                taken_at,
            }),
            // Refused (or failed): what was taken goes back, and nothing is counted.
            Ok(None) => return untake_held(py, &parts).map(|()| None),
            // The take's own error is raised, even if the give-back fails too (noted).
            Err(e) => {
                return Err(match untake_held(py, &parts) {
                    Ok(()) => e,
                    Err(also) => noting_also(py, e, &also),
                });
            }
        }
    }
    for part in &parts {
        part.member.limit().commit(part.cost, None);
    }
    Ok(Some(Reservation {
        parts,
        primary,
        settling: AtomicBool::new(false),
        settled: OnceLock::new(),
    }))
}
