//! `TokenBucket` binding over the core GCRA.

use admission_core::Gcra;
use pyo3::prelude::*;

use crate::args::{count, label, ns_to_s, real};
use crate::clock::{ClockArg, ManualClock};
use crate::decision::Decision;
use crate::errors;
use crate::rate::{rate_limiter_pymethods, PyWaker, RateState};
use crate::ready::ready;

/// The burst when none is given: one period's worth (at least 1), the usual "N per period"
/// reading.
pub(crate) fn default_burst(rate: f64) -> u64 {
    if rate.is_finite() && rate >= 1.0 {
        rate.floor() as u64
    } else {
        1
    }
}

/// Native token bucket (GCRA). The public class is `admission.TokenBucket`.
#[pyclass(frozen, subclass, weakref, module = "admission._native")]
pub struct TokenBucket {
    pub(crate) state: RateState<Gcra<PyWaker>>,
    rate: f64,
    per: f64,
}

rate_limiter_pymethods!(TokenBucket, "token_bucket", {
    #[new]
    #[pyo3(
        signature = (rate, per=None, burst=None, *, clock=None, name=None),
        text_signature = "(rate, per=1.0, burst=None, *, clock=None, name=None)"
    )]
    fn new(
        rate: &Bound<'_, PyAny>,
        per: Option<&Bound<'_, PyAny>>,
        burst: Option<&Bound<'_, PyAny>>,
        clock: Option<ClockArg<'_>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let name = label("name", name)?;
        let rate = real("rate", rate)?;
        let per = per.map_or(Ok(1.0), |p| real("per", p))?;
        let burst = count("burst", burst, default_burst(rate))?;
        let core = Gcra::new(rate, per, burst).map_err(errors::config)?;
        Ok(Self {
            state: RateState::new(core, clock.as_ref(), name),
            rate,
            per,
        })
    }

    #[getter]
    fn rate(&self) -> f64 {
        self.rate
    }

    #[getter]
    fn per(&self) -> f64 {
        self.per
    }

    #[getter]
    fn burst(&self) -> u64 {
        self.state.core.burst()
    }

    /// Seconds per token, as used internally (rounded up to whole nanoseconds).
    #[getter]
    fn emission_interval(&self) -> f64 {
        ns_to_s(self.state.core.emission_ns())
    }
});
