//! The map of the keyed limiters: one small state per key, sharded, bounded in count and age.
//!
//! A key is known by its 128-bit keyed hash ([`SipKey`], secret and random per map), so an
//! entry costs the same however long the key is and callers cannot aim keys at one shard or
//! one probe chain. Each shard is a mutex over a slab of entries, an open-addressing index
//! into the slab, and an LRU list through the slab; a call locks the one shard of its key,
//! never a lock shared by every key.
//!
//! Eviction only ever removes a key whose state is *at rest* (equal to a fresh key's: bucket
//! full, window empty, no permit held), so it never changes an answer:
//! - a key unused for `idle_ns` whose state is at rest expires (checked from the LRU end of
//!   the shard on inserts, every [`EXPIRE_EVERY`] calls, and by [`Keyed::sweep`]);
//! - a new key beyond `max_keys` evicts the least recently used key at rest of its shard
//!   (then of the other shards); if none is at rest within [`MAX_WALK`] entries of each LRU
//!   end, the new key is refused ([`Full`]).
//!
//! A key that holds something (semaphore permits) or whose state is lent out (its waiters are
//! served by an unkeyed limiter, see [`Keyed::lend`]) is taken off the LRU list: eviction
//! cannot see it.

use crate::padded::CachePadded;
use crate::siphash::SipKey;
use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering};
use crate::ConfigError;

/// The state of one key.
pub trait KeyState: Default {
    type Config: Send + Sync;
    /// True when the state answers exactly as a fresh key's would at `now`.
    fn at_rest(&self, config: &Self::Config, now: u64) -> bool;
    /// True while the key holds something (permits): it then stays off the LRU list.
    fn holds(&self) -> bool {
        false
    }
}

/// Calls between two checks of a shard's LRU end for expired keys.
pub const EXPIRE_EVERY: u32 = 64;
/// Entries looked at from an LRU end for one eviction before giving up on that shard.
pub const MAX_WALK: u32 = 64;
/// Expired keys removed by one check on the call path (the rest by later calls or `sweep`).
const EXPIRE_PER_CALL: u32 = 4;

/// End of the LRU list.
const NIL: u32 = u32::MAX;
/// `prev` of an entry that is not on the LRU list (holding, or lent out).
const UNLINKED: u32 = u32::MAX - 1;
/// `prev` of a free slab slot (its `next` is the next free slot).
const FREE: u32 = u32::MAX - 2;
/// Bit of `last_ns`: the key's state is lent to an unkeyed limiter.
const LENT: u64 = 1 << 63;

/// No room for a new key: `max_keys` keys are held and none is at rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

struct Entry<S> {
    id: [u64; 2],
    /// Last use (ns), with the `LENT` bit.
    last_ns: u64,
    prev: u32,
    next: u32,
    state: S,
}

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

struct Shard<S> {
    slab: Vec<Entry<S>>,
    free: u32,
    /// Open addressing, linear probing: `(low 32 bits of id[0]) << 32 | (slab index + 1)`,
    /// 0 when empty. A power of two long, at most 3/4 full.
    index: Vec<u64>,
    len: u32,
    /// Most recently used end of the LRU list.
    head: u32,
    /// Least recently used end.
    tail: u32,
    calls: u32,
    counts: KeyedCounts,
}

impl<S: KeyState> Shard<S> {
    fn new() -> Self {
        Self {
            slab: Vec::new(),
            free: NIL,
            index: vec![0; 16],
            len: 0,
            head: NIL,
            tail: NIL,
            calls: 0,
            counts: KeyedCounts::default(),
        }
    }

    fn mask(&self) -> usize {
        self.index.len() - 1
    }

    /// The index position holding `id`, if present.
    #[inline]
    fn find(&self, id: [u64; 2]) -> Option<(usize, u32)> {
        let tag = id[0] as u32;
        let mask = self.mask();
        let mut pos = tag as usize & mask;
        loop {
            let slot = self.index[pos];
            if slot == 0 {
                return None;
            }
            if (slot >> 32) as u32 == tag {
                let at = (slot as u32) - 1;
                if self.slab[at as usize].id == id {
                    return Some((pos, at));
                }
            }
            pos = (pos + 1) & mask;
        }
    }

