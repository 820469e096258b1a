//! A keyed token bucket in memory shared by several processes: a fixed-capacity table of
//! GCRA words, one per key, and the decisions on it. Like [`crate::shared`], the caller
//! provides the memory (`rust/py/src/shm/`) and the clock; whether a process is alive is a
//! closure; nothing here is `unsafe`.
//!
//! ## The table
//!
//! [`KeySlot`]s grouped in sets of [`WAYS`]; a key (known by its 128-bit keyed hash, see
//! [`crate::siphash`]) may live in either of two sets chosen by its hash, so a lookup reads
//! at most two sets and never waits for anyone. A slot is one state word and the two words of
//! the key's hash. The state word is a 2-bit state and a 62-bit value:
//!
//! - `PLAIN(tat)`: the key's GCRA word. A fresh table is all `PLAIN(0)`: full buckets.
//! - `CLAIMING(tag)`: a process (its `tag`) is writing a new key's hash into the slot.
//! - `PENDING(tat)`: the hash is written; the slot becomes the key's once no other slot
//!   holds the same key (see below). Anyone may finish it.
//! - `VACANT(floor)`: nobody's (a claim given up).
//!
//! A key whose bucket is full (`tat` in the past) is no different from a key the table does
//! not hold, so its slot may go to another key: eviction loses nothing. A new key is refused
//! (`NoRoom`) only when both of its sets are full of buckets that are not full; the table
//! never evicts those (a wrong answer), it refuses instead.
//!
//! ## Why it is exact without locks
//!
//! - Every value a slot's state word takes in the `PLAIN`, `PENDING` and `VACANT` states is
//!   larger than every earlier one (a charge moves `tat` up; a slot is claimed only when its
//!   value is in the past, and its next key starts one nanosecond later, still in the past).
//!   So a word read once is never seen again after any change: a charge is one CAS expecting
//!   the `PLAIN` word that was read with the key's hash, and it fails if the slot changed key
//!   in between (no ABA), and a hash read between two equal reads of the word is that word's.
//! - One slot per key: two processes inserting the same key may claim two different slots.
//!   Each publishes its claim (`PENDING`, after writing the hash) before scanning both sets
//!   for the same key, a sequentially consistent fence in between, so at least one of them
//!   sees the other. A `PENDING` slot is given up if the key is already
//!   `PLAIN` elsewhere or `PENDING` in a slot of a lower index; it gives up a `PENDING`
//!   duplicate at a higher index; the one CAS that turns `PENDING` into `PLAIN` or `VACANT`
//!   decides, whoever runs it.
//! - A process killed mid-claim: a `PENDING` slot is finished by the next process that
//!   inserts the same key or needs room; a `CLAIMING` slot whose process is dead (pid and
//!   start time) is made `VACANT` by the next process that needs room. Nothing waits.

use crate::error::{AcquireError, ConfigError};
use crate::rate::Decision;
use crate::shared::{GaveUp, SharedBucket, SharedCounts};
use crate::sync::{fence, AtomicU64, Ordering};

/// Slots per set (a key may live in any slot of its two sets).
pub const WAYS: usize = 8;
/// Counter stripes of a table: counting spreads over this many cache lines.
pub const STRIPES: usize = 64;

const VALUE_MASK: u64 = (1 << 62) - 1;
const PLAIN: u64 = 0;
const VACANT: u64 = 1 << 62;
const CLAIMING: u64 = 2 << 62;
const PENDING: u64 = 3 << 62;
/// Largest holder tag a claim can record (62 bits).
pub const MAX_TAG: u64 = VALUE_MASK;

fn state(word: u64) -> u64 {
    word & !VALUE_MASK
}

fn value(word: u64) -> u64 {
    word & VALUE_MASK
}

/// One slot of the table: the state word and the key's 128-bit hash.
#[repr(C)]
#[derive(Debug)]
pub struct KeySlot {
    pub word: AtomicU64,
    pub id: [AtomicU64; 2],
    pub _reserved: AtomicU64,
}

