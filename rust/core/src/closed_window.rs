//! A closed breaker's count-based window without a lock, for windows of at most
//! [`MAX_LOCK_FREE_CALLS`] calls.
//!
//! Two parts:
//! - [`Tally`], 32 bits that live in the breaker's state word while it is closed: the next
//!   place in the ring, its lap, whether the ring is full, and the window's failures and slow
//!   calls. A call is recorded by one compare-and-swap of the state word that moves the tally
//!   on (the new call in, the call it replaces out), so the window's totals are exactly those
//!   of the last `n` calls in the order of their swaps, the trip test reads a state some order
//!   of the calls produced, a transition can only win against the tally it was decided on, and
//!   a call of an earlier generation (state) cannot count: the generation is in the same word.
//! - [`Slots`], the ring: each place holds the flags of the call that took it, so that the
//!   call taking it one lap later knows what leaves the window. A place is written after the
//!   swap that took it, stamped with the generation and the lap; a write whose generation has
//!   ended (its breaker tripped, or was reset, in between) is refused by a compare-and-swap that
//!   checks the state word after reading the place, so it can never overwrite a place of a
//!   later window. A call that finds its place not yet written by the call one lap ahead
//!   waits for that write (a few instructions away, unless that thread is preempted between
//!   its swap and its write: `n` calls recorded meanwhile); nothing else waits.

use crate::sync::{AtomicU64, Ordering};

/// Largest count-based window recorded without a lock (larger ones, and time-based windows,
/// keep the breaker's mutex): its position and totals take 10 bits each in the tally.
pub const MAX_LOCK_FREE_CALLS: u32 = (1 << COUNT_BITS) - 1;

/// A recorded call failed.
pub(crate) const FAILED: u8 = 1;
/// A recorded call was slow.
pub(crate) const SLOW: u8 = 2;

const COUNT_BITS: u32 = 10;
const COUNT_MASK: u32 = (1 << COUNT_BITS) - 1;
const LAP_BIT: u32 = 1 << COUNT_BITS;
const FULL_BIT: u32 = LAP_BIT << 1;
const FAILURES_SHIFT: u32 = COUNT_BITS + 2;
const SLOW_SHIFT: u32 = FAILURES_SHIFT + COUNT_BITS;

/// Where the ring is and what the window holds: place (10 bits) | lap (1) | full (1) |
/// failures (10) | slow (10). Zero is an empty window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Tally(pub(crate) u32);

impl Tally {
    /// The place the next call takes.
    fn place(self) -> usize {
        (self.0 & COUNT_MASK) as usize
    }
    /// The parity of the lap the next call is in (flips each time the ring wraps).
    fn lap(self) -> u64 {
        u64::from(self.0 & LAP_BIT != 0)
    }
    fn full(self) -> bool {
        self.0 & FULL_BIT != 0
    }
    pub(crate) fn failures(self) -> u64 {
        u64::from((self.0 >> FAILURES_SHIFT) & COUNT_MASK)
    }
    pub(crate) fn slow(self) -> u64 {
        u64::from(self.0 >> SLOW_SHIFT)
    }
    /// Calls in a window of `n`.
    pub(crate) fn calls(self, n: u32) -> u64 {
        if self.full() {
            u64::from(n)
        } else {
            self.place() as u64
        }
    }

    /// The tally after one more call with `flags`, replacing a call with `evicted` (0 while the
    /// ring is not full), in a window of `n <= MAX_LOCK_FREE_CALLS`.
    pub(crate) fn push(self, n: u32, evicted: u8, flags: u8) -> Self {
        let bit = |f: u8, b: u8| u32::from(f & b != 0);
        // Each total stays in 0..=n: the evicted call was counted in it.
        let failures =
            ((self.0 >> FAILURES_SHIFT) & COUNT_MASK) + bit(flags, FAILED) - bit(evicted, FAILED);
        let slow = (self.0 >> SLOW_SHIFT) + bit(flags, SLOW) - bit(evicted, SLOW);
        let mut ring = self.0 & (COUNT_MASK | LAP_BIT | FULL_BIT);
        ring += 1;
        if ring & COUNT_MASK == n {
            // Back to place 0 on the other lap, full from now on.
            ring = ((ring & LAP_BIT) ^ LAP_BIT) | FULL_BIT;
        }
        Self(ring | (failures << FAILURES_SHIFT) | (slow << SLOW_SHIFT))
    }
}

// A place: written (bit 63) | generation (30 bits) | lap (1) | flags (2).
const WRITTEN: u64 = 1 << 63;
const STAMP_SHIFT: u32 = 2;
const FLAGS_MASK: u64 = 0b11;

fn stamp(gen: u64, lap: u64) -> u64 {
    WRITTEN | (gen << (STAMP_SHIFT + 1)) | (lap << STAMP_SHIFT)
}

/// What a call must do before its swap: replace a call with these flags, or wait for the call
/// one lap ahead to write its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Evicts {
    Flags(u8),
    NotYetWritten,
}

/// The ring of a lock-free window: one word per place.
#[derive(Debug)]
pub(crate) struct Slots {
    places: Box<[AtomicU64]>,
}

