//! Exact sliding window: never more than `limit` cost in any window of `window` length.
//!
//! A request at time `t` is admitted iff the cost admitted in `(t - window, t]` plus its own
//! cost is at most `limit`. The state is the log of admissions still inside the window, as
//! `(timestamp, cost)` pairs in time order (requests with the same timestamp share one entry),
//! plus their running total, behind a mutex held for a few nanoseconds.
//!
//! Memory: at most one 16-byte entry per unit of cost admitted within the last `window`, so
//! at most `16 × limit` bytes (1.6 MB for a limit of 100,000), plus the deque's slack. For
//! very large limits where an approximation is acceptable, a token bucket with
//! `burst = limit, rate = limit per window` is O(1) in memory.
//!
//! Rejections change no decision: the only write they make is dropping entries that have
//! already left the window, which every later decision would ignore anyway.

use std::collections::VecDeque;

use crate::error::{seconds_to_ns, AcquireError, ConfigError};
use crate::gcra::Decision;
use crate::histogram::{HistogramSnapshot, WaitHistogram};
use crate::stats::{Counters, Refusal};
use crate::sync::Mutex;

#[derive(Debug, Default)]
struct Log {
    entries: VecDeque<(u64, u64)>,
    total: u64,
}

impl Log {
    /// Drops entries that have left the window ending at `now`.
    fn evict(&mut self, now: u64, window_ns: u64) {
        while let Some(&(ts, cost)) = self.entries.front() {
            if ts.saturating_add(window_ns) > now {
                break;
            }
            self.total -= cost;
            self.entries.pop_front();
        }
    }

    fn push(&mut self, ts: u64, cost: u64) {
        if cost == 0 {
            return;
        }
        self.total += cost;
        match self.entries.back_mut() {
            Some(last) if last.0 == ts => last.1 += cost,
            _ => self.entries.push_back((ts, cost)),
        }
    }

    fn newest(&self) -> Option<u64> {
        self.entries.back().map(|e| e.0)
    }

    /// Earliest time `>= floor` at which `cost` more fits into the window.
    fn earliest_fit(&self, floor: u64, cost: u64, limit: u64, window_ns: u64) -> u64 {
        let excess = (self.total + cost).saturating_sub(limit);
        if excess == 0 {
            return floor;
        }
        let mut expired = 0;
        for &(ts, c) in &self.entries {
            expired += c;
            if expired >= excess {
                return floor.max(ts + window_ns);
            }
        }
        // Unreachable while cost <= limit: expiring every entry frees the whole window.
        floor.max(self.newest().unwrap_or(0) + window_ns)
    }
}

#[derive(Debug)]
pub struct SlidingWindow {
    log: Mutex<Log>,
    limit: u64,
    window_ns: u64,
    counters: Counters,
    /// Waits of the requests that reserved ahead; never touched by an immediate admission.
    waits: WaitHistogram,
}

