//! Timeouts of a semaphore's asyncio waiters: one loop timer per semaphore and loop.
//!
//! A timer per waiter (`loop.call_later`) costs a Python `TimerHandle`, a heap push, and a
//! cancel when the waiter is served first, which is the common case. A semaphore's waiters
//! usually share one timeout, so their deadlines arrive in increasing order: one queue
//! sorted by deadline, with one timer armed for its head, expires them all. Waiters served
//! before their deadline are dropped from the head as new ones arrive (and when the timer
//! fires), so with a shared timeout the queue holds about as many entries as there are
//! waiters. A deadline earlier than the head (a shorter timeout) re-arms the timer.
//!
//! This module does not know what it times out: the waiter module hands it an [`Expiry`],
//! two functions that say whether an entry still waits and time it out.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use crate::critical::{with_state, CriticalCell, Guarded};

/// How the deadlines see what they time out.
pub(crate) struct Expiry {
    /// Whether the entry still waits (one that does not is dropped without a call).
    pub waiting: fn(&Bound<'_, PyAny>) -> bool,
    /// Its deadline has come: time it out (unless it was settled first).
    pub expire: fn(&Bound<'_, PyAny>) -> PyResult<()>,
}

/// The deadlines of one semaphore's waiters on one event loop, and the loop timer for the
/// earliest. Called by that timer.
#[pyclass(frozen, module = "admission._native")]
pub struct Deadlines {
    event_loop: Py<PyAny>,
    expiry: &'static Expiry,
    state: CriticalCell<Timers>,
}

pub(crate) struct Timers {
    /// Sorted by deadline (the loop's clock); equal deadlines in arrival order.
    queue: VecDeque<(f64, Py<PyAny>)>,
    /// The armed timer and the deadline it is armed for.
    timer: Option<(f64, Py<PyAny>)>,
}

impl Guarded for Deadlines {
    type State = Timers;
    fn cell(&self) -> &CriticalCell<Timers> {
        &self.state
    }
}

impl Deadlines {
    fn new(event_loop: Py<PyAny>, expiry: &'static Expiry) -> Self {
        Self {
            event_loop,
            expiry,
            state: CriticalCell::new(Timers {
                queue: VecDeque::new(),
                timer: None,
            }),
        }
    }

    /// Times `entry` out at `deadline` (on the loop's clock) unless it is settled first.
    pub(crate) fn add(
        slf: &Bound<'_, Self>,
        deadline: f64,
        entry: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        Self::drop_settled_head(slf);
        let rearm = with_state(slf, |t| {
            let queue = &mut t.queue;
            let at = if queue.back().map_or(true, |(last, _)| *last <= deadline) {
                queue.len() // the usual case: one timeout for all, so deadlines only grow
            } else {
                queue.partition_point(|(d, _)| *d <= deadline)
            };
            queue.insert(at, (deadline, entry.clone().unbind()));
            match &t.timer {
                None => true,
                Some((armed, _)) => deadline < *armed,
            }
        });
        if rearm {
            Self::arm(slf)?;
        }
        Ok(())
    }

    /// Served or withdrawn waiters leave from the head. (Each is asked outside this object's
    /// state, and dropped outside it: the last reference to a waiter may be this one.)
    fn drop_settled_head(slf: &Bound<'_, Self>) {
        let py = slf.py();
        loop {
            let head = with_state(slf, |t| t.queue.front().map(|(_, e)| e.clone_ref(py)));
            let Some(head) = head else { return };
            if (slf.get().expiry.waiting)(head.bind(py)) {
                return;
            }
            let settled = with_state(slf, |t| match t.queue.front() {
                Some((_, e)) if e.is(&head) => t.queue.pop_front(),
                _ => None,
            });
            drop(settled);
        }
    }

    /// (Re-)arms the timer for the head's deadline; stops it when the queue is empty.
    fn arm(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (old, head) = with_state(slf, |t| (t.timer.take(), t.queue.front().map(|(d, _)| *d)));
        if let Some((_, timer)) = old {
            timer.call_method0(py, intern!(py, "cancel"))?;
        }
        if let Some(deadline) = head {
            let timer =
                slf.get()
                    .event_loop
                    .call_method1(py, intern!(py, "call_at"), (deadline, slf))?;
            let replaced = with_state(slf, |t| t.timer.replace((deadline, timer)));
            drop(replaced);
        }
        Ok(())
    }
}

#[pymethods]
impl Deadlines {
    /// The timer fired: every waiter whose deadline has come times out (unless it was
    /// settled first); then the timer is armed for the next live deadline.
    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let armed = with_state(slf, |t| t.timer.take()).map(|(d, _)| d);
        // The loop runs a timer up to its clock resolution early: the deadline it was armed
        // for counts as come.
        let now: f64 = this
            .event_loop
            .call_method0(py, intern!(py, "time"))?
            .extract(py)?;
        let due = armed.map_or(now, |a| a.max(now));
        let mut first_error = None;
        loop {
            let next = with_state(slf, |t| match t.queue.front() {
                Some((deadline, _)) if *deadline <= due => t.queue.pop_front(),
                _ => None,
            });
            let Some((_, entry)) = next else { break };
            if let Err(e) = (this.expiry.expire)(entry.bind(py)) {
                first_error.get_or_insert(e);
            }
        }
        Self::drop_settled_head(slf);
        Self::arm(slf)?;
        first_error.map_or(Ok(()), Err)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> String {
        let n = with_state(slf, |t| t.queue.len());
        format!("<admission deadlines of {n} waiters>")
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        // SAFETY: the collector's traversal (see `peek_for_gc`).
        let Some(t) = (unsafe { self.state.peek_for_gc() }) else {
            return Ok(());
        };
        for (_, entry) in &t.queue {
            visit.call(entry)?;
        }
        if let Some((_, timer)) = &t.timer {
            visit.call(timer)?;
        }
        Ok(())
    }

    fn __clear__(slf: &Bound<'_, Self>) {
        let cleared = with_state(slf, |t| (std::mem::take(&mut t.queue), t.timer.take()));
        drop(cleared); // outside the guard: dropping may run finalizers
    }
}

/// The [`Deadlines`] of one semaphore, one per event loop its waiters wait on.
#[derive(Default)]
pub(crate) struct DeadlinesByLoop(Mutex<Vec<(Py<PyAny>, Py<Deadlines>)>>);

impl DeadlinesByLoop {
    fn lock(&self) -> MutexGuard<'_, Vec<(Py<PyAny>, Py<Deadlines>)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The deadlines on `event_loop` (made on first use, timing out with `expiry`).
    pub(crate) fn on<'py>(
        &self,
        event_loop: &Bound<'py, PyAny>,
        expiry: &'static Expiry,
    ) -> PyResult<Bound<'py, Deadlines>> {
        let py = event_loop.py();
        let found = self
            .lock()
            .iter()
            .find(|(lp, _)| lp.bind(py).is(event_loop))
            .map(|(_, d)| d.clone_ref(py));
        if let Some(found) = found {
            return Ok(found.into_bound(py));
        }
        // Made outside the lock: an allocation can run the garbage collector, whose
        // traversal of the semaphore takes the lock.
        let fresh = Bound::new(py, Deadlines::new(event_loop.clone().unbind(), expiry))?;
        // A new loop is the moment to forget the loops closed since (one per `asyncio.run`
        // for a long-lived semaphore): asked outside the lock, as that is Python code.
        let known: Vec<Py<PyAny>> = self.lock().iter().map(|(lp, _)| lp.clone_ref(py)).collect();
        let mut closed = Vec::new();
        for lp in known {
            if lp
                .call_method0(py, intern!(py, "is_closed"))?
                .is_truthy(py)?
            {
                closed.push(lp);
            }
        }
        let forgotten: Vec<_> = {
            let mut all = self.lock();
            let (gone, kept) = std::mem::take(&mut *all)
                .into_iter()
                .partition(|(lp, _)| closed.iter().any(|c| c.is(lp)));
            *all = kept;
            all.push((event_loop.clone().unbind(), fresh.clone().unbind()));
            gone
        };
        drop(forgotten); // after the lock: dropping them can run Python code
        Ok(fresh)
    }

    /// The garbage collector's traversal; never blocks (it can start while this thread holds
    /// the lock).
    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(all) = self.0.try_lock() {
            for (event_loop, deadlines) in all.iter() {
                visit.call(event_loop)?;
                visit.call(deadlines)?;
            }
        }
        Ok(())
    }

    /// Forgets every loop's deadlines (the semaphore is being collected).
    pub(crate) fn clear(&self) {
        let all = std::mem::take(&mut *self.lock());
        drop(all); // after the lock: dropping them can run Python code
    }
}
