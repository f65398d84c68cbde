//! The key side's store of uploaded diagnosis keys (`spec/key-server.md`, "Storage").
//!
//! Per key the store keeps only what its export needs, plus the hour it was uploaded and the
//! time it may first be exported; per used certificate, the hash of its `jti` and its expiry.
//!
//! On disk, in one sled tree:
//!
//! - an upload is one entry, written with one plain insert, so it is stored whole or not at
//!   all. Sled batches are never used: a batch takes a lock that shuts out every reader and
//!   writer of every sled database in the process, and under concurrent uploads that lock, not
//!   the disk, set the pace. One entry is also a fraction of the work of one entry per key;
//! - once the hour it was uploaded in has ended, the worker merges it into *hour parts*: the
//!   records of every upload of that hour, sorted by key, so that which keys came together is
//!   kept no longer than that. A merge writes its parts, then a marker naming the last upload it
//!   covers, and only then removes the uploads; a merge cut short is redone from the uploads.
//!
//! In memory, an index mirrors the tree (rebuilt by one scan when the store opens): an upload
//! reads nothing from disk, and the export worker finds a window's keys without a scan. One
//! lock over the index makes each upload's checks and write a unit: two uploads of the same key
//! or certificate cannot interleave.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use varsel_protocol::export::{ExportKey, ReportType};
use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::keys::DiagnosisKey;

use crate::error::{Error, Result};

/// Prefix of uploads: `u` ‖ sequence number (big-endian) → [`UploadEntry`].
const UPLOAD: u8 = b'u';
/// Prefix of hour parts: `h` ‖ sequence number of the last upload merged ‖ part number.
const PART: u8 = b'h';
/// The merge marker: every upload up to this sequence number is in hour parts.
const MERGED: &[u8] = b"m";
/// Prefix of used certificates once merged: `c` ‖ SHA-256 of the `jti` → expiry.
const CERTIFICATE: u8 = b'c';
/// Length of an encoded [`StoredKey`].
const RECORD_LEN: usize = 30;
/// Length of a key with its record, as uploads and parts list them.
const LISTED_LEN: usize = 16 + RECORD_LEN;
/// Most uploads one merge step takes, to bound its memory.
const MERGE_UPLOADS: usize = 20_000;
/// Most records in one hour part.
const PART_RECORDS: usize = 50_000;

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

/// The uploaded keys: their sled tree and the index over it.
#[derive(Clone, Debug)]
pub struct PublishedKeys {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    tree: sled::Tree,
    index: Mutex<Index>,
}

/// What the tree holds, in memory.
#[derive(Debug, Default)]
struct Index {
    /// Each key's current record.
    records: HashMap<DiagnosisKey, [u8; RECORD_LEN]>,
    /// Keys by release time.
    by_release: Times,
    /// Revised keys by the release time of their revision.
    by_revision: Times,
    /// Used certificates and when they expire.
    certificates: HashMap<[u8; 32], u64>,
    /// Hour parts on disk, with the latest release time of the records in them.
    parts: BTreeMap<Vec<u8>, u64>,
    /// The sequence number of the next upload.
    next_upload: u64,
}

/// Keys listed by a time: release or revision release.
type Times = BTreeMap<u64, Vec<DiagnosisKey>>;

