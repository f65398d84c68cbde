//! The key side's store of uploaded diagnosis keys (`spec/key-server.md`, "Storage").
//!
//! One sled tree holds, per key, only what its export needs plus the hour it was uploaded and
//! the time it may first be exported; a second part of the same tree indexes keys by that
//! release time so the export worker reads each window with one range scan. Nothing about the
//! request that brought a key is kept. Writes of one upload go in one atomic batch.

use varsel_protocol::export::{ExportKey, ReportType};
use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::keys::DiagnosisKey;

use crate::error::{Error, Result};

/// Prefix of key records: `k` ‖ key bytes.
const RECORD: u8 = b'k';
/// Prefix of the release index: `r` ‖ release time (big-endian) ‖ key bytes.
const RELEASE: u8 = b'r';
/// Prefix of the revision index: `v` ‖ revision release time (big-endian) ‖ key bytes.
const REVISION: u8 = b'v';
/// Prefix of used certificates: `c` ‖ SHA-256 of the `jti` → expiry (big-endian).
const CERTIFICATE: u8 = b'c';
/// Length of an encoded [`StoredKey`].
const RECORD_LEN: usize = 30;

/// One uploaded key as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredKey {
    /// The key and what is published about it.
    pub key: ExportKey,
    /// Upload time rounded down to the hour, Unix seconds.
    pub upload_hour: u64,
    /// Earliest time the key may appear in an export, Unix seconds.
    pub release_at: u64,
    /// When its revision may appear in an export, once it has been revised.
    pub revised_release_at: Option<u64>,
}

impl StoredKey {
    /// Whether the key's report type may still change: only once, and only from a likely
    /// diagnosis to a confirmed one, or from anything but a revocation to a revocation.
    pub fn may_revise_to(&self, report_type: ReportType) -> bool {
        if self.revised_release_at.is_some() {
            return false;
        }
        matches!(
            (self.key.report_type, report_type),
            (
                Some(ReportType::ConfirmedClinicalDiagnosis),
                ReportType::ConfirmedTest
            )
        ) || (report_type == ReportType::Revoked
            && self.key.report_type != Some(ReportType::Revoked))
    }

    fn encode(&self) -> [u8; RECORD_LEN] {
        let key = &self.key;
        let mut bytes = [0u8; RECORD_LEN];
        bytes[0..4].copy_from_slice(&key.rolling_start.value().to_be_bytes());
        bytes[4] = key.rolling_period as u8;
        bytes[5] = key.transmission_risk_level.clamp(0, 255) as u8;
        bytes[6] = key.report_type.map_or(0xff, |report| report.to_i32() as u8);
        bytes[7] = key
            .days_since_onset_of_symptoms
            .map_or(0x80, |days| days.clamp(-127, 127) as i8 as u8);
        bytes[8..16].copy_from_slice(&self.upload_hour.to_be_bytes());
        bytes[16..24].copy_from_slice(&self.release_at.to_be_bytes());
        let revised = self.revised_release_at.map_or(u64::MAX, |at| at);
        bytes[24..30].copy_from_slice(&revised.to_be_bytes()[2..]);
        bytes
    }

    fn decode(key: DiagnosisKey, bytes: &[u8]) -> Result<Self> {
        let bytes: &[u8; RECORD_LEN] =
            bytes.try_into().map_err(|_| Error::Corrupt("key record"))?;
        let word = |range: std::ops::Range<usize>| {
            let mut buffer = [0u8; 8];
            buffer[8 - range.len()..].copy_from_slice(&bytes[range]);
            u64::from_be_bytes(buffer)
        };
        let report_type = match bytes[6] {
            0xff => None,
            value => Some(ReportType::from_i32(value.into()).ok_or(Error::Corrupt("report type"))?),
        };
        let revised = word(24..30);
        Ok(Self {
            key: ExportKey {
                key,
                transmission_risk_level: bytes[5].into(),
                rolling_start: EnIntervalNumber::new(word(0..4) as u32),
                rolling_period: bytes[4].into(),
                report_type,
                days_since_onset_of_symptoms: (bytes[7] != 0x80)
                    .then_some(i32::from(bytes[7] as i8)),
            },
            upload_hour: word(8..16),
            release_at: word(16..24),
            revised_release_at: (revised != 0xffff_ffff_ffff).then_some(revised),
        })
    }
}

/// The tree of uploaded keys.
#[derive(Clone, Debug)]
pub struct PublishedKeys {
    tree: sled::Tree,
}

impl PublishedKeys {
    /// Wraps the key side's `keys` tree.
    pub fn new(tree: sled::Tree) -> Self {
        Self { tree }
    }

