//! Small JSON records: processed exports, exposure windows, alerts, the transparency log and the
//! device's state (settings, consent, upload state).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Store, all_json, get_json, put_json};
use crate::Error;

/// The record that an export file was downloaded, verified and matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRecord {
    /// Its path as listed in the index.
    pub path: String,
    /// When it was processed, Unix seconds.
    pub processed_at: u64,
    /// How many diagnosis keys it held.
    pub keys: u64,
    /// How many of them matched a sighting.
    pub matched_keys: u64,
}

impl Store {
    /// Whether the export at `path` was processed already.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub fn export_processed(&self, path: &str) -> Result<bool, Error> {
        Ok(self.exports.contains_key(path.as_bytes())?)
    }

    /// Records that an export was processed and flushes: the record and every write before it,
    /// such as the export's exposure windows, are durable when this returns.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] or [`Error::Json`].
    pub fn mark_export_processed(&self, record: &ExportRecord) -> Result<(), Error> {
        put_json(&self.exports, record.path.as_bytes(), record)?;
        self.db.flush()?;
        Ok(())
    }

    /// Every processed export, in path order.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] or [`Error::CorruptRecord`].
    pub fn export_records(&self) -> Result<Vec<ExportRecord>, Error> {
        all_json(&self.exports, "export")
    }

    pub(super) fn delete_export_records_before(&self, cutoff: u64) -> Result<usize, Error> {
        let mut deleted = 0;
        for record in self.export_records()? {
            if record.processed_at < cutoff {
                self.exports.remove(record.path.as_bytes())?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Saves exposure records (such as exposure windows) under their ids, replacing any before,
    /// in one batch and without flushing: [`mark_export_processed`](Self::mark_export_processed)
    /// flushes them together with the record of the export they came from. sled recovers its log
    /// in order, so that record is never durable without the windows written before it.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] or [`Error::Json`].
    pub fn put_exposures<T: Serialize>(&self, records: &[(String, T)]) -> Result<(), Error> {
        let mut batch = sled::Batch::default();
        for (id, value) in records {
            batch.insert(id.as_bytes(), serde_json::to_vec(value)?);
        }
        self.exposures.apply_batch(batch)?;
        Ok(())
    }

    /// Every exposure record, in id order.
    ///
    /// # Errors
    ///
    /// [`Error::Database`], or [`Error::CorruptRecord`] for a record that is not a `T`.
    pub fn exposures<T: DeserializeOwned>(&self) -> Result<Vec<T>, Error> {
        all_json(&self.exposures, "exposure")
    }

    /// Every alert, in id order.
    ///
    /// # Errors
    ///
    /// [`Error::Database`], or [`Error::CorruptRecord`] for a record that is not a `T`.
    pub fn alerts<T: DeserializeOwned>(&self) -> Result<Vec<T>, Error> {
        all_json(&self.alerts, "alert")
    }

    /// Replaces every alert or day summary with `alerts`, each under its id, atomically and
    /// durably.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] or [`Error::Json`].
    pub fn replace_alerts<T: Serialize>(&self, alerts: &[(String, T)]) -> Result<(), Error> {
        let mut batch = sled::Batch::default();
        for id in self.alerts.iter().keys() {
            batch.remove(id?);
        }
        for (id, value) in alerts {
            batch.insert(id.as_bytes(), serde_json::to_vec(value)?);
        }
        self.alerts.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Deletes exposure records and alerts whose id sorts before `prefix`: ids that start with
    /// a zero-padded Unix time are thereby deleted by age.
    pub(super) fn delete_exposures_before(&self, prefix: &str) -> Result<usize, Error> {
        let mut deleted = 0;
        for tree in [&self.exposures, &self.alerts] {
            for id in tree.range(..prefix.as_bytes()).keys() {
                tree.remove(id?)?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Reads a named piece of device state.
    pub(crate) fn get_state<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        get_json(&self.state, name.as_bytes(), "state")
    }

    /// Writes a named piece of device state, durably.
    pub(crate) fn put_state(&self, name: &str, value: &impl Serialize) -> Result<(), Error> {
        put_json(&self.state, name.as_bytes(), value)?;
        self.db.flush()?;
        Ok(())
    }

    /// Appends a transparency-log entry, durably, before the request it describes is sent.
    pub(crate) fn append_log(&self, entry: &impl Serialize) -> Result<(), Error> {
        let id = self.db.generate_id()?;
        put_json(&self.log, &id.to_be_bytes(), entry)?;
        self.db.flush()?;
        Ok(())
    }

    /// Every transparency-log entry, oldest first.
    pub(crate) fn log_entries<T: DeserializeOwned>(&self) -> Result<Vec<T>, Error> {
        all_json(&self.log, "log entry")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_records_and_their_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let record = |path: &str, at| ExportRecord {
            path: path.into(),
            processed_at: at,
            keys: 3,
            matched_keys: 0,
        };
        store.mark_export_processed(&record("a.zip", 100)).unwrap();
        store.mark_export_processed(&record("b.zip", 200)).unwrap();
        assert!(store.export_processed("a.zip").unwrap());
        assert!(!store.export_processed("c.zip").unwrap());
        assert_eq!(store.delete_export_records_before(150).unwrap(), 1);
        assert_eq!(store.export_records().unwrap(), vec![record("b.zip", 200)]);
    }

    #[test]
    fn generic_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .put_exposures(&[("2".to_owned(), vec![2, 3]), ("1".to_owned(), vec![1])])
            .unwrap();
        assert_eq!(
            store.exposures::<Vec<u8>>().unwrap(),
            vec![vec![1], vec![2, 3]]
        );
        assert!(matches!(
            store.exposures::<String>(),
            Err(Error::CorruptRecord { what: "exposure" })
        ));
        store
            .replace_alerts(&[("x".to_owned(), "close contact")])
            .unwrap();
        assert_eq!(store.alerts::<String>().unwrap(), vec!["close contact"]);
    }

    #[test]
    fn replacing_alerts_drops_the_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let alerts = |ids: &[&str]| -> Vec<(String, String)> {
            ids.iter()
                .map(|id| (id.to_string(), format!("day {id}")))
                .collect()
        };
        store.replace_alerts(&alerts(&["1", "2", "3"])).unwrap();
        store.replace_alerts(&alerts(&["3", "4"])).unwrap();
        assert_eq!(store.alerts::<String>().unwrap(), vec!["day 3", "day 4"]);
        store.replace_alerts::<String>(&[]).unwrap();
        assert!(store.alerts::<String>().unwrap().is_empty());
    }
}