impl KeySlot {
    /// A zeroed slot (`PLAIN(0)`: a full bucket), as a fresh mapped file is.
    pub fn new() -> Self {
        Self {
            word: AtomicU64::new(0),
            id: [AtomicU64::new(0), AtomicU64::new(0)],
            _reserved: AtomicU64::new(0),
        }
    }

    fn holds(&self, id: [u64; 2]) -> bool {
        self.id[0].load(Ordering::SeqCst) == id[0] && self.id[1].load(Ordering::SeqCst) == id[1]
    }

    fn id(&self) -> [u64; 2] {
        [
            self.id[0].load(Ordering::SeqCst),
            self.id[1].load(Ordering::SeqCst),
        ]
    }
}

impl Default for KeySlot {
    fn default() -> Self {
        Self::new()
    }
}

/// One stripe of a table's host-wide counters (a cache line).
#[repr(C)]
#[derive(Debug)]
pub struct KeyedCounters {
    pub admitted: AtomicU64,
    pub admitted_cost: AtomicU64,
    pub rejected: AtomicU64,
    pub timed_out: AtomicU64,
    pub cancelled: AtomicU64,
    /// Attempts refused because no slot was free for a new key (counted in `rejected` too).
    pub refused_full: AtomicU64,
    /// Slots of keys whose bucket was full again, given to another key.
    pub expired: AtomicU64,
    pub _reserved: AtomicU64,
}

impl KeyedCounters {
    pub fn new() -> Self {
        let zero = || AtomicU64::new(0);
        Self {
            admitted: zero(),
            admitted_cost: zero(),
            rejected: zero(),
            timed_out: zero(),
            cancelled: zero(),
            refused_full: zero(),
            expired: zero(),
            _reserved: zero(),
        }
    }
}

impl Default for KeyedCounters {
    fn default() -> Self {
        Self::new()
    }
}

/// Host-wide totals of a keyed table: the five of [`SharedCounts`], then `expired` and
/// `refused_full`.
pub type KeyedTotals = (u64, u64, u64, u64, u64, u64, u64);

/// A table's memory: its slots and its counter stripes, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct KeyTable<'a> {
    slots: &'a [KeySlot],
    stripes: &'a [KeyedCounters],
    set_mask: usize,
}

/// Who inserts keys: the calling process's `tag` (nonzero, at most [`MAX_TAG`]: its pid and
/// start time) recorded in its claims, and how to tell whether a claim's process still runs
/// (asked only when room is short).
#[derive(Clone, Copy)]
pub struct Claimer<'a> {
    pub tag: u64,
    pub is_alive: &'a dyn Fn(u64) -> bool,
}

/// What a request for a key got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    Refused,
    /// A new key, and no slot for it (both of its sets hold buckets that are not full).
    NoRoom,
}

impl<'a> KeyTable<'a> {
    /// Slots a table needs for `max_keys` keys whose buckets are not full: twice as many,
    /// a power of two, at least two sets.
    pub fn slots_for(max_keys: u64) -> Result<usize, ConfigError> {
        if max_keys == 0 || max_keys > 1 << 30 {
            return Err(ConfigError::new(
                "max_keys",
                format!(
                    "max_keys must be between 1 and {}, got {max_keys}",
                    1u64 << 30
                ),
            ));
        }
        Ok(((2 * max_keys) as usize).next_power_of_two().max(2 * WAYS))
    }

    /// The table over `slots` (a power of two, at least two sets) and `stripes` (at least
    /// one). Panics otherwise: the shapes are the caller's constants.
    pub fn new(slots: &'a [KeySlot], stripes: &'a [KeyedCounters]) -> Self {
        assert!(
            slots.len().is_power_of_two() && slots.len() >= 2 * WAYS && !stripes.is_empty(),
            "a key table needs a power of two of at least {} slots and a counter stripe",
            2 * WAYS
        );
        Self {
            slots,
            stripes,
            set_mask: slots.len() / WAYS - 1,
        }
    }

