//! The final figures of primitives dropped since the exporter last looked, so that exported
//! counters never go down when a primitive is dropped.
//!
//! Metrics aggregate primitives by `(kind, name)` (all unnamed ones of a kind share a series).
//! When one of them is dropped its counts would vanish from the sum, which a scraper reads as
//! a counter reset. While retiring is enabled (a metrics exporter is installed), a dropped
//! primitive adds its final counters and wait histogram here, keyed by `(kind, name)`; the
//! Python layer drains them at each scrape into its running totals, which it keeps for a
//! bounded time and number of names (`admission.metrics.retired`). Disabled (the default),
//! [`retire`] is one relaxed load.
//!
//! Between two drains this buffer holds at most `max_keys` distinct keys: the figures of a
//! primitive whose key is not among them are discarded and counted, so that a process whose
//! dynamic names are never scraped keeps bounded memory. The count is reported by [`drain`].
//!
//! Process-wide exporter state: it lives in the bindings, not in the pure core.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use admission_core::{Counters, CountersSnapshot, HistogramSnapshot};
use pyo3::prelude::*;

use crate::rate::counters_tuple;

/// What the dropped primitives of one `(kind, name)` added up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Retired {
    pub counters: CountersSnapshot,
    pub waits: HistogramSnapshot,
}

impl Retired {
    fn add(&mut self, counters: &CountersSnapshot, waits: &HistogramSnapshot) {
        add_counters(&mut self.counters, counters);
        self.waits.merge(waits);
    }
}

/// Adds `other`'s counts to `sum`.
pub fn add_counters(sum: &mut CountersSnapshot, other: &CountersSnapshot) {
    sum.admitted += other.admitted;
    sum.admitted_cost += other.admitted_cost;
    sum.rejected += other.rejected;
    sum.timed_out += other.timed_out;
    sum.cancelled += other.cancelled;
}

type Key = (&'static str, Option<String>);

struct Pending {
    entries: BTreeMap<Key, Retired>,
    max_keys: usize,
    /// Primitives whose figures were discarded since the last drain (`max_keys` reached).
    discarded: u64,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static PENDING: Mutex<Pending> = Mutex::new(Pending {
    entries: BTreeMap::new(),
    max_keys: usize::MAX,
    discarded: 0,
});

fn pending() -> std::sync::MutexGuard<'static, Pending> {
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Called as a primitive is dropped: adds its final figures under `(kind, name)` when a
/// metrics exporter keeps them (see `_track_retired`); only then are they read.
pub fn retire(
    kind: &'static str,
    name: Option<&str>,
    counters: &Counters,
    waits: impl FnOnce() -> HistogramSnapshot,
) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let (counters, waits) = (counters.snapshot(), waits());
    let mut pending = pending();
    let key = (kind, name.map(str::to_owned));
    if let Some(entry) = pending.entries.get_mut(&key) {
        entry.add(&counters, &waits);
    } else if pending.entries.len() < pending.max_keys {
        pending
            .entries
            .entry(key)
            .or_default()
            .add(&counters, &waits);
    } else {
        pending.discarded += 1;
    }
}

/// Starts (or stops) keeping the final counters of dropped primitives for the metrics
/// exporter, so aggregated counters never go down when a primitive is dropped; at most
/// `max_keys` distinct `(kind, name)` are kept between two `_drain_retired` calls.
#[pyfunction]
pub fn _track_retired(enabled: bool, max_keys: usize) {
    pending().max_keys = max_keys;
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// An entry of `_drain_retired`: `(kind, name, counters, histogram counts, sum in ns)`.
type Drained = (
    &'static str,
    Option<String>,
    (u64, u64, u64, u64, u64),
    Vec<u64>,
    u64,
);

/// Takes the primitives dropped since the last call, one entry per (kind, name):
/// `(kind, name, counters, histogram counts, histogram sum in nanoseconds)`; and how many
/// dropped primitives were discarded because `max_keys` names were already kept.
#[pyfunction]
pub fn _drain_retired() -> (Vec<Drained>, u64) {
    let mut pending = pending();
    let entries = std::mem::take(&mut pending.entries);
    let discarded = std::mem::take(&mut pending.discarded);
    drop(pending);
    let entries = entries
        .into_iter()
        .map(|((kind, name), r)| {
            (
                kind,
                name,
                counters_tuple(&r.counters),
                r.waits.counts.to_vec(),
                r.waits.sum_ns,
            )
        })
        .collect();
    (entries, discarded)
}
