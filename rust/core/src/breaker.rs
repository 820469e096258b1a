//! Circuit breaker: closed, open and half-open, over the outcomes of recent calls.
//!
//! - **Closed**: every call is permitted. Each outcome goes into a sliding window (the last
//!   `n` calls, or the calls of the last `span`); once the window holds `min_calls` calls and
//!   the failure rate or the slow-call rate reaches its threshold, the breaker opens.
//! - **Open**: every call is refused with the time left. The first call after `open_for`
//!   turns the breaker half-open (nothing happens by itself while nobody calls).
//! - **Half-open**: exactly `half_open_calls` probes are permitted, never more in flight or
//!   finished together. A failed probe opens the breaker again for twice as long as last time
//!   (up to `open_for_max`); when every probe has succeeded the breaker closes (or opens again
//!   if too many of them were slow). A probe given back unused frees its place.
//!
//! The permit path is lock-free: one load in the closed state, one compare-and-swap for a
//! probe. Every transition is a compare-and-swap on one word that holds the mode, a generation
//! and, while half-open, the probes' places, so an outcome or a give-back that belongs to an
//! earlier generation can never count in a later one. While closed with a count-based window of
//! at most [`MAX_LOCK_FREE_CALLS`] calls, the same word holds the window's totals and an
//! outcome is recorded without a lock (`closed_window.rs`): one compare-and-swap of the word,
//! then one of its place in the ring. The outcomes that trip the breaker, the probes' outcomes,
//! and every outcome of a time-based or larger window take a mutex (the window is then a few
//! counters and a ring behind it); so does every write of the open time.

use crate::closed_window::{wait_for_writer, Evicts, Slots, Tally, FAILED, SLOW};
use crate::error::ConfigError;
use crate::sync::{AtomicU64, Mutex, Ordering};
use crate::MAX_SPAN_NS;

pub use crate::closed_window::MAX_LOCK_FREE_CALLS;

/// Largest `half_open_calls`: the probes' places are 16-bit fields of the state word.
pub const MAX_HALF_OPEN_CALLS: u32 = 0xFFFF;
/// Most buckets a time-based window is cut into (one per second up to this many seconds).
pub const MAX_TIME_BUCKETS: u64 = 600;
/// Largest count-based window.
pub const MAX_WINDOW_CALLS: u32 = 1 << 20;

const SECOND_NS: u64 = 1_000_000_000;

/// What the breaker decides over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// The last `n` recorded calls.
    Calls(u32),
    /// The calls recorded in the last `span_ns` nanoseconds (to within one bucket).
    Time { span_ns: u64 },
}

/// A breaker's settings. Rates are fractions in (0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    pub failure_rate: f64,
    pub slow_call_rate: f64,
    /// A call lasting at least this long is slow (`u64::MAX`: no call is).
    pub slow_call_ns: u64,
    pub window: WindowKind,
    pub min_calls: u32,
    pub open_ns: u64,
    pub open_max_ns: u64,
    pub half_open_calls: u32,
}

impl BreakerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (arg, rate) in [
            ("failure_rate", self.failure_rate),
            ("slow_call_rate", self.slow_call_rate),
        ] {
            // `!(x > 0.0)` is true for NaN too.
            if !(rate > 0.0 && rate <= 1.0) {
                return Err(ConfigError::new(
                    arg,
                    format!("{arg} must be a fraction in (0, 1], got {rate}"),
                ));
            }
        }
        match self.window {
            WindowKind::Calls(n) if n == 0 || n > MAX_WINDOW_CALLS => {
                return Err(ConfigError::new(
                    "window",
                    format!("window must be 1 to {MAX_WINDOW_CALLS} calls, got {n}"),
                ))
            }
            WindowKind::Time { span_ns } if span_ns == 0 || span_ns > MAX_SPAN_NS => {
                return Err(ConfigError::new(
                    "window",
                    "window must be a positive duration of at most 73 years",
                ))
            }
            _ => {}
        }
        if self.min_calls == 0 {
            return Err(ConfigError::new(
                "min_calls",
                "min_calls must be at least 1, got 0",
            ));
        }
        if self.half_open_calls == 0 || self.half_open_calls > MAX_HALF_OPEN_CALLS {
            return Err(ConfigError::new(
                "half_open_calls",
                format!(
                    "half_open_calls must be 1 to {MAX_HALF_OPEN_CALLS}, got {}",
                    self.half_open_calls
                ),
            ));
        }
        if self.open_ns == 0 || self.open_ns > MAX_SPAN_NS {
            return Err(ConfigError::new(
                "open_for",
                "open_for must be a positive duration of at most 73 years",
            ));
        }
        if self.open_max_ns < self.open_ns || self.open_max_ns > MAX_SPAN_NS {
            return Err(ConfigError::new(
                "open_for_max",
                "open_for_max must be at least open_for and at most 73 years",
            ));
        }
        Ok(())
    }

    /// How long the breaker stays open after `reopened` consecutive failed probations.
    fn open_for(&self, reopened: u32) -> u64 {
        if reopened >= u64::BITS {
            return self.open_max_ns;
        }
        self.open_ns
            .saturating_mul(1 << reopened)
            .min(self.open_max_ns)
    }
}

/// The three states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Closed,
    Open,
    HalfOpen,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Closed => "closed",
            Mode::Open => "open",
            Mode::HalfOpen => "half_open",
        }
    }
}

