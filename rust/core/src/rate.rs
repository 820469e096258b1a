//! The surface every rate limiter shares, so bindings and combinators treat them alike.

use crate::error::AcquireError;
use crate::gcra::{Decision, Gcra};
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
        Gcra::reserve(self, now, cost, max_wait_ns).map(|wait_ns| Reservation { wait_ns, token: 0 })
    }
    fn commit(&self, cost: u64) {
        Gcra::commit(self, cost)
    }
    fn refund(&self, cost: u64, _token: u64, how: Refusal) {
        Gcra::refund(self, cost, how)
    }
    fn counters(&self) -> &Counters {
        Gcra::counters(self)
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
}
