//! Counting semaphore accounting: lock-free permits, FIFO waiters, hand-off on release.
//!
//! The permit state is one atomic word: `in_use` (32 bits), `limit` (30 bits), a `CLOSED` bit
//! and a `QUEUED` bit. Every decision is one CAS on that word, so `in_use <= limit` is checked
//! and enforced atomically even while the limit is being resized.
//!
//! Fast paths touch only the word: `try_acquire` succeeds when nobody is queued and the
//! request fits; `release` gives permits back when nobody is queued. Once anyone waits, the
//! `QUEUED` bit sends releases through the queue's mutex, which hands the freed permits to the
//! head of the queue (no barging: newcomers fail their fast path while `QUEUED` is set), so
//! waiting is strictly FIFO, multi-permit requests included.
//!
//! The queue is a slab-backed linked list ([`crate::queue::Fifo`]) and each ticket knows its
//! slot, so a waiter withdraws from anywhere in the queue in O(1).
//!
//! Waits are timed on the waiting path only: a ticket notes when it was queued and how long it
//! had waited when it was granted. An immediate admission reads no clock and writes nothing but
//! the permit word and its counters.
//!
//! A grant is counted when its waiter takes it, not when it is made: the permits are handed
//! over at once (they are the waiter's, `in_use` includes them), but between the grant and the
//! waiter's resumption the waiter may be cancelled, and then the permits are passed on. So the
//! waiter's owner ends every granted ticket with [`Semaphore::commit`] (admitted, its wait
//! recorded in its [`Counters`]) or [`Semaphore::pass_on`] (counted as the refusal it was,
//! permits released). Requests refused by an error (`Closed`, `Capacity`) count as rejected.
//!
//! The core never wakes anyone itself. Operations that grant permits to waiters return their
//! wakers (`W`: a thread handle, an asyncio future, ...) for the caller to wake after the lock
//! is released, so no foreign code ever runs under the lock.

use std::sync::Arc;

use crate::histogram::HistogramSnapshot;
use crate::padded::CachePadded;
use crate::queue::Fifo;
use crate::stats::{Counters, Refusal};
use crate::sync::{AtomicU64, AtomicU8, Mutex, MutexGuard, Ordering};
use crate::wakers::Wakers;

const IN_USE_MASK: u64 = (1 << 32) - 1;
const LIMIT_SHIFT: u32 = 32;
const LIMIT_MASK: u64 = (1 << 30) - 1;
const CLOSED: u64 = 1 << 62;
const QUEUED: u64 = 1 << 63;

/// Largest permit count a semaphore can hold.
pub const MAX_PERMITS: u64 = LIMIT_MASK;

#[inline(always)]
fn in_use_of(word: u64) -> u64 {
    word & IN_USE_MASK
}

#[inline(always)]
fn limit_of(word: u64) -> u64 {
    (word >> LIMIT_SHIFT) & LIMIT_MASK
}

/// Whether a request for `n` permits is refused by an error, whatever it would wait for: the
/// semaphore is closed, or `n` exceeds its limit.
#[inline(always)]
fn refusal(word: u64, n: u64) -> Result<(), SemaphoreError> {
    if word & CLOSED != 0 {
        return Err(SemaphoreError::Closed);
    }
    let limit = limit_of(word);
    if n > limit {
        return Err(SemaphoreError::Capacity { n, limit });
    }
    Ok(())
}

/// Whether a release of `n` permits is refused: fewer are held (a caller's bug).
#[inline(always)]
fn over_release(word: u64, n: u64) -> Result<(), SemaphoreError> {
    let in_use = in_use_of(word);
    if in_use < n {
        return Err(SemaphoreError::OverRelease { n, in_use });
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SemaphoreError {
    Closed,
    /// `n` permits can never be held at once under the current `limit`.
    Capacity {
        n: u64,
        limit: u64,
    },
    /// Released `n` permits while only `in_use` are held.
    OverRelease {
        n: u64,
        in_use: u64,
    },
    /// `limit` outside `1..=MAX_PERMITS`.
    BadLimit {
        limit: u64,
    },
}

impl std::fmt::Display for SemaphoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed => f.write_str("the semaphore is closed"),
            Self::Capacity { n, limit } => write!(
                f,
                "{n} permits requested but the limit is {limit}: it can never be admitted"
            ),
            Self::OverRelease { n, in_use } => {
                write!(f, "release of {n} permits but only {in_use} are in use")
            }
            Self::BadLimit { limit } => {
                write!(f, "limit must be between 1 and {MAX_PERMITS}, got {limit}")
            }
        }
    }
}

