//! Outcome counters shared by every primitive.
//!
//! Relaxed atomics: each counter is an independent tally, nobody synchronises through them.
//! They sit together on their own cache line, away from the hot decision word, so counting
//! never contends with deciding. There is deliberately no `attempts` counter: attempts are
//! the sum of the outcomes, so the identity `attempts == admitted + rejected + timed_out +
//! cancelled` holds exactly at every instant instead of only at quiescent points.

use crate::padded::CachePadded;
use crate::sync::{AtomicU64, Ordering};

/// How a request that was not admitted ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Refused at once (`try_acquire` found no room; or a waiter was refused: closed, too big).
    Rejected,
    /// Gave up at its deadline, or knew at once it could not make it.
    TimedOut,
    /// Withdrawn by its caller while waiting (task cancelled, thread interrupted).
    Cancelled,
}

#[derive(Debug, Default)]
struct Inner {
    admitted: AtomicU64,
    admitted_cost: AtomicU64,
    rejected: AtomicU64,
    timed_out: AtomicU64,
    cancelled: AtomicU64,
}

/// Counters of one primitive.
#[derive(Debug, Default)]
pub struct Counters(CachePadded<Inner>);

/// A copy of the counters at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CountersSnapshot {
    pub admitted: u64,
    /// Sum of the costs (tokens, permits) of the admitted requests.
    pub admitted_cost: u64,
    pub rejected: u64,
    pub timed_out: u64,
    pub cancelled: u64,
}

impl CountersSnapshot {
    pub fn attempts(&self) -> u64 {
        self.admitted + self.rejected + self.timed_out + self.cancelled
    }
}

impl Counters {
    #[inline(always)]
    pub fn admitted(&self, cost: u64) {
        self.0.admitted.fetch_add(1, Ordering::Relaxed);
        self.0.admitted_cost.fetch_add(cost, Ordering::Relaxed);
    }
    #[inline(always)]
    pub fn rejected(&self) {
        self.0.rejected.fetch_add(1, Ordering::Relaxed);
    }
    #[inline]
    pub fn refused(&self, how: Refusal) {
        match how {
            Refusal::Rejected => self.rejected(),
            Refusal::TimedOut => self.timed_out(),
            Refusal::Cancelled => self.cancelled(),
        }
    }
    #[inline]
    pub fn timed_out(&self) {
        self.0.timed_out.fetch_add(1, Ordering::Relaxed);
    }
    #[inline]
    pub fn cancelled(&self) {
        self.0.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            admitted: self.0.admitted.load(Ordering::Relaxed),
            admitted_cost: self.0.admitted_cost.load(Ordering::Relaxed),
            rejected: self.0.rejected.load(Ordering::Relaxed),
            timed_out: self.0.timed_out.load(Ordering::Relaxed),
            cancelled: self.0.cancelled.load(Ordering::Relaxed),
        }
    }
}