impl PublishedKeys {
    /// Opens the key side's `keys` tree and builds the index from it: hour parts first, then
    /// uploads not merged yet, in the order they were written. A merge that was cut short is
    /// undone. Keys released before `retained_from` and certificates that expired before
    /// `now` are left out.
    ///
    /// # Errors
    ///
    /// Storage failures and corrupt entries.
    pub fn open(tree: sled::Tree, now: u64, retained_from: u64) -> Result<Self> {
        let merged = merge_marker(&tree)?;
        let mut index = Index {
            next_upload: merged + 1,
            ..Index::default()
        };
        index.load_parts(&tree, merged)?;
        index.load_uploads(&tree, merged, now)?;
        index.load_certificates(&tree, now)?;
        index.remove_released_before(retained_from);
        let shared = Shared {
            tree,
            index: Mutex::new(index),
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// The stored record of `key`, if any.
    ///
    /// # Errors
    ///
    /// A corrupt record.
    pub fn get(&self, key: &DiagnosisKey) -> Result<Option<StoredKey>> {
        self.lock().get(key)
    }

    /// Exclusive access for one upload: what it reads and what it writes happen under one lock.
    pub fn upload(&self) -> Upload<'_> {
        Upload {
            tree: &self.shared.tree,
            index: self.lock(),
        }
    }

    /// Whether a certificate with this `jti` hash was used already.
    pub fn certificate_used(&self, certificate_hash: &[u8; 32]) -> bool {
        self.lock().certificates.contains_key(certificate_hash)
    }

    /// Merges every upload of an hour that ended before `now` into hour parts; returns how
    /// many uploads were merged.
    ///
    /// # Errors
    ///
    /// Storage failures and corrupt entries; what was merged stays merged, the rest waits for
    /// the next call.
    pub fn merge_ended_hours(&self, now: u64) -> Result<usize> {
        let tree = &self.shared.tree;
        let hour = now / 3_600 * 3_600;
        let mut merged = 0;
        loop {
            let uploads = uploads_before(tree, hour)?;
            let Some((last, _)) = uploads.last() else {
                return Ok(merged);
            };
            let parts = hour_parts(*last, &uploads);
            for (name, value, _) in &parts {
                tree.insert(name.as_slice(), value.as_slice())?;
            }
            for (_, upload) in &uploads {
                if upload.expires >= now {
                    let expires = upload.expires.to_be_bytes();
                    tree.insert(certificate_key(&upload.certificate_hash), &expires)?;
                }
            }
            // The parts must be on disk before the marker says the uploads are in them.
            tree.flush()?;
            tree.insert(MERGED, &last.to_be_bytes())?;
            tree.flush()?;
            for (sequence, _) in &uploads {
                tree.remove(upload_key(*sequence))?;
            }
            let mut index = self.lock();
            for (name, _, latest_release) in parts {
                index.parts.insert(name, latest_release);
            }
            merged += uploads.len();
        }
    }

    /// Forgets used certificates that expired before `cutoff`; they can no longer be presented.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub fn forget_certificates_before(&self, cutoff: u64) -> Result<usize> {
        let mut expired = Vec::new();
        self.lock().certificates.retain(|hash, expiry| {
            let keep = *expiry >= cutoff;
            if !keep {
                expired.push(*hash);
            }
            keep
        });
        for hash in &expired {
            self.shared.tree.remove(certificate_key(hash))?;
        }
        Ok(expired.len())
    }

    /// Keys whose release time lies in `[start, end)`, in no particular order.
    ///
    /// # Errors
    ///
    /// Corrupt records.
    pub fn released_in(&self, start: u64, end: u64) -> Result<Vec<StoredKey>> {
        let index = self.lock();
        index.records_in(&index.by_release, start, end)
    }

    /// Keys whose revision release time lies in `[start, end)`.
    ///
    /// # Errors
    ///
    /// Corrupt records.
    pub fn revised_in(&self, start: u64, end: u64) -> Result<Vec<StoredKey>> {
        let index = self.lock();
        index.records_in(&index.by_revision, start, end)
    }

