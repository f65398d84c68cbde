//! A sighting: one Exposure Notification advertisement heard by this device.

use varsel_protocol::keys::{AssociatedEncryptedMetadata, RollingProximityIdentifier};

/// One advertisement heard over the air, as the device records it.
///
/// Sightings never leave the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sighting {
    /// The identifier heard.
    pub rpi: RollingProximityIdentifier,
    /// The encrypted metadata heard with it.
    pub aem: AssociatedEncryptedMetadata,
    /// Received signal strength, in dBm.
    pub rssi: i16,
    /// When it was heard, in Unix seconds (UTC).
    pub time: u64,
}
