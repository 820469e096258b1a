//! One shard of the keyed limiters' map: every key's entry stored inline in one
//! open-addressing array, and the hand that finds keys to expire or evict.
//!
//! With a million keys the map is far larger than the caches, so a call costs the cache lines
//! it touches. An entry (128-bit identity, last use, state) is 32 bytes aligned to 32, so
//! finding a key and updating its state touch one line (two only when linear probing runs
//! into the next one). Marking a use writes the entry's own last-use time and nothing else:
//! there is no list of uses whose neighbours a call would rewrite.
//!
//! Keys at rest leave by a *hand* that walks the array in slot order, which is the keys'
//! hash order, random with respect to their names and their use:
//! - [`Table::expire`] looks at the next few slots and removes the keys unused for the idle
//!   time whose state is at rest; [`Table::sweep`] looks at every slot;
//! - [`Table::evict`] looks at the next [`EVICTION_SAMPLE`] keys (all of them when the table
//!   holds no more) and removes the least recently used one at rest; if none of those is at
//!   rest it looks further, up to [`MAX_WALK`] keys.
//!
//! A lent key (its state is with an unkeyed limiter serving its waiters) is never removed,
//! nor is a key whose state is not at rest (a bucket refilling, permits held).

/// The state of one key.
pub trait KeyState: Default {
    type Config: Send + Sync;
    /// True when the state answers exactly as a fresh key's would at `now`.
    fn at_rest(&self, config: &Self::Config, now: u64) -> bool;
    /// True while the key holds something (permits): it is then never removed (its state is
    /// not at rest either; this says so without a configuration or a time).
    fn holds(&self) -> bool {
        false
    }
}

/// Keys a new key's eviction compares (the least recently used one at rest goes): about
/// 32 slots at the table's usual load, 16 cache lines read in order.
pub const EVICTION_SAMPLE: u32 = 16;
/// Keys looked at, from the hand, for one eviction before giving up on the table.
pub const MAX_WALK: u32 = 64;

/// Bit of [`Slot::word`]: the slot holds a key (an empty slot's word is 0).
const USED: u64 = 1 << 62;
/// Bit of [`Slot::word`]: the key's state is lent to an unkeyed limiter.
const LENT: u64 = 1 << 63;
/// The last use (ns) in [`Slot::word`]: 62 bits, about 146 years of clock.
const TIME: u64 = USED - 1;
/// Slots of a new table (a power of two).
const INITIAL_SLOTS: usize = 16;

/// One key's entry, or an empty slot.
#[derive(Debug, Default)]
#[repr(C, align(32))]
pub struct Slot<S> {
    pub id: [u64; 2],
    /// `USED`, `LENT` and the last use.
    word: u64,
    pub state: S,
}

impl<S> Slot<S> {
    #[inline]
    fn used(&self) -> bool {
        self.word != 0
    }

    #[inline]
    pub fn lent(&self) -> bool {
        self.word & LENT != 0
    }

    /// Last use (ns).
    #[inline]
    pub fn last_use(&self) -> u64 {
        self.word & TIME
    }

    /// Marks the key lent out, or back.
    pub fn set_lent(&mut self, lent: bool) {
        self.word = if lent {
            self.word | LENT
        } else {
            self.word & !LENT
        };
    }
}

impl<S: KeyState> Slot<S> {
    /// True when the key may be removed at `now`: not lent, holding nothing, at rest.
    #[inline]
    fn removable(&self, config: &S::Config, now: u64) -> bool {
        self.used() && !self.lent() && !self.state.holds() && self.state.at_rest(config, now)
    }

    /// True when the key is removable and unused for `idle_ns`.
    #[inline]
    fn expired(&self, config: &S::Config, now: u64, idle_ns: u64) -> bool {
        self.used() && self.last_use().saturating_add(idle_ns) <= now && self.removable(config, now)
    }
}

/// What [`Table::evict`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// A key unused for the idle time (it would have expired anyway).
    Expired,
    /// A key at rest, used more recently than that.
    Evicted,
}

