//! The shared-memory store's native half: a segment mapped by every process of the host
//! (`segment`), the OS calls it needs (`os`), and the three limiters whose state lives in it
//! (a keyed bucket's table in a file of its own, `keyed`).
//! Every decision is `admission_core::shared`'s; this module maps memory and converts
//! arguments. Linux only (`/dev/shm`, `/proc`, futex).

mod keyed;
mod os;
mod segment;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use admission_core::shared::{
    BucketWords, GaveUp, SemaphoreWords, SharedBucket, SharedCounts, SharedSemaphore as Lease,
};
use admission_core::shared_keyed::KeyTable;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::args::{count, count_arg, ns_to_s, real, Arg};
use crate::bucket::default_burst;
use crate::decision::Decision;
use crate::errors;
use segment::{Config, Kind, Segment};

pub use keyed::SharedKeyedTokenBucket;
pub use os::init;

/// How long a sleeping waiter goes without looking for holders that died: the bound on how
/// late it learns that a killed process's permits are free again (a release wakes it at once).
const RECLAIM_EVERY: Duration = Duration::from_millis(10);

fn describe(kind: Kind, config: &Config) -> String {
    match kind {
        Kind::TokenBucket => format!(
            "TokenBucket(rate={}, per={}, burst={})",
            f64::from_bits(config[2]),
            f64::from_bits(config[3]),
            config[1]
        ),
        Kind::Semaphore => format!("Semaphore({})", config[0]),
        Kind::KeyedTokenBucket => format!(
            "KeyedTokenBucket(rate={}, per={}, burst={}, max_keys={})",
            f64::from_bits(config[2]),
            f64::from_bits(config[3]),
            config[1],
            config[4]
        ),
    }
}

fn gave_up(timed_out: bool) -> GaveUp {
    if timed_out {
        GaveUp::TimedOut
    } else {
        GaveUp::Cancelled
    }
}

/// A named segment of shared memory holding limiters that every process opening it shares.
/// The public class is `admission.stores.SharedMemory`.
#[pyclass(frozen, subclass, module = "admission._native")]
pub struct SharedSegment {
    segment: Arc<Segment>,
    mode: u32,
    /// The keyed limiters' tables this process mapped, by slot: one mapping each.
    tables: Mutex<HashMap<usize, Arc<Segment>>>,
}

impl SharedSegment {
    /// The table of the keyed limiter in `slot` (`max_keys` from its configuration), mapped
    /// once per process, created if it does not exist yet.
    fn table(&self, py: Python<'_>, slot: usize, max_keys: u64) -> PyResult<Arc<Segment>> {
        let slots = KeyTable::slots_for(max_keys).map_err(errors::config)?;
        let mut tables = self.tables.lock().expect("no panic while mapping");
        if let Some(table) = tables.get(&slot) {
            return Ok(Arc::clone(table));
        }
        let table = py.detach(|| self.segment.open_table(slot, slots, self.mode))?;
        let table = Arc::new(table);
        tables.insert(slot, Arc::clone(&table));
        Ok(table)
    }
}

#[pymethods]
impl SharedSegment {
    #[new]
    #[pyo3(signature = (path, capacity, mode))]
    fn new(py: Python<'_>, path: PathBuf, capacity: usize, mode: u32) -> PyResult<Self> {
        if !(1..=65_536).contains(&capacity) {
            return Err(PyValueError::new_err(format!(
                "capacity must be between 1 and 65536 limiters, got {capacity}"
            )));
        }
        let segment = py.detach(|| Segment::open(path, capacity, mode))?;
        Ok(Self {
            segment: Arc::new(segment),
            mode,
            tables: Mutex::new(HashMap::new()),
        })
    }

    /// The segment's file.
    #[getter]
    fn path(&self) -> PathBuf {
        self.segment.path.clone()
    }

    /// How many limiters the segment can hold (fixed when it was created).
    #[getter]
    fn capacity(&self) -> usize {
        self.segment.capacity()
    }