impl std::error::Error for SemaphoreError {}

/// Where a queued request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    Waiting = 0,
    /// The permits were handed over: the waiter holds them and must release them.
    Granted = 1,
    /// The semaphore was closed while waiting; nothing is held.
    Closed = 2,
    /// Withdrawn by the waiter; nothing is held.
    Cancelled = 3,
    /// The limit was lowered below the request while it waited; nothing is held.
    TooLarge = 4,
}

impl Outcome {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Granted,
            2 => Self::Closed,
            3 => Self::Cancelled,
            4 => Self::TooLarge,
            _ => Self::Waiting,
        }
    }
}

/// A queued request, held by the waiter. Its outcome is final once it leaves `Waiting`.
#[derive(Debug)]
pub struct Ticket {
    n: u64,
    outcome: AtomicU8,
    /// When it was queued, on the semaphore's clock.
    enqueued_ns: u64,
    /// Its slot in the queue (meaningful while `Waiting`).
    slot: usize,
    /// Nanoseconds from queueing to the grant; written before `outcome` becomes `Granted`.
    waited_ns: AtomicU64,
}

impl Ticket {
    pub fn n(&self) -> u64 {
        self.n
    }

    /// Settled under the queue lock; readable without it (Acquire pairs with the Release).
    pub fn outcome(&self) -> Outcome {
        Outcome::from_u8(self.outcome.load(Ordering::Acquire))
    }

    /// How long it waited from being queued to being granted (0 unless `Granted`).
    pub fn waited_ns(&self) -> u64 {
        self.waited_ns.load(Ordering::Relaxed)
    }

    fn settle(&self, outcome: Outcome) {
        self.outcome.store(outcome as u8, Ordering::Release);
    }
}

struct Entry<W> {
    ticket: Arc<Ticket>,
    waker: W,
}

/// Result of [`Semaphore::enqueue`].
pub enum Enqueued {
    /// Admitted at once; nothing was queued.
    Acquired,
    /// Queued: wait for the waker, then read the ticket's outcome.
    Queued(Arc<Ticket>),
}

pub struct Semaphore<W> {
    word: CachePadded<AtomicU64>,
    high_water: CachePadded<AtomicU64>,
    waiting: AtomicU64,
    queue: Mutex<Fifo<Entry<W>>>,
    counters: Counters,
    /// Read only on the waiting path (queueing, granting to a waiter, `oldest_wait_ns`).
    clock: fn() -> u64,
}

impl<W> std::fmt::Debug for Semaphore<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semaphore")
            .field("in_use", &self.in_use())
            .field("limit", &self.limit())
            .field("waiting", &self.waiting())
            .finish()
    }
}

impl<W> Semaphore<W> {
    pub fn new(limit: u64) -> Result<Self, SemaphoreError> {
        Self::with_clock(limit, crate::clock::monotonic_ns)
    }

    /// A semaphore that times its waiters with `clock` (monotonic nanoseconds).
    pub fn with_clock(limit: u64, clock: fn() -> u64) -> Result<Self, SemaphoreError> {
        if limit == 0 || limit > MAX_PERMITS {
            return Err(SemaphoreError::BadLimit { limit });
        }
        Ok(Self {
            word: CachePadded::new(AtomicU64::new(limit << LIMIT_SHIFT)),
            high_water: CachePadded::new(AtomicU64::new(0)),
            waiting: AtomicU64::new(0),
            queue: Mutex::new(Fifo::new()),
            counters: Counters::default(),
            clock,
        })
    }

    pub fn in_use(&self) -> u64 {
        in_use_of(self.word.load(Ordering::Acquire))
    }

    pub fn limit(&self) -> u64 {
        limit_of(self.word.load(Ordering::Acquire))
    }

    /// Permits free right now (0 while `in_use` exceeds a lowered limit).
    pub fn available(&self) -> u64 {
        let w = self.word.load(Ordering::Acquire);
        limit_of(w).saturating_sub(in_use_of(w))
    }

