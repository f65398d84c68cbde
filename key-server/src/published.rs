//! The key side's store of uploaded diagnosis keys (`spec/key-server.md`, "Storage").
//!
//! Per key the store keeps only what its export needs, plus the hour it was uploaded and the
//! time it may first be exported; per used certificate, the hash of its `jti` and the hour it
//! expires by.
//!
//! On disk, in one sled tree:
//!
//! - an upload is one entry, written with one plain insert, so it is stored whole or not at
//!   all. Sled batches are never used: a batch takes a lock that shuts out every reader and
//!   writer of every sled database in the process, and under concurrent uploads that lock, not
//!   the disk, set the pace. One entry is also a fraction of the work of one entry per key;
//! - a few minutes after the hour an upload was written in has ended, the worker merges it into
//!   *hour parts*: the records of every upload of that hour, sorted by key, so that which keys
//!   came together is not kept. A merge writes its parts, then a marker naming the merge and
//!   the last upload it covers, and only then removes the uploads. A merge cut short before
//!   its marker is redone from the uploads; one cut short after it is finished when the store
//!   next opens.
//!
//! In memory, an index mirrors the tree (rebuilt by one scan when the store opens): an upload
//! reads nothing from disk, and the export worker finds a window's keys without a scan. One
//! lock over the index makes each upload's checks and write a unit: two uploads of the same key
//! or certificate cannot interleave.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};
use varsel_protocol::export::{ExportKey, ReportType};
use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::keys::DiagnosisKey;

use crate::error::{Error, Result};
use crate::locks::lock;

/// Seconds in an hour, the unit every stored time is rounded to.
pub const HOUR_SECONDS: u64 = 3_600;
/// How long after an hour ends its uploads are merged, so that none still in flight is left
/// to a part of its own.
pub const MERGE_GRACE_SECONDS: u64 = 5 * 60;

/// Prefix of uploads: `u` ‖ sequence number (big-endian) → [`UploadEntry`].
const UPLOAD: u8 = b'u';
/// Prefix of hour parts: `h` ‖ merge number ‖ part number → [`Part`] contents.
const PART: u8 = b'h';
/// The merge marker → [`Marker`].
const MARKER: &[u8] = b"m";
/// Prefix of used certificates once merged: `c` ‖ [`CertificateHash`] → expiry hour.
const CERTIFICATE: u8 = b'c';
/// Length of an encoded [`StoredKey`].
const RECORD_LEN: usize = 30;
/// Length of a key with its record, as uploads and parts list them.
const LISTED_LEN: usize = 16 + RECORD_LEN;
/// A merge step takes whole hours of uploads until it holds at least this many.
const MERGE_UPLOADS: usize = 20_000;
/// Most records in one hour part.
const PART_RECORDS: usize = 50_000;
/// Most keys read from the index under one hold of its lock.
const READ_CHUNK: usize = 10_000;

/// The start of the hour `time` falls in.
pub fn start_of_hour(time: u64) -> u64 {
    time / HOUR_SECONDS * HOUR_SECONDS
}

/// SHA-256 of a certificate's `jti`: how the store remembers that a certificate was used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CertificateHash([u8; 32]);

impl CertificateHash {
    /// The hash of the certificate identified by `jti`.
    pub fn of(jti: &str) -> Self {
        Self(Sha256::digest(jti.as_bytes()).into())
    }
}

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
    /// Held by whoever writes or removes hour parts, so that one does at a time.
    parts: Mutex<()>,
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
    /// Used certificates and the hour they expire by.
    certificates: HashMap<CertificateHash, u64>,
    /// Hour parts on disk, with the earliest and latest release time of their records.
    parts: BTreeMap<Vec<u8>, (u64, u64)>,
    /// The sequence number of the next upload.
    next_upload: u64,
    /// The hour of the last upload written: no upload is filed under an earlier one, so that
    /// uploads are in hour order and a merge never leaves one behind.
    last_hour: u64,
    /// The last hour merged: no upload is filed under it or before it any more.
    merged_hour: Option<u64>,
}

/// A key at a time: its release or the release of its revision.
type Place = (u64, DiagnosisKey);
/// Keys by a time: release or revision release.
type Times = BTreeSet<Place>;
/// A key with its encoded record.
type Listed = (DiagnosisKey, [u8; RECORD_LEN]);

/// How far merging has got: the number of the last merge, the last upload it covered, and
/// the hour that upload was filed under.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Marker {
    merge: u64,
    last_upload: u64,
    hour: Option<u64>,
}

