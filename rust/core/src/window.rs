//! Exact sliding window: never more than `limit` cost in any window of `window` length.
//!
//! A request at time `t` is admitted iff the cost admitted in `(t - window, t]` plus its own
//! cost is at most `limit`. The state is the log of admissions still inside the window, as
//! `(timestamp, cost)` pairs in time order (requests with the same timestamp share one entry),
//! plus their running total, behind a mutex held for a few nanoseconds.
//!
//! Memory: at most one 16-byte entry per unit of cost admitted within the last `window`, so
//! at most `16 × limit` bytes (1.6 MB for a limit of 100,000), plus the deque's slack. The
//! memory follows the log back down: when entries leave and the log falls to a quarter of its
//! capacity, the capacity is halved towards twice the log's length (never below
//! [`MIN_CAPACITY`] entries), so a drained window holds at most 1 KiB of log. Each shrink
//! copies at most a quarter of the old capacity and needs as many removals before the next,
//! so the cost is amortized O(1) per entry. For
//! very large limits where an approximation is acceptable, a token bucket with
//! `burst = limit, rate = limit per window` is O(1) in memory.
//!
//! Rejections change no decision: the only write they make is dropping entries that have
//! already left the window, which every later decision would ignore anyway.
//!
//! Waiting requests queue in a [`WaitQueue`] under the same lock; the log holds admissions
//! only, so a waiter that gives up leaves nothing behind.

use std::collections::VecDeque;

use crate::error::{seconds_to_ns, AcquireError, ConfigError};
use crate::histogram::HistogramSnapshot;
use crate::rate::{Adjust, Decision, RateLimit};
use crate::stats::{Counters, Refusal};
use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering};
use crate::waitq::{Entered, Ledger, RateTicket, Status, WaitQueue, Withdrawal};
use crate::wakers::Wakers;
use crate::MAX_TIME_NS;

/// The capacity, in entries, below which the log never gives memory back (1 KiB).
pub const MIN_CAPACITY: usize = 64;

#[derive(Debug, Default)]
struct Log {
    entries: VecDeque<(u64, u64)>,
    total: u64,
    /// Nothing is admitted before this time (a pause: [`Adjust::pause_until`]).
    not_before: u64,
}

impl Log {
    /// Drops entries that have left the window ending at `now`.
    fn evict(&mut self, now: u64, window_ns: u64) {
        let before = self.entries.len();
        while let Some(&(ts, cost)) = self.entries.front() {
            if ts.saturating_add(window_ns) > now {
                break;
            }
            self.total -= cost;
            self.entries.pop_front();
        }
        if self.entries.len() != before {
            self.release();
        }
    }

