//! Token bucket as GCRA (generic cell rate algorithm) on one atomic word.
//!
//! State is a single "theoretical arrival time" `tat` (ns). A request of cost `c` at time `now`
//! is admitted iff `max(tat, now) + c·T <= now + burst·T`, where `T` is the emission interval
//! (the time one token takes to refill). Admission stores the new `tat` with one CAS; rejection
//! is a load and a compare and writes nothing, so a flood of rejected calls cannot slow down or
//! starve admitted ones.
//!
//! Equivalent token-bucket reading: capacity `burst`, refilled continuously at one token per
//! `T`, starting full (`tat = 0 <= now`). Over any interval of length `t` at most
//! `burst + t / T` cost is admitted.
//!
//! Precision: `T` is a whole number of nanoseconds, rounded *up* from `per / rate`, so the
//! limiter may be slower than asked by less than 1 ns per token (a relative error below
//! `1 ns / T`, e.g. 8e-10 for 50 per minute) and is never faster than asked.

use crate::error::{positive_finite, AcquireError, ConfigError};
use crate::histogram::{HistogramSnapshot, WaitHistogram};
use crate::padded::CachePadded;
use crate::rate::Reservation;
use crate::stats::{Counters, Refusal};
use crate::sync::{AtomicU64, Mutex, Ordering};
use crate::{MAX_SPAN_NS, NANOS_PER_SEC};

/// What a request would get now; returned by `peek`, which consumes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Whole units of cost that could be admitted right now (after this request, if allowed).
    pub remaining: u64,
    /// Nanoseconds until this request would be admitted; 0 when allowed.
    pub retry_after_ns: u64,
    /// Nanoseconds until the limiter is back to full capacity.
    pub reset_after_ns: u64,
}

#[derive(Debug)]
pub struct Gcra {
    tat: CachePadded<AtomicU64>,
    /// `T`: nanoseconds per unit of cost.
    emission_ns: u64,
    /// `burst · T`: how far `tat` may run ahead of `now`.
    capacity_ns: u64,
    burst: u64,
    counters: Counters,
    /// Waits of the requests that reserved ahead ([`Gcra::commit_waited`]); never touched by
    /// an immediate admission.
    waits: WaitHistogram,
    /// Refunds parked because later reservations were queued behind them: `(end, cost·T)`.
    /// Slow path only (cancellations); see [`Gcra::refund`].
    parked: Mutex<Vec<(u64, u64)>>,
}

/// Most parked refunds kept per bucket; beyond it the oldest is dropped (its slot stays
/// spent: conservative).
const MAX_PARKED: usize = 1024;

impl Gcra {
    /// `rate` units of cost per `per_s` seconds, bursts of up to `burst`.
    pub fn new(rate: f64, per_s: f64, burst: u64) -> Result<Self, ConfigError> {
        let rate = positive_finite("rate", rate)?;
        let per_s = positive_finite("per", per_s)?;
        if burst < 1 {
            return Err(ConfigError::new(
                "burst",
                format!("burst must be >= 1, got {burst}"),
            ));
        }
        let emission_ns = emission_interval_ns(rate, per_s)?;
        let capacity_ns = emission_ns
            .checked_mul(burst)
            .filter(|&c| c < MAX_SPAN_NS)
            .ok_or_else(|| {
                ConfigError::new(
                    "burst",
                    format!(
                        "burst {burst} at {rate} per {per_s} s takes too long to refill \
                         (over 70 years)"
                    ),
                )
            })?;
        Ok(Self {
            tat: CachePadded::new(AtomicU64::new(0)),
            emission_ns,
            capacity_ns,
            burst,
            counters: Counters::default(),
            waits: WaitHistogram::new(),
            parked: Mutex::new(Vec::new()),
        })
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }

    pub fn emission_ns(&self) -> u64 {
        self.emission_ns
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    #[inline(always)]
    fn check_cost(&self, cost: u64) -> Result<u64, AcquireError> {
        if cost > self.burst {
            return Err(AcquireError::Capacity {
                cost,
                capacity: self.burst,
            });
        }
        // Cannot overflow: cost <= burst and burst * T < MAX_SPAN_NS.
        Ok(cost * self.emission_ns)
    }

    /// Admits `cost` now if it fits, without waiting. Counts the outcome.
    #[inline]
    pub fn try_acquire(&self, now: u64, cost: u64) -> Result<bool, AcquireError> {
        let increment = self.check_cost(cost)?;
        let admitted = self.advance(now, increment, 0).is_ok();
        if admitted {
            self.counters.admitted(cost);
        } else {
            self.counters.rejected();
        }
        Ok(admitted)
    }

    /// The one CAS loop of admission (`try_acquire` is `reserve` with no wait allowed): pushes
    /// `tat` by `increment` from `max(tat, now)` if the request is then due within
    /// `max_wait_ns`. Returns the reservation, or the wait it would need, having written
    /// nothing.
    #[inline(always)]
    fn advance(&self, now: u64, increment: u64, max_wait_ns: u64) -> Result<Reservation, u64> {
        let limit = now.saturating_add(self.capacity_ns);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let new_tat = tat.max(now) + increment;
            let wait = new_tat.saturating_sub(limit);
            if wait > max_wait_ns {
                return Err(wait);
            }
            // AcqRel: a successful CAS orders this admission after every admission it observed.
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Ok(Reservation {
                        wait_ns: wait,
                        token: new_tat,
                    })
                }
                Err(actual) => tat = actual,
            }
        }
    }

    /// What `try_acquire(cost)` would decide now; changes nothing and counts nothing.
    pub fn peek(&self, now: u64, cost: u64) -> Result<Decision, AcquireError> {
        let increment = self.check_cost(cost)?;
        let tat = self.tat.load(Ordering::Acquire).max(now);
        let limit = now.saturating_add(self.capacity_ns);
        let new_tat = tat + increment;
        let reset_after_ns = tat - now;
        if new_tat <= limit {
            Ok(Decision {
                allowed: true,
                remaining: (limit - new_tat) / self.emission_ns,
                retry_after_ns: 0,
                reset_after_ns: new_tat - now,
            })
        } else {
            Ok(Decision {
                allowed: false,
                // `tat` is past `limit` while reservations are queued beyond the burst.
                remaining: limit.saturating_sub(tat) / self.emission_ns,
                retry_after_ns: new_tat - limit,
                reset_after_ns,
            })
        }
    }

    /// Reserves `cost` for the earliest moment it fits, if that is at most `max_wait_ns` away.
    ///
    /// Returns how long the caller must wait before proceeding (0: proceed now). Reservations
    /// are served in the order they are made (FIFO by construction: each one pushes `tat`), so
    /// a large request is never starved by small ones. A reservation that would need longer than
    /// `max_wait_ns` fails at once with the time it would need and writes nothing. The caller
    /// must end every successful reservation with [`Gcra::commit`] or [`Gcra::refund`]; a
    /// failed one counts nothing (the caller knows which outcome it is).
    pub fn reserve(
        &self,
        now: u64,
        cost: u64,
        max_wait_ns: u64,
    ) -> Result<Reservation, AcquireError> {
        let increment = self.check_cost(cost)?;
        self.advance(now, increment, max_wait_ns)
            .map_err(|needed_ns| AcquireError::WouldExceedDeadline { needed_ns })
    }

    /// Ends a reservation whose wait completed: counts it admitted.
    pub fn commit(&self, cost: u64) {
        self.counters.admitted(cost);
    }

    /// Like [`Gcra::commit`], for a request that waited `waited_ns`: also records the wait.
    pub fn commit_waited(&self, cost: u64, waited_ns: u64) {
        self.waits
            .observe_admission(waited_ns, || self.counters.admitted(cost));
    }

    /// How long every admitted request waited (immediate admissions as zero waits).
    pub fn wait_histogram(&self) -> HistogramSnapshot {
        self.waits.snapshot(|| self.counters.snapshot().admitted)
    }

    /// Ends a reservation that will not be used, counting it as `how`; `token` is the
    /// reservation's `token` (the `tat` it left behind).
    ///
    /// The cost goes back at once if this is still the latest reservation (`tat == token`:
    /// one CAS). Otherwise later reservations are scheduled behind it, and handing its slot to
    /// a newcomer would double-book the time already promised to them: the refund is parked,
    /// and applied when the reservations behind it are refunded in turn and `tat` walks back
    /// to its end (a whole cancelled queue is refunded, in any order). If a later reservation
    /// is used instead, the parked slot stays spent: the limiter runs below the rate for that
    /// slot, never above it.
    pub fn refund(&self, cost: u64, token: u64, how: Refusal) {
        let decrement = cost.min(self.burst) * self.emission_ns;
        if decrement > 0 {
            let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
            let mut end = token;
            let mut step = decrement;
            loop {
                let start = end.saturating_sub(step);
                if self
                    .tat
                    .compare_exchange(end, start, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
                {
                    if end == token {
                        if parked.len() >= MAX_PARKED {
                            parked.remove(0);
                        }
                        parked.push((token, decrement));
                    }
                    break;
                }
                // The tail moved back to `start`: a reservation parked there is now the tail.
                match parked.iter().position(|&(e, _)| e == start) {
                    Some(i) => (end, step) = parked.swap_remove(i),
                    None => break,
                }
            }
        }
        self.counters.refused(how);
    }
}