    /// The earliest release or revision time at or after `from`, to skip empty windows.
    pub fn next_release_from(&self, from: u64) -> Option<u64> {
        let index = self.lock();
        let first = |times: &Times| times.range(from..).next().map(|(at, _)| *at);
        match (first(&index.by_release), first(&index.by_revision)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Deletes every key released before `cutoff`, and every hour part holding only such
    /// keys. Returns how many keys.
    ///
    /// # Errors
    ///
    /// Storage failures; a part left behind is dropped again from the index when the store
    /// next opens.
    pub fn delete_released_before(&self, cutoff: u64) -> Result<usize> {
        let (deleted, parts) = {
            let mut index = self.lock();
            let deleted = index.remove_released_before(cutoff);
            (deleted, index.take_parts_before(cutoff))
        };
        for name in parts {
            self.shared.tree.remove(name)?;
        }
        Ok(deleted)
    }

    /// Number of stored keys.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.lock().records.is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.shared
            .index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One upload's exclusive access to the store, from [`PublishedKeys::upload`].
#[derive(Debug)]
pub struct Upload<'a> {
    tree: &'a sled::Tree,
    index: MutexGuard<'a, Index>,
}

impl Upload<'_> {
    /// The stored record of `key`, if any.
    ///
    /// # Errors
    ///
    /// A corrupt record.
    pub fn get(&self, key: &DiagnosisKey) -> Result<Option<StoredKey>> {
        self.index.get(key)
    }

    /// Whether a certificate with this `jti` hash was used already.
    pub fn certificate_used(&self, certificate_hash: &[u8; 32]) -> bool {
        self.index.certificates.contains_key(certificate_hash)
    }

    /// Stores new and revised records, and marks the certificate used, as one entry written
    /// in `hour` (the upload time rounded down to the hour). The index changes only once the
    /// entry is written.
    ///
    /// # Errors
    ///
    /// Storage failures; nothing is stored then.
    pub fn commit(
        mut self,
        records: &[StoredKey],
        certificate_hash: &[u8; 32],
        expires: u64,
        hour: u64,
    ) -> Result<()> {
        let entry = UploadEntry {
            certificate_hash: *certificate_hash,
            expires,
            hour,
            records: records.to_vec(),
        };
        let sequence = self.index.next_upload;
        self.tree.insert(upload_key(sequence), entry.encode())?;
        self.index.next_upload = sequence + 1;
        for record in records {
            self.index.add(record);
        }
        self.index.certificates.insert(*certificate_hash, expires);
        Ok(())
    }
}

impl Index {
    fn get(&self, key: &DiagnosisKey) -> Result<Option<StoredKey>> {
        self.records
            .get(key)
            .map(|bytes| StoredKey::decode(*key, bytes))
            .transpose()
    }

    /// Takes in `record`, replacing the key's current one in the time lists.
    fn add(&mut self, record: &StoredKey) {
        let key = record.key.key;
        if let Some(previous) = self.records.insert(key, record.encode()) {
            self.unlist(&key, &previous);
        }
        self.by_release
            .entry(record.release_at)
            .or_default()
            .push(key);
        if let Some(at) = record.revised_release_at {
            self.by_revision.entry(at).or_default().push(key);
        }
    }

    /// Removes `key`, stored as `bytes`, from the time lists.
    fn unlist(&mut self, key: &DiagnosisKey, bytes: &[u8; RECORD_LEN]) {
        let Ok(record) = StoredKey::decode(*key, bytes) else {
            return;
        };
        remove_from(&mut self.by_release, record.release_at, key);
        if let Some(at) = record.revised_release_at {
            remove_from(&mut self.by_revision, at, key);
        }
    }

    /// Lets go of every key released before `cutoff`; returns how many.
    fn remove_released_before(&mut self, cutoff: u64) -> usize {
        let kept = self.by_release.split_off(&cutoff);
        let expired = std::mem::replace(&mut self.by_release, kept);
        let mut removed = 0;
        for key in expired.into_values().flatten() {
            if let Some(bytes) = self.records.remove(&key) {
                self.unlist(&key, &bytes);
                removed += 1;
            }
        }
        removed
    }

    /// Forgets the hour parts whose every key was released before `cutoff`; returns their
    /// names.
    fn take_parts_before(&mut self, cutoff: u64) -> Vec<Vec<u8>> {
        let mut expired = Vec::new();
        self.parts.retain(|name, latest_release| {
            let keep = *latest_release >= cutoff;
            if !keep {
                expired.push(name.clone());
            }
            keep
        });
        expired
    }

    fn records_in(&self, times: &Times, start: u64, end: u64) -> Result<Vec<StoredKey>> {
        let keys = times.range(start..end).flat_map(|(_, keys)| keys);
        keys.map(|key| self.get(key)?.ok_or(Error::Corrupt("index without record")))
            .collect()
    }

