//! One scrape's series: the figures of every live primitive and the retired totals, summed
//! per `(kind, limiter)`, read in a few native calls instead of several per primitive.
//!
//! The Python layer (`admission.metrics.limiters`) feeds a [`Scrape`] the live primitives in
//! slices (so no call holds the GIL for long), adds the retired totals it keeps, then either
//! turns it into `LimiterSeries` (`rows`) or renders the text exposition from it in chunks
//! (`render`). The families (names, help, which figure, the values of their extra label) are
//! defined there (`FAMILIES`); here, which gauges apply to a series (a semaphore's to a live
//! semaphore, a rate limiter's to a live rate limiter), for `rows` and `render` alike, and the
//! series labels `kind` and `limiter`.

use std::collections::HashMap;
use std::sync::Mutex;

use admission_core::{CountersSnapshot, HistogramSnapshot, RateLimit, WAIT_BUCKETS};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use super::retired::add_counters;
use super::text::{labels, Lines, Value};
use crate::args::ns_to_s;
use crate::bucket::TokenBucket;
use crate::rate::{counters_tuple, PyWaker, RateState};
use crate::semaphore::Semaphore;
use crate::window::SlidingWindow;

/// The kinds of primitive, in the order of their names (the order of the series).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Semaphore,
    SlidingWindow,
    TokenBucket,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Semaphore => "semaphore",
            Kind::SlidingWindow => "sliding_window",
            Kind::TokenBucket => "token_bucket",
        }
    }

    fn parse(kind: &str) -> PyResult<Self> {
        match kind {
            "semaphore" => Ok(Kind::Semaphore),
            "sliding_window" => Ok(Kind::SlidingWindow),
            "token_bucket" => Ok(Kind::TokenBucket),
            other => Err(PyValueError::new_err(format!("unknown kind {other:?}"))),
        }
    }
}

/// The figures of one primitive, or of a series (their sum; the oldest wait is the longest).
#[derive(Debug, Clone, Default)]
struct Figures {
    /// Live primitives.
    primitives: u64,
    waiters: u64,
    oldest_wait_ns: u64,
    in_use: u64,
    limit: u64,
    high_water: u64,
    /// None when no rate limiter of the series could be read (a loop clock outside its loop).
    tokens_available: Option<u64>,
    tokens_capacity: u64,
    counters: CountersSnapshot,
    waits: HistogramSnapshot,
}

impl Figures {
    fn add(&mut self, other: &Figures) {
        self.primitives += other.primitives;
        self.waiters += other.waiters;
        self.oldest_wait_ns = self.oldest_wait_ns.max(other.oldest_wait_ns);
        self.in_use += other.in_use;
        self.limit += other.limit;
        self.high_water += other.high_water;
        self.tokens_available = match (self.tokens_available, other.tokens_available) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        self.tokens_capacity += other.tokens_capacity;
        add_counters(&mut self.counters, &other.counters);
        self.waits.merge(&other.waits);
    }

    fn of_semaphore(s: &Semaphore) -> Self {
        let core = s.core();
        Figures {
            primitives: 1,
            waiters: core.waiting(),
            oldest_wait_ns: core.oldest_wait_ns(),
            in_use: core.in_use(),
            limit: core.limit(),
            high_water: core.high_water(),
            counters: core.counters().snapshot(),
            waits: core.wait_histogram(),
            ..Figures::default()
        }
    }

    fn of_rate<L: RateLimit<PyWaker>>(py: Python<'_>, state: &RateState<L>, capacity: u64) -> Self {
        // The largest cost `try_acquire` would admit now; unreadable (None) for a loop-clock
        // limiter outside its loop.
        let tokens_available =
            state
                .peek(py, 1)
                .ok()
                .map(|d| if d.allowed { d.remaining + 1 } else { 0 });
        Figures {
            primitives: 1,
            waiters: state.core.waiting(),
            tokens_available,
            tokens_capacity: capacity,
            counters: state.core.counters().snapshot(),
            waits: state.core.wait_histogram(),
            ..Figures::default()
        }
    }
}

/// One `(kind, limiter)` series.
struct Series {
    kind: Kind,
    label: String,
    /// `kind="...",limiter="..."`, escaped: the labels of every line of this series.
    labels: String,
    figures: Figures,
}

impl Series {
    fn live(&self) -> bool {
        self.figures.primitives > 0
    }

