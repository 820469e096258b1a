//! The queue of requests waiting on a rate limiter, and the hand-over rules `Gcra` and
//! `SlidingWindow` share.
//!
//! A waiting request holds a place in the queue, not a slot of time: nothing is taken from
//! the limiter until the request is granted. Only the head of the queue is ever due; the
//! waiter at the head sleeps until its cost fits and then calls [`WaitQueue::grant_due`],
//! which grants every head that fits, in order. A request that gives up is removed in O(1),
//! wherever it stands (the queue is the semaphore's slab-backed [`Fifo`]; the ticket knows its
//! slot), and the ones behind it move up: they are admitted when they would have been had it
//! never queued, so no pattern of cancellations lowers the rate.
//!
//! While anyone waits, the limiter's immediate paths refuse (no barging past the queue), so
//! the queue's figures (`queued_cost`, the head's due time) are exact.
//!
//! The core wakes nobody itself: operations return the wakers to call after the lock is
//! released. A waiter is woken when it is granted, and when it becomes the head or its turn
//! as the head moves earlier (so that it times its turn again); a waker may therefore be
//! called several times, and must be cheap to copy.

use std::sync::Arc;

use crate::queue::Fifo;
use crate::sync::{AtomicU64, AtomicU8, Ordering};
use crate::wakers::Wakers;

/// Where a waiting request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stand {
    Waiting = 0,
    /// Admitted by the limiter; the waiter has not taken it yet ([`WaitQueue::consume`]).
    Granted = 1,
    /// Withdrawn by its waiter: nothing is held.
    Withdrawn = 2,
    /// Taken by its waiter: counted as admitted.
    Consumed = 3,
}

impl Stand {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Granted,
            2 => Self::Withdrawn,
            3 => Self::Consumed,
            _ => Self::Waiting,
        }
    }
}

/// A waiting request, held by its waiter.
#[derive(Debug)]
pub struct RateTicket {
    /// Arrival number: identifies the request (slots are reused).
    seq: u64,
    /// Its slot in the queue while it waits (valid only while `Waiting`).
    slot: AtomicU64,
    cost: u64,
    enqueued_ns: u64,
    stand: AtomicU8,
    /// What the limiter noted when it granted this request, and when: to give the grant back
    /// if the waiter gives up before using it. Only touched under the limiter's lock.
    record: AtomicU64,
    granted_at: AtomicU64,
}

impl RateTicket {
    pub fn cost(&self) -> u64 {
        self.cost
    }

    /// When it was queued, on the limiter's clock.
    pub fn enqueued_ns(&self) -> u64 {
        self.enqueued_ns
    }

    /// `(record, granted_at)` of its grant, once granted (what `RateLimit::untake` needs to
    /// give part of it back: a reservation settled below its estimate); None before.
    pub fn grant(&self) -> Option<(u64, u64)> {
        match self.stand() {
            Stand::Granted | Stand::Consumed => Some((
                self.record.load(Ordering::Relaxed),
                self.granted_at.load(Ordering::Relaxed),
            )),
            Stand::Waiting | Stand::Withdrawn => None,
        }
    }

    /// Settled under the limiter's lock; readable without it.
    pub fn stand(&self) -> Stand {
        Stand::from_u8(self.stand.load(Ordering::Acquire))
    }

    fn settle(&self, stand: Stand) {
        self.stand.store(stand as u8, Ordering::Release);
    }
}

/// Result of a limiter's `enqueue`.
pub enum Entered {
    /// Admitted at once (counted); nothing was queued.
    Admitted,
    /// Queued: `head_due` is its due time if it is the head (time it, then `poll`); otherwise
    /// wait to be woken, then ask `status`.
    Queued {
        ticket: Arc<RateTicket>,
        head_due: Option<u64>,
    },
}

/// What a waiter should do next ([`WaitQueue::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Granted: take it with `consume`.
    Granted,
    /// At the head of the queue: due at `due_ns` (on the limiter's clock); then call `poll`.
    Head { due_ns: u64 },
    /// Behind others: wait to be woken.
    Queued,
    /// Withdrawn or consumed already.
    Ended,
}

/// How a withdrawal ended ([`WaitQueue::withdraw`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawal {
    /// Removed from the queue; nothing was held.
    Removed,
    /// It had been granted: the grant went back to the limiter or to the waiters behind.
    GaveBack,
    /// It had ended before (consumed or withdrawn): nothing changed.
    AlreadyEnded(Stand),
}