    /// Takes in the hour parts, oldest merge first, and removes those of a merge that never
    /// set its marker.
    fn load_parts(&mut self, tree: &sled::Tree, merged: u64) -> Result<()> {
        for entry in tree.scan_prefix([PART]) {
            let (name, value) = entry?;
            if sequence_in(&name)? > merged {
                tree.remove(name)?;
                continue;
            }
            let (latest_release, records) = decode_part(&value)?;
            for record in &records {
                self.add(record);
            }
            self.parts.insert(name.to_vec(), latest_release);
        }
        Ok(())
    }

    /// Takes in the uploads not merged yet, in the order they were written, and removes
    /// those a finished merge left behind.
    fn load_uploads(&mut self, tree: &sled::Tree, merged: u64, now: u64) -> Result<()> {
        for entry in tree.scan_prefix([UPLOAD]) {
            let (name, value) = entry?;
            let sequence = sequence_in(&name)?;
            if sequence <= merged {
                tree.remove(name)?;
                continue;
            }
            let upload = UploadEntry::decode(&value)?;
            for record in &upload.records {
                self.add(record);
            }
            if upload.expires >= now {
                self.certificates
                    .insert(upload.certificate_hash, upload.expires);
            }
            self.next_upload = sequence + 1;
        }
        Ok(())
    }

    /// Takes in the used certificates of merged uploads, removing the expired ones.
    fn load_certificates(&mut self, tree: &sled::Tree, now: u64) -> Result<()> {
        for entry in tree.scan_prefix([CERTIFICATE]) {
            let (name, expiry) = entry?;
            let corrupt = |_| Error::Corrupt("certificate record");
            let hash: [u8; 32] = name[1..].try_into().map_err(corrupt)?;
            let expiry = u64::from_be_bytes(expiry.as_ref().try_into().map_err(corrupt)?);
            if expiry < now {
                tree.remove(name)?;
            } else {
                self.certificates.insert(hash, expiry);
            }
        }
        Ok(())
    }
}

/// One upload as stored until its hour is merged: the certificate's hash and expiry, the hour
/// it was written in, and its records.
#[derive(Debug, PartialEq, Eq)]
struct UploadEntry {
    certificate_hash: [u8; 32],
    expires: u64,
    hour: u64,
    records: Vec<StoredKey>,
}

impl UploadEntry {
    const HEADER_LEN: usize = 32 + 8 + 8;

    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(Self::HEADER_LEN + self.records.len() * LISTED_LEN);
        bytes.extend_from_slice(&self.certificate_hash);
        bytes.extend_from_slice(&self.expires.to_be_bytes());
        bytes.extend_from_slice(&self.hour.to_be_bytes());
        encode_listed(&self.records, &mut bytes);
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < Self::HEADER_LEN {
            return Err(Error::Corrupt("upload entry"));
        }
        let (header, listed) = bytes.split_at(Self::HEADER_LEN);
        Ok(Self {
            certificate_hash: header[..32]
                .try_into()
                .map_err(|_| Error::Corrupt("upload"))?,
            expires: be_u64(&header[32..40])?,
            hour: be_u64(&header[40..48])?,
            records: decode_listed(listed)?,
        })
    }
}

/// The uploads, oldest first, written in an hour before `hour`: as many as one merge step
/// takes, stopping at the first upload of `hour` or later.
fn uploads_before(tree: &sled::Tree, hour: u64) -> Result<Vec<(u64, UploadEntry)>> {
    let mut uploads = Vec::new();
    for entry in tree.scan_prefix([UPLOAD]) {
        let (name, value) = entry?;
        let upload = UploadEntry::decode(&value)?;
        if upload.hour >= hour || uploads.len() == MERGE_UPLOADS {
            break;
        }
        uploads.push((sequence_in(&name)?, upload));
    }
    Ok(uploads)
}

