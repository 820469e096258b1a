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

use crate::error::{positive_finite, AcquireError, ConfigError, Num};
use crate::histogram::HistogramSnapshot;
use crate::padded::CachePadded;
use crate::rate::{Adjust, Decision, RateLimit};
use crate::stats::{Counters, Refusal};
use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering};
use crate::waitq::{Entered, Ledger, RateTicket, Status, WaitQueue, Withdrawal};
use crate::wakers::Wakers;
use crate::{MAX_SPAN_NS, MAX_TIME_NS, NANOS_PER_SEC};

/// The top bit of the state word: someone waits in the queue. It makes the word larger than
/// any time, so the immediate paths refuse without a second load (no barging past waiters).
const QUEUED: u64 = 1 << 63;

pub struct Gcra<W = ()> {
    /// The theoretical arrival time `tat` of the admitted requests, with the `QUEUED` bit.
    tat: CachePadded<AtomicU64>,
    /// `T`: nanoseconds per unit of cost.
    emission_ns: u64,
    /// `burst · T`: how far `tat` may run ahead of `now`.
    capacity_ns: u64,
    burst: u64,
    counters: Counters,
    /// The waiting requests. Slow path only: the immediate paths never take this lock.
    queue: Mutex<WaitQueue<W>>,
    waiting: AtomicU64,
    /// Nothing is admitted before this time (ns; 0: never paused): the latest
    /// [`Adjust::pause_until`]. The pause itself lives in `tat`; this remembers it so that a
    /// give-back cannot undo it, and so that a request of no cost is refused during it.
    not_before: AtomicU64,
}

impl<W> std::fmt::Debug for Gcra<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gcra")
            .field("emission_ns", &self.emission_ns)
            .field("burst", &self.burst)
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .finish()
    }
}

/// The bucket seen by its queue, under the queue's lock.
struct BucketLedger<'a> {
    tat: &'a AtomicU64,
    emission_ns: u64,
    capacity_ns: u64,
    /// The pause in force (`Gcra::not_before`), read under the queue's lock.
    not_before: u64,
}

impl BucketLedger<'_> {
    fn tat(&self) -> u64 {
        self.tat.load(Ordering::Acquire) & !QUEUED
    }

    /// Rewrites `tat` (keeping or setting the bit) with a CAS loop: while the bit is clear
    /// the immediate paths may move `tat` concurrently.
    fn update(&self, f: impl Fn(u64) -> u64, queued: bool) -> u64 {
        let mut word = self.tat.load(Ordering::Acquire);
        loop {
            let next = f(word & !QUEUED);
            let with_bit = if queued { next | QUEUED } else { next };
            match self.tat.compare_exchange_weak(
                word,
                with_bit,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return next,
                Err(actual) => word = actual,
            }
        }
    }
}

impl Ledger for BucketLedger<'_> {
    fn due(&mut self, now: u64, cost: u64) -> u64 {
        // cost <= burst was checked on the way in, so this is at most `tat`. A pause holds
        // `tat` at its floor, which keeps a request of any cost but 0 waiting until its end.
        (self.tat().max(now) + cost * self.emission_ns)
            .saturating_sub(self.capacity_ns)
            .max(now)
            .max(self.not_before)
    }

    fn due_after(&mut self, now: u64, ahead: u64, cost: u64) -> (u64, bool) {
        // Queued costs are each <= burst, and the queue is finite: saturate rather than wrap.
        let span = ahead.saturating_add(cost).saturating_mul(self.emission_ns);
        let at = self
            .tat()
            .max(now)
            .saturating_add(span)
            .saturating_sub(self.capacity_ns)
            .max(now)
            .max(self.not_before);
        (at, true)
    }

    fn admit(&mut self, now: u64, cost: u64, still_queued: bool) -> u64 {
        let increment = cost * self.emission_ns;
        self.update(|tat| tat.max(now) + increment, still_queued)
    }

    fn give_back(&mut self, now: u64, cost: u64, record: u64, admitted_at: u64) {
        // Exact when nothing was admitted since (`tat` is still what this admission left), or
        // when the bucket owed more than the time that has passed since (no admission in
        // between could have found it full without this one). Otherwise the time since is
        // kept as spent: never more is given back than this admission could have cost anyone.
        // Nor does a give-back go below a pause's floor: the pause was asked for after or
        // regardless of this admission, and holds whatever comes back.
        let increment = cost * self.emission_ns;
        let before = record - increment;
        let floor = pause_floor(self.not_before, self.capacity_ns, self.emission_ns);
        let mut word = self.tat.load(Ordering::Acquire);
        loop {
            let tat = word & !QUEUED;
            let back = if tat == record || before >= now {
                increment
            } else {
                increment.saturating_sub(now.saturating_sub(admitted_at))
            };
            let next = (tat - back.min(tat)).max(floor.min(tat)) | (word & QUEUED);
            match self
                .tat
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }

    fn set_queued(&mut self, queued: bool) {
        if queued {
            self.tat.fetch_or(QUEUED, Ordering::AcqRel);
        } else {
            self.tat.fetch_and(!QUEUED, Ordering::AcqRel);
        }
    }
}

impl<W: Clone> Gcra<W> {
    /// `rate` units of cost per `per_s` seconds, bursts of up to `burst`.
    pub fn new(rate: f64, per_s: f64, burst: u64) -> Result<Self, ConfigError> {
        let (emission_ns, capacity_ns) = intervals(rate, per_s, burst)?;
        Ok(Self {
            tat: CachePadded::new(AtomicU64::new(0)),
            emission_ns,
            capacity_ns,
            burst,
            counters: Counters::default(),
            queue: Mutex::new(WaitQueue::default()),
            waiting: AtomicU64::new(0),
            not_before: AtomicU64::new(0),
        })
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }

    pub fn emission_ns(&self) -> u64 {
        self.emission_ns
    }