    /// The slots of the key's two sets, in index order (the order that breaks ties).
    fn candidates(&self, id: [u64; 2]) -> impl Iterator<Item = usize> {
        let a = id[0] as usize & self.set_mask;
        let mut b = id[1] as usize & self.set_mask;
        if b == a {
            b = a ^ 1;
        }
        let (low, high) = (a.min(b), a.max(b));
        (low * WAYS..(low + 1) * WAYS).chain(high * WAYS..(high + 1) * WAYS)
    }

    fn stripe(&self, id: [u64; 2]) -> &KeyedCounters {
        &self.stripes[(id[1] >> 40) as usize % self.stripes.len()]
    }

    /// The slot holding `id` and its state word (`PLAIN`), if any.
    #[inline(always)]
    fn locate(&self, id: [u64; 2]) -> Option<(usize, u64)> {
        self.candidates(id).find_map(|i| {
            let slot = &self.slots[i];
            let word = slot.word.load(Ordering::SeqCst);
            (state(word) == PLAIN && slot.holds(id)).then_some((i, word))
        })
    }

    /// Slot `i`'s state word and whether it holds `id`, read consistently: the word read
    /// again after the hash (a word never comes back, so the hash is that word's). Reads
    /// again only when another process changed the slot in between.
    fn read(&self, i: usize, id: [u64; 2]) -> (u64, bool) {
        let slot = &self.slots[i];
        let mut word = slot.word.load(Ordering::SeqCst);
        loop {
            let holds = slot.holds(id);
            let again = slot.word.load(Ordering::SeqCst);
            if again == word {
                return (word, holds);
            }
            word = again;
        }
    }

    /// The key's `tat`: 0 (a full bucket) if the table does not hold it.
    fn tat(&self, id: [u64; 2]) -> u64 {
        self.candidates(id)
            .find_map(|i| {
                let (word, holds) = self.read(i, id);
                (state(word) == PLAIN && holds).then_some(value(word))
            })
            .unwrap_or(0)
    }

    /// Keys whose bucket is not full at `now`: the keys the table must hold.
    pub fn len(&self, now: u64) -> usize {
        self.slots
            .iter()
            .filter(|s| {
                let word = s.word.load(Ordering::Relaxed);
                state(word) == PLAIN && value(word) > now
            })
            .count()
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Host-wide totals, summed over the stripes.
    pub fn totals(&self) -> KeyedTotals {
        let mut t = [0u64; 7];
        for s in self.stripes {
            let words = [
                &s.admitted,
                &s.admitted_cost,
                &s.rejected,
                &s.timed_out,
                &s.cancelled,
                &s.expired,
                &s.refused_full,
            ];
            for (total, w) in t.iter_mut().zip(words) {
                *total += w.load(Ordering::Relaxed);
            }
        }
        (t[0], t[1], t[2], t[3], t[4], t[5], t[6])
    }

    /// Makes the table hold `id` (found or inserted): false if there is no room.
    fn insert(&self, id: [u64; 2], now: u64, claimer: Claimer<'_>) -> bool {
        let tag = claimer.tag;
        debug_assert!(tag != 0 && tag <= MAX_TAG);
        let mut helped = false;
        'scan: loop {
            // Per set: its free slots, and its first free slot with the word read.
            let mut free = [(0usize, None::<(usize, u64)>); 2];
            let mut stalled = false;
            for (n, i) in self.candidates(id).enumerate() {
                let (word, holds) = self.read(i, id);
                let open = match state(word) {
                    PLAIN if holds => return true,
                    PENDING if holds => {
                        // Someone inserts the same key (maybe a dead process): finish it.
                        self.finish(i, word, id);
                        continue 'scan;
                    }
                    PLAIN | VACANT => value(word) < now,
                    _ => {
                        stalled = true;
                        false
                    }
                };
                if open {
                    let set = &mut free[n / WAYS];
                    set.0 += 1;
                    set.1 = set.1.or(Some((i, word)));
                }
            }
            // The set with more room (keeps the two sets of every key balanced).
            let pick = if free[1].0 > free[0].0 {
                free[1].1
            } else {
                free[0].1.or(free[1].1)
            };
            let Some((i, word)) = pick else {
                if stalled && !helped {
                    helped = true;
                    self.unstall(id, now, claimer.is_alive);
                    continue 'scan;
                }
                return false;
            };
            let slot = &self.slots[i];
            if slot
                .word
                .compare_exchange(word, CLAIMING | tag, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                continue 'scan;
            }
            if state(word) == PLAIN && value(word) != 0 {
                self.stripe(id).expired.fetch_add(1, Ordering::Relaxed);
            }
            slot.id[0].store(id[0], Ordering::SeqCst);
            slot.id[1].store(id[1], Ordering::SeqCst);
            // One nanosecond later than the slot's last value, and still in the past: the
            // new key's bucket is full, and the word never takes an old value again.
            let pending = PENDING | (value(word) + 1);
            slot.word.store(pending, Ordering::SeqCst);
            self.finish(i, pending, id);
        }
    }

