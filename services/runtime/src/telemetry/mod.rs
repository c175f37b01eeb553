//! Telemetry the whole runtime writes to, at the bottom of the module stack (it uses no
//! other module of the crate): structured logging, PII masking of free text, and the
//! process's metrics (recorded here, served by [`crate::http`]).

pub mod logging;
pub mod metrics;
pub mod pii;

pub use logging::init;
pub use pii::mask_pii;
