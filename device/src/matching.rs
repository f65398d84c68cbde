//! Local matching: which published diagnosis keys this device heard, and when.
//!
//! A [`Matcher`] is built once over the device's sightings. For each diagnosis key of a verified
//! export it derives the key's identifiers in one batched AES call and asks compact prefilters
//! whether any may have been heard: one indexed by the identifiers' own bits, then, for the few
//! that pass, one keyed with a secret AES key that an attacker choosing identifiers cannot
//! crowd. Only the rare "maybe" reaches the exact table (see [`index`]). A heard identifier
//! counts only when
//!
//! - the sighting lies within ±2 hours of the identifier's own ten-minute interval, so an
//!   identifier replayed later, elsewhere, does not match;
//! - the sighting was made before the export was published, so keys cannot be replayed once
//!   public;
//! - the metadata heard with it decrypts to a TX power within −50..=+20 dBm.
//!
//! Keys of an export are matched in parallel on the current rayon pool, day by day so that a
//! thread keeps one day's filter in its cache. [`open`] reads an export file with the protocol's
//! one-pass reader ([`ExportArchive::read`]) and verifies its signature; sync opens each
//! download with it, and its handler matches it with [`Matcher::match_archive`].
//! [`Matcher::match_files`] does the same for files at hand, reading the next file while it
//! matches one and holding at most three at a time, so memory stays proportional to the
//! sightings and one file, whatever the size of the download. [`windows`] then turns each
//! [`KeyMatch`] into GAEN exposure windows for scoring.
//!
//! # Performance
//!
//! `cargo bench -p varsel-device --bench matching` times the whole job for 1,000,000 keys in
//! four signed files against 50,000 sightings. On the 2-core development machine it takes
//! 1.4-1.7 s of CPU time, 0.85-0.92 s of wall time when it has both cores to itself, and peaks
//! below 80 MB.
//!
//! # Limitations
//!
//! Revised keys are matched like keys and flagged [`KeyMatch::revised`]; replacing the windows
//! of the key they revise is the caller's job.
//!
//! # Example
//!
//! ```
//! use varsel_device::matching::{Matcher, PrefilterKey};
//!
//! let sightings = Vec::new();
//! let matcher = Matcher::new(&sightings, &PrefilterKey::generate(&mut rand_core::OsRng))?;
//! assert!(matcher.match_keys(&[], 1_700_000_000).is_empty());
//! # Ok::<(), varsel_device::Error>(())
//! ```

pub mod index;
pub mod windows;

use std::collections::VecDeque;
use std::sync::Arc;

use rayon::prelude::*;
use varsel_protocol::export::{ExportArchive, ExportKey, ExportLimits, TrustedKeys};
use varsel_protocol::interval::{EK_ROLLING_PERIOD, INTERVAL_SECONDS};
use varsel_protocol::keys::{Metadata, RollingProximityIdentifier};

pub use index::PrefilterKey;
pub use windows::{WindowParams, exposure_windows};

use crate::Error;
use crate::sighting::Sighting;
use index::IdentifierIndex;

/// How far from its own interval an identifier may be heard and still match, in seconds.
pub const TOLERANCE_SECONDS: u64 = 2 * 60 * 60;

/// The TX powers, in dBm, that real devices advertise; metadata outside it is not believed.
pub const TX_POWER_RANGE: core::ops::RangeInclusive<i8> = -50..=20;

/// Keys handed to one parallel task; large enough to amortize scheduling.
const KEYS_PER_TASK: usize = 512;

const PERIOD: usize = EK_ROLLING_PERIOD as usize;

/// One sighting of a matched key, with its metadata decrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatchedSighting {
    /// When it was heard, in Unix seconds.
    pub time: u64,
    /// Received signal strength, in dBm.
    pub rssi: i16,
    /// The decrypted metadata: TX power and its calibration confidence.
    pub metadata: Metadata,
}

/// A diagnosis key this device heard, with every accepted sighting of it in time order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyMatch {
    /// The key and the facts published with it.
    pub key: ExportKey,
    /// Whether it came from the export's revised keys (an update of a key published before).
    pub revised: bool,
    /// The accepted sightings, oldest first; never empty.
    pub sightings: Vec<MatchedSighting>,
}

/// One downloaded export file to match, with the time it was published.
#[derive(Clone, Debug)]
pub struct ExportFile {
    /// The zip archive as downloaded; not yet trusted.
    pub bytes: Vec<u8>,
    /// When the device fetched it, in Unix seconds: an upper bound on its publication. The
    /// export's own end timestamp, when earlier, bounds it further.
    pub fetched_at: u64,
}