    /// `(kind, name, limit fields, counters, in_use, (expired, refused_full))` of every
    /// limiter in the segment, read from the shared words: the whole host's figures. A keyed
    /// bucket's `in_use` is its keys whose bucket is not full (a scan of its table).
    #[allow(clippy::type_complexity)]
    fn _limiters(
        &self,
        py: Python<'_>,
    ) -> PyResult<
        Vec<(
            &'static str,
            String,
            Vec<f64>,
            SharedCounts,
            u64,
            (u64, u64),
        )>,
    > {
        let rate = |config: &Config| {
            vec![
                f64::from_bits(config[2]),
                f64::from_bits(config[3]),
                config[1] as f64,
            ]
        };
        self.segment
            .slots()
            .into_iter()
            .map(|(slot, kind, name, config)| {
                Ok(match kind {
                    Kind::TokenBucket => {
                        let words = self.segment.words::<BucketWords>(slot);
                        let counts = SharedBucket::counts(words);
                        (kind.name(), name, rate(&config), counts, 0, (0, 0))
                    }
                    Kind::Semaphore => {
                        let words = self.segment.words::<SemaphoreWords>(slot);
                        let fields = vec![config[0] as f64];
                        let in_use = Lease::in_use(words);
                        (
                            kind.name(),
                            name,
                            fields,
                            Lease::counts(words),
                            in_use,
                            (0, 0),
                        )
                    }
                    Kind::KeyedTokenBucket => {
                        let table = self.table(py, slot, config[4])?;
                        let (slots, stripes) = table.table();
                        let table = KeyTable::new(slots, stripes);
                        let t = table.totals();
                        let mut fields = rate(&config);
                        fields.push(config[4] as f64);
                        let keys = table.len(os::host_now_ns()) as u64;
                        let counts = (t.0, t.1, t.2, t.3, t.4);
                        (kind.name(), name, fields, counts, keys, (t.5, t.6))
                    }
                })
            })
            .collect()
    }

    /// The files of this segment's keyed limiters' tables (removed with the segment).
    fn _table_paths(&self) -> Vec<PathBuf> {
        self.segment
            .slots()
            .into_iter()
            .filter(|(_, kind, ..)| *kind == Kind::KeyedTokenBucket)
            .map(|(slot, ..)| self.segment.table_path(slot))
            .collect()
    }
}

/// A token bucket whose GCRA word is in shared memory. The public class is
/// `admission.stores.SharedTokenBucket`.
#[pyclass(frozen, subclass, weakref, module = "admission._native")]
pub struct SharedTokenBucket {
    core: SharedBucket,
    /// Into `_segment`'s mapping, which lives at least as long as this object.
    words: *const BucketWords,
    _segment: Arc<Segment>,
    name: String,
    rate: f64,
    per: f64,
}

// SAFETY: `words` points into the mapping kept alive by `_segment` and is only read through
// atomics, so the object may move to and be shared between threads.
unsafe impl Send for SharedTokenBucket {}
// SAFETY: as above.
unsafe impl Sync for SharedTokenBucket {}

impl SharedTokenBucket {
    #[inline(always)]
    fn words(&self) -> &BucketWords {
        // SAFETY: see the field: valid and aligned while `_segment` lives, atomics only.
        unsafe { &*self.words }
    }

    #[inline(always)]
    fn take(&self, py: Python<'_>, cost: u64, count_refusal: bool) -> PyResult<bool> {
        self.core
            .try_acquire(self.words(), os::host_now_ns(), cost, count_refusal)
            .map_err(|e| errors::acquire(py, e))
    }
}

