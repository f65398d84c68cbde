//! Export files (`spec/key-server.md`, "Exports"): one window's keys padded with fake keys,
//! sorted, split into files, signed, and written into a directory tree with an `index.txt`
//! that any static web server, object store or CDN can serve as it is.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::Rng;
use rayon::prelude::*;
use varsel_protocol::export::{
    Compression, Export, ExportArchive, ExportKey, ExportLimits, ExportSigner, TrustedKeys,
    write_archive,
};
use varsel_protocol::keys::DiagnosisKey;

use crate::error::{Error, Result};

/// Name of the index file at the root of the tree.
pub const INDEX_FILE: &str = "index.txt";

/// How windows become files.
#[derive(Clone, Debug)]
pub struct ExportPolicy {
    /// The `region` of every file, also the directory the files live in.
    pub region: String,
    /// A window with at least one real key is padded to at least this many keys.
    pub min_keys: usize,
    /// Up to this many further fake keys, chosen at random per window.
    pub padding_jitter: usize,
    /// A window with at least one revised key is padded to at least this many revised keys
    /// (plus the same random jitter), so that the number of revisions does not show either.
    pub min_revised_keys: usize,
    /// Most keys (real and fake) in one file; larger windows are split.
    pub max_keys_per_file: usize,
    /// How the zip entries are compressed.
    pub compression: Compression,
}

impl Default for ExportPolicy {
    fn default() -> Self {
        Self {
            region: "XX".to_owned(),
            min_keys: 1_000,
            padding_jitter: 100,
            min_revised_keys: 100,
            max_keys_per_file: 250_000,
            compression: Compression::Deflated,
        }
    }
}

/// A publication window, `[start, end)` in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First second of the window.
    pub start: u64,
    /// First second after it.
    pub end: u64,
}

/// One signed export file, ready to be written.
#[derive(Clone, Debug)]
pub struct ExportFile {
    /// Path relative to the tree's root, as listed in `index.txt`.
    pub path: String,
    /// The zip archive.
    pub bytes: Vec<u8>,
    /// Keys in the file, fake ones included.
    pub key_count: usize,
}

/// Builds the files of one window: pads `keys` with fake keys that copy the other fields of
/// randomly chosen real ones, splits them into files of at most `max_keys_per_file` keys (each
/// batch 1 of 1, its end timestamp moved on by one second per file so every file is distinct),
/// and signs each file with every signer. Returns no file for a window without keys.
///
/// # Errors
///
/// [`Error::Export`] when writing an archive fails.
pub fn build_window(
    window: Window,
    keys: Vec<ExportKey>,
    revised_keys: Vec<ExportKey>,
    policy: &ExportPolicy,
    signers: &[ExportSigner],
) -> Result<Vec<ExportFile>> {
    if keys.is_empty() && revised_keys.is_empty() {
        return Ok(Vec::new());
    }
    let rng = &mut rand::thread_rng();
    let mut keys = pad(keys, policy.min_keys, policy.padding_jitter, rng);
    // Sorted before the split, not only inside each file (as `write_archive` does): padding
    // appends the fake keys, so unsorted, the last files would hold only fakes.
    keys.sort_unstable_by_key(|key| key.key);
    // `write_archive` sorts the revised keys, which all go in the first file.
    let revised_keys = pad(
        revised_keys,
        policy.min_revised_keys,
        policy.padding_jitter,
        rng,
    );

    let chunks = split(keys, policy.max_keys_per_file.max(1));
    let mut revised = Some(revised_keys);
    let exports: Vec<Export> = (0u64..)
        .zip(chunks)
        .map(|(offset, keys)| Export {
            start_timestamp: window.start,
            end_timestamp: window.end + offset,
            region: policy.region.clone(),
            batch_num: 1,
            batch_size: 1,
            signature_infos: Vec::new(),
            keys,
            revised_keys: revised.take().unwrap_or_default(),
        })
        .collect();

    exports
        .into_par_iter()
        .map(|export| {
            let path = file_path(&policy.region, export.start_timestamp, export.end_timestamp);
            let key_count = export.keys.len() + export.revised_keys.len();
            let bytes =
                write_archive(export, signers, policy.compression).map_err(Error::Export)?;
            Ok(ExportFile {
                path,
                bytes,
                key_count,
            })
        })
        .collect()
}