    #[inline(always)]
    fn check(&self, now: u64, cost: u64) -> Result<u64, AcquireError> {
        if cost > self.burst || now >= MAX_TIME_NS {
            return Err(self.refusal(now, cost));
        }
        // Cannot overflow: cost <= burst and burst * T < MAX_SPAN_NS.
        Ok(cost * self.emission_ns)
    }

    /// `check` for a request that counts as an attempt: refused by an error, it is counted
    /// as rejected.
    #[inline(always)]
    fn check_counted(&self, now: u64, cost: u64) -> Result<u64, AcquireError> {
        self.check(now, cost)
            .inspect_err(|_| self.counters.rejected())
    }

    #[cold]
    fn refusal(&self, now: u64, cost: u64) -> AcquireError {
        if cost > self.burst {
            AcquireError::Capacity {
                cost,
                capacity: self.burst,
            }
        } else {
            AcquireError::ClockOutOfRange { now_ns: now }
        }
    }

    /// [`advance`] on this bucket's word.
    #[inline(always)]
    fn advance(&self, now: u64, increment: u64) -> Option<u64> {
        advance(&self.tat, now, increment, self.capacity_ns)
    }

    fn lock(&self) -> MutexGuard<'_, WaitQueue<W>> {
        // Every mutation under this lock completes before anything that can panic.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called with the queue's lock held (the pause is written under it).
    fn ledger(&self) -> BucketLedger<'_> {
        BucketLedger {
            tat: &self.tat,
            emission_ns: self.emission_ns,
            capacity_ns: self.capacity_ns,
            not_before: self.not_before.load(Ordering::Relaxed),
        }
    }

    /// [`Gcra::advance`] for a request costing `increment` ns: a request of no cost cannot
    /// move `tat`, so a pause's floor alone does not refuse it before the pause's end.
    #[inline(always)]
    fn admit_now(&self, now: u64, increment: u64) -> Option<u64> {
        if increment == 0 && now < self.not_before.load(Ordering::Relaxed) {
            return None;
        }
        self.advance(now, increment)
    }

    fn note_waiting(&self, queue: &WaitQueue<W>) {
        self.waiting.store(queue.len() as u64, Ordering::Relaxed);
    }

    /// Charges `cost` as used at `now` without admitting or counting anything, even beyond
    /// the burst (then the next requests wait): a replacement bucket that inherits its
    /// predecessor's use.
    pub fn charge(&self, now: u64, cost: u64) {
        let queue = self.lock();
        let queued = !queue.is_empty();
        let increment = cost.saturating_mul(self.emission_ns).min(MAX_SPAN_NS);
        self.ledger().update(
            |tat| {
                tat.max(now)
                    .saturating_add(increment)
                    .min(MAX_TIME_NS + MAX_SPAN_NS)
            },
            queued,
        );
    }
}

impl<W: Clone + Send + Sync> RateLimit<W> for Gcra<W> {
    fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Requests waiting in the queue right now.
    fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Admits `cost` now if it fits and nobody waits; never waits. Counts the outcome.
    #[inline]
    fn try_acquire(&self, now: u64, cost: u64) -> Result<bool, AcquireError> {
        let increment = self.check_counted(now, cost)?;
        let admitted = self.admit_now(now, increment).is_some();
        if admitted {
            self.counters.admitted(cost);
        } else {
            self.counters.rejected();
        }
        Ok(admitted)
    }

    /// Like [`Gcra::try_acquire`], but a refusal is not counted: for a caller that queues
    /// next ([`Gcra::enqueue`]), whose request is then counted once, by its real outcome.
    #[inline]
    fn try_take(&self, now: u64, cost: u64) -> Result<bool, AcquireError> {
        let increment = self.check_counted(now, cost)?;
        let admitted = self.admit_now(now, increment).is_some();
        if admitted {
            self.counters.admitted(cost);
        }
        Ok(admitted)
    }

    /// Admits `cost` now if it fits and nobody waits, counting nothing; returns what
    /// [`Gcra::untake`] needs to undo it. For a caller taking several limits at once, which
    /// counts the request once it knows its outcome.
    fn take(&self, now: u64, cost: u64) -> Result<Option<u64>, AcquireError> {
        let increment = self.check(now, cost)?;
        Ok(self.admit_now(now, increment))
    }

    /// Undoes, at `now`, a [`Gcra::take`] of `cost` that left `record` at `taken_at` (as
    /// exactly as that can be done: see `give_back`); returns the wakers of waiters that can
    /// go now.
    fn untake(&self, now: u64, cost: u64, record: u64, taken_at: u64) -> Wakers<W> {
        let mut queue = self.lock();
        let mut ledger = self.ledger();
        ledger.give_back(now, cost, record, taken_at);
        if queue.is_empty() {
            return Wakers::new();
        }
        queue.retell();
        let woken = queue.grant_due(&mut ledger, now);
        self.note_waiting(&queue);
        woken
    }

    /// Counts an admission made with [`Gcra::take`], and its wait if it waited.
    fn commit(&self, cost: u64, waited_ns: Option<u64>) {
        self.counters.commit(cost, waited_ns);
    }

    /// What `try_acquire(cost)` would decide now; changes nothing and counts nothing.
    /// While requests wait, it is refused with the time it would take behind them.
    fn peek(&self, now: u64, cost: u64) -> Result<Decision, AcquireError> {
        let increment = self.check(now, cost)?;
        let mut word = self.tat.load(Ordering::Acquire);
        let mut ahead = 0;
        let _queue = if word & QUEUED != 0 {
            let queue = self.lock();
            word = self.tat.load(Ordering::Acquire);
            ahead = queue.queued_cost() * self.emission_ns;
            Some(queue)
        } else {
            None
        };
        let mut decided = decision(
            word & !QUEUED,
            ahead,
            now,
            increment,
            self.capacity_ns,
            self.emission_ns,
        );
        let not_before = self.not_before.load(Ordering::Relaxed);
        if increment == 0 && decided.allowed && now < not_before {
            // As `admit_now` refuses it: a request of no cost waits for the pause's end.
            decided.allowed = false;
            decided.retry_after_ns = not_before - now;
        }
        Ok(decided)
    }

