//! Wait-time histogram: how long admitted requests waited, in fixed log-spaced buckets.
//!
//! # Buckets
//! Upper bounds (inclusive, Prometheus `le`) follow the 1-2-5 series from 1 µs to 100 s, after a
//! first bucket for exactly zero: `0, 1µs, 2µs, 5µs, 10µs, 20µs, 50µs, …, 10s, 20s, 50s, 100s`,
//! then `+Inf`: 26 finite bounds, 27 buckets ([`WAIT_BOUNDS_NS`]). Neighbouring bounds are a
//! factor 2 or 2.5 apart (log-spaced, so the relative resolution is the same at every scale),
//! and every bound is a round number, so dashboards and queries can name them
//! (`le="0.1"`, `le="1"`). The `0` bucket holds the requests that never waited.
//!
//! # Zero cost on the fast path
//! Nothing here is touched by an immediate admission. Only waiters are observed, on their slow
//! path; a snapshot then reports the admissions nobody observed (`admitted − observed`) as
//! zero waits, so the histogram's count equals the primitive's `admitted` counter without a
//! single extra write per admission.
//!
//! # Consistency
//! Bucket updates are lock-free relaxed atomic adds ([`WaitHistogram::observe`]). A waited
//! admission is two updates, though: its bucket and the primitive's `admitted` counter. A
//! snapshot that saw one without the other would report a zero wait that later moves to its
//! real bucket, and a cumulative bucket that goes down reads as a counter reset to Prometheus.
//! So [`WaitHistogram::observe_admission`] makes both updates under a small mutex that only
//! waited admissions and snapshots take (never the fast path); a snapshot then sees every
//! waited admission whole or not at all, and every cumulative bucket only ever grows.

use crate::padded::CachePadded;
use crate::sync::{AtomicU64, Mutex, Ordering};

/// Inclusive upper bounds of the finite buckets, in nanoseconds (see the module docs).
pub const WAIT_BOUNDS_NS: [u64; 26] = [
    0,
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
    2_000_000_000,
    5_000_000_000,
    10_000_000_000,
    20_000_000_000,
    50_000_000_000,
    100_000_000_000,
];

/// Number of buckets: one per finite bound, plus the overflow (`+Inf`) bucket.
pub const WAIT_BUCKETS: usize = WAIT_BOUNDS_NS.len() + 1;

/// Index of the bucket a wait of `ns` falls in: the first bound `>= ns`, or the overflow.
#[inline]
pub fn bucket_of(ns: u64) -> usize {
    WAIT_BOUNDS_NS.partition_point(|&bound| bound < ns)
}

#[derive(Debug)]
struct Inner {
    counts: [AtomicU64; WAIT_BUCKETS],
    sum_ns: AtomicU64,
    /// Pairs a waited admission's two updates against snapshots (see the module docs).
    pair: Mutex<()>,
}

/// A lock-free histogram of wait times, on its own cache lines.
#[derive(Debug)]
pub struct WaitHistogram(CachePadded<Inner>);

impl Default for WaitHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// A copy of a histogram at one instant. `counts[i]` is the number of waits in bucket `i`
/// (not cumulative; see [`HistogramSnapshot::cumulative`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub counts: [u64; WAIT_BUCKETS],
    /// Sum of all waits, in nanoseconds (wraps after 584 years of accumulated waiting).
    pub sum_ns: u64,
}

impl Default for HistogramSnapshot {
    fn default() -> Self {
        Self {
            counts: [0; WAIT_BUCKETS],
            sum_ns: 0,
        }
    }
}

impl HistogramSnapshot {
    /// A histogram of `admitted` requests that none of which waited.
    pub fn immediate(admitted: u64) -> Self {
        let mut s = Self::default();
        s.counts[0] = admitted;
        s
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `counts` summed from the first bucket: entry `i` is the number of waits `<= bound i`
    /// (the last entry, `+Inf`, is the count).
    pub fn cumulative(&self) -> [u64; WAIT_BUCKETS] {
        let mut out = self.counts;
        for i in 1..WAIT_BUCKETS {
            out[i] += out[i - 1];
        }
        out
    }

    /// Adds `other`'s observations to this one.
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.wrapping_add(other.sum_ns);
    }
}

impl WaitHistogram {
    pub fn new() -> Self {
        Self(CachePadded::new(Inner {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
            pair: Mutex::new(()),
        }))
    }