    /// Gives memory back once the log has fallen to a quarter of its capacity: shrinks to
    /// twice its length (at least [`MIN_CAPACITY`]). Amortized: after a shrink from `c` to at
    /// most `c / 2`, the next one needs the log to halve again, and growing back to `c` needs
    /// as many pushes as the copy cost.
    fn release(&mut self) {
        let capacity = self.entries.capacity();
        let len = self.entries.len();
        if capacity > MIN_CAPACITY && len <= capacity / 4 {
            self.entries.shrink_to((len * 2).max(MIN_CAPACITY));
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

    /// Adds `cost` at `ts`, which may be older than the newest entry (the log stays in time
    /// order): capacity the provider says is used, or a debt.
    fn insert(&mut self, ts: u64, cost: u64) {
        if cost == 0 {
            return;
        }
        let at = self.entries.partition_point(|&(t, _)| t <= ts);
        if at > 0 && self.entries[at - 1].0 == ts {
            self.entries[at - 1].1 += cost;
            self.total += cost;
        } else if at == self.entries.len() {
            self.push(ts, cost);
        } else {
            self.entries.insert(at, (ts, cost));
            self.total += cost;
        }
    }

    fn newest(&self) -> Option<u64> {
        self.entries.back().map(|e| e.0)
    }

    /// Earliest time `>= floor` at which `cost` more fits into the window.
    fn earliest_fit(&self, floor: u64, cost: u64, limit: u64, window_ns: u64) -> u64 {
        let floor = floor.max(self.not_before);
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

    /// Removes `cost` admitted at `ts`, if it is still in the log (false if it was not).
    fn remove(&mut self, ts: u64, cost: u64) -> bool {
        // Entries are in time order: search from the newest, where a fresh grant is.
        let Some(index) = self.entries.iter().rposition(|&(t, _)| t <= ts) else {
            return false;
        };
        let (t, c) = self.entries[index];
        if t != ts || c < cost {
            return false;
        }
        self.total -= cost;
        if c == cost {
            self.entries.remove(index);
            self.release();
        } else {
            self.entries[index].1 -= cost;
        }
        true
    }
}

/// The log and the waiters, under one lock.
#[derive(Debug)]
struct State<W> {
    log: Log,
    queue: WaitQueue<W>,
}

/// The window seen by its queue.
struct WindowLedger<'a> {
    log: &'a mut Log,
    limit: u64,
    window_ns: u64,
}

impl Ledger for WindowLedger<'_> {
    fn due(&mut self, now: u64, cost: u64) -> u64 {
        self.log.evict(now, self.window_ns);
        self.log.earliest_fit(now, cost, self.limit, self.window_ns)
    }

    fn due_after(&mut self, now: u64, ahead: u64, cost: u64) -> (u64, bool) {
        self.log.evict(now, self.window_ns);
        let all = ahead.saturating_add(cost);
        if all <= self.limit {
            // Everything queued is admitted before this one and is still inside the window
            // when it is (all within one window of now): exact.
            return (
                self.log.earliest_fit(now, all, self.limit, self.window_ns),
                true,
            );
        }
        // More than one window's worth: any `limit + 1` consecutive units span more than a
        // window, so the last one comes at least a window per `limit` units after the first
        // (a lower bound; the exact figure would replay the whole queue).
        let windows = (all - 1) / self.limit;
        let first = self.log.earliest_fit(now, 1, self.limit, self.window_ns);
        (
            first.saturating_add(windows.saturating_mul(self.window_ns)),
            false,
        )
    }

    fn admit(&mut self, now: u64, cost: u64, _still_queued: bool) -> u64 {
        self.log.push(now, cost);
        now
    }

    fn give_back(&mut self, now: u64, cost: u64, record: u64, _admitted_at: u64) {
        // Exact: the admission is one entry of the log. Evicted already, it no longer counts
        // against anyone: nothing to give back.
        self.log.evict(now, self.window_ns);
        self.log.remove(record, cost);
    }

    fn set_queued(&mut self, _queued: bool) {
        // The immediate paths look at the queue itself, under the same lock.
    }
}

#[derive(Debug)]
pub struct SlidingWindow<W = ()> {
    state: Mutex<State<W>>,
    limit: u64,
    window_ns: u64,
    counters: Counters,
    waiting: AtomicU64,
}

impl<W: Clone> SlidingWindow<W> {
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
            state: Mutex::new(State {
                log: Log::default(),
                queue: WaitQueue::default(),
            }),
            limit,
            window_ns,
            counters: Counters::default(),
            waiting: AtomicU64::new(0),
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn window_ns(&self) -> u64 {
        self.window_ns
    }

    #[inline(always)]
    fn check(&self, now: u64, cost: u64) -> Result<(), AcquireError> {
        if cost > self.limit {
            return Err(AcquireError::Capacity {
                cost,
                capacity: self.limit,
            });
        }
        if now >= MAX_TIME_NS {
            return Err(AcquireError::ClockOutOfRange { now_ns: now });
        }
        Ok(())
    }

    /// `check` for a request that counts as an attempt: refused by an error, it is counted
    /// as rejected.
    fn check_counted(&self, now: u64, cost: u64) -> Result<(), AcquireError> {
        self.check(now, cost)
            .inspect_err(|_| self.counters.rejected())
    }