/// `per / rate` in whole nanoseconds, rounded up (never faster than asked).
fn emission_interval_ns(rate: f64, per_s: f64) -> Result<u64, ConfigError> {
    let per_ns = per_s * NANOS_PER_SEC as f64;
    let exact = per_ns / rate;
    // Tolerate float noise just above a whole number (e.g. 1.2e9 + 2e-7) instead of adding 1 ns.
    let rounded = exact.round();
    let t = if (exact - rounded).abs() <= exact * 1e-12 {
        rounded
    } else {
        exact.ceil()
    };
    if t < 1.0 || exact < 1.0 - 1e-9 {
        return Err(ConfigError::new(
            "rate",
            format!(
                "rate {rate} per {per_s} s is over 1e9 per second, finer than the clock's \
                 1 ns resolution"
            ),
        ));
    }
    if t >= MAX_SPAN_NS as f64 {
        return Err(ConfigError::new(
            "rate",
            format!("rate {rate} per {per_s} s is too slow (one unit per 70+ years)"),
        ));
    }
    Ok(t as u64)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const S: u64 = NANOS_PER_SEC;

    #[test]
    fn starts_full_and_refills_continuously() {
        let b = Gcra::new(1.0, 1.0, 3).unwrap();
        assert_eq!(b.emission_ns(), S);
        for _ in 0..3 {
            assert_eq!(b.try_acquire(0, 1), Ok(true));
        }
        assert_eq!(b.try_acquire(0, 1), Ok(false));
        assert_eq!(b.try_acquire(S - 1, 1), Ok(false));
        assert_eq!(b.try_acquire(S, 1), Ok(true));
        assert_eq!(b.try_acquire(S, 1), Ok(false));
        // Idle for a long time: back to full, not more.
        assert_eq!(b.try_acquire(100 * S, 3), Ok(true));
        assert_eq!(b.try_acquire(100 * S, 1), Ok(false));
    }

    #[test]
    fn rejection_writes_nothing() {
        let b = Gcra::new(1.0, 1.0, 1).unwrap();
        assert_eq!(b.try_acquire(0, 1), Ok(true));
        let before = b.tat.load(Ordering::Relaxed);
        for _ in 0..100 {
            assert_eq!(b.try_acquire(S / 2, 1), Ok(false));
        }
        assert_eq!(b.tat.load(Ordering::Relaxed), before);
        assert_eq!(b.try_acquire(S, 1), Ok(true));
    }

    #[test]
    fn cost_over_burst_is_a_capacity_error() {
        let b = Gcra::new(10.0, 1.0, 5).unwrap();
        assert_eq!(
            b.try_acquire(0, 6),
            Err(AcquireError::Capacity {
                cost: 6,
                capacity: 5
            })
        );
        assert!(b.peek(0, 6).is_err());
        assert!(b.reserve(0, 6, u64::MAX).is_err());
        assert_eq!(b.try_acquire(0, 5), Ok(true));
    }

    #[test]
    fn peek_matches_try_acquire_and_changes_nothing() {
        let b = Gcra::new(2.0, 1.0, 4).unwrap();
        let d = b.peek(0, 1).unwrap();
        assert_eq!(
            d,
            Decision {
                allowed: true,
                remaining: 3,
                retry_after_ns: 0,
                reset_after_ns: S / 2
            }
        );
        assert_eq!(b.try_acquire(0, 4), Ok(true));
        let d = b.peek(0, 1).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after_ns, S / 2);
        assert_eq!(d.reset_after_ns, 2 * S);
        let d = b.peek(S / 2, 1).unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn zero_cost_is_always_admitted() {
        let b = Gcra::new(1.0, 1.0, 1).unwrap();
        assert_eq!(b.try_acquire(0, 1), Ok(true));
        assert_eq!(b.try_acquire(0, 0), Ok(true));
    }

    #[test]
    fn reservations_are_fifo_and_refunds_give_back() {
        let b = Gcra::new(1.0, 1.0, 1).unwrap();
        let wait = |r: Result<Reservation, AcquireError>| r.map(|r| r.wait_ns);
        assert_eq!(wait(b.reserve(0, 1, 0)), Ok(0));
        assert_eq!(wait(b.reserve(0, 1, 10 * S)), Ok(S));
        let third = b.reserve(0, 1, 10 * S).unwrap();
        assert_eq!(third.wait_ns, 2 * S);
        assert_eq!(
            wait(b.reserve(0, 1, S)),
            Err(AcquireError::WouldExceedDeadline { needed_ns: 3 * S })
        );
        // A failed reservation wrote nothing.
        let fourth = b.reserve(0, 1, 3 * S).unwrap();
        assert_eq!(fourth.wait_ns, 3 * S);
        // Refunds from the tail give the slots back, latest first.
        b.refund(1, fourth.token, Refusal::Cancelled);
        b.refund(1, third.token, Refusal::TimedOut);
        assert_eq!(wait(b.reserve(0, 1, 10 * S)), Ok(2 * S));
        let c = b.counters().snapshot();
        assert_eq!((c.cancelled, c.timed_out), (1, 1));
    }

    #[test]
    fn refunding_a_reservation_in_the_middle_never_double_books() {
        // Burst 1, one per second, drained: A due at 1 s, B at 2 s. A is cancelled, then C
        // arrives: C must not get B's slot at 2 s (the slot of A stays spent instead).
        let b = Gcra::new(1.0, 1.0, 1).unwrap();
        assert_eq!(b.try_acquire(0, 1), Ok(true));
        let a = b.reserve(0, 1, 10 * S).unwrap();
        let bee = b.reserve(0, 1, 10 * S).unwrap();
        assert_eq!((a.wait_ns, bee.wait_ns), (S, 2 * S));
        b.refund(1, a.token, Refusal::Cancelled);
        let c = b.reserve(0, 1, 10 * S).unwrap();
        assert_eq!(c.wait_ns, 3 * S);
    }

    #[test]
    fn a_whole_cancelled_queue_is_refunded_in_any_order() {
        let b = Gcra::new(1.0, 1.0, 1).unwrap();
        assert_eq!(b.try_acquire(0, 1), Ok(true));
        let r: Vec<_> = (0..4).map(|_| b.reserve(0, 1, 10 * S).unwrap()).collect();
        // FIFO order: each refund but the last is parked, then the last unwinds them all.
        for x in &r {
            b.refund(1, x.token, Refusal::Cancelled);
        }
        assert_eq!(b.reserve(0, 1, 10 * S).unwrap().wait_ns, S);
        assert_eq!(b.counters().snapshot().cancelled, 4);
    }

    #[test]
    fn a_parked_refund_behind_a_used_reservation_stays_spent() {
        let b = Gcra::new(1.0, 1.0, 1).unwrap();
        assert_eq!(b.try_acquire(0, 1), Ok(true));
        let a = b.reserve(0, 1, 10 * S).unwrap();
        let used = b.reserve(0, 1, 10 * S).unwrap();
        b.refund(1, a.token, Refusal::Cancelled);
        b.commit(1);
        let _ = used;
        assert_eq!(b.reserve(0, 1, 10 * S).unwrap().wait_ns, 3 * S);
    }

    #[test]
    fn peek_while_reservations_queue_past_the_burst() {
        let b = Gcra::new(1.0, 1.0, 1).unwrap();
        assert_eq!(b.reserve(0, 1, 0).unwrap().wait_ns, 0);
        assert_eq!(b.reserve(0, 1, 10 * S).unwrap().wait_ns, S);
        assert_eq!(b.reserve(0, 1, 10 * S).unwrap().wait_ns, 2 * S);
        let d = b.peek(0, 1).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after_ns, 3 * S);
    }

    #[test]
    fn waited_commits_fill_the_histogram_immediate_ones_count_as_zero() {
        use crate::histogram::bucket_of;
        let b = Gcra::new(1.0, 1.0, 2).unwrap();
        assert_eq!(b.try_acquire(0, 1), Ok(true));
        assert_eq!(b.try_acquire(0, 1), Ok(true));
        assert_eq!(b.try_acquire(0, 1), Ok(false));
        let wait = b.reserve(0, 1, 10 * S).unwrap().wait_ns;
        assert_eq!(wait, S);
        b.commit_waited(1, wait);
        let h = b.wait_histogram();
        assert_eq!(h.count(), b.counters().snapshot().admitted);
        assert_eq!(h.counts[0], 2);
        assert_eq!(h.counts[bucket_of(S)], 1);
        assert_eq!(h.sum_ns, S);
    }

    #[test]
    fn bad_configuration_names_the_argument() {
        assert_eq!(Gcra::new(0.0, 1.0, 1).unwrap_err().arg, "rate");
        assert_eq!(Gcra::new(-1.0, 1.0, 1).unwrap_err().arg, "rate");
        assert_eq!(Gcra::new(f64::NAN, 1.0, 1).unwrap_err().arg, "rate");
        assert_eq!(Gcra::new(f64::INFINITY, 1.0, 1).unwrap_err().arg, "rate");
        assert_eq!(Gcra::new(1.0, 0.0, 1).unwrap_err().arg, "per");
        assert_eq!(Gcra::new(1.0, f64::NAN, 1).unwrap_err().arg, "per");
        assert_eq!(Gcra::new(1.0, 1.0, 0).unwrap_err().arg, "burst");
        assert_eq!(Gcra::new(1e10, 1.0, 1).unwrap_err().arg, "rate");
        assert_eq!(Gcra::new(1.0, 1.0, u64::MAX).unwrap_err().arg, "burst");
    }

    #[test]
    fn emission_interval_rounds_up_only_real_fractions() {
        assert_eq!(
            Gcra::new(50.0, 60.0, 1).unwrap().emission_ns(),
            1_200_000_000
        );
        assert_eq!(Gcra::new(3.0, 1.0, 1).unwrap().emission_ns(), 333_333_334);
        assert_eq!(Gcra::new(0.1, 1.0, 1).unwrap().emission_ns(), 10 * S);
    }

    #[test]
    fn interval_bound_holds_on_a_long_pseudo_random_run() {
        // Admitted cost over any window [a, a + t] is at most burst + t / T.
        let b = Gcra::new(7.0, 1.0, 5).unwrap();
        let t = b.emission_ns();
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut now = 0u64;
        let mut admitted: Vec<(u64, u64)> = Vec::new();
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            now += seed % (t / 2);
            let cost = 1 + seed % 3;
            if b.try_acquire(now, cost).unwrap() {
                admitted.push((now, cost));
            }
        }
        for (i, &(start, _)) in admitted.iter().enumerate() {
            let mut sum = 0;
            for &(when, cost) in &admitted[i..] {
                sum += cost;
                let span = when - start;
                assert!(sum <= 5 + span / t, "{sum} admitted in {span} ns");
            }
        }
        // And a steady caller gets the rate: roughly 7/s over the run.
        let total: u64 = admitted.iter().map(|a| a.1).sum();
        let expected = 5 + now / t;
        assert!(
            total <= expected && total + 10 >= expected,
            "{total} vs {expected}"
        );
    }
}