    /// The stored record of `key`, if any.
    ///
    /// # Errors
    ///
    /// Storage failures and corrupt records.
    pub fn get(&self, key: &DiagnosisKey) -> Result<Option<StoredKey>> {
        self.tree
            .get(record_key(key))?
            .map(|bytes| StoredKey::decode(*key, &bytes))
            .transpose()
    }

    /// Writes new and revised records in one atomic batch. `previous` gives, for a revision,
    /// the record it replaces, so its old index entries can be moved.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub fn write(&self, records: &[(StoredKey, Option<StoredKey>)]) -> Result<()> {
        self.tree.apply_batch(records_batch(records))?;
        Ok(())
    }

    /// Writes an upload's records and marks its certificate used, in one atomic batch.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub fn write_with_certificate(
        &self,
        records: &[(StoredKey, Option<StoredKey>)],
        certificate_hash: &[u8; 32],
        expires: u64,
    ) -> Result<()> {
        let mut batch = records_batch(records);
        batch.insert(
            certificate_key(certificate_hash).to_vec(),
            expires.to_be_bytes().to_vec(),
        );
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Whether a certificate with this `jti` hash was used already.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub fn certificate_used(&self, certificate_hash: &[u8; 32]) -> Result<bool> {
        Ok(self.tree.contains_key(certificate_key(certificate_hash))?)
    }

    /// Forgets used certificates that expired before `cutoff`; they can no longer be presented.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub fn forget_certificates_before(&self, cutoff: u64) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for entry in self.tree.scan_prefix([CERTIFICATE]) {
            let (key, expiry) = entry?;
            let expiry: [u8; 8] = expiry
                .as_ref()
                .try_into()
                .map_err(|_| Error::Corrupt("certificate record"))?;
            if u64::from_be_bytes(expiry) < cutoff {
                batch.remove(key);
                count += 1;
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(count)
    }

    /// Keys whose release time lies in `[start, end)`, in no particular order.
    ///
    /// # Errors
    ///
    /// Storage failures and corrupt records.
    pub fn released_in(&self, start: u64, end: u64) -> Result<Vec<StoredKey>> {
        self.indexed_in(RELEASE, start, end)
    }

    /// Keys whose revision release time lies in `[start, end)`.
    ///
    /// # Errors
    ///
    /// Storage failures and corrupt records.
    pub fn revised_in(&self, start: u64, end: u64) -> Result<Vec<StoredKey>> {
        self.indexed_in(REVISION, start, end)
    }

    /// The earliest release or revision time at or after `from`, to skip empty windows.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub fn next_release_from(&self, from: u64) -> Result<Option<u64>> {
        let first = |prefix: u8| -> Result<Option<u64>> {
            let start = index_key(prefix, from, &DiagnosisKey::from_bytes([0; 16]));
            let end = [prefix + 1];
            Ok(self
                .tree
                .range(start.to_vec()..end.to_vec())
                .next()
                .transpose()?
                .map(|(index, _)| index_time(&index)))
        };
        Ok(match (first(RELEASE)?, first(REVISION)?) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Deletes every key released before `cutoff`, with its index entries. Returns how many.
    ///
    /// # Errors
    ///
    /// Storage failures and corrupt records.
    pub fn delete_released_before(&self, cutoff: u64) -> Result<usize> {
        let old = self.released_in(0, cutoff)?;
        let mut batch = sled::Batch::default();
        for record in &old {
            let key = &record.key.key;
            batch.remove(record_key(key).to_vec());
            batch.remove(index_key(RELEASE, record.release_at, key).to_vec());
            if let Some(at) = record.revised_release_at {
                batch.remove(index_key(REVISION, at, key).to_vec());
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(old.len())
    }

    /// Number of stored keys.
    pub fn len(&self) -> usize {
        self.tree.scan_prefix([RECORD]).count()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.tree.scan_prefix([RECORD]).next().is_none()
    }

    fn indexed_in(&self, prefix: u8, start: u64, end: u64) -> Result<Vec<StoredKey>> {
        let from = index_key(prefix, start, &DiagnosisKey::from_bytes([0; 16]));
        let to = index_key(prefix, end, &DiagnosisKey::from_bytes([0; 16]));
        let mut records = Vec::new();
        for entry in self.tree.range(from..to) {
            let (index, _) = entry?;
            let key = DiagnosisKey::from_slice(&index[9..]).map_err(|_| Error::Corrupt("index"))?;
            let record = self
                .get(&key)?
                .ok_or(Error::Corrupt("index without record"))?;
            records.push(record);
        }
        Ok(records)
    }
}

fn records_batch(records: &[(StoredKey, Option<StoredKey>)]) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (record, previous) in records {
        let key = &record.key.key;
        if let Some(previous) = previous {
            batch.remove(index_key(RELEASE, previous.release_at, key).to_vec());
        }
        batch.insert(record_key(key).to_vec(), record.encode().to_vec());
        batch.insert(
            index_key(RELEASE, record.release_at, key).to_vec(),
            Vec::new(),
        );
        if let Some(at) = record.revised_release_at {
            batch.insert(index_key(REVISION, at, key).to_vec(), Vec::new());
        }
    }
    batch
}

fn certificate_key(hash: &[u8; 32]) -> [u8; 33] {
    let mut bytes = [CERTIFICATE; 33];
    bytes[1..].copy_from_slice(hash);
    bytes
}

fn record_key(key: &DiagnosisKey) -> [u8; 17] {
    let mut bytes = [RECORD; 17];
    bytes[1..].copy_from_slice(key.as_bytes());
    bytes
}

fn index_key(prefix: u8, time: u64, key: &DiagnosisKey) -> [u8; 25] {
    let mut bytes = [prefix; 25];
    bytes[1..9].copy_from_slice(&time.to_be_bytes());
    bytes[9..].copy_from_slice(key.as_bytes());
    bytes
}

fn index_time(index: &[u8]) -> u64 {
    let mut time = [0u8; 8];
    time.copy_from_slice(&index[1..9]);
    u64::from_be_bytes(time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(byte: u8, release_at: u64) -> StoredKey {
        StoredKey {
            key: ExportKey {
                key: DiagnosisKey::from_bytes([byte; 16]),
                transmission_risk_level: 4,
                rolling_start: EnIntervalNumber::new(2_900_016),
                rolling_period: 144,
                report_type: Some(ReportType::ConfirmedClinicalDiagnosis),
                days_since_onset_of_symptoms: Some(-3),
            },
            upload_hour: 1_700_000_000,
            release_at,
            revised_release_at: None,
        }
    }

    fn store() -> PublishedKeys {
        let db = sled::Config::new().temporary(true).open().unwrap();
        PublishedKeys::new(db.open_tree("keys").unwrap())
    }

    #[test]
    fn records_round_trip() {
        let mut original = record(1, 1_700_003_600);
        assert_eq!(
            StoredKey::decode(original.key.key, &original.encode()).unwrap(),
            original
        );
        original.key.report_type = None;
        original.key.days_since_onset_of_symptoms = None;
        original.revised_release_at = Some(1_700_007_200);
        assert_eq!(
            StoredKey::decode(original.key.key, &original.encode()).unwrap(),
            original
        );
        assert!(StoredKey::decode(original.key.key, &[0; 3]).is_err());
    }

    #[test]
    fn windows_and_retention() {
        let keys = store();
        keys.write(&[
            (record(1, 100), None),
            (record(2, 200), None),
            (record(3, 300), None),
        ])
        .unwrap();
        assert_eq!(keys.released_in(100, 300).unwrap().len(), 2);
        assert_eq!(keys.next_release_from(0).unwrap(), Some(100));
        assert_eq!(keys.next_release_from(101).unwrap(), Some(200));

        assert_eq!(keys.delete_released_before(201).unwrap(), 2);
        assert_eq!(keys.len(), 1);
        assert!(
            keys.get(&DiagnosisKey::from_bytes([1; 16]))
                .unwrap()
                .is_none()
        );
        assert_eq!(keys.next_release_from(0).unwrap(), Some(300));
        assert_eq!(keys.next_release_from(301).unwrap(), None);
    }

    #[test]
    fn revision_moves_the_key_into_the_revision_index() {
        let keys = store();
        let original = record(1, 100);
        keys.write(&[(original, None)]).unwrap();
        let mut revised = original;
        revised.key.report_type = Some(ReportType::ConfirmedTest);
        revised.revised_release_at = Some(500);
        keys.write(&[(revised, Some(original))]).unwrap();

        assert_eq!(keys.revised_in(500, 501).unwrap(), vec![revised]);
        assert_eq!(keys.released_in(100, 101).unwrap(), vec![revised]);
        assert!(!revised.may_revise_to(ReportType::Revoked));
        assert!(original.may_revise_to(ReportType::ConfirmedTest));
        assert!(original.may_revise_to(ReportType::Revoked));
        assert!(!original.may_revise_to(ReportType::SelfReport));
    }
}
