//! `SlidingWindow` binding over the core exact sliding log.

use admission_core::SlidingWindow as CoreWindow;
use pyo3::prelude::*;

use crate::args::{count, label, ns_to_s, real};
use crate::clock::{ClockArg, ManualClock};
use crate::decision::Decision;
use crate::errors;
use crate::rate::{rate_limiter_pymethods, PyWaker, RateState};
use crate::ready::ready;

/// Native exact sliding window. The public class is `admission.SlidingWindow`.
#[pyclass(frozen, subclass, weakref, module = "admission._native")]
pub struct SlidingWindow {
    pub(crate) state: RateState<CoreWindow<PyWaker>>,
}

rate_limiter_pymethods!(SlidingWindow, "sliding_window", {
    #[new]
    #[pyo3(signature = (limit, window, *, clock=None, name=None))]
    fn new(
        limit: &Bound<'_, PyAny>,
        window: &Bound<'_, PyAny>,
        clock: Option<ClockArg<'_>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let name = label("name", name)?;
        let limit = count("limit", Some(limit), 0)?;
        let window = real("window", window)?;
        let core = CoreWindow::new(limit, window).map_err(errors::config)?;
        Ok(Self {
            state: RateState::new(core, clock.as_ref(), name),
        })
    }

    /// Entries in the window's log right now (each costs 16 bytes).
    fn _log_len(&self) -> usize {
        self.state.core.log_len()
    }

    #[getter]
    fn limit(&self) -> u64 {
        self.state.core.limit()
    }

    #[getter]
    fn window(&self) -> f64 {
        ns_to_s(self.state.core.window_ns())
    }
});
