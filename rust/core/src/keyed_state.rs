//! The per-key states of the keyed limiters, and their decisions: the same rules as the
//! unkeyed [`Gcra`](crate::Gcra), [`SlidingWindow`](crate::SlidingWindow) and
//! [`Semaphore`](crate::Semaphore), on state small enough for a million keys.
//!
//! Each configuration is built through the unkeyed limiter's own constructor, so both accept
//! and refuse exactly the same arguments with the same messages.
//!
//! Only immediate decisions live here. A key whose callers must wait lends its state to an
//! unkeyed limiter ([`Keyed::lend`](crate::keyed::Keyed::lend)), whose queue serves them.

use std::collections::VecDeque;

use crate::error::AcquireError;
use crate::keyed::KeyState;
use crate::rate::Decision;
use crate::semaphore::SemaphoreError;
use crate::{ConfigError, Gcra, Semaphore, SlidingWindow, MAX_TIME_NS};

/// A token bucket's configuration: `T` and `burst` as [`Gcra`] computes them.
#[derive(Debug, Clone, Copy)]
pub struct BucketConfig {
    pub emission_ns: u64,
    pub burst: u64,
}

impl BucketConfig {
    pub fn new(rate: f64, per_s: f64, burst: u64) -> Result<Self, ConfigError> {
        let gcra = Gcra::<()>::new(rate, per_s, burst)?;
        Ok(Self {
            emission_ns: gcra.emission_ns(),
            burst: gcra.burst(),
        })
    }

    fn capacity_ns(&self) -> u64 {
        self.burst * self.emission_ns
    }

    fn check(&self, now: u64, cost: u64) -> Result<u64, AcquireError> {
        if cost > self.burst {
            return Err(AcquireError::Capacity {
                cost,
                capacity: self.burst,
            });
        }
        if now >= MAX_TIME_NS {
            return Err(AcquireError::ClockOutOfRange { now_ns: now });
        }
        Ok(cost * self.emission_ns)
    }
}

/// One key's token bucket: its theoretical arrival time (0: full, as a fresh bucket).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BucketKey {
    pub tat: u64,
}

impl KeyState for BucketKey {
    type Config = BucketConfig;

    fn at_rest(&self, _: &BucketConfig, now: u64) -> bool {
        self.tat <= now
    }
}

impl BucketKey {
    /// Admits `cost` at `now` if it fits; a refusal writes nothing.
    #[inline]
    pub fn try_take(
        &mut self,
        config: &BucketConfig,
        now: u64,
        cost: u64,
    ) -> Result<bool, AcquireError> {
        let increment = config.check(now, cost)?;
        let next = self.tat.max(now) + increment;
        if next > now + config.capacity_ns() {
            return Ok(false);
        }
        self.tat = next;
        Ok(true)
    }

    /// What `try_take` would decide (the same figures as the unkeyed bucket's `peek`).
    pub fn peek(
        &self,
        config: &BucketConfig,
        now: u64,
        cost: u64,
    ) -> Result<Decision, AcquireError> {
        let increment = config.check(now, cost)?;
        let tat = self.tat.max(now);
        let limit = now + config.capacity_ns();
        let next = tat + increment;
        Ok(if next <= limit {
            Decision {
                allowed: true,
                remaining: (limit - next) / config.emission_ns,
                retry_after_ns: 0,
                reset_after_ns: next - now,
            }
        } else {
            Decision {
                allowed: false,
                remaining: (limit - tat) / config.emission_ns,
                retry_after_ns: next - limit,
                reset_after_ns: tat - now,
            }
        })
    }

    /// Whole tokens in use at `now`, rounded up: what an unkeyed bucket must be charged to
    /// answer no more generously than this one.
    pub fn used(&self, config: &BucketConfig, now: u64) -> u64 {
        self.tat.saturating_sub(now).div_ceil(config.emission_ns)
    }
}

/// A sliding window's configuration, as [`SlidingWindow`] checks it.
#[derive(Debug, Clone, Copy)]
pub struct WindowConfig {
    pub limit: u64,
    pub window_ns: u64,
}

impl WindowConfig {
    pub fn new(limit: u64, window_s: f64) -> Result<Self, ConfigError> {
        let window = SlidingWindow::<()>::new(limit, window_s)?;
        Ok(Self {
            limit: window.limit(),
            window_ns: window.window_ns(),
        })
    }

    fn check(&self, now: u64, cost: u64) -> Result<(), AcquireError> {
        if cost > self.limit {
            return Err(AcquireError::Capacity {
                cost,
                capacity: self.limit,
            });
        }
        if now >= MAX_TIME_NS {
            return Err(AcquireError::ClockOutOfRange { now_ns: now });
        }
        Ok(())
    }
}

/// One key's window: the admissions still inside it, `(time, cost)` in time order, and
/// their total; no allocation while the window is empty.
#[derive(Debug, Default)]
pub struct WindowKey {
    log: Option<Box<WindowLog>>,
}

#[derive(Debug, Default)]
struct WindowLog {
    entries: VecDeque<(u64, u64)>,
    total: u64,
}

