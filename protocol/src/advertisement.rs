//! The Bluetooth Low Energy advertisement (`spec/protocol.md` §4).
//!
//! A device advertises the 16-bit service UUID `0xFD6F` with 20 bytes of service data: the
//! current Rolling Proximity Identifier followed by its Associated Encrypted Metadata. The full
//! legacy advertising payload is three AD structures: flags, the complete list of 16-bit service
//! UUIDs, and the service data.

use crate::Error;
use crate::keys::{AssociatedEncryptedMetadata, KEY_LEN, RollingProximityIdentifier};

/// The Exposure Notification service UUID, in its 16-bit form.
pub const SERVICE_UUID: u16 = 0xFD6F;

/// Length of the service data: RPI (16 bytes) then AEM (4 bytes).
pub const SERVICE_DATA_LEN: usize = KEY_LEN + 4;

/// Longest legacy advertising payload, in bytes.
pub const MAX_PAYLOAD_LEN: usize = 31;

/// AD type: flags.
const AD_FLAGS: u8 = 0x01;
/// AD type: complete list of 16-bit service UUIDs.
const AD_COMPLETE_UUID16: u8 = 0x03;
/// AD type: service data with a 16-bit UUID.
const AD_SERVICE_DATA_UUID16: u8 = 0x16;
/// Flags value: LE General Discoverable, BR/EDR not supported.
const FLAGS_VALUE: u8 = 0x1A;

/// What one Exposure Notification advertisement carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advertisement {
    /// The broadcaster's identifier for the current interval.
    pub rpi: RollingProximityIdentifier,
    /// The broadcaster's encrypted metadata for that identifier.
    pub aem: AssociatedEncryptedMetadata,
}

impl Advertisement {
    /// The 20 bytes of service data: `RPI ‖ AEM`.
    pub fn to_service_data(&self) -> [u8; SERVICE_DATA_LEN] {
        let mut data = [0; SERVICE_DATA_LEN];
        data[..KEY_LEN].copy_from_slice(self.rpi.as_bytes());
        data[KEY_LEN..].copy_from_slice(&self.aem.to_bytes());
        data
    }

    /// Reads service data heard under the 16-bit service UUID `uuid`.
    ///
    /// # Errors
    ///
    /// [`Error::WrongServiceUuid`] unless `uuid` is `0xFD6F`, and
    /// [`Error::InvalidLength`] unless `data` is exactly 20 bytes.
    pub fn from_service_data(uuid: u16, data: &[u8]) -> Result<Self, Error> {
        if uuid != SERVICE_UUID {
            return Err(Error::WrongServiceUuid { found: uuid });
        }
        let data: [u8; SERVICE_DATA_LEN] = crate::keys::fixed_bytes("service data", data)?;
        let (rpi, aem) = data.split_at(KEY_LEN);
        Ok(Self {
            rpi: RollingProximityIdentifier::from_bytes(crate::keys::fixed_bytes("RPI", rpi)?),
            aem: AssociatedEncryptedMetadata::from_bytes(crate::keys::fixed_bytes("AEM", aem)?),
        })
    }

    /// The whole 31-byte legacy advertising payload: flags, UUID list and service data.
    pub fn to_payload(&self) -> [u8; MAX_PAYLOAD_LEN] {
        let [uuid_lo, uuid_hi] = SERVICE_UUID.to_le_bytes();
        let mut payload = [0; MAX_PAYLOAD_LEN];
        payload[..11].copy_from_slice(&[
            2,
            AD_FLAGS,
            FLAGS_VALUE,
            3,
            AD_COMPLETE_UUID16,
            uuid_lo,
            uuid_hi,
            (3 + SERVICE_DATA_LEN) as u8,
            AD_SERVICE_DATA_UUID16,
            uuid_lo,
            uuid_hi,
        ]);
        payload[11..].copy_from_slice(&self.to_service_data());
        payload
    }

