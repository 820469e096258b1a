//! The map of the keyed limiters: one small state per key, sharded, bounded in count and age.
//!
//! A key is known by its 128-bit keyed hash ([`SipKey`], secret and random per map), so an
//! entry costs the same however long the key is and callers cannot aim keys at one shard or
//! one probe chain. Each shard is a mutex over a [`Table`]: the entries inline in one
//! open-addressing array, so that a call on a key held among a million touches one cache line
//! of the map; a call locks the one shard of its key, never a lock shared by every key.
//!
//! Eviction only ever removes a key whose state is *at rest* (equal to a fresh key's: bucket
//! full, window empty, no permit held), so it never changes an answer:
//! - a key unused for `idle_ns` whose state is at rest expires: a hand walking each shard's
//!   table finds it (a few slots on each new key and every [`EXPIRE_EVERY`] calls), and
//!   [`Keyed::sweep`] finds every one;
//! - a new key beyond `max_keys` evicts, in its shard (then in the others), the least recently
//!   used key at rest among the next [`EVICTION_SAMPLE`] keys from the hand: exactly the
//!   shard's least recently used key at rest while it holds at most that many keys, otherwise
//!   one of the least recently used (the sample is in hash order, random with respect to use;
//!   the hand moves past it, so the next eviction compares other keys). "Recently" is by the
//!   clock's reading at each key's last use: keys last used at one reading are in no
//!   particular order. If none of the sample is at rest, up to [`MAX_WALK`] keys are looked
//!   at; if no shard finds a key at rest that way, the new key is refused ([`Full`]).
//!
//! A key that holds something (semaphore permits) or whose state is lent out (its waiters are
//! served by an unkeyed limiter, see [`Keyed::lend`]) is never removed.

pub use crate::keyed_table::{KeyState, EVICTION_SAMPLE, MAX_WALK};
use crate::keyed_table::{Removed, Slot, Table};
use crate::padded::CachePadded;
use crate::siphash::SipKey;
use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering};
use crate::ConfigError;

/// Calls between two steps of a shard's hand looking for expired keys.
pub const EXPIRE_EVERY: u32 = 256;
/// Slots one step of the hand looks at (on a new key, and every [`EXPIRE_EVERY`] calls).
const EXPIRE_SLOTS: usize = 8;

/// No room for a new key: `max_keys` keys are held and none is at rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Counts kept per shard, under its lock (no shared atomic on the call path).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KeyedCounts {
    pub admitted: u64,
    pub admitted_cost: u64,
    pub rejected: u64,
    /// Waits of lent keys that timed out or were cancelled (counted by the unkeyed limiter
    /// that served them, added here when the key's state comes back).
    pub timed_out: u64,
    pub cancelled: u64,
    /// Keys removed after `idle_ns` at rest.
    pub expired: u64,
    /// Keys removed to make room beyond `max_keys`.
    pub evicted: u64,
    /// New keys refused because `max_keys` keys were held and none was at rest.
    pub refused_full: u64,
}

impl KeyedCounts {
    fn add(&mut self, other: &Self) {
        self.admitted += other.admitted;
        self.admitted_cost += other.admitted_cost;
        self.rejected += other.rejected;
        self.timed_out += other.timed_out;
        self.cancelled += other.cancelled;
        self.expired += other.expired;
        self.evicted += other.evicted;
        self.refused_full += other.refused_full;
    }
}

/// A shard behind its lock, and where its table is, for [`Keyed::prefetch`] without the lock.
struct ShardCell<S> {
    shard: Mutex<Shard<S>>,
    /// The table's `Table::placement`, stored under the lock whenever the table may have
    /// moved (a new key: it may grow; it never shrinks). Read without the lock, the two may
    /// come from two tables during a grow: the address is then a wasted hint, never a fault
    /// (a prefetch reads nothing into the program).
    table_base: AtomicU64,
    table_mask: AtomicU64,
}

impl<S: KeyState> ShardCell<S> {
    fn new() -> Self {
        let shard = Shard::new();
        let (base, mask) = shard.table.placement();
        Self {
            shard: Mutex::new(shard),
            table_base: AtomicU64::new(base as u64),
            table_mask: AtomicU64::new(mask as u64),
        }
    }

    /// Records where `table` (this shard's, under its lock) is now.
    fn placed(&self, table: &Table<S>) {
        let (base, mask) = table.placement();
        self.table_base.store(base as u64, Ordering::Relaxed);
        self.table_mask.store(mask as u64, Ordering::Relaxed);
    }
}

struct Shard<S> {
    table: Table<S>,
    calls: u32,
    counts: KeyedCounts,
}

