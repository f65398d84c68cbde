//! The device's own Temporary Exposure Keys: one per UTC day, made when first needed.
//!
//! A key is stored under its rolling start and a sequence number, so that the day's key can be
//! replaced by a fresh one after a report (the server accepts a few keys with the same start).

use rand_core::OsRng;
use varsel_protocol::interval::{EnIntervalNumber, INTERVAL_SECONDS, RollingWindow};
use varsel_protocol::keys::{KEY_LEN, TemporaryExposureKey};
use zeroize::Zeroizing;

use super::Store;
use crate::Error;

/// Length of a stored key's database key: rolling start and sequence number.
const ID_LEN: usize = 5;
/// Length of a stored key's value: key bytes and rolling period.
const VALUE_LEN: usize = KEY_LEN + 4;

/// One of the device's Temporary Exposure Keys with its validity.
///
/// The key bytes are secret: they zeroize on drop and never print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceKey {
    /// The key.
    pub tek: TemporaryExposureKey,
    /// When it is valid.
    pub window: RollingWindow,
    /// 0 for the day's first key, then 1, 2, … for keys started after a report.
    pub sequence: u8,
}

impl DeviceKey {
    /// Unix time at which the key stops being valid.
    pub fn end_unix_seconds(&self) -> u64 {
        self.window.end_exclusive() * INTERVAL_SECONDS
    }

    fn id(&self) -> [u8; ID_LEN] {
        id(self.window.start(), self.sequence)
    }

    fn value(&self) -> Zeroizing<[u8; VALUE_LEN]> {
        let mut value = Zeroizing::new([0; VALUE_LEN]);
        value[..KEY_LEN].copy_from_slice(self.tek.expose_secret());
        value[KEY_LEN..].copy_from_slice(&self.window.period().to_be_bytes());
        value
    }

    fn decode(id: &[u8], value: &[u8]) -> Result<Self, Error> {
        let corrupt = || Error::CorruptRecord { what: "key" };
        let id: [u8; ID_LEN] = id.try_into().map_err(|_| corrupt())?;
        if value.len() != VALUE_LEN {
            return Err(corrupt());
        }
        let (key, period) = value.split_at(KEY_LEN);
        let start = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
        let period = u32::from_be_bytes(period.try_into().map_err(|_| corrupt())?);
        Ok(Self {
            tek: TemporaryExposureKey::from_slice(key)?,
            window: RollingWindow::new(EnIntervalNumber::new(start), period)
                .map_err(|_| corrupt())?,
            sequence: id[4],
        })
    }
}

fn id(start: EnIntervalNumber, sequence: u8) -> [u8; ID_LEN] {
    let mut id = [0; ID_LEN];
    id[..4].copy_from_slice(&start.value().to_be_bytes());
    id[4] = sequence;
    id
}

/// The first interval of the UTC day containing `now`.
fn day_of(now: u64) -> Result<EnIntervalNumber, Error> {
    Ok(EnIntervalNumber::from_unix_seconds(now)?.day_start())
}

impl Store {
    /// The key in use at `now`: the newest key of that UTC day, created and saved if the day
    /// has none yet.
    ///
    /// # Errors
    ///
    /// [`Error::Database`], [`Error::CorruptRecord`], or [`Error::Protocol`] for a time beyond
    /// the 32-bit interval range.
    pub fn current_key(&self, now: u64) -> Result<DeviceKey, Error> {
        let day = day_of(now)?;
        match self.newest_key_of(day)? {
            Some(key) => Ok(key),
            None => self.insert_key(day, 0),
        }
    }

    /// Starts a fresh key for the UTC day containing `now`, replacing the day's current one
    /// from now on (done after a report, whose upload included the current key).
    ///
    /// # Errors
    ///
    /// As [`current_key`](Self::current_key).
    pub fn start_new_key(&self, now: u64) -> Result<DeviceKey, Error> {
        let day = day_of(now)?;
        let sequence = match self.newest_key_of(day)? {
            Some(key) => key.sequence.saturating_add(1),
            None => 0,
        };
        self.insert_key(day, sequence)
    }

    /// Every stored key, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] or [`Error::CorruptRecord`].
    pub fn keys(&self) -> Result<Vec<DeviceKey>, Error> {
        self.keys
            .iter()
            .map(|entry| {
                let (id, value) = entry?;
                DeviceKey::decode(&id, &value)
            })
            .collect()
    }

    fn newest_key_of(&self, day: EnIntervalNumber) -> Result<Option<DeviceKey>, Error> {
        let prefix = day.value().to_be_bytes();
        self.keys
            .scan_prefix(prefix)
            .next_back()
            .map(|entry| {
                let (id, value) = entry?;
                DeviceKey::decode(&id, &value)
            })
            .transpose()
    }

    fn insert_key(&self, day: EnIntervalNumber, sequence: u8) -> Result<DeviceKey, Error> {
        let key = DeviceKey {
            tek: TemporaryExposureKey::generate(&mut OsRng),
            window: RollingWindow::full_day(day),
            sequence,
        };
        self.keys.insert(key.id(), key.value().as_slice())?;
        self.db.flush()?;
        Ok(key)
    }

    /// Deletes keys whose validity ended at or before `cutoff` (Unix seconds).
    pub(super) fn delete_keys_ended_before(&self, cutoff: u64) -> Result<usize, Error> {
        let mut deleted = 0;
        for key in self.keys()? {
            if key.end_unix_seconds() <= cutoff {
                self.keys.remove(key.id())?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    #[test]
    fn one_key_per_day_made_when_first_needed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.keys().unwrap().is_empty());
        let morning = store.current_key(T0).unwrap();
        let later = store.current_key(T0 + 3_600).unwrap();
        assert_eq!(morning, later);
        assert_eq!(morning.window.period(), 144);
        assert_eq!(morning.window.start().unix_seconds() % 86_400, 0);

        let tomorrow = store.current_key(T0 + 86_400).unwrap();
        assert_ne!(tomorrow.tek, morning.tek);
        assert_eq!(
            tomorrow.window.start().value(),
            morning.window.start().value() + 144
        );
        assert_eq!(store.keys().unwrap().len(), 2);
    }

    #[test]
    fn a_new_key_replaces_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = store.current_key(T0).unwrap();
        let second = store.start_new_key(T0 + 60).unwrap();
        assert_ne!(first.tek, second.tek);
        assert_eq!(first.window, second.window);
        assert_eq!(second.sequence, 1);
        assert_eq!(store.current_key(T0 + 120).unwrap(), second);
        assert_eq!(store.keys().unwrap(), vec![first, second]);
    }

    #[test]
    fn corrupt_key_records_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.keys.insert([0, 0, 0, 1, 0], &[1, 2, 3][..]).unwrap();
        assert!(matches!(
            store.keys(),
            Err(Error::CorruptRecord { what: "key" })
        ));
    }

    #[test]
    fn debug_output_hides_key_bytes() {
        let key = DeviceKey {
            tek: TemporaryExposureKey::from_bytes([0xcd; KEY_LEN]),
            window: RollingWindow::full_day(EnIntervalNumber::new(144)),
            sequence: 0,
        };
        let printed = format!("{key:?}");
        assert!(!printed.contains("205") && !printed.to_lowercase().contains("cd"));
    }
}