/// One shard's keys: open addressing, linear probing, backward-shift deletion (no
/// tombstones), a power of two long and at most 3/4 full.
#[derive(Debug)]
pub struct Table<S> {
    slots: Vec<Slot<S>>,
    len: usize,
    /// Next slot the hand looks at.
    hand: usize,
}

impl<S: KeyState> Default for Table<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: KeyState> Table<S> {
    pub fn new() -> Self {
        Self {
            slots: empty_slots(INITIAL_SLOTS),
            len: 0,
            hand: 0,
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots, used or not (the memory is this times the size of a slot).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Where `id` starts its probe run: the identity's low bits, so a shard chosen by its
    /// high bits still spreads over the whole table.
    #[inline]
    fn home_pos(id: [u64; 2], mask: usize) -> usize {
        id[0] as usize & mask
    }

    /// Where the table's slots are, and its mask: what [`Table::home_address`] needs.
    #[inline]
    pub fn placement(&self) -> (usize, usize) {
        (self.slots.as_ptr() as usize, self.mask())
    }

    /// The address of the slot where the search for `id` starts, in a table at `placement`
    /// (see `Keyed::prefetch`, which reads the placement without the shard's lock).
    #[inline]
    pub fn home_address((base, mask): (usize, usize), id: [u64; 2]) -> usize {
        base.wrapping_add(Self::home_pos(id, mask).wrapping_mul(std::mem::size_of::<Slot<S>>()))
    }

    /// The slot holding `id`, if present.
    #[inline]
    pub fn find(&self, id: [u64; 2]) -> Option<usize> {
        let mask = self.mask();
        let mut pos = Self::home_pos(id, mask);
        loop {
            let slot = &self.slots[pos];
            if !slot.used() {
                return None;
            }
            if slot.id == id {
                return Some(pos);
            }
            pos = (pos + 1) & mask;
        }
    }

    #[inline]
    pub fn slot(&self, pos: usize) -> &Slot<S> {
        &self.slots[pos]
    }

    #[inline]
    pub fn slot_mut(&mut self, pos: usize) -> &mut Slot<S> {
        &mut self.slots[pos]
    }

    /// Marks a use of the key at `pos` at `now` (a clock that went back changes nothing).
    #[inline]
    pub fn touch(&mut self, pos: usize, now: u64) {
        let slot = &mut self.slots[pos];
        let last = slot.last_use().max(now.min(TIME));
        slot.word = (slot.word & !TIME) | last;
    }

    /// Adds a fresh entry for `id`, which must not be present, used at `now`; returns its
    /// slot. May move every other entry (the table doubles when 3/4 full).
    pub fn insert(&mut self, id: [u64; 2], now: u64) -> usize {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let pos = self.free_slot_for(id);
        self.slots[pos] = Slot {
            id,
            word: USED | now.min(TIME),
            state: S::default(),
        };
        self.len += 1;
        pos
    }

    /// The first empty slot of `id`'s probe run.
    fn free_slot_for(&self, id: [u64; 2]) -> usize {
        let mask = self.mask();
        let mut pos = Self::home_pos(id, mask);
        while self.slots[pos].used() {
            pos = (pos + 1) & mask;
        }
        pos
    }

    fn grow(&mut self) {
        let bigger = empty_slots(self.slots.len() * 2);
        let old = std::mem::replace(&mut self.slots, bigger);
        for slot in old.into_iter().filter(Slot::used) {
            let pos = self.free_slot_for(slot.id);
            self.slots[pos] = slot;
        }
        self.hand &= self.mask();
    }

    /// Removes the entry at `pos` (dropping its state). Entries later in its probe run may
    /// move back, to `pos` itself or after it (cyclically), never before it.
    pub fn remove(&mut self, pos: usize) {
        let mask = self.mask();
        let mut hole = pos;
        let mut next = pos;
        loop {
            next = (next + 1) & mask;
            if !self.slots[next].used() {
                break;
            }
            let home = Self::home_pos(self.slots[next].id, mask);
            // `next` may fill the hole if its home is not strictly between the hole and it.
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.slots.swap(hole, next);
                hole = next;
            }
        }
        self.slots[hole] = Slot::default();
        self.len -= 1;
    }

    /// Moves the hand over the next `slots` slots, removing the keys unused for `idle_ns` and
    /// at rest; returns how many.
    pub fn expire(&mut self, config: &S::Config, now: u64, idle_ns: u64, slots: usize) -> u64 {
        let mask = self.mask();
        let mut pos = self.hand & mask;
        let mut removed = 0;
        for _ in 0..slots.min(self.slots.len()) {
            // A removal moves later entries of the run back, to `pos` or after it (never
            // before): look at `pos` again until it holds a key that stays.
            while self.slots[pos].expired(config, now, idle_ns) {
                self.remove(pos);
                removed += 1;
            }
            pos = (pos + 1) & mask;
        }
        self.hand = pos;
        removed
    }

    /// Removes every key unused for `idle_ns` and at rest (one turn of the hand); returns
    /// how many. Entries moved back by a removal stay ahead of the hand or were looked at
    /// already, so none is missed.
    pub fn sweep(&mut self, config: &S::Config, now: u64, idle_ns: u64) -> u64 {
        self.expire(config, now, idle_ns, self.slots.len())
    }

    /// Removes the least recently used key at rest among the next [`EVICTION_SAMPLE`] keys
    /// from the hand (the whole table when it holds no more), looking up to [`MAX_WALK`]
    /// keys when none of those is at rest. `None`: no key at rest was found.
    pub fn evict(&mut self, config: &S::Config, now: u64, idle_ns: u64) -> Option<Removed> {
        let mask = self.mask();
        let mut pos = self.hand & mask;
        let mut seen = 0;
        let mut best: Option<usize> = None;
        for _ in 0..self.slots.len() {
            let slot = &self.slots[pos];
            if slot.used() {
                seen += 1;
                if slot.removable(config, now)
                    && best.map_or(true, |b| slot.last_use() < self.slots[b].last_use())
                {
                    best = Some(pos);
                }
                if seen >= MAX_WALK || (seen >= EVICTION_SAMPLE && best.is_some()) {
                    pos = (pos + 1) & mask;
                    break;
                }
            }
            pos = (pos + 1) & mask;
        }
        // The next eviction looks at the keys after these.
        self.hand = pos;
        let at = best?;
        let idle = self.slots[at].last_use().saturating_add(idle_ns) <= now;
        self.remove(at);
        Some(if idle {
            Removed::Expired
        } else {
            Removed::Evicted
        })
    }

    /// The identities of the keys neither lent nor holding anything (the ones eviction
    /// considers, if at rest), least recently used first (tests and debugging).
    pub fn by_last_use(&self) -> Vec<[u64; 2]> {
        let mut keys: Vec<(u64, [u64; 2])> = self
            .slots
            .iter()
            .filter(|slot| slot.used() && !slot.lent() && !slot.state.holds())
            .map(|slot| (slot.last_use(), slot.id))
            .collect();
        keys.sort_unstable();
        keys.into_iter().map(|(_, id)| id).collect()
    }
}

fn empty_slots<S: Default>(n: usize) -> Vec<Slot<S>> {
    let mut slots = Vec::with_capacity(n);
    slots.resize_with(n, Slot::default);
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state at rest unless `busy`.
    #[derive(Debug, Default)]
    struct Busy {
        busy: bool,
    }

    impl KeyState for Busy {
        type Config = ();
        fn at_rest(&self, _: &(), _: u64) -> bool {
            !self.busy
        }
    }

    #[test]
    fn a_slot_is_32_bytes_aligned_to_32() {
        assert_eq!(std::mem::size_of::<Slot<u64>>(), 32);
        assert_eq!(std::mem::align_of::<Slot<Busy>>(), 32);
        let table: Table<Busy> = Table::new();
        assert_eq!(table.slots.as_ptr() as usize % 32, 0);
    }

    #[test]
    fn the_home_address_is_where_the_search_starts() {
        let mut table: Table<Busy> = Table::new();
        let id = [7, 0]; // home: slot 7 of 16
        let home = Table::<Busy>::home_address(table.placement(), id);
        assert_eq!(home, table.slots.as_ptr() as usize + 7 * 32);
        let pos = table.insert(id, 1);
        assert_eq!(std::ptr::from_ref(table.slot(pos)) as usize, home);
    }

    #[test]
    fn identities_sharing_a_home_are_told_apart_by_the_whole_identity() {
        let mut table: Table<Busy> = Table::new();
        // Same low word (same home, same probe run), different high words.
        let ids: Vec<[u64; 2]> = (0..8).map(|i| [5, i]).collect();
        for (n, &id) in ids.iter().enumerate() {
            assert_eq!(table.find(id), None);
            let pos = table.insert(id, n as u64);
            table.slot_mut(pos).state.busy = n % 2 == 0;
        }
        for (n, &id) in ids.iter().enumerate() {
            let pos = table.find(id).expect("present");
            assert_eq!(table.slot(pos).state.busy, n % 2 == 0);
        }
        // Removing from the middle of the run keeps the rest findable (backward shift).
        table.remove(table.find(ids[3]).unwrap());
        table.remove(table.find(ids[0]).unwrap());
        assert_eq!((table.find(ids[3]), table.find(ids[0])), (None, None));
        for &n in &[1, 2, 4, 5, 6, 7] {
            let pos = table.find(ids[n]).expect("present");
            assert_eq!(table.slot(pos).state.busy, n % 2 == 0);
        }
    }

    #[test]
    fn a_run_wrapping_around_the_end_survives_removals() {
        let mut table: Table<Busy> = Table::new();
        let ids: Vec<[u64; 2]> = (0..6).map(|i| [15 + (i % 2) * 16, i]).collect();
        for &id in &ids {
            table.insert(id, 0);
        }
        table.remove(table.find(ids[0]).unwrap());
        for &id in &ids[1..] {
            assert!(table.find(id).is_some());
        }
        assert_eq!(table.len(), 5);
    }

    #[test]
    fn growth_keeps_every_entry_and_its_state() {
        let mut table: Table<Busy> = Table::new();
        for i in 0..1000u64 {
            let pos = table.insert([i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i], i);
            table.slot_mut(pos).state.busy = i % 3 == 0;
            table.slot_mut(pos).set_lent(i % 7 == 0);
        }
        assert_eq!(table.len(), 1000);
        assert!(table.capacity() >= 1000 * 4 / 3);
        for i in 0..1000u64 {
            let slot = table.slot(
                table
                    .find([i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i])
                    .unwrap(),
            );
            assert_eq!(
                (slot.state.busy, slot.lent(), slot.last_use()),
                (i % 3 == 0, i % 7 == 0, i)
            );
        }
        // Only keys neither busy nor lent go; every one of them.
        let resting = (0..1000u64).filter(|i| i % 3 != 0 && i % 7 != 0).count() as u64;
        assert_eq!(table.sweep(&(), 10_000, 1), resting);
        assert_eq!(table.len() as u64, 1000 - resting);
    }

    #[test]
    fn eviction_takes_the_least_recently_used_key_at_rest_of_a_small_table() {
        let mut table: Table<Busy> = Table::new();
        for i in 0..10u64 {
            table.insert([i * 0x1234_5678_9abc_def1, i], 100 - i);
        }
        // Key 9 was used first (at 91) but is busy; key 8 (at 92) is lent.
        let busy = table.find([9 * 0x1234_5678_9abc_def1, 9]).unwrap();
        table.slot_mut(busy).state.busy = true;
        let lent = table.find([8 * 0x1234_5678_9abc_def1, 8]).unwrap();
        table.slot_mut(lent).set_lent(true);
        assert_eq!(table.evict(&(), 200, 1000), Some(Removed::Evicted));
        assert_eq!(table.find([7 * 0x1234_5678_9abc_def1, 7]), None);
        assert_eq!(table.len(), 9);
        // Idle past the idle time: counted as expired.
        assert_eq!(table.evict(&(), 200, 10), Some(Removed::Expired));
        assert_eq!(table.find([6 * 0x1234_5678_9abc_def1, 6]), None);
    }

    #[test]
    fn nothing_at_rest_nothing_evicted() {
        let mut table: Table<Busy> = Table::new();
        for i in 0..5u64 {
            let pos = table.insert([i, i], 0);
            table.slot_mut(pos).state.busy = true;
        }
        assert_eq!(table.evict(&(), 100, 1), None);
        assert_eq!(table.expire(&(), 100, 1, 64), 0);
        assert_eq!(table.len(), 5);
    }

    #[test]
    fn the_hand_expires_every_idle_key_in_one_turn() {
        let mut table: Table<Busy> = Table::new();
        for i in 0..300u64 {
            table.insert([i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i], 0);
        }
        let busy = table
            .find([7u64.wrapping_mul(0x9e37_79b9_7f4a_7c15), 7])
            .unwrap();
        table.slot_mut(busy).state.busy = true;
        table.hand = 5; // a turn that starts and ends mid-table
        let slots = table.capacity();
        let removed: u64 = (0..slots / 8).map(|_| table.expire(&(), 10, 5, 8)).sum();
        assert_eq!(removed, 299);
        assert_eq!(table.len(), 1);
        assert!(table
            .find([7u64.wrapping_mul(0x9e37_79b9_7f4a_7c15), 7])
            .is_some());
    }

    /// Identities spread over the table as hashing would spread them (fixed: the test is
    /// deterministic).
    fn spread(i: u64) -> [u64; 2] {
        [i.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17), i]
    }

