//! Varsel's wire protocol: everything a device and a key server must agree on, with no I/O, no
//! clock and no logging.
//!
//! Where the Google/Apple Exposure Notification (GAEN) specification covers something, this
//! crate is byte-compatible with it, so real GAEN test vectors and export files work unchanged.
//! The normative description is `spec/protocol.md`; doc comments cite its sections as §N.
//!
//! # Layout
//!
//! - [`interval`]: ten-minute interval numbers and key validity windows (§2).
//! - [`keys`]: Temporary Exposure Keys and what derives from them: identifier and metadata
//!   keys, Rolling Proximity Identifiers and encrypted metadata (§3).
//! - [`advertisement`]: the Bluetooth LE payload under service UUID 0xFD6F (§4).
//! - [`tekmac`]: the HMAC that binds an upload certificate to its keys (§5).
//! - [`export`]: signed diagnosis-key export files (§6).
//! - [`risk`]: exposure windows and risk scoring with GAEN v2 semantics.
//! - [`Error`]: the one error type.
//!
//! # Example
//!
//! ```
//! use varsel_protocol::interval::EnIntervalNumber;
//! use varsel_protocol::keys::{Metadata, TemporaryExposureKey};
//!
//! let tek = TemporaryExposureKey::generate(&mut rand_core::OsRng);
//! let start = EnIntervalNumber::from_unix_seconds(1_585_785_600)?;
//! let identifiers = tek.rpik().rpis(start);
//! let aem = tek.aemk().encrypt(&identifiers[0], &Metadata::v1(8));
//! assert_eq!(tek.aemk().decrypt(&identifiers[0], &aem), Metadata::v1(8));
//! # Ok::<(), varsel_protocol::Error>(())
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod advertisement;
mod error;
pub mod export;
mod export_stream;
pub mod interval;
pub mod keys;
pub mod risk;
pub mod tekmac;

pub use error::Error;
