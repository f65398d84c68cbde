//! The sightings this device heard, keyed by time so that retention deletes a range.

use varsel_protocol::keys::{AssociatedEncryptedMetadata, KEY_LEN, RollingProximityIdentifier};

use super::Store;
use crate::Error;
use crate::sighting::Sighting;

/// Length of a sighting's database key: time and identifier.
const ID_LEN: usize = 8 + KEY_LEN;
/// Length of a sighting's value: metadata and RSSI.
const VALUE_LEN: usize = 4 + 2;

fn encode(sighting: &Sighting) -> ([u8; ID_LEN], [u8; VALUE_LEN]) {
    let mut id = [0; ID_LEN];
    id[..8].copy_from_slice(&sighting.time.to_be_bytes());
    id[8..].copy_from_slice(sighting.rpi.as_bytes());
    let mut value = [0; VALUE_LEN];
    value[..4].copy_from_slice(&sighting.aem.to_bytes());
    value[4..].copy_from_slice(&sighting.rssi.to_be_bytes());
    (id, value)
}

fn decode(id: &[u8], value: &[u8]) -> Result<Sighting, Error> {
    let corrupt = || Error::CorruptRecord { what: "sighting" };
    let id: &[u8; ID_LEN] = id.try_into().map_err(|_| corrupt())?;
    let value: &[u8; VALUE_LEN] = value.try_into().map_err(|_| corrupt())?;
    let (time, rpi) = id.split_at(8);
    let (aem, rssi) = value.split_at(4);
    Ok(Sighting {
        rpi: RollingProximityIdentifier::from_bytes(rpi.try_into().map_err(|_| corrupt())?),
        aem: AssociatedEncryptedMetadata::from_bytes(aem.try_into().map_err(|_| corrupt())?),
        rssi: i16::from_be_bytes(rssi.try_into().map_err(|_| corrupt())?),
        time: u64::from_be_bytes(time.try_into().map_err(|_| corrupt())?),
    })
}

impl Store {
    /// Saves sightings, in one batch, durably. A second sighting of the same identifier in the
    /// same second replaces the first.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub fn add_sightings(&self, sightings: &[Sighting]) -> Result<(), Error> {
        let mut batch = sled::Batch::default();
        for sighting in sightings {
            let (id, value) = encode(sighting);
            batch.insert(&id[..], &value[..]);
        }
        self.sightings.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Every stored sighting, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] or [`Error::CorruptRecord`].
    pub fn sightings(&self) -> Result<Vec<Sighting>, Error> {
        self.sightings_between(0, u64::MAX)
    }

    /// The sightings made from `from` up to, not including, `until` (Unix seconds), oldest
    /// first.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] or [`Error::CorruptRecord`].
    pub fn sightings_between(&self, from: u64, until: u64) -> Result<Vec<Sighting>, Error> {
        self.sightings
            .range(from.to_be_bytes()..until.to_be_bytes())
            .map(|entry| {
                let (id, value) = entry?;
                decode(&id, &value)
            })
            .collect()
    }

    /// How many sightings are stored.
    pub fn sighting_count(&self) -> usize {
        self.sightings.len()
    }

    /// Deletes sightings made before `cutoff` (Unix seconds).
    pub(super) fn delete_sightings_before(&self, cutoff: u64) -> Result<usize, Error> {
        let mut batch = sled::Batch::default();
        let mut deleted = 0;
        for id in self.sightings.range(..cutoff.to_be_bytes()).keys() {
            batch.remove(id?);
            deleted += 1;
        }
        self.sightings.apply_batch(batch)?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sightings_round_trip_and_select_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sightings: Vec<Sighting> = (0..10u8)
            .map(|i| Sighting {
                rpi: RollingProximityIdentifier::from_bytes([i; KEY_LEN]),
                aem: AssociatedEncryptedMetadata::from_bytes([i, 0xff, 0, 1]),
                rssi: -60 - i16::from(i),
                time: 1_000 + u64::from(i) * 10,
            })
            .collect();
        store.add_sightings(&sightings).unwrap();
        assert_eq!(store.sightings().unwrap(), sightings);
        assert_eq!(
            store.sightings_between(1_020, 1_050).unwrap(),
            sightings[2..5]
        );
        assert_eq!(store.sighting_count(), 10);
    }

    #[test]
    fn corrupt_sightings_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.sightings.insert([1; 3], &[0; 6][..]).unwrap();
        assert!(matches!(
            store.sightings(),
            Err(Error::CorruptRecord { what: "sighting" })
        ));
    }
}