impl<S: KeyState> Shard<S> {
    fn new() -> Self {
        Self {
            table: Table::new(),
            calls: 0,
            counts: KeyedCounts::default(),
        }
    }

    /// One step of the hand: removes the expired keys among the next `slots` slots.
    fn expire(&mut self, config: &S::Config, now: u64, idle_ns: u64, slots: usize) -> u64 {
        let removed = self.table.expire(config, now, idle_ns, slots);
        self.counts.expired += removed;
        removed
    }

    /// Removes one key at rest to make room (see the module's documentation).
    fn evict_one(&mut self, config: &S::Config, now: u64, idle_ns: u64) -> bool {
        match self.table.evict(config, now, idle_ns) {
            Some(Removed::Expired) => self.counts.expired += 1,
            Some(Removed::Evicted) => self.counts.evicted += 1,
            None => return false,
        }
        true
    }
}

/// Where a call on a key went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<R> {
    /// The key's state answered.
    Here(R),
    /// The key's state is lent out: ask the limiter that holds it.
    Lent,
}

/// The sharded map of one keyed limiter.
pub struct Keyed<S: KeyState> {
    shards: Box<[CachePadded<ShardCell<S>>]>,
    shard_bits: u32,
    sip: SipKey,
    max_keys: u64,
    idle_ns: u64,
    keys: AtomicU64,
    config: S::Config,
}

impl<S: KeyState> std::fmt::Debug for Keyed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyed")
            .field("keys", &self.keys.load(Ordering::Relaxed))
            .field("max_keys", &self.max_keys)
            .field("idle_ns", &self.idle_ns)
            .field("shards", &self.shards.len())
            .finish()
    }
}

/// Largest number of shards: beyond it, shards cost memory and buy nothing.
pub const MAX_SHARDS: usize = 1024;

impl<S: KeyState> Keyed<S> {
    /// `shards` must be a power of two in `1..=MAX_SHARDS`; `max_keys` at least 1.
    pub fn new(
        config: S::Config,
        max_keys: u64,
        idle_ns: u64,
        shards: usize,
    ) -> Result<Self, ConfigError> {
        if max_keys < 1 || max_keys > u64::from(u32::MAX - 3) {
            return Err(ConfigError::new(
                "max_keys",
                format!(
                    "max_keys must be between 1 and {}, got {max_keys}",
                    u32::MAX - 3
                ),
            ));
        }
        if !shards.is_power_of_two() || shards > MAX_SHARDS {
            return Err(ConfigError::new(
                "shards",
                format!("shards must be a power of two up to {MAX_SHARDS}, got {shards}"),
            ));
        }
        Ok(Self {
            shards: (0..shards)
                .map(|_| CachePadded::new(ShardCell::new()))
                .collect(),
            shard_bits: shards.trailing_zeros(),
            sip: SipKey::random(),
            max_keys,
            idle_ns,
            keys: AtomicU64::new(0),
            config,
        })
    }

    pub fn config(&self) -> &S::Config {
        &self.config
    }

    pub fn max_keys(&self) -> u64 {
        self.max_keys
    }

    pub fn idle_ns(&self) -> u64 {
        self.idle_ns
    }

    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The identity of `key` in this map.
    #[inline]
    pub fn id(&self, key: &[u8]) -> [u64; 2] {
        self.sip.hash128(key)
    }

    /// The shard holding `id`.
    #[inline]
    pub fn shard_of(&self, id: [u64; 2]) -> usize {
        // The high word picks the shard, the low word the position inside it.
        if self.shard_bits == 0 {
            0
        } else {
            (id[1] >> (64 - self.shard_bits)) as usize
        }
    }