    /// Records one wait of `ns` nanoseconds. Lock-free: two relaxed adds.
    ///
    /// Use [`WaitHistogram::observe_admission`] for a wait that ends in an admission, so that
    /// snapshots stay consistent with the admitted counter.
    #[inline]
    pub fn observe(&self, ns: u64) {
        self.0.counts[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.0.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Records an admission that waited `ns`: `admit` counts it in the primitive's counters,
    /// and a concurrent [`WaitHistogram::snapshot`] sees the wait and the count together or
    /// neither. Slow path only (it takes a mutex for a few nanoseconds).
    pub fn observe_admission(&self, ns: u64, admit: impl FnOnce()) {
        let _pair = self.0.pair.lock().unwrap_or_else(|p| p.into_inner());
        self.observe(ns);
        admit();
    }

    /// The observed waits only, without the unobserved admissions.
    pub fn observed(&self) -> HistogramSnapshot {
        let mut s = HistogramSnapshot::default();
        for (out, c) in s.counts.iter_mut().zip(self.0.counts.iter()) {
            *out = c.load(Ordering::Relaxed);
        }
        s.sum_ns = self.0.sum_ns.load(Ordering::Relaxed);
        s
    }

    /// Every admission's wait: the observed ones, plus `admitted() − observed` zero waits (the
    /// admissions that never waited, which nobody observes). `admitted` reads the primitive's
    /// admitted counter; it is called while waited admissions are held off, so the result is
    /// consistent and, from one snapshot to the next, no cumulative bucket ever decreases.
    pub fn snapshot(&self, admitted: impl FnOnce() -> u64) -> HistogramSnapshot {
        let _pair = self.0.pair.lock().unwrap_or_else(|p| p.into_inner());
        let admitted = admitted();
        let mut s = self.observed();
        s.counts[0] += admitted.saturating_sub(s.count());
        s
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn bounds_are_increasing_and_round() {
        assert!(WAIT_BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(WAIT_BOUNDS_NS[1], 1_000, "first non-zero bound is 1 µs");
        assert_eq!(
            *WAIT_BOUNDS_NS.last().unwrap(),
            100_000_000_000,
            "last is 100 s"
        );
        for &b in &WAIT_BOUNDS_NS[1..] {
            let mut m = b;
            while m % 10 == 0 {
                m /= 10;
            }
            assert!(matches!(m, 1 | 2 | 5), "{b} is not on the 1-2-5 series");
        }
    }

    #[test]
    fn bucket_of_is_inclusive_of_the_upper_bound() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 1);
        assert_eq!(bucket_of(1_000), 1);
        assert_eq!(bucket_of(1_001), 2);
        assert_eq!(bucket_of(2_000), 2);
        assert_eq!(bucket_of(2_001), 3);
        assert_eq!(bucket_of(999_999_999), 19);
        assert_eq!(bucket_of(1_000_000_000), 19);
        assert_eq!(bucket_of(100_000_000_000), 25);
        assert_eq!(bucket_of(100_000_000_001), 26);
        assert_eq!(bucket_of(u64::MAX), WAIT_BUCKETS - 1);
        // Every bound lands in its own bucket, and one past it in the next.
        for (i, &b) in WAIT_BOUNDS_NS.iter().enumerate() {
            assert_eq!(bucket_of(b), i);
            assert_eq!(bucket_of(b + 1), i + 1);
        }
    }

    #[test]
    fn observe_sums_and_counts() {
        let h = WaitHistogram::new();
        h.observe(0);
        h.observe(1_500);
        h.observe(1_500);
        h.observe(3_000_000_000);
        h.observe(u64::MAX / 4);
        let s = h.observed();
        assert_eq!(s.count(), 5);
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[2], 2);
        assert_eq!(s.counts[bucket_of(3_000_000_000)], 1);
        assert_eq!(s.counts[WAIT_BUCKETS - 1], 1);
        assert_eq!(s.sum_ns, 3_000 + 3_000_000_000 + u64::MAX / 4);
        let c = s.cumulative();
        assert_eq!(c[0], 1);
        assert_eq!(c[2], 3);
        assert_eq!(c[WAIT_BUCKETS - 1], 5);
        assert!(c.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn unobserved_admissions_are_zero_waits() {
        let h = WaitHistogram::new();
        h.observe_admission(5_000, || {});
        let s = h.snapshot(|| 10);
        assert_eq!(s.count(), 10);
        assert_eq!(s.counts[0], 9);
        assert_eq!(s.counts[bucket_of(5_000)], 1);
        assert_eq!(s.sum_ns, 5_000);
        // Fewer admissions than observations (an observe() not paired with one): no underflow.
        h.observe(1);
        assert_eq!(h.snapshot(|| 0).count(), 2);
        assert_eq!(HistogramSnapshot::immediate(7).count(), 7);
    }

    #[test]
    fn merge_adds_buckets_and_sums() {
        let mut a = HistogramSnapshot::immediate(2);
        let h = WaitHistogram::new();
        h.observe(10_000);
        a.merge(&h.observed());
        assert_eq!(a.count(), 3);
        assert_eq!(a.sum_ns, 10_000);
    }

    #[test]
    fn threads_lose_no_observation_and_snapshots_never_go_down() {
        use std::sync::atomic::AtomicU64 as StdAtomic;
        let h = Arc::new(WaitHistogram::new());
        let admitted = Arc::new(StdAtomic::new(0));
        let writers: Vec<_> = (0..4u64)
            .map(|t| {
                let (h, admitted) = (h.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        if i % 3 == 0 {
                            // A waiter: observed together with its admission.
                            h.observe_admission(t * 1_000_000 + i, || {
                                admitted.fetch_add(1, Ordering::Relaxed);
                            });
                        } else {
                            // An immediate admission: counted, never observed.
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        let mut last = [0u64; WAIT_BUCKETS];
        while writers.iter().any(|w| !w.is_finished()) {
            let c = h.snapshot(|| admitted.load(Ordering::Relaxed)).cumulative();
            for i in 0..WAIT_BUCKETS {
                assert!(
                    c[i] >= last[i],
                    "bucket {i} went down: {} -> {}",
                    last[i],
                    c[i]
                );
            }
            last = c;
        }
        for w in writers {
            w.join().unwrap();
        }
        let s = h.snapshot(|| admitted.load(Ordering::Relaxed));
        assert_eq!(s.count(), 80_000);
        let waited: u64 = (0..4u64)
            .map(|t| {
                (0..20_000u64)
                    .filter(|i| i % 3 == 0)
                    .map(|i| t * 1_000_000 + i)
                    .sum::<u64>()
            })
            .sum();
        assert_eq!(s.sum_ns, waited);
        assert_eq!(h.observed().count(), 4 * 6_667);
    }
}
