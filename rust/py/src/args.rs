//! Conversions of user arguments, with errors that name the argument and the value.
//!
//! PyO3's own extraction errors do not always name the argument ("must be real number, not
//! str"), so every user-facing argument goes through these.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyFloat, PyInt};
use pyo3::Borrowed;

use admission_core::error::Num;

static CHECK_TIMEOUT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

/// An optional argument that tells an omitted argument from an explicit `None`.
///
/// PyO3 maps an explicit `None` to `None` for an `Option<T>` argument, so `n: Option<..>` with
/// `signature = (n=None)` cannot refuse `try_acquire(None)`. Declare the argument as
/// `n: Arg<'_, '_>` with `signature = (n=Arg::OMITTED)` instead and read it with
/// [`count_arg`]: omitted gives the default, `None` (like any non-integer) a `TypeError`.
#[derive(Clone, Copy)]
pub struct Arg<'a, 'py>(Option<Borrowed<'a, 'py, PyAny>>);

impl Arg<'_, '_> {
    /// The argument was not passed.
    pub const OMITTED: Self = Arg(None);
}

impl<'a, 'py> FromPyObject<'a, 'py> for Arg<'a, 'py> {
    type Error = PyErr;

    #[inline(always)]
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(Arg(Some(obj)))
    }
}

/// [`count`] of an [`Arg`]: `default` when omitted; an explicit `None` is a `TypeError`.
#[inline(always)]
pub fn count_arg(arg: &str, obj: Arg<'_, '_>, default: u64) -> PyResult<u64> {
    match obj.0 {
        None => Ok(default),
        Some(obj) => count(arg, Some(&obj), default),
    }
}

/// A non-negative integer (cost, permit count, limit). `None` (the Rust `Option`: an omitted
/// argument) means `default`; see [`Arg`] to refuse a Python `None`.
#[inline(always)]
pub fn count(arg: &str, obj: Option<&Bound<'_, PyAny>>, default: u64) -> PyResult<u64> {
    let Some(obj) = obj else { return Ok(default) };
    if obj.is_instance_of::<PyBool>() || !obj.is_instance_of::<PyInt>() {
        // Also accept integer-like objects (numpy ints) through __index__, never floats.
        if obj.is_instance_of::<PyBool>() || obj.is_instance_of::<PyFloat>() {
            return Err(not_an_integer(arg, obj));
        }
        let index = obj
            .call_method0("__index__")
            .map_err(|_| not_an_integer(arg, obj))?;
        return count(arg, Some(&index), default);
    }
    match obj.extract::<i64>() {
        Ok(v) if v >= 0 => Ok(v as u64),
        Ok(v) => Err(PyValueError::new_err(format!(
            "{arg} must be a non-negative integer, got {v}"
        ))),
        Err(_) => Err(PyValueError::new_err(format!(
            "{arg} is out of range: {}",
            obj.repr().map(|r| r.to_string()).unwrap_or_default()
        ))),
    }
}

fn not_an_integer(arg: &str, obj: &Bound<'_, PyAny>) -> PyErr {
    PyTypeError::new_err(format!(
        "{arg} must be an integer, got {} ({})",
        obj.repr().map(|r| r.to_string()).unwrap_or_default(),
        type_name(obj)
    ))
}

/// An optional label: `None` (omitted or explicit) or a `str`; anything else is a `TypeError`
/// naming `arg` and the value (PyO3's own says only "'int' object is not an instance of
/// 'str'").
pub fn label(arg: &str, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<String>> {
    match obj {
        None => Ok(None),
        Some(obj) if obj.is_none() => Ok(None),
        Some(obj) => obj.extract::<String>().map(Some).map_err(|_| {
            PyTypeError::new_err(format!(
                "{arg} must be a str or None, got {} ({})",
                obj.repr().map(|r| r.to_string()).unwrap_or_default(),
                type_name(obj)
            ))
        }),
    }
}

/// A real number (int or float, not bool). Range checks are the core's.
pub fn real(arg: &str, obj: &Bound<'_, PyAny>) -> PyResult<f64> {
    if obj.is_instance_of::<PyBool>() {
        return Err(not_a_number(arg, obj));
    }
    obj.extract::<f64>().map_err(|_| not_a_number(arg, obj))
}

fn not_a_number(arg: &str, obj: &Bound<'_, PyAny>) -> PyErr {
    PyTypeError::new_err(format!(
        "{arg} must be a number, got {} ({})",
        obj.repr().map(|r| r.to_string()).unwrap_or_default(),
        type_name(obj)
    ))
}

/// `seconds` itself if it is >= 0 (+inf included); NaN or negative is an error naming `arg`.
fn non_negative_seconds(arg: &str, seconds: f64) -> PyResult<f64> {
    if seconds.is_nan() || seconds < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{arg} must be a number of seconds >= 0 or None, got {}",
            Num(seconds)
        )));
    }
    Ok(seconds)
}

/// An optional wait bound in seconds: `None` is unbounded; negative or NaN is an error.
pub fn max_wait_ns(arg: &str, seconds: Option<f64>) -> PyResult<u64> {
    match seconds {
        None => Ok(u64::MAX),
        // Round, not truncate: a timeout equal to the needed wait (0.008333334 s is
        // 8333333.999... ns in floating point) must be met. `as` saturates: +inf and huge
        // values mean "unbounded".
        Some(s) => Ok((non_negative_seconds(arg, s)? * 1e9).round() as u64),
    }
}

pub fn ns_to_s(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// An optional timeout in seconds: `None`, or a number >= 0 (+inf: no limit).
///
/// A plain number >= 0 is taken here; anything else (a duration string such as "10s", a bad
/// number, a bool, another type) goes to the library's one check of a timeout,
/// `admission._validate.timeout_seconds`, which converts it or raises the error every other
/// `timeout=` raises for the same mistake.
#[inline(always)]
pub fn timeout(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<f64>> {
    let Some(obj) = obj else { return Ok(None) };
    if obj.is_none() {
        return Ok(None);
    }
    if !obj.is_instance_of::<PyBool>() {
        if let Ok(seconds) = obj.extract::<f64>() {
            if seconds >= 0.0 {
                return Ok(Some(seconds)); // (NaN is not >= 0)
            }
        }
    }
    let check = CHECK_TIMEOUT.import(obj.py(), "admission._validate", "timeout_seconds")?;
    check.call1((obj,))?.extract()
}
