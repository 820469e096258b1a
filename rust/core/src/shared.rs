//! Limiter state that lives in memory shared by several processes: the words, their layout
//! (`#[repr(C)]`, atomics only) and the decisions on them. The caller provides the memory (a
//! mapped segment: `rust/py/src/shm/`); nothing here maps, reads a clock or asks the OS
//! anything (whether a process is alive is a closure), so the core stays free of `unsafe`.
//!
//! - [`SharedBucket`]: the GCRA of [`crate::Gcra`] on a borrowed word, with the same
//!   `advance` and `decision`. There is no wait queue across processes: nothing sets the
//!   `QUEUED` bit, so a process killed while waiting leaves nothing behind. A waiter takes its
//!   turn instead ([`SharedBucket::reserve`]): its cost is charged at once, pushing `tat` past
//!   the burst by at most the wait it accepts, and it sleeps until its turn; the turns of every
//!   process are in the order of their charges (first come, first served, large costs
//!   included), and a newcomer is refused while any turn is pending (no barging). A waiter
//!   that gives up takes its charge back if nobody charged after it
//!   ([`SharedBucket::untake`]); otherwise the charge stays, which admits less, never more.
//!   A process killed while it sleeps leaves its charge, a turn that passes unused.
//! - [`SharedSemaphore`]: permits held as leases. Every permit in use belongs to one holder
//!   slot (a process: its pid and start time, the `tag`), so the permits of a process that
//!   died are found and given back ([`SharedSemaphore::reclaim`]).
//!
//! ## The lease protocol (lock-free, crash-safe)
//!
//! The permit word packs `in_use` with the one change in flight: `PENDING`, the holder slot,
//! its new count and the low 16 bits of that slot's new version. A change is one CAS on the
//! word (it checks the limit and sets `PENDING`), then one CAS on the slot's `held` word
//! (count and a 32-bit version), then clearing `PENDING`. Whoever finds `PENDING` set (any
//! thread of any process) finishes that change first: the slot's CAS is idempotent (the
//! version says whether it was applied), so a process killed between the two steps leaves a
//! change that the next caller completes, and `in_use` always equals the sum of the slots'
//! counts once no change is in flight. No step waits for another process: a stalled or dead
//! process is helped, never waited for.

use crate::error::{AcquireError, ConfigError};
use crate::gcra::{advance, decision, intervals};
use crate::rate::Decision;
use crate::semaphore::SemaphoreError;
use crate::sync::{AtomicU64, Ordering};
use crate::{MAX_SPAN_NS, MAX_TIME_NS};

/// Holder slots per shared semaphore: how many processes may hold its permits at once (dead
/// holders' slots are reclaimed when they are needed).
pub const HOLDERS: usize = 64;

/// Largest limit of a shared semaphore (`in_use` has 20 bits of the permit word).
pub const MAX_SHARED_PERMITS: u64 = (1 << 20) - 1;

/// A GCRA bucket's words in shared memory: the `tat` word and the host-wide counters on the
/// same cache line (the CAS that admits already owns the line, so counting costs no transfer).
#[repr(C)]
#[derive(Debug)]
pub struct BucketWords {
    pub tat: AtomicU64,
    pub admitted: AtomicU64,
    pub admitted_cost: AtomicU64,
    pub rejected: AtomicU64,
    pub timed_out: AtomicU64,
    pub cancelled: AtomicU64,
    pub _reserved: [AtomicU64; 2],
}