    /// Whether a request for one permit would have to wait now: none is free, or someone is
    /// queued (a newcomer never passes a waiter). False once closed (it would be refused).
    pub fn locked(&self) -> bool {
        let w = self.word.load(Ordering::Acquire);
        w & CLOSED == 0 && (w & QUEUED != 0 || in_use_of(w) >= limit_of(w))
    }

    pub fn is_closed(&self) -> bool {
        self.word.load(Ordering::Acquire) & CLOSED != 0
    }

    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    pub fn high_water(&self) -> u64 {
        self.high_water.load(Ordering::Relaxed)
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// How long every admitted request waited, from being queued to being granted its permits
    /// (immediate admissions as zero waits; a granted waiter once it [`Semaphore::commit`]s).
    pub fn wait_histogram(&self) -> HistogramSnapshot {
        self.counters.wait_histogram()
    }

    /// How long the head of the queue has been waiting so far, in nanoseconds (0: nobody
    /// waits). Takes the queue lock briefly.
    pub fn oldest_wait_ns(&self) -> u64 {
        let queue = self.lock();
        queue
            .front()
            .map_or(0, |e| (self.clock)().saturating_sub(e.ticket.enqueued_ns))
    }

    fn lock(&self) -> MutexGuard<'_, Fifo<Entry<W>>> {
        // Every mutation under this lock is completed before anything that can panic, so a
        // poisoned queue is still consistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[inline(always)]
    fn note_in_use(&self, in_use: u64) {
        // A load first: the common case (no new peak) then costs no write.
        if in_use > self.high_water.load(Ordering::Relaxed) {
            self.high_water.fetch_max(in_use, Ordering::Relaxed);
        }
    }

    /// Takes `n` permits if they are free and nobody is queued ahead. Never waits.
    #[inline]
    pub fn try_acquire(&self, n: u64) -> Result<bool, SemaphoreError> {
        let taken = self.try_take(n)?;
        if !taken {
            self.counters.rejected();
        }
        Ok(taken)
    }

    /// Like [`Semaphore::try_acquire`] but a refusal is not counted: for a fast path whose
    /// caller falls back to [`Semaphore::enqueue`], which counts the request's real outcome.
    /// An error (closed, or `n` over the limit) ends the request: it is counted as rejected.
    #[inline]
    pub fn try_take(&self, n: u64) -> Result<bool, SemaphoreError> {
        let taken = self.update_word(|w| {
            refusal(w, n).map_err(Some)?;
            if w & QUEUED != 0 || in_use_of(w) + n > limit_of(w) {
                return Err(None); // must wait
            }
            Ok(w + n)
        });
        match taken {
            Ok(w) => {
                self.counters.admitted(n);
                self.note_in_use(in_use_of(w) + n);
                Ok(true)
            }
            Err(None) => Ok(false),
            Err(Some(e)) => Err(self.refuse(e)),
        }
    }

    /// The one compare-and-swap loop on the permit word: `next` maps the word read to the word
    /// to store, or declines (`Err`: nothing is written). Retried with the fresh word whenever
    /// another thread changed it in between. Returns the word it replaced.
    ///
    /// AcqRel on success: a decision is ordered after every decision it observed, and the
    /// permits it hands over are visible to whoever reads the word next.
    #[inline(always)]
    fn update_word<E>(&self, mut next: impl FnMut(u64) -> Result<u64, E>) -> Result<u64, E> {
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            let new = next(w)?;
            match self
                .word
                .compare_exchange_weak(w, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(w),
                Err(actual) => w = actual,
            }
        }
    }

    /// Counts a request refused by `err` (as rejected) and returns the error.
    #[cold]
    fn refuse(&self, err: SemaphoreError) -> SemaphoreError {
        self.counters.rejected();
        err
    }

    /// Gives back `n` permits, handing them to queued waiters in FIFO order.
    ///
    /// Returns the wakers of the waiters that were granted permits; wake each of them.
    #[inline]
    pub fn release(&self, n: u64) -> Result<Wakers<W>, SemaphoreError> {
        let released = self.update_word(|w| {
            over_release(w, n).map_err(Some)?;
            if w & QUEUED != 0 {
                return Err(None); // the queue's head gets them: under its lock
            }
            Ok(w - n)
        });
        match released {
            Ok(_) => Ok(Wakers::new()),
            Err(None) => self.release_to_queue(n),
            Err(Some(e)) => Err(e),
        }
    }