    fn lock(&self) -> MutexGuard<'_, State<W>> {
        // A panic while holding this lock can only come from a bug in this module; the state
        // is still consistent (every mutation is a single step), so keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the queue and a ledger over the log, under the lock; keeps `waiting`.
    fn with_queue<R>(&self, f: impl FnOnce(&mut WaitQueue<W>, &mut WindowLedger<'_>) -> R) -> R {
        let mut state = self.lock();
        let State { log, queue } = &mut *state;
        let mut ledger = WindowLedger {
            log,
            limit: self.limit,
            window_ns: self.window_ns,
        };
        let result = f(queue, &mut ledger);
        self.waiting.store(queue.len() as u64, Ordering::Relaxed);
        result
    }

    /// Admits `cost` now if nobody waits and it fits; counts admissions only.
    fn take_counted(&self, now: u64, cost: u64) -> Result<bool, AcquireError> {
        self.check_counted(now, cost)?;
        let admitted = self.admit_now(now, cost);
        if admitted {
            self.counters.admitted(cost);
        }
        Ok(admitted)
    }

    /// Writes `cost` into the log at `now` if it fits and nobody waits; counts nothing.
    fn admit_now(&self, now: u64, cost: u64) -> bool {
        let mut state = self.lock();
        state.log.evict(now, self.window_ns);
        // Someone waits: no barging past them.
        if !state.queue.is_empty()
            || state.log.total + cost > self.limit
            || now < state.log.not_before
        {
            return false;
        }
        state.log.push(now, cost);
        true
    }

    /// Entries currently held: the memory cost is 16 bytes each.
    pub fn log_len(&self) -> usize {
        self.lock().log.entries.len()
    }

    /// Entries the log has room for without reallocating (what its memory holds).
    pub fn log_capacity(&self) -> usize {
        self.lock().log.entries.capacity()
    }
}

impl<W: Clone + Send + Sync> RateLimit<W> for SlidingWindow<W> {
    fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Requests waiting in the queue right now.
    fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Admits `cost` now if it fits in the window and nobody waits. Counts the outcome.
    fn try_acquire(&self, now: u64, cost: u64) -> Result<bool, AcquireError> {
        let admitted = self.take_counted(now, cost)?;
        if !admitted {
            self.counters.rejected();
        }
        Ok(admitted)
    }

    /// Like [`SlidingWindow::try_acquire`], but a refusal is not counted (the caller queues
    /// next, and the request is counted by its real outcome).
    fn try_take(&self, now: u64, cost: u64) -> Result<bool, AcquireError> {
        self.take_counted(now, cost)
    }

    /// Admits `cost` now if it fits and nobody waits, counting nothing; returns what
    /// [`SlidingWindow::untake`] needs to undo it (the admission's timestamp).
    fn take(&self, now: u64, cost: u64) -> Result<Option<u64>, AcquireError> {
        self.check(now, cost)?;
        Ok(self.admit_now(now, cost).then_some(now))
    }

    /// Undoes a [`SlidingWindow::take`] exactly; returns the wakers of waiters that can go.
    fn untake(&self, now: u64, cost: u64, record: u64, _taken_at: u64) -> Wakers<W> {
        self.with_queue(|queue, ledger| {
            ledger.log.remove(record, cost);
            queue.retell(); // the head may be due sooner now
            queue.grant_due(ledger, now)
        })
    }

    /// Counts an admission made with [`SlidingWindow::take`], and its wait if it waited.
    fn commit(&self, cost: u64, waited_ns: Option<u64>) {
        self.counters.commit(cost, waited_ns);
    }

    /// What `try_acquire(cost)` would decide now; admits nothing and counts nothing.
    fn peek(&self, now: u64, cost: u64) -> Result<Decision, AcquireError> {
        self.check(now, cost)?;
        let mut state = self.lock();
        let State { log, queue } = &mut *state;
        log.evict(now, self.window_ns);
        let ahead = queue.queued_cost();
        let mut ledger = WindowLedger {
            log,
            limit: self.limit,
            window_ns: self.window_ns,
        };
        // While requests wait, this one would come after them; and the window is empty again
        // a window after the last of them.
        let (at, queue_done) = if ahead == 0 {
            (ledger.due(now, cost), now)
        } else {
            (
                ledger.due_after(now, ahead, cost).0.max(now + 1),
                ledger.due_after(now, ahead, 0).0,
            )
        };
        let log = &state.log;
        let allowed = at <= now;
        let total_after = if allowed { log.total + cost } else { log.total };
        // A zero-cost request adds nothing to the log, so it cannot move the reset time.
        let last = if allowed && cost > 0 {
            now
        } else {
            log.newest().unwrap_or(now)
        };
        let reset_at = if ahead > 0 {
            queue_done + self.window_ns
        } else if total_after == 0 {
            now
        } else {
            last + self.window_ns
        };
        Ok(Decision {
            allowed,
            remaining: if ahead > 0 {
                0
            } else {
                self.limit.saturating_sub(total_after)
            },
            retry_after_ns: at.saturating_sub(now),
            reset_after_ns: reset_at.saturating_sub(now),
        })
    }

