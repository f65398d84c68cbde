//! Varsel on a citizen's device: daily keys, the identifiers it hears, and local matching.
//!
//! Everything personal stays on the device; see `spec/` for what may leave it.
//!
//! # Layout
//!
//! - [`Device`]: the facade an app embeds: advertisement, sightings, maintenance, sync, report.
//! - [`cli`]: the `varsel-device` command line.
//! - [`clock`]: the [`Clock`] every component takes, so tests move time.
//! - [`store`]: the sled database: keys, sightings, exports, exposures, log, settings.
//! - [`settings`]: configuration, consent and upload state.
//! - [`sighting`]: one advertisement heard over the air.
//! - [`radio`]: the Bluetooth radio: simulated, or real behind the `ble` feature.
//! - [`simulation`]: many simulated devices on one air, driven by a manual clock.
//! - [`exposure`]: sync's matching step, stored windows, day summaries and alerts.
//! - [`http`]: the one HTTP client, which logs every request before sending it.
//! - [`transparency`]: the log of everything the device sent.
//! - [`matching`]: which published keys this device heard, and their exposure windows.
//! - [`sync`]: downloading and verifying export files, handed to matching.
//! - [`upload`]: reporting a positive test, and chaff.
//! - [`Error`]: the one error type.

pub mod cli;
pub mod clock;
mod device;
mod error;
pub mod exposure;
pub mod http;
pub mod matching;
pub mod radio;
pub mod settings;
pub mod sighting;
pub mod simulation;
pub mod store;
pub mod sync;
pub mod transparency;
pub mod upload;

pub use clock::Clock;
pub use device::Device;
pub use error::Error;