/// The hour parts of one merge step: per upload hour, the current record of every key sorted
/// by key, in parts of at most [`PART_RECORDS`]. Each comes with its name and the latest
/// release time in it.
fn hour_parts(last: u64, uploads: &[(u64, UploadEntry)]) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
    let mut hours: BTreeMap<u64, BTreeMap<DiagnosisKey, StoredKey>> = BTreeMap::new();
    for (_, upload) in uploads {
        for record in &upload.records {
            let hour = hours.entry(record.upload_hour).or_default();
            hour.insert(record.key.key, *record);
        }
    }
    let mut parts = Vec::new();
    for records in hours.into_values() {
        let records: Vec<StoredKey> = records.into_values().collect();
        for chunk in records.chunks(PART_RECORDS) {
            let latest_release = chunk.iter().map(|r| r.release_at).max().unwrap_or(0);
            let mut value = latest_release.to_be_bytes().to_vec();
            encode_listed(chunk, &mut value);
            let name = part_key(last, parts.len() as u32);
            parts.push((name, value, latest_release));
        }
    }
    parts
}

fn decode_part(value: &[u8]) -> Result<(u64, Vec<StoredKey>)> {
    if value.len() < 8 {
        return Err(Error::Corrupt("hour part"));
    }
    let (latest_release, listed) = value.split_at(8);
    Ok((be_u64(latest_release)?, decode_listed(listed)?))
}

fn encode_listed(records: &[StoredKey], out: &mut Vec<u8>) {
    for record in records {
        out.extend_from_slice(record.key.key.as_bytes());
        out.extend_from_slice(&record.encode());
    }
}

fn decode_listed(bytes: &[u8]) -> Result<Vec<StoredKey>> {
    if !bytes.len().is_multiple_of(LISTED_LEN) {
        return Err(Error::Corrupt("key list"));
    }
    bytes
        .chunks_exact(LISTED_LEN)
        .map(|listed| {
            let key = DiagnosisKey::from_slice(&listed[..16]).map_err(|_| Error::Corrupt("key"))?;
            StoredKey::decode(key, &listed[16..])
        })
        .collect()
}

fn merge_marker(tree: &sled::Tree) -> Result<u64> {
    tree.get(MERGED)?.map_or(Ok(0), |bytes| be_u64(&bytes))
}

fn be_u64(bytes: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| Error::Corrupt("number"))?;
    Ok(u64::from_be_bytes(bytes))
}

/// The sequence number in an upload's or a part's name.
fn sequence_in(name: &[u8]) -> Result<u64> {
    be_u64(name.get(1..9).ok_or(Error::Corrupt("entry name"))?)
}

/// Removes `key` from the list at `time`, and the list once it is empty.
fn remove_from(times: &mut Times, time: u64, key: &DiagnosisKey) {
    if let Some(keys) = times.get_mut(&time) {
        keys.retain(|listed| listed != key);
        if keys.is_empty() {
            times.remove(&time);
        }
    }
}

fn upload_key(sequence: u64) -> [u8; 9] {
    let mut bytes = [UPLOAD; 9];
    bytes[1..].copy_from_slice(&sequence.to_be_bytes());
    bytes
}

fn part_key(last: u64, number: u32) -> Vec<u8> {
    let mut bytes = vec![PART];
    bytes.extend_from_slice(&last.to_be_bytes());
    bytes.extend_from_slice(&number.to_be_bytes());
    bytes
}