    /// Admits `cost` at once if nobody waits and it fits (unless `admit_now` is false: then it
    /// always queues, and is granted by the next `poll`); otherwise queues it behind the
    /// waiters (FIFO), if it could be admitted within `max_wait_ns`. One that cannot fails
    /// at once with the time it would need (counted as timed out); with more than a window's
    /// worth queued ahead that time is a lower bound, and a request that fits under it waits
    /// and times out at its deadline if the queue is slower.
    fn enqueue(
        &self,
        now: u64,
        cost: u64,
        max_wait_ns: u64,
        waker: W,
        admit_now: bool,
    ) -> Result<Entered, AcquireError> {
        self.check_counted(now, cost)?;
        let pushed = self.with_queue(|queue, ledger| {
            if admit_now && queue.is_empty() && ledger.due(now, cost) <= now {
                ledger.log.push(now, cost);
                return Ok(None);
            }
            queue.push(ledger, now, cost, max_wait_ns, waker).map(Some)
        });
        match pushed {
            Ok(None) => {
                self.counters.admitted(cost);
                Ok(Entered::Admitted)
            }
            Ok(Some((ticket, head_due))) => Ok(Entered::Queued { ticket, head_due }),
            Err(needed_ns) => {
                self.counters.timed_out();
                Err(AcquireError::WouldExceedDeadline { needed_ns })
            }
        }
    }

    /// Grants the waiters at the head whose turn has come; returns the wakers to call.
    fn poll(&self, now: u64) -> Wakers<W> {
        self.with_queue(|queue, ledger| queue.grant_due(ledger, now))
    }

    /// What a waiter should do next.
    fn status(&self, ticket: &RateTicket, now: u64) -> Status {
        self.with_queue(|queue, ledger| queue.status(ledger, ticket, now))
    }

    /// Takes a granted request, counting it admitted after waiting `waited_ns`.
    fn consume(&self, ticket: &RateTicket, waited_ns: u64) -> bool {
        let taken = self.lock().queue.consume(ticket);
        if taken {
            self.commit(ticket.cost(), Some(waited_ns));
        }
        taken
    }

    /// Withdraws a request whose waiter gave up (counted as `how`); an unused grant is taken
    /// out of the log again. Returns what happened and the wakers to call.
    fn withdraw(&self, ticket: &RateTicket, now: u64, how: Refusal) -> (Withdrawal, Wakers<W>) {
        let (what, woken) = self.with_queue(|queue, ledger| queue.withdraw(ledger, ticket, now));
        if !matches!(what, Withdrawal::AlreadyEnded(_)) {
            self.counters.refused(how);
        }
        (what, woken)
    }

    /// How long every admitted request waited (immediate admissions as zero waits).
    fn wait_histogram(&self) -> HistogramSnapshot {
        self.counters.wait_histogram()
    }

    /// Removes every waiter without waking it, counting each cancelled.
    fn abandon_waiters(&self) -> Wakers<W> {
        let (n, wakers) = self.with_queue(|queue, ledger| queue.abandon(ledger));
        self.counters.cancelled_many(n);
        wakers
    }

    /// Calls `f` on every queued waker if the lock is free right now.
    fn visit_waiters(&self, f: &mut dyn FnMut(&W)) {
        if let Ok(state) = self.state.try_lock() {
            state.queue.visit(f);
        }
    }

    /// How long the head of the queue has waited so far (0: nobody waits).
    fn oldest_wait_ns(&self, now: u64) -> u64 {
        self.lock()
            .queue
            .oldest_enqueued_ns()
            .map_or(0, |t| now.saturating_sub(t))
    }
}

impl<W: Clone + Send + Sync> Adjust for SlidingWindow<W> {
    /// A debt: `cost` written into the log at `now`, beyond the limit if need be (later
    /// requests wait until it leaves the window). Waiters keep their order.
    fn charge(&self, now: u64, cost: u64) {
        self.lock().log.insert(now, cost);
    }