    fn release_to_queue(&self, n: u64) -> Result<Wakers<W>, SemaphoreError> {
        let mut queue = self.lock();
        self.update_word(|w| over_release(w, n).map(|()| w - n))?;
        Ok(self.grant(&mut queue))
    }

    /// Admits at once if possible (nobody queued and the request fits), otherwise queues it.
    pub fn enqueue(&self, n: u64, waker: W) -> Result<Enqueued, SemaphoreError> {
        self.enqueue_reusing(n, waker, None)
    }

    /// `enqueue`, with `spare` (a ticket of an earlier, finished wait) made into the new
    /// ticket if nothing else references it, instead of allocating one. Callers that wait
    /// often keep their finished tickets for this: a wait then touches no allocator.
    pub fn enqueue_reusing(
        &self,
        n: u64,
        waker: W,
        spare: Option<Arc<Ticket>>,
    ) -> Result<Enqueued, SemaphoreError> {
        let mut queue = self.lock();
        let mut admit = false;
        let w = self
            .update_word(|w| {
                refusal(w, n)?;
                admit = queue.is_empty() && in_use_of(w) + n <= limit_of(w);
                // Setting QUEUED with a CAS on the same word as the permits means a release
                // that slipped in since our load makes this fail and re-check: no lost wake-up.
                Ok(if admit { w + n } else { w | QUEUED })
            })
            .map_err(|e| self.refuse(e))?;
        if admit {
            self.counters.admitted(n);
            self.note_in_use(in_use_of(w) + n);
            return Ok(Enqueued::Acquired);
        }
        let fresh = Ticket {
            n,
            outcome: AtomicU8::new(Outcome::Waiting as u8),
            enqueued_ns: (self.clock)(),
            slot: queue.vacant(),
            waited_ns: AtomicU64::new(0),
        };
        let ticket = match spare {
            Some(mut spare) => match Arc::get_mut(&mut spare) {
                Some(slot) => {
                    *slot = fresh;
                    spare
                }
                None => Arc::new(fresh),
            },
            None => Arc::new(fresh),
        };
        let slot = queue.push_back(Entry {
            ticket: Arc::clone(&ticket),
            waker,
        });
        debug_assert_eq!(slot, ticket.slot);
        self.waiting.store(queue.len() as u64, Ordering::Relaxed);
        Ok(Enqueued::Queued(ticket))
    }

    /// Withdraws a queued request (its waiter was cancelled or timed out), in O(1).
    ///
    /// Returns the ticket's final outcome and the wakers of waiters granted permits because
    /// this one left the head of the queue. If the outcome is `Granted`, the permits were
    /// handed over before the withdrawal: the caller holds them and must end the ticket with
    /// [`Semaphore::commit`] (keep them) or [`Semaphore::pass_on`], otherwise they are lost.
    pub fn cancel(&self, ticket: &Arc<Ticket>, timed_out: bool) -> (Outcome, Wakers<W>) {
        let mut queue = self.lock();
        let outcome = ticket.outcome();
        if outcome != Outcome::Waiting {
            return (outcome, Wakers::new());
        }
        match queue.get(ticket.slot) {
            Some(entry) if Arc::ptr_eq(&entry.ticket, ticket) => {
                queue.remove(ticket.slot);
            }
            // Not this semaphore's ticket: leave it alone.
            _ => return (outcome, Wakers::new()),
        }
        ticket.settle(Outcome::Cancelled);
        self.counters.refused(if timed_out {
            Refusal::TimedOut
        } else {
            Refusal::Cancelled
        });
        let woken = self.grant(&mut queue);
        (Outcome::Cancelled, woken)
    }

    /// Ends a granted ticket whose waiter takes the permits: counts the admission and records
    /// its wait. Call once per granted ticket, unless it is passed on instead.
    pub fn commit(&self, ticket: &Ticket) {
        debug_assert_eq!(ticket.outcome(), Outcome::Granted);
        self.commit_grant(ticket.n, ticket.waited_ns());
    }

    /// [`Semaphore::commit`] from the ticket's figures (for a waiter that kept them, not the
    /// ticket).
    pub fn commit_grant(&self, n: u64, waited_ns: u64) {
        self.counters.commit(n, Some(waited_ns));
    }

