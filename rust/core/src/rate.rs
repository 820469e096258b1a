//! The surface every rate limiter shares, so bindings and combinators treat them alike:
//! [`RateLimit`], which `Gcra` and `SlidingWindow` each implement, what it answers
//! ([`Decision`]), and the all-or-nothing acquisition of several limits ([`take_all`]);
//! and [`Adjust`], what a client tells a limiter after the fact (a reservation's overage, a
//! provider's pause or remaining quota).
//!
//! This module names no limiter: the limiters depend on it, never the other way round.

use crate::error::AcquireError;
use crate::histogram::HistogramSnapshot;
use crate::stats::{Counters, Refusal};
use crate::waitq::{Entered, RateTicket, Status, Withdrawal};
use crate::wakers::Wakers;

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

/// A rate limiter with a FIFO queue of waiters whose wakers are `W`.
pub trait RateLimit<W>: Send + Sync {
    /// Admits now or refuses now (refused while anyone waits); counts the outcome.
    fn try_acquire(&self, now: u64, cost: u64) -> Result<bool, AcquireError>;
    /// `try_acquire` that counts only an admission (the caller queues on a refusal).
    fn try_take(&self, now: u64, cost: u64) -> Result<bool, AcquireError>;
    /// What `try_acquire` would decide; changes and counts nothing.
    fn peek(&self, now: u64, cost: u64) -> Result<Decision, AcquireError>;
    /// Admits at once, or queues if admission is due within `max_wait_ns`.
    fn enqueue(
        &self,
        now: u64,
        cost: u64,
        max_wait_ns: u64,
        waker: W,
        admit_now: bool,
    ) -> Result<Entered, AcquireError>;
    /// Admits now without counting; returns the record `untake` needs.
    fn take(&self, now: u64, cost: u64) -> Result<Option<u64>, AcquireError>;
    /// Undoes, at `now`, a `take` of `cost` that returned `record` at `taken_at` (as exactly
    /// as it can be); returns wakers of waiters that can go. The same arguments, in the same
    /// order, as the queue's `Ledger::give_back` of an unused grant.
    fn untake(&self, now: u64, cost: u64, record: u64, taken_at: u64) -> Wakers<W>;
    /// Counts an admission made with `take` (and its wait, if it waited).
    fn commit(&self, cost: u64, waited_ns: Option<u64>);
    /// Grants the heads whose turn has come.
    fn poll(&self, now: u64) -> Wakers<W>;
    /// What a waiter should do next.
    fn status(&self, ticket: &RateTicket, now: u64) -> Status;
    /// Takes a granted request (counts it admitted); false if it was not granted.
    fn consume(&self, ticket: &RateTicket, waited_ns: u64) -> bool;
    /// Withdraws a request whose waiter gave up.
    fn withdraw(&self, ticket: &RateTicket, now: u64, how: Refusal) -> (Withdrawal, Wakers<W>);
    fn counters(&self) -> &Counters;
    /// Every admission's wait, immediate admissions as zero waits.
    fn wait_histogram(&self) -> HistogramSnapshot;
    /// Requests queued right now.
    fn waiting(&self) -> u64;
    /// How long the head of the queue has waited (0: nobody waits).
    fn oldest_wait_ns(&self, now: u64) -> u64;
    /// Removes every waiter without waking it (a limiter being collected).
    fn abandon_waiters(&self) -> Wakers<W>;
    /// Visits the queued wakers if the lock is free (a garbage collector's traversal).
    fn visit_waiters(&self, f: &mut dyn FnMut(&W));
}

/// What a client learns after admission and tells the limiter: a reservation's overage (a
/// debt, never refused: the tokens were spent), a pause the provider asked for, and how much
/// the provider says is left. None of them admits anything or lets anyone barge: waiters keep
/// their order, and their turns can only move later. (A reservation's unused part goes back
/// through [`RateLimit::untake`], by the rule a cancelled grant follows.)
pub trait Adjust {
    /// Charges `cost` as used at `now`, beyond the capacity if need be; counts nothing.
    fn charge(&self, now: u64, cost: u64);
    /// Admits nothing before `until` (a no-op when `until <= now`).
    fn pause_until(&self, now: u64, until: u64);
    /// The provider says `remaining` is left now, and that its quota is full again after
    /// `reset_after_ns`: the limiter never believes it has more than that (it only ever
    /// takes capacity away).
    fn sync(&self, now: u64, remaining: u64, reset_after_ns: Option<u64>);
}

/// One limit of an all-or-nothing acquisition: the limiter, `now` on its clock, the cost.
pub struct Part<'a, W> {
    pub limit: &'a dyn RateLimit<W>,
    pub now: u64,
    pub cost: u64,
}

/// Admits every part's cost now, or none (no waiting: each must fit, with nobody queued).
///
/// Returns `Ok(())` when all were admitted (each counted). Otherwise, nothing is counted and
/// the parts taken before the refusal are returned with their records (`Taken`), for the
/// caller to undo with [`untake_all`] at a fresh reading of each clock; the error says which
/// part refused (`Err(Ok(i))`) or that a cost can never fit (`Err(Err(e))`).
#[allow(clippy::type_complexity)]
pub fn take_all<W>(parts: &[Part<'_, W>]) -> Result<(), (Result<usize, AcquireError>, Vec<u64>)> {
    let mut records = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        match part.limit.take(part.now, part.cost) {
            Ok(Some(record)) => records.push(record),
            Ok(None) => return Err((Ok(i), records)),
            Err(e) => return Err((Err(e), records)),
        }
    }
    for part in parts {
        part.limit.commit(part.cost, None);
    }
    Ok(())
}

/// Undoes the takes of a refused [`take_all`]: `records[i]` was taken in `parts[i]` at
/// `parts[i].now`, and `now[i]` is a fresh reading of its clock. Returns the wakers of the
/// waiters this lets through.
pub fn untake_all<W>(parts: &[Part<'_, W>], records: &[u64], now: &[u64]) -> Wakers<W> {
    let mut woken = Wakers::new();
    for ((part, &record), &now) in parts.iter().zip(records).zip(now) {
        woken.extend(part.limit.untake(now, part.cost, record, part.now));
    }
    woken
}