    /// A gauge that applies to this series now (None: no line for it).
    fn gauge(&self, field: Field) -> Option<Value> {
        let f = &self.figures;
        let live = self.live();
        let sem = live && self.kind == Kind::Semaphore;
        let rate = live && self.kind != Kind::Semaphore;
        match field {
            Field::Primitives => Some(Value::Int(f.primitives)),
            Field::Waiters => Some(Value::Int(f.waiters)),
            Field::AdmittedCost => Some(Value::Int(f.counters.admitted_cost)),
            Field::InUse => sem.then_some(Value::Int(f.in_use)),
            Field::Limit => sem.then_some(Value::Int(f.limit)),
            Field::HighWater => sem.then_some(Value::Int(f.high_water)),
            Field::OldestWait => sem.then_some(Value::Float(ns_to_s(f.oldest_wait_ns))),
            Field::TokensAvailable => f.tokens_available.filter(|_| rate).map(Value::Int),
            Field::TokensCapacity => rate.then_some(Value::Int(f.tokens_capacity)),
            Field::Acquisitions | Field::Wait => None,
        }
    }
}

/// A figure of `LimiterSeries` that a family shows (named as its attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Primitives,
    Waiters,
    InUse,
    Limit,
    HighWater,
    OldestWait,
    TokensAvailable,
    TokensCapacity,
    AdmittedCost,
    /// The four outcome counters, one line each.
    Acquisitions,
    /// The wait histogram: buckets, count, sum.
    Wait,
}

impl Field {
    fn parse(field: &str) -> PyResult<Self> {
        Ok(match field {
            "primitives" => Field::Primitives,
            "waiters" => Field::Waiters,
            "in_use" => Field::InUse,
            "limit" => Field::Limit,
            "high_water" => Field::HighWater,
            "oldest_wait" => Field::OldestWait,
            "tokens_available" => Field::TokensAvailable,
            "tokens_capacity" => Field::TokensCapacity,
            "admitted_cost" => Field::AdmittedCost,
            "acquisitions" => Field::Acquisitions,
            "wait" => Field::Wait,
            other => return Err(PyValueError::new_err(format!("unknown field {other:?}"))),
        })
    }
}

#[derive(Default)]
struct State {
    /// Where each label's series of each kind is in `series` (by `Kind as usize`), until
    /// it is sorted. By label first, so that a lookup allocates nothing.
    index: HashMap<String, [Option<usize>; 3]>,
    series: Vec<Series>,
    sorted: bool,
}

impl State {
    fn series_mut(&mut self, kind: Kind, label: &str) -> PyResult<&mut Figures> {
        if self.sorted {
            return Err(PyRuntimeError::new_err("this scrape was already read"));
        }
        if !self.index.contains_key(label) {
            self.index.insert(label.to_owned(), [None; 3]);
        }
        let slots = self.index.get_mut(label).expect("inserted above");
        let at = *slots[kind as usize].get_or_insert(self.series.len());
        if at == self.series.len() {
            self.series.push(Series {
                kind,
                label: label.to_owned(),
                labels: String::new(),
                figures: Figures::default(),
            });
        }
        Ok(&mut self.series[at].figures)
    }

    fn find(&self, kind: Kind, label: &str) -> Option<&Series> {
        let at = self.index.get(label)?[kind as usize]?;
        Some(&self.series[at])
    }

    /// Sorts the series by kind and label and writes their label sets (once).
    fn sorted(&mut self) -> &[Series] {
        if !self.sorted {
            self.sorted = true;
            self.index = HashMap::new();
            self.series
                .sort_unstable_by(|a, b| (a.kind, &a.label).cmp(&(b.kind, &b.label)));
            for s in &mut self.series {
                s.labels = labels([("kind", s.kind.name()), ("limiter", s.label.as_str())]);
            }
        }
        &self.series
    }
}

/// A series for Python (see `Scrape::rows`).
type Row = (
    &'static str,
    String,
    u64,
    u64,
    f64,
    Option<(u64, u64, u64)>,
    Option<(Option<u64>, u64)>,
    (u64, u64, u64, u64, u64),
    Vec<u64>,
    f64,
);

