//! Varsel on a citizen's device: daily keys, the identifiers it hears, and local matching.
//!
//! Everything personal stays on the device; see `spec/` for what may leave it.
//!
//! # Layout
//!
//! - [`sighting`]: one advertisement heard over the air.

pub mod sighting;