    fn place(index: &mut [u64], tag: u32, at: u32) {
        let mask = index.len() - 1;
        let mut pos = tag as usize & mask;
        while index[pos] != 0 {
            pos = (pos + 1) & mask;
        }
        index[pos] = (u64::from(tag) << 32) | u64::from(at + 1);
    }

    /// Adds a fresh entry for `id` (the caller made room) and returns its slab index.
    fn insert(&mut self, id: [u64; 2], now: u64) -> u32 {
        if (self.len as usize + 1) * 4 > self.index.len() * 3 {
            let mut bigger = vec![0; self.index.len() * 2];
            for &slot in self.index.iter().filter(|&&s| s != 0) {
                Self::place(&mut bigger, (slot >> 32) as u32, (slot as u32) - 1);
            }
            self.index = bigger;
        }
        let entry = Entry {
            id,
            last_ns: now,
            prev: UNLINKED,
            next: NIL,
            state: S::default(),
        };
        let at = if self.free != NIL {
            let at = self.free;
            self.free = self.slab[at as usize].next;
            self.slab[at as usize] = entry;
            at
        } else {
            if self.slab.len() == self.slab.capacity() {
                // Grow by half, not double: the slab is most of a key's memory.
                self.slab.reserve_exact(self.slab.len() / 2 + 16);
            }
            self.slab.push(entry);
            (self.slab.len() - 1) as u32
        };
        Self::place(&mut self.index, id[0] as u32, at);
        self.len += 1;
        at
    }

    /// Removes the entry at slab index `at` (which must be unlinked first).
    fn remove(&mut self, at: u32) {
        let id = self.slab[at as usize].id;
        let (mut hole, _) = self.find(id).expect("a stored entry is indexed");
        // Backward-shift deletion: pull later members of the probe run into the hole, so
        // lookups never need tombstones.
        let mask = self.mask();
        let mut pos = hole;
        loop {
            pos = (pos + 1) & mask;
            let slot = self.index[pos];
            if slot == 0 {
                break;
            }
            let home = (slot >> 32) as usize & mask;
            if pos.wrapping_sub(home) & mask >= pos.wrapping_sub(hole) & mask {
                self.index[hole] = slot;
                hole = pos;
            }
        }
        self.index[hole] = 0;
        let entry = &mut self.slab[at as usize];
        entry.state = S::default(); // frees what the state owned (a window's log)
        entry.prev = FREE;
        entry.next = self.free;
        self.free = at;
        self.len -= 1;
    }