/// Finds the sightings of published keys among this device's sightings.
///
/// It keeps its own copy of the sightings, so one matcher can serve a whole sync.
pub struct Matcher {
    sightings: Arc<[Sighting]>,
    index: IdentifierIndex,
    earliest: u64,
    latest: u64,
}

impl Matcher {
    /// Indexes `sightings` once, hashing with `key` (use a fresh random key).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSetting`] for 2³² sightings or more.
    pub fn new(sightings: &[Sighting], key: &PrefilterKey) -> Result<Self, Error> {
        if u32::try_from(sightings.len()).is_err() {
            return Err(Error::InvalidSetting {
                name: "sightings",
                reason: "too many to index".to_owned(),
            });
        }
        Ok(Self {
            sightings: Arc::from(sightings),
            index: IdentifierIndex::build(sightings.iter().map(|s| (s.rpi, s.time)), key),
            earliest: sightings.iter().map(|s| s.time).min().unwrap_or(u64::MAX),
            latest: sightings.iter().map(|s| s.time).max().unwrap_or(0),
        })
    }

    /// Matches the keys and revised keys of an archive whose signature has been verified, as
    /// [`open`] returns it; takes the archive to sort its key lists in place.
    ///
    /// Only sightings made before `published_at` (Unix seconds) count.
    pub fn match_archive(&self, mut archive: ExportArchive, published_at: u64) -> Vec<KeyMatch> {
        let export = &mut archive.export;
        self.match_lists(&mut export.keys, &mut export.revised_keys, published_at)
    }

    /// Matches diagnosis keys in parallel on the current rayon pool.
    ///
    /// Keys are taken day by day, so that each thread keeps one day's filter in its cache.
    pub fn match_keys(&self, keys: &[ExportKey], published_at: u64) -> Vec<KeyMatch> {
        self.match_in_place(&mut keys.to_vec(), published_at)
    }

    /// Matches keys and revised keys, reordering both lists.
    fn match_lists(
        &self,
        keys: &mut [ExportKey],
        revised_keys: &mut [ExportKey],
        published_at: u64,
    ) -> Vec<KeyMatch> {
        let mut matches = self.match_in_place(keys, published_at);
        let revised = self.match_in_place(revised_keys, published_at);
        matches.extend(revised.into_iter().map(|found| KeyMatch {
            revised: true,
            ..found
        }));
        matches
    }