impl BucketWords {
    /// Zeroed words (a fresh bucket: full), for tests and models; in a segment, the mapped
    /// file's zeroes are the same.
    pub fn new() -> Self {
        Self {
            tat: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            admitted_cost: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            _reserved: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Default for BucketWords {
    fn default() -> Self {
        Self::new()
    }
}

/// A turn taken by [`SharedBucket::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// Nanoseconds from the reservation until the turn comes (0: admitted at once).
    pub wait_ns: u64,
    /// The bucket's `tat` the charge set: what [`SharedBucket::untake`] compares.
    pub tat: u64,
}

/// Host-wide counters of a shared limiter: `(admitted, admitted_cost, rejected, timed_out,
/// cancelled)`.
pub type SharedCounts = (u64, u64, u64, u64, u64);

/// How a waiting request ended without admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    TimedOut,
    Cancelled,
}

fn counts(
    a: &AtomicU64,
    c: &AtomicU64,
    r: &AtomicU64,
    t: &AtomicU64,
    x: &AtomicU64,
) -> SharedCounts {
    let load = |w: &AtomicU64| w.load(Ordering::Relaxed);
    (load(a), load(c), load(r), load(t), load(x))
}

/// A GCRA configuration applied to [`BucketWords`] that live elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedBucket {
    emission_ns: u64,
    capacity_ns: u64,
    burst: u64,
}

impl SharedBucket {
    /// `rate` per `per_s` seconds, bursts of up to `burst`: the checks of [`crate::Gcra::new`].
    pub fn new(rate: f64, per_s: f64, burst: u64) -> Result<Self, ConfigError> {
        let (emission_ns, capacity_ns) = intervals(rate, per_s, burst)?;
        Ok(Self {
            emission_ns,
            capacity_ns,
            burst,
        })
    }

