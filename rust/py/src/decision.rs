//! `Decision`: what a limiter would do with a request right now.

use admission_core::Decision as CoreDecision;
use pyo3::prelude::*;

use crate::args::ns_to_s;

/// What a limiter would decide for a request now. Returned by `peek()`; consumes nothing.
#[pyclass(frozen, eq, module = "admission._native", get_all)]
#[derive(PartialEq, Clone)]
pub struct Decision {
    /// Whether the request would be admitted now.
    pub allowed: bool,
    /// Units of cost still admissible now (after this request, when allowed).
    pub remaining: u64,
    /// Seconds until the request would be admitted; 0.0 when allowed.
    pub retry_after: f64,
    /// Seconds until the limiter is back to full capacity.
    pub reset_after: f64,
}

impl From<CoreDecision> for Decision {
    fn from(d: CoreDecision) -> Self {
        Self {
            allowed: d.allowed,
            remaining: d.remaining,
            retry_after: ns_to_s(d.retry_after_ns),
            reset_after: ns_to_s(d.reset_after_ns),
        }
    }
}

#[pymethods]
impl Decision {
    #[new]
    fn new(allowed: bool, remaining: u64, retry_after: f64, reset_after: f64) -> Self {
        Self {
            allowed,
            remaining,
            retry_after,
            reset_after,
        }
    }

    fn __bool__(&self) -> bool {
        self.allowed
    }

    fn __repr__(&self) -> String {
        format!(
            "Decision(allowed={}, remaining={}, retry_after={:?}, reset_after={:?})",
            if self.allowed { "True" } else { "False" },
            self.remaining,
            self.retry_after,
            self.reset_after
        )
    }
}
