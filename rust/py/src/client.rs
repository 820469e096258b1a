//! The client layer's reading of HTTP messages (`admission.presets`, `admission.httpx`):
//! a provider's rate-limit headers in one pass, a request's token estimate and an answer's
//! `usage` from their bytes (`client_json`), resets (`client_reset`).
//!
//! Each function answers what `admission.presets` documents; what it is not sure of (a
//! count that is not plain digits, a reset in another form, JSON it does not read) it hands
//! to that module's Python functions, so the two can never disagree. No state, no I/O.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::allof::Member;
use crate::bucket::TokenBucket;
use crate::client_json;
use crate::client_reset::{self, Reset};
use crate::reservation::{self, Reservation};

/// One vendor's rate-limit headers: each quota's remaining, limit and reset, in order.
struct Layout {
    names: &'static [&'static str],
    /// Input and output tokens as two more quotas (Anthropic), read when there is no
    /// tokens quota.
    split_tokens: bool,
}

const OPENAI: Layout = Layout {
    names: &[
        "x-ratelimit-remaining-requests",
        "x-ratelimit-limit-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-reset-tokens",
    ],
    split_tokens: false,
};

const ANTHROPIC: Layout = Layout {
    names: &[
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-limit",
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-limit",
        "anthropic-ratelimit-output-tokens-reset",
    ],
    split_tokens: true,
};

const MOST_SLOTS: usize = 12;

impl Layout {
    fn of(vendor: &str) -> PyResult<&'static Layout> {
        match vendor {
            "openai" => Ok(&OPENAI),
            "anthropic" => Ok(&ANTHROPIC),
            _ => Err(PyValueError::new_err(format!(
                "headers must be 'openai' or 'anthropic', got {vendor:?}"
            ))),
        }
    }

    /// The slot of a header's name (case-insensitive, as HTTP's), if it is one of these.
    fn slot(&self, name: &[u8]) -> Option<usize> {
        let first = *name.first()?;
        let initial = self.names[0].as_bytes()[0];
        if first.to_ascii_lowercase() != initial {
            return None; // (most headers are ruled out here)
        }
        self.names
            .iter()
            .position(|known| known.as_bytes().eq_ignore_ascii_case(name))
    }
}

/// `admission.presets`' Python readers of what this module leaves to them.
struct Fallback {
    count: Py<PyAny>,
    reset: Py<PyAny>,
}

static FALLBACK: PyOnceLock<Fallback> = PyOnceLock::new();

fn fallback(py: Python<'_>) -> PyResult<&Fallback> {
    FALLBACK.get_or_try_init(py, || {
        let presets = py.import("admission.presets")?;
        Ok(Fallback {
            count: presets.getattr("_count")?.unbind(),
            reset: presets.getattr("_reset")?.unbind(),
        })
    })
}

/// A header's name or value as bytes (a str's UTF-8), or None for a str that is not ASCII
/// (its Python reading may differ from its bytes').
fn ascii<'a>(obj: &'a Bound<'_, PyAny>) -> Option<&'a [u8]> {
    if let Ok(bytes) = obj.cast::<PyBytes>() {
        return Some(bytes.as_bytes());
    }
    let text = obj.cast::<PyString>().ok()?.to_str().ok()?;
    text.is_ascii().then_some(text.as_bytes())
}

/// A count: plain digits here, anything else by `presets._count` (an int >= 0, or None).
fn count<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if let Some(bytes) = ascii(value) {
        if !bytes.is_empty() && bytes.len() <= 19 && bytes.iter().all(u8::is_ascii_digit) {
            let n = bytes.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            return Ok(n.into_pyobject(value.py())?.into_any());
        }
    }
    fallback(value.py())?.count.bind(value.py()).call1((value,))
}

fn now() -> f64 {
    // (time.time()'s clock; a clock before 1970 reads as 1970.)
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A reset's seconds from now: read here, or by `presets._reset` (None: unreadable).
fn reset(value: &Bound<'_, PyAny>, wall: Option<f64>) -> PyResult<Option<f64>> {
    match ascii(value).and_then(client_reset::read) {
        Some(Reset::After(seconds)) => Ok(seconds),
        Some(Reset::At(at)) => Ok(Some((at - wall.unwrap_or_else(now)).max(0.0))),
        None => fallback(value.py())?
            .reset
            .bind(value.py())
            .call1((value, wall))?
            .extract(),
    }
}

/// One quota read: its remaining count (an int >= 0), its limit and reset.
struct Quota<'py> {
    tokens: bool,
    remaining: Bound<'py, PyAny>,
    limit: Bound<'py, PyAny>,
    reset: Option<f64>,
}