impl PublishedKeys {
    /// Opens the key side's `keys` tree and builds the index from it: hour parts first, then
    /// uploads not merged yet, each in the order written, so a later record of a key (a
    /// revision) wins. What a merge cut short left is cleaned up. Keys released before
    /// `retained_from` and certificates that expired before `now` are left out.
    ///
    /// # Errors
    ///
    /// Storage failures and corrupt entries.
    pub fn open(tree: sled::Tree, now: u64, retained_from: u64) -> Result<Self> {
        migrate_per_key_records(&tree)?;
        let marker = Marker::read(&tree)?;
        let mut index = Index {
            next_upload: marker.last_upload + 1,
            merged_hour: marker.hour,
            ..Index::default()
        };
        index.load_parts(&tree, marker)?;
        index.load_uploads(&tree, marker, now)?;
        index.load_certificates(&tree, now)?;
        index.remove_released_before(retained_from);
        let shared = Shared {
            tree,
            index: Mutex::new(index),
            parts: Mutex::new(()),
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
        self.index().get(key)
    }

    /// Exclusive access for one upload: what it reads and what it writes happen under one lock.
    pub fn upload(&self) -> Upload<'_> {
        Upload {
            tree: &self.shared.tree,
            index: self.index(),
        }
    }

    /// Merges the uploads of every hour that ended at least [`MERGE_GRACE_SECONDS`] before
    /// `now` into hour parts; returns how many uploads were merged.
    ///
    /// # Errors
    ///
    /// Storage failures and corrupt entries; what was merged stays merged, and the rest waits
    /// for the next call.
    pub fn merge_ended_hours(&self, now: u64) -> Result<usize> {
        let _parts = lock(&self.shared.parts);
        let ended = start_of_hour(now.saturating_sub(MERGE_GRACE_SECONDS));
        let mut merged = 0;
        loop {
            // Read from disk each time: a step whose last flush failed may still have written
            // its marker, and then its uploads are merged.
            let marker = Marker::read(&self.shared.tree)?;
            {
                let mut index = self.index();
                index.merged_hour = index.merged_hour.max(marker.hour);
            }
            let uploads = self.uploads_to_merge(marker, ended)?;
            let Some((last_upload, last)) = uploads.last() else {
                return Ok(merged);
            };
            let next = Marker {
                merge: marker.merge + 1,
                last_upload: *last_upload,
                hour: Some(last.hour),
            };
            self.merge(next, &uploads, now)?;
            self.remove_uploads(&uploads)?;
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
        self.index().certificates.retain(|hash, expiry| {
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
        self.records_in(|index| &index.by_release, start, end)
    }

    /// Keys whose revision release time lies in `[start, end)`.
    ///
    /// # Errors
    ///
    /// Corrupt records.
    pub fn revised_in(&self, start: u64, end: u64) -> Result<Vec<StoredKey>> {
        self.records_in(|index| &index.by_revision, start, end)
    }

    /// The earliest release or revision time at or after `from`, to skip empty windows.
    pub fn next_release_from(&self, from: u64) -> Option<u64> {
        let index = self.index();
        let first = |times: &Times| times.range(first_at(from)..).next().map(|(at, _)| *at);
        match (first(&index.by_release), first(&index.by_revision)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Deletes every key released before `cutoff`: from the index, and from the hour parts,
    /// which are removed once empty. Returns how many keys.
    ///
    /// # Errors
    ///
    /// The first storage failure or corrupt part met; a part not rewritten keeps its expired
    /// keys on disk until a later call, and they are left out of the index when the store
    /// opens.
    pub fn delete_released_before(&self, cutoff: u64) -> Result<usize> {
        let _parts = lock(&self.shared.parts);
        let (deleted, touched) = {
            let mut index = self.index();
            let deleted = index.remove_released_before(cutoff);
            (deleted, index.parts_released_before(cutoff))
        };
        // One part that cannot be cut does not keep the others from it.
        let mut failure = None;
        for name in touched {
            if let Err(error) = self.cut_part(&name, cutoff) {
                failure.get_or_insert(error);
            }
        }
        failure.map_or(Ok(deleted), Err)
    }

    /// Number of stored keys.
    pub fn len(&self) -> usize {
        self.index().records.len()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.index().records.is_empty()
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        lock(&self.shared.index)
    }

    /// The records listed in `[start, end)` of one time list, copied out a chunk at a time so
    /// that uploads wait for the lock no longer than one chunk. Windows are read once they
    /// are over, when no upload can add to them.
    fn records_in(
        &self,
        list: impl Fn(&Index) -> &Times,
        start: u64,
        end: u64,
    ) -> Result<Vec<StoredKey>> {
        let mut records = Vec::new();
        if start >= end {
            return Ok(records);
        }
        let mut from = Bound::Included(first_at(start));
        loop {
            let (chunk, scanned) = self.index().copy_chunk(&list, from, first_at(end));
            for (key, bytes) in &chunk {
                records.push(StoredKey::decode(*key, bytes)?);
            }
            let Some(last) = scanned else {
                return Ok(records);
            };
            from = Bound::Excluded(last);
        }
    }

    /// The uploads the next merge step takes, oldest first: whole hours that ended before
    /// `ended`, until there are at least [`MERGE_UPLOADS`]. Only uploads numbered below the
    /// next one at the start are read: each of those is fully written.
    fn uploads_to_merge(&self, marker: Marker, ended: u64) -> Result<Vec<(u64, UploadEntry)>> {
        let end = self.index().next_upload;
        let range = upload_key(marker.last_upload + 1)..upload_key(end);
        let mut uploads: Vec<(u64, UploadEntry)> = Vec::new();
        for entry in self.shared.tree.range(range) {
            let (name, value) = entry?;
            let upload = UploadEntry::decode(&value)?;
            let hour_changes = uploads
                .last()
                .is_some_and(|(_, last)| last.hour != upload.hour);
            if upload.hour >= ended || (uploads.len() >= MERGE_UPLOADS && hour_changes) {
                break;
            }
            uploads.push((sequence_in(&name)?, upload));
        }
        Ok(uploads)
    }

    /// Writes one merge step's parts and the certificates still valid, then its marker, each
    /// flushed before the next, and lists the parts in the index.
    fn merge(&self, marker: Marker, uploads: &[(u64, UploadEntry)], now: u64) -> Result<()> {
        let tree = &self.shared.tree;
        let parts = hour_parts(marker.merge, uploads);
        // Parts that a failed attempt at this merge left behind would be trusted with it.
        for entry in tree.scan_prefix(&part_key(marker.merge, 0)[..9]) {
            tree.remove(entry?.0)?;
        }
        for part in &parts {
            tree.insert(part.name.as_slice(), part.value.as_slice())?;
        }
        for (_, upload) in uploads {
            if upload.expires >= now {
                let expires = upload.expires.to_be_bytes();
                tree.insert(certificate_key(&upload.certificate_hash), &expires)?;
            }
        }
        // The parts must be on disk before the marker says the uploads are in them.
        tree.flush()?;
        tree.insert(MARKER, &marker.encode())?;
        tree.flush()?;
        let mut index = self.index();
        for part in parts {
            index.parts.insert(part.name, part.releases);
        }
        index.merged_hour = marker.hour;
        Ok(())
    }

    /// Removes merged uploads; any left behind are removed when the store next opens.
    fn remove_uploads(&self, uploads: &[(u64, UploadEntry)]) -> Result<()> {
        for (sequence, _) in uploads {
            self.shared.tree.remove(upload_key(*sequence))?;
        }
        Ok(())
    }

    /// Rewrites the part `name` without the keys released before `cutoff`, or removes it when
    /// none is left.
    fn cut_part(&self, name: &[u8], cutoff: u64) -> Result<()> {
        let tree = &self.shared.tree;
        let Some(value) = tree.get(name)? else {
            self.index().parts.remove(name);
            return Ok(());
        };
        let (_, mut records) = decode_part(&value)?;
        records.retain(|record| record.release_at >= cutoff);
        let Some(part) = Part::new(name.to_vec(), &records) else {
            tree.remove(name)?;
            self.index().parts.remove(name);
            return Ok(());
        };
        tree.insert(name, part.value)?;
        self.index().parts.insert(part.name, part.releases);
        Ok(())
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

    /// Whether the certificate was used already.
    pub fn certificate_used(&self, certificate: &CertificateHash) -> bool {
        self.index.certificates.contains_key(certificate)
    }

    /// The hour an upload arriving at `now` is filed under, and its new keys stored with:
    /// the hour of `now`, unless the upload before it was filed later or that hour is merged
    /// already. Filing in hour order keeps a late upload out of a part of its own, and out of
    /// reach of anyone telling it apart by its hour inside a later one.
    pub fn hour_for(&self, now: u64) -> u64 {
        let after_merged = self.index.merged_hour.map_or(0, |hour| hour + HOUR_SECONDS);
        start_of_hour(now)
            .max(self.index.last_hour)
            .max(after_merged)
    }

    /// Stores new and revised records, and marks the certificate (accepted until `expires`)
    /// used, as one entry filed under `hour`, which must come from this upload's
    /// [`hour_for`](Self::hour_for). The certificate is remembered until the end of the hour
    /// it expires in. The index changes only once the entry is written.
    ///
    /// # Errors
    ///
    /// Storage failures; nothing is stored then.
    pub fn commit(
        mut self,
        records: &[StoredKey],
        certificate: &CertificateHash,
        expires: u64,
        hour: u64,
    ) -> Result<()> {
        debug_assert_eq!(hour, self.hour_for(hour), "an hour not from hour_for");
        let entry = UploadEntry {
            certificate_hash: *certificate,
            expires: expires.div_ceil(HOUR_SECONDS) * HOUR_SECONDS,
            hour,
            records: records.to_vec(),
        };
        let sequence = self.index.next_upload;
        self.tree.insert(upload_key(sequence), entry.encode())?;
        self.index.next_upload = sequence + 1;
        self.index.last_hour = entry.hour;
        for record in records {
            self.index.add(record);
        }
        self.index.certificates.insert(*certificate, entry.expires);
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
        self.by_release.insert((record.release_at, key));
        if let Some(at) = record.revised_release_at {
            self.by_revision.insert((at, key));
        }
    }

    /// Removes `key`, stored as `bytes`, from the time lists.
    fn unlist(&mut self, key: &DiagnosisKey, bytes: &[u8; RECORD_LEN]) {
        // Every record in the index was encoded by this module, so it decodes.
        let Ok(record) = StoredKey::decode(*key, bytes) else {
            return;
        };
        self.by_release.remove(&(record.release_at, *key));
        if let Some(at) = record.revised_release_at {
            self.by_revision.remove(&(at, *key));
        }
    }

    /// Lets go of every key released before `cutoff`; returns how many.
    fn remove_released_before(&mut self, cutoff: u64) -> usize {
        let kept = self.by_release.split_off(&first_at(cutoff));
        let expired = std::mem::replace(&mut self.by_release, kept);
        let mut removed = 0;
        for (_, key) in expired {
            if let Some(bytes) = self.records.remove(&key) {
                self.unlist(&key, &bytes);
                removed += 1;
            }
        }
        removed
    }

    /// The hour parts holding a key released before `cutoff`.
    fn parts_released_before(&self, cutoff: u64) -> Vec<Vec<u8>> {
        self.parts
            .iter()
            .filter(|(_, (earliest, _))| *earliest < cutoff)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The records of up to [`READ_CHUNK`] keys of a time list, from `from` to before `end`,
    /// and the last place scanned, if any.
    fn copy_chunk(
        &self,
        list: impl Fn(&Index) -> &Times,
        from: Bound<Place>,
        end: Place,
    ) -> (Vec<Listed>, Option<Place>) {
        let places: Vec<Place> = list(self)
            .range((from, Bound::Excluded(end)))
            .take(READ_CHUNK)
            .copied()
            .collect();
        let records = places
            .iter()
            .filter_map(|(_, key)| Some((*key, *self.records.get(key)?)))
            .collect();
        (records, places.last().copied())
    }

    /// Takes in the hour parts, oldest merge first, and removes those of a merge that never
    /// wrote its marker.
    fn load_parts(&mut self, tree: &sled::Tree, marker: Marker) -> Result<()> {
        for entry in tree.scan_prefix([PART]) {
            let (name, value) = entry?;
            if sequence_in(&name)? > marker.merge {
                tree.remove(name)?;
                continue;
            }
            let (releases, records) = decode_part(&value)?;
            for record in &records {
                self.add(record);
            }
            self.parts.insert(name.to_vec(), releases);
        }
        Ok(())
    }

    /// Takes in the uploads not merged yet, in the order they were written, and removes
    /// those a finished merge left behind.
    fn load_uploads(&mut self, tree: &sled::Tree, marker: Marker, now: u64) -> Result<()> {
        for entry in tree.scan_prefix([UPLOAD]) {
            let (name, value) = entry?;
            let sequence = sequence_in(&name)?;
            if sequence <= marker.last_upload {
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
            self.last_hour = self.last_hour.max(upload.hour);
        }
        Ok(())
    }

    /// Takes in the used certificates of merged uploads, removing the expired ones.
    fn load_certificates(&mut self, tree: &sled::Tree, now: u64) -> Result<()> {
        for entry in tree.scan_prefix([CERTIFICATE]) {
            let (name, expiry) = entry?;
            let hash: [u8; 32] = name[1..]
                .try_into()
                .map_err(|_| Error::Corrupt("certificate entry"))?;
            let expiry = be_u64(&expiry)?;
            if expiry < now {
                tree.remove(name)?;
            } else {
                self.certificates.insert(CertificateHash(hash), expiry);
            }
        }
        Ok(())
    }
}

impl Marker {
    /// The marker in `tree`, or the one before any merge.
    fn read(tree: &sled::Tree) -> Result<Self> {
        tree.get(MARKER)?
            .map_or(Ok(Self::default()), |bytes| Self::decode(&bytes))
    }

    fn encode(self) -> [u8; 24] {
        let mut bytes = [0; 24];
        bytes[..8].copy_from_slice(&self.merge.to_be_bytes());
        bytes[8..16].copy_from_slice(&self.last_upload.to_be_bytes());
        bytes[16..].copy_from_slice(&self.hour.map_or(u64::MAX, |hour| hour).to_be_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != 24 {
            return Err(Error::Corrupt("merge marker"));
        }
        let hour = be_u64(&bytes[16..])?;
        Ok(Self {
            merge: be_u64(&bytes[..8])?,
            last_upload: be_u64(&bytes[8..16])?,
            hour: (hour != u64::MAX).then_some(hour),
        })
    }
}

/// Moves records of the earlier layout, one entry per key (`k` ‖ key) with release and revision
/// lists (`r`, `v`), into hour parts of a merge of their own, as a merge would: parts, marker,
/// then removal, each flushed before the next. Certificates kept their layout.
fn migrate_per_key_records(tree: &sled::Tree) -> Result<()> {
    const RECORD: u8 = b'k';
    let mut hours = Hours::new();
    for entry in tree.scan_prefix([RECORD]) {
        let (name, bytes) = entry?;
        let key = DiagnosisKey::from_slice(&name[1..]).map_err(|_| Error::Corrupt("key"))?;
        let record = StoredKey::decode(key, &bytes)?;
        hours
            .entry(record.upload_hour)
            .or_default()
            .insert(key, record);
    }
    let Some(&hour) = hours.keys().next_back() else {
        return Ok(());
    };
    let marker = Marker::read(tree)?;
    let next = Marker {
        merge: marker.merge + 1,
        last_upload: marker.last_upload,
        hour: marker.hour.max(Some(hour)),
    };
    for part in parts_of(next.merge, hours) {
        tree.insert(part.name, part.value)?;
    }
    tree.flush()?;
    tree.insert(MARKER, &next.encode())?;
    tree.flush()?;
    for prefix in [RECORD, b'r', b'v'] {
        for entry in tree.scan_prefix([prefix]) {
            tree.remove(entry?.0)?;
        }
    }
    tree.flush()?;
    Ok(())
}

/// One upload as stored until it is merged: the certificate's hash and expiry hour, the hour
/// it is filed under, and its records.
#[derive(Debug, PartialEq, Eq)]
struct UploadEntry {
    certificate_hash: CertificateHash,
    expires: u64,
    hour: u64,
    records: Vec<StoredKey>,
}

impl UploadEntry {
    const HEADER_LEN: usize = 32 + 8 + 8;

    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(Self::HEADER_LEN + self.records.len() * LISTED_LEN);
        bytes.extend_from_slice(&self.certificate_hash.0);
        bytes.extend_from_slice(&self.expires.to_be_bytes());
        bytes.extend_from_slice(&self.hour.to_be_bytes());
        encode_listed(&self.records, &mut bytes);
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let (header, listed) = bytes
            .split_at_checked(Self::HEADER_LEN)
            .ok_or(Error::Corrupt("upload entry"))?;
        let (hash, times) = header.split_at(32);
        let mut certificate_hash = [0; 32];
        certificate_hash.copy_from_slice(hash);
        Ok(Self {
            certificate_hash: CertificateHash(certificate_hash),
            expires: be_u64(&times[..8])?,
            hour: be_u64(&times[8..])?,
            records: decode_listed(listed)?,
        })
    }
}

/// One hour part as written: its name, its contents (earliest and latest release time, then
/// the records sorted by key), and the two release times again for the index.
struct Part {
    name: Vec<u8>,
    value: Vec<u8>,
    releases: (u64, u64),
}

impl Part {
    /// The part `name` holding `records`, sorted by key; `None` when there are none.
    fn new(name: Vec<u8>, records: &[StoredKey]) -> Option<Self> {
        let earliest = records.iter().map(|record| record.release_at).min()?;
        let latest = records.iter().map(|record| record.release_at).max()?;
        let mut value = Vec::with_capacity(16 + records.len() * LISTED_LEN);
        value.extend_from_slice(&earliest.to_be_bytes());
        value.extend_from_slice(&latest.to_be_bytes());
        encode_listed(records, &mut value);
        Some(Self {
            name,
            value,
            releases: (earliest, latest),
        })
    }
}

/// The parts of merge `merge`: per hour the uploads are filed under, the latest record of
/// every key among them, sorted by key, at most [`PART_RECORDS`] to a part.
fn hour_parts(merge: u64, uploads: &[(u64, UploadEntry)]) -> Vec<Part> {
    let mut hours = Hours::new();
    for (_, upload) in uploads {
        let hour = hours.entry(upload.hour).or_default();
        for record in &upload.records {
            hour.insert(record.key.key, *record);
        }
    }
    parts_of(merge, hours)
}

/// Records by hour, each hour's sorted by key.
type Hours = BTreeMap<u64, BTreeMap<DiagnosisKey, StoredKey>>;

/// The parts of merge `merge` holding `hours`, hour after hour.
fn parts_of(merge: u64, hours: Hours) -> Vec<Part> {
    let mut parts = Vec::new();
    for records in hours.into_values() {
        let records: Vec<StoredKey> = records.into_values().collect();
        for chunk in records.chunks(PART_RECORDS) {
            parts.extend(Part::new(part_key(merge, parts.len() as u32), chunk));
        }
    }
    parts
}

/// A part's earliest and latest release time, and its records.
fn decode_part(value: &[u8]) -> Result<((u64, u64), Vec<StoredKey>)> {
    let (releases, listed) = value
        .split_at_checked(16)
        .ok_or(Error::Corrupt("hour part"))?;
    let releases = (be_u64(&releases[..8])?, be_u64(&releases[8..])?);
    Ok((releases, decode_listed(listed)?))
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
            let (key, record) = listed.split_at(16);
            let key = DiagnosisKey::from_slice(key).map_err(|_| Error::Corrupt("key"))?;
            StoredKey::decode(key, record)
        })
        .collect()
}

fn be_u64(bytes: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| Error::Corrupt("number"))?;
    Ok(u64::from_be_bytes(bytes))
}

/// The number right after the prefix of an upload's or a part's name: its sequence number or
/// its merge number.
fn sequence_in(name: &[u8]) -> Result<u64> {
    be_u64(name.get(1..9).ok_or(Error::Corrupt("entry name"))?)
}

/// The first place at `time` in a time list.
fn first_at(time: u64) -> Place {
    (time, DiagnosisKey::from_bytes([0; 16]))
}

fn upload_key(sequence: u64) -> [u8; 9] {
    let mut bytes = [UPLOAD; 9];
    bytes[1..].copy_from_slice(&sequence.to_be_bytes());
    bytes
}

fn part_key(merge: u64, number: u32) -> Vec<u8> {
    let mut bytes = vec![PART];
    bytes.extend_from_slice(&merge.to_be_bytes());
    bytes.extend_from_slice(&number.to_be_bytes());
    bytes
}

fn certificate_key(hash: &CertificateHash) -> [u8; 33] {
    let mut bytes = [CERTIFICATE; 33];
    bytes[1..].copy_from_slice(&hash.0);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = HOUR_SECONDS;
    const NOW: u64 = 1_700_000_000 / HOUR * HOUR;
    /// When the uploads of the hour starting at `hour` are merged.
    const fn merged_after(hour: u64) -> u64 {
        hour + HOUR + MERGE_GRACE_SECONDS
    }

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

    /// Commits `records` as an upload arriving at `at`.
    fn write(keys: &PublishedKeys, records: &[StoredKey], certificate: u8, at: u64) {
        let expires = at + 2 * HOUR;
        let upload = keys.upload();
        let hour = upload.hour_for(at);
        upload
            .commit(records, &CertificateHash([certificate; 32]), expires, hour)
            .unwrap();
    }

    fn used(keys: &PublishedKeys, certificate: u8) -> bool {
        keys.upload()
            .certificate_used(&CertificateHash([certificate; 32]))
    }

    /// Every name in the tree, by its prefix letter.
    fn names(tree: &sled::Tree) -> String {
        tree.iter()
            .map(|entry| char::from(entry.unwrap().0[0]))
            .collect()
    }

    /// The first byte of each key in each part, part by part.
    fn parts(tree: &sled::Tree) -> Vec<Vec<u8>> {
        tree.scan_prefix([PART])
            .map(|entry| {
                let (_, records) = decode_part(&entry.unwrap().1).unwrap();
                records.iter().map(|r| r.key.key.as_bytes()[0]).collect()
            })
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
            certificate_hash: CertificateHash([7; 32]),
            expires: NOW + HOUR,
            hour: NOW,
            records: vec![original, record(2, NOW)],
        };
        let bytes = upload.encode();
        assert_eq!(UploadEntry::decode(&bytes).unwrap(), upload);
        assert!(UploadEntry::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(UploadEntry::decode(&bytes[..20]).is_err());
        assert!(decode_part(&[0; 15]).is_err());
        assert!(Marker::decode(&[0; 15]).is_err());
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

        // Not before the hour has ended and the grace has passed.
        assert_eq!(keys.merge_ended_hours(merged_after(NOW) - 1).unwrap(), 0);
        assert_eq!(keys.merge_ended_hours(merged_after(NOW)).unwrap(), 2);
        // One part, the certificates (still valid) and the marker; no upload is left.
        assert_eq!(names(&tree), "cchm");
        assert_eq!(
            parts(&tree),
            [vec![1, 2, 3]],
            "sorted by key, not by upload"
        );

        let reopened = PublishedKeys::open(tree, merged_after(NOW), 0).unwrap();
        assert_eq!(reopened.len(), 3);
        assert!(used(&reopened, 1) && used(&reopened, 2));
    }

    #[test]
    fn an_upload_late_for_its_hour_goes_with_the_next() {
        let tree = temporary_tree();
        let keys = PublishedKeys::open(tree.clone(), NOW, 0).unwrap();
        assert_eq!(keys.upload().hour_for(NOW + 10), NOW);
        write(&keys, &[record(1, NOW + HOUR)], 1, NOW + HOUR);
        // Arriving in the hour before, after an upload of the next one: filed with that one,
        // and its keys stored with its hour, so nothing tells them apart inside the part.
        assert_eq!(keys.upload().hour_for(NOW + HOUR - 1), NOW + HOUR);
        write(&keys, &[record(2, NOW)], 2, NOW);
        assert_eq!(keys.merge_ended_hours(merged_after(NOW)).unwrap(), 0);
        assert_eq!(keys.merge_ended_hours(merged_after(NOW + HOUR)).unwrap(), 2);
        assert_eq!(parts(&tree), [vec![1, 2]]);

        // Nothing is filed under an hour merged already, even after reopening.
        drop(keys);
        let reopened = PublishedKeys::open(tree, merged_after(NOW + HOUR), 0).unwrap();
        assert_eq!(reopened.upload().hour_for(NOW + HOUR + 10), NOW + 2 * HOUR);
    }

    #[test]
    fn a_window_larger_than_one_read_is_read_whole() {
        let keys = PublishedKeys::open(temporary_tree(), NOW, 0).unwrap();
        let total = READ_CHUNK * 2 + 500;
        let records: Vec<StoredKey> = (0..total)
            .map(|i| {
                let mut key = record(0, NOW + (i % 3) as u64);
                key.key.key = DiagnosisKey::from_bytes((i as u128).to_be_bytes());
                key
            })
            .collect();
        for (i, upload) in records.chunks(30).enumerate() {
            write(&keys, upload, i as u8, NOW);
        }
        let mut read = keys.released_in(NOW, NOW + 3).unwrap();
        read.sort_by_key(|record| record.key.key);
        assert_eq!(read, records);
        assert_eq!(keys.released_in(NOW + 1, NOW + 2).unwrap().len(), total / 3);
    }

    #[test]
    fn a_revision_is_merged_with_the_hour_it_came_in() {
        let tree = temporary_tree();
        let keys = PublishedKeys::open(tree.clone(), NOW, 0).unwrap();
        let original = record(1, NOW);
        write(&keys, &[original, record(2, NOW)], 1, NOW);
        keys.merge_ended_hours(merged_after(NOW)).unwrap();
        write(&keys, &[revised(original, NOW + HOUR)], 2, NOW + HOUR);
        write(&keys, &[record(3, NOW + HOUR)], 3, NOW + HOUR);
        keys.merge_ended_hours(merged_after(NOW + HOUR)).unwrap();
        assert_eq!(parts(&tree), [vec![1, 2], vec![1, 3]]);
    }

    #[test]
    fn reopening_rebuilds_the_index_from_parts_and_uploads() {
        let tree = temporary_tree();
        let keys = PublishedKeys::open(tree.clone(), NOW, 0).unwrap();
        let original = record(1, NOW);
        write(&keys, &[original, record(2, NOW + 2 * HOUR)], 7, NOW);
        keys.merge_ended_hours(merged_after(NOW)).unwrap();
        // A revision, written later and not merged yet, wins over the part.
        let revision = revised(original, NOW + 2 * HOUR);
        write(&keys, &[revision], 8, NOW + HOUR);
        drop(keys);

        let reopened = PublishedKeys::open(tree.clone(), NOW + HOUR, 0).unwrap();
        assert_eq!(reopened.len(), 2);
        assert_eq!(reopened.get(&original.key.key).unwrap(), Some(revision));
        let revisions = reopened.revised_in(NOW, NOW + 3 * HOUR).unwrap();
        assert_eq!(revisions, vec![revision]);
        assert!(used(&reopened, 8));

        // Merged into a later part, the revision still wins over the original's part.
        reopened
            .merge_ended_hours(merged_after(NOW + HOUR))
            .unwrap();
        drop(reopened);
        let merged = PublishedKeys::open(tree.clone(), merged_after(NOW + HOUR), 0).unwrap();
        assert_eq!(parts(&tree).len(), 2);
        assert_eq!(merged.get(&original.key.key).unwrap(), Some(revision));
        drop(merged);

        // Keys past retention and certificates past their expiry are left out on opening.
        let later = PublishedKeys::open(tree, NOW + 3 * HOUR, NOW + HOUR).unwrap();
        assert_eq!(later.len(), 1);
        let kept = later.get(&DiagnosisKey::from_bytes([2; 16])).unwrap();
        assert_eq!(kept.map(|record| record.release_at), Some(NOW + 2 * HOUR));
        assert!(!used(&later, 7));
    }

    #[test]
    fn a_merge_cut_short_is_redone_or_finished() {
        let tree = temporary_tree();
        let keys = PublishedKeys::open(tree.clone(), NOW, 0).unwrap();
        write(&keys, &[record(1, NOW)], 1, NOW);
        write(&keys, &[record(2, NOW)], 2, NOW);
        // A merge that wrote a part but died before its marker: the part is not trusted.
        let uploads = keys
            .uploads_to_merge(Marker::default(), NOW + HOUR)
            .unwrap();
        for part in hour_parts(1, &uploads[..1]) {
            tree.insert(part.name, part.value).unwrap();
        }
        drop(keys);
        let reopened = PublishedKeys::open(tree.clone(), NOW + HOUR, 0).unwrap();
        assert_eq!(names(&tree), "uu");
        assert_eq!(reopened.len(), 2);

        // The same left behind by a failed attempt in a running server: cleared, not trusted.
        let stale = hour_parts(1, &uploads[..1]).remove(0);
        tree.insert(part_key(1, 7), stale.value).unwrap();
        reopened.merge_ended_hours(merged_after(NOW)).unwrap();
        assert_eq!(parts(&tree), [vec![1, 2]]);

        // A merge that wrote its marker but died before removing its uploads: they go.
        tree.insert(upload_key(1), uploads[0].1.encode()).unwrap();
        drop(reopened);
        let again = PublishedKeys::open(tree.clone(), NOW + HOUR, 0).unwrap();
        assert!(!names(&tree).contains('u'));
        assert_eq!(again.len(), 2);
        // New uploads number on from the marker.
        write(&again, &[record(3, NOW + HOUR)], 3, NOW + HOUR);
        let (name, _) = tree.scan_prefix([UPLOAD]).next().unwrap().unwrap();
        assert_eq!(sequence_in(&name).unwrap(), 3);
    }

    #[test]
    fn retention_cuts_parts_down_and_then_removes_them() {
        let tree = temporary_tree();
        let keys = PublishedKeys::open(tree.clone(), NOW, 0).unwrap();
        // A key still valid at upload is released a day later than the rest of its hour.
        write(&keys, &[record(1, NOW), record(2, NOW + 24 * HOUR)], 1, NOW);
        keys.merge_ended_hours(merged_after(NOW)).unwrap();

        assert_eq!(keys.delete_released_before(NOW + HOUR).unwrap(), 1);
        assert_eq!(
            parts(&tree),
            [vec![2]],
            "the released key leaves the disk too"
        );
        assert_eq!(keys.delete_released_before(NOW + 25 * HOUR).unwrap(), 1);
        assert!(parts(&tree).is_empty());
        assert_eq!(keys.forget_certificates_before(NOW + 3 * HOUR).unwrap(), 1);
        assert_eq!(names(&tree), "m");
    }

    #[test]
    fn records_of_the_per_key_layout_move_into_parts() {
        let tree = temporary_tree();
        let (first, second) = (record(2, NOW), revised(record(1, NOW), NOW + HOUR));
        for stored in [first, second] {
            let key = stored.key.key;
            let mut name = vec![b'k'];
            name.extend_from_slice(key.as_bytes());
            tree.insert(name, &stored.encode()).unwrap();
            let mut index = vec![b'r'];
            index.extend_from_slice(&stored.release_at.to_be_bytes());
            index.extend_from_slice(key.as_bytes());
            tree.insert(index, &[]).unwrap();
        }
        tree.insert(
            certificate_key(&CertificateHash([5; 32])),
            &(NOW + HOUR).to_be_bytes(),
        )
        .unwrap();

        let keys = PublishedKeys::open(tree.clone(), NOW, 0).unwrap();
        assert_eq!(names(&tree), "chm");
        assert_eq!(parts(&tree), [vec![1, 2]]);
        assert_eq!(keys.get(&first.key.key).unwrap(), Some(first));
        assert_eq!(keys.revised_in(NOW, NOW + 2 * HOUR).unwrap(), vec![second]);
        assert!(used(&keys, 5));
        // New uploads are filed after the migrated hour, and opening again changes nothing.
        assert_eq!(keys.upload().hour_for(NOW), NOW + HOUR);
        drop(keys);
        let again = PublishedKeys::open(tree.clone(), NOW, 0).unwrap();
        assert_eq!((again.len(), names(&tree).as_str()), (2, "chm"));
    }

    #[test]
    fn certificates_are_remembered_to_the_end_of_their_hour() {
        let tree = temporary_tree();
        let keys = PublishedKeys::open(tree.clone(), NOW, 0).unwrap();
        let certificate = CertificateHash::of("certificate id");
        keys.upload()
            .commit(&[record(1, NOW)], &certificate, NOW + 900, NOW)
            .unwrap();
        let (_, value) = tree.scan_prefix([UPLOAD]).next().unwrap().unwrap();
        assert_eq!(UploadEntry::decode(&value).unwrap().expires, NOW + HOUR);
        drop(keys);
        let open_at = |now| PublishedKeys::open(tree.clone(), now, 0).unwrap();
        assert!(open_at(NOW + HOUR).upload().certificate_used(&certificate));
        assert!(
            !open_at(NOW + HOUR + 1)
                .upload()
                .certificate_used(&certificate)
        );
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