#[pymethods]
impl SharedTokenBucket {
    /// The bucket `name` in this segment, created with this configuration if it is new.
    #[new]
    #[pyo3(signature = (store, name, rate, per, burst=None))]
    fn new(
        store: &Bound<'_, SharedSegment>,
        name: String,
        rate: &Bound<'_, PyAny>,
        per: &Bound<'_, PyAny>,
        burst: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let rate = real("rate", rate)?;
        let per = real("per", per)?;
        let burst = count("burst", burst, default_burst(rate))?;
        let core = SharedBucket::new(rate, per, burst).map_err(errors::config)?;
        let config = [core.emission_ns(), burst, rate.to_bits(), per.to_bits(), 0];
        let slot = store
            .get()
            .segment
            .slot(&name, Kind::TokenBucket, config, describe)?;
        let words = store.get().segment.words::<BucketWords>(slot) as *const BucketWords;
        Ok(Self {
            core,
            words,
            _segment: Arc::clone(&store.get().segment),
            name,
            rate,
            per,
        })
    }

    /// Admits `cost` now if it fits (in every process sharing the bucket); never waits.
    #[pyo3(signature = (cost=Arg::OMITTED), text_signature = "($self, cost=1)")]
    fn try_acquire(&self, py: Python<'_>, cost: Arg<'_, '_>) -> PyResult<bool> {
        self.take(py, count_arg("cost", cost, 1)?, true)
    }

    /// `try_acquire` for a waiting caller: a refusal is not counted (its wait is, once).
    fn _try_take(&self, py: Python<'_>, cost: u64) -> PyResult<bool> {
        self.take(py, cost, false)
    }

    /// A waiting caller's turn: charges `cost` now for a turn at most `max_wait` seconds away
    /// (None: however far), returning `(seconds until the turn, the tat it set)`, 0.0 when
    /// admitted at once (counted); None when the turn would come later (nothing charged).
    fn _reserve(
        &self,
        py: Python<'_>,
        cost: u64,
        max_wait: Option<f64>,
    ) -> PyResult<Option<(f64, u64)>> {
        // A float to integer `as` saturates: a wait too large to count is "however far".
        let max_wait_ns = max_wait.map_or(u64::MAX, |s| (s * 1e9) as u64);
        let turn = self
            .core
            .reserve(self.words(), os::host_now_ns(), cost, max_wait_ns)
            .map_err(|e| errors::acquire(py, e))?;
        Ok(turn.map(|t| (ns_to_s(t.wait_ns), t.tat)))
    }

    /// Seconds from now until the turn of a charge that set `tat` comes, on the host's clock
    /// (0.0: it has come). A waiter sleeps on its framework's clock, which may be virtual
    /// (trio's `MockClock`): it looks at this before going ahead.
    fn _until(&self, tat: u64) -> f64 {
        let due = tat.saturating_sub(self.core.capacity_ns());
        ns_to_s(due.saturating_sub(os::host_now_ns()))
    }

    /// Counts a turn waited for as admitted.
    fn _commit(&self, cost: u64) {
        self.core.commit(self.words(), cost);
    }

    /// Gives back a turn's charge if nobody charged after it; true when given back.
    fn _untake(&self, tat: u64, cost: u64) -> bool {
        self.core.untake(self.words(), tat, cost)
    }

    /// What `try_acquire(cost)` would decide now, without consuming anything.
    #[pyo3(signature = (cost=Arg::OMITTED), text_signature = "($self, cost=1)")]
    fn peek(&self, py: Python<'_>, cost: Arg<'_, '_>) -> PyResult<Decision> {
        self.core
            .peek(self.words(), os::host_now_ns(), count_arg("cost", cost, 1)?)
            .map(Decision::from)
            .map_err(|e| errors::acquire(py, e))
    }

    /// Counts a wait that ended without admission (timed out, or cancelled).
    fn _gave_up(&self, timed_out: bool) {
        self.core.gave_up(self.words(), gave_up(timed_out));
    }