    /// Ends a granted ticket whose waiter gave up before taking the permits (cancelled,
    /// timed out, interrupted, dropped): counts it as that refusal and releases its `n`
    /// permits, to the next waiters. Returns their wakers.
    pub fn pass_on(&self, n: u64, how: Refusal) -> Result<Wakers<W>, SemaphoreError> {
        let woken = self.release(n)?;
        self.counters.refused(how);
        Ok(woken)
    }

    /// Changes the limit. Raising it admits queued waiters that now fit; lowering it never
    /// revokes held permits (`in_use` may stay above the new limit until releases bring it
    /// down), and waiters that can no longer ever fit are woken with `TooLarge`.
    pub fn set_limit(&self, limit: u64) -> Result<Wakers<W>, SemaphoreError> {
        if limit == 0 || limit > MAX_PERMITS {
            return Err(SemaphoreError::BadLimit { limit });
        }
        let mut queue = self.lock();
        // Never declines: only the limit's bits change.
        self.update_word::<SemaphoreError>(|w| {
            Ok((w & !(LIMIT_MASK << LIMIT_SHIFT)) | (limit << LIMIT_SHIFT))
        })?;
        let mut woken = Wakers::new();
        for entry in queue.extract_if(|e| e.ticket.n > limit) {
            entry.ticket.settle(Outcome::TooLarge);
            self.counters.rejected();
            woken.push(entry.waker);
        }
        woken.extend(self.grant(&mut queue));
        Ok(woken)
    }

    /// Refuses all new requests and wakes every waiter with `Closed`. Held permits stay valid
    /// and can still be released.
    pub fn close(&self) -> Wakers<W> {
        let mut queue = self.lock();
        self.word.fetch_or(CLOSED, Ordering::AcqRel);
        let woken = queue
            .drain()
            .into_iter()
            .map(|entry| {
                entry.ticket.settle(Outcome::Closed);
                self.counters.rejected();
                entry.waker
            })
            .collect();
        self.clear_queued(&queue);
        woken
    }

    /// Calls `f` on every queued waker, if the queue is not locked right now (for a garbage
    /// collector's traversal, which must not block).
    pub fn visit_waiters(&self, mut f: impl FnMut(&W)) {
        if let Ok(queue) = self.queue.try_lock() {
            queue.iter().for_each(|e| f(&e.waker));
        }
    }

    /// Removes every waiter without waking it (their tickets read `Cancelled`); for tearing
    /// down an object that is being garbage collected. Returns the wakers to drop.
    pub fn abandon_waiters(&self) -> Wakers<W> {
        let mut queue = self.lock();
        let wakers = queue
            .drain()
            .into_iter()
            .map(|entry| {
                entry.ticket.settle(Outcome::Cancelled);
                self.counters.cancelled();
                entry.waker
            })
            .collect();
        self.clear_queued(&queue);
        wakers
    }

    /// Hands free permits to the head of the queue while it fits (counted when the waiter
    /// commits). Called with the lock held.
    fn grant(&self, queue: &mut Fifo<Entry<W>>) -> Wakers<W> {
        let mut woken = Wakers::new();
        let mut now = None;
        while let Some(head) = queue.front() {
            let n = head.ticket.n;
            let granted = self.update_word(|w| {
                if w & CLOSED != 0 || in_use_of(w) + n > limit_of(w) {
                    return Err(());
                }
                Ok(w + n)
            });
            let Ok(w) = granted else { break };
            let in_use = in_use_of(w) + n;
            if let Some(entry) = queue.pop_front() {
                let now = *now.get_or_insert_with(self.clock);
                let waited = now.saturating_sub(entry.ticket.enqueued_ns);
                entry.ticket.waited_ns.store(waited, Ordering::Relaxed);
                entry.ticket.settle(Outcome::Granted);
                self.note_in_use(in_use);
                woken.push(entry.waker);
            }
        }
        self.clear_queued(queue);
        woken
    }