/// The limiter under a queue: what "fits" means, and how an admission is written.
pub(crate) trait Ledger {
    /// Earliest time `>= now` at which `cost` fits, counting admissions only.
    fn due(&mut self, now: u64, cost: u64) -> u64;
    /// When a request of `cost` queued behind `ahead` cost of waiters would be admitted:
    /// `(time, exact)`; when not exact, a lower bound.
    fn due_after(&mut self, now: u64, ahead: u64, cost: u64) -> (u64, bool);
    /// Admits `cost` at `now` (it fits); returns what `give_back` needs to undo it.
    fn admit(&mut self, now: u64, cost: u64, still_queued: bool) -> u64;
    /// Gives back, at `now`, an admission of `cost` noted as `record` at `admitted_at`: all of
    /// it if that is exact, else never more than no later admission could have been refused
    /// for (the limiter runs below its rate for the rest, never above). The arguments of
    /// `RateLimit::untake`, in its order.
    fn give_back(&mut self, now: u64, cost: u64, record: u64, admitted_at: u64);
    /// Tells the immediate paths whether anyone waits (they refuse while someone does).
    fn set_queued(&mut self, queued: bool);
}

struct Entry<W> {
    ticket: Arc<RateTicket>,
    waker: W,
}

/// The waiting requests of one limiter, in arrival order. Lives under the limiter's lock.
pub struct WaitQueue<W> {
    entries: Fifo<Entry<W>>,
    next_seq: u64,
    /// Sum of the costs of the entries.
    queued_cost: u64,
    /// The head that was told it is the head (woken to time its turn).
    told_head: Option<u64>,
}

impl<W> Default for WaitQueue<W> {
    fn default() -> Self {
        Self {
            entries: Fifo::new(),
            next_seq: 0,
            queued_cost: 0,
            told_head: None,
        }
    }
}

impl<W> std::fmt::Debug for WaitQueue<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitQueue")
            .field("len", &self.entries.len())
            .field("queued_cost", &self.queued_cost)
            .finish()
    }
}

