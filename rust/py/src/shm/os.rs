//! What the shared-memory store asks the OS (Linux): the host-wide monotonic clock, who this
//! process is (pid and start time), whether another process is still the one that took a
//! lease, and the futex that lets waiters in other processes sleep on a shared word.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process of the host (the limiters'
/// default clock counts from each process's own start, so it cannot be shared).
#[inline(always)]
pub fn host_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    // Boot-relative: below 2^61 ns (73 years of uptime), as the limiters require.
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Bits of the start time in a holder tag; the pid takes the 22 above them (pid_max <= 2^22).
const START_BITS: u32 = 42;

/// `(state, start time in clock ticks since boot)` of process `pid`, from `/proc/PID/stat`;
/// `None` if there is no such process.
fn stat(pid: u32) -> Option<(u8, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces or ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    // Field 3 is the state; field 22 (the 19th after it) the start time.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

fn tag_of(pid: u32, start: u64) -> u64 {
    (u64::from(pid) << START_BITS) | (start & ((1 << START_BITS) - 1))
}

/// This process's tag, cached; cleared in a forked child (see [`init`]).
static TAG: AtomicU64 = AtomicU64::new(0);

extern "C" fn forget_tag_in_child() {
    TAG.store(0, Ordering::Relaxed);
}

/// Registers the fork handler that makes a child compute its own tag.
pub fn init() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe, as a child handler
    // must be); registering handlers has no other precondition.
    unsafe { libc::pthread_atfork(None, None, Some(forget_tag_in_child)) };
}

/// Who this process is, as a holder of leases: its pid and start time (a pid reused later
/// by another process has another start time), never 0.
pub fn own_tag() -> u64 {
    let tag = TAG.load(Ordering::Relaxed);
    if tag != 0 {
        return tag;
    }
    let pid = std::process::id();
    let start = stat(pid).map_or(0, |(_, start)| start);
    let tag = tag_of(pid, start);
    TAG.store(tag, Ordering::Relaxed);
    tag
}

/// Whether process `pid` runs, is not a zombie (killed but not yet reaped by its parent),
/// and `same` says its tag is the one recorded.
fn runs(pid: u64, same: impl Fn(u64) -> bool) -> bool {
    matches!(stat(pid as u32), Some((state, start))
        if same(tag_of(pid as u32, start)) && state != b'Z' && state != b'X')
}

/// Whether the process that took the lease tagged `tag` still runs: same pid, same start
/// time (a pid reused later is another process), and not a zombie.
pub fn is_alive(tag: u64) -> bool {
    runs(tag >> START_BITS, |t| t == tag)
}

/// This process's tag in 62 bits (two fewer bits of start time), for a keyed table's claims
/// (`admission_core::shared_keyed::MAX_TAG`).
pub fn own_claim_tag() -> u64 {
    own_tag() >> 2
}

/// [`is_alive`] for a tag of [`own_claim_tag`].
pub fn claim_is_alive(tag: u64) -> bool {
    runs(tag >> (START_BITS - 2), |t| t >> 2 == tag)
}

/// 64 random bits from the kernel (the hash key of a keyed table, a segment's instance).
pub fn random_word() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: writes at most `bytes.len()` bytes into the buffer, which is valid for them.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    assert_eq!(
        n,
        8,
        "getrandom failed: {}",
        std::io::Error::last_os_error()
    );
    u64::from_le_bytes(bytes)
}

/// The 32-bit futex word inside a 64-bit one: its low half.
fn futex_word(word: &AtomicU64) -> &AtomicU32 {
    let base = (word as *const AtomicU64).cast::<AtomicU32>();
    let low = if cfg!(target_endian = "little") { 0 } else { 1 };
    // SAFETY: an AtomicU64 is 8 bytes aligned to 8, so both halves are valid, aligned
    // AtomicU32 locations that live as long as `word`; every access to them is atomic.
    unsafe { &*base.add(low) }
}

/// Sleeps until `word`'s low 32 bits differ from `seen`, a wake-up, or `timeout` passes.
pub fn wait(word: &AtomicU64, seen: u64, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: the address is a valid, aligned 32-bit word in shared memory (not
    // FUTEX_PRIVATE: the sleepers are in other processes); `ts` outlives the call. The
    // kernel compares it with `seen` atomically and returns at once if it differs.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            futex_word(word).as_ptr(),
            libc::FUTEX_WAIT,
            seen as u32,
            &ts as *const libc::timespec,
        )
    };
}

/// Wakes every process sleeping on `word` (see [`wait`]).
pub fn wake_all(word: &AtomicU64) {
    // SAFETY: as in `wait`; FUTEX_WAKE only reads the address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            futex_word(word).as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
        )
    };
}