    /// Finishes the claim of slot `i` (state word `pending`) for `id`: gives it up if the key
    /// is elsewhere, gives up a duplicate claim at a higher index, then publishes it. Run by
    /// the claimer or by anyone who finds the claim.
    fn finish(&self, i: usize, pending: u64, id: [u64; 2]) {
        let slot = &self.slots[i].word;
        // Between the claim's store and the scan's loads (here and in every other finisher):
        // of two claims of one key, at least one scan sees the other claim.
        fence(Ordering::SeqCst);
        'scan: loop {
            for o in self.candidates(id).filter(|&o| o != i) {
                let (word, holds) = self.read(o, id);
                let other = state(word);
                if !(other == PLAIN || other == PENDING) || !holds {
                    continue;
                }
                if other == PLAIN || o < i {
                    // The key is (or will be) there: give this claim up.
                    let vacant = VACANT | value(pending);
                    let _ =
                        slot.compare_exchange(pending, vacant, Ordering::SeqCst, Ordering::SeqCst);
                    return;
                }
                let vacant = VACANT | value(word);
                if self.slots[o]
                    .word
                    .compare_exchange(word, vacant, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
                {
                    continue 'scan; // it was published or given up meanwhile: look again
                }
            }
            // Fails only if someone else finished it first (either way).
            let _ = slot.compare_exchange(
                pending,
                PLAIN | value(pending),
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            return;
        }
    }

    /// Frees what stalls the key's sets: claims of other keys left `PENDING` are finished,
    /// claims of dead processes (`CLAIMING`) are given up.
    fn unstall(&self, id: [u64; 2], now: u64, is_alive: &dyn Fn(u64) -> bool) {
        for i in self.candidates(id) {
            let slot = &self.slots[i];
            let word = slot.word.load(Ordering::SeqCst);
            match state(word) {
                PENDING => {
                    let theirs = slot.id();
                    if slot.word.load(Ordering::SeqCst) == word {
                        self.finish(i, word, theirs);
                    }
                }
                CLAIMING if !is_alive(value(word)) => {
                    // Not below the value the claim started from (that one was in the past
                    // when the claim began, on the same host-wide clock), and in the past.
                    let vacant = VACANT | now.saturating_sub(1);
                    let _ = slot.word.compare_exchange(
                        word,
                        vacant,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                }
                _ => {}
            }
        }
    }
}

/// A token bucket per key, its configuration applied to a [`KeyTable`] that lives elsewhere:
/// each key's word decides as a [`SharedBucket`] of that configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedBucket {
    bucket: SharedBucket,
}

impl KeyedBucket {
    /// `rate` per `per_s` seconds, bursts of up to `burst`, for every key: the checks of
    /// [`crate::Gcra::new`].
    pub fn new(rate: f64, per_s: f64, burst: u64) -> Result<Self, ConfigError> {
        Ok(Self {
            bucket: SharedBucket::new(rate, per_s, burst)?,
        })
    }

