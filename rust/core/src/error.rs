//! Errors of the core. The bindings map each to one Python exception type.

use std::fmt;

/// A configuration value that can never work. Names the argument and the value, so the
/// message can go to the user as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub arg: &'static str,
    pub message: String,
}

impl ConfigError {
    pub fn new(arg: &'static str, message: impl Into<String>) -> Self {
        Self {
            arg,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Why an acquisition was refused outright (as opposed to "not now").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireError {
    /// The request can never be admitted: its cost exceeds the capacity.
    Capacity { cost: u64, capacity: u64 },
    /// Waiting would exceed the caller's deadline; `needed_ns` is how long it would take.
    WouldExceedDeadline { needed_ns: u64 },
    /// The clock reads a time the limiter cannot represent (a manual clock advanced by
    /// decades): refused rather than wrapped.
    ClockOutOfRange { now_ns: u64 },
}

impl fmt::Display for AcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Capacity { cost, capacity } => write!(
                f,
                "cost {cost} exceeds the capacity {capacity}: it can never be admitted"
            ),
            Self::WouldExceedDeadline { needed_ns } => write!(
                f,
                "admission needs {:.6} s, more than the time allowed",
                *needed_ns as f64 / 1e9
            ),
            Self::ClockOutOfRange { now_ns } => write!(
                f,
                "the clock reads {:.3} s, beyond the {:.3} s a limiter can represent",
                *now_ns as f64 / 1e9,
                crate::gcra::MAX_TIME_NS as f64 / 1e9
            ),
        }
    }
}

impl std::error::Error for AcquireError {}

/// Checks a float argument is finite and strictly positive.
pub(crate) fn positive_finite(arg: &'static str, value: f64) -> Result<f64, ConfigError> {
    if value.is_nan() || value.is_infinite() {
        return Err(ConfigError::new(
            arg,
            format!("{arg} must be a finite number, got {value}"),
        ));
    }
    if value <= 0.0 {
        return Err(ConfigError::new(
            arg,
            format!("{arg} must be > 0, got {value}"),
        ));
    }
    Ok(value)
}

/// Converts seconds to whole nanoseconds, refusing values that do not fit the core's span.
pub(crate) fn seconds_to_ns(arg: &'static str, seconds: f64) -> Result<u64, ConfigError> {
    let seconds = positive_finite(arg, seconds)?;
    let ns = (seconds * 1e9).round();
    if ns < 1.0 {
        return Err(ConfigError::new(
            arg,
            format!("{arg} must be at least 1 ns, got {seconds} s"),
        ));
    }
    if ns >= crate::MAX_SPAN_NS as f64 {
        return Err(ConfigError::new(
            arg,
            format!("{arg} is too long: {seconds} s"),
        ));
    }
    Ok(ns as u64)
}
