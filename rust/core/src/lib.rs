//! Pure-Rust core of `admission`: the decisions, with no Python in sight.
//!
//! Every algorithm here takes the current time as an argument (`now` in monotonic
//! nanoseconds) instead of reading a clock itself. That keeps the core deterministic,
//! lets the bindings choose the clock (real, manual, or the event loop's), and makes
//! each decision testable and model-checkable.
//!
//! No `unsafe` anywhere in the core: the lock-free parts are atomics and compare-and-swap
//! loops (checked by the loom models in `tests/loom.rs`), the rest is behind mutexes.
#![forbid(unsafe_code)]

pub mod breaker;
pub mod clock;
mod closed_window;
pub mod error;
pub mod gcra;
pub mod histogram;
pub mod keyed;
pub mod keyed_state;
pub mod keyed_table;
pub mod padded;
mod queue;
pub mod rate;
pub mod semaphore;
pub mod shared;
pub mod shared_keyed;
pub mod siphash;
pub mod stats;
mod sync;
pub mod waitq;
pub mod wakers;
pub mod window;

pub use error::{AcquireError, ConfigError};
pub use gcra::Gcra;
pub use histogram::{HistogramSnapshot, WaitHistogram, WAIT_BOUNDS_NS, WAIT_BUCKETS};
pub use rate::{take_all, untake_all, Adjust, Decision, Part, RateLimit};
pub use semaphore::{Enqueued, Outcome, Semaphore, SemaphoreError, Ticket, MAX_PERMITS};
pub use shared::{SharedBucket, SharedSemaphore};
pub use stats::{Counters, CountersSnapshot, Refusal};
pub use waitq::{Entered, RateTicket, Stand, Status, Withdrawal};
pub use wakers::Wakers;
pub use window::SlidingWindow;

/// Nanoseconds in one second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Largest span of time (about 73 years) a limiter may need to represent. Configurations whose
/// full-capacity window exceeds it are refused, so no arithmetic on timestamps can overflow.
pub const MAX_SPAN_NS: u64 = 1 << 61;

/// Latest time (ns) a rate limiter accepts: a bucket's `tat` stays below its `QUEUED` bit, with
/// room for a full queue of reservations ahead of it (about 73 years of clock).
pub const MAX_TIME_NS: u64 = 1 << 61;