    /// Finds the Exposure Notification service data in a legacy advertising payload.
    ///
    /// AD structures may come in any order and other structures are skipped; a zero length byte
    /// ends the significant part, as the Bluetooth core specification allows.
    ///
    /// # Errors
    ///
    /// [`Error::AdvertisementTooLong`] beyond 31 bytes, [`Error::TruncatedAdStructure`] when a
    /// structure runs past the end, [`Error::WrongServiceUuid`] when the only service data is
    /// for another service, [`Error::InvalidLength`] when ours has the wrong length, and
    /// [`Error::MissingServiceData`] when there is none at all.
    pub fn from_payload(payload: &[u8]) -> Result<Self, Error> {
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(Error::AdvertisementTooLong {
                limit: MAX_PAYLOAD_LEN,
                actual: payload.len(),
            });
        }
        let mut other_uuid = None;
        for structure in AdStructures(payload) {
            let (ad_type, data) = structure?;
            if ad_type != AD_SERVICE_DATA_UUID16 {
                continue;
            }
            let Some((uuid, service_data)) = data.split_first_chunk::<2>() else {
                return Err(Error::TruncatedAdStructure);
            };
            let uuid = u16::from_le_bytes(*uuid);
            if uuid == SERVICE_UUID {
                return Self::from_service_data(uuid, service_data);
            }
            other_uuid = Some(uuid);
        }
        Err(
            other_uuid.map_or(Error::MissingServiceData, |found| Error::WrongServiceUuid {
                found,
            }),
        )
    }
}

/// Iterates over the `(type, data)` AD structures of a payload.
struct AdStructures<'a>(&'a [u8]);

impl<'a> Iterator for AdStructures<'a> {
    type Item = Result<(u8, &'a [u8]), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&len, rest) = self.0.split_first()?;
        if len == 0 {
            self.0 = &[];
            return None;
        }
        let len = usize::from(len);
        if rest.len() < len {
            self.0 = &[];
            return Some(Err(Error::TruncatedAdStructure));
        }
        let (structure, rest) = rest.split_at(len);
        self.0 = rest;
        let (&ad_type, data) = structure.split_first()?;
        Some(Ok((ad_type, data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Advertisement {
        Advertisement {
            rpi: RollingProximityIdentifier::from_bytes([0x11; KEY_LEN]),
            aem: AssociatedEncryptedMetadata::from_bytes([1, 2, 3, 4]),
        }
    }

    #[test]
    fn payload_layout() {
        let payload = sample().to_payload();
        assert_eq!(
            &payload[..11],
            &[2, 1, 0x1a, 3, 3, 0x6f, 0xfd, 0x17, 0x16, 0x6f, 0xfd]
        );
        assert_eq!(&payload[11..27], &[0x11; 16]);
        assert_eq!(&payload[27..], &[1, 2, 3, 4]);
        assert_eq!(Advertisement::from_payload(&payload).unwrap(), sample());
    }

    #[test]
    fn wrong_uuid_is_rejected() {
        let data = sample().to_service_data();
        assert!(matches!(
            Advertisement::from_service_data(0xFD6E, &data),
            Err(Error::WrongServiceUuid { found: 0xFD6E })
        ));
        let mut payload = sample().to_payload();
        payload[9] = 0x6e;
        assert!(matches!(
            Advertisement::from_payload(&payload),
            Err(Error::WrongServiceUuid { found: 0xFD6E })
        ));
    }

    #[test]
    fn wrong_lengths_are_rejected() {
        let data = sample().to_service_data();
        assert!(matches!(
            Advertisement::from_service_data(SERVICE_UUID, &data[..19]),
            Err(Error::InvalidLength {
                expected: 20,
                actual: 19,
                ..
            })
        ));
        let payload = sample().to_payload();
        assert!(matches!(
            Advertisement::from_payload(&payload[..30]),
            Err(Error::TruncatedAdStructure)
        ));
        assert!(matches!(
            Advertisement::from_payload(&[0; 32]),
            Err(Error::AdvertisementTooLong { .. })
        ));
        assert!(matches!(
            Advertisement::from_payload(&[2, 1, 6]),
            Err(Error::MissingServiceData)
        ));
        assert!(matches!(
            Advertisement::from_payload(&[1, 0x16]),
            Err(Error::TruncatedAdStructure)
        ));
    }
}
