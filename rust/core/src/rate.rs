//! The surface every rate limiter shares, so bindings and combinators treat them alike.

use crate::error::AcquireError;
use crate::gcra::{Decision, Gcra};
use crate::histogram::HistogramSnapshot;
use crate::stats::{Counters, Refusal};
use crate::window::SlidingWindow;

/// A successful reservation: wait `wait_ns`, then commit or refund with `token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub wait_ns: u64,
    /// What the limiter needs to find this reservation again on refund.
    pub token: u64,
}

pub trait RateLimit: Send + Sync {
    /// Admits now or refuses now; counts the outcome.
    fn try_acquire(&self, now: u64, cost: u64) -> Result<bool, AcquireError>;
    /// What `try_acquire` would decide; changes and counts nothing.
    fn peek(&self, now: u64, cost: u64) -> Result<Decision, AcquireError>;
    /// Reserves the earliest slot within `max_wait_ns` (FIFO); counts nothing.
    fn reserve(&self, now: u64, cost: u64, max_wait_ns: u64) -> Result<Reservation, AcquireError>;
    /// Ends a reservation that was used.
    fn commit(&self, cost: u64);
    /// Ends a reservation that will not be used, giving it back.
    fn refund(&self, cost: u64, token: u64, how: Refusal);
    fn counters(&self) -> &Counters;
    /// Ends a reservation that was used after waiting `waited_ns`, recording the wait.
    fn commit_waited(&self, cost: u64, waited_ns: u64);
    /// Every admission's wait, immediate admissions as zero waits.
    fn wait_histogram(&self) -> HistogramSnapshot;
}

impl RateLimit for Gcra {
    #[inline]
    fn try_acquire(&self, now: u64, cost: u64) -> Result<bool, AcquireError> {
        Gcra::try_acquire(self, now, cost)
    }
    fn peek(&self, now: u64, cost: u64) -> Result<Decision, AcquireError> {
        Gcra::peek(self, now, cost)
    }
    #[inline]
    fn reserve(&self, now: u64, cost: u64, max_wait_ns: u64) -> Result<Reservation, AcquireError> {
        Gcra::reserve(self, now, cost, max_wait_ns)
    }
    fn commit(&self, cost: u64) {
        Gcra::commit(self, cost)
    }
    fn refund(&self, cost: u64, token: u64, how: Refusal) {
        Gcra::refund(self, cost, token, how)
    }
    fn counters(&self) -> &Counters {
        Gcra::counters(self)
    }
    fn commit_waited(&self, cost: u64, waited_ns: u64) {
        Gcra::commit_waited(self, cost, waited_ns)
    }
    fn wait_histogram(&self) -> HistogramSnapshot {
        Gcra::wait_histogram(self)
    }
}

impl RateLimit for SlidingWindow {
    #[inline]
    fn try_acquire(&self, now: u64, cost: u64) -> Result<bool, AcquireError> {
        SlidingWindow::try_acquire(self, now, cost)
    }
    fn peek(&self, now: u64, cost: u64) -> Result<Decision, AcquireError> {
        SlidingWindow::peek(self, now, cost)
    }
    #[inline]
    fn reserve(&self, now: u64, cost: u64, max_wait_ns: u64) -> Result<Reservation, AcquireError> {
        SlidingWindow::reserve(self, now, cost, max_wait_ns).map(|at| Reservation {
            wait_ns: at - now,
            token: at,
        })
    }
    fn commit(&self, cost: u64) {
        SlidingWindow::commit(self, cost)
    }
    fn refund(&self, cost: u64, token: u64, how: Refusal) {
        SlidingWindow::refund(self, token, cost, how)
    }
    fn counters(&self) -> &Counters {
        SlidingWindow::counters(self)
    }
    fn commit_waited(&self, cost: u64, waited_ns: u64) {
        SlidingWindow::commit_waited(self, cost, waited_ns)
    }
    fn wait_histogram(&self) -> HistogramSnapshot {
        SlidingWindow::wait_histogram(self)
    }
}