/// The quotas ``pairs`` state, in `Layout`'s order (see `read_quotas`).
fn quotas<'py>(
    pairs: &Bound<'py, PyAny>,
    layout: &Layout,
    wall: Option<f64>,
) -> PyResult<Vec<Quota<'py>>> {
    let py = pairs.py();
    let mut values: [Option<Bound<'py, PyAny>>; MOST_SLOTS] = Default::default();
    let mut found = false;
    let mut keep = |pair: Bound<'py, PyAny>| -> PyResult<()> {
        let pair = pair.cast_into::<PyTuple>().map_err(PyErr::from)?;
        if pair.len() != 2 {
            return Err(PyValueError::new_err("headers must be (name, value) pairs"));
        }
        let name = pair.get_item(0)?;
        let slot = match ascii(&name) {
            Some(bytes) => layout.slot(bytes),
            // (a str beyond ASCII: compared as Python lowercases it)
            None => match name.call_method0("lower")?.cast::<PyString>() {
                Ok(lower) => lower
                    .to_str()
                    .ok()
                    .and_then(|text| layout.slot(text.as_bytes())),
                Err(_) => None,
            },
        };
        if let Some(slot) = slot {
            values[slot] = Some(pair.get_item(1)?);
            found = true;
        }
        Ok(())
    };
    if let Ok(list) = pairs.cast::<PyList>() {
        for pair in list.iter() {
            keep(pair)?;
        }
    } else {
        for pair in pairs.try_iter()? {
            keep(pair?)?;
        }
    }
    if !found {
        return Ok(Vec::new());
    }
    let none = py.None().into_bound(py);
    let mut read: Vec<Option<Quota<'py>>> = Vec::with_capacity(4);
    for (i, slots) in values[..layout.names.len()].chunks(3).enumerate() {
        let quota = match &slots[0] {
            None => None,
            Some(remaining) => {
                let remaining = count(remaining)?;
                if remaining.is_none() {
                    None
                } else {
                    Some(Quota {
                        tokens: i > 0, // (every quota after the first, requests, is of tokens)
                        remaining,
                        limit: match &slots[1] {
                            Some(limit) => count(limit)?,
                            None => none.clone(),
                        },
                        reset: match &slots[2] {
                            Some(value) => reset(value, wall)?,
                            None => None,
                        },
                    })
                }
            }
        };
        read.push(quota);
    }
    let mut chosen: Vec<Quota<'py>> = Vec::with_capacity(2);
    let mut rest = read.into_iter();
    chosen.extend(rest.next().flatten());
    let tokens = rest.next().flatten();
    match tokens {
        Some(tokens) => chosen.push(tokens),
        None if layout.split_tokens => {
            let mut tightest: Option<Quota<'py>> = None;
            for quota in rest.flatten() {
                let tighter = match &tightest {
                    None => true,
                    Some(best) => quota.remaining.lt(&best.remaining)?,
                };
                if tighter {
                    tightest = Some(quota);
                }
            }
            chosen.extend(tightest);
        }
        None => {}
    }
    Ok(chosen)
}

/// The rate-limit quotas ``pairs`` of (name, value) state (httpx's ``headers.raw``, or a
/// mapping's items; bytes or str): a list of ``(tokens?, remaining, limit, reset_after)``,
/// one per quota with a readable remaining count, requests first. ``vendor``: "openai" or
/// "anthropic" (without a tokens quota: the tighter of input and output tokens, the first
/// on a tie). ``wall``: the wall clock RFC 3339 resets count from (default: now). A
/// repeated header: its last value.
#[pyfunction]
#[pyo3(signature = (pairs, vendor, wall=None))]
pub fn read_quotas<'py>(
    pairs: &Bound<'py, PyAny>,
    vendor: &str,
    wall: Option<f64>,
) -> PyResult<Bound<'py, PyList>> {
    let py = pairs.py();
    let list = PyList::empty(py);
    for quota in quotas(pairs, Layout::of(vendor)?, wall)? {
        let item = (quota.tokens, quota.remaining, quota.limit, quota.reset);
        list.append(item.into_pyobject(py)?)?;
    }
    Ok(list)
}

