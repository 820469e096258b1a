//! Timeouts of a semaphore's asyncio waiters: one loop timer per semaphore and loop.
//!
//! A timer per waiter (`loop.call_later`) costs a Python `TimerHandle`, a heap push, and a
//! cancel when the waiter is served first, which is the common case. A semaphore's waiters
//! usually share one timeout, so their deadlines arrive in increasing order: one queue
//! sorted by deadline, with one timer armed for its head, expires them all. Waiters served
//! before their deadline are dropped from the head as new ones arrive (and when the timer
//! fires), so with a shared timeout the queue holds about as many entries as there are
//! waiters. A deadline earlier than the head (a shorter timeout) re-arms the timer.

use std::collections::VecDeque;

use pyo3::intern;
use pyo3::prelude::*;

use crate::waiter::Waiter;

/// The deadlines of one semaphore's waiters on one event loop, and the loop timer for the
/// earliest. Called by that timer.
#[pyclass(module = "admission._native")]
pub struct Deadlines {
    event_loop: Py<PyAny>,
    /// Sorted by deadline (the loop's clock); equal deadlines in arrival order.
    queue: VecDeque<(f64, Py<Waiter>)>,
    /// The armed timer and the deadline it is armed for.
    timer: Option<(f64, Py<PyAny>)>,
}

impl Deadlines {
    pub(crate) fn new(event_loop: Py<PyAny>) -> Self {
        Self {
            event_loop,
            queue: VecDeque::new(),
            timer: None,
        }
    }

    /// Times `waiter` out at `deadline` (on the loop's clock) unless it is settled first.
    pub(crate) fn add(
        slf: &Bound<'_, Self>,
        deadline: f64,
        waiter: &Bound<'_, Waiter>,
    ) -> PyResult<()> {
        let py = slf.py();
        let rearm = {
            let mut this = slf.borrow_mut();
            this.drop_settled_head(py);
            let queue = &mut this.queue;
            let at = if queue.back().map_or(true, |(last, _)| *last <= deadline) {
                queue.len() // the usual case: one timeout for all, so deadlines only grow
            } else {
                queue.partition_point(|(d, _)| *d <= deadline)
            };
            queue.insert(at, (deadline, waiter.clone().unbind()));
            match &this.timer {
                None => true,
                Some((armed, _)) => deadline < *armed,
            }
        };
        if rearm {
            Self::arm(slf)?;
        }
        Ok(())
    }

    /// Served or withdrawn waiters leave from the head.
    fn drop_settled_head(&mut self, py: Python<'_>) {
        while let Some((_, waiter)) = self.queue.front() {
            if waiter.get().is_queued(py) {
                break;
            }
            self.queue.pop_front();
        }
    }

    /// (Re-)arms the timer for the head's deadline; stops it when the queue is empty.
    fn arm(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (old, head, event_loop) = {
            let mut this = slf.borrow_mut();
            let head = this.queue.front().map(|(d, _)| *d);
            (this.timer.take(), head, this.event_loop.clone_ref(py))
        };
        if let Some((_, timer)) = old {
            timer.call_method0(py, intern!(py, "cancel"))?;
        }
        if let Some(deadline) = head {
            let timer = event_loop.call_method1(py, intern!(py, "call_at"), (deadline, slf))?;
            slf.borrow_mut().timer = Some((deadline, timer));
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
        let (armed, event_loop) = {
            let mut this = slf.borrow_mut();
            let armed = this.timer.take().map(|(d, _)| d);
            (armed, this.event_loop.clone_ref(py))
        };
        // The loop runs a timer up to its clock resolution early: the deadline it was armed
        // for counts as come.
        let now: f64 = event_loop
            .call_method0(py, intern!(py, "time"))?
            .extract(py)?;
        let due = armed.map_or(now, |a| a.max(now));
        let mut first_error = None;
        loop {
            let next = {
                let mut this = slf.borrow_mut();
                match this.queue.front() {
                    Some((deadline, _)) if *deadline <= due => this.queue.pop_front(),
                    _ => None,
                }
            };
            let Some((_, waiter)) = next else { break };
            if let Err(e) = Waiter::expire(waiter.bind(py)) {
                first_error.get_or_insert(e);
            }
        }
        slf.borrow_mut().drop_settled_head(py);
        Self::arm(slf)?;
        first_error.map_or(Ok(()), Err)
    }

    fn __repr__(&self) -> String {
        format!("<admission deadlines of {} waiters>", self.queue.len())
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.event_loop)?;
        for (_, waiter) in &self.queue {
            visit.call(waiter)?;
        }
        if let Some((_, timer)) = &self.timer {
            visit.call(timer)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.queue.clear();
        self.timer = None;
    }
}