    pub fn emission_ns(&self) -> u64 {
        self.bucket.emission_ns()
    }

    pub fn burst(&self) -> u64 {
        self.bucket.burst()
    }

    /// Admits `cost` for the key `id` at `now` if it fits, inserting the key if the table
    /// does not hold it; counts the outcome (a refusal only when `count_refusal`: a waiting
    /// caller is counted once, by how its wait ends; `NoRoom` always, and in `refused_full`).
    /// The inserting process: see
    /// [`Claimer`].
    #[inline]
    pub fn try_acquire(
        &self,
        table: &KeyTable<'_>,
        id: [u64; 2],
        now: u64,
        cost: u64,
        count_refusal: bool,
        claimer: Claimer<'_>,
    ) -> Result<Admission, AcquireError> {
        let counters = table.stripe(id);
        let increment = self
            .bucket
            .increment(now, cost)
            .inspect_err(|_| _ = counters.rejected.fetch_add(1, Ordering::Relaxed))?;
        let outcome = loop {
            let Some((i, word)) = table.locate(id) else {
                if table.insert(id, now, claimer) {
                    continue;
                }
                // The attempt ends here, waiting or not: counted as a refusal.
                counters.refused_full.fetch_add(1, Ordering::Relaxed);
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                return Ok(Admission::NoRoom);
            };
            let tat = value(word).max(now) + increment;
            if tat > now + self.bucket.capacity_ns() {
                break Admission::Refused;
            }
            // Expects the word read with the key's hash: fails if the slot changed since.
            if table.slots[i]
                .word
                .compare_exchange(word, tat, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                break Admission::Admitted;
            }
        };
        match outcome {
            Admission::Admitted => {
                counters.admitted.fetch_add(1, Ordering::Relaxed);
                counters.admitted_cost.fetch_add(cost, Ordering::Relaxed);
            }
            _ if count_refusal => _ = counters.rejected.fetch_add(1, Ordering::Relaxed),
            _ => {}
        }
        Ok(outcome)
    }

    /// What `try_acquire(id, cost)` would decide at `now`; changes and counts nothing.
    pub fn peek(
        &self,
        table: &KeyTable<'_>,
        id: [u64; 2],
        now: u64,
        cost: u64,
    ) -> Result<Decision, AcquireError> {
        self.bucket.peek_tat(table.tat(id), now, cost)
    }