    /// Host-wide `(admitted, admitted_cost, rejected, timed_out, cancelled)`.
    fn _counters(&self) -> SharedCounts {
        SharedBucket::counts(self.words())
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

    /// Seconds per token, as used internally (rounded up to whole nanoseconds).
    #[getter]
    fn emission_interval(&self) -> f64 {
        ns_to_s(self.core.emission_ns())
    }
}

/// A semaphore whose permits are leases in shared memory. The public class is
/// `admission.stores.SharedSemaphore`.
#[pyclass(frozen, subclass, weakref, module = "admission._native")]
pub struct SharedSemaphore {
    core: Lease,
    /// Into `_segment`'s mapping, which lives at least as long as this object.
    words: *const SemaphoreWords,
    _segment: Arc<Segment>,
    name: String,
    /// The tag of the process that claimed `holder_slot` (0: none yet; after a fork the
    /// child's tag differs, so it claims its own slot).
    holder_tag: AtomicU64,
    holder_slot: AtomicU64,
    last_reclaim_ns: AtomicU64,
}

// SAFETY: as for `SharedTokenBucket`.
unsafe impl Send for SharedSemaphore {}
// SAFETY: as above.
unsafe impl Sync for SharedSemaphore {}

impl SharedSemaphore {
    #[inline(always)]
    fn words(&self) -> &SemaphoreWords {
        // SAFETY: see the field: valid and aligned while `_segment` lives, atomics only.
        unsafe { &*self.words }
    }

    /// This process's holder slot, claimed on first use (reclaiming dead holders' slots if
    /// every slot is taken).
    fn slot(&self) -> PyResult<usize> {
        let tag = os::own_tag();
        // Acquire pairs with the Release below: the slot read is the one stored with `tag`
        // (every thread of a process stores the same pair).
        if self.holder_tag.load(Ordering::Acquire) == tag {
            return Ok(self.holder_slot.load(Ordering::Relaxed) as usize);
        }
        let words = self.words();
        let slot = match Lease::claim(words, tag) {
            Some(slot) => slot,
            None => {
                self.reclaim_now();
                Lease::claim(words, tag).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "{} live processes already hold permits of shared semaphore {:?}: \
                         at most {} can",
                        admission_core::shared::HOLDERS,
                        self.name,
                        admission_core::shared::HOLDERS
                    ))
                })?
            }
        };
        self.holder_slot.store(slot as u64, Ordering::Relaxed);
        self.holder_tag.store(tag, Ordering::Release);
        Ok(slot)
    }

    fn reclaim_now(&self) -> u64 {
        self.last_reclaim_ns
            .store(os::host_now_ns(), Ordering::Relaxed);
        let (given_back, sleepers) = self.core.reclaim(self.words(), os::is_alive);
        if sleepers {
            os::wake_all(&self.words().wake);
        }
        given_back
    }

    /// Looks for dead holders if nobody in this process did for `RECLAIM_EVERY`.
    fn reclaim_due(&self) {
        let last = self.last_reclaim_ns.load(Ordering::Relaxed);
        if os::host_now_ns().saturating_sub(last) >= RECLAIM_EVERY.as_nanos() as u64 {
            self.reclaim_now();
        }
    }

    fn take(&self, py: Python<'_>, n: u64, count_refusal: bool) -> PyResult<bool> {
        let slot = self.slot()?;
        let taken = self
            .core
            .try_acquire(self.words(), slot, n, false)
            .map_err(|e| errors::semaphore(py, e))?;
        if taken || n > self.core.limit() {
            return Ok(taken);
        }
        // Refused: permits of a process that died may be what is missing.
        self.reclaim_due();
        self.core
            .try_acquire(self.words(), slot, n, count_refusal)
            .map_err(|e| errors::semaphore(py, e))
    }
}