// The state word: mode (2 bits) | probes out (16) | probes succeeded (16) | generation (30).
// Closed with a lock-free window, the 32 bits of the probes' fields hold its `Tally` instead.
const MODE_BITS: u64 = 0b11;
const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const OUT_SHIFT: u32 = 2;
const DONE_SHIFT: u32 = 18;
const FIELD: u64 = 0xFFFF;
const GEN_SHIFT: u32 = 34;
const GEN_MASK: u64 = (1 << 30) - 1;
const TALLY_MASK: u64 = 0xFFFF_FFFF;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word(u64);

impl Word {
    fn new(mode: u64, gen: u64) -> Self {
        Self(mode | ((gen & GEN_MASK) << GEN_SHIFT))
    }
    fn mode(self) -> u64 {
        self.0 & MODE_BITS
    }
    fn gen(self) -> u64 {
        self.0 >> GEN_SHIFT
    }
    fn out(self) -> u64 {
        (self.0 >> OUT_SHIFT) & FIELD
    }
    fn done(self) -> u64 {
        (self.0 >> DONE_SHIFT) & FIELD
    }
    fn with_out(self, out: u64) -> Self {
        Self((self.0 & !(FIELD << OUT_SHIFT)) | (out << OUT_SHIFT))
    }
    fn with_done(self, done: u64) -> Self {
        Self((self.0 & !(FIELD << DONE_SHIFT)) | (done << DONE_SHIFT))
    }
    fn tally(self) -> Tally {
        Tally(((self.0 >> OUT_SHIFT) & TALLY_MASK) as u32)
    }
    fn with_tally(self, tally: Tally) -> Self {
        Self((self.0 & !(TALLY_MASK << OUT_SHIFT)) | (u64::from(tally.0) << OUT_SHIFT))
    }
    /// The first word of the next state: a new generation, no probes.
    fn next(self, mode: u64) -> Self {
        Self::new(mode, (self.gen() + 1) & GEN_MASK)
    }
}

/// Permission for one call, to be handed back with its outcome (or given back unused).
/// It remembers the generation it was granted in, so that a late outcome cannot count in a
/// later state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    gen: u64,
    probe: bool,
}

impl Permit {
    /// Packs the permit into a word (for bindings that carry it as an integer).
    pub fn to_bits(self) -> u64 {
        (self.gen << 1) | u64::from(self.probe)
    }
    /// The inverse of [`Permit::to_bits`]. Any word is accepted: a forged permit can at worst
    /// match no generation and be ignored.
    pub fn from_bits(bits: u64) -> Self {
        Self {
            gen: (bits >> 1) & GEN_MASK,
            probe: bits & 1 == 1,
        }
    }
    /// Whether the permit is one of the half-open state's probes.
    pub fn is_probe(self) -> bool {
        self.probe
    }
}

/// A change of state, for the bindings to report after the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Mode,
    pub to: Mode,
    /// How long the breaker stays open (when `to` is `Open`).
    pub open_ns: u64,
}

/// Why a call was not permitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Open: try again in `retry_after_ns`.
    Open { retry_after_ns: u64 },
    /// Half-open with every probe's place taken: the verdict is due when they finish.
    Probing,
}

/// How a permitted call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Success,
    Failure,
}

/// Totals since the breaker was made. `permitted == success + failure + slow + released`
/// once no call is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BreakerCounts {
    pub permitted: u64,
    /// Successful calls faster than the slow-call duration.
    pub success: u64,
    /// Failed calls (slow or not).
    pub failure: u64,
    /// Successful calls that took at least the slow-call duration.
    pub slow: u64,
    /// Refused calls (open, or half-open with no probe place free).
    pub rejected: u64,
    /// Permits given back unused (the call was cancelled, never ran, or its error is ignored).
    pub released: u64,
    /// Times the breaker opened.
    pub opened: u64,
}

/// What the window holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowSnapshot {
    pub calls: u64,
    pub failures: u64,
    pub slow: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    calls: u64,
    failures: u64,
    slow: u64,
}

#[derive(Debug)]
enum Ring {
    /// Each recorded call's flags (bit 0 failed, bit 1 slow), oldest overwritten first.
    Calls { flags: Vec<u8>, next: usize },
    /// Per-period totals: slot `p % len` holds period `p` (`now / bucket_ns`) for the last
    /// `len` periods up to `head`; older slots have been emptied.
    Time {
        buckets: Vec<Bucket>,
        bucket_ns: u64,
        head: u64,
    },
}

#[derive(Debug)]
struct Window {
    ring: Ring,
    totals: WindowSnapshot,
}

impl Window {
    fn new(kind: WindowKind) -> Self {
        let ring = match kind {
            WindowKind::Calls(n) => Ring::Calls {
                flags: Vec::with_capacity(n as usize),
                next: 0,
            },
            WindowKind::Time { span_ns } => {
                let count = (span_ns / SECOND_NS).clamp(1, MAX_TIME_BUCKETS);
                Ring::Time {
                    buckets: vec![Bucket::default(); count as usize],
                    bucket_ns: span_ns.div_ceil(count),
                    head: 0,
                }
            }
        };
        Self {
            ring,
            totals: WindowSnapshot::default(),
        }
    }

    fn clear(&mut self) {
        match &mut self.ring {
            Ring::Calls { flags, next } => {
                flags.clear();
                *next = 0;
            }
            Ring::Time { buckets, .. } => buckets.fill(Bucket::default()),
        }
        self.totals = WindowSnapshot::default();
    }