    /// Calls `hint` with the address of the slot where the search for `id` starts, so that a
    /// caller can ask the processor to fetch that memory while it does other work (reads
    /// the clock) before [`Keyed::update`]: with a million keys that slot is far from the
    /// caches. Takes no lock (the shard's table's placement is kept in atomics beside its
    /// lock); the address is never dereferenced here and is only a hint: the table may be
    /// moving (then the hint is wasted, never wrong).
    #[inline]
    pub fn prefetch(&self, id: [u64; 2], hint: impl FnOnce(*const u8)) {
        let cell = &self.shards[self.shard_of(id)];
        let placement = (
            cell.table_base.load(Ordering::Relaxed) as usize,
            cell.table_mask.load(Ordering::Relaxed) as usize,
        );
        hint(std::ptr::null::<u8>().wrapping_add(Table::<S>::home_address(placement, id)));
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard<S>> {
        // Every mutation of a shard completes before its lock is released, so a panic in
        // another thread (a bug) leaves it consistent: keep serving.
        self.shards[shard]
            .shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the state of `id` (a fresh state if the key is new), marking the use.
    /// `f` also gets the shard's counts. A new key may evict a key at rest (see the module's
    /// documentation); `Full` when there is none to evict.
    #[inline]
    pub fn update<R>(
        &self,
        id: [u64; 2],
        now: u64,
        f: impl FnOnce(&mut S, &S::Config, &mut KeyedCounts) -> R,
    ) -> Result<Access<R>, Full> {
        self.access(id, now, true, |slot, config, counts| {
            if slot.lent() {
                Access::Lent
            } else {
                Access::Here(f(&mut slot.state, config, counts))
            }
        })
    }

    /// Runs `f` on the entry of `id`, inserting it if need be, then marks the use. A key
    /// refused for want of room counts in `refused_full` if `count_full`.
    #[inline]
    fn access<R>(
        &self,
        id: [u64; 2],
        now: u64,
        count_full: bool,
        f: impl FnOnce(&mut Slot<S>, &S::Config, &mut KeyedCounts) -> R,
    ) -> Result<R, Full> {
        let shard_no = self.shard_of(id);
        let mut shard = self.lock(shard_no);
        shard.calls = shard.calls.wrapping_add(1);
        if shard.calls % EXPIRE_EVERY == 0 {
            self.expire(&mut shard, now);
        }
        let pos = match shard.table.find(id) {
            Some(pos) => pos,
            None => {
                if self.make_room(&mut shard, now).is_err() {
                    drop(shard);
                    // Another shard may have a key at rest: evict it (one lock at a time,
                    // never two), then look again, since the key may have come meanwhile.
                    let evicted = self.evict_elsewhere(shard_no, now);
                    shard = self.lock(shard_no);
                    if !evicted
                        || shard.table.find(id).is_none()
                            && self.make_room(&mut shard, now).is_err()
                    {
                        if count_full {
                            shard.counts.refused_full += 1;
                        }
                        return Err(Full);
                    }
                }
                // Found again if it came while the lock was let go; the removals of
                // `make_room` may have moved it.
                match shard.table.find(id) {
                    Some(pos) => pos,
                    None => {
                        let pos = shard.table.insert(id, now);
                        self.shards[shard_no].placed(&shard.table);
                        pos
                    }
                }
            }
        };
        let shard = &mut *shard;
        let result = f(shard.table.slot_mut(pos), &self.config, &mut shard.counts);
        shard.table.touch(pos, now);
        Ok(result)
    }

    /// One step of `shard`'s hand, keeping the key count.
    fn expire(&self, shard: &mut Shard<S>, now: u64) {
        let removed = shard.expire(&self.config, now, self.idle_ns, EXPIRE_SLOTS);
        if removed > 0 {
            self.keys.fetch_sub(removed, Ordering::Relaxed);
        }
    }

    /// Counts a key into `keys`, first expiring and evicting in this shard if need be.
    fn make_room(&self, shard: &mut Shard<S>, now: u64) -> Result<(), Full> {
        self.expire(shard, now);
        if self.keys.fetch_add(1, Ordering::Relaxed) < self.max_keys {
            return Ok(());
        }
        // Over the bound: this key takes the place of one evicted here, or none at all.
        self.keys.fetch_sub(1, Ordering::Relaxed);
        if shard.evict_one(&self.config, now, self.idle_ns) {
            return Ok(());
        }
        Err(Full)
    }

    /// Evicts one key at rest from a shard other than `except`, one lock at a time.
    fn evict_elsewhere(&self, except: usize, now: u64) -> bool {
        (1..self.shards.len()).any(|step| {
            let mut shard = self.lock((except + step) % self.shards.len());
            let evicted = shard.evict_one(&self.config, now, self.idle_ns);
            if evicted {
                self.keys.fetch_sub(1, Ordering::Relaxed);
            }
            evicted
        })
    }

    /// Runs `f` on the state of `id` if the key is held and not lent; no use is marked.
    pub fn read<R>(&self, id: [u64; 2], f: impl FnOnce(Option<&S>, &S::Config) -> R) -> Access<R> {
        let shard = self.lock(self.shard_of(id));
        match shard.table.find(id).map(|pos| shard.table.slot(pos)) {
            Some(slot) if slot.lent() => Access::Lent,
            Some(slot) => Access::Here(f(Some(&slot.state), &self.config)),
            None => Access::Here(f(None, &self.config)),
        }
    }

    /// Runs `f` on the state of a key that is held (None if it is not), marking the use.
    pub fn update_held<R>(
        &self,
        id: [u64; 2],
        now: u64,
        f: impl FnOnce(&mut S, &S::Config, &mut KeyedCounts) -> R,
    ) -> Option<Access<R>> {
        let mut shard = self.lock(self.shard_of(id));
        let pos = shard.table.find(id)?;
        if shard.table.slot(pos).lent() {
            return Some(Access::Lent);
        }
        let shard = &mut *shard;
        let result = f(
            &mut shard.table.slot_mut(pos).state,
            &self.config,
            &mut shard.counts,
        );
        shard.table.touch(pos, now);
        Some(Access::Here(result))
    }

    /// Lends the state of `id` out (to an unkeyed limiter that serves its waiters): takes
    /// it, leaving a fresh one, and marks the key lent, which keeps it from eviction until
    /// [`Keyed::give_back`]. `Ok(None)` if it is already lent. A refusal for want of room
    /// is not counted: the caller's attempt was counted when it was first refused.
    pub fn lend(&self, id: [u64; 2], now: u64) -> Result<Option<S>, Full> {
        self.access(id, now, false, |slot, _, _| {
            if slot.lent() {
                return None;
            }
            slot.set_lent(true);
            Some(std::mem::take(&mut slot.state))
        })
    }

    /// Ends a loan: the key's state becomes `state`, and the key may be evicted again.
    pub fn give_back(&self, id: [u64; 2], now: u64, state: S) {
        let mut shard = self.lock(self.shard_of(id));
        if let Some(pos) = shard.table.find(id) {
            let slot = shard.table.slot_mut(pos);
            slot.set_lent(false);
            slot.state = state;
            shard.table.touch(pos, now);
        }
    }

    /// Adds counts gathered elsewhere (a lent key's limiter) to this map's totals.
    pub fn absorb(&self, counts: &KeyedCounts) {
        self.lock(0).counts.add(counts);
    }

    /// Removes every key unused for `idle_ns` and at rest; returns how many.
    pub fn sweep(&self, now: u64) -> u64 {
        let mut removed = 0;
        for shard_no in 0..self.shards.len() {
            let mut shard = self.lock(shard_no);
            let n = shard.table.sweep(&self.config, now, self.idle_ns);
            shard.counts.expired += n;
            if n > 0 {
                self.keys.fetch_sub(n, Ordering::Relaxed);
            }
            removed += n;
        }
        removed
    }

    /// Keys held now (those expired but not yet swept included).
    pub fn len(&self) -> u64 {
        self.keys.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The counts of every shard, added up.
    pub fn counts(&self) -> KeyedCounts {
        let mut total = KeyedCounts::default();
        for shard_no in 0..self.shards.len() {
            total.add(&self.lock(shard_no).counts);
        }
        total
    }

    /// The keys neither lent nor holding anything, least recently used first, per shard
    /// (tests and debugging).
    pub fn lru_order(&self) -> Vec<Vec<[u64; 2]>> {
        (0..self.shards.len())
            .map(|shard_no| self.lock(shard_no).table.by_last_use())
            .collect()
    }

    /// Slots of every shard's table, used or not (the map's memory is this times 32 bytes
    /// for the limiters' states).
    pub fn capacity(&self) -> usize {
        (0..self.shards.len())
            .map(|shard_no| self.lock(shard_no).table.capacity())
            .sum()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A state always at rest.
    #[derive(Debug, Default)]
    struct Plain;

    impl KeyState for Plain {
        type Config = ();
        fn at_rest(&self, _: &(), _: u64) -> bool {
            true
        }
    }

    /// The address `prefetch` hints at, read without the lock.
    fn hinted(map: &Keyed<Plain>, id: [u64; 2]) -> usize {
        let mut at = 0;
        map.prefetch(id, |address| at = address as usize);
        at
    }

    #[test]
    fn the_prefetch_hint_follows_each_shard_table_as_it_grows() {
        let map: Keyed<Plain> = Keyed::new((), 100_000, u64::MAX, 2).unwrap();
        for n in 0u32..5_000 {
            let id = map.id(&n.to_le_bytes());
            map.update(id, 1, |_, _, _| ()).unwrap();
            let shard = map.lock(map.shard_of(id));
            // Where this key's search starts in its table as it is now (grown by this very
            // insertion, sometimes).
            let home = Table::<Plain>::home_address(shard.table.placement(), id);
            assert_eq!(hinted(&map, id), home);
        }
        assert!(map.lock(0).table.capacity() >= 2_048);
    }
}