fn certificate_key(hash: &[u8; 32]) -> [u8; 33] {
    let mut bytes = [CERTIFICATE; 33];
    bytes[1..].copy_from_slice(hash);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600;
    const NOW: u64 = 1_700_000_000 / HOUR * HOUR;

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
            upload_hour: NOW,
            release_at,
            revised_release_at: None,
        }
    }

    fn revised(original: StoredKey, at: u64) -> StoredKey {
        let mut revised = original;
        revised.key.report_type = Some(ReportType::ConfirmedTest);
        revised.revised_release_at = Some(at);
        revised
    }

    fn temporary_tree() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("keys").unwrap()
    }

    fn write(keys: &PublishedKeys, records: &[StoredKey], certificate: u8, hour: u64) {
        let expires = hour + HOUR;
        keys.upload()
            .commit(records, &[certificate; 32], expires, hour)
            .unwrap();
    }

    /// Every name in the tree, by its prefix letter.
    fn names(tree: &sled::Tree) -> String {
        tree.iter()
            .map(|entry| char::from(entry.unwrap().0[0]))
            .collect()
    }

    #[test]
    fn records_and_uploads_round_trip() {
        let mut original = record(1, NOW + HOUR);
        assert_eq!(
            StoredKey::decode(original.key.key, &original.encode()).unwrap(),
            original
        );
        original.key.report_type = None;
        original.key.days_since_onset_of_symptoms = None;
        original.revised_release_at = Some(NOW + 2 * HOUR);
        assert_eq!(
            StoredKey::decode(original.key.key, &original.encode()).unwrap(),
            original
        );
        assert!(StoredKey::decode(original.key.key, &[0; 3]).is_err());

        let upload = UploadEntry {
            certificate_hash: [7; 32],
            expires: NOW + HOUR,
            hour: NOW,
            records: vec![original, record(2, NOW)],
        };
        let bytes = upload.encode();
        assert_eq!(UploadEntry::decode(&bytes).unwrap(), upload);
        assert!(UploadEntry::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(UploadEntry::decode(&bytes[..20]).is_err());
    }

    #[test]
    fn windows_and_retention() {
        let keys = PublishedKeys::open(temporary_tree(), NOW, 0).unwrap();
        let records = [record(1, 100), record(2, 200), record(3, 300)];
        write(&keys, &records, 9, NOW);
        assert_eq!(keys.released_in(100, 300).unwrap().len(), 2);
        assert_eq!(keys.next_release_from(0), Some(100));
        assert_eq!(keys.next_release_from(101), Some(200));

        assert_eq!(keys.delete_released_before(201).unwrap(), 2);
        assert_eq!(keys.len(), 1);
        assert!(
            keys.get(&DiagnosisKey::from_bytes([1; 16]))
                .unwrap()
                .is_none()
        );
        assert_eq!(keys.next_release_from(0), Some(300));
        assert_eq!(keys.next_release_from(301), None);
    }

    #[test]
    fn an_upload_is_one_entry_until_its_hour_is_merged() {
        let tree = temporary_tree();
        let keys = PublishedKeys::open(tree.clone(), NOW, 0).unwrap();
        write(&keys, &[record(3, NOW), record(1, NOW)], 1, NOW);
        write(&keys, &[record(2, NOW)], 2, NOW);
        assert_eq!(names(&tree), "uu");

        // The hour has not ended: nothing to merge.
        assert_eq!(keys.merge_ended_hours(NOW + HOUR - 1).unwrap(), 0);
        assert_eq!(keys.merge_ended_hours(NOW + HOUR).unwrap(), 2);
        // One part, the certificates (still valid) and the marker; no upload is left.
        assert_eq!(names(&tree), "cchm");
        let (name, part) = tree.scan_prefix([PART]).next().unwrap().unwrap();
        assert_eq!(sequence_in(&name).unwrap(), 2);
        let (_, records) = decode_part(&part).unwrap();
        let listed: Vec<u8> = records.iter().map(|r| r.key.key.as_bytes()[0]).collect();
        assert_eq!(listed, [1, 2, 3], "sorted by key, not by upload");

        let reopened = PublishedKeys::open(tree, NOW + HOUR, 0).unwrap();
        assert_eq!(reopened.len(), 3);
        assert!(reopened.certificate_used(&[1; 32]));
        assert!(reopened.certificate_used(&[2; 32]));
    }

    #[test]
    fn reopening_rebuilds_the_index_from_parts_and_uploads() {
        let tree = temporary_tree();
        let keys = PublishedKeys::open(tree.clone(), NOW, 0).unwrap();
        let original = record(1, NOW);
        write(&keys, &[original, record(2, NOW + 2 * HOUR)], 7, NOW);
        keys.merge_ended_hours(NOW + HOUR).unwrap();
        // A revision, written in a later hour and not merged yet, wins over the part.
        let revision = revised(original, NOW + 2 * HOUR);
        write(&keys, &[revision], 8, NOW + HOUR);
        drop(keys);

        let reopened = PublishedKeys::open(tree.clone(), NOW + HOUR, 0).unwrap();
        assert_eq!(reopened.len(), 2);
        assert_eq!(reopened.get(&original.key.key).unwrap(), Some(revision));
        assert_eq!(
            reopened.revised_in(NOW, NOW + 3 * HOUR).unwrap(),
            vec![revision]
        );
        assert!(reopened.certificate_used(&[8; 32]));

        // Merged too, the revision still wins; keys past retention and certificates past
        // their expiry are left out when the store opens.
        reopened.merge_ended_hours(NOW + 2 * HOUR).unwrap();
        drop(reopened);
        let later = PublishedKeys::open(tree, NOW + 3 * HOUR, NOW + HOUR).unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(
            later
                .get(&DiagnosisKey::from_bytes([2; 16]))
                .unwrap()
                .unwrap()
                .release_at,
            NOW + 2 * HOUR
        );
        assert!(!later.certificate_used(&[7; 32]));
    }

    #[test]
    fn a_merge_cut_short_is_redone_from_the_uploads() {
        let tree = temporary_tree();
        let keys = PublishedKeys::open(tree.clone(), NOW, 0).unwrap();
        write(&keys, &[record(1, NOW)], 1, NOW);
        write(&keys, &[record(2, NOW)], 2, NOW);
        // A merge that wrote a part but died before its marker: the part is not trusted.
        let uploads = uploads_before(&tree, NOW + HOUR).unwrap();
        for (name, value, _) in hour_parts(2, &uploads[..1]) {
            tree.insert(name, value).unwrap();
        }
        drop(keys);
        let reopened = PublishedKeys::open(tree.clone(), NOW + HOUR, 0).unwrap();
        assert_eq!(names(&tree), "uu");
        assert_eq!(reopened.len(), 2);

        // A merge that set its marker but died before removing its uploads: they are gone.
        reopened.merge_ended_hours(NOW + HOUR).unwrap();
        tree.insert(
            upload_key(1),
            UploadEntry::decode(&uploads[0].1.encode())
                .unwrap()
                .encode(),
        )
        .unwrap();
        drop(reopened);
        let again = PublishedKeys::open(tree.clone(), NOW + HOUR, 0).unwrap();
        assert!(!names(&tree).contains('u'));
        assert_eq!(again.len(), 2);
        // New uploads number on from the marker.
        write(&again, &[record(3, NOW + HOUR)], 3, NOW + HOUR);
        assert_eq!(
            sequence_in(&tree.scan_prefix([UPLOAD]).next().unwrap().unwrap().0).unwrap(),
            3
        );
    }

    #[test]
    fn retention_deletes_parts_once_every_key_in_them_is_released() {
        let tree = temporary_tree();
        let keys = PublishedKeys::open(tree.clone(), NOW, 0).unwrap();
        // A key still valid at upload is released a day later than the rest of its hour.
        write(&keys, &[record(1, NOW), record(2, NOW + 24 * HOUR)], 1, NOW);
        keys.merge_ended_hours(NOW + HOUR).unwrap();

        assert_eq!(keys.delete_released_before(NOW + HOUR).unwrap(), 1);
        assert_eq!(
            tree.scan_prefix([PART]).count(),
            1,
            "one key still needs the part"
        );
        assert_eq!(keys.delete_released_before(NOW + 25 * HOUR).unwrap(), 1);
        assert_eq!(tree.scan_prefix([PART]).count(), 0);
        assert_eq!(keys.forget_certificates_before(NOW + 2 * HOUR).unwrap(), 1);
        assert_eq!(names(&tree), "m");
    }

    #[test]
    fn revision_moves_the_key_into_the_revision_index() {
        let keys = PublishedKeys::open(temporary_tree(), NOW, 0).unwrap();
        let original = record(1, 100);
        write(&keys, &[original], 1, NOW);
        let revised = revised(original, 500);
        write(&keys, &[revised], 2, NOW);

        assert_eq!(keys.revised_in(500, 501).unwrap(), vec![revised]);
        assert_eq!(keys.released_in(100, 101).unwrap(), vec![revised]);
        assert_eq!(keys.next_release_from(101), Some(500));
        assert!(!revised.may_revise_to(ReportType::Revoked));
        assert!(original.may_revise_to(ReportType::ConfirmedTest));
        assert!(original.may_revise_to(ReportType::Revoked));
        assert!(!original.may_revise_to(ReportType::SelfReport));
    }
}