    /// Moves a time window's head to `now`, emptying the slots of the periods that left it:
    /// each slot is emptied once per period, whatever the number of calls (O(1) amortised).
    fn expire(&mut self, now: u64) {
        let Ring::Time {
            buckets,
            bucket_ns,
            head,
        } = &mut self.ring
        else {
            return;
        };
        let period = now / *bucket_ns;
        if period <= *head {
            return;
        }
        let len = buckets.len() as u64;
        for p in (*head + 1..=period).take(len as usize) {
            let slot = std::mem::take(&mut buckets[(p % len) as usize]);
            self.totals.calls -= slot.calls;
            self.totals.failures -= slot.failures;
            self.totals.slow -= slot.slow;
        }
        *head = period;
    }

    /// Adds one call at `now` (after [`Window::expire`] at the same `now`).
    fn push(&mut self, now: u64, flags: u8) {
        let failed = u64::from(flags & FAILED != 0);
        let slow = u64::from(flags & SLOW != 0);
        match &mut self.ring {
            Ring::Calls { flags: ring, next } => {
                if ring.len() < ring.capacity() {
                    ring.push(flags);
                } else {
                    let old = std::mem::replace(&mut ring[*next], flags);
                    self.totals.calls -= 1;
                    self.totals.failures -= u64::from(old & FAILED != 0);
                    self.totals.slow -= u64::from(old & SLOW != 0);
                    *next = (*next + 1) % ring.len();
                }
            }
            Ring::Time {
                buckets,
                bucket_ns,
                head,
            } => {
                let len = buckets.len() as u64;
                // A time read a little earlier by another thread lands in its own (live)
                // period; one from before the window counts in the newest.
                let period = (now / *bucket_ns).max(head.saturating_sub(len - 1));
                let slot = &mut buckets[(period % len) as usize];
                slot.calls += 1;
                slot.failures += failed;
                slot.slow += slow;
            }
        }
        self.totals.calls += 1;
        self.totals.failures += failed;
        self.totals.slow += slow;
    }
}

/// What a lock-free window of `n` calls holds at `tally`.
fn tally_window(tally: Tally, n: u32) -> WindowSnapshot {
    WindowSnapshot {
        calls: tally.calls(n),
        failures: tally.failures(),
        slow: tally.slow(),
    }
}

#[derive(Debug)]
struct Inner {
    /// The window of a breaker whose outcomes take the lock (see `Breaker::slots`).
    window: Window,
    /// Consecutive failed probations (doubles the open time).
    reopened: u32,
    /// Slow probes of the half-open generation `probes_gen`.
    slow_probes: u64,
    probes_gen: u64,
}

