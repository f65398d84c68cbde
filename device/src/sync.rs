//! Downloading published diagnosis keys: the index, then each export file not yet processed,
//! each verified against the trusted keys before anything reads its keys.
//!
//! Sync is resumable and idempotent: an export is recorded as processed only after its keys
//! were handed on, so an interrupted sync picks up where it stopped, and a repeated one
//! downloads nothing new. A file that fails its checks is reported and not recorded, so a
//! corrected copy is tried again next time.

use indicatif::ProgressBar;
use varsel_protocol::export::{ExportArchive, ExportLimits, TrustedKeys};

use crate::Device;
use crate::Error;
use crate::http::HttpClient;
use crate::matching::{self, ExportFile};
use crate::store::{ExportRecord, Store};
use crate::transparency::Purpose;

/// Where the index lives, below the server's base URL.
pub const INDEX_ROUTE: &str = "exports/index.txt";
/// Largest index accepted, in bytes.
pub const MAX_INDEX_BYTES: usize = 1 << 20;
/// Most entries an index may list.
pub const MAX_INDEX_ENTRIES: usize = 10_000;
/// Longest path an index may list.
pub const MAX_PATH_LEN: usize = 256;

/// One export file that passed every check, ready for matching.
#[derive(Debug)]
pub struct VerifiedExport<'a> {
    /// Its path in the index.
    pub path: &'a str,
    /// The parsed archive, whose signature verified under a trusted key.
    pub archive: ExportArchive,
    /// When its keys count as published, Unix seconds: the export's end timestamp, or the time
    /// it was downloaded if earlier (see [`matching::open`]).
    pub published_at: u64,
}

/// What sync hands every verified export to: the matching engine.
pub trait ExportHandler {
    /// Matches one export's keys against the device's sightings; returns how many keys
    /// matched. The handler owns the export, so it may reorder its keys. An error stops the
    /// sync without recording the export as processed.
    ///
    /// # Errors
    ///
    /// Whatever the handler meets; typically [`Error::Database`].
    fn handle(&mut self, store: &Store, export: VerifiedExport<'_>) -> Result<u64, Error>;

    /// Called once after the last export of a sync, to update exposure windows and alerts.
    ///
    /// # Errors
    ///
    /// Whatever the handler meets.
    fn finish(&mut self, store: &Store) -> Result<(), Error> {
        let _ = store;
        Ok(())
    }
}

/// An export that failed a check.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    /// Its path in the index.
    pub path: String,
    /// Why it was refused.
    pub reason: String,
}

/// What one sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    /// Paths the index listed.
    pub listed: usize,
    /// Of those, how many had been processed before.
    pub already_processed: usize,
    /// Exports processed by this sync.
    pub processed: Vec<ExportRecord>,
    /// Exports refused by this sync.
    pub rejected: Vec<Rejection>,
}

impl SyncReport {
    /// Keys that matched a sighting, over every export processed by this sync.
    pub fn matched_keys(&self) -> u64 {
        self.processed
            .iter()
            .map(|record| record.matched_keys)
            .sum()
    }
}

