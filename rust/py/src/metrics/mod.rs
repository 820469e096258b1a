//! The native half of the metrics exporter (`admission.metrics`), apart from the bindings of
//! the primitives: what a scrape reads and the process-wide state it keeps.
//!
//! - [`retired`]: the final figures of dropped primitives, buffered until the next scrape
//!   (the primitives' `Drop` calls [`retire`]).
//! - [`Scrape`]: one scrape's series, read from every live primitive in a few calls, and
//!   their text exposition rendered in chunks.

mod retired;
mod scrape;
mod text;

pub use retired::{_drain_retired, _track_retired, retire};
pub use scrape::Scrape;
