//! The asyncio runtime of the bindings: how a semaphore acquisition waits on an asyncio (or
//! uvloop) event loop without a coroutine frame, an `asyncio.Future` or a `Handle` per waiter.
//!
//! The rest of the bindings use it through this module only:
//! - [`wait`], the entry point: the awaitable of an acquisition that must wait (a native
//!   `Waiter`, which is the awaitable, the queued ticket, the waker and the future at once).
//! - [`Permits`]: a semaphore's state, which the `Semaphore` binding shares with its waiters.
//! - [`wake_all`]: delivers the wake-ups a release, close or resize returned.
//! - [`running_loop`]: the loop running in this thread (also read by `LoopClock`).
//! - [`init`]: the module initialisation it needs; and the classes the extension exports.
//!
//! Inside: `waiter` (the `Waiter`), `batch` (one `call_soon` per loop turn for the wake-ups),
//! `deadlines` (one loop timer per semaphore and loop for the timeouts), `permits`,
//! `result_lookup` (the Task's lookup of `result` by C string, answered without a string:
//! the one `tp_getattr` slot, and why it is sound), and `running` (the running loop without
//! a system call on 3.10/3.11). It depends on the core and
//! on the bindings' shared helpers (`errors`, `critical`), never on a limiter's binding.

mod batch;
mod deadlines;
mod permits;
mod result_lookup;
mod running;
mod waiter;

use std::sync::Arc;

use pyo3::prelude::*;

pub(crate) use batch::WakeBatch;
pub(crate) use deadlines::Deadlines;
pub(crate) use permits::Permits;
pub(crate) use running::{_forget_running_loop, running_loop};
pub(crate) use waiter::{_count_result_lookups, wake_all, Waiter};

/// The awaitable of an asyncio acquisition of `n` of `permits` that could not be admitted at
/// once, on `event_loop` (running in this thread); `owner` is the semaphore's Python object.
/// Nothing is queued until it is first awaited; `timeout` (seconds, `None` or infinite for no
/// limit) counts from then.
pub(crate) fn wait(
    owner: &Bound<'_, PyAny>,
    permits: &Arc<Permits>,
    n: u64,
    timeout: Option<f64>,
    event_loop: Bound<'_, PyAny>,
) -> PyResult<Py<PyAny>> {
    Waiter::create(owner, permits, n, timeout, event_loop)
}

/// Module initialisation: the waiter's `result` lookup by C string, and forgetting the
/// cached running loop in forked children.
pub(crate) fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    waiter::install_result_shortcut(m.py());
    running::register_fork_hook(m)
}