    #[test]
    fn eviction_takes_the_oldest_key_at_rest_among_the_sample_after_the_hand() {
        let mut table: Table<Busy> = Table::new();
        for i in 0..500u64 {
            // Used at scattered times; every third key busy, every seventh lent.
            let pos = table.insert(spread(i), (i * 7919) % 1000);
            table.slot_mut(pos).state.busy = i % 3 == 0;
            table.slot_mut(pos).set_lent(i % 7 == 0);
        }
        for start in [0, 17, table.capacity() - 5] {
            table.hand = start;
            // The model: the first EVICTION_SAMPLE keys from the hand, in slot order.
            let mask = table.capacity() - 1;
            let sample: Vec<usize> = (0..table.capacity())
                .map(|step| (start + step) & mask)
                .filter(|&pos| table.slot(pos).used())
                .take(EVICTION_SAMPLE as usize)
                .collect();
            let want = sample
                .iter()
                .filter(|&&pos| table.slot(pos).removable(&(), 2000))
                .min_by_key(|&&pos| table.slot(pos).last_use())
                .map(|&pos| table.slot(pos).id)
                .expect("a key at rest in the sample");
            let len = table.len();
            assert_eq!(table.evict(&(), 2000, 5000), Some(Removed::Evicted));
            assert_eq!(table.find(want), None, "hand at {start}");
            assert_eq!(table.len(), len - 1);
            // The hand moved past the sample.
            assert_eq!(table.hand, (sample[sample.len() - 1] + 1) & mask);
        }
    }

    #[test]
    fn eviction_looks_beyond_the_sample_for_a_key_at_rest() {
        let mut table: Table<Busy> = Table::new();
        for i in 0..200u64 {
            let pos = table.insert(spread(i), i);
            table.slot_mut(pos).state.busy = i != 150;
        }
        // Only one key is at rest: found within MAX_WALK keys from wherever the hand is.
        let mask = table.capacity() - 1;
        let at = table.find(spread(150)).unwrap();
        table.hand = (at + table.capacity() - 40) & mask;
        assert_eq!(table.evict(&(), 1000, 5000), Some(Removed::Evicted));
        assert_eq!(table.find(spread(150)), None);
        // None left: each attempt looks at MAX_WALK keys and moves on.
        assert_eq!(table.evict(&(), 1000, 5000), None);
        assert_eq!(table.len(), 199);
    }
}