impl SlidingWindow {
    pub fn new(limit: u64, window_s: f64) -> Result<Self, ConfigError> {
        if limit < 1 {
            return Err(ConfigError::new(
                "limit",
                format!("limit must be >= 1, got {limit}"),
            ));
        }
        if limit > u32::MAX as u64 {
            return Err(ConfigError::new(
                "limit",
                format!("limit must be <= {}, got {limit}", u32::MAX),
            ));
        }
        let window_ns = seconds_to_ns("window", window_s)?;
        Ok(Self {
            log: Mutex::new(Log::default()),
            limit,
            window_ns,
            counters: Counters::default(),
            waits: WaitHistogram::new(),
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn window_ns(&self) -> u64 {
        self.window_ns
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    fn check_cost(&self, cost: u64) -> Result<(), AcquireError> {
        if cost > self.limit {
            return Err(AcquireError::Capacity {
                cost,
                capacity: self.limit,
            });
        }
        Ok(())
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, Log> {
        // A panic while holding this lock can only come from a bug in this module; the log is
        // still consistent (every mutation is a single step), so keep serving.
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits `cost` now if it fits in the window. Counts the outcome.
    pub fn try_acquire(&self, now: u64, cost: u64) -> Result<bool, AcquireError> {
        self.check_cost(cost)?;
        let mut log = self.lock();
        log.evict(now, self.window_ns);
        // A reservation in the future means someone is already waiting: no barging past them.
        let queued = log.newest().is_some_and(|ts| ts > now);
        if queued || log.total + cost > self.limit {
            drop(log);
            self.counters.rejected();
            return Ok(false);
        }
        log.push(now, cost);
        drop(log);
        self.counters.admitted(cost);
        Ok(true)
    }

    /// What `try_acquire(cost)` would decide now; admits nothing and counts nothing.
    pub fn peek(&self, now: u64, cost: u64) -> Result<Decision, AcquireError> {
        self.check_cost(cost)?;
        let mut log = self.lock();
        log.evict(now, self.window_ns);
        let at = log.earliest_fit(now, cost, self.limit, self.window_ns);
        let at = at.max(log.newest().unwrap_or(0));
        let allowed = at <= now;
        let total_after = if allowed { log.total + cost } else { log.total };
        // A zero-cost request adds nothing to the log, so it cannot move the reset time.
        let last = if allowed && cost > 0 {
            now
        } else {
            log.newest().unwrap_or(now)
        };
        Ok(Decision {
            allowed,
            remaining: self.limit.saturating_sub(total_after),
            retry_after_ns: at.saturating_sub(now),
            reset_after_ns: if total_after == 0 {
                0
            } else {
                (last + self.window_ns).saturating_sub(now)
            },
        })
    }

    /// Reserves `cost` at the earliest time it fits, after every earlier reservation (FIFO),
    /// if that is at most `max_wait_ns` away. Returns the reserved timestamp; the caller waits
    /// until then and ends the reservation with [`SlidingWindow::commit`] or
    /// [`SlidingWindow::refund`].
    pub fn reserve(&self, now: u64, cost: u64, max_wait_ns: u64) -> Result<u64, AcquireError> {
        self.check_cost(cost)?;
        let mut log = self.lock();
        log.evict(now, self.window_ns);
        let floor = now.max(log.newest().unwrap_or(0));
        let at = log.earliest_fit(floor, cost, self.limit, self.window_ns);
        let wait = at - now;
        if wait > max_wait_ns {
            return Err(AcquireError::WouldExceedDeadline { needed_ns: wait });
        }
        log.push(at, cost);
        Ok(at)
    }

    /// Ends a reservation whose wait completed: counts it admitted.
    pub fn commit(&self, cost: u64) {
        self.counters.admitted(cost);
    }

    /// Like [`SlidingWindow::commit`], for a request that waited `waited_ns`: also records it.
    pub fn commit_waited(&self, cost: u64, waited_ns: u64) {
        self.waits
            .observe_admission(waited_ns, || self.counters.admitted(cost));
    }

    /// How long every admitted request waited (immediate admissions as zero waits).
    pub fn wait_histogram(&self) -> HistogramSnapshot {
        self.waits.snapshot(|| self.counters.snapshot().admitted)
    }

    /// Removes a reservation made at `at` that will not be used.
    pub fn refund(&self, at: u64, cost: u64, how: Refusal) {
        let mut log = self.lock();
        let mut left = cost;
        let mut index = log.entries.len();
        while left > 0 && index > 0 {
            index -= 1;
            let (ts, c) = log.entries[index];
            if ts < at {
                break; // already evicted, or never there: nothing to give back
            }
            if ts == at {
                let take = c.min(left);
                left -= take;
                log.total -= take;
                if take == c {
                    log.entries.remove(index);
                } else {
                    log.entries[index].1 -= take;
                }
            }
        }
        drop(log);
        self.counters.refused(how);
    }

    /// Entries currently held: the memory cost is 16 bytes each.
    pub fn log_len(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn never_more_than_limit_in_any_window() {
        let w = SlidingWindow::new(3, 1.0).unwrap();
        assert_eq!(w.try_acquire(0, 2), Ok(true));
        assert_eq!(w.try_acquire(S / 2, 1), Ok(true));
        assert_eq!(w.try_acquire(S / 2, 1), Ok(false));
        // At exactly 1 s the first entry has left (window is (t-1s, t]).
        assert_eq!(w.try_acquire(S - 1, 1), Ok(false));
        assert_eq!(w.try_acquire(S, 2), Ok(true));
        assert_eq!(w.try_acquire(S, 1), Ok(false));
        assert_eq!(w.try_acquire(S + S / 2, 1), Ok(true));
    }

    #[test]
    fn peek_reports_retry_and_reset() {
        let w = SlidingWindow::new(2, 10.0).unwrap();
        assert_eq!(w.try_acquire(0, 1), Ok(true));
        assert_eq!(w.try_acquire(S, 1), Ok(true));
        let d = w.peek(2 * S, 1).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after_ns, 8 * S);
        assert_eq!(d.reset_after_ns, 9 * S);
        let d = w.peek(2 * S, 0).unwrap();
        assert!(d.allowed);
        let d = w.peek(10 * S, 1).unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(w.log_len(), 1);
    }

    #[test]
    fn capacity_error_for_cost_over_limit() {
        let w = SlidingWindow::new(2, 1.0).unwrap();
        assert!(matches!(
            w.try_acquire(0, 3),
            Err(AcquireError::Capacity { .. })
        ));
    }

    #[test]
    fn reservations_are_fifo_block_barging_and_refund() {
        let w = SlidingWindow::new(1, 1.0).unwrap();
        assert_eq!(w.try_acquire(0, 1), Ok(true));
        assert_eq!(w.reserve(0, 1, 5 * S), Ok(S));
        assert_eq!(w.reserve(0, 1, 5 * S), Ok(2 * S));
        assert_eq!(
            w.reserve(0, 1, S),
            Err(AcquireError::WouldExceedDeadline { needed_ns: 3 * S })
        );
        // Someone waits: no barging even when the window would have room at that instant.
        assert_eq!(w.try_acquire(S, 1), Ok(false));
        w.refund(2 * S, 1, Refusal::Cancelled);
        w.refund(S, 1, Refusal::TimedOut);
        assert_eq!(w.try_acquire(S, 1), Ok(true));
    }

    #[test]
    fn memory_is_bounded_by_limit() {
        let w = SlidingWindow::new(100, 1.0).unwrap();
        for i in 0..10_000u64 {
            let _ = w.try_acquire(i * 1_000_000, 1);
            assert!(w.log_len() <= 100);
        }
    }

    #[test]
    fn bad_configuration_names_the_argument() {
        assert_eq!(SlidingWindow::new(0, 1.0).unwrap_err().arg, "limit");
        assert_eq!(SlidingWindow::new(1, 0.0).unwrap_err().arg, "window");
        assert_eq!(SlidingWindow::new(1, f64::NAN).unwrap_err().arg, "window");
        assert_eq!(SlidingWindow::new(1, 1e-12).unwrap_err().arg, "window");
    }
}