    /// Counts a waiting request that ended without admission.
    pub fn gave_up(table: &KeyTable<'_>, how: GaveUp) {
        let counters = &table.stripes[0];
        let counter = match how {
            GaveUp::TimedOut => &counters.timed_out,
            GaveUp::Cancelled => &counters.cancelled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The five counters of an unkeyed shared limiter, for a keyed table.
    pub fn counts(table: &KeyTable<'_>) -> SharedCounts {
        let t = table.totals();
        (t.0, t.1, t.2, t.3, t.4)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::siphash::SipKey;
    use crate::RateLimit;
    use std::sync::Arc;

    const S: u64 = crate::NANOS_PER_SEC;

    struct Memory {
        slots: Vec<KeySlot>,
        stripes: Vec<KeyedCounters>,
    }

    fn memory(slots: usize) -> Memory {
        Memory {
            slots: (0..slots).map(|_| KeySlot::new()).collect(),
            stripes: (0..4).map(|_| KeyedCounters::new()).collect(),
        }
    }

    impl Memory {
        fn table(&self) -> KeyTable<'_> {
            KeyTable::new(&self.slots, &self.stripes)
        }
    }

    fn alive(_: u64) -> bool {
        true
    }

    const ME: Claimer<'static> = Claimer {
        tag: 7,
        is_alive: &alive,
    };

    fn id(n: u64) -> [u64; 2] {
        SipKey::new(1, 2).hash128(&n.to_le_bytes())
    }

    fn take(b: &KeyedBucket, t: &KeyTable<'_>, key: [u64; 2], now: u64, cost: u64) -> Admission {
        b.try_acquire(t, key, now, cost, true, ME).unwrap()
    }

    /// Two ids in the same two sets of a 2-set table (every id is: sets 0 and 1).
    fn slots_of(t: &KeyTable<'_>, key: [u64; 2]) -> Vec<usize> {
        t.candidates(key).collect()
    }

    #[test]
    fn each_key_decides_as_its_own_in_process_bucket() {
        let m = memory(64);
        let t = m.table();
        let shared = KeyedBucket::new(2.0, 1.0, 3).unwrap();
        let own: Vec<_> = (0..5)
            .map(|_| crate::Gcra::<()>::new(2.0, 1.0, 3).unwrap())
            .collect();
        for step in 0..400u64 {
            let now = S + step * S / 9;
            let k = (step * 7 % 5) as usize;
            let cost = 1 + step % 3;
            let p = shared.peek(&t, id(k as u64), now, cost).unwrap();
            assert_eq!(own[k].peek(now, cost), Ok(p), "{step}");
            let admitted = own[k].try_acquire(now, cost).unwrap();
            let got = take(&shared, &t, id(k as u64), now, cost);
            assert_eq!(got == Admission::Admitted, admitted, "{step}");
        }
        let (admitted, _, rejected, ..) = t.totals();
        let own_admitted: u64 = own.iter().map(|g| g.counters().snapshot().admitted).sum();
        assert_eq!(admitted, own_admitted);
        assert_eq!(admitted + rejected, 400);
        assert!(matches!(
            shared.try_acquire(&t, id(1), S, 4, true, ME),
            Err(AcquireError::Capacity {
                cost: 4,
                capacity: 3
            })
        ));
    }

    #[test]
    fn a_key_whose_bucket_is_full_again_gives_its_slot_to_a_new_key() {
        let m = memory(2 * WAYS);
        let t = m.table();
        let b = KeyedBucket::new(1.0, 1.0, 1).unwrap();
        // 16 keys fill both sets of a two-set table; a 17th finds no room.
        for k in 0..16 {
            assert_eq!(take(&b, &t, id(k), S, 1), Admission::Admitted, "{k}");
        }
        assert_eq!(t.len(S), 16);
        assert_eq!(take(&b, &t, id(99), S, 1), Admission::NoRoom);
        // A key already held is still decided (refused: its bucket is empty).
        assert_eq!(take(&b, &t, id(3), S, 1), Admission::Refused);
        // Buckets refill: every slot may go to a new key, which starts full.
        let later = 3 * S;
        assert_eq!(t.len(later), 0);
        assert_eq!(take(&b, &t, id(99), later, 1), Admission::Admitted);
        assert_eq!(take(&b, &t, id(99), later, 1), Admission::Refused);
        let (admitted, _, rejected, _, _, expired, full) = t.totals();
        assert_eq!((admitted, rejected, expired, full), (17, 3, 1, 1));
        // An unknown key is a full bucket.
        assert!(b.peek(&t, id(1234), later, 1).unwrap().allowed);
    }

    #[test]
    fn one_slot_per_key_whatever_claims_were_left_pending() {
        let m = memory(2 * WAYS);
        let t = m.table();
        let b = KeyedBucket::new(1.0, 1.0, 2).unwrap();
        let key = id(5);
        let c = slots_of(&t, key);
        // Two processes died after publishing their claims of the same key (slot 3 and 9).
        for (i, v) in [(c[3], 10), (c[9], 20)] {
            m.slots[i].id[0].store(key[0], Ordering::SeqCst);
            m.slots[i].id[1].store(key[1], Ordering::SeqCst);
            m.slots[i].word.store(PENDING | v, Ordering::SeqCst);
        }
        assert_eq!(take(&b, &t, key, S, 1), Admission::Admitted);
        assert_eq!(take(&b, &t, key, S, 1), Admission::Admitted);
        assert_eq!(take(&b, &t, key, S, 1), Admission::Refused);
        // The lower claim won; the other one is vacant.
        assert_eq!(state(m.slots[c[3]].word.load(Ordering::SeqCst)), PLAIN);
        assert_eq!(
            m.slots[c[9]].word.load(Ordering::SeqCst),
            VACANT | 20,
            "the duplicate claim is given up"
        );
    }

    #[test]
    fn claims_left_by_dead_processes_are_freed_when_room_is_short() {
        let m = memory(2 * WAYS);
        let t = m.table();
        let b = KeyedBucket::new(1.0, 1.0, 1).unwrap();
        for k in 0..14 {
            assert_eq!(take(&b, &t, id(k), S, 1), Admission::Admitted);
        }
        let free: Vec<usize> = (0..2 * WAYS)
            .filter(|&i| m.slots[i].word.load(Ordering::SeqCst) == 0)
            .collect();
        assert_eq!(free.len(), 2);
        // Process 41 died while writing a claim; another left a claim of key 77 pending.
        m.slots[free[0]].word.store(CLAIMING | 41, Ordering::SeqCst);
        let other = id(77);
        m.slots[free[1]].id[0].store(other[0], Ordering::SeqCst);
        m.slots[free[1]].id[1].store(other[1], Ordering::SeqCst);
        m.slots[free[1]].word.store(PENDING | 1, Ordering::SeqCst);
        // While 41 lives its claim stays; the pending one is finished (key 77, full bucket)
        // and then given to the new key.
        let alive_41 = |tag| tag == 41;
        let claimer = Claimer {
            tag: 7,
            is_alive: &alive_41,
        };
        let admitted = b.try_acquire(&t, id(50), S, 1, true, claimer).unwrap();
        assert_eq!(admitted, Admission::Admitted);
        assert_eq!(m.slots[free[0]].word.load(Ordering::SeqCst), CLAIMING | 41);
        assert!(t.locate(other).is_none(), "key 77's full bucket made room");
        let dead_41 = |tag| tag != 41;
        let claimer = Claimer {
            tag: 7,
            is_alive: &dead_41,
        };
        let admitted = b.try_acquire(&t, id(51), S, 1, true, claimer).unwrap();
        assert_eq!(admitted, Admission::Admitted, "41 is dead");
        assert_eq!(
            b.try_acquire(&t, id(52), S, 1, true, claimer),
            Ok(Admission::NoRoom)
        );
    }

    #[test]
    fn threads_racing_on_few_keys_admit_exactly_each_burst() {
        let m = Arc::new(memory(64));
        let b = KeyedBucket::new(1.0, 3600.0, 50).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|n| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    let t = m.table();
                    let mut admitted = [0u64; 6];
                    for i in 0..3000u64 {
                        let k = (i + n) % 6;
                        if take(&b, &t, id(k), S, 1) == Admission::Admitted {
                            admitted[k as usize] += 1;
                        }
                    }
                    admitted
                })
            })
            .collect();
        let mut per_key = [0u64; 6];
        for t in threads {
            for (sum, n) in per_key.iter_mut().zip(t.join().unwrap()) {
                *sum += n;
            }
        }
        assert_eq!(per_key, [50; 6]);
        let t = m.table();
        assert_eq!(t.len(S), 6);
        assert_eq!(t.totals().0, 300);
    }

    #[test]
    fn max_keys_buckets_that_are_not_full_all_fit() {
        let max_keys = 20_000u64;
        let m = memory(KeyTable::slots_for(max_keys).unwrap());
        let t = m.table();
        let b = KeyedBucket::new(1.0, 60.0, 1).unwrap();
        let refused = (0..max_keys)
            .filter(|&k| take(&b, &t, id(k), S, 1) == Admission::NoRoom)
            .count();
        assert_eq!(refused, 0);
        assert_eq!(t.len(S), max_keys as usize);
        assert!(KeyTable::slots_for(0).is_err());
    }
}