#[pymethods]
impl SharedSemaphore {
    /// The semaphore `name` in this segment, created with `limit` if it is new.
    #[new]
    fn new(
        py: Python<'_>,
        store: &Bound<'_, SharedSegment>,
        name: String,
        limit: u64,
    ) -> PyResult<Self> {
        let core = Lease::new(limit).map_err(|e| errors::semaphore(py, e))?;
        let slot =
            store
                .get()
                .segment
                .slot(&name, Kind::Semaphore, [limit, 0, 0, 0, 0], describe)?;
        let words = store.get().segment.words::<SemaphoreWords>(slot) as *const SemaphoreWords;
        Ok(Self {
            core,
            words,
            _segment: Arc::clone(&store.get().segment),
            name,
            holder_tag: AtomicU64::new(0),
            holder_slot: AtomicU64::new(0),
            last_reclaim_ns: AtomicU64::new(0),
        })
    }

    /// Takes `n` permits now if they are free (in every process sharing the semaphore).
    #[pyo3(signature = (n=Arg::OMITTED), text_signature = "($self, n=1)")]
    fn try_acquire(&self, py: Python<'_>, n: Arg<'_, '_>) -> PyResult<bool> {
        self.take(py, count_arg("n", n, 1)?, true)
    }

    /// `try_acquire` for a waiting caller: a refusal is not counted (its wait is, once).
    fn _try_take(&self, py: Python<'_>, n: u64) -> PyResult<bool> {
        self.take(py, n, false)
    }

    /// Gives back `n` permits held by this process, waking waiters in every process.
    #[pyo3(signature = (n=Arg::OMITTED), text_signature = "($self, n=1)")]
    fn release(&self, py: Python<'_>, n: Arg<'_, '_>) -> PyResult<()> {
        let n = count_arg("n", n, 1)?;
        let slot = self.slot()?;
        let sleepers = self
            .core
            .release(self.words(), slot, n)
            .map_err(|e| errors::semaphore(py, e))?;
        if sleepers {
            os::wake_all(&self.words().wake);
        }
        Ok(())
    }

    /// Waits in this thread (without the GIL) until `n` permits are taken or `timeout`
    /// seconds pass (`None`: no limit); false on timeout. Sleeps on the futex, waking at
    /// each release and every `RECLAIM_EVERY` to look for dead holders.
    #[pyo3(signature = (n, timeout))]
    fn _wait(&self, py: Python<'_>, n: u64, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        let words = self.words();
        loop {
            let seen = words.wake.load(Ordering::Acquire);
            if self.take(py, n, false)? {
                return Ok(true);
            }
            let mut nap = RECLAIM_EVERY;
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                nap = nap.min(left);
            }
            py.detach(|| {
                words.sleepers.fetch_add(1, Ordering::AcqRel);
                os::wait(&words.wake, seen, nap);
                words.sleepers.fetch_sub(1, Ordering::AcqRel);
            });
            py.check_signals()?;
        }
    }

    /// Gives back the permits of holders that died; returns how many.
    fn _reclaim(&self) -> u64 {
        self.reclaim_now()
    }

    /// Counts a wait that ended without admission (timed out, or cancelled).
    fn _gave_up(&self, timed_out: bool) {
        Lease::gave_up(self.words(), gave_up(timed_out));
    }

    /// Host-wide `(admitted, admitted_cost, rejected, timed_out, cancelled)`.
    fn _counters(&self) -> SharedCounts {
        Lease::counts(self.words())
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The limit, fixed when the semaphore was created in the segment.
    #[getter]
    fn limit(&self) -> u64 {
        self.core.limit()
    }

    /// Permits held now, by every process.
    #[getter]
    fn in_use(&self) -> u64 {
        Lease::in_use(self.words())
    }

    /// Permits free now.
    #[getter]
    fn available(&self) -> u64 {
        self.core.limit().saturating_sub(self.in_use())
    }

    /// Permits held now by this process.
    #[getter]
    fn held(&self) -> PyResult<u64> {
        Ok(Lease::held(self.words(), self.slot()?))
    }

    /// The most permits ever held at once, by every process.
    #[getter]
    fn high_water(&self) -> u64 {
        self.words().high_water.load(Ordering::Relaxed)
    }
}
