//! The `varsel` package's library: the story Varsel exists for, as code that both the
//! `varsel demo` command and the end-to-end tests run.
//!
//! # Layout
//!
//! - [`scenario`]: a real key server on loopback, three simulated phones and one clock; the
//!   steps of the story (meeting, a positive test, the report, the export, the sync) and the
//!   checks of what must hold at its end.
//! - [`Error`]: the one error type.

mod error;
pub mod scenario;

pub use error::Error;