impl KeyState for WindowKey {
    type Config = WindowConfig;

    fn at_rest(&self, config: &WindowConfig, now: u64) -> bool {
        // `map_or(true, ..)`, not `is_none_or`: the crate supports Rust 1.80.
        self.log.as_ref().map_or(true, |log| {
            log.entries
                .back()
                .map_or(true, |&(ts, _)| ts.saturating_add(config.window_ns) <= now)
        })
    }
}

impl WindowKey {
    /// Drops what has left the window ending at `now` (and the log itself once empty).
    fn forget(&mut self, config: &WindowConfig, now: u64) {
        if let Some(log) = &mut self.log {
            while let Some(&(ts, cost)) = log.entries.front() {
                if ts.saturating_add(config.window_ns) > now {
                    return;
                }
                log.total -= cost;
                log.entries.pop_front();
            }
            self.log = None;
        }
    }

    fn total(&self) -> u64 {
        self.log.as_ref().map_or(0, |log| log.total)
    }

    /// Admits `cost` at `now` if the window has room; a refusal only forgets what has left
    /// the window, which changes no decision.
    #[inline]
    pub fn try_take(
        &mut self,
        config: &WindowConfig,
        now: u64,
        cost: u64,
    ) -> Result<bool, AcquireError> {
        config.check(now, cost)?;
        self.forget(config, now);
        if self.total() + cost > config.limit {
            return Ok(false);
        }
        if cost > 0 {
            let log = self.log.get_or_insert_with(Box::default);
            log.total += cost;
            match log.entries.back_mut() {
                Some(last) if last.0 == now => last.1 += cost,
                _ => log.entries.push_back((now, cost)),
            }
        }
        Ok(true)
    }

    /// What `try_take` would decide.
    pub fn peek(
        &self,
        config: &WindowConfig,
        now: u64,
        cost: u64,
    ) -> Result<Decision, AcquireError> {
        config.check(now, cost)?;
        let live = || {
            self.log
                .iter()
                .flat_map(|log| log.entries.iter())
                .filter(|&&(ts, _)| ts.saturating_add(config.window_ns) > now)
        };
        let total: u64 = live().map(|&(_, c)| c).sum();
        let newest = live().next_back().map(|&(ts, _)| ts);
        if total + cost <= config.limit {
            let last = if cost > 0 { Some(now) } else { newest };
            return Ok(Decision {
                allowed: true,
                remaining: config.limit - total - cost,
                retry_after_ns: 0,
                reset_after_ns: last.map_or(0, |ts| ts + config.window_ns - now),
            });
        }
        // The earliest time enough of the oldest admissions have left.
        let excess = total + cost - config.limit;
        let mut expired = 0;
        let mut at = now;
        for &(ts, c) in live() {
            expired += c;
            if expired >= excess {
                at = ts + config.window_ns;
                break;
            }
        }
        Ok(Decision {
            allowed: false,
            remaining: config.limit - total,
            retry_after_ns: at - now,
            reset_after_ns: newest.map_or(0, |ts| ts + config.window_ns - now),
        })
    }

    /// The admissions still inside the window at `now`, oldest first, for an unkeyed window
    /// taking this key's place.
    pub fn admissions(&self, config: &WindowConfig, now: u64) -> Vec<(u64, u64)> {
        self.log
            .iter()
            .flat_map(|log| log.entries.iter())
            .filter(|&&(ts, _)| ts.saturating_add(config.window_ns) > now)
            .copied()
            .collect()
    }
}

/// A semaphore's configuration: its limit, as [`Semaphore`] checks it.
#[derive(Debug, Clone, Copy)]
pub struct PermitConfig {
    pub limit: u64,
}

impl PermitConfig {
    pub fn new(limit: u64) -> Result<Self, SemaphoreError> {
        let semaphore = Semaphore::<()>::new(limit)?;
        Ok(Self {
            limit: semaphore.limit(),
        })
    }
}

/// One key's permits in use.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PermitKey {
    pub held: u64,
}

impl KeyState for PermitKey {
    type Config = PermitConfig;

    fn at_rest(&self, _: &PermitConfig, _: u64) -> bool {
        self.held == 0
    }

    fn holds(&self) -> bool {
        self.held > 0
    }
}

impl PermitKey {
    /// Takes `n` permits if they are free.
    #[inline]
    pub fn try_take(&mut self, config: &PermitConfig, n: u64) -> Result<bool, SemaphoreError> {
        if n > config.limit {
            return Err(SemaphoreError::Capacity {
                n,
                limit: config.limit,
            });
        }
        if self.held + n > config.limit {
            return Ok(false);
        }
        self.held += n;
        Ok(true)
    }

    /// Gives back `n` permits; refuses to give back more than are held.
    pub fn release(&mut self, n: u64) -> Result<(), SemaphoreError> {
        if n > self.held {
            return Err(SemaphoreError::OverRelease {
                n,
                in_use: self.held,
            });
        }
        self.held -= n;
        Ok(())
    }
}