/// The series of one scrape. Fill it with `read` (live primitives, in slices) and
/// `add_retired`, then read it with `rows` or `render`; after the first read it is sorted
/// and takes no more figures. Each response has its own: it is not shared between threads.
#[pyclass(frozen, module = "admission._native")]
pub struct Scrape {
    /// The `limiter` label of the unnamed primitives.
    unnamed: String,
    state: Mutex<State>,
}

impl Scrape {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state, sorted: the first time without the GIL (100,000 series take a while).
    fn sorted(&self, py: Python<'_>) -> std::sync::MutexGuard<'_, State> {
        if !self.lock().sorted {
            py.detach(|| {
                self.lock().sorted();
            });
        }
        self.lock()
    }
}

impl Drop for Scrape {
    fn drop(&mut self) {
        // Freeing 100,000 series takes milliseconds: not while holding the GIL (this object
        // is unreachable now, nothing else can touch it).
        let state = std::mem::take(self.state.get_mut().unwrap_or_else(|p| p.into_inner()));
        if state.series.len() >= 10_000 {
            Python::attach(|py| py.detach(move || drop(state)));
        }
    }
}

#[pymethods]
impl Scrape {
    /// `unnamed`: the `limiter` label of the series of a kind's unnamed primitives;
    /// `expected`: about how many series there will be (room is made for them at once, so
    /// that no later call moves them all while holding the GIL).
    #[new]
    #[pyo3(signature = (unnamed, expected=0))]
    fn new(unnamed: String, expected: usize) -> Self {
        let state = State {
            index: HashMap::with_capacity(expected),
            series: Vec::with_capacity(expected),
            sorted: false,
        };
        Self {
            unnamed,
            state: Mutex::new(state),
        }
    }

    /// Adds the figures of each primitive in `objs` (other objects are skipped).
    fn read(&self, py: Python<'_>, objs: &Bound<'_, PyList>) -> PyResult<()> {
        for obj in objs.iter() {
            // Read before locking: a loop clock's `peek` runs Python code.
            let (kind, name, figures) = if let Ok(s) = obj.cast::<Semaphore>() {
                let s = s.get();
                (Kind::Semaphore, s.name(), Figures::of_semaphore(s))
            } else if let Ok(b) = obj.cast::<TokenBucket>() {
                let state = &b.get().state;
                let capacity = state.core.burst();
                let figures = Figures::of_rate(py, state, capacity);
                (Kind::TokenBucket, state.name(), figures)
            } else if let Ok(w) = obj.cast::<SlidingWindow>() {
                let state = &w.get().state;
                let figures = Figures::of_rate(py, state, state.core.limit());
                (Kind::SlidingWindow, state.name(), figures)
            } else {
                continue;
            };
            let label = name.unwrap_or(&self.unnamed);
            self.lock().series_mut(kind, label)?.add(&figures);
        }
        Ok(())
    }

    /// Whether a live primitive of `kind` is in the series `label`.
    fn is_live(&self, kind: &str, label: &str) -> PyResult<bool> {
        let kind = Kind::parse(kind)?;
        Ok(self.lock().find(kind, label).is_some_and(Series::live))
    }

    /// Adds the retired totals of a series: counters `(admitted, admitted_cost, rejected,
    /// timed_out, cancelled)`, the wait histogram's per-bucket counts and its sum in ns.
    fn add_retired(
        &self,
        kind: &str,
        label: &str,
        counters: (u64, u64, u64, u64, u64),
        counts: Vec<u64>,
        sum_ns: u64,
    ) -> PyResult<()> {
        let kind = Kind::parse(kind)?;
        let counts: [u64; WAIT_BUCKETS] = counts.try_into().map_err(|c: Vec<u64>| {
            PyValueError::new_err(format!("{WAIT_BUCKETS} counts expected, got {}", c.len()))
        })?;
        let (admitted, admitted_cost, rejected, timed_out, cancelled) = counters;
        let retired = Figures {
            counters: CountersSnapshot {
                admitted,
                admitted_cost,
                rejected,
                timed_out,
                cancelled,
            },
            waits: HistogramSnapshot { counts, sum_ns },
            ..Figures::default()
        };
        self.lock().series_mut(kind, label)?.add(&retired);
        Ok(())
    }

    /// Sorts the series by kind and label, without the GIL (also done by the first `rows`
    /// or `render`); it takes no more figures after.
    fn sort(&self, py: Python<'_>) {
        drop(self.sorted(py));
    }

