//! The keyed token bucket of the shared-memory store: its table mapped from its own file,
//! keys turned into their 128-bit hash with the table's key. Every decision is
//! `admission_core::shared_keyed`'s.

use std::sync::Arc;

use admission_core::shared_keyed::{Admission, Claimer, KeyTable, KeyedBucket, KeyedTotals};
use admission_core::siphash::SipKey;
use pyo3::prelude::*;

use super::segment::{Kind, Segment};
use super::{describe, gave_up, os, SharedSegment};
use crate::args::{count, count_arg, ns_to_s, real, Arg};
use crate::bucket::default_burst;
use crate::decision::Decision;
use crate::errors;
use crate::keyed::with_key_bytes;

/// `_try_take`'s answer for a new key that found no room.
const NO_ROOM: i64 = -2;

/// The key's hash under `sip`, with the in-process keyed limiters' identity of a key (`42`
/// and `"42"` are one key).
#[inline]
fn key_id(sip: &SipKey, key: &Bound<'_, PyAny>) -> PyResult<[u64; 2]> {
    with_key_bytes(key, |bytes| sip.hash128(bytes))
}

/// A token bucket per key whose table is in shared memory. The public class is
/// `admission.stores.SharedKeyedTokenBucket`.
#[pyclass(frozen, subclass, weakref, module = "admission._native")]
pub struct SharedKeyedTokenBucket {
    core: KeyedBucket,
    table: Arc<Segment>,
    sip: SipKey,
    name: String,
    rate: f64,
    per: f64,
    max_keys: u64,
}

impl SharedKeyedTokenBucket {
    #[inline(always)]
    fn with_table<R>(&self, f: impl FnOnce(&KeyTable<'_>) -> R) -> R {
        let (slots, stripes) = self.table.table();
        f(&KeyTable::new(slots, stripes))
    }

    /// A request at `now` (`None`: the host's clock).
    #[inline(always)]
    fn take(
        &self,
        key: &Bound<'_, PyAny>,
        cost: u64,
        count_refusal: bool,
        now: Option<u64>,
    ) -> PyResult<Admission> {
        let id = key_id(&self.sip, key)?;
        let claimer = Claimer {
            tag: os::own_claim_tag(),
            is_alive: &os::claim_is_alive,
        };
        self.with_table(|t| {
            let now = now.unwrap_or_else(os::host_now_ns);
            self.core
                .try_acquire(t, id, now, cost, count_refusal, claimer)
        })
        .map_err(|e| errors::acquire(key.py(), e))
    }

    fn decide(&self, key: &Bound<'_, PyAny>, cost: u64, now: Option<u64>) -> PyResult<Decision> {
        let id = key_id(&self.sip, key)?;
        let now = now.unwrap_or_else(os::host_now_ns);
        self.with_table(|t| self.core.peek(t, id, now, cost))
            .map(Decision::from)
            .map_err(|e| errors::acquire(key.py(), e))
    }
}

fn taken(admission: Admission) -> i64 {
    match admission {
        Admission::Admitted => 1,
        Admission::Refused => 0,
        Admission::NoRoom => NO_ROOM,
    }
}

#[pymethods]
impl SharedKeyedTokenBucket {
    /// The keyed bucket `name` in this segment, created with this configuration if it is new.
    #[new]
    #[pyo3(signature = (store, name, rate, per, burst=None, max_keys=1_000_000))]
    fn new(
        py: Python<'_>,
        store: &Bound<'_, SharedSegment>,
        name: String,
        rate: &Bound<'_, PyAny>,
        per: &Bound<'_, PyAny>,
        burst: Option<&Bound<'_, PyAny>>,
        max_keys: u64,
    ) -> PyResult<Self> {
        let rate = real("rate", rate)?;
        let per = real("per", per)?;
        let burst = count("burst", burst, default_burst(rate))?;
        let core = KeyedBucket::new(rate, per, burst).map_err(errors::config)?;
        KeyTable::slots_for(max_keys).map_err(errors::config)?;
        let config = [
            core.emission_ns(),
            burst,
            rate.to_bits(),
            per.to_bits(),
            max_keys,
        ];
        let segment = store.get();
        let slot = segment
            .segment
            .slot(&name, Kind::KeyedTokenBucket, config, describe)?;
        let table = segment.table(py, slot, max_keys)?;
        let [k0, k1] = table.table_key();
        Ok(Self {
            core,
            table,
            sip: SipKey::new(k0, k1),
            name,
            rate,
            per,
            max_keys,
        })
    }