    /// Nothing fits before `until`; from then, the window's own rule.
    fn pause_until(&self, now: u64, until: u64) {
        if until > now {
            let mut state = self.lock();
            state.log.not_before = state.log.not_before.max(until.min(MAX_TIME_NS));
        }
    }

    /// Fills the window so that at most `remaining` fits now: the provider's used part that
    /// the log does not hold is written as admitted `window - reset_after` ago (so it leaves
    /// when the provider's quota is full again; now, without `reset_after`). Never removes
    /// anything from the log.
    fn sync(&self, now: u64, remaining: u64, reset_after_ns: Option<u64>) {
        let mut state = self.lock();
        state.log.evict(now, self.window_ns);
        let believed = self.limit.saturating_sub(state.log.total);
        let unseen = believed.saturating_sub(remaining);
        if unseen > 0 {
            let leaves_in = reset_after_ns.map_or(self.window_ns, |r| r.min(self.window_ns));
            // Before the clock's start it would need a negative time: then it stays a little
            // longer than the provider said (never shorter).
            let ts = (now + leaves_in).saturating_sub(self.window_ns);
            state.log.insert(ts.min(now), unseen);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    type W = SlidingWindow<u32>;

    fn queued(e: Result<Entered, AcquireError>) -> (std::sync::Arc<RateTicket>, Option<u64>) {
        match e {
            Ok(Entered::Queued { ticket, head_due }) => (ticket, head_due),
            Ok(Entered::Admitted) => panic!("admitted at once"),
            Err(e) => panic!("refused: {e}"),
        }
    }

    // The client layer (issue 15): reservations settled afterwards, and the provider's word.

    #[test]
    fn a_refund_is_exact_and_goes_to_the_waiters_first() {
        let w = W::new(4, 10.0).unwrap();
        let record = w.take(0, 4).unwrap().unwrap();
        let (x, _) = queued(w.enqueue(S, 2, u64::MAX, 7, true));
        // The reservation of 4 used 1: 3 go back; the waiter gets 2, a newcomer the last 1.
        assert_eq!(
            w.untake(S, 3, record, 0).into_iter().collect::<Vec<_>>(),
            vec![7]
        );
        assert!(w.consume(&x, S));
        assert_eq!(w.try_acquire(S, 2), Ok(false));
        assert_eq!(w.try_acquire(S, 1), Ok(true));
    }

    #[test]
    fn an_overage_is_a_debt_beyond_the_limit() {
        let w = W::new(2, 10.0).unwrap();
        assert_eq!(w.try_acquire(0, 2), Ok(true));
        Adjust::charge(&w, S, 3);
        assert_eq!(
            w.try_acquire(10 * S, 1),
            Ok(false),
            "the debt is still in the window"
        );
        assert_eq!(w.peek(10 * S, 1).unwrap().retry_after_ns, S);
        assert_eq!(w.try_acquire(11 * S, 2), Ok(true));
        assert_eq!(
            w.counters().snapshot().admitted_cost,
            4,
            "a debt is not an admission"
        );
    }

    #[test]
    fn a_pause_admits_nothing_before_its_end_and_keeps_the_order() {
        let w = W::new(3, 1.0).unwrap();
        w.pause_until(0, 5 * S);
        assert_eq!(w.try_acquire(5 * S - 1, 1), Ok(false));
        let (x, due) = queued(w.enqueue(0, 1, u64::MAX, 1, true));
        assert_eq!(due, Some(5 * S));
        let (y, _) = queued(w.enqueue(0, 3, u64::MAX, 2, true));
        w.poll(5 * S);
        assert_eq!(w.status(&x, 5 * S), Status::Granted);
        assert_eq!(w.status(&y, 5 * S), Status::Head { due_ns: 6 * S });
        assert_eq!(w.try_acquire(5 * S, 1), Ok(false), "no barging past y");
    }

    #[test]
    fn sync_takes_away_what_the_provider_says_is_used_until_its_reset() {
        let w = W::new(10, 60.0).unwrap();
        assert_eq!(w.try_acquire(100 * S, 2), Ok(true));
        // The provider has 3 left (other clients used some), full again in 20 s.
        w.sync(100 * S, 3, Some(20 * S));
        assert_eq!(w.peek(100 * S, 1).unwrap().remaining, 2);
        assert_eq!(w.try_acquire(100 * S, 4), Ok(false));
        assert_eq!(w.try_acquire(120 * S, 8), Ok(true));
        // Saying more than the window believes adds nothing.
        w.sync(120 * S, 10, None);
        assert_eq!(w.try_acquire(120 * S, 1), Ok(false));
        assert_eq!(w.counters().snapshot().admitted_cost, 10);
    }

    #[test]
    fn never_more_than_limit_in_any_window() {
        let w = W::new(3, 1.0).unwrap();
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
        let w = W::new(2, 10.0).unwrap();
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
        let w = W::new(2, 1.0).unwrap();
        assert!(matches!(
            w.try_acquire(0, 3),
            Err(AcquireError::Capacity { .. })
        ));
    }

    #[test]
    fn waiters_queue_in_order_block_barging_and_leave_nothing_when_withdrawn() {
        let w = W::new(1, 1.0).unwrap();
        assert_eq!(w.try_acquire(0, 1), Ok(true));
        let (a, due) = queued(w.enqueue(0, 1, 5 * S, 1, true));
        assert_eq!(due, Some(S));
        let (b, due) = queued(w.enqueue(0, 1, 5 * S, 2, true));
        assert_eq!(due, None);
        assert_eq!(
            w.enqueue(0, 1, S, 3, true).err(),
            Some(AcquireError::WouldExceedDeadline { needed_ns: 3 * S })
        );
        // Someone waits: no barging even when the window has room at that instant.
        assert_eq!(w.try_acquire(S, 1), Ok(false));
        // The log holds admissions only (the first one left it at 1 s): withdrawing the
        // waiters leaves nothing behind.
        w.withdraw(&b, S, Refusal::Cancelled);
        w.withdraw(&a, S, Refusal::TimedOut);
        assert_eq!(w.log_len(), 0);
        assert_eq!(w.try_acquire(S, 1), Ok(true));
        let c = w.counters().snapshot();
        assert_eq!(
            (c.admitted, c.cancelled, c.timed_out, c.rejected),
            (2, 1, 2, 1)
        );
    }

    #[test]
    fn the_head_is_granted_when_it_fits_and_the_next_becomes_head() {
        let w = W::new(2, 1.0).unwrap();
        assert_eq!(w.try_acquire(0, 2), Ok(true));
        let (a, _) = queued(w.enqueue(S / 2, 1, u64::MAX, 1, true));
        let (b, _) = queued(w.enqueue(S / 2, 2, u64::MAX, 2, true));
        assert_eq!(w.poll(S).into_iter().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(w.status(&a, S), Status::Granted);
        // B needs both units: A's leaves at 2 s.
        assert_eq!(w.status(&b, S), Status::Head { due_ns: 2 * S });
        assert!(w.consume(&a, S / 2));
        assert_eq!(w.poll(2 * S).into_iter().collect::<Vec<_>>(), vec![2]);
        assert!(w.consume(&b, 3 * S / 2));
        assert_eq!(w.counters().snapshot().admitted, 3);
        assert_eq!(w.wait_histogram().sum_ns, 2 * S);
    }

    #[test]
    fn a_grant_given_up_before_use_leaves_the_log() {
        let w = W::new(1, 1.0).unwrap();
        assert_eq!(w.try_acquire(0, 1), Ok(true));
        let (a, _) = queued(w.enqueue(0, 1, u64::MAX, 1, true));
        let (b, _) = queued(w.enqueue(0, 1, u64::MAX, 2, true));
        w.poll(S);
        let (what, woken) = w.withdraw(&a, S, Refusal::Cancelled);
        assert_eq!(what, Withdrawal::GaveBack);
        // Its slot was given back, so B, behind it, is granted at once.
        assert_eq!(woken.into_iter().collect::<Vec<_>>(), vec![2]);
        assert!(w.consume(&b, S));
        assert_eq!(w.log_len(), 1);
    }

    #[test]
    fn cancelling_a_long_queue_oldest_first_is_not_quadratic() {
        // 50,000 withdrawals from the front: O(log n) each (this test would take minutes if
        // each one walked the queue).
        let w = W::new(1, 1.0).unwrap();
        assert_eq!(w.try_acquire(0, 1), Ok(true));
        let tickets: Vec<_> = (0..50_000)
            .map(|i| queued(w.enqueue(0, 1, u64::MAX, i, true)).0)
            .collect();
        for t in &tickets {
            w.withdraw(t, 0, Refusal::Cancelled);
        }
        assert_eq!(w.waiting(), 0);
        assert_eq!(w.try_acquire(S, 1), Ok(true));
    }

    #[test]
    fn memory_is_bounded_by_limit() {
        let w = W::new(100, 1.0).unwrap();
        for i in 0..10_000u64 {
            let _ = w.try_acquire(i * 1_000_000, 1);
            assert!(w.log_len() <= 100);
        }
    }

    #[test]
    fn a_drained_window_gives_its_memory_back() {
        // Issue 12 (14): one entry per nanosecond, a million of them, then the window drains.
        let n = 1_000_000u64;
        let w = W::new(n, 1.0).unwrap();
        for i in 0..n {
            assert_eq!(w.try_acquire(i, 1), Ok(true));
        }
        assert_eq!(w.log_len(), n as usize);
        assert!(w.log_capacity() >= n as usize);
        // Everything has left the window: the next decision evicts it all.
        assert_eq!(w.try_acquire(S + n, 1), Ok(true));
        assert_eq!(w.log_len(), 1);
        assert!(w.log_capacity() <= MIN_CAPACITY, "{}", w.log_capacity());
    }

    #[test]
    fn a_log_far_below_its_capacity_shrinks_gradually() {
        let n = 100_000u64;
        let w = W::new(n, 1.0).unwrap();
        for i in 0..n {
            assert_eq!(w.try_acquire(i, 1), Ok(true));
        }
        let full = w.log_capacity();
        // Slide the window so that only the newest tenth stays.
        let keep = n / 10;
        assert_eq!(w.try_acquire(S + n - keep, 1), Ok(true));
        assert_eq!(w.log_len(), keep as usize);
        let cap = w.log_capacity();
        assert!(cap < full / 2, "{cap} of {full}");
        assert!(cap >= w.log_len(), "{cap}");
        // Removing a few more does not reallocate on every call.
        assert_eq!(w.try_acquire(S + n - keep + 1, 1), Ok(true));
        assert_eq!(w.log_capacity(), cap);
    }

    #[test]
    fn a_steady_log_keeps_its_capacity() {
        // One admission per millisecond in a one-second window: the log stays near 1,000
        // entries, and its capacity must not oscillate with it.
        let w = W::new(2_000, 1.0).unwrap();
        let mut caps = std::collections::BTreeSet::new();
        for i in 0..10_000u64 {
            assert_eq!(w.try_acquire(i * 1_000_000, 1), Ok(true));
            if i > 2_000 {
                caps.insert(w.log_capacity());
            }
        }
        assert_eq!(caps.len(), 1, "{caps:?}");
    }

    #[test]
    fn withdrawn_grants_give_memory_back() {
        let w = W::new(10_000, 1.0).unwrap();
        let mut records = Vec::new();
        for i in 0..10_000u64 {
            records.push(w.take(i, 1).unwrap().unwrap());
        }
        assert!(w.log_capacity() >= 10_000);
        for (i, r) in records.into_iter().enumerate().rev() {
            let _ = w.untake(10_000, 1, r, i as u64);
        }
        assert_eq!(w.log_len(), 0);
        assert!(w.log_capacity() <= MIN_CAPACITY, "{}", w.log_capacity());
    }

    #[test]
    fn a_huge_window_gives_a_short_message() {
        // Issue 12 (13): huge arguments printed hundreds of digits.
        let e = W::new(5, 1e300).unwrap_err();
        assert_eq!(e.message, "window is too long: 1e+300 s");
    }

    #[test]
    fn bad_configuration_names_the_argument() {
        assert_eq!(W::new(0, 1.0).unwrap_err().arg, "limit");
        assert_eq!(W::new(1, 0.0).unwrap_err().arg, "window");
        assert_eq!(W::new(1, f64::NAN).unwrap_err().arg, "window");
        assert_eq!(W::new(1, 1e-12).unwrap_err().arg, "window");
    }
}