    fn __len__(&self) -> usize {
        self.lock().series.len()
    }

    /// The series `start` to `stop` (all by default), sorted by kind and label: `(kind,
    /// label, primitives, waiters, oldest_wait, (in_use, limit, high_water),
    /// (tokens_available, tokens_capacity), counters, wait counts, wait sum in seconds)`;
    /// the gauges of a series with no live primitive, and those of another kind, are None.
    #[pyo3(signature = (start=0, stop=None))]
    fn rows(&self, py: Python<'_>, start: usize, stop: Option<usize>) -> Vec<Row> {
        let gauge = |s: &Series, field| match s.gauge(field) {
            Some(Value::Int(v)) => Some(v),
            _ => None,
        };
        let mut state = self.sorted(py);
        let series = state.sorted();
        let stop = stop.unwrap_or(series.len()).min(series.len());
        series[start.min(stop)..stop]
            .iter()
            .map(|s| {
                let f = &s.figures;
                let semaphore =
                    gauge(s, Field::InUse).map(|in_use| (in_use, f.limit, f.high_water));
                let rate = gauge(s, Field::TokensCapacity)
                    .map(|capacity| (gauge(s, Field::TokensAvailable), capacity));
                (
                    s.kind.name(),
                    s.label.clone(),
                    f.primitives,
                    f.waiters,
                    ns_to_s(f.oldest_wait_ns),
                    semaphore,
                    rate,
                    counters_tuple(&f.counters),
                    f.waits.counts.to_vec(),
                    ns_to_s(f.waits.sum_ns),
                )
            })
            .collect()
    }

    /// The text-exposition lines of one family, from series `start` on, until about `budget`
    /// bytes are written (at least one series): `(bytes, next start)`, `len(self)` at the end.
    ///
    /// `name` is the sample name (`admission_acquisitions_total`; the histogram's base name,
    /// to which `_bucket`, `_count` and `_sum` are added). `label` and `values` are the extra
    /// label of `acquisitions` (`outcome`: one value per counter, in the order admitted,
    /// rejected, timed out, cancelled) and of `wait` (`le`: one per bucket). `live_only` skips
    /// the series with no live primitive; a gauge that does not apply to a series has no line.
    #[pyo3(signature = (field, name, start, budget, live_only=false, label="", values=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn render<'py>(
        &self,
        py: Python<'py>,
        field: &str,
        name: &str,
        start: usize,
        budget: usize,
        live_only: bool,
        label: &str,
        values: Vec<String>,
    ) -> PyResult<(Bound<'py, PyBytes>, usize)> {
        let field = Field::parse(field)?;
        let expected = match field {
            Field::Acquisitions => 4,
            Field::Wait => WAIT_BUCKETS,
            _ => 0,
        };
        if values.len() != expected {
            return Err(PyValueError::new_err(format!(
                "{expected} label values expected for {field:?}, got {}",
                values.len()
            )));
        }
        let extra: Vec<String> = values
            .iter()
            .map(|v| format!(",{}", labels([(label, v.as_str())])))
            .collect();
        let mut state = self.sorted(py);
        let series = state.sorted();
        let mut out = Vec::with_capacity(budget + 4096);
        let mut next = start;
        while next < series.len() && (next == start || out.len() < budget) {
            let s = &series[next];
            next += 1;
            if live_only && !s.live() {
                continue;
            }
            let f = &s.figures;
            let mut lines = Lines::new(&mut out, name, &s.labels);
            match field {
                Field::Acquisitions => {
                    let c = &f.counters;
                    let counts = [c.admitted, c.rejected, c.timed_out, c.cancelled];
                    for (extra, v) in extra.iter().zip(counts) {
                        lines.line("", extra, Value::Int(v));
                    }
                }
                Field::Wait => {
                    let cumulative = f.waits.cumulative();
                    for (extra, &v) in extra.iter().zip(cumulative.iter()) {
                        lines.line("_bucket", extra, Value::Int(v));
                    }
                    lines.line("_count", "", Value::Int(cumulative[WAIT_BUCKETS - 1]));
                    lines.line("_sum", "", Value::Float(ns_to_s(f.waits.sum_ns)));
                }
                _ => {
                    if let Some(v) = s.gauge(field) {
                        lines.line("", "", v);
                    }
                }
            }
        }
        Ok((PyBytes::new(py, &out), next))
    }
}