impl Slots {
    pub(crate) fn new(n: u32) -> Self {
        Self {
            places: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The window's size.
    pub(crate) fn calls(&self) -> u32 {
        self.places.len() as u32
    }

    /// What the call at `tally` of generation `gen` replaces. While the ring is not full, no
    /// call. Once full, the one that took the same place a lap earlier, whose write is the only
    /// one with the previous lap's stamp: the place's later writes all come after this call's
    /// swap (the next lap's call swaps after this one), and a write two laps back has the other
    /// parity (the previous lap's call waited for it before its swap, which this call's read of
    /// the state word follows: acquire/release).
    pub(crate) fn evicts(&self, gen: u64, tally: Tally) -> Evicts {
        if !tally.full() {
            return Evicts::Flags(0);
        }
        let place = self.places[tally.place()].load(Ordering::Acquire);
        if place & !FLAGS_MASK == stamp(gen, tally.lap() ^ 1) {
            Evicts::Flags((place & FLAGS_MASK) as u8)
        } else {
            Evicts::NotYetWritten
        }
    }

    /// Writes the flags of the call whose swap moved the window from `tally`, unless its
    /// generation has ended: `live()` reads the state word. The check comes after the read of
    /// the place and before the compare-and-swap, so a write that lands was checked while no
    /// other write came in between; a write of a later generation only happens once the state
    /// word has left `gen`, and the check then refuses (a read that sees that later write
    /// synchronises with it, so the state word it then reads is past `gen` too).
    pub(crate) fn write(&self, gen: u64, tally: Tally, flags: u8, live: impl Fn() -> bool) {
        let slot = &self.places[tally.place()];
        let value = stamp(gen, tally.lap()) | u64::from(flags);
        let mut current = slot.load(Ordering::Acquire);
        loop {
            if !live() {
                return;
            }
            match slot.compare_exchange_weak(current, value, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }
}

/// Lets another thread run while a call waits for a place to be written (loom needs to be told
/// that this loop waits on another thread).
pub(crate) fn wait_for_writer() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn push_all(n: u32, calls: &[u8]) -> Tally {
        // A single thread: each call evicts the flags `n` calls back.
        calls
            .iter()
            .enumerate()
            .fold(Tally::default(), |t, (i, &f)| {
                let evicted = if i >= n as usize {
                    calls[i - n as usize]
                } else {
                    0
                };
                t.push(n, evicted, f)
            })
    }

    #[test]
    fn tally_counts_the_last_n_calls() {
        let calls = [FAILED, 0, SLOW, FAILED | SLOW, 0, FAILED, 0, 0, SLOW];
        for n in 1..=calls.len() as u32 + 2 {
            for len in 0..=calls.len() {
                let t = push_all(n, &calls[..len]);
                let window = &calls[len.saturating_sub(n as usize)..len];
                let count = |b: u8| window.iter().filter(|&&f| f & b != 0).count() as u64;
                assert_eq!(t.calls(n), window.len() as u64, "n={n} len={len}");
                assert_eq!((t.failures(), t.slow()), (count(FAILED), count(SLOW)));
                assert_eq!(t.place(), len % n as usize);
                assert_eq!(t.lap(), (len / n as usize % 2) as u64);
            }
        }
    }

    #[test]
    fn tally_holds_the_largest_window_full_of_failures() {
        let n = MAX_LOCK_FREE_CALLS;
        let mut t = Tally::default();
        for _ in 0..2 * n + 1 {
            let evicted = if t.full() { FAILED | SLOW } else { 0 };
            t = t.push(n, evicted, FAILED | SLOW);
        }
        assert_eq!(
            (t.calls(n), t.failures(), t.slow()),
            (u64::from(n), u64::from(n), u64::from(n))
        );
        assert_eq!(t.place(), 1);
    }

    #[test]
    fn a_full_ring_reads_the_previous_laps_write_only() {
        let slots = Slots::new(2);
        let gen = 5;
        // Lap 0 fills both places; the first call of lap 1 waits until place 0 is written.
        let t0 = Tally::default();
        let t1 = t0.push(2, 0, FAILED);
        let t2 = t1.push(2, 0, 0);
        assert_eq!(slots.evicts(gen, t2), Evicts::NotYetWritten);
        slots.write(gen, t0, FAILED, || true);
        assert_eq!(slots.evicts(gen, t2), Evicts::Flags(FAILED));
        // A write of another generation in that place is not the previous lap's.
        slots.write(gen + 1, t0, 0, || true);
        assert_eq!(slots.evicts(gen, t2), Evicts::NotYetWritten);
        // Nor is a write of the same lap as the caller (two laps back).
        slots.write(gen, t2, SLOW, || true);
        assert_eq!(slots.evicts(gen, t2), Evicts::NotYetWritten);
        // An empty ring evicts nothing and reads no place.
        assert_eq!(slots.evicts(gen, t1), Evicts::Flags(0));
    }

    #[test]
    fn a_write_of_an_ended_generation_is_refused() {
        let slots = Slots::new(1);
        let t0 = Tally::default();
        let full = t0.push(1, 0, 0);
        slots.write(7, t0, FAILED, || true);
        // The generation ended before the late write: the place keeps the later one.
        slots.write(6, t0, 0, || false);
        assert_eq!(slots.evicts(7, full), Evicts::Flags(FAILED));
    }
}
