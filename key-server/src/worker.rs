//! The export worker (`spec/key-server.md`, "Exports"): turns every window that has ended long
//! enough ago into signed files, keeps `index.txt` listing the live ones, and deletes keys and
//! files past retention. Each run is resumable: a window is recorded as done only after its
//! files are on disk, and a window redone after a crash overwrites its own files.

use std::time::Duration;

use varsel_protocol::export::{ExportKey, ExportSigner};

use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::exports::{ExportPolicy, ExportTree, Window, build_window, parse_file_path};
use crate::published::PublishedKeys;

/// Key of the next window to export, in the worker's state tree.
const NEXT_WINDOW: &[u8] = b"next_window_start";

/// When windows close and how long things live.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Length of a window, in seconds; above zero.
    pub window_seconds: u64,
    /// A window is exported only once it ended at least this long ago, in seconds.
    pub min_window_age_seconds: u64,
    /// Keys and files older than this are deleted, in seconds.
    pub retention_seconds: u64,
}

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Files written.
    pub files_written: Vec<String>,
    /// Keys in them, fake ones included.
    pub keys_written: usize,
    /// Keys deleted by retention.
    pub keys_deleted: usize,
    /// Uploads merged into hour parts.
    pub uploads_merged: usize,
    /// Files deleted by retention.
    pub files_deleted: usize,
}

/// Everything the worker needs.
#[derive(Clone)]
pub struct ExportWorker {
    /// The uploaded keys.
    pub keys: PublishedKeys,
    /// Which windows are done and which files are live: `f` ‖ path → window end.
    pub state: sled::Tree,
    /// Where files go.
    pub tree: ExportTree,
    /// How files are made.
    pub policy: ExportPolicy,
    /// When windows close.
    pub schedule: Schedule,
    /// Who signs.
    pub signers: Vec<ExportSigner>,
    /// The time.
    pub clock: SharedClock,
}

impl ExportWorker {
    /// Merges the uploads of ended hours, exports every due window, applies retention and
    /// rewrites the index.
    ///
    /// # Errors
    ///
    /// Storage, file and signing failures; the next run starts where this one stopped.
    pub fn run_once(&self) -> Result<RunSummary> {
        let now = self.clock.unix_seconds();
        let mut summary = RunSummary::default();
        // Every step goes ahead whatever the one before it met: exports and retention read the
        // index in memory, not the parts, and files written must reach `index.txt`.
        let mut failures = Failures::default();
        if let Some(merged) = failures.note(self.keys.merge_ended_hours(now)) {
            summary.uploads_merged = merged;
        }
        failures.note(self.export_due_windows(now, &mut summary));
        failures.note(self.apply_key_retention(now, &mut summary));

        // Expired files leave the index before they leave the disk, so that no reader of the
        // index finds a listed file missing; without a new index, none leaves the disk.
        let files = self.files(now, &mut failures);
        if let Some(files) = failures.note(files)
            && failures.note(self.tree.write_index(&files.live)).is_some()
        {
            summary.files_deleted = self.remove_expired(&files.expired, &mut failures);
        }
        failures.into_result(summary)
    }

