//! The final figures of primitives that no longer exist, so that exported counters never go
//! down when a primitive is dropped.
//!
//! Metrics aggregate primitives by `(kind, name)` (all unnamed ones of a kind share a series).
//! When one of them is dropped its counts would vanish from the sum, which a scraper reads as
//! a counter reset. While retiring is enabled (a metrics exporter is installed), a dropped
//! primitive adds its final counters and wait histogram here, keyed by `(kind, name)`; the
//! exporter drains them into its own running totals. Memory is one entry per distinct key.
//! Disabled (the default), [`retire`] is one relaxed load.
//!
//! Process-wide state, on `std` primitives even under loom (no model uses it).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::histogram::HistogramSnapshot;
use crate::stats::CountersSnapshot;

/// What the dropped primitives of one `(kind, name)` added up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retired {
    /// How many primitives were retired into this entry.
    pub primitives: u64,
    pub counters: CountersSnapshot,
    pub waits: HistogramSnapshot,
}

type Key = (&'static str, Option<String>);

static ENABLED: AtomicBool = AtomicBool::new(false);
static RETIRED: Mutex<BTreeMap<Key, Retired>> = Mutex::new(BTreeMap::new());

/// Starts (or stops) keeping the figures of dropped primitives.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Called as a primitive is dropped: adds its final figures under `(kind, name)`, if enabled.
pub fn retire(
    kind: &'static str,
    name: Option<&str>,
    counters: CountersSnapshot,
    waits: HistogramSnapshot,
) {
    if !enabled() {
        return;
    }
    let mut map = RETIRED.lock().unwrap_or_else(|p| p.into_inner());
    let entry = map.entry((kind, name.map(str::to_owned))).or_default();
    entry.primitives += 1;
    let c = &mut entry.counters;
    c.admitted += counters.admitted;
    c.admitted_cost += counters.admitted_cost;
    c.rejected += counters.rejected;
    c.timed_out += counters.timed_out;
    c.cancelled += counters.cancelled;
    entry.waits.merge(&waits);
}

/// Takes every entry retired since the last call.
pub fn drain() -> Vec<(&'static str, Option<String>, Retired)> {
    let map = std::mem::take(&mut *RETIRED.lock().unwrap_or_else(|p| p.into_inner()));
    map.into_iter().map(|((k, n), r)| (k, n, r)).collect()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn retires_only_while_enabled_and_drains_once() {
        let counters = CountersSnapshot {
            admitted: 3,
            admitted_cost: 5,
            rejected: 1,
            timed_out: 0,
            cancelled: 2,
        };
        let waits = HistogramSnapshot::immediate(3);
        // Keys unique to this test: other tests may run in parallel in this process.
        retire("test_kind", Some("off"), counters, waits);
        set_enabled(true);
        retire("test_kind", Some("a"), counters, waits);
        retire("test_kind", Some("a"), counters, waits);
        retire("test_kind", None, counters, waits);
        let drained: Vec<_> = drain().into_iter().filter(|e| e.0 == "test_kind").collect();
        assert_eq!(drained.len(), 2);
        let a = drained
            .iter()
            .find(|e| e.1.as_deref() == Some("a"))
            .unwrap();
        assert_eq!(a.2.primitives, 2);
        assert_eq!(a.2.counters.admitted, 6);
        assert_eq!(a.2.counters.cancelled, 4);
        assert_eq!(a.2.waits.count(), 6);
        assert!(drained.iter().any(|e| e.1.is_none()));
        assert!(!drain().iter().any(|e| e.0 == "test_kind"));
    }
}