    /// Admits `cost` at once if nobody waits and it fits (unless `admit_now` is false: then it
    /// always queues, and is granted by the next `poll`); otherwise queues it behind the
    /// waiters (FIFO: a large request is never starved by small ones), if it would be
    /// admitted within `max_wait_ns`. A request that would need longer fails at once with
    /// the time it would need, writes nothing, and is counted as timed out.
    fn enqueue(
        &self,
        now: u64,
        cost: u64,
        max_wait_ns: u64,
        waker: W,
        admit_now: bool,
    ) -> Result<Entered, AcquireError> {
        let increment = self.check_counted(now, cost)?;
        let mut queue = self.lock();
        if admit_now && queue.is_empty() && self.admit_now(now, increment).is_some() {
            self.counters.admitted(cost);
            return Ok(Entered::Admitted);
        }
        match queue.push(&mut self.ledger(), now, cost, max_wait_ns, waker) {
            Ok((ticket, head_due)) => {
                self.note_waiting(&queue);
                Ok(Entered::Queued { ticket, head_due })
            }
            Err(needed_ns) => {
                drop(queue);
                self.counters.timed_out();
                Err(AcquireError::WouldExceedDeadline { needed_ns })
            }
        }
    }

    /// Grants the waiters at the head of the queue whose turn has come; returns the wakers
    /// to call (those granted, and a new head, which must time its turn).
    fn poll(&self, now: u64) -> Wakers<W> {
        let mut queue = self.lock();
        let woken = queue.grant_due(&mut self.ledger(), now);
        self.note_waiting(&queue);
        woken
    }

    /// What a waiter should do next.
    fn status(&self, ticket: &RateTicket, now: u64) -> Status {
        self.lock().status(&mut self.ledger(), ticket, now)
    }

    /// Takes a granted request, counting it admitted after waiting `waited_ns`. False if it
    /// was not granted.
    fn consume(&self, ticket: &RateTicket, waited_ns: u64) -> bool {
        let taken = self.lock().consume(ticket);
        if taken {
            self.commit(ticket.cost(), Some(waited_ns));
        }
        taken
    }

    /// Withdraws a request whose waiter gave up (counted as `how`); an unused grant goes back
    /// (see [`WaitQueue::withdraw`]). Returns what happened and the wakers to call.
    fn withdraw(&self, ticket: &RateTicket, now: u64, how: Refusal) -> (Withdrawal, Wakers<W>) {
        let mut queue = self.lock();
        let (what, woken) = queue.withdraw(&mut self.ledger(), ticket, now);
        self.note_waiting(&queue);
        drop(queue);
        if !matches!(what, Withdrawal::AlreadyEnded(_)) {
            self.counters.refused(how);
        }
        (what, woken)
    }

    /// How long every admitted request waited (immediate admissions as zero waits).
    fn wait_histogram(&self) -> HistogramSnapshot {
        self.counters.wait_histogram()
    }

    /// Removes every waiter without waking it, counting each cancelled; returns the wakers to
    /// drop (a bucket being collected).
    fn abandon_waiters(&self) -> Wakers<W> {
        let mut queue = self.lock();
        let (n, wakers) = queue.abandon(&mut self.ledger());
        self.note_waiting(&queue);
        drop(queue);
        self.counters.cancelled_many(n);
        wakers
    }

    /// Calls `f` on every queued waker if the queue is not locked right now (a garbage
    /// collector's traversal must not block).
    fn visit_waiters(&self, f: &mut dyn FnMut(&W)) {
        if let Ok(queue) = self.queue.try_lock() {
            queue.visit(f);
        }
    }

    /// How long the head of the queue has waited so far (0: nobody waits).
    fn oldest_wait_ns(&self, now: u64) -> u64 {
        self.lock()
            .oldest_enqueued_ns()
            .map_or(0, |t| now.saturating_sub(t))
    }
}

/// The one CAS loop of immediate admission, on any GCRA word (a bucket's own, or one in
/// shared memory: `crate::shared`): pushes `tat` by `increment` from `max(tat, now)` if that
/// stays within the burst, returning the new `tat` (what `untake` needs). A refusal writes
/// nothing. While anyone waits, the `QUEUED` bit makes the word exceed every limit: refused,
/// no barging.
#[inline(always)]
pub(crate) fn advance(
    tat_word: &AtomicU64,
    now: u64,
    increment: u64,
    capacity_ns: u64,
) -> Option<u64> {
    let limit = now + capacity_ns;
    let mut tat = tat_word.load(Ordering::Relaxed);
    loop {
        // No overflow: `tat` (with the bit) < 2^63 + 2^62 and increment < 2^61.
        let new_tat = tat.max(now) + increment;
        if new_tat > limit {
            return None;
        }
        // AcqRel: a successful CAS orders this admission after every admission it observed.
        match tat_word.compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Some(new_tat),
            Err(actual) => tat = actual,
        }
    }
}

/// What a request of `increment` ns would get at `now` from a GCRA word at `tat` (without its
/// `QUEUED` bit), behind `ahead` ns of queued requests: `peek`'s arithmetic, for any word.
pub(crate) fn decision(
    tat: u64,
    ahead: u64,
    now: u64,
    increment: u64,
    capacity_ns: u64,
    emission_ns: u64,
) -> Decision {
    let tat = tat.max(now);
    let limit = now + capacity_ns;
    let new_tat = tat + ahead + increment;
    if ahead == 0 && new_tat <= limit {
        Decision {
            allowed: true,
            remaining: (limit - new_tat) / emission_ns,
            retry_after_ns: 0,
            reset_after_ns: new_tat - now,
        }
    } else {
        Decision {
            allowed: false,
            remaining: limit.saturating_sub(tat + ahead) / emission_ns,
            retry_after_ns: new_tat.saturating_sub(limit),
            reset_after_ns: tat + ahead - now,
        }
    }
}

