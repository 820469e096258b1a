//! What every primitive counts: its outcomes, and how long its admissions waited.
//!
//! [`Counters`] is the one accounting type of the semaphore and both rate limiters: they
//! count through it and never touch the [`WaitHistogram`] themselves, so an admission after a
//! wait is always counted together with its wait ([`Counters::commit`]).
//!
//! Relaxed atomics: each counter is an independent tally, nobody synchronises through them.
//! They sit together on their own cache line, away from the hot decision word, so counting
//! never contends with deciding. There is deliberately no `attempts` counter: attempts are
//! the sum of the outcomes, so the identity `attempts == admitted + rejected + timed_out +
//! cancelled` holds exactly at every instant instead of only at quiescent points.

use crate::histogram::{HistogramSnapshot, WaitHistogram};
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

/// Counters of one primitive, and the waits of its admissions.
#[derive(Debug, Default)]
pub struct Counters {
    outcomes: CachePadded<Inner>,
    /// Waits of the admissions that queued; never touched by an immediate admission.
    waits: WaitHistogram,
}

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
        self.outcomes.admitted.fetch_add(1, Ordering::Relaxed);
        self.outcomes
            .admitted_cost
            .fetch_add(cost, Ordering::Relaxed);
    }
    #[inline(always)]
    pub fn rejected(&self) {
        self.outcomes.rejected.fetch_add(1, Ordering::Relaxed);
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
        self.outcomes.timed_out.fetch_add(1, Ordering::Relaxed);
    }
    #[inline]
    pub fn cancelled(&self) {
        self.cancelled_many(1);
    }
    /// `n` waiters withdrawn at once (a primitive being collected abandons its queue).
    #[inline]
    pub fn cancelled_many(&self, n: u64) {
        self.outcomes.cancelled.fetch_add(n, Ordering::Relaxed);
    }

    /// An admission of `reserved` cost settled at `actual` (a reservation whose real cost was
    /// known afterwards): the admitted cost becomes what was really used; the admission
    /// count and its wait are unchanged.
    #[inline]
    pub fn resettle(&self, reserved: u64, actual: u64) {
        let cost = &self.outcomes.admitted_cost;
        if actual >= reserved {
            cost.fetch_add(actual - reserved, Ordering::Relaxed);
        } else {
            cost.fetch_sub(reserved - actual, Ordering::Relaxed);
        }
    }

    /// Counts an admission of `cost` that waited `waited_ns` (`None`: admitted at once), with
    /// its wait: a concurrent [`Counters::wait_histogram`] sees both or neither.
    #[inline]
    pub fn commit(&self, cost: u64, waited_ns: Option<u64>) {
        match waited_ns {
            None => self.admitted(cost),
            Some(w) => self.waits.observe_admission(w, || self.admitted(cost)),
        }
    }

    /// How long every admitted request waited (immediate admissions as zero waits).
    pub fn wait_histogram(&self) -> HistogramSnapshot {
        self.waits.snapshot(|| self.snapshot().admitted)
    }

    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            admitted: self.outcomes.admitted.load(Ordering::Relaxed),
            admitted_cost: self.outcomes.admitted_cost.load(Ordering::Relaxed),
            rejected: self.outcomes.rejected.load(Ordering::Relaxed),
            timed_out: self.outcomes.timed_out.load(Ordering::Relaxed),
            cancelled: self.outcomes.cancelled.load(Ordering::Relaxed),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::histogram::bucket_of;

    #[test]
    fn an_admission_is_counted_with_its_wait() {
        let c = Counters::default();
        c.admitted(2);
        c.commit(3, None);
        c.commit(1, Some(5_000_000));
        c.rejected();
        c.cancelled_many(4);
        let s = c.snapshot();
        assert_eq!((s.admitted, s.admitted_cost), (3, 6));
        assert_eq!((s.rejected, s.cancelled, s.attempts()), (1, 4, 8));
        // Two admissions that never waited (zero waits), one in its bucket.
        let h = c.wait_histogram();
        assert_eq!(h.count(), s.admitted);
        assert_eq!((h.counts[0], h.counts[bucket_of(5_000_000)]), (2, 1));
        assert_eq!(h.sum_ns, 5_000_000);
    }

    #[test]
    fn a_settled_admission_counts_its_real_cost() {
        let c = Counters::default();
        c.commit(10, None);
        c.resettle(10, 4);
        c.commit(5, Some(1_000));
        c.resettle(5, 9);
        let s = c.snapshot();
        assert_eq!((s.admitted, s.admitted_cost), (2, 13));
        assert_eq!(c.wait_histogram().count(), 2);
    }
}