/// Splits `keys` into runs of `per_file` (the last one shorter), in order, moving each key
/// once; no keys make one empty run.
fn split(mut keys: Vec<ExportKey>, per_file: usize) -> Vec<Vec<ExportKey>> {
    let mut runs = Vec::with_capacity(keys.len().div_ceil(per_file).max(1));
    while keys.len() > per_file {
        let last = (keys.len() - 1) / per_file * per_file;
        runs.push(keys.split_off(last));
    }
    runs.push(keys);
    runs.reverse();
    runs
}

/// Adds fake keys, each a copy of a random real one with random key bytes, until there are at
/// least `minimum` plus a random `0..=jitter` keys. No key, no padding.
fn pad(
    mut keys: Vec<ExportKey>,
    minimum: usize,
    jitter: usize,
    rng: &mut impl Rng,
) -> Vec<ExportKey> {
    if keys.is_empty() {
        return keys;
    }
    let target = keys.len().max(minimum) + rng.gen_range(0..=jitter);
    let real = keys.len();
    keys.reserve(target - real);
    while keys.len() < target {
        let mut fake = keys[rng.gen_range(0..real)];
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        fake.key = DiagnosisKey::from_bytes(bytes);
        keys.push(fake);
    }
    keys
}

/// The relative path of a file: `REGION/START-END.zip`.
pub fn file_path(region: &str, start: u64, end: u64) -> String {
    format!("{region}/{start}-{end}.zip")
}

/// Reads the window a path names, if it is one of ours.
pub fn parse_file_path(path: &str) -> Option<(String, u64, u64)> {
    let (region, name) = path.split_once('/')?;
    let (start, end) = name.strip_suffix(".zip")?.split_once('-')?;
    Some((region.to_owned(), start.parse().ok()?, end.parse().ok()?))
}

/// The directory tree of exports and its index.
#[derive(Clone, Debug)]
pub struct ExportTree {
    root: PathBuf,
}

impl ExportTree {
    /// The tree rooted at `root`, created if missing.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes a file durably: to a temporary name, synced, then renamed into place.
    ///
    /// # Errors
    ///
    /// [`Error::Io`], and [`Error::Corrupt`] for a path outside the tree.
    pub fn write_file(&self, relative: &str, bytes: &[u8]) -> Result<()> {
        let path = self.resolve(relative)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        write_atomically(&path, bytes)
    }