/// The least `tat` of a bucket paused until `not_before` (0: never paused): empty then, its
/// first token due at `not_before`.
fn pause_floor(not_before: u64, capacity_ns: u64, emission_ns: u64) -> u64 {
    if not_before == 0 {
        0
    } else {
        not_before + capacity_ns - emission_ns
    }
}

/// `(T, burst · T)` in nanoseconds for `rate` per `per_s` seconds and `burst`, checked: the
/// configuration of every GCRA word, in this process or in shared memory.
pub(crate) fn intervals(rate: f64, per_s: f64, burst: u64) -> Result<(u64, u64), ConfigError> {
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
                    "burst {burst} at {} per {} s takes too long to refill \
                     (over 70 years)",
                    Num(rate),
                    Num(per_s)
                ),
            )
        })?;
    Ok((emission_ns, capacity_ns))
}

impl<W: Clone> Gcra<W> {
    /// Raises `tat` to at least `floor` (never lowers it: no capacity is ever added). Under
    /// the queue's lock, keeping its bit: the waiters keep their order and their turns only
    /// move later (each head re-times its turn when it polls).
    fn raise_tat(&self, floor: u64) {
        let queue = self.lock();
        let floor = floor.min(MAX_TIME_NS + MAX_SPAN_NS);
        self.ledger()
            .update(|tat| tat.max(floor), !queue.is_empty());
    }
}

impl<W: Clone + Send + Sync> Adjust for Gcra<W> {
    /// A debt: see [`Gcra::charge`].
    fn charge(&self, now: u64, cost: u64) {
        Gcra::charge(self, now, cost);
    }

    /// Empties the bucket until `until`: the first token is due then, and it refills at its
    /// rate from there (not with a burst at `until`, which would earn the next refusal).
    fn pause_until(&self, now: u64, until: u64) {
        if until > now {
            let until = until.min(MAX_TIME_NS);
            let queue = self.lock();
            let until = self
                .not_before
                .fetch_max(until, Ordering::Relaxed)
                .max(until);
            let floor = pause_floor(until, self.capacity_ns, self.emission_ns);
            self.ledger()
                .update(|tat| tat.max(floor), !queue.is_empty());
        }
    }