impl<W: Clone> WaitQueue<W> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn queued_cost(&self) -> u64 {
        self.queued_cost
    }

    /// When the oldest waiter was queued.
    pub fn oldest_enqueued_ns(&self) -> Option<u64> {
        self.entries.front().map(|e| e.ticket.enqueued_ns)
    }

    /// Queues `cost` behind everyone, if it can be admitted within `max_wait_ns`; the caller
    /// has found that it cannot be admitted at once. Returns the ticket and, when it is the
    /// head, its due time; or the wait it would need (nothing queued).
    pub(crate) fn push(
        &mut self,
        ledger: &mut impl Ledger,
        now: u64,
        cost: u64,
        max_wait_ns: u64,
        waker: W,
    ) -> Result<(Arc<RateTicket>, Option<u64>), u64> {
        let first = self.entries.is_empty();
        if first {
            // Before reading the limiter: from here on its state can only change under this
            // lock, so the figures below stay true.
            ledger.set_queued(true);
        }
        let (at, exact) = ledger.due_after(now, self.queued_cost, cost);
        let needed = at.saturating_sub(now);
        if needed > max_wait_ns && (exact || needed > 0) {
            if first {
                ledger.set_queued(false);
            }
            return Err(needed);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let ticket = Arc::new(RateTicket {
            seq,
            slot: AtomicU64::new(self.entries.vacant() as u64),
            cost,
            enqueued_ns: now,
            stand: AtomicU8::new(Stand::Waiting as u8),
            record: AtomicU64::new(0),
            granted_at: AtomicU64::new(0),
        });
        self.entries.push_back(Entry {
            ticket: Arc::clone(&ticket),
            waker,
        });
        self.queued_cost += cost;
        let head_due = if first {
            self.told_head = Some(seq);
            Some(ledger.due(now, cost))
        } else {
            None
        };
        Ok((ticket, head_due))
    }

    /// Grants every head of the queue that fits at `now`, in order, then tells the new head
    /// (if it changed) to time its turn. Returns the wakers to call.
    pub(crate) fn grant_due(&mut self, ledger: &mut impl Ledger, now: u64) -> Wakers<W> {
        let mut woken = Wakers::new();
        while let Some(entry) = self.entries.front() {
            let cost = entry.ticket.cost;
            if ledger.due(now, cost) > now {
                break;
            }
            let Some(entry) = self.entries.pop_front() else {
                break;
            };
            let still_queued = !self.entries.is_empty();
            let record = ledger.admit(now, cost, still_queued);
            self.granted(entry, record, now, &mut woken);
        }
        self.tell_head(&mut woken);
        woken
    }

    fn granted(&mut self, entry: Entry<W>, record: u64, now: u64, woken: &mut Wakers<W>) {
        self.queued_cost -= entry.ticket.cost;
        if self.told_head == Some(entry.ticket.seq) {
            self.told_head = None;
        }
        entry.ticket.record.store(record, Ordering::Relaxed);
        entry.ticket.granted_at.store(now, Ordering::Relaxed);
        entry.ticket.settle(Stand::Granted);
        woken.push(entry.waker);
    }

    fn tell_head(&mut self, woken: &mut Wakers<W>) {
        if let Some(head) = self.entries.front() {
            let seq = head.ticket.seq;
            if self.told_head != Some(seq) {
                self.told_head = Some(seq);
                woken.push(head.waker.clone());
            }
        }
    }

    /// What `ticket`'s waiter should do next.
    pub(crate) fn status(
        &mut self,
        ledger: &mut impl Ledger,
        ticket: &RateTicket,
        now: u64,
    ) -> Status {
        match ticket.stand() {
            Stand::Granted => Status::Granted,
            Stand::Withdrawn | Stand::Consumed => Status::Ended,
            Stand::Waiting => match self.entries.front().map(|e| e.ticket.seq) {
                Some(seq) if seq == ticket.seq => {
                    self.told_head = Some(seq);
                    Status::Head {
                        due_ns: ledger.due(now, ticket.cost),
                    }
                }
                _ => Status::Queued,
            },
        }
    }

    /// Takes a granted request: true if it was granted (count it admitted), false if it was
    /// not (still waiting, withdrawn, or taken already).
    pub(crate) fn consume(&mut self, ticket: &RateTicket) -> bool {
        if ticket.stand() == Stand::Granted {
            ticket.settle(Stand::Consumed);
            true
        } else {
            false
        }
    }

    /// Withdraws a request whose waiter gave up, wherever it stands. A grant it had not
    /// used yet goes back to the limiter (see [`Ledger::give_back`]), and the waiters behind
    /// get what fits now. Returns what happened and the wakers to call.
    pub(crate) fn withdraw(
        &mut self,
        ledger: &mut impl Ledger,
        ticket: &RateTicket,
        now: u64,
    ) -> (Withdrawal, Wakers<W>) {
        let mut woken = Wakers::new();
        let what = match ticket.stand() {
            Stand::Waiting => {
                // A waiting ticket is in its slot (it leaves it only by being settled).
                let slot = ticket.slot.load(Ordering::Relaxed) as usize;
                if let Some(entry) = self.entries.remove(slot) {
                    self.queued_cost -= entry.ticket.cost;
                    if self.told_head == Some(ticket.seq) {
                        self.told_head = None;
                    }
                    if self.entries.is_empty() {
                        ledger.set_queued(false);
                    }
                }
                ticket.settle(Stand::Withdrawn);
                Withdrawal::Removed
            }
            Stand::Granted => {
                ticket.settle(Stand::Withdrawn);
                let record = ticket.record.load(Ordering::Relaxed);
                let granted_at = ticket.granted_at.load(Ordering::Relaxed);
                ledger.give_back(now, ticket.cost, record, granted_at);
                // The head may be due sooner now: tell it again.
                self.retell();
                Withdrawal::GaveBack
            }
            ended => return (Withdrawal::AlreadyEnded(ended), woken),
        };
        // The head may have changed, or room been made: grant what fits now.
        let more = self.grant_due(ledger, now);
        woken.extend(more);
        (what, woken)
    }

    /// Makes the next `grant_due` tell the head again (room was given back: it may be due
    /// sooner than it was told).
    pub(crate) fn retell(&mut self) {
        self.told_head = None;
    }

    /// Removes every waiter without waking it (their tickets read `Withdrawn`); returns how
    /// many and their wakers, for tearing down a limiter that is being collected.
    pub(crate) fn abandon(&mut self, ledger: &mut impl Ledger) -> (u64, Wakers<W>) {
        let entries = self.entries.drain();
        self.queued_cost = 0;
        self.told_head = None;
        if !entries.is_empty() {
            ledger.set_queued(false);
        }
        let n = entries.len() as u64;
        let wakers = entries
            .into_iter()
            .map(|e| {
                e.ticket.settle(Stand::Withdrawn);
                e.waker
            })
            .collect();
        (n, wakers)
    }

    /// Calls `f` on every queued waker (a garbage collector's traversal).
    pub fn visit(&self, mut f: impl FnMut(&W)) {
        self.entries.iter().for_each(|e| f(&e.waker));
    }
}