    /// Deletes a file; a file already gone is not an error.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    pub fn remove_file(&self, relative: &str) -> Result<()> {
        match std::fs::remove_file(self.resolve(relative)?) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error.into()),
            _ => Ok(()),
        }
    }

    /// Replaces `index.txt` with `paths`, one per line, atomically.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    pub fn write_index(&self, paths: &[String]) -> Result<()> {
        let mut text = String::with_capacity(paths.len() * 32);
        for path in paths {
            text.push_str(path);
            text.push('\n');
        }
        write_atomically(&self.root.join(INDEX_FILE), text.as_bytes())
    }

    /// The paths `index.txt` lists, in order; empty when there is no index yet.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    pub fn read_index(&self) -> Result<Vec<String>> {
        match std::fs::read_to_string(self.root.join(INDEX_FILE)) {
            Ok(text) => Ok(text
                .lines()
                .filter(|line| !line.is_empty())
                .map(String::from)
                .collect()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(error) => Err(error.into()),
        }
    }

    /// Reads a file of the tree.
    ///
    /// # Errors
    ///
    /// [`Error::Io`], and [`Error::Corrupt`] for a path outside the tree.
    pub fn read_file(&self, relative: &str) -> Result<Vec<u8>> {
        Ok(std::fs::read(self.resolve(relative)?)?)
    }

    /// Every `.zip` file in the tree, as relative paths, sorted.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    pub fn zip_files(&self) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for region in std::fs::read_dir(&self.root)? {
            let region = region?;
            if !region.file_type()?.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(region.path())? {
                let name = file?.file_name().to_string_lossy().into_owned();
                if name.ends_with(".zip") {
                    found.push(format!("{}/{name}", region.file_name().to_string_lossy()));
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// Only plain relative paths of our own shape are accepted.
    fn resolve(&self, relative: &str) -> Result<PathBuf> {
        let safe = relative
            .split('/')
            .all(|part| !part.is_empty() && part != ".." && part != "." && !part.contains('\\'));
        if !safe || relative.starts_with('/') {
            return Err(Error::Corrupt("export path outside the tree"));
        }
        Ok(self.root.join(relative))
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = path.with_extension("partial");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// What checking an export tree found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeReport {
    /// Files listed in the index that exist, parse and verify.
    pub verified: Vec<String>,
    /// Problems, one sentence each; empty when the tree is consistent.
    pub problems: Vec<String>,
    /// Keys in all verified files, fake ones included.
    pub keys: usize,
}

/// Checks a tree as a device would and more: every indexed file exists, parses within limits,
/// verifies under `trusted`, and is listed once, oldest first; and no zip is left unlisted.
///
/// # Errors
///
/// [`Error::Io`] when the index itself cannot be read.
pub fn verify_tree(tree: &ExportTree, trusted: &TrustedKeys) -> Result<TreeReport> {
    let index = tree.read_index()?;
    let mut report = TreeReport::default();
    let mut previous: Option<(u64, u64)> = None;
    for path in &index {
        let Some((_, start, end)) = parse_file_path(path) else {
            report
                .problems
                .push(format!("{path}: not a name this server writes"));
            continue;
        };
        if previous.is_some_and(|before| before >= (start, end)) {
            report
                .problems
                .push(format!("{path}: listed out of order or twice"));
        }
        previous = Some((start, end));
        match check_file(tree, path, trusted) {
            Ok(keys) => {
                report.keys += keys;
                report.verified.push(path.clone());
            }
            Err(problem) => report.problems.push(format!("{path}: {problem}")),
        }
    }
    for path in tree.zip_files()? {
        if !index.contains(&path) {
            report
                .problems
                .push(format!("{path}: present but not in {INDEX_FILE}"));
        }
    }
    Ok(report)
}

fn check_file(tree: &ExportTree, path: &str, trusted: &TrustedKeys) -> Result<usize, String> {
    let bytes = tree.read_file(path).map_err(|error| error.to_string())?;
    let archive =
        ExportArchive::read(&bytes, &ExportLimits::default()).map_err(|error| error.to_string())?;
    archive.verify(trusted).map_err(|error| error.to_string())?;
    Ok(archive.export.keys.len() + archive.export.revised_keys.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use varsel_protocol::export::{ReportType, TrustedKey};
    use varsel_protocol::interval::EnIntervalNumber;

    fn key(byte: u8) -> ExportKey {
        ExportKey {
            key: DiagnosisKey::from_bytes([byte; 16]),
            transmission_risk_level: 3,
            rolling_start: EnIntervalNumber::new(2_900_016),
            rolling_period: 144,
            report_type: Some(ReportType::ConfirmedTest),
            days_since_onset_of_symptoms: Some(2),
        }
    }

    fn signer() -> ExportSigner {
        ExportSigner::new(
            p256::ecdsa::SigningKey::from_slice(&[9; 32]).unwrap(),
            "1",
            "v1",
        )
    }

    const WINDOW: Window = Window {
        start: 1_700_000_000,
        end: 1_700_003_600,
    };

    #[test]
    fn windows_are_padded_with_lookalike_keys() {
        let policy = ExportPolicy {
            min_keys: 50,
            padding_jitter: 10,
            ..ExportPolicy::default()
        };
        let files = build_window(
            WINDOW,
            vec![key(1), key(2)],
            Vec::new(),
            &policy,
            &[signer()],
        )
        .unwrap();
        assert_eq!(files.len(), 1);
        let archive = ExportArchive::read(&files[0].bytes, &ExportLimits::default()).unwrap();
        let keys = &archive.export.keys;
        assert!((50..=60).contains(&keys.len()), "{} keys", keys.len());
        assert!(
            keys.iter().any(|k| k.key == key(1).key) && keys.iter().any(|k| k.key == key(2).key)
        );
        assert!(
            keys.iter()
                .all(|k| k.report_type == Some(ReportType::ConfirmedTest)
                    && k.days_since_onset_of_symptoms == Some(2))
        );
        assert!(keys.windows(2).all(|pair| pair[0].key < pair[1].key));
    }

    #[test]
    fn revised_keys_are_padded_too() {
        let policy = ExportPolicy {
            min_keys: 50,
            min_revised_keys: 20,
            padding_jitter: 5,
            ..ExportPolicy::default()
        };
        let mut revised = key(3);
        revised.report_type = Some(ReportType::Revoked);
        let files = build_window(WINDOW, Vec::new(), vec![revised], &policy, &[signer()]).unwrap();
        let archive = ExportArchive::read(&files[0].bytes, &ExportLimits::default()).unwrap();
        let revised_keys = &archive.export.revised_keys;
        assert!(
            (20..=25).contains(&revised_keys.len()),
            "{}",
            revised_keys.len()
        );
        assert!(revised_keys.iter().any(|k| k.key == revised.key));
        assert!(
            revised_keys
                .iter()
                .all(|k| k.report_type == Some(ReportType::Revoked))
        );
        assert!(
            revised_keys
                .windows(2)
                .all(|pair| pair[0].key < pair[1].key)
        );
        assert!(
            archive.export.keys.is_empty(),
            "no real key, no padding of keys"
        );
    }

    #[test]
    fn empty_windows_write_nothing() {
        let files = build_window(
            WINDOW,
            Vec::new(),
            Vec::new(),
            &ExportPolicy::default(),
            &[signer()],
        );
        assert!(files.unwrap().is_empty());
    }

    #[test]
    fn large_windows_split_into_distinct_files() {
        let policy = ExportPolicy {
            min_keys: 25,
            min_revised_keys: 1,
            padding_jitter: 0,
            max_keys_per_file: 10,
            ..ExportPolicy::default()
        };
        let files = build_window(WINDOW, vec![key(1)], vec![key(7)], &policy, &[signer()]).unwrap();
        assert_eq!(files.len(), 3);
        let paths: Vec<_> = files.iter().map(|file| file.path.clone()).collect();
        assert_eq!(paths[0], "XX/1700000000-1700003600.zip");
        assert_eq!(paths[2], "XX/1700000000-1700003602.zip");
        let total: usize = files.iter().map(|file| file.key_count).sum();
        assert_eq!(total, 26);
        for file in &files {
            let archive = ExportArchive::read(&file.bytes, &ExportLimits::default()).unwrap();
            assert_eq!(
                (archive.export.batch_num, archive.export.batch_size),
                (1, 1)
            );
        }
    }

    #[test]
    fn splitting_keeps_order_and_runs() {
        for count in [0u8, 1, 9, 10, 11, 20, 25] {
            let keys: Vec<ExportKey> = (0..count).map(key).collect();
            let expected: Vec<Vec<ExportKey>> = keys.chunks(10).map(<[_]>::to_vec).collect();
            let runs = split(keys.clone(), 10);
            if count == 0 {
                assert_eq!(runs, [Vec::new()], "no keys, one empty run");
            } else {
                assert_eq!(runs, expected, "{count} keys");
            }
            assert_eq!(split(keys.clone(), 1).len(), keys.len().max(1));
        }
    }

    #[test]
    fn split_files_hold_consecutive_runs_of_sorted_keys() {
        let policy = ExportPolicy {
            min_keys: 25,
            padding_jitter: 0,
            max_keys_per_file: 10,
            ..ExportPolicy::default()
        };
        let files = build_window(WINDOW, vec![key(1)], Vec::new(), &policy, &[signer()]).unwrap();
        let keys: Vec<DiagnosisKey> = files
            .iter()
            .flat_map(|file| {
                let archive = ExportArchive::read(&file.bytes, &ExportLimits::default()).unwrap();
                archive.export.keys.into_iter().map(|k| k.key)
            })
            .collect();
        assert_eq!(keys.len(), 25);
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn tree_verification_finds_problems() {
        let directory = tempfile::tempdir().unwrap();
        let tree = ExportTree::open(directory.path()).unwrap();
        let files = build_window(
            WINDOW,
            vec![key(1)],
            Vec::new(),
            &ExportPolicy::default(),
            &[signer()],
        )
        .unwrap();
        tree.write_file(&files[0].path, &files[0].bytes).unwrap();
        tree.write_index(&[files[0].path.clone()]).unwrap();
        let trusted: TrustedKeys = [TrustedKey::any_id(signer().verifying_key())]
            .into_iter()
            .collect();

        let report = verify_tree(&tree, &trusted).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.verified.len(), 1);

        tree.write_file("XX/1-2.zip", b"not a zip").unwrap();
        tree.write_index(&[files[0].path.clone(), "XX/1-2.zip".into()])
            .unwrap();
        let report = verify_tree(&tree, &TrustedKeys::new()).unwrap();
        assert_eq!(report.problems.len(), 3, "{:?}", report.problems);
        assert!(tree.write_file("../escape.zip", b"").is_err());
    }
}