    /// Runs [`run_once`](Self::run_once) every `every` until `shutdown` completes.
    pub async fn run(self, every: Duration, shutdown: impl Future<Output = ()>) {
        let mut ticks = tokio::time::interval(every);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticks.tick() => {}
            }
            let worker = self.clone();
            match tokio::task::spawn_blocking(move || worker.run_once()).await {
                Ok(Ok(summary)) => log_run(&summary),
                Ok(Err(error)) => tracing::error!(%error, "export run failed"),
                Err(error) => tracing::error!(%error, "export run panicked"),
            }
        }
    }

    fn export_due_windows(&self, now: u64, summary: &mut RunSummary) -> Result<()> {
        let length = self.schedule.window_seconds;
        let latest_end = now.saturating_sub(self.schedule.min_window_age_seconds);
        let mut start = self.next_window_start()?;
        // Jump from one window that holds anything to the next; empty windows write nothing.
        while let Some(next) = self.keys.next_release_from(start) {
            let window_start = (next / length * length).max(start);
            let window = Window {
                start: window_start,
                end: window_start + length,
            };
            if window.end > latest_end {
                break;
            }
            self.export_window(window, summary)?;
            self.set_next_window_start(window.end)?;
            start = window.end;
        }
        Ok(())
    }

    /// Writes one window: keys released in it, with their current report type, and keys
    /// revised in it that were published in an earlier window.
    fn export_window(&self, window: Window, summary: &mut RunSummary) -> Result<()> {
        let released = self.keys.released_in(window.start, window.end)?;
        let revised = self.keys.revised_in(window.start, window.end)?;
        let keys: Vec<ExportKey> = released.into_iter().map(|stored| stored.key).collect();
        let revised: Vec<ExportKey> = revised
            .into_iter()
            .filter(|stored| stored.release_at < window.start)
            .map(|stored| stored.key)
            .collect();

        let files = build_window(window, keys, revised, &self.policy, &self.signers)?;
        for file in &files {
            self.tree.write_file(&file.path, &file.bytes)?;
            self.state
                .insert(file_key(&file.path), &window.end.to_be_bytes())?;
            summary.keys_written += file.key_count;
            summary.files_written.push(file.path.clone());
        }
        Ok(())
    }

    /// Deletes keys and forgets certificates past retention.
    fn apply_key_retention(&self, now: u64, summary: &mut RunSummary) -> Result<()> {
        let cutoff = now.saturating_sub(self.schedule.retention_seconds);
        summary.keys_deleted = self.keys.delete_released_before(cutoff)?;
        self.keys.forget_certificates_before(now)?;
        Ok(())
    }

    /// The files in the state, split by retention: live ones oldest window first, for the
    /// index, and expired ones, to delete. A file whose window end cannot be read stays live,
    /// since nothing is deleted that cannot be dated.
    fn files(&self, now: u64, failures: &mut Failures) -> Result<Files> {
        let cutoff = now.saturating_sub(self.schedule.retention_seconds);
        let mut live = Vec::new();
        let mut expired = Vec::new();
        for entry in self.state.scan_prefix(b"f") {
            let (key, end) = entry?;
            let path = String::from_utf8_lossy(&key[1..]).into_owned();
            if failures
                .note(decode_seconds(&end))
                .is_some_and(|end| end < cutoff)
            {
                expired.push(path);
            } else if let Some((_, start, end)) = parse_file_path(&path) {
                live.push((start, end, path));
            }
        }
        live.sort();
        let live = live.into_iter().map(|(_, _, path)| path).collect();
        Ok(Files { live, expired })
    }

    /// Deletes expired files from disk, forgetting each only once it is gone, so that a file
    /// that could not be deleted is tried again on the next run. Returns how many went.
    fn remove_expired(&self, expired: &[String], failures: &mut Failures) -> usize {
        let mut removed = 0;
        for path in expired {
            let gone = self
                .tree
                .remove_file(path)
                .and_then(|()| self.forget_file(path));
            if failures.note(gone).is_some() {
                removed += 1;
            }
        }
        removed
    }

    fn forget_file(&self, path: &str) -> Result<()> {
        self.state.remove(file_key(path))?;
        Ok(())
    }

    fn next_window_start(&self) -> Result<u64> {
        self.state
            .get(NEXT_WINDOW)?
            .map_or(Ok(0), |bytes| decode_seconds(&bytes))
    }

    fn set_next_window_start(&self, start: u64) -> Result<()> {
        self.state.insert(NEXT_WINDOW, &start.to_be_bytes())?;
        self.state.flush()?;
        Ok(())
    }
}

/// The export files the worker's state knows, by retention.
#[derive(Debug, Default)]
struct Files {
    /// Paths to list in the index, oldest window first.
    live: Vec<String>,
    /// Paths past retention, to delete.
    expired: Vec<String>,
}

/// The first failure of a run, returned once every step has had its turn; later ones are
/// logged.
#[derive(Debug, Default)]
struct Failures(Option<Error>);

impl Failures {
    fn note<T>(&mut self, result: Result<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) if self.0.is_none() => {
                self.0 = Some(error);
                None
            }
            Err(error) => {
                tracing::error!(%error, "export worker step failed");
                None
            }
        }
    }

    fn into_result<T>(self, value: T) -> Result<T> {
        self.0.map_or(Ok(value), Err)
    }
}

fn log_run(summary: &RunSummary) {
    if summary.uploads_merged > 0 {
        tracing::info!(uploads = summary.uploads_merged, "merged into hour parts");
    }
    if !summary.files_written.is_empty() {
        tracing::info!(
            files = summary.files_written.len(),
            keys = summary.keys_written,
            "exported"
        );
    }
}

/// A time in the worker's state: Unix seconds, big-endian.
fn decode_seconds(bytes: &[u8]) -> Result<u64> {
    let seconds: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt("export state"))?;
    Ok(u64::from_be_bytes(seconds))
}

fn file_key(path: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(path.len() + 1);
    key.push(b'f');
    key.extend_from_slice(path.as_bytes());
    key
}