    /// Admits `cost` for `key` now if it fits (in every process sharing the bucket); never
    /// waits. A new key that finds no room is refused.
    #[pyo3(signature = (key, cost=Arg::OMITTED), text_signature = "($self, key, cost=1)")]
    fn try_acquire(&self, key: &Bound<'_, PyAny>, cost: Arg<'_, '_>) -> PyResult<bool> {
        let cost = count_arg("cost", cost, 1)?;
        Ok(self.take(key, cost, true, None)? == Admission::Admitted)
    }

    /// `try_acquire` for a waiting caller: 1 admitted, 0 refused (not counted: its wait is,
    /// once), -2 a new key that found no room (counted: the attempt ends).
    fn _try_take(&self, key: &Bound<'_, PyAny>, cost: u64) -> PyResult<i64> {
        Ok(taken(self.take(key, cost, false, None)?))
    }

    /// What `try_acquire(key, cost)` would decide now, without consuming anything.
    #[pyo3(signature = (key, cost=Arg::OMITTED), text_signature = "($self, key, cost=1)")]
    fn peek(&self, key: &Bound<'_, PyAny>, cost: Arg<'_, '_>) -> PyResult<Decision> {
        self.decide(key, count_arg("cost", cost, 1)?, None)
    }

    /// For tests: `try_acquire` (answered as `_try_take`), `peek` and `len` at `now_ns` on
    /// a clock of the test's own (a table is then used on that clock only).
    fn _try_acquire_at(&self, key: &Bound<'_, PyAny>, cost: u64, now_ns: u64) -> PyResult<i64> {
        Ok(taken(self.take(key, cost, true, Some(now_ns))?))
    }

    fn _peek_at(&self, key: &Bound<'_, PyAny>, cost: u64, now_ns: u64) -> PyResult<Decision> {
        self.decide(key, cost, Some(now_ns))
    }

    fn _len_at(&self, now_ns: u64) -> usize {
        self.with_table(|t| t.len(now_ns))
    }

    /// Counts a wait that ended without admission (timed out, or cancelled).
    fn _gave_up(&self, timed_out: bool) {
        self.with_table(|t| KeyedBucket::gave_up(t, gave_up(timed_out)));
    }

    /// Host-wide `(admitted, admitted_cost, rejected, timed_out, cancelled, expired,
    /// refused_full)`.
    fn _counters(&self) -> KeyedTotals {
        self.with_table(|t| t.totals())
    }

    /// Keys whose bucket is not full now, in every process (a scan of the whole table).
    fn __len__(&self) -> usize {
        self.with_table(|t| t.len(os::host_now_ns()))
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    #[getter]
    fn rate(&self) -> f64 {
        self.rate
    }

    #[getter]
    fn per(&self) -> f64 {
        self.per
    }

    #[getter]
    fn burst(&self) -> u64 {
        self.core.burst()
    }

    /// Keys whose buckets are not full that the table holds (fixed when it was created).
    #[getter]
    fn max_keys(&self) -> u64 {
        self.max_keys
    }

    /// Slots of the table (twice `max_keys`, a power of two; 32 bytes each).
    #[getter]
    fn capacity(&self) -> usize {
        self.with_table(|t| t.capacity())
    }

    /// Seconds per token, as used internally (rounded up to whole nanoseconds).
    #[getter]
    fn emission_interval(&self) -> f64 {
        ns_to_s(self.core.emission_ns())
    }
}
