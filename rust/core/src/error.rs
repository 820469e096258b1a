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
                crate::MAX_TIME_NS as f64 / 1e9
            ),
        }
    }
}

impl std::error::Error for AcquireError {}

/// A float in a message, as Python's `repr` shows it: the shortest digits that round-trip, in
/// scientific notation below 1e-4 and from 1e16 on (`1e+300`, `1.5e-07`), so a huge or tiny
/// value never prints hundreds of digits. Whole numbers below 1e16 print without a fraction
/// (`5`, as the caller most likely wrote them).
#[derive(Clone, Copy, Debug)]
pub struct Num(pub f64);

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v.is_nan() {
            return f.write_str("nan");
        }
        if v.is_infinite() {
            return f.write_str(if v > 0.0 { "inf" } else { "-inf" });
        }
        let abs = v.abs();
        if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
            let s = format!("{v:e}");
            let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            return write!(f, "{mantissa}e{sign}{digits:0>2}");
        }
        if v.fract() == 0.0 {
            return write!(f, "{v}");
        }
        write!(f, "{v:?}")
    }
}

/// Checks a float argument is finite and strictly positive.
pub(crate) fn positive_finite(arg: &'static str, value: f64) -> Result<f64, ConfigError> {
    if value.is_nan() || value.is_infinite() {
        return Err(ConfigError::new(
            arg,
            format!("{arg} must be a finite number, got {}", Num(value)),
        ));
    }
    if value <= 0.0 {
        return Err(ConfigError::new(
            arg,
            format!("{arg} must be > 0, got {}", Num(value)),
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
            format!("{arg} must be at least 1 ns, got {} s", Num(seconds)),
        ));
    }
    if ns >= crate::MAX_SPAN_NS as f64 {
        return Err(ConfigError::new(
            arg,
            format!("{arg} is too long: {} s", Num(seconds)),
        ));
    }
    Ok(ns as u64)
}

#[cfg(all(test, not(loom)))]
mod num_tests {
    use super::*;

    #[test]
    fn floats_in_messages_read_like_python_repr() {
        let cases = [
            (1e300, "1e+300"),
            (1e-300, "1e-300"),
            (1.5e-7, "1.5e-07"),
            (-2.5e20, "-2.5e+20"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000"),
            (5.0, "5"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.25, "0.25"),
            (0.0, "0"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
        ];
        for (v, want) in cases {
            assert_eq!(Num(v).to_string(), want, "{v:?}");
        }
    }
}