    /// Keeps the `QUEUED` bit and the `waiting` gauge in step with the queue. Lock held.
    fn clear_queued(&self, queue: &Fifo<Entry<W>>) {
        self.waiting.store(queue.len() as u64, Ordering::Relaxed);
        if queue.is_empty() {
            self.word.fetch_and(!QUEUED, Ordering::AcqRel);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    type Sem = Semaphore<&'static str>;

    fn queued(e: Enqueued) -> Arc<Ticket> {
        match e {
            Enqueued::Queued(t) => t,
            Enqueued::Acquired => panic!("expected to queue"),
        }
    }

    #[test]
    fn try_acquire_and_release_account_permits() {
        let s = Sem::new(3).unwrap();
        assert_eq!(s.try_acquire(2), Ok(true));
        assert_eq!(s.try_acquire(2), Ok(false));
        assert_eq!(s.try_acquire(1), Ok(true));
        assert_eq!((s.in_use(), s.available(), s.high_water()), (3, 0, 3));
        assert!(s.release(3).unwrap().is_empty());
        assert_eq!(s.in_use(), 0);
        assert_eq!(
            s.release(1),
            Err(SemaphoreError::OverRelease { n: 1, in_use: 0 })
        );
        assert_eq!(
            s.try_acquire(4),
            Err(SemaphoreError::Capacity { n: 4, limit: 3 })
        );
        let c = s.counters().snapshot();
        // The refusal and the capacity error are both counted as rejected.
        assert_eq!((c.admitted, c.rejected, c.admitted_cost), (2, 2, 3));
    }

    #[test]
    fn requests_refused_by_an_error_count_as_rejected() {
        let s = Sem::new(2).unwrap();
        assert!(s.try_take(3).is_err());
        assert!(s.enqueue(3, "big").is_err());
        s.close();
        assert_eq!(s.try_take(1), Err(SemaphoreError::Closed));
        assert!(s.enqueue(1, "late").is_err());
        assert_eq!(s.try_acquire(1), Err(SemaphoreError::Closed));
        let c = s.counters().snapshot();
        assert_eq!((c.admitted, c.rejected), (0, 5));
        assert_eq!(c.attempts(), 5);
    }

    #[test]
    fn a_grant_is_counted_when_taken_and_a_passed_on_one_as_refused() {
        let s = Sem::new(1).unwrap();
        assert_eq!(s.try_acquire(1), Ok(true));
        let first = queued(s.enqueue(1, "first").unwrap());
        let second = queued(s.enqueue(1, "second").unwrap());
        assert_eq!(s.release(1).unwrap(), vec!["first"]);
        assert_eq!(first.outcome(), Outcome::Granted);
        // Granted, not yet taken: held, but not counted (nor in the histogram).
        assert_eq!(s.in_use(), 1);
        assert_eq!(s.counters().snapshot().admitted, 1);
        assert_eq!(s.wait_histogram().count(), 1);
        // Its waiter was cancelled before taking it: passed on, counted as cancelled.
        assert_eq!(s.cancel(&first, false).0, Outcome::Granted);
        assert_eq!(s.pass_on(1, Refusal::Cancelled).unwrap(), vec!["second"]);
        assert_eq!(second.outcome(), Outcome::Granted);
        s.commit(&second);
        let c = s.counters().snapshot();
        assert_eq!((c.admitted, c.cancelled, c.attempts()), (2, 1, 3));
        assert_eq!(s.wait_histogram().count(), 2);
        assert_eq!(s.in_use(), 1);
    }

    /// 50,000 waiters withdrawn oldest first, newest first, or from the middle out: each
    /// withdrawal is O(1) (a search of the queue made the newest-first order quadratic, some
    /// 1.25e9 comparisons here), and the waiters left keep their order.
    #[test]
    fn withdrawing_fifty_thousand_waiters_in_any_order() {
        const N: usize = 50_000;
        for order in ["oldest first", "newest first", "middle out"] {
            let s = Semaphore::<usize>::new(1).unwrap();
            assert_eq!(s.try_acquire(1), Ok(true));
            let mut tickets: Vec<(usize, Arc<Ticket>)> = (0..N)
                .map(|i| (i, queued(s.enqueue(1, i).unwrap())))
                .collect();
            let kept = tickets.remove(N / 3); // stays queued throughout
            match order {
                "newest first" => tickets.reverse(),
                "middle out" => tickets.sort_by_key(|(i, _)| (i.abs_diff(N / 2), *i)),
                _ => {}
            }
            for (_, t) in &tickets {
                let (outcome, woken) = s.cancel(t, false);
                assert_eq!(outcome, Outcome::Cancelled, "{order}");
                assert!(woken.is_empty(), "{order}: the permit is held");
            }
            assert_eq!(s.waiting(), 1, "{order}");
            assert_eq!(s.release(1).unwrap(), vec![kept.0], "{order}");
            assert_eq!(s.counters().snapshot().cancelled, N as u64 - 1);
        }
    }

    #[test]
    fn fifo_hand_off_with_multi_permit_head() {
        let s = Sem::new(4).unwrap();
        assert_eq!(s.try_acquire(3), Ok(true));
        let big = queued(s.enqueue(4, "big").unwrap());
        let small = queued(s.enqueue(1, "small").unwrap());
        // One permit is free, but the big request is ahead: the small one must not barge.
        assert_eq!(s.try_acquire(1), Ok(false));
        assert_eq!(s.waiting(), 2);
        assert_eq!(s.release(3).unwrap(), vec!["big"]);
        assert_eq!(big.outcome(), Outcome::Granted);
        assert_eq!(small.outcome(), Outcome::Waiting);
        assert_eq!(s.release(4).unwrap(), vec!["small"]);
        assert_eq!(s.waiting(), 0);
        assert_eq!(s.in_use(), 1);
        assert_eq!(s.try_acquire(3), Ok(true));
    }

    #[test]
    fn cancelling_the_head_lets_the_next_through() {
        let s = Sem::new(2).unwrap();
        assert_eq!(s.try_acquire(1), Ok(true));
        let big = queued(s.enqueue(2, "big").unwrap());
        let _small = queued(s.enqueue(1, "small").unwrap());
        let (outcome, woken) = s.cancel(&big, true);
        assert_eq!(outcome, Outcome::Cancelled);
        assert_eq!(Vec::from(woken), vec!["small"]);
        assert_eq!(s.in_use(), 2);
        assert_eq!(s.counters().snapshot().timed_out, 1);
    }

    #[test]
    fn cancel_after_grant_reports_granted() {
        let s = Sem::new(1).unwrap();
        assert_eq!(s.try_acquire(1), Ok(true));
        let t = queued(s.enqueue(1, "w").unwrap());
        assert_eq!(s.release(1).unwrap(), vec!["w"]);
        let (outcome, woken) = s.cancel(&t, false);
        assert_eq!(outcome, Outcome::Granted);
        assert!(woken.is_empty());
        assert_eq!(s.in_use(), 1, "the permit is held by the ticket's owner");
    }

    #[test]
    fn resize_never_revokes_and_grants_on_growth() {
        let s = Sem::new(2).unwrap();
        assert_eq!(s.try_acquire(2), Ok(true));
        let t = queued(s.enqueue(1, "w").unwrap());
        assert!(s.set_limit(1).unwrap().is_empty());
        assert_eq!((s.in_use(), s.limit(), s.available()), (2, 1, 0));
        assert!(
            s.release(1).unwrap().is_empty(),
            "in_use 1 is not below limit 1"
        );
        assert_eq!(s.set_limit(3).unwrap(), vec!["w"]);
        assert_eq!(t.outcome(), Outcome::Granted);
        assert_eq!(s.in_use(), 2);
    }

    #[test]
    fn shrinking_below_a_waiter_wakes_it_with_too_large() {
        let s = Sem::new(4).unwrap();
        assert_eq!(s.try_acquire(4), Ok(true));
        let t = queued(s.enqueue(3, "w").unwrap());
        assert_eq!(s.set_limit(2).unwrap(), vec!["w"]);
        assert_eq!(t.outcome(), Outcome::TooLarge);
        assert_eq!(s.waiting(), 0);
        assert_eq!(s.try_acquire(0), Ok(false), "still over the new limit");
    }

    #[test]
    fn close_wakes_everyone_and_keeps_held_permits() {
        let s = Sem::new(1).unwrap();
        assert_eq!(s.try_acquire(1), Ok(true));
        let t = queued(s.enqueue(1, "w").unwrap());
        assert_eq!(s.close(), vec!["w"]);
        assert_eq!(t.outcome(), Outcome::Closed);
        assert_eq!(s.try_acquire(1), Err(SemaphoreError::Closed));
        assert!(matches!(s.enqueue(1, "x"), Err(SemaphoreError::Closed)));
        assert!(s.release(1).unwrap().is_empty());
        assert_eq!(s.in_use(), 0);
    }

    #[test]
    fn grants_record_the_wait_from_queueing() {
        use crate::histogram::bucket_of;
        use std::sync::atomic::AtomicU64 as StdAtomic;
        static NOW: StdAtomic = StdAtomic::new(0);
        fn clock() -> u64 {
            NOW.load(Ordering::Relaxed)
        }
        let s = Semaphore::<&str>::with_clock(1, clock).unwrap();
        assert_eq!(s.try_acquire(1), Ok(true));
        NOW.store(1_000, Ordering::Relaxed);
        let _t = queued(s.enqueue(1, "w").unwrap());
        assert_eq!(s.oldest_wait_ns(), 0);
        NOW.store(5_001_000, Ordering::Relaxed);
        assert_eq!(s.oldest_wait_ns(), 5_000_000);
        let t = _t;
        assert_eq!(s.release(1).unwrap(), vec!["w"]);
        assert_eq!(s.oldest_wait_ns(), 0);
        assert_eq!(t.waited_ns(), 5_000_000);
        assert_eq!(s.wait_histogram().count(), 1, "granted, not yet taken");
        NOW.store(9_000_000, Ordering::Relaxed);
        s.commit(&t); // the wait ends at the grant, not when the waiter takes it
        let h = s.wait_histogram();
        assert_eq!(h.count(), 2);
        assert_eq!(h.counts[0], 1, "the immediate admission");
        assert_eq!(h.counts[bucket_of(5_000_000)], 1);
        assert_eq!(h.sum_ns, 5_000_000);
    }

    #[test]
    fn a_spare_ticket_is_reused_only_when_unshared() {
        let s = Sem::new(1).unwrap();
        assert_eq!(s.try_acquire(1), Ok(true));
        let first = queued(s.enqueue(1, "a").unwrap());
        assert_eq!(s.release(1).unwrap(), vec!["a"]);
        assert_eq!(first.outcome(), Outcome::Granted);
        let address = Arc::as_ptr(&first);
        // Unshared: becomes the new ticket, reset to waiting.
        let second = queued(s.enqueue_reusing(1, "b", Some(first)).unwrap());
        assert_eq!(Arc::as_ptr(&second), address);
        assert_eq!(second.outcome(), Outcome::Waiting);
        // Still referenced elsewhere: left alone, a fresh ticket is made.
        let shared = Arc::clone(&second);
        let third = queued(s.enqueue_reusing(1, "c", Some(shared)).unwrap());
        assert_ne!(Arc::as_ptr(&third), address);
        assert_eq!(second.outcome(), Outcome::Waiting);
        assert_eq!(s.release(1).unwrap(), vec!["b"]);
        assert_eq!(second.outcome(), Outcome::Granted);
        assert_eq!(third.outcome(), Outcome::Waiting);
    }

    #[test]
    fn bad_limits_are_refused() {
        assert!(Sem::new(0).is_err());
        assert!(Sem::new(MAX_PERMITS + 1).is_err());
        let s = Sem::new(1).unwrap();
        assert_eq!(s.set_limit(0), Err(SemaphoreError::BadLimit { limit: 0 }));
    }

    #[test]
    fn threads_never_exceed_the_limit() {
        use std::sync::atomic::AtomicU64 as StdAtomic;
        let s = Arc::new(Semaphore::<std::thread::Thread>::new(3).unwrap());
        let inside = Arc::new(StdAtomic::new(0));
        let peak = Arc::new(StdAtomic::new(0));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (s, inside, peak) = (s.clone(), inside.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..2_000 {
                        let ticket = match s.enqueue(1, std::thread::current()).unwrap() {
                            Enqueued::Acquired => None,
                            Enqueued::Queued(t) => Some(t),
                        };
                        if let Some(t) = ticket {
                            while t.outcome() == Outcome::Waiting {
                                std::thread::park();
                            }
                            assert_eq!(t.outcome(), Outcome::Granted);
                            s.commit(&t);
                        }
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        inside.fetch_sub(1, Ordering::SeqCst);
                        for t in s.release(1).unwrap() {
                            t.unpark();
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert_eq!(s.in_use(), 0);
        assert_eq!(s.waiting(), 0);
        let c = s.counters().snapshot();
        assert_eq!(c.admitted, 16_000);
    }
}