/// A circuit breaker. Thread-safe; time is passed in (`now`, monotonic nanoseconds).
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: AtomicU64,
    /// When the current open state ends; written before the state word that publishes it.
    open_until: AtomicU64,
    // The totals, counted outside the mutex: neither the permit path nor a closed, lock-free
    // outcome takes the lock.
    permitted: AtomicU64,
    rejected: AtomicU64,
    released: AtomicU64,
    success: AtomicU64,
    failure: AtomicU64,
    slow: AtomicU64,
    opened: AtomicU64,
    /// The ring of a lock-free closed window (a count-based window of at most
    /// `MAX_LOCK_FREE_CALLS` calls; its totals are in the state word), else `None` and the
    /// window is `Inner::window`.
    slots: Option<Slots>,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let slots = match config.window {
            WindowKind::Calls(n) if n <= MAX_LOCK_FREE_CALLS => Some(Slots::new(n)),
            _ => None,
        };
        let window = Window::new(match slots {
            Some(_) => WindowKind::Calls(0), // unused: no room kept
            None => config.window,
        });
        Ok(Self {
            config,
            state: AtomicU64::new(Word::new(CLOSED, 0).0),
            open_until: AtomicU64::new(0),
            permitted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            released: AtomicU64::new(0),
            success: AtomicU64::new(0),
            failure: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            slots,
            inner: Mutex::new(Inner {
                window,
                reopened: 0,
                slow_probes: 0,
                probes_gen: u64::MAX,
            }),
        })
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    fn load(&self) -> Word {
        Word(self.state.load(Ordering::Acquire))
    }

    fn cas(&self, from: Word, to: Word) -> Result<(), Word> {
        self.state
            .compare_exchange_weak(from.0, to.0, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(Word)
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, Inner> {
        // A panic under the lock leaves consistent counters (every update is one step).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks permission for one call at `now`. On a grant, also the transition it made (open
    /// to half-open), if any.
    #[inline]
    pub fn try_acquire(&self, now: u64) -> Result<(Permit, Option<Transition>), Refused> {
        let mut word = self.load();
        loop {
            match word.mode() {
                CLOSED => {
                    self.permitted.fetch_add(1, Ordering::Relaxed);
                    return Ok((
                        Permit {
                            gen: word.gen(),
                            probe: false,
                        },
                        None,
                    ));
                }
                OPEN => {
                    let until = self.open_until.load(Ordering::Acquire);
                    if now < until {
                        self.rejected.fetch_add(1, Ordering::Relaxed);
                        return Err(Refused::Open {
                            retry_after_ns: until - now,
                        });
                    }
                    let probing = word.next(HALF_OPEN).with_out(1);
                    match self.cas(word, probing) {
                        Ok(()) => {
                            self.permitted.fetch_add(1, Ordering::Relaxed);
                            let transition = Transition {
                                from: Mode::Open,
                                to: Mode::HalfOpen,
                                open_ns: 0,
                            };
                            return Ok((
                                Permit {
                                    gen: probing.gen(),
                                    probe: true,
                                },
                                Some(transition),
                            ));
                        }
                        Err(actual) => word = actual,
                    }
                }
                _ => {
                    if word.out() + word.done() >= u64::from(self.config.half_open_calls) {
                        self.rejected.fetch_add(1, Ordering::Relaxed);
                        return Err(Refused::Probing);
                    }
                    match self.cas(word, word.with_out(word.out() + 1)) {
                        Ok(()) => {
                            self.permitted.fetch_add(1, Ordering::Relaxed);
                            return Ok((
                                Permit {
                                    gen: word.gen(),
                                    probe: true,
                                },
                                None,
                            ));
                        }
                        Err(actual) => word = actual,
                    }
                }
            }
        }
    }

    /// The permit of "a call ending now", for callers that keep no permit (a `try_acquire`
    /// that answers only yes or no): it belongs to the current state, so its outcome counts
    /// there, as resilience4j counts a `onSuccess` after `tryAcquirePermission`.
    pub fn current_permit(&self) -> Permit {
        let word = self.load();
        Permit {
            gen: word.gen(),
            probe: word.mode() == HALF_OPEN,
        }
    }

    /// The permit of a closed-state call that kept none: its outcome counts if the breaker is
    /// still closed when it arrives (possibly in a later closed period: a late but real
    /// outcome), and only in the totals otherwise. Never a probe's.
    pub fn closed_permit(&self) -> Permit {
        Permit {
            gen: self.load().gen(),
            probe: false,
        }
    }

    /// Gives back a permit whose call did not run (or ended in an ignored error). A probe's
    /// place is freed for another call; anything else only counts.
    pub fn release(&self, permit: Permit) {
        self.released.fetch_add(1, Ordering::Relaxed);
        if !permit.probe {
            return;
        }
        let mut word = self.load();
        while word.mode() == HALF_OPEN && word.gen() == permit.gen && word.out() > 0 {
            match self.cas(word, word.with_out(word.out() - 1)) {
                Ok(()) => return,
                Err(actual) => word = actual,
            }
        }
    }

    /// Records how a permitted call ended and how long it took; returns the transition it
    /// caused, if any. An outcome from an earlier generation counts in the totals only.
    pub fn record(
        &self,
        permit: Permit,
        outcome: CallOutcome,
        duration_ns: u64,
        now: u64,
    ) -> Option<Transition> {
        self.record_with(permit, outcome, duration_ns, || now)
    }

    /// [`Breaker::record`] with the time read only when it is needed: not for a closed call of
    /// a lock-free window that does not trip the breaker (its window counts calls, not time;
    /// the open time starts at a trip).
    #[inline]
    pub fn record_with(
        &self,
        permit: Permit,
        outcome: CallOutcome,
        duration_ns: u64,
        now: impl FnOnce() -> u64,
    ) -> Option<Transition> {
        let failed = outcome == CallOutcome::Failure;
        let slow = duration_ns >= self.config.slow_call_ns;
        let total = match (failed, slow) {
            (true, _) => &self.failure,
            (false, true) => &self.slow,
            (false, false) => &self.success,
        };
        total.fetch_add(1, Ordering::Relaxed);
        let flags = if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        match &self.slots {
            Some(slots) if !permit.probe => self.record_closed(slots, permit.gen, flags, now),
            _ => self.record_locked(permit, failed, slow, flags, now()),
        }
    }

    /// A closed call's outcome into a lock-free window (see `closed_window.rs`): one
    /// compare-and-swap of the state word from the tally it was decided on, which also checks
    /// that the call's generation is still the current, closed one. An outcome that trips the
    /// breaker is decided again under the lock, where the open time is written before the
    /// swap that publishes it; so is any trip, so exactly one call trips each closed period.
    fn record_closed(
        &self,
        slots: &Slots,
        gen: u64,
        flags: u8,
        now: impl FnOnce() -> u64,
    ) -> Option<Transition> {
        let n = slots.calls();
        let min_calls = self.min_calls();
        let mut now = Some(now);
        let mut until = None;
        let mut guard = None;
        let mut word = self.load();
        loop {
            if word.mode() != CLOSED || word.gen() != gen {
                // Tripped, or reset and tripped, since the call was permitted.
                return None;
            }
            let tally = word.tally();
            let evicted = match slots.evicts(gen, tally) {
                Evicts::Flags(evicted) => evicted,
                Evicts::NotYetWritten => {
                    wait_for_writer();
                    word = self.load();
                    continue;
                }
            };
            let next = tally.push(n, evicted, flags);
            if !self.trips(&tally_window(next, n), min_calls) {
                match self.cas(word, word.with_tally(next)) {
                    Ok(()) => {
                        slots.write(gen, tally, flags, || {
                            let now = self.load();
                            now.mode() == CLOSED && now.gen() == gen
                        });
                        return None;
                    }
                    Err(actual) => word = actual,
                }
                continue;
            }
            let Some(inner) = &guard else {
                guard = Some(self.lock());
                word = self.load();
                continue;
            };
            // Under the lock, the only writer of the open time. Written before the swap that
            // publishes it (release; read after, acquire); a swap that fails leaves it unread:
            // the breaker is still closed.
            let open_ns = self.config.open_for(inner.reopened);
            let until = *until.get_or_insert_with(|| {
                let now = now.take().expect("read once")();
                now.saturating_add(open_ns)
            });
            self.open_until.store(until, Ordering::Release);
            match self.cas(word, word.next(OPEN)) {
                Ok(()) => {
                    self.opened.fetch_add(1, Ordering::Relaxed);
                    return Some(Transition {
                        from: Mode::Closed,
                        to: Mode::Open,
                        open_ns,
                    });
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// An outcome under the lock: a probe's, or a closed call's into a time-based or large
    /// window.
    fn record_locked(
        &self,
        permit: Permit,
        failed: bool,
        slow: bool,
        flags: u8,
        now: u64,
    ) -> Option<Transition> {
        let mut inner = self.lock();
        let mut word = self.load();
        loop {
            if word.gen() != permit.gen {
                return None;
            }
            let next = match word.mode() {
                CLOSED if !permit.probe => {
                    inner.window.expire(now);
                    inner.window.push(now, flags);
                    if !self.trips(&inner.window.totals, self.min_calls()) {
                        return None;
                    }
                    // Closed only changes under this lock, so the trip cannot be lost.
                    return self.open(&mut inner, word, Mode::Closed, now);
                }
                HALF_OPEN if permit.probe && word.out() > 0 => {
                    if failed {
                        inner.reopened = inner.reopened.saturating_add(1);
                        return self.open(&mut inner, word, Mode::HalfOpen, now);
                    }
                    if inner.probes_gen != word.gen() {
                        inner.probes_gen = word.gen();
                        inner.slow_probes = 0;
                    }
                    let done = word.done() + 1;
                    if done < u64::from(self.config.half_open_calls) {
                        word.with_out(word.out() - 1).with_done(done)
                    } else {
                        let slow_probes = inner.slow_probes + u64::from(slow);
                        let probes = WindowSnapshot {
                            calls: done,
                            failures: 0,
                            slow: slow_probes,
                        };
                        if self.trips(&probes, 1) {
                            inner.reopened = inner.reopened.saturating_add(1);
                            return self.open(&mut inner, word, Mode::HalfOpen, now);
                        }
                        word.next(CLOSED)
                    }
                }
                _ => return None,
            };
            match self.cas(word, next) {
                Ok(()) => {
                    if next.mode() == CLOSED {
                        inner.window.clear();
                        inner.reopened = 0;
                        return Some(Transition {
                            from: Mode::HalfOpen,
                            to: Mode::Closed,
                            open_ns: 0,
                        });
                    }
                    inner.slow_probes += u64::from(slow);
                    return None;
                }
                Err(actual) => word = actual,
            }
        }
    }

    #[inline]
    fn trips(&self, w: &WindowSnapshot, min_calls: u32) -> bool {
        if w.failures == 0 && w.slow == 0 {
            // Neither rate can be reached (both are above 0), as computed below.
            return false;
        }
        let calls = w.calls as f64;
        w.calls >= u64::from(min_calls)
            && (w.failures as f64 >= self.config.failure_rate * calls
                || w.slow as f64 >= self.config.slow_call_rate * calls)
    }

    /// `min_calls`, but never more than a count window holds (or it could never trip).
    fn min_calls(&self) -> u32 {
        match self.config.window {
            WindowKind::Calls(n) => self.config.min_calls.min(n),
            WindowKind::Time { .. } => self.config.min_calls,
        }
    }

    /// Moves from `word` (closed or half-open, unchanged since the caller read it under the
    /// lock or retried) to open.
    fn open(&self, inner: &mut Inner, mut word: Word, from: Mode, now: u64) -> Option<Transition> {
        let open_ns = self.config.open_for(inner.reopened);
        let until = now.saturating_add(open_ns);
        loop {
            // Written before the state word publishes it (release), read after (acquire).
            self.open_until.store(until, Ordering::Release);
            match self.cas(word, word.next(OPEN)) {
                Ok(()) => break,
                // Only probes' places move without the lock: same generation, same mode.
                Err(actual) if actual.gen() == word.gen() => word = actual,
                Err(_) => return None,
            }
        }
        inner.window.clear();
        self.opened.fetch_add(1, Ordering::Relaxed);
        Some(Transition {
            from,
            to: Mode::Open,
            open_ns,
        })
    }

    /// Back to closed with an empty window, whatever the state (an operator's reset).
    pub fn reset(&self) -> Option<Transition> {
        let mut inner = self.lock();
        let mut word = self.load();
        loop {
            let from = self.mode_of(word);
            if from == Mode::Closed {
                return None;
            }
            match self.cas(word, word.next(CLOSED)) {
                Ok(()) => {
                    inner.window.clear();
                    inner.reopened = 0;
                    return Some(Transition {
                        from,
                        to: Mode::Closed,
                        open_ns: 0,
                    });
                }
                Err(actual) => word = actual,
            }
        }
    }

    fn mode_of(&self, word: Word) -> Mode {
        match word.mode() {
            CLOSED => Mode::Closed,
            OPEN => Mode::Open,
            _ => Mode::HalfOpen,
        }
    }

    /// The state now. An open breaker whose time is up stays "open" until a call comes (it
    /// turns half-open on that call); `retry_after_ns` then reads 0.
    pub fn mode(&self) -> Mode {
        self.mode_of(self.load())
    }

    /// Nanoseconds until an open breaker lets a probe through (0 when not open).
    pub fn retry_after_ns(&self, now: u64) -> u64 {
        if self.load().mode() != OPEN {
            return 0;
        }
        self.open_until.load(Ordering::Acquire).saturating_sub(now)
    }

    /// Probes in flight and probes succeeded (both 0 unless half-open).
    pub fn probes(&self) -> (u32, u32) {
        let word = self.load();
        if word.mode() != HALF_OPEN {
            return (0, 0);
        }
        (word.out() as u32, word.done() as u32)
    }

    pub fn counts(&self) -> BreakerCounts {
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BreakerCounts {
            permitted: count(&self.permitted),
            success: count(&self.success),
            failure: count(&self.failure),
            slow: count(&self.slow),
            rejected: count(&self.rejected),
            released: count(&self.released),
            opened: count(&self.opened),
        }
    }

    /// The window's totals at `now` (expired buckets removed).
    pub fn window(&self, now: u64) -> WindowSnapshot {
        if let Some(slots) = &self.slots {
            // Emptied on every change of state: only a closed word holds a tally.
            let word = self.load();
            if word.mode() != CLOSED {
                return WindowSnapshot::default();
            }
            return tally_window(word.tally(), slots.calls());
        }
        let mut inner = self.lock();
        inner.window.expire(now);
        inner.window.totals
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_rate: 0.5,
            slow_call_rate: 1.0,
            slow_call_ns: 100 * MS,
            window: WindowKind::Calls(10),
            min_calls: 4,
            open_ns: 1_000 * MS,
            open_max_ns: 3_500 * MS,
            half_open_calls: 2,
        }
    }

    fn call(b: &Breaker, now: u64, outcome: CallOutcome) -> Option<Transition> {
        let (permit, _) = b.try_acquire(now).expect("permitted");
        b.record(permit, outcome, MS, now)
    }

    fn trip(b: &Breaker, now: u64) {
        for _ in 0..4 {
            call(b, now, CallOutcome::Failure);
        }
        assert_eq!(b.mode(), Mode::Open);
    }

    #[test]
    fn closed_until_min_calls_then_opens_at_the_rate() {
        let b = Breaker::new(config()).unwrap();
        for _ in 0..3 {
            assert_eq!(call(&b, 0, CallOutcome::Failure), None);
        }
        assert_eq!(b.mode(), Mode::Closed);
        let t = call(&b, 0, CallOutcome::Failure).unwrap();
        assert_eq!(
            (t.from, t.to, t.open_ns),
            (Mode::Closed, Mode::Open, 1_000 * MS)
        );
        assert_eq!(b.counts().opened, 1);
    }

    #[test]
    fn below_the_rate_stays_closed() {
        let b = Breaker::new(config()).unwrap();
        for i in 0..100 {
            let outcome = if i % 3 == 2 {
                CallOutcome::Failure
            } else {
                CallOutcome::Success
            };
            assert_eq!(call(&b, 0, outcome), None);
        }
        assert_eq!(b.mode(), Mode::Closed);
        let w = b.window(0);
        assert_eq!(w.calls, 10);
    }

    #[test]
    fn count_window_forgets_the_oldest() {
        let b = Breaker::new(config()).unwrap();
        for i in 0..16 {
            // Two failures among the first six calls (never half), then ten successes.
            let outcome = if i == 2 || i == 5 {
                CallOutcome::Failure
            } else {
                CallOutcome::Success
            };
            call(&b, 0, outcome);
            if i == 5 {
                assert_eq!(b.window(0).failures, 2);
            }
        }
        assert_eq!(b.mode(), Mode::Closed);
        let w = b.window(0);
        assert_eq!((w.calls, w.failures), (10, 0), "{w:?}");
    }

    #[test]
    fn open_refuses_with_the_time_left_then_probes() {
        let b = Breaker::new(config()).unwrap();
        trip(&b, 0);
        assert_eq!(
            b.try_acquire(400 * MS),
            Err(Refused::Open {
                retry_after_ns: 600 * MS
            })
        );
        let (p1, t) = b.try_acquire(1_000 * MS).unwrap();
        assert!(p1.is_probe());
        assert_eq!(t.unwrap().to, Mode::HalfOpen);
        let (p2, t) = b.try_acquire(1_000 * MS).unwrap();
        assert!(t.is_none());
        assert_eq!(b.try_acquire(1_000 * MS), Err(Refused::Probing));
        assert_eq!(b.record(p1, CallOutcome::Success, MS, 1_001 * MS), None);
        // One finished, one out: still no third probe.
        assert_eq!(b.try_acquire(1_001 * MS), Err(Refused::Probing));
        let t = b.record(p2, CallOutcome::Success, MS, 1_002 * MS).unwrap();
        assert_eq!((t.from, t.to), (Mode::HalfOpen, Mode::Closed));
        assert_eq!(b.window(0).calls, 0);
    }

    #[test]
    fn a_failed_probe_reopens_for_twice_as_long_up_to_the_max() {
        let b = Breaker::new(config()).unwrap();
        trip(&b, 0);
        let mut now = 0;
        for expected in [2_000, 3_500, 3_500] {
            now += 10_000 * MS;
            let (p, _) = b.try_acquire(now).unwrap();
            let t = b.record(p, CallOutcome::Failure, MS, now).unwrap();
            assert_eq!(
                (t.from, t.to, t.open_ns),
                (Mode::HalfOpen, Mode::Open, expected * MS)
            );
        }
        // Closing resets the doubling.
        now += 10_000 * MS;
        for _ in 0..2 {
            let (p, _) = b.try_acquire(now).unwrap();
            b.record(p, CallOutcome::Success, MS, now);
        }
        assert_eq!(b.mode(), Mode::Closed);
        let t = {
            let mut last = None;
            for _ in 0..4 {
                last = call(&b, now, CallOutcome::Failure);
            }
            last.unwrap()
        };
        assert_eq!(t.open_ns, 1_000 * MS);
    }

    #[test]
    fn a_released_probe_frees_its_place() {
        let b = Breaker::new(config()).unwrap();
        trip(&b, 0);
        let (p1, _) = b.try_acquire(1_000 * MS).unwrap();
        let (_p2, _) = b.try_acquire(1_000 * MS).unwrap();
        assert_eq!(b.try_acquire(1_000 * MS), Err(Refused::Probing));
        b.release(p1);
        assert_eq!(b.probes(), (1, 0));
        assert!(b.try_acquire(1_000 * MS).is_ok());
    }

    #[test]
    fn late_outcomes_of_an_earlier_state_do_not_count() {
        let b = Breaker::new(config()).unwrap();
        let (stale, _) = b.try_acquire(0).unwrap();
        trip(&b, 0);
        let (probe, _) = b.try_acquire(1_000 * MS).unwrap();
        // The call permitted while closed fails late: no effect on the probation.
        assert_eq!(b.record(stale, CallOutcome::Failure, MS, 1_000 * MS), None);
        b.release(stale);
        assert_eq!(b.mode(), Mode::HalfOpen);
        assert_eq!(b.probes(), (1, 0));
        b.record(probe, CallOutcome::Success, MS, 1_000 * MS);
        assert_eq!(b.probes(), (0, 1));
        let counts = b.counts();
        assert_eq!(counts.failure, 5);
        assert_eq!(counts.released, 1);
    }

    #[test]
    fn a_probe_of_an_earlier_probation_frees_no_place_in_this_one() {
        let b = Breaker::new(config()).unwrap();
        trip(&b, 0);
        let (old, _) = b.try_acquire(1_000 * MS).unwrap();
        let (failing, _) = b.try_acquire(1_000 * MS).unwrap();
        b.record(failing, CallOutcome::Failure, MS, 1_000 * MS);
        // Open for 2 s; then a new probation with both places taken.
        let (p1, _) = b.try_acquire(4_000 * MS).unwrap();
        let (_p2, _) = b.try_acquire(4_000 * MS).unwrap();
        b.release(old);
        assert_eq!(b.record(old, CallOutcome::Success, MS, 4_000 * MS), None);
        assert_eq!(b.probes(), (2, 0));
        assert_eq!(b.try_acquire(4_000 * MS), Err(Refused::Probing));
        b.release(p1);
        assert_eq!(b.probes(), (1, 0));
    }

    #[test]
    fn slow_calls_trip_at_the_slow_rate_and_keep_probation_open() {
        let b = Breaker::new(config()).unwrap();
        for _ in 0..4 {
            let (p, _) = b.try_acquire(0).unwrap();
            b.record(p, CallOutcome::Success, 100 * MS, 0);
        }
        assert_eq!(b.mode(), Mode::Open);
        assert_eq!(b.counts().slow, 4);
        // Both probes slow: the slow rate (1.0) is still reached, open again.
        let now = 1_000 * MS;
        let (p1, _) = b.try_acquire(now).unwrap();
        let (p2, _) = b.try_acquire(now).unwrap();
        assert_eq!(b.record(p1, CallOutcome::Success, 200 * MS, now), None);
        let t = b.record(p2, CallOutcome::Success, 200 * MS, now).unwrap();
        assert_eq!((t.from, t.to), (Mode::HalfOpen, Mode::Open));
        // One fast probe of two: 0.5 < 1.0, closed.
        let now = now + 2_000 * MS;
        let (p1, _) = b.try_acquire(now).unwrap();
        let (p2, _) = b.try_acquire(now).unwrap();
        b.record(p1, CallOutcome::Success, 200 * MS, now);
        let t = b.record(p2, CallOutcome::Success, MS, now).unwrap();
        assert_eq!(t.to, Mode::Closed);
    }

    #[test]
    fn time_window_forgets_old_buckets() {
        let mut c = config();
        c.window = WindowKind::Time {
            span_ns: 10_000 * MS,
        };
        let b = Breaker::new(c).unwrap();
        for s in 0..3 {
            call(&b, s * 1_000 * MS, CallOutcome::Success);
            call(&b, s * 1_000 * MS, CallOutcome::Success);
            call(&b, s * 1_000 * MS, CallOutcome::Failure);
        }
        assert_eq!(b.window(2_500 * MS).calls, 9);
        // Ten one-second buckets: at 10.5 s the calls of second 0 have left.
        assert_eq!(b.window(10_500 * MS).calls, 6);
        assert_eq!(b.window(11_500 * MS).calls, 3);
        assert_eq!(b.window(12_000 * MS).calls, 0);
        assert_eq!(b.window(100_000 * MS), WindowSnapshot::default());
        // Four failures in one bucket after a quiet spell trip it: the old calls are gone.
        for _ in 0..4 {
            call(&b, 100_000 * MS, CallOutcome::Failure);
        }
        assert_eq!(b.mode(), Mode::Open);
    }

    #[test]
    fn a_lock_free_window_decides_as_the_locked_ring() {
        // The same outcomes into a lock-free window and into the ring the lock keeps: the same
        // window after each call, and the same trips.
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        for n in [1, 2, 3, 10, MAX_LOCK_FREE_CALLS] {
            let mut c = config();
            c.window = WindowKind::Calls(n);
            c.min_calls = 3;
            let b = Breaker::new(c).unwrap();
            assert!(b.slots.is_some());
            let mut ring = Window::new(WindowKind::Calls(n));
            for i in 0..3 * n + 20 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Mostly successes, so that it trips now and then.
                let failed = seed % 5 == 0;
                let slow = seed % 7 == 0;
                let (permit, _) = b.try_acquire(u64::from(i) * MS).unwrap_or_else(|_| {
                    b.reset();
                    ring.clear();
                    b.try_acquire(0).unwrap()
                });
                let flags = if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
                ring.push(0, flags);
                let outcome = if failed {
                    CallOutcome::Failure
                } else {
                    CallOutcome::Success
                };
                let duration = if slow { 100 * MS } else { MS };
                let tripped = b.record(permit, outcome, duration, u64::from(i) * MS);
                assert_eq!(tripped.is_some(), b.trips(&ring.totals, b.min_calls()));
                if tripped.is_some() {
                    ring.clear();
                }
                assert_eq!(b.window(0), ring.totals, "n={n} call {i}");
            }
        }
    }

    #[test]
    fn larger_and_time_windows_keep_the_lock() {
        let mut c = config();
        c.window = WindowKind::Calls(MAX_LOCK_FREE_CALLS + 1);
        assert!(Breaker::new(c.clone()).unwrap().slots.is_none());
        c.window = WindowKind::Time { span_ns: 10 * MS };
        assert!(Breaker::new(c).unwrap().slots.is_none());
    }

    #[test]
    fn a_lock_free_window_reads_the_time_only_to_trip() {
        let b = Breaker::new(config()).unwrap();
        let reads = std::cell::Cell::new(0);
        let now = || {
            reads.set(reads.get() + 1);
            5_000 * MS
        };
        for _ in 0..3 {
            let (p, _) = b.try_acquire(0).unwrap();
            assert_eq!(b.record_with(p, CallOutcome::Failure, 0, now), None);
        }
        assert_eq!(reads.get(), 0);
        let (p, _) = b.try_acquire(0).unwrap();
        let t = b.record_with(p, CallOutcome::Failure, 0, now).unwrap();
        assert_eq!(reads.get(), 1);
        // The open time starts when the trip read it.
        assert_eq!(t.open_ns, 1_000 * MS);
        assert_eq!(b.retry_after_ns(5_000 * MS), 1_000 * MS);
        // A probe's outcome takes the lock and the time.
        let (p, _) = b.try_acquire(6_000 * MS).unwrap();
        b.record_with(p, CallOutcome::Success, 0, now);
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn a_closed_outcome_from_before_a_reset_does_not_count() {
        let b = Breaker::new(config()).unwrap();
        let (stale, _) = b.try_acquire(0).unwrap();
        trip(&b, 0);
        b.reset();
        // Closed again, in a later generation: the old call's failure is not in this window.
        assert_eq!(b.record(stale, CallOutcome::Failure, MS, 0), None);
        assert_eq!(b.window(0), WindowSnapshot::default());
        assert_eq!(b.counts().failure, 5);
        for _ in 0..3 {
            call(&b, 0, CallOutcome::Failure);
        }
        assert_eq!(b.mode(), Mode::Closed, "the stale failure counted");
    }

    #[test]
    fn the_window_reads_empty_while_open_or_half_open() {
        let b = Breaker::new(config()).unwrap();
        trip(&b, 0);
        assert_eq!(b.window(0), WindowSnapshot::default());
        let (_probe, _) = b.try_acquire(1_000 * MS).unwrap();
        // The state word's probe fields are not a tally.
        assert_eq!(b.probes(), (1, 0));
        assert_eq!(b.window(0), WindowSnapshot::default());
    }

    #[test]
    fn reset_closes_and_clears() {
        let b = Breaker::new(config()).unwrap();
        trip(&b, 0);
        let t = b.reset().unwrap();
        assert_eq!((t.from, t.to), (Mode::Open, Mode::Closed));
        assert_eq!(b.reset(), None);
        assert!(b.try_acquire(0).is_ok());
    }

    #[test]
    fn permits_round_trip_through_bits() {
        let b = Breaker::new(config()).unwrap();
        trip(&b, 0);
        let (p, _) = b.try_acquire(1_000 * MS).unwrap();
        assert_eq!(Permit::from_bits(p.to_bits()), p);
    }

    #[test]
    fn bad_settings_name_the_argument() {
        type Edit = fn(&mut BreakerConfig);
        let cases: [(&str, Edit); 8] = [
            ("failure_rate", |c| c.failure_rate = f64::NAN),
            ("failure_rate", |c| c.failure_rate = 0.0),
            ("slow_call_rate", |c| c.slow_call_rate = 1.5),
            ("window", |c| c.window = WindowKind::Calls(0)),
            ("window", |c| c.window = WindowKind::Time { span_ns: 0 }),
            ("min_calls", |c| c.min_calls = 0),
            ("half_open_calls", |c| c.half_open_calls = 70_000),
            ("open_for_max", |c| c.open_max_ns = 1),
        ];
        for (arg, edit) in cases {
            let mut c = config();
            edit(&mut c);
            assert_eq!(Breaker::new(c).unwrap_err().arg, arg);
        }
    }

    #[test]
    fn open_time_doubling_saturates() {
        let mut c = config();
        c.open_max_ns = MAX_SPAN_NS;
        assert_eq!(c.open_for(0), 1_000 * MS);
        assert_eq!(c.open_for(3), 8_000 * MS);
        assert_eq!(c.open_for(40), MAX_SPAN_NS);
        assert_eq!(c.open_for(200), MAX_SPAN_NS);
    }
}