    /// At most `remaining` tokens now (`tat >= now + burst·T - remaining·T`), and, reading
    /// the bucket as the provider's own (`burst` = its limit), not full again before the
    /// provider is (`tat >= now + reset_after`): then at no time up to the reset does the
    /// bucket hold more than the provider's count refilling linearly to full.
    fn sync(&self, now: u64, remaining: u64, reset_after_ns: Option<u64>) {
        let now = now.min(MAX_TIME_NS);
        let from_remaining =
            (now + self.capacity_ns).saturating_sub(remaining.saturating_mul(self.emission_ns));
        let from_reset = reset_after_ns.map_or(0, |r| now + r.min(MAX_SPAN_NS));
        self.raise_tat(from_remaining.max(from_reset));
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
                "rate {} per {} s is over 1e9 per second, finer than the clock's \
                 1 ns resolution",
                Num(rate),
                Num(per_s)
            ),
        ));
    }
    if t >= MAX_SPAN_NS as f64 {
        return Err(ConfigError::new(
            "rate",
            format!(
                "rate {} per {} s is too slow (one unit per 70+ years)",
                Num(rate),
                Num(per_s)
            ),
        ));
    }
    Ok(t as u64)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    const S: u64 = NANOS_PER_SEC;

    /// Test buckets wake waiters named by numbers.
    type B = Gcra<u32>;

    fn queued(e: Result<Entered, AcquireError>) -> (Arc<RateTicket>, Option<u64>) {
        match e {
            Ok(Entered::Queued { ticket, head_due }) => (ticket, head_due),
            Ok(Entered::Admitted) => panic!("admitted at once"),
            Err(e) => panic!("refused: {e}"),
        }
    }

    fn woken(w: Wakers<u32>) -> Vec<u32> {
        w.into_iter().collect()
    }

    /// A bucket at one per second, burst 1, drained at 0 (its next token is due at 1 s).
    fn drained() -> B {
        let b = B::new(1.0, 1.0, 1).unwrap();
        assert_eq!(b.try_acquire(0, 1), Ok(true));
        b
    }

    // The client layer (issue 15): reservations settled afterwards, and the provider's word.

    #[test]
    fn a_reservation_settled_low_gives_the_rest_back_exactly_when_nobody_came_after() {
        let b = B::new(1.0, 1.0, 10).unwrap();
        let record = b.take(0, 8).unwrap().unwrap();
        b.commit(8, None);
        // The call used 3: 5 go back, as if 3 had been reserved.
        drop(b.untake(S / 2, 5, record, 0));
        b.counters().resettle(8, 3);
        assert!(b.peek(S / 2, 7).unwrap().allowed);
        assert!(!b.peek(S / 2, 8).unwrap().allowed);
        assert_eq!(b.counters().snapshot().admitted_cost, 3);
    }

    #[test]
    fn a_refund_goes_to_the_waiters_first_never_to_a_newcomer() {
        let b = B::new(1.0, 1.0, 4).unwrap();
        let record = b.take(0, 4).unwrap().unwrap();
        b.commit(4, None);
        let (w, due) = queued(b.enqueue(0, 2, u64::MAX, 7, true));
        assert_eq!(due, Some(2 * S));
        // The reservation used 1: 3 go back, and the waiter (cost 2) is granted at once.
        assert_eq!(woken(b.untake(0, 3, record, 0)), vec![7]);
        assert_eq!(b.status(&w, 0), Status::Granted);
        assert!(b.consume(&w, 0));
        // One token is left for the next comer, not three.
        assert_eq!(b.try_acquire(0, 2), Ok(false));
        assert_eq!(b.try_acquire(0, 1), Ok(true));
    }

    #[test]
    fn a_refund_of_a_queued_grant_uses_its_record() {
        let b = drained();
        let (w, _) = queued(b.enqueue(0, 1, u64::MAX, 1, true));
        assert_eq!(w.grant(), None);
        b.poll(S);
        assert!(b.consume(&w, S));
        let (record, at) = w.grant().unwrap();
        assert_eq!(at, S);
        drop(b.untake(S, 1, record, at));
        assert_eq!(b.try_acquire(S, 1), Ok(true));
    }

    #[test]
    fn an_overage_is_a_debt_that_delays_the_waiters_in_order() {
        let b = B::new(1.0, 1.0, 2).unwrap();
        assert_eq!(b.try_acquire(0, 2), Ok(true));
        let (x, due) = queued(b.enqueue(0, 1, u64::MAX, 1, true));
        assert_eq!(due, Some(S));
        let (y, _) = queued(b.enqueue(0, 1, u64::MAX, 2, true));
        // A reservation of 2 really used 5: 3 more, never refused, even beyond the burst.
        Adjust::charge(&b, 0, 3);
        assert!(woken(b.poll(S)).is_empty());
        assert_eq!(b.status(&x, S), Status::Head { due_ns: 4 * S });
        b.poll(4 * S);
        assert_eq!(b.status(&x, 4 * S), Status::Granted);
        assert_eq!(b.status(&y, 4 * S), Status::Head { due_ns: 5 * S });
    }

    #[test]
    fn a_pause_admits_nothing_before_its_end_then_the_rate() {
        let b = B::new(1.0, 1.0, 5).unwrap();
        b.pause_until(0, 10 * S);
        assert_eq!(b.try_acquire(10 * S - 1, 1), Ok(false));
        assert_eq!(b.peek(0, 1).unwrap().retry_after_ns, 10 * S);
        assert_eq!(b.try_acquire(10 * S, 1), Ok(true));
        assert_eq!(b.try_acquire(10 * S, 1), Ok(false));
        assert_eq!(b.try_acquire(11 * S, 1), Ok(true));
        // A pause that is over, or shorter than the bucket's own wait, changes nothing.
        let before = b.tat.load(Ordering::Relaxed);
        b.pause_until(11 * S, 11 * S);
        b.pause_until(11 * S, 11 * S + 1);
        assert_eq!(b.tat.load(Ordering::Relaxed), before);
    }

    #[test]
    fn a_give_back_during_a_pause_admits_nobody_before_its_end() {
        let b = B::new(1.0, 1.0, 1).unwrap();
        let record = b.take(0, 1).unwrap().unwrap();
        b.pause_until(0, S / 2); // shorter than the bucket's own wait: `tat` is unchanged
        drop(b.untake(S / 4, 1, record, 0)); // the token comes back...
        assert_eq!(
            b.try_acquire(S / 2 - 1, 1),
            Ok(false),
            "...but not before the pause's end"
        );
        assert_eq!(b.peek(S / 4, 1).unwrap().retry_after_ns, S / 4);
        assert_eq!(b.try_acquire(S / 2, 1), Ok(true));
    }

    #[test]
    fn a_withdrawn_grant_during_a_pause_admits_nobody_before_its_end() {
        let b = B::new(1.0, 1.0, 2).unwrap();
        assert_eq!(b.try_acquire(0, 2), Ok(true));
        let (x, _) = queued(b.enqueue(0, 1, u64::MAX, 1, true));
        assert_eq!(woken(b.poll(S)), vec![1]);
        b.pause_until(S, 3 * S);
        let (what, _) = b.withdraw(&x, S, Refusal::Cancelled);
        assert_eq!(what, Withdrawal::GaveBack);
        assert_eq!(b.try_acquire(3 * S - 1, 1), Ok(false));
        assert_eq!(b.try_acquire(3 * S, 1), Ok(true));
        assert_eq!(
            b.try_acquire(3 * S, 1),
            Ok(false),
            "refills at its rate from the end"
        );
    }

    #[test]
    fn a_give_back_after_a_pause_is_whole() {
        let b = B::new(1.0, 1.0, 3).unwrap();
        b.pause_until(0, S);
        // Full again by 3 s: an admission and its give-back leave it full.
        let record = b.take(3 * S, 3).unwrap().unwrap();
        drop(b.untake(3 * S, 3, record, 3 * S));
        assert_eq!(b.try_acquire(3 * S, 3), Ok(true));
    }

    #[test]
    fn a_request_of_no_cost_waits_for_a_pause_to_end() {
        let b = B::new(1.0, 1.0, 5).unwrap();
        b.pause_until(0, 10 * S);
        // Within the pause's last emission interval `tat` alone would let it through.
        assert_eq!(b.try_acquire(10 * S - S / 2, 0), Ok(false));
        assert_eq!(b.take(10 * S - S / 2, 0), Ok(None));
        let d = b.peek(10 * S - S / 2, 0).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ns, S / 2);
        let (x, head_due) = queued(b.enqueue(10 * S - S / 2, 0, u64::MAX, 1, true));
        assert_eq!(head_due, Some(10 * S));
        assert_eq!(b.status(&x, 10 * S - 1), Status::Head { due_ns: 10 * S });
        assert_eq!(woken(b.poll(10 * S)), vec![1]);
        assert!(b.consume(&x, S / 2));
        assert_eq!(b.try_acquire(10 * S, 0), Ok(true));
    }

    #[test]
    fn a_pause_keeps_the_waiters_in_order() {
        let b = drained();
        let (x, _) = queued(b.enqueue(0, 1, u64::MAX, 1, true));
        let (y, _) = queued(b.enqueue(0, 1, u64::MAX, 2, true));
        b.pause_until(0, 30 * S);
        assert!(woken(b.poll(S)).is_empty());
        assert_eq!(b.status(&x, S), Status::Head { due_ns: 30 * S });
        assert_eq!(woken(b.poll(30 * S)), vec![1, 2]);
        assert_eq!(b.status(&x, 30 * S), Status::Granted);
        assert_eq!(b.status(&y, 30 * S), Status::Head { due_ns: 31 * S });
        assert_eq!(b.try_acquire(31 * S, 1), Ok(false), "no barging past y");
    }

    #[test]
    fn sync_never_adds_and_caps_at_what_the_provider_says() {
        let b = B::new(10.0, 1.0, 10).unwrap();
        b.sync(0, 4, None);
        assert_eq!(b.peek(0, 1).unwrap().remaining, 3);
        assert_eq!(b.try_acquire(0, 5), Ok(false));
        // The provider says more than the bucket believes: nothing is added.
        b.sync(0, 10, None);
        assert_eq!(b.peek(0, 1).unwrap().remaining, 3);
        // Nothing left, full again in 5 s (the bucket alone would be in 1 s): the bucket is
        // empty for the first 4 s and then refills, full at 5 s as the provider is.
        b.sync(0, 0, Some(5 * S));
        assert_eq!(b.peek(0, 1).unwrap().retry_after_ns, 4 * S + S / 10);
        assert_eq!(b.peek(0, 1).unwrap().reset_after_ns, 5 * S);
        assert_eq!(b.counters().snapshot().admitted, 0);
    }

    #[test]
    fn waiters_queue_in_order_and_only_the_head_is_due() {
        let b = drained();
        let (a, a_due) = queued(b.enqueue(0, 1, u64::MAX, 1, true));
        let (c, c_due) = queued(b.enqueue(0, 1, u64::MAX, 2, true));
        assert_eq!((a_due, c_due), (Some(S), None));
        assert_eq!(b.waiting(), 2);
        // Nobody barges past the queue, even once a token is there.
        assert_eq!(b.try_acquire(S, 1), Ok(false));
        assert!(!b.peek(S, 1).unwrap().allowed);
        assert_eq!(b.status(&c, 0), Status::Queued);
        assert_eq!(woken(b.poll(S - 1)), Vec::<u32>::new());
        // A is granted; C, the new head, is told to time its turn.
        assert_eq!(woken(b.poll(S)), vec![1, 2]);
        assert_eq!(b.status(&a, S), Status::Granted);
        assert_eq!(b.status(&c, S), Status::Head { due_ns: 2 * S });
        assert!(b.consume(&a, S));
        assert!(!b.consume(&a, S));
        assert_eq!(woken(b.poll(2 * S)), vec![2]);
        assert!(b.consume(&c, 2 * S));
        assert_eq!(b.waiting(), 0);
        let h = b.wait_histogram();
        assert_eq!(h.count(), 3);
        assert_eq!(h.sum_ns, 3 * S);
        assert_eq!(b.counters().snapshot().admitted, 3);
    }

    #[test]
    fn a_waiter_cancelled_in_the_middle_moves_the_ones_behind_up() {
        let b = drained();
        let (_a, _) = queued(b.enqueue(0, 1, u64::MAX, 1, true));
        let (m, _) = queued(b.enqueue(0, 1, u64::MAX, 2, true));
        let (c, _) = queued(b.enqueue(0, 1, u64::MAX, 3, true));
        let (what, w) = b.withdraw(&m, 0, Refusal::Cancelled);
        assert_eq!((what, woken(w)), (Withdrawal::Removed, vec![]));
        assert_eq!(woken(b.poll(S)), vec![1, 3]);
        // C is due when the middle one would have been: 2 s, not 3 s.
        assert_eq!(b.status(&c, S), Status::Head { due_ns: 2 * S });
        // A newcomer's deadline is judged behind C only.
        assert_eq!(
            b.enqueue(S, 1, S, 4, true).err(),
            Some(AcquireError::WouldExceedDeadline { needed_ns: 2 * S })
        );
        let c = b.counters().snapshot();
        assert_eq!((c.cancelled, c.timed_out), (1, 1));
    }

    #[test]
    fn a_whole_cancelled_queue_comes_back_in_any_order() {
        for order in 0..3 {
            let b = drained();
            let mut tickets: Vec<_> = (0..2_000)
                .map(|i| queued(b.enqueue(0, 1, u64::MAX, i, true)).0)
                .collect();
            match order {
                0 => {}
                1 => tickets.reverse(),
                _ => {
                    let mut seed = 0x2545_F491_4F6C_DD1D_u64;
                    for i in (1..tickets.len()).rev() {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        tickets.swap(i, (seed % (i as u64 + 1)) as usize);
                    }
                }
            }
            for t in &tickets {
                b.withdraw(t, S / 2, Refusal::Cancelled);
            }
            assert_eq!(b.waiting(), 0);
            // As if nobody had queued: the next token is due at 1 s.
            let d = b.peek(S / 2, 1).unwrap();
            assert_eq!(d.retry_after_ns, S / 2, "order {order}");
            assert_eq!(b.try_acquire(S, 1), Ok(true));
            assert_eq!(b.counters().snapshot().cancelled, 2_000);
        }
    }

    #[test]
    fn a_grant_given_up_before_use_goes_back_exactly() {
        let b = drained();
        let (a, _) = queued(b.enqueue(0, 1, u64::MAX, 1, true));
        assert_eq!(woken(b.poll(S)), vec![1]);
        let (what, _) = b.withdraw(&a, S, Refusal::Cancelled);
        assert_eq!(what, Withdrawal::GaveBack);
        assert!(!b.consume(&a, S));
        // Nothing was admitted after it: the token is back in the bucket.
        assert_eq!(b.try_acquire(S, 1), Ok(true));
        let c = b.counters().snapshot();
        assert_eq!((c.admitted, c.cancelled), (2, 1));
        assert_eq!(b.wait_histogram().count(), 2);
    }

    #[test]
    fn a_grant_given_up_after_later_admissions_goes_to_the_next_waiter() {
        let b = B::new(1.0, 1.0, 2).unwrap();
        assert_eq!(b.try_acquire(0, 2), Ok(true));
        let (a, _) = queued(b.enqueue(0, 1, u64::MAX, 1, true));
        let (x, _) = queued(b.enqueue(0, 1, u64::MAX, 2, true));
        let (c, _) = queued(b.enqueue(0, 1, u64::MAX, 3, true));
        // At 2 s two tokens are back: A and X are granted together; C is the head.
        assert_eq!(woken(b.poll(2 * S)), vec![1, 2, 3]);
        assert_eq!(b.status(&c, 2 * S), Status::Head { due_ns: 3 * S });
        // A gives up: X was admitted after it, so its slot goes to C at once.
        let (what, w) = b.withdraw(&a, 2 * S, Refusal::Cancelled);
        assert_eq!((what, woken(w)), (Withdrawal::GaveBack, vec![3]));
        assert!(b.consume(&x, 2 * S));
        assert!(b.consume(&c, 2 * S));
        // The bucket is exactly as drained as if A had never queued.
        assert!(!b.peek(2 * S, 1).unwrap().allowed);
        assert_eq!(b.peek(2 * S, 1).unwrap().retry_after_ns, S);
        // Nobody waits any more: the immediate paths work again (the queued flag is clear).
        assert_eq!(b.waiting(), 0);
        assert_eq!(b.try_acquire(3 * S, 1), Ok(true));
    }

    #[test]
    fn a_stale_grant_given_up_never_lets_the_bucket_exceed_its_burst() {
        // Review finding: a grant held unused for a long time (an all_of waiting for its
        // other limiter) and given up after the bucket refilled and was used again must not
        // hand a slot on beyond the burst.
        let b = B::new(1.0, 1.0, 2).unwrap();
        assert_eq!(b.try_acquire(0, 2), Ok(true));
        let (g, _) = queued(b.enqueue(0, 1, u64::MAX, 1, true));
        assert_eq!(woken(b.poll(S)), vec![1]); // granted at 1 s, never used
        assert_eq!(b.try_acquire(100 * S, 2), Ok(true)); // refilled, used again at 100 s
        let (c, _) = queued(b.enqueue(100 * S, 1, u64::MAX, 2, true));
        let (what, w) = b.withdraw(&g, 100 * S, Refusal::Cancelled);
        assert_eq!(what, Withdrawal::GaveBack);
        assert_eq!(woken(w), vec![2], "the head is told again, not granted");
        assert_eq!(b.status(&c, 100 * S), Status::Head { due_ns: 101 * S });
    }

    #[test]
    fn a_grant_given_back_tells_the_head_its_earlier_turn() {
        // Review finding: room given back makes the head due sooner; its waiter must hear.
        let b = B::new(1.0, 1.0, 2).unwrap();
        assert_eq!(b.try_acquire(0, 2), Ok(true));
        let (g, _) = queued(b.enqueue(0, 1, u64::MAX, 1, true));
        assert_eq!(woken(b.poll(S)), vec![1]); // G granted at 1 s (tat 3 s)
        let (h, due) = queued(b.enqueue(S, 2, u64::MAX, 2, true));
        assert_eq!(due, Some(3 * S));
        // G gives up at once: given back exactly, H's turn moves to 2 s; it is told again.
        let (_, w) = b.withdraw(&g, S, Refusal::Cancelled);
        assert_eq!(woken(w), vec![2]);
        assert_eq!(b.status(&h, S), Status::Head { due_ns: 2 * S });
    }

    #[test]
    fn a_large_head_is_not_starved_and_its_withdrawal_admits_the_small_ones() {
        let b = B::new(1.0, 1.0, 4).unwrap();
        assert_eq!(b.try_acquire(0, 4), Ok(true));
        let (big, due) = queued(b.enqueue(0, 4, u64::MAX, 1, true));
        assert_eq!(due, Some(4 * S));
        let (small, _) = queued(b.enqueue(0, 1, u64::MAX, 2, true));
        assert_eq!(woken(b.poll(2 * S)), vec![]);
        let (_, w) = b.withdraw(&big, 2 * S, Refusal::TimedOut);
        // Behind the big one, the small one fits at once.
        assert_eq!(woken(w), vec![2]);
        assert_eq!(b.status(&small, 2 * S), Status::Granted);
    }

    #[test]
    fn the_queued_flag_never_leaks_into_times() {
        let b = drained();
        let (a, _) = queued(b.enqueue(0, 1, u64::MAX, 1, true));
        let d = b.peek(0, 1).unwrap();
        assert_eq!(
            (d.allowed, d.remaining, d.retry_after_ns),
            (false, 0, 2 * S)
        );
        assert_eq!(d.reset_after_ns, 2 * S);
        b.withdraw(&a, 0, Refusal::Cancelled);
        let d = b.peek(0, 1).unwrap();
        assert_eq!(
            (d.allowed, d.retry_after_ns, d.reset_after_ns),
            (false, S, S)
        );
        assert_eq!(b.oldest_wait_ns(5), 0);
    }

    #[test]
    fn times_beyond_the_representable_range_are_refused() {
        let b = B::new(1.0, 2e9, 1).unwrap();
        assert_eq!(
            b.try_acquire(MAX_TIME_NS, 1),
            Err(AcquireError::ClockOutOfRange {
                now_ns: MAX_TIME_NS
            })
        );
        assert!(b.peek(u64::MAX, 1).is_err());
        assert!(b.enqueue(u64::MAX, 1, 0, 1, true).is_err());
        // A long queue on a slow bucket saturates instead of wrapping: nobody is let through.
        assert_eq!(b.try_acquire(0, 1), Ok(true));
        let dues: Vec<_> = (0..12)
            .map(|i| queued(b.enqueue(0, 1, u64::MAX, i, true)).0)
            .collect();
        assert_eq!(woken(b.poll(MAX_TIME_NS - 1)), vec![0, 1]);
        assert_eq!(b.status(&dues[0], MAX_TIME_NS - 1), Status::Granted);
        assert!(matches!(
            b.status(&dues[1], MAX_TIME_NS - 1),
            Status::Head { .. }
        ));
    }

    #[test]
    fn charge_goes_beyond_the_burst_without_counting() {
        let b = B::new(1.0, 1.0, 2).unwrap();
        b.charge(0, 5);
        assert_eq!(b.try_acquire(0, 1), Ok(false));
        assert_eq!(b.peek(0, 1).unwrap().retry_after_ns, 4 * S);
        assert_eq!(b.counters().snapshot().admitted, 0);
    }

    /// Random arrivals, cancellations and polls: the admitted cost never exceeds the bound
    /// over any interval, and while demand lasts no slot is lost to the cancellations.
    #[test]
    fn cancellations_anywhere_keep_the_bound_and_the_rate() {
        let b = B::new(10.0, 1.0, 3).unwrap();
        let t = b.emission_ns();
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut now = 0;
        let mut waiting: Vec<Arc<RateTicket>> = Vec::new();
        let mut admitted: Vec<(u64, u64)> = Vec::new();
        let horizon = 2_000 * t;
        let settle = |b: &B, waiting: &mut Vec<Arc<RateTicket>>, admitted: &mut Vec<_>, at| {
            b.poll(at);
            waiting.retain(|w| {
                if b.consume(w, 0) {
                    admitted.push((at, w.cost()));
                    false
                } else {
                    true
                }
            });
        };
        while now < horizon {
            let next = now + rand() % (t / 3);
            // The head's waiter polls at its due time (a timer that is never late).
            while let Some(due) = waiting.iter().find_map(|w| match b.status(w, now) {
                Status::Head { due_ns } if due_ns <= next => Some(due_ns),
                _ => None,
            }) {
                now = due.max(now);
                settle(&b, &mut waiting, &mut admitted, now);
            }
            now = next;
            for _ in 0..rand() % 4 {
                let cost = 1 + rand() % 3;
                match b.enqueue(now, cost, u64::MAX, 0, true).unwrap() {
                    Entered::Admitted => admitted.push((now, cost)),
                    Entered::Queued { ticket, .. } => waiting.push(ticket),
                }
            }
            // Cancel from anywhere, but keep demand above the rate.
            if waiting.len() > 30 {
                for _ in 0..rand() % 5 {
                    let i = (rand() % waiting.len() as u64) as usize;
                    let gone = waiting.swap_remove(i);
                    b.withdraw(&gone, now, Refusal::Cancelled);
                }
            }
            settle(&b, &mut waiting, &mut admitted, now);
        }
        for (i, &(start, _)) in admitted.iter().enumerate() {
            let mut sum = 0;
            for &(when, cost) in &admitted[i..] {
                sum += cost;
                assert!(
                    sum <= 3 + (when - start) / t,
                    "{sum} admitted in {} ns",
                    when - start
                );
            }
        }
        let total: u64 = admitted.iter().map(|a| a.1).sum();
        let bound = 3 + now / t;
        assert!(total + 3 >= bound, "{total} admitted, {bound} possible");
    }

    #[test]
    fn starts_full_and_refills_continuously() {
        let b = B::new(1.0, 1.0, 3).unwrap();
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
        let b = B::new(1.0, 1.0, 1).unwrap();
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
        let b = B::new(10.0, 1.0, 5).unwrap();
        assert_eq!(
            b.try_acquire(0, 6),
            Err(AcquireError::Capacity {
                cost: 6,
                capacity: 5
            })
        );
        assert!(b.peek(0, 6).is_err());
        assert!(b.enqueue(0, 6, u64::MAX, 0, true).is_err());
        assert_eq!(b.try_acquire(0, 5), Ok(true));
    }

    #[test]
    fn peek_matches_try_acquire_and_changes_nothing() {
        let b = B::new(2.0, 1.0, 4).unwrap();
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
        let b = B::new(1.0, 1.0, 1).unwrap();
        assert_eq!(b.try_acquire(0, 1), Ok(true));
        assert_eq!(b.try_acquire(0, 0), Ok(true));
    }

    #[test]
    fn bad_configuration_names_the_argument() {
        assert_eq!(B::new(0.0, 1.0, 1).unwrap_err().arg, "rate");
        assert_eq!(B::new(-1.0, 1.0, 1).unwrap_err().arg, "rate");
        assert_eq!(B::new(f64::NAN, 1.0, 1).unwrap_err().arg, "rate");
        assert_eq!(B::new(f64::INFINITY, 1.0, 1).unwrap_err().arg, "rate");
        assert_eq!(B::new(1.0, 0.0, 1).unwrap_err().arg, "per");
        assert_eq!(B::new(1.0, f64::NAN, 1).unwrap_err().arg, "per");
        assert_eq!(B::new(1.0, 1.0, 0).unwrap_err().arg, "burst");
        assert_eq!(B::new(1e10, 1.0, 1).unwrap_err().arg, "rate");
        assert_eq!(B::new(1.0, 1.0, u64::MAX).unwrap_err().arg, "burst");
    }

    #[test]
    fn huge_and_tiny_arguments_give_short_messages() {
        // Issue 12 (13): TokenBucket(rate=1e300) printed a 301-digit number.
        let e = B::new(1e300, 1.0, 1).unwrap_err();
        assert_eq!(e.arg, "rate");
        assert!(e.message.contains("rate 1e+300 per 1 s"), "{}", e.message);
        let e = B::new(1e-300, 1.0, 1).unwrap_err();
        assert!(e.message.contains("rate 1e-300 per 1 s"), "{}", e.message);
        let e = B::new(5.0, 1e300, 1).unwrap_err();
        assert!(e.message.len() < 100, "{}", e.message);
    }

    #[test]
    fn emission_interval_rounds_up_only_real_fractions() {
        assert_eq!(B::new(50.0, 60.0, 1).unwrap().emission_ns(), 1_200_000_000);
        assert_eq!(B::new(3.0, 1.0, 1).unwrap().emission_ns(), 333_333_334);
        assert_eq!(B::new(0.1, 1.0, 1).unwrap().emission_ns(), 10 * S);
    }

    #[test]
    fn interval_bound_holds_on_a_long_pseudo_random_run() {
        // Admitted cost over any window [a, a + t] is at most burst + t / T.
        let b = B::new(7.0, 1.0, 5).unwrap();
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