/// Syncs a host's buckets (`admission.httpx`) with the quotas a response's headers
/// ``pairs`` state: ``bucket._sync(remaining, reset)``, the requests quota to ``requests``,
/// the tokens one to ``tokens`` (None: no such bucket). The reset times a bucket's refill
/// only when the bucket mirrors the provider's quota (its limit is no larger than the
/// bucket's burst); a remaining count beyond any capacity takes nothing.
#[pyfunction]
pub fn sync_quotas(
    pairs: &Bound<'_, PyAny>,
    vendor: &str,
    requests: Option<&Bound<'_, TokenBucket>>,
    tokens: Option<&Bound<'_, TokenBucket>>,
) -> PyResult<()> {
    let py = pairs.py();
    for quota in quotas(pairs, Layout::of(vendor)?, None)? {
        let Some(bucket) = (if quota.tokens { tokens } else { requests }) else {
            continue;
        };
        // (the bucket's own `_sync`, called directly: no Python method lookup per quota)
        let state = &bucket.get().state;
        let reset = match quota.reset {
            // (a limit is an int >= 0: beyond u64, larger than any burst)
            Some(reset) if !quota.limit.is_none() => quota
                .limit
                .extract::<u64>()
                .is_ok_and(|limit| limit <= state.core.burst())
                .then_some(reset),
            _ => None,
        };
        // (an int >= 0: beyond u64, more than any capacity holds)
        let remaining: u64 = quota.remaining.extract().unwrap_or(u64::MAX);
        state.sync(py, remaining, reset)?;
    }
    Ok(())
}

/// A request's estimated tokens from its JSON ``body`` (see `presets.HostLimits`), or None
/// when this reading is not sure (then Python's is the answer).
#[pyfunction]
pub fn estimate_tokens(body: &[u8], default_max_tokens: i64) -> Option<i64> {
    client_json::estimate(body, default_max_tokens).ok()
}

/// The tokens an answer's ``body`` states it used (see `presets.usage_tokens`): ``(True,
/// tokens or None)``, or ``(False, None)`` when this reading is not sure (then Python's is
/// the answer).
#[pyfunction]
pub fn usage_tokens(body: &[u8]) -> (bool, Option<i64>) {
    match client_json::usage(body) {
        Ok(tokens) => (true, tokens),
        Err(client_json::Unsure) => (false, None),
    }
}

/// A transport host's token counts (`admission.httpx`): tokens reserved at the estimates and
/// settled at the usage, added from any thread without a lock (a sum, saturating at 2^64-1).
#[pyclass(frozen, module = "admission._native")]
#[derive(Default)]
pub struct TokenTally {
    reserved: AtomicU64,
    settled: AtomicU64,
}

#[pymethods]
impl TokenTally {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Adds ``n`` tokens reserved.
    fn reserve(&self, n: u64) {
        add(&self.reserved, n);
    }

    /// Adds ``n`` tokens settled.
    fn settle(&self, n: u64) {
        add(&self.settled, n);
    }

    /// A transport host's reservation taken at once (`reservation::take_now`): one request
    /// in ``requests`` and ``tokens`` in ``tokens_bucket`` (each if the host has it; the
    /// tokens are the primary part), or None with nothing taken. Adds the tokens reserved
    /// when taken in a tokens bucket.
    fn reserve_now(
        &self,
        py: Python<'_>,
        requests: Option<Py<TokenBucket>>,
        tokens_bucket: Option<Py<TokenBucket>>,
        tokens: u64,
    ) -> PyResult<Option<Reservation>> {
        let mut members = Vec::with_capacity(2);
        let mut costs = Vec::with_capacity(2);
        if let Some(requests) = requests {
            members.push(Member::Bucket(requests));
            costs.push(1);
        }
        let primary = tokens_bucket.map(|bucket| {
            members.push(Member::Bucket(bucket));
            costs.push(tokens);
            members.len() - 1
        });
        let taken = reservation::take(py, members, &costs, primary)?;
        if taken.is_some() && primary.is_some() {
            add(&self.reserved, tokens);
        }
        Ok(taken)
    }

    /// Settles the primary part of ``reservation`` (its tokens) at ``tokens``, or (None) at
    /// its estimate, which then stands; adds the tokens settled. One call per response.
    fn settle_reservation(
        &self,
        py: Python<'_>,
        reservation: &Reservation,
        tokens: Option<u64>,
    ) -> PyResult<()> {
        add(&self.settled, reservation.settle_primary(py, tokens)?);
        Ok(())
    }

    /// ``(reserved, settled)``.
    fn read(&self) -> (u64, u64) {
        (
            self.reserved.load(Ordering::Relaxed),
            self.settled.load(Ordering::Relaxed),
        )
    }
}

fn add(sum: &AtomicU64, n: u64) {
    // (relaxed: a count read by `stats`, ordering nothing else)
    let _ = sum.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
        Some(s.saturating_add(n))
    });
}