/// Parses `index.txt`: one relative path per line, oldest first, blank lines ignored.
///
/// # Errors
///
/// [`Error::BadResponse`] for an index that is too long, not UTF-8, or lists a path that is
/// absolute, climbs out of the export tree, or uses characters outside `A-Za-z0-9._-/`.
pub fn parse_index(bytes: &[u8]) -> Result<Vec<String>, Error> {
    let bad = |reason: String| Error::BadResponse {
        route: INDEX_ROUTE.to_owned(),
        reason,
    };
    if bytes.len() > MAX_INDEX_BYTES {
        return Err(bad(format!("longer than {MAX_INDEX_BYTES} bytes")));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
    let paths: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    if paths.len() > MAX_INDEX_ENTRIES {
        return Err(bad(format!("lists more than {MAX_INDEX_ENTRIES} files")));
    }
    if let Some(path) = paths.iter().find(|path| !is_safe_path(path)) {
        let shown: String = path.chars().take(40).collect();
        return Err(bad(format!("lists an unusable path {shown:?}")));
    }
    Ok(paths)
}

/// Whether an index entry is a plain relative path below the export tree.
fn is_safe_path(path: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/');
    path.len() <= MAX_PATH_LEN
        && path.chars().all(allowed)
        && path
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

impl Device {
    /// Downloads the index and every export not processed yet, verifies each against the
    /// configured trusted keys and hands it to `handler`. `progress` counts exports; pass
    /// [`ProgressBar::hidden`] when no one watches.
    ///
    /// # Errors
    ///
    /// [`Error::NotConfigured`] without trusted keys, [`Error::Transport`],
    /// [`Error::Refused`] or [`Error::BadResponse`] when the index cannot be had, and the
    /// handler's errors. Refused exports are not errors: they are in the report.
    pub async fn sync(
        &self,
        client: &HttpClient,
        handler: &mut dyn ExportHandler,
        progress: &ProgressBar,
    ) -> Result<SyncReport, Error> {
        let trusted = self.store().settings()?.trusted_keys()?;
        let paths = self.fetch_index(client).await?;
        let mut report = SyncReport {
            listed: paths.len(),
            ..SyncReport::default()
        };
        let mut pending = Vec::new();
        let mut listed = std::collections::HashSet::new();
        for path in paths {
            if !listed.insert(path.clone()) {
                continue;
            }
            if self.store().export_processed(&path)? {
                report.already_processed += 1;
            } else {
                pending.push(path);
            }
        }

        progress.set_length(pending.len() as u64);
        for path in pending {
            match self.fetch_export(client, &path, &trusted).await {
                Ok((archive, published_at)) => {
                    let record = self.process(handler, &path, archive, published_at)?;
                    report.processed.push(record);
                }
                Err(error) => {
                    tracing::warn!(%path, %error, "export refused");
                    report.rejected.push(Rejection {
                        path: path.clone(),
                        reason: error.to_string(),
                    });
                }
            }
            progress.inc(1);
        }
        handler.finish(self.store())?;
        progress.finish();
        Ok(report)
    }

    /// Syncs with the configured server, matching with the configured risk settings and no
    /// progress display: what a phone does in the background, and what tests call.
    ///
    /// # Errors
    ///
    /// As [`sync`](Self::sync), and [`Device::client`]'s.
    pub async fn sync_and_match(&self) -> Result<SyncReport, Error> {
        let client = self.client()?;
        let mut handler = self.matching_handler()?;
        self.sync(&client, &mut handler, &ProgressBar::hidden())
            .await
    }

    async fn fetch_index(&self, client: &HttpClient) -> Result<Vec<String>, Error> {
        let answer = client
            .get(Purpose::Sync, INDEX_ROUTE, MAX_INDEX_BYTES)
            .await?;
        if answer.status != 200 {
            return Err(Error::Refused {
                route: INDEX_ROUTE.to_owned(),
                status: answer.status,
                code: None,
                message: "the index could not be downloaded".into(),
            });
        }
        parse_index(&answer.body)
    }

    /// Downloads, parses and verifies one export; returns it with the time it counts as
    /// published.
    async fn fetch_export(
        &self,
        client: &HttpClient,
        path: &str,
        trusted: &TrustedKeys,
    ) -> Result<(ExportArchive, u64), Error> {
        let limits = ExportLimits::default();
        let route = format!("exports/{path}");
        let answer = client
            .get(Purpose::Sync, &route, limits.max_archive_bytes)
            .await?;
        let rejected = |reason: String| Error::ExportRejected {
            path: path.to_owned(),
            reason,
        };
        if answer.status != 200 {
            return Err(rejected(format!("HTTP {}", answer.status)));
        }
        let file = ExportFile {
            bytes: answer.body,
            fetched_at: self.now(),
        };
        matching::open(file, trusted, &limits).map_err(|e| rejected(e.to_string()))
    }

    /// Hands a verified export to matching and records it as processed.
    fn process(
        &self,
        handler: &mut dyn ExportHandler,
        path: &str,
        archive: ExportArchive,
        published_at: u64,
    ) -> Result<ExportRecord, Error> {
        let now = self.now();
        let keys = archive.export.keys.len() as u64;
        let export = VerifiedExport {
            path,
            archive,
            published_at,
        };
        let matched_keys = handler.handle(self.store(), export)?;
        let record = ExportRecord {
            path: path.to_owned(),
            processed_at: now,
            keys,
            matched_keys,
        };
        self.store().mark_export_processed(&record)?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lines_are_checked() {
        let index = b"v1/1.zip\n\n  v1/2.zip  \r\nv1/3.zip";
        assert_eq!(
            parse_index(index).unwrap(),
            vec!["v1/1.zip", "v1/2.zip", "v1/3.zip"]
        );
        for bad in [
            "/etc/passwd",
            "../secret.zip",
            "a/../../b.zip",
            "https://evil.example/x.zip",
            "a//b.zip",
            "a.zip?x=1",
            "a b.zip",
        ] {
            assert!(parse_index(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(parse_index(&[0xff, 0xfe]).is_err());
        let long = "a.zip\n".repeat(MAX_INDEX_ENTRIES + 1);
        assert!(parse_index(long.as_bytes()).is_err());
        assert!(parse_index(b"").unwrap().is_empty());
    }

    /// Relative paths of one or two segments, as an export tree has.
    const PATH: &str = "[a-z0-9_-]{1,12}(/[a-z0-9_.-]{1,12}\\.zip)?";

    proptest::proptest! {
        #[test]
        fn valid_indexes_round_trip(paths in proptest::collection::vec(PATH, 0..20)) {
            let paths: Vec<String> = paths
                .into_iter()
                .filter(|path| path.split('/').all(|part| part != "." && part != ".."))
                .collect();
            let text = paths.join("\n");
            proptest::prop_assert_eq!(parse_index(text.as_bytes()).unwrap(), paths);
        }

        #[test]
        fn any_bytes_parse_or_fail_cleanly(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)
        ) {
            if let Ok(paths) = parse_index(&bytes) {
                proptest::prop_assert!(paths.iter().all(|path| is_safe_path(path)));
            }
        }
    }
}