    /// Sorts `keys` by day, then matches them in parallel.
    fn match_in_place(&self, keys: &mut [ExportKey], published_at: u64) -> Vec<KeyMatch> {
        keys.par_sort_unstable_by_key(|key| key.rolling_start.value() / EK_ROLLING_PERIOD);
        keys.par_chunks(KEYS_PER_TASK)
            .flat_map_iter(|chunk| {
                let mut scratch = Scratch::new();
                chunk
                    .iter()
                    .filter_map(|key| self.match_key(key, published_at, &mut scratch))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Reads, verifies and matches export files in order; see
    /// [`match_files_with`](Self::match_files_with). Returns one outcome per file.
    pub fn match_files<I>(
        &self,
        files: I,
        trusted: &TrustedKeys,
        limits: &ExportLimits,
    ) -> Vec<Result<Vec<KeyMatch>, Error>>
    where
        I: IntoIterator<Item = ExportFile>,
    {
        let mut outcomes = Vec::new();
        self.match_files_with(files, trusted, limits, |outcome| outcomes.push(outcome));
        outcomes
    }

    /// Reads, verifies and matches export files in order, handing each file's outcome to
    /// `each` on the calling thread as soon as it is known, so a caller can record progress.
    ///
    /// The next file is read while the current one is matched, and the first two are read
    /// together, so at most three files are in memory at once. A file that fails its checks
    /// gets an error and changes nothing else.
    pub fn match_files_with<I, F>(
        &self,
        files: I,
        trusted: &TrustedKeys,
        limits: &ExportLimits,
        mut each: F,
    ) where
        I: IntoIterator<Item = ExportFile>,
        F: FnMut(Result<Vec<KeyMatch>, Error>),
    {
        let open = |file: Option<ExportFile>| file.map(|file| open(file, trusted, limits));
        let mut files = files.into_iter();

        let (first, second) = (files.next(), files.next());
        let (first, second) = rayon::join(|| open(first), || open(second));
        let mut ready: VecDeque<_> = first.into_iter().chain(second).collect();

        while let Some(current) = ready.pop_front() {
            let next = files.next();
            let (opened, outcome) = rayon::join(
                || open(next),
                || current.map(|(archive, published_at)| self.match_archive(archive, published_at)),
            );
            each(outcome);
            ready.extend(opened);
        }
    }

    /// Matches one key, or `None` when none of its identifiers was heard acceptably.
    fn match_key(
        &self,
        key: &ExportKey,
        published_at: u64,
        scratch: &mut Scratch,
    ) -> Option<KeyMatch> {
        let period = (key.rolling_period as usize).min(PERIOD);
        let first_start = u64::from(key.rolling_start.value()) * INTERVAL_SECONDS;
        if !self.may_have_heard(first_start, period, published_at) {
            return None;
        }

        let rpik = key.key.rpik();
        rpik.rpis_into(key.rolling_start, &mut scratch.rpis);
        let rpis = &scratch.rpis[..period];
        scratch.maybe.clear();
        self.index
            .filter(rpis, first_start, &mut scratch.blocks, &mut scratch.maybe);

        scratch.heard.clear();
        for &offset in &scratch.maybe {
            let start = first_start + offset as u64 * INTERVAL_SECONDS;
            self.collect_heard(&rpis[offset], start, published_at, &mut scratch.heard);
        }
        if scratch.heard.is_empty() {
            return None;
        }
        self.accept(key, &scratch.heard)
    }

    /// Whether any sighting could fall within tolerance of the key's validity, before
    /// publication; saves deriving keys from days the device has no sightings of.
    fn may_have_heard(&self, first_start: u64, period: usize, published_at: u64) -> bool {
        let from = first_start.saturating_sub(TOLERANCE_SECONDS);
        let until = first_start + period as u64 * INTERVAL_SECONDS + TOLERANCE_SECONDS;
        from <= self.latest && self.earliest < until.min(published_at)
    }

    /// Adds the acceptable sightings of `rpi`, valid from `start` for one interval.
    fn collect_heard(
        &self,
        rpi: &RollingProximityIdentifier,
        start: u64,
        published_at: u64,
        heard: &mut Vec<(usize, RollingProximityIdentifier)>,
    ) {
        let from = start.saturating_sub(TOLERANCE_SECONDS);
        let until = (start + INTERVAL_SECONDS + TOLERANCE_SECONDS).min(published_at);
        for position in self.index.positions(rpi) {
            let time = self.sightings[position].time;
            if from <= time && time < until {
                heard.push((position, *rpi));
            }
        }
    }

    /// Decrypts the metadata of the heard sightings and keeps those with a plausible TX power.
    fn accept(
        &self,
        key: &ExportKey,
        heard: &[(usize, RollingProximityIdentifier)],
    ) -> Option<KeyMatch> {
        let aemk = key.key.aemk();
        let mut sightings: Vec<MatchedSighting> = heard
            .iter()
            .filter_map(|(position, rpi)| {
                let sighting = &self.sightings[*position];
                let metadata = aemk.decrypt(rpi, &sighting.aem);
                TX_POWER_RANGE
                    .contains(&metadata.tx_power)
                    .then_some(MatchedSighting {
                        time: sighting.time,
                        rssi: sighting.rssi,
                        metadata,
                    })
            })
            .collect();
        if sightings.is_empty() {
            return None;
        }
        sightings.sort_by_key(|sighting| sighting.time);
        Some(KeyMatch {
            key: *key,
            revised: false,
            sightings,
        })
    }
}

/// Reads one downloaded file with [`ExportArchive::read`] and verifies its signature; returns
/// the archive and the time it counts as published: its end timestamp, or the time it was
/// fetched if earlier. Sync and [`Matcher::match_files_with`] both open files here.
///
/// # Errors
///
/// [`Error::Protocol`] for a file that is malformed, too large, or not signed by a trusted key.
pub fn open(
    file: ExportFile,
    trusted: &TrustedKeys,
    limits: &ExportLimits,
) -> Result<(ExportArchive, u64), Error> {
    let archive = ExportArchive::read(&file.bytes, limits)?;
    drop(file.bytes);
    archive.verify(trusted)?;
    let published_at = match archive.export.end_timestamp {
        0 => file.fetched_at,
        end => end.min(file.fetched_at),
    };
    Ok((archive, published_at))
}

/// Buffers one parallel task reuses for every key.
struct Scratch {
    rpis: [RollingProximityIdentifier; PERIOD],
    blocks: [aes::Block; PERIOD],
    maybe: Vec<usize>,
    heard: Vec<(usize, RollingProximityIdentifier)>,
}

impl Scratch {
    fn new() -> Self {
        Self {
            rpis: [RollingProximityIdentifier::from_bytes([0; 16]); PERIOD],
            blocks: [aes::Block::default(); PERIOD],
            maybe: Vec::new(),
            heard: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