    pub fn emission_ns(&self) -> u64 {
        self.emission_ns
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// `burst · T`: how far a word's `tat` may run ahead of `now` (a turn set at `tat` comes
    /// at `tat - capacity_ns`).
    pub fn capacity_ns(&self) -> u64 {
        self.capacity_ns
    }

    /// The time `cost` takes from the bucket at `now`, checked (a cost above the burst, a
    /// clock out of range).
    #[inline(always)]
    pub(crate) fn increment(&self, now: u64, cost: u64) -> Result<u64, AcquireError> {
        if cost > self.burst {
            return Err(AcquireError::Capacity {
                cost,
                capacity: self.burst,
            });
        }
        if now >= MAX_TIME_NS {
            return Err(AcquireError::ClockOutOfRange { now_ns: now });
        }
        Ok(cost * self.emission_ns)
    }

    /// Admits `cost` at `now` if it fits; counts the outcome (a refusal only when `count_refusal`:
    /// a waiting caller retries and is counted once, by how its wait ends).
    #[inline(always)]
    pub fn try_acquire(
        &self,
        words: &BucketWords,
        now: u64,
        cost: u64,
        count_refusal: bool,
    ) -> Result<bool, AcquireError> {
        let increment = self
            .increment(now, cost)
            .inspect_err(|_| _ = words.rejected.fetch_add(1, Ordering::Relaxed))?;
        let admitted = advance(&words.tat, now, increment, self.capacity_ns).is_some();
        if admitted {
            words.admitted.fetch_add(1, Ordering::Relaxed);
            words.admitted_cost.fetch_add(cost, Ordering::Relaxed);
        } else if count_refusal {
            words.rejected.fetch_add(1, Ordering::Relaxed);
        }
        Ok(admitted)
    }

    /// Charges `cost` at `now` for a turn at most `max_wait_ns` away: `Ok(Some(turn))` with
    /// the wait until it comes (0: admitted at once, counted) and the `tat` it set, which
    /// [`SharedBucket::untake`] needs; `Ok(None)` when the turn would come later (nothing
    /// charged, nothing counted: the caller counts its timeout). A turn that is not
    /// immediate is counted by [`SharedBucket::commit`] when the caller has waited for it.
    #[inline]
    pub fn reserve(
        &self,
        words: &BucketWords,
        now: u64,
        cost: u64,
        max_wait_ns: u64,
    ) -> Result<Option<Turn>, AcquireError> {
        let increment = self
            .increment(now, cost)
            .inspect_err(|_| _ = words.rejected.fetch_add(1, Ordering::Relaxed))?;
        let horizon = self.capacity_ns + max_wait_ns.min(MAX_SPAN_NS);
        let Some(tat) = advance(&words.tat, now, increment, horizon) else {
            return Ok(None);
        };
        let wait_ns = tat.saturating_sub(now + self.capacity_ns);
        if wait_ns == 0 {
            self.commit(words, cost);
        }
        Ok(Some(Turn { wait_ns, tat }))
    }

    /// Counts a turn waited for as admitted.
    pub fn commit(&self, words: &BucketWords, cost: u64) {
        words.admitted.fetch_add(1, Ordering::Relaxed);
        words.admitted_cost.fetch_add(cost, Ordering::Relaxed);
    }

    /// Gives back the charge of a turn that set `tat`, if the word is still that (nobody
    /// charged after it: their turns were computed behind this one, so undoing it under them
    /// would move no turn, only admit them sooner than promised, which the check forbids).
    /// True when given back.
    pub fn untake(&self, words: &BucketWords, tat: u64, cost: u64) -> bool {
        let before = tat - cost * self.emission_ns;
        words
            .tat
            .compare_exchange(tat, before, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// What `try_acquire(cost)` would decide at `now`; changes and counts nothing.
    pub fn peek(&self, words: &BucketWords, now: u64, cost: u64) -> Result<Decision, AcquireError> {
        self.peek_tat(words.tat.load(Ordering::Acquire), now, cost)
    }

    /// What a word at `tat` would decide for `cost` at `now` (this bucket's or a key's).
    pub(crate) fn peek_tat(&self, tat: u64, now: u64, cost: u64) -> Result<Decision, AcquireError> {
        let increment = self.increment(now, cost)?;
        Ok(decision(
            tat,
            0,
            now,
            increment,
            self.capacity_ns,
            self.emission_ns,
        ))
    }

    /// Counts a waiting request that ended without admission.
    pub fn gave_up(&self, words: &BucketWords, how: GaveUp) {
        let counter = match how {
            GaveUp::TimedOut => &words.timed_out,
            GaveUp::Cancelled => &words.cancelled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts(words: &BucketWords) -> SharedCounts {
        counts(
            &words.admitted,
            &words.admitted_cost,
            &words.rejected,
            &words.timed_out,
            &words.cancelled,
        )
    }
}

/// One holder slot: who holds (`owner`: a nonzero tag, 0 when free) and how many permits
/// (`held`: the count in the low 32 bits, a version in the high 32).
#[repr(C)]
#[derive(Debug)]
pub struct Holder {
    pub owner: AtomicU64,
    pub held: AtomicU64,
}

/// A shared semaphore's words: the permit word, the wake-up word (its low 32 bits are what
/// waiters sleep on: a futex), the count of sleepers, host-wide counters, and the holders.
#[repr(C)]
#[derive(Debug)]
pub struct SemaphoreWords {
    pub word: AtomicU64,
    pub wake: AtomicU64,
    pub sleepers: AtomicU64,
    pub high_water: AtomicU64,
    pub admitted: AtomicU64,
    pub admitted_cost: AtomicU64,
    pub rejected: AtomicU64,
    pub timed_out: AtomicU64,
    pub cancelled: AtomicU64,
    pub _reserved: [AtomicU64; 7],
    pub holders: [Holder; HOLDERS],
}

impl SemaphoreWords {
    /// Zeroed words (nothing held, no holder), for tests and models; in a segment, the
    /// mapped file's zeroes are the same.
    pub fn new() -> Self {
        let zero = || AtomicU64::new(0);
        Self {
            word: zero(),
            wake: zero(),
            sleepers: zero(),
            high_water: zero(),
            admitted: zero(),
            admitted_cost: zero(),
            rejected: zero(),
            timed_out: zero(),
            cancelled: zero(),
            _reserved: std::array::from_fn(|_| zero()),
            holders: std::array::from_fn(|_| Holder {
                owner: zero(),
                held: zero(),
            }),
        }
    }

    /// The permit word as a process killed in the middle of a change leaves it: `in_use`
    /// already changed, slot `slot` not yet at `count` (its version `version`). For models.
    pub fn interrupted(in_use: u64, slot: usize, count: u64, version: u64) -> u64 {
        in_use
            | PENDING
            | (slot as u64) << SLOT_SHIFT
            | count << COUNT_SHIFT
            | (version & VERSION_MASK) << VERSION_SHIFT
    }
}

impl Default for SemaphoreWords {
    fn default() -> Self {
        Self::new()
    }
}

// The permit word: in_use | PENDING | slot | new count | new version (low 16 bits).
const IN_USE_BITS: u32 = 20;
const IN_USE_MASK: u64 = (1 << IN_USE_BITS) - 1;
const PENDING: u64 = 1 << 20;
const SLOT_SHIFT: u32 = 21; // 7 bits
const SLOT_MASK: u64 = (1 << 7) - 1;
const COUNT_SHIFT: u32 = 28; // 20 bits
const VERSION_SHIFT: u32 = 48; // 16 bits
const VERSION_MASK: u64 = (1 << 16) - 1;

fn split_held(held: u64) -> (u64, u64) {
    (held & 0xFFFF_FFFF, held >> 32)
}

/// A shared semaphore's limit, applied to [`SemaphoreWords`] that live elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedSemaphore {
    limit: u64,
}

/// What a change of one holder's count is.
#[derive(Clone, Copy)]
enum Change {
    Take(u64),
    Give(u64),
    /// Reclaims everything the slot's owner `tag` holds, if it still owns it.
    Reclaim(u64),
}

impl SharedSemaphore {
    pub fn new(limit: u64) -> Result<Self, SemaphoreError> {
        if limit == 0 || limit > MAX_SHARED_PERMITS {
            return Err(SemaphoreError::BadLimit { limit });
        }
        Ok(Self { limit })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn in_use(words: &SemaphoreWords) -> u64 {
        words.word.load(Ordering::Acquire) & IN_USE_MASK
    }

    /// Permits the holder in slot `slot` holds.
    pub fn held(words: &SemaphoreWords, slot: usize) -> u64 {
        split_held(words.holders[slot].held.load(Ordering::Acquire)).0
    }

    /// The holder slot of `tag` (nonzero): the one it owns, or a free one it takes; `None`
    /// when every slot is owned by someone else (call [`Self::reclaim`] and try again).
    pub fn claim(words: &SemaphoreWords, tag: u64) -> Option<usize> {
        debug_assert_ne!(tag, 0);
        if let Some(slot) = words
            .holders
            .iter()
            .position(|h| h.owner.load(Ordering::Acquire) == tag)
        {
            return Some(slot);
        }
        words.holders.iter().position(|h| {
            h.owner
                .compare_exchange(0, tag, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
    }

    /// Finishes the change in flight described by `word` (see the module's protocol).
    fn help(words: &SemaphoreWords, word: u64) {
        let slot = ((word >> SLOT_SHIFT) & SLOT_MASK) as usize;
        let count = (word >> COUNT_SHIFT) & IN_USE_MASK;
        let version = word >> VERSION_SHIFT;
        let holder = &words.holders[slot].held;
        let held = holder.load(Ordering::Acquire);
        // Re-read: if the change is no longer in flight, `held` may belong to a later one.
        if words.word.load(Ordering::Acquire) == word {
            let (_, v) = split_held(held);
            if (v.wrapping_add(1) & VERSION_MASK) == version {
                let next = count | (v.wrapping_add(1) & 0xFFFF_FFFF) << 32;
                // Fails only if another helper applied it first.
                let _ = holder.compare_exchange(held, next, Ordering::AcqRel, Ordering::Acquire);
            }
        }
        let _ =
            words
                .word
                .compare_exchange(word, word & !PENDING, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Applies `change` to slot `slot` and `in_use` together. `Ok(false)`: no room (a take),
    /// or the slot changed owner (a reclaim); nothing was written.
    fn change(
        &self,
        words: &SemaphoreWords,
        slot: usize,
        change: Change,
    ) -> Result<bool, SemaphoreError> {
        loop {
            let word = words.word.load(Ordering::Acquire);
            if word & PENDING != 0 {
                Self::help(words, word);
                continue;
            }
            let in_use = word & IN_USE_MASK;
            let (count, version) = split_held(words.holders[slot].held.load(Ordering::Acquire));
            let (in_use, count) = match change {
                Change::Take(n) => {
                    if n > self.limit {
                        return Err(SemaphoreError::Capacity {
                            n,
                            limit: self.limit,
                        });
                    }
                    if in_use + n > self.limit {
                        return Ok(false);
                    }
                    (in_use + n, count + n)
                }
                Change::Give(n) => {
                    if count < n {
                        return Err(SemaphoreError::OverRelease { n, in_use: count });
                    }
                    (in_use - n, count - n)
                }
                Change::Reclaim(tag) => {
                    // Checked after reading the count: a new owner's first change would move
                    // the permit word, failing the CAS below.
                    if words.holders[slot].owner.load(Ordering::Acquire) != tag {
                        return Ok(false);
                    }
                    if count == 0 {
                        return Ok(true);
                    }
                    (in_use - count, 0)
                }
            };
            let next = in_use
                | PENDING
                | (slot as u64) << SLOT_SHIFT
                | count << COUNT_SHIFT
                | (version.wrapping_add(1) & VERSION_MASK) << VERSION_SHIFT;
            if words
                .word
                .compare_exchange(word, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                Self::help(words, next);
                return Ok(true);
            }
        }
    }

    /// Takes `n` permits for the holder in `slot` if they are free; counts an admission, and
    /// a refusal when `count_refusal` (a waiting caller is counted once, by its outcome).
    pub fn try_acquire(
        &self,
        words: &SemaphoreWords,
        slot: usize,
        n: u64,
        count_refusal: bool,
    ) -> Result<bool, SemaphoreError> {
        let taken = self
            .change(words, slot, Change::Take(n))
            .inspect_err(|_| _ = words.rejected.fetch_add(1, Ordering::Relaxed))?;
        if taken {
            words.admitted.fetch_add(1, Ordering::Relaxed);
            words.admitted_cost.fetch_add(n, Ordering::Relaxed);
            words
                .high_water
                .fetch_max(Self::in_use(words), Ordering::Relaxed);
        } else if count_refusal {
            words.rejected.fetch_add(1, Ordering::Relaxed);
        }
        Ok(taken)
    }

    /// Gives back `n` permits of the holder in `slot`; true if waiters sleep on the wake-up
    /// word (the caller wakes them).
    pub fn release(
        &self,
        words: &SemaphoreWords,
        slot: usize,
        n: u64,
    ) -> Result<bool, SemaphoreError> {
        self.change(words, slot, Change::Give(n))?;
        Ok(Self::bump(words))
    }

    /// Moves the wake-up word on; true if anyone sleeps on it.
    fn bump(words: &SemaphoreWords) -> bool {
        words.wake.fetch_add(1, Ordering::AcqRel);
        words.sleepers.load(Ordering::Acquire) != 0
    }

    /// Gives back the permits of every holder that `is_alive` says is gone and frees its
    /// slot; returns the permits given back, and whether anyone sleeps on the wake-up word.
    pub fn reclaim(&self, words: &SemaphoreWords, is_alive: impl Fn(u64) -> bool) -> (u64, bool) {
        let mut given_back = 0;
        for (slot, holder) in words.holders.iter().enumerate() {
            let tag = holder.owner.load(Ordering::Acquire);
            if tag == 0 || is_alive(tag) {
                continue;
            }
            let count = Self::held(words, slot);
            // A reclaim cannot fail with an error (it never checks the limit).
            if let Ok(true) = self.change(words, slot, Change::Reclaim(tag)) {
                // The slot is empty now; the dead owner cannot take it again.
                if holder
                    .owner
                    .compare_exchange(tag, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    given_back += count;
                }
            }
        }
        let sleepers = given_back > 0 && Self::bump(words);
        (given_back, sleepers)
    }

    /// Counts a waiting request that ended without admission.
    pub fn gave_up(words: &SemaphoreWords, how: GaveUp) {
        let counter = match how {
            GaveUp::TimedOut => &words.timed_out,
            GaveUp::Cancelled => &words.cancelled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts(words: &SemaphoreWords) -> SharedCounts {
        counts(
            &words.admitted,
            &words.admitted_cost,
            &words.rejected,
            &words.timed_out,
            &words.cancelled,
        )
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    const S: u64 = crate::NANOS_PER_SEC;

    fn bucket_words() -> BucketWords {
        BucketWords::new()
    }

    fn semaphore_words() -> SemaphoreWords {
        SemaphoreWords::new()
    }

    #[test]
    fn turns_are_served_in_the_order_of_their_charges_and_newcomers_wait_behind_them() {
        let b = SharedBucket::new(1.0, 1.0, 2).unwrap(); // a token a second, bursts of 2
        let w = bucket_words();
        let now = 10 * S;
        assert!(b.try_acquire(&w, now, 2, true).unwrap()); // the burst, spent
        let big = b.reserve(&w, now, 2, 60 * S).unwrap().unwrap();
        assert_eq!(big.wait_ns, 2 * S);
        let small = b.reserve(&w, now, 1, 60 * S).unwrap().unwrap();
        assert_eq!(small.wait_ns, 3 * S); // behind the large one, not before it
                                          // A newcomer is refused until every turn has come, even when a token is back.
        assert!(!b.try_acquire(&w, now + 2 * S, 1, true).unwrap());
        assert!(b.try_acquire(&w, now + 4 * S, 1, true).unwrap());
        // The waits are not admissions until they are committed.
        assert_eq!(SharedBucket::counts(&w), (2, 3, 1, 0, 0));
        b.commit(&w, 2);
        b.commit(&w, 1);
        assert_eq!(SharedBucket::counts(&w), (4, 6, 1, 0, 0));
    }

    #[test]
    fn a_turn_beyond_the_accepted_wait_charges_nothing() {
        let b = SharedBucket::new(1.0, 1.0, 1).unwrap();
        let w = bucket_words();
        assert_eq!(b.reserve(&w, S, 1, 0).unwrap().unwrap().wait_ns, 0); // at once: counted
        let tat = w.tat.load(Ordering::Relaxed);
        assert_eq!(b.reserve(&w, S, 1, S - 1).unwrap(), None);
        assert_eq!(w.tat.load(Ordering::Relaxed), tat);
        assert_eq!(b.reserve(&w, S, 1, S).unwrap().unwrap().wait_ns, S);
        assert!(b.reserve(&w, S, 2, u64::MAX).is_err()); // above the burst: never
        assert_eq!(SharedBucket::counts(&w), (1, 1, 1, 0, 0));
    }

    #[test]
    fn a_charge_is_given_back_only_while_nobody_charged_after_it() {
        let b = SharedBucket::new(1.0, 1.0, 1).unwrap();
        let w = bucket_words();
        assert!(b.try_acquire(&w, S, 1, true).unwrap());
        let first = b.reserve(&w, S, 1, 10 * S).unwrap().unwrap();
        let second = b.reserve(&w, S, 1, 10 * S).unwrap().unwrap();
        assert!(!b.untake(&w, first.tat, 1)); // the second's turn was computed behind it
        assert!(b.untake(&w, second.tat, 1));
        assert_eq!(w.tat.load(Ordering::Relaxed), first.tat);
        assert!(!b.untake(&w, second.tat, 1)); // once
        assert!(b.untake(&w, first.tat, 1)); // now the last: back to the burst spent at S
        assert!(!b.try_acquire(&w, S, 1, true).unwrap());
        assert!(b.try_acquire(&w, 2 * S, 1, true).unwrap());
    }

    #[test]
    fn a_shared_bucket_decides_as_the_in_process_one() {
        let shared = SharedBucket::new(2.0, 1.0, 3).unwrap();
        let own = crate::Gcra::<()>::new(2.0, 1.0, 3).unwrap();
        let words = bucket_words();
        use crate::RateLimit;
        for step in 0..200u64 {
            let now = step * S / 7;
            let cost = 1 + step % 3;
            assert_eq!(
                own.peek(now, cost),
                shared.peek(&words, now, cost),
                "{step}"
            );
            assert_eq!(
                own.try_acquire(now, cost),
                shared.try_acquire(&words, now, cost, true),
                "{step}"
            );
        }
        let c = own.counters().snapshot();
        assert_eq!(
            SharedBucket::counts(&words),
            (c.admitted, c.admitted_cost, c.rejected, 0, 0)
        );
        assert!(shared.try_acquire(&words, 0, 4, true).is_err());
    }

    #[test]
    fn permits_are_leases_of_their_holders() {
        let s = SharedSemaphore::new(5).unwrap();
        let w = semaphore_words();
        let a = SharedSemaphore::claim(&w, 11).unwrap();
        let b = SharedSemaphore::claim(&w, 22).unwrap();
        assert_ne!(a, b);
        assert_eq!(SharedSemaphore::claim(&w, 11), Some(a));
        assert_eq!(s.try_acquire(&w, a, 3, true), Ok(true));
        assert_eq!(s.try_acquire(&w, b, 3, true), Ok(false));
        assert_eq!(s.try_acquire(&w, b, 2, true), Ok(true));
        assert_eq!(SharedSemaphore::in_use(&w), 5);
        assert_eq!(
            s.release(&w, b, 3),
            Err(SemaphoreError::OverRelease { n: 3, in_use: 2 })
        );
        // The holder of 3 dies: its permits come back, its slot is free again.
        let (back, _) = s.reclaim(&w, |tag| tag != 11);
        assert_eq!(back, 3);
        assert_eq!(SharedSemaphore::in_use(&w), 2);
        assert_eq!(w.holders[a].owner.load(Ordering::Relaxed), 0);
        assert_eq!(s.release(&w, b, 2), Ok(false));
        assert_eq!(SharedSemaphore::in_use(&w), 0);
        assert_eq!(s.reclaim(&w, |_| true), (0, false));
        assert_eq!(SharedSemaphore::counts(&w), (2, 5, 1, 0, 0));
        assert_eq!(w.high_water.load(Ordering::Relaxed), 5);
        assert!(matches!(
            s.try_acquire(&w, b, 6, true),
            Err(SemaphoreError::Capacity { n: 6, limit: 5 })
        ));
    }

    #[test]
    fn a_change_left_in_flight_by_a_dead_process_is_finished_by_the_next_caller() {
        let s = SharedSemaphore::new(4).unwrap();
        let w = semaphore_words();
        let a = SharedSemaphore::claim(&w, 1).unwrap();
        let b = SharedSemaphore::claim(&w, 2).unwrap();
        // Process 1 took 2 permits and died between the two steps: the word says so, its
        // slot does not yet.
        w.word
            .store(SemaphoreWords::interrupted(2, a, 2, 1), Ordering::Release);
        assert_eq!(SharedSemaphore::held(&w, a), 0);
        assert_eq!(s.try_acquire(&w, b, 2, true), Ok(true));
        assert_eq!(SharedSemaphore::held(&w, a), 2);
        assert_eq!(s.try_acquire(&w, b, 1, true), Ok(false));
        assert_eq!(s.reclaim(&w, |tag| tag == 2).0, 2);
        assert_eq!(SharedSemaphore::in_use(&w), 2);
    }

    #[test]
    fn threads_hammering_keep_in_use_equal_to_the_leases_and_within_the_limit() {
        let s = SharedSemaphore::new(3).unwrap();
        let w = Arc::new(semaphore_words());
        let threads: Vec<_> = (1..=6u64)
            .map(|tag| {
                let w = Arc::clone(&w);
                std::thread::spawn(move || {
                    let slot = SharedSemaphore::claim(&w, tag).unwrap();
                    for i in 0..20_000u64 {
                        let n = 1 + (i + tag) % 2;
                        if s.try_acquire(&w, slot, n, true).unwrap() {
                            assert!(SharedSemaphore::in_use(&w) <= 3);
                            s.release(&w, slot, n).unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(SharedSemaphore::in_use(&w), 0);
        assert!(w
            .holders
            .iter()
            .all(|h| split_held(h.held.load(Ordering::Relaxed)).0 == 0));
        assert!(w.high_water.load(Ordering::Relaxed) <= 3);
    }

    #[test]
    fn bad_limits_are_refused() {
        assert!(SharedSemaphore::new(0).is_err());
        assert!(SharedSemaphore::new(MAX_SHARED_PERMITS + 1).is_err());
        assert!(SharedBucket::new(0.0, 1.0, 1).is_err());
    }
}
