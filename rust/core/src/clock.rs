//! Monotonic time in nanoseconds.
//!
//! The core itself never reads a clock: callers pass `now`. This module provides the two
//! clocks the bindings use: the process's monotonic clock and a manual clock for tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since a fixed point early in the process's life (the first call).
///
/// Starts near zero rather than at the OS's boot-relative value so that `u64` timestamps can
/// never overflow within any realistic process lifetime (2^64 ns is 584 years).
#[inline]
pub fn monotonic_ns() -> u64 {
    let epoch = EPOCH.get_or_init(Instant::now);
    // `as u64` cannot truncate: it would take 584 years of uptime.
    epoch.elapsed().as_nanos() as u64
}

/// A clock that moves only when told to. Shared between threads; reads are one atomic load.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    pub fn new(start_ns: u64) -> Self {
        Self {
            now: AtomicU64::new(start_ns),
        }
    }

    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.now.load(Ordering::Acquire)
    }

    /// Moves time forward by `delta_ns` (saturating) and returns the new time.
    pub fn advance(&self, delta_ns: u64) -> u64 {
        let mut cur = self.now.load(Ordering::Relaxed);
        loop {
            let next = cur.saturating_add(delta_ns);
            match self
                .now
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Sets the time, refusing to go backwards: a monotonic clock never does.
    pub fn set(&self, ns: u64) -> Result<(), u64> {
        let mut cur = self.now.load(Ordering::Relaxed);
        loop {
            if ns < cur {
                return Err(cur);
            }
            match self
                .now
                .compare_exchange_weak(cur, ns, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(actual) => cur = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_never_goes_back() {
        let mut prev = monotonic_ns();
        for _ in 0..10_000 {
            let now = monotonic_ns();
            assert!(now >= prev);
            prev = now;
        }
    }

    #[test]
    fn manual_clock_advances_and_refuses_to_rewind() {
        let c = ManualClock::new(5);
        assert_eq!(c.now_ns(), 5);
        assert_eq!(c.advance(10), 15);
        assert_eq!(c.set(14), Err(15));
        assert_eq!(c.set(20), Ok(()));
        assert_eq!(c.advance(u64::MAX), u64::MAX);
    }
}
