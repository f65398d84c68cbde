//! The device's database: one sled database in a data directory.
//!
//! | tree        | key                              | value                                 |
//! |-------------|----------------------------------|---------------------------------------|
//! | `keys`      | rolling start (BE) ‖ sequence    | key bytes ‖ rolling period (BE)       |
//! | `sightings` | time (BE) ‖ RPI                  | AEM ‖ RSSI (BE)                       |
//! | `exports`   | export path from the index       | JSON [`ExportRecord`]                 |
//! | `exposures` | day (Unix, 12 digits) ‖ …        | JSON exposure window                  |
//! | `alerts`    | day (Unix, 12 digits)            | JSON day summary                      |
//! | `log`       | sequence number (BE)             | JSON transparency-log entry           |
//! | `state`     | name                             | JSON settings, consent, upload state  |
//!
//! Keys, sightings and exposures older than [`RETENTION_SECONDS`] are deleted by
//! [`Store::enforce_retention`], which [`crate::Device`] runs on every start and daily.
//!
//! # Limitations
//!
//! The database is not encrypted at rest: the device relies on the operating system's storage
//! encryption, as phones provide. sled removes deleted values from its files only when it
//! rewrites their segments; [`Store::destroy`] removes the files themselves.

mod keys;
mod records;
mod sightings;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

pub use keys::DeviceKey;
pub use records::ExportRecord;

/// How long keys and sightings are kept: 14 days.
pub const RETENTION_SECONDS: u64 = 14 * 86_400;

/// How long the record that an export was processed is kept: longer than any server lists it.
pub const EXPORT_RECORD_RETENTION_SECONDS: u64 = 30 * 86_400;

/// The device's database. Clones share the same database.
#[derive(Clone, Debug)]
pub struct Store {
    db: sled::Db,
    dir: PathBuf,
    keys: sled::Tree,
    sightings: sled::Tree,
    exports: sled::Tree,
    exposures: sled::Tree,
    alerts: sled::Tree,
    log: sled::Tree,
    state: sled::Tree,
}

/// What one retention pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    /// Keys deleted.
    pub keys: usize,
    /// Sightings deleted.
    pub sightings: usize,
    /// Export records deleted.
    pub exports: usize,
    /// Exposure windows and day summaries deleted.
    pub exposures: usize,
}

impl Store {
    /// Opens (or creates) the database in `dir`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the directory cannot be created, [`Error::Database`] if sled fails.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new().path(dir.join("db")).open()?;
        Ok(Self {
            keys: db.open_tree("keys")?,
            sightings: db.open_tree("sightings")?,
            exports: db.open_tree("exports")?,
            exposures: db.open_tree("exposures")?,
            alerts: db.open_tree("alerts")?,
            log: db.open_tree("log")?,
            state: db.open_tree("state")?,
            dir: dir.to_owned(),
            db,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Deletes keys, sightings and exposures older than 14 days and export records older than
    /// 30 days, measured from `now` (Unix seconds).
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub fn enforce_retention(&self, now: u64) -> Result<RetentionReport, Error> {
        let cutoff = now.saturating_sub(RETENTION_SECONDS);
        let report = RetentionReport {
            keys: self.delete_keys_ended_before(cutoff)?,
            sightings: self.delete_sightings_before(cutoff)?,
            exports: self.delete_export_records_before(
                now.saturating_sub(EXPORT_RECORD_RETENTION_SECONDS),
            )?,
            exposures: self.delete_exposures_before(&format!("{cutoff:012}"))?,
        };
        self.db.flush()?;
        Ok(report)
    }

    /// Deletes everything the device holds: keys, sightings, exports, exposures, alerts, the
    /// transparency log, settings and consent. The database stays open and empty.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub fn wipe(&self) -> Result<(), Error> {
        for tree in self.trees() {
            tree.clear()?;
        }
        self.db.flush()?;
        Ok(())
    }

    /// Wipes the database, closes it and removes its files from the data directory.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] or [`Error::Io`].
    pub fn destroy(self) -> Result<(), Error> {
        self.wipe()?;
        let path = self.dir.join("db");
        drop(self);
        std::fs::remove_dir_all(path)?;
        Ok(())
    }

    /// Writes everything to disk.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub fn flush(&self) -> Result<(), Error> {
        self.db.flush()?;
        Ok(())
    }