    fn unlink(&mut self, at: u32) {
        let (prev, next) = {
            let e = &self.slab[at as usize];
            (e.prev, e.next)
        };
        if prev == UNLINKED {
            return;
        }
        if prev == NIL {
            self.head = next;
        } else {
            self.slab[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slab[next as usize].prev = prev;
        }
        let e = &mut self.slab[at as usize];
        e.prev = UNLINKED;
        e.next = NIL;
    }

    fn push_head(&mut self, at: u32) {
        let old = self.head;
        {
            let e = &mut self.slab[at as usize];
            e.prev = NIL;
            e.next = old;
        }
        if old == NIL {
            self.tail = at;
        } else {
            self.slab[old as usize].prev = at;
        }
        self.head = at;
    }

    /// Marks a use at `now`: the entry goes to the MRU end if it may be evicted, else off
    /// the list.
    #[inline]
    fn touch(&mut self, at: u32, now: u64) {
        let e = &mut self.slab[at as usize];
        e.last_ns = now.max(e.last_ns & !LENT) | (e.last_ns & LENT);
        let evictable = e.last_ns & LENT == 0 && !e.state.holds();
        if !evictable {
            self.unlink(at);
        } else if self.head != at {
            self.unlink(at);
            self.push_head(at);
        }
    }

    /// Removes up to `budget` keys unused for `idle_ns` and at rest, from the LRU end.
    fn expire(&mut self, config: &S::Config, now: u64, idle_ns: u64, budget: u32) -> u64 {
        let mut removed = 0;
        let mut at = self.tail;
        let mut steps = 0;
        while at != NIL && steps < budget.max(MAX_WALK) && removed < u64::from(budget) {
            let e = &self.slab[at as usize];
            if e.last_ns.saturating_add(idle_ns) > now {
                break; // every entry nearer the head was used more recently
            }
            let prev = e.prev;
            if e.state.at_rest(config, now) {
                self.unlink(at);
                self.remove(at);
                removed += 1;
            }
            at = prev;
            steps += 1;
        }
        self.counts.expired += removed;
        removed
    }

    /// Removes the least recently used key at rest (looking at most `MAX_WALK` entries).
    fn evict_one(&mut self, config: &S::Config, now: u64) -> bool {
        let mut at = self.tail;
        for _ in 0..MAX_WALK {
            if at == NIL {
                return false;
            }
            let e = &self.slab[at as usize];
            if e.state.at_rest(config, now) {
                self.unlink(at);
                self.remove(at);
                self.counts.evicted += 1;
                return true;
            }
            at = e.prev;
        }
        false
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
    shards: Box<[CachePadded<Mutex<Shard<S>>>]>,
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
                .map(|_| CachePadded::new(Mutex::new(Shard::new())))
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

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard<S>> {
        // Every mutation of a shard completes before its lock is released, so a panic in
        // another thread (a bug) leaves it consistent: keep serving.
        self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the state of `id` (a fresh state if the key is new), marking the use.
    /// `f` also gets the shard's counts. A new key may evict the least recently used key at
    /// rest; `Full` when there is none to evict.
    #[inline]
    pub fn update<R>(
        &self,
        id: [u64; 2],
        now: u64,
        f: impl FnOnce(&mut S, &S::Config, &mut KeyedCounts) -> R,
    ) -> Result<Access<R>, Full> {
        self.access(id, now, true, |entry, config, counts| {
            if entry.last_ns & LENT != 0 {
                Access::Lent
            } else {
                Access::Here(f(&mut entry.state, config, counts))
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
        f: impl FnOnce(&mut Entry<S>, &S::Config, &mut KeyedCounts) -> R,
    ) -> Result<R, Full> {
        let shard_no = self.shard_of(id);
        let mut shard = self.lock(shard_no);
        shard.calls = shard.calls.wrapping_add(1);
        if shard.calls % EXPIRE_EVERY == 0 {
            self.expire(&mut shard, now, EXPIRE_PER_CALL);
        }
        let at = match shard.find(id) {
            Some((_, at)) => at,
            None => {
                if self.make_room(&mut shard, now).is_err() {
                    drop(shard);
                    // Another shard may have a key at rest: evict it (one lock at a time,
                    // never two), then look again, since the key may have come meanwhile.
                    let evicted = self.evict_elsewhere(shard_no, now);
                    shard = self.lock(shard_no);
                    if !evicted
                        || shard.find(id).is_none() && self.make_room(&mut shard, now).is_err()
                    {
                        if count_full {
                            shard.counts.refused_full += 1;
                        }
                        return Err(Full);
                    }
                }
                match shard.find(id) {
                    Some((_, at)) => at,
                    None => shard.insert(id, now),
                }
            }
        };
        let shard = &mut *shard;
        let result = f(
            &mut shard.slab[at as usize],
            &self.config,
            &mut shard.counts,
        );
        shard.touch(at, now);
        Ok(result)
    }

    /// Expires up to `budget` keys of `shard`, keeping the key count.
    fn expire(&self, shard: &mut Shard<S>, now: u64, budget: u32) -> u64 {
        let removed = shard.expire(&self.config, now, self.idle_ns, budget);
        if removed > 0 {
            self.keys.fetch_sub(removed, Ordering::Relaxed);
        }
        removed
    }

    /// Counts a key into `keys`, first expiring and evicting in this shard if need be.
    fn make_room(&self, shard: &mut Shard<S>, now: u64) -> Result<(), Full> {
        self.expire(shard, now, EXPIRE_PER_CALL);
        if self.keys.fetch_add(1, Ordering::Relaxed) < self.max_keys {
            return Ok(());
        }
        // Over the bound: this key takes the place of one evicted here, or none at all.
        self.keys.fetch_sub(1, Ordering::Relaxed);
        if shard.evict_one(&self.config, now) {
            return Ok(());
        }
        Err(Full)
    }

    /// Evicts one key at rest from a shard other than `except`, one lock at a time.
    fn evict_elsewhere(&self, except: usize, now: u64) -> bool {
        (1..self.shards.len()).any(|step| {
            let mut shard = self.lock((except + step) % self.shards.len());
            let evicted = shard.evict_one(&self.config, now);
            if evicted {
                self.keys.fetch_sub(1, Ordering::Relaxed);
            }
            evicted
        })
    }

    /// Runs `f` on the state of `id` if the key is held and not lent; no use is marked.
    pub fn read<R>(&self, id: [u64; 2], f: impl FnOnce(Option<&S>, &S::Config) -> R) -> Access<R> {
        let shard = self.lock(self.shard_of(id));
        match shard.find(id) {
            Some((_, at)) if shard.slab[at as usize].last_ns & LENT != 0 => Access::Lent,
            Some((_, at)) => Access::Here(f(Some(&shard.slab[at as usize].state), &self.config)),
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
        let (_, at) = shard.find(id)?;
        if shard.slab[at as usize].last_ns & LENT != 0 {
            return Some(Access::Lent);
        }
        let shard = &mut *shard;
        let result = f(
            &mut shard.slab[at as usize].state,
            &self.config,
            &mut shard.counts,
        );
        shard.touch(at, now);
        Some(Access::Here(result))
    }

    /// Lends the state of `id` out (to an unkeyed limiter that serves its waiters): takes
    /// it, leaving a fresh one, and marks the key lent, which keeps it from eviction until
    /// [`Keyed::give_back`]. `Ok(None)` if it is already lent. A refusal for want of room
    /// is not counted: the caller's attempt was counted when it was first refused.
    pub fn lend(&self, id: [u64; 2], now: u64) -> Result<Option<S>, Full> {
        self.access(id, now, false, |entry, _, _| {
            if entry.last_ns & LENT != 0 {
                return None;
            }
            // The LENT bit takes the key off the LRU list when `access` marks the use.
            entry.last_ns |= LENT;
            Some(std::mem::take(&mut entry.state))
        })
    }

    /// Ends a loan: the key's state becomes `state`, and the key may be evicted again.
    pub fn give_back(&self, id: [u64; 2], now: u64, state: S) {
        let mut shard = self.lock(self.shard_of(id));
        if let Some((_, at)) = shard.find(id) {
            let e = &mut shard.slab[at as usize];
            e.last_ns &= !LENT;
            e.state = state;
            shard.touch(at, now);
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
            loop {
                let n = self.expire(&mut shard, now, MAX_WALK);
                removed += n;
                if n < u64::from(MAX_WALK) {
                    break;
                }
            }
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

    /// Keys on the LRU lists, least recently used first, per shard (tests and debugging).
    pub fn lru_order(&self) -> Vec<Vec<[u64; 2]>> {
        (0..self.shards.len())
            .map(|shard_no| {
                let shard = self.lock(shard_no);
                let mut order = Vec::new();
                let mut at = shard.tail;
                while at != NIL {
                    order.push(shard.slab[at as usize].id);
                    at = shard.slab[at as usize].prev;
                }
                order
            })
            .collect()
    }
}