    /// Whether the database holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.trees().iter().all(|tree| tree.is_empty())
    }

    fn trees(&self) -> [&sled::Tree; 7] {
        [
            &self.keys,
            &self.sightings,
            &self.exports,
            &self.exposures,
            &self.alerts,
            &self.log,
            &self.state,
        ]
    }
}

/// Writes a JSON value under `key`.
fn put_json(tree: &sled::Tree, key: &[u8], value: &impl Serialize) -> Result<(), Error> {
    tree.insert(key, serde_json::to_vec(value)?)?;
    Ok(())
}

/// Reads the JSON value under `key`, if any.
fn get_json<T: DeserializeOwned>(
    tree: &sled::Tree,
    key: &[u8],
    what: &'static str,
) -> Result<Option<T>, Error> {
    tree.get(key)?
        .map(|bytes| serde_json::from_slice(&bytes).map_err(|_| Error::CorruptRecord { what }))
        .transpose()
}

/// Reads every JSON value of a tree, in key order.
fn all_json<T: DeserializeOwned>(tree: &sled::Tree, what: &'static str) -> Result<Vec<T>, Error> {
    tree.iter()
        .values()
        .map(|bytes| {
            let bytes = bytes?;
            serde_json::from_slice(&bytes).map_err(|_| Error::CorruptRecord { what })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sighting::Sighting;
    use varsel_protocol::keys::{AssociatedEncryptedMetadata, RollingProximityIdentifier};

    const DAY: u64 = 86_400;
    const T0: u64 = 1_700_000_000;

    fn sighting(time: u64, byte: u8) -> Sighting {
        Sighting {
            rpi: RollingProximityIdentifier::from_bytes([byte; 16]),
            aem: AssociatedEncryptedMetadata::from_bytes([1, 2, 3, 4]),
            rssi: -70,
            time,
        }
    }

    #[test]
    fn retention_deletes_only_what_is_older_than_14_days() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for day in 0..20 {
            store.current_key(T0 + day * DAY).unwrap();
            store
                .add_sightings(&[sighting(T0 + day * DAY, day as u8)])
                .unwrap();
        }
        let now = T0 + 19 * DAY;
        let report = store.enforce_retention(now).unwrap();
        assert_eq!(report.sightings, 5, "days 0-4 are more than 14 days old");
        let left = store.sightings().unwrap();
        assert_eq!(left.len(), 15);
        assert!(left.iter().all(|s| s.time >= now - RETENTION_SECONDS));
        let keys = store.keys().unwrap();
        assert!(
            keys.iter()
                .all(|k| k.end_unix_seconds() > now - RETENTION_SECONDS)
        );
        assert_eq!(keys.len(), 15, "today and the 14 days before it, in part");
        assert_eq!(report.keys, 5);
        assert_eq!(
            store.enforce_retention(now).unwrap(),
            RetentionReport::default()
        );
    }

    #[test]
    fn wipe_and_destroy_delete_everything() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.current_key(T0).unwrap();
        store.add_sightings(&[sighting(T0, 1)]).unwrap();
        store.replace_alerts(&[("a".to_owned(), "alert")]).unwrap();
        assert!(!store.is_empty());
        store.wipe().unwrap();
        assert!(store.is_empty());
        assert!(store.keys().unwrap().is_empty());

        store.current_key(T0).unwrap();
        store.destroy().unwrap();
        assert!(!dir.path().join("db").exists());
        let reopened = Store::open(dir.path()).unwrap();
        assert!(reopened.is_empty());
    }

    #[test]
    fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let key = {
            let store = Store::open(dir.path()).unwrap();
            store.add_sightings(&[sighting(T0, 7)]).unwrap();
            let key = store.current_key(T0).unwrap();
            store.flush().unwrap();
            key
        };
        // sled releases its file lock when its background flusher exits, shortly after the
        // last handle is dropped; a reopen in the same process may have to wait for it.
        let mut store = Store::open(dir.path());
        for _ in 0..100 {
            if store.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            store = Store::open(dir.path());
        }
        let store = store.unwrap();
        assert_eq!(store.current_key(T0 + 60).unwrap(), key);
        assert_eq!(store.sightings().unwrap(), vec![sighting(T0, 7)]);
    }
}
