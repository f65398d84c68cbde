//! The key side of the server (`spec/key-server.md`): `POST /v1/publish`, the export tree
//! under `/exports/`, and the export worker, with their own sled database, their own export
//! signing keys and their own configuration sections, so that an operator can run them apart
//! from the verification routes.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use serde::{Deserialize, Serialize};
use varsel_protocol::export::{Compression, ExportSigner, TrustedKey, TrustedKeys};
use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::keys::DiagnosisKey;

use crate::certificate::CertificateVerifier;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::date::DAY_SECONDS;
use crate::durability::GroupCommit;
use crate::error::{Error, Result};
use crate::exports::{ExportPolicy, ExportTree, INDEX_FILE, parse_file_path};
use crate::padding::padded_json;
use crate::publish::{MAX_PUBLISH_BODY_BYTES, PublishRequest, Publisher};
use crate::published::PublishedKeys;
use crate::request::{Chaff, read_limited};
use crate::revision::{RevisionClaims, RevisionKey};
use crate::signing::KeyRing;
use crate::store::{dump_db, open_db};
use crate::worker::{ExportWorker, RunSummary, Schedule};

/// Settings of the publish route.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PublishConfig {
    /// Whether `serve` mounts the key side.
    pub enabled: bool,
    /// Accepted values of `healthAuthorityID`.
    pub health_authority_ids: Vec<String>,
    /// A JWKS file with the verification side's public keys, for running the two sides apart;
    /// when the verification side runs in the same process its keys are used directly.
    pub verification_jwks: Option<PathBuf>,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            health_authority_ids: vec!["varsel".to_owned()],
            verification_jwks: None,
        }
    }
}

/// Settings of the export files and their worker.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    /// Where the export tree lives; `DATA_DIR/exports` by default.
    pub directory: Option<PathBuf>,
    /// The `region` of the files and the directory they go in.
    pub region: String,
    /// The `verification_key_id` apps know the export signing keys by.
    pub key_id: String,
    /// Minimum keys in a window's files once it holds a real key.
    pub min_keys: usize,
    /// Further random fake keys, up to this many.
    pub padding_jitter: usize,
    /// Minimum revised keys in a window's files once it holds a real revision.
    pub min_revised_keys: usize,
    /// Most keys in one file.
    pub max_keys_per_file: usize,
    /// Length of a window, in minutes.
    pub window_minutes: u64,
    /// How long after its end a window is exported, in minutes (at least 60).
    pub min_window_age_minutes: u64,
    /// How long keys and files are kept, in days.
    pub retention_days: u64,
    /// How often the worker runs, in seconds.
    pub worker_interval_seconds: u64,
    /// Store entries uncompressed instead of deflated.
    pub stored: bool,
}

impl Default for ExportConfig {
    fn default() -> Self {
        let policy = ExportPolicy::default();
        Self {
            directory: None,
            region: policy.region,
            key_id: "varsel".to_owned(),
            min_keys: policy.min_keys,
            padding_jitter: policy.padding_jitter,
            min_revised_keys: policy.min_revised_keys,
            max_keys_per_file: policy.max_keys_per_file,
            window_minutes: 60,
            min_window_age_minutes: 120,
            retention_days: 14,
            worker_interval_seconds: 300,
            stored: false,
        }
    }
}

/// The key side: publish route, export tree and worker.
#[derive(Clone)]
pub struct KeyService {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    commit: GroupCommit,
    latency: LatencyMirror,
    publisher: Publisher,
    worker: ExportWorker,
    clock: SharedClock,
    worker_interval: Duration,
}

impl core::fmt::Debug for KeyService {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyService").finish_non_exhaustive()
    }
}

impl KeyService {
    /// Opens the key side's database under `DATA_DIR/keys` and its export tree.
    ///
    /// `verifier` is the verification side's when it runs in this process; otherwise the
    /// configured JWKS file is read.
    ///
    /// # Errors
    ///
    /// Storage failures and configuration errors.
    pub fn open(
        config: &Config,
        clock: SharedClock,
        verifier: Option<CertificateVerifier>,
    ) -> Result<Self> {
        let db = open_db(&config.keys_dir())?;
        Self::with_db(db, config, clock, verifier)
    }

    /// The key side over an already open database (tests use temporary ones).
    ///
    /// # Errors
    ///
    /// Storage failures and configuration errors.
    pub fn with_db(
        db: sled::Db,
        config: &Config,
        clock: SharedClock,
        verifier: Option<CertificateVerifier>,
    ) -> Result<Self> {
        let verifier = match verifier {
            Some(verifier) => verifier,
            None => jwks_verifier(config)?,
        };
        let schedule = schedule(&config.exports)?;
        let now = clock.unix_seconds();
        let retained_from = now.saturating_sub(schedule.retention_seconds);
        let keys = PublishedKeys::open(db.open_tree("keys")?, now, retained_from)?;
        let publisher = Publisher {
            keys: keys.clone(),
            verifier,
            health_authority_ids: config.publish.health_authority_ids.clone(),
            revision_key: RevisionKey::load_or_create(&db.open_tree("secrets")?)?,
        };
        let exports = &config.exports;
        let tree = ExportTree::open(
            exports
                .directory
                .clone()
                .unwrap_or_else(|| config.server.data_dir.join("exports")),
        )?;
        let ring = KeyRing::open(db.open_tree("export_signing_keys")?, now)?;
        let worker = ExportWorker {
            keys,
            state: db.open_tree("export_state")?,
            tree,
            policy: policy(exports),
            schedule,
            signers: signers(&ring, &exports.key_id),
            clock: clock.clone(),
        };
        let worker_interval = Duration::from_secs(exports.worker_interval_seconds.max(1));
        let commit = GroupCommit::start(db.clone())?;
        let inner = Inner {
            db,
            commit,
            latency: LatencyMirror::default(),
            publisher,
            worker,
            clock,
            worker_interval,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// `POST /v1/publish` and `GET /exports/...`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/publish", post(publish))
            .route("/exports/{*path}", get(export_file))
            .with_state(self.clone())
    }

    /// Exports every due window now; what the worker does on each tick.
    ///
    /// # Errors
    ///
    /// Storage, file and signing failures.
    pub fn export_now(&self) -> Result<RunSummary> {
        self.inner.worker.run_once()
    }

    /// Runs the export worker until `shutdown` completes.
    pub async fn run_worker(&self, shutdown: impl Future<Output = ()>) {
        let worker = self.inner.worker.clone();
        worker.run(self.inner.worker_interval, shutdown).await;
    }

    /// The export tree.
    pub fn tree(&self) -> &ExportTree {
        &self.inner.worker.tree
    }

    /// The keys that sign exports, as verifiers should trust them.
    pub fn trusted_export_keys(&self) -> TrustedKeys {
        self.export_verification_keys().into_iter().collect()
    }

    /// The keys that sign exports one by one, each pinned to the id and version it signs as:
    /// what an app is configured with (as PEM through [`TrustedKey::to_pem`]).
    pub fn export_verification_keys(&self) -> Vec<TrustedKey> {
        self.inner
            .worker
            .signers
            .iter()
            .map(|signer| {
                let info = signer.info();
                TrustedKey::any_id(signer.verifying_key())
                    .pinned(&info.verification_key_id, &info.verification_key_version)
            })
            .collect()
    }

    /// The stored keys, for operators and tests.
    pub fn published_keys(&self) -> &PublishedKeys {
        &self.inner.publisher.keys
    }

    /// Every tree's name and contents, for tests that check what is stored.
    pub fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        dump_db(&self.inner.db)
    }
}

/// The export signers: every key of the ring signs, so apps that know only an older key keep
/// verifying until the operator retires it. Each signs as `key_id`, version = its ring id.
fn signers(ring: &KeyRing, key_id: &str) -> Vec<ExportSigner> {
    ring.keys()
        .iter()
        .map(|key| ExportSigner::new(key.signing_key().clone(), key_id, key.kid()))
        .collect()
}

fn policy(config: &ExportConfig) -> ExportPolicy {
    ExportPolicy {
        region: config.region.clone(),
        min_keys: config.min_keys,
        padding_jitter: config.padding_jitter,
        min_revised_keys: config.min_revised_keys,
        max_keys_per_file: config.max_keys_per_file,
        compression: if config.stored {
            Compression::Stored
        } else {
            Compression::Deflated
        },
    }
}

fn schedule(config: &ExportConfig) -> Result<Schedule> {
    if config.min_window_age_minutes < 60 || config.window_minutes == 0 {
        return Err(Error::Config(
            "exports.min_window_age_minutes must be at least 60 and window_minutes above 0, so \
             that no key lands in a window already exported"
                .to_owned(),
        ));
    }
    Ok(Schedule {
        window_seconds: config.window_minutes * 60,
        min_window_age_seconds: config.min_window_age_minutes * 60,
        retention_seconds: config.retention_days * DAY_SECONDS,
    })
}

fn jwks_verifier(config: &Config) -> Result<CertificateVerifier> {
    let path = config.publish.verification_jwks.as_ref().ok_or_else(|| {
        Error::Config(
            "publish.verification_jwks is needed when the verification side runs elsewhere"
                .to_owned(),
        )
    })?;
    let text = std::fs::read_to_string(path)?;
    let jwks: serde_json::Value =
        serde_json::from_str(&text).map_err(|error| Error::Config(error.to_string()))?;
    CertificateVerifier::from_jwks(
        config.verification.issuer.clone(),
        config.verification.certificate_audience.clone(),
        &jwks,
    )
}

/// `POST /v1/publish`.
async fn publish(State(service): State<KeyService>, Chaff(chaff): Chaff, body: Body) -> Response {
    match publish_inner(&service, chaff, body).await {
        Ok(body) => padded_json(StatusCode::OK, body),
        Err(error) => error.into_response(),
    }
}

async fn publish_inner(service: &KeyService, chaff: bool, body: Body) -> Result<serde_json::Value> {
    let started = Instant::now();
    let bytes = read_limited(body, MAX_PUBLISH_BODY_BYTES).await?;
    let request: PublishRequest = crate::request::parse_json(&bytes)?;
    let inner = service.inner.clone();
    if chaff {
        let body = chaff_answer(&inner.publisher.revision_key, &request);
        inner.commit.durable().await?;
        tokio::time::sleep(inner.latency.sample().saturating_sub(started.elapsed())).await;
        let inserted = request.temporary_exposure_keys.len();
        tracing::info!(inserted, dropped = 0, "published");
        return Ok(body);
    }

    let now = inner.clock.now();
    let worker = inner.clone();
    let outcome = tokio::task::spawn_blocking(move || worker.publisher.publish(&request, now))
        .await
        .map_err(|_| Error::Corrupt("publish task"))??;
    inner.commit.durable().await?;
    inner.latency.record(started.elapsed());
    tracing::info!(
        inserted = outcome.inserted,
        dropped = outcome.dropped.len(),
        "published"
    );
    Ok(outcome.to_json())
}

/// Recent durations of real publishes, so that a chaff answer takes as long as a real one
/// would: each chaff request waits for a duration drawn from this sample.
#[derive(Debug, Default)]
struct LatencyMirror {
    recent: Mutex<VecDeque<Duration>>,
}

impl LatencyMirror {
    /// Durations remembered.
    const CAPACITY: usize = 256;
    /// What a chaff request takes before any real publish has been seen.
    const INITIAL: Duration = Duration::from_millis(2);

    fn record(&self, elapsed: Duration) {
        let mut recent = crate::locks::lock(&self.recent);
        if recent.len() == Self::CAPACITY {
            recent.pop_front();
        }
        recent.push_back(elapsed);
    }

    fn sample(&self) -> Duration {
        let recent = crate::locks::lock(&self.recent);
        if recent.is_empty() {
            return Self::INITIAL;
        }
        recent[rand::thread_rng().gen_range(0..recent.len())]
    }
}

/// The answer to a chaff upload: the same fields and sizes as a real one, and no state.
fn chaff_answer(revision_key: &RevisionKey, request: &PublishRequest) -> serde_json::Value {
    let keys = request
        .temporary_exposure_keys
        .iter()
        .map(|key| {
            (
                DiagnosisKey::from_bytes([0; 16]),
                EnIntervalNumber::new(key.rolling_start_number),
            )
        })
        .collect();
    serde_json::json!({
        "insertedExposures": request.temporary_exposure_keys.len(),
        "revisionToken": revision_key.seal(&RevisionClaims { keys }),
    })
}

/// `GET /exports/PATH`: the index, never cached, and export files, cacheable forever since a
/// file's name is never reused for other contents.
async fn export_file(State(service): State<KeyService>, Path(path): Path<String>) -> Response {
    let is_index = path == INDEX_FILE;
    if !is_index && parse_file_path(&path).is_none() {
        return Error::NotFound.into_response();
    }
    let tree = service.tree().clone();
    let read = tokio::task::spawn_blocking(move || tree.read_file(&path)).await;
    let Ok(Ok(bytes)) = read else {
        return Error::NotFound.into_response();
    };
    let (content_type, cache) = if is_index {
        ("text/plain; charset=utf-8", "no-cache")
    } else {
        ("application/zip", "public, max-age=31536000, immutable")
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
        ],
        bytes,
    )
        .into_response()
}

/// What an operator command on the export keys does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExportKeyAction {
    /// Only list.
    List,
    /// Add a new signing key; every key keeps signing until retired.
    Rotate,
    /// Stop signing with a key.
    Retire(String),
}

impl KeyService {
    /// Opens the key side for an operator command, which never accepts uploads and so needs
    /// no certificate keys.
    ///
    /// # Errors
    ///
    /// Storage failures, including a running server holding the database.
    pub fn open_for_operator(config: &Config, clock: SharedClock) -> Result<Self> {
        let no_uploads = CertificateVerifier::new("", "", Vec::new());
        Self::open(config, clock, Some(no_uploads))
    }
}

/// Lists, rotates or retires the export signing keys and prints each as PEM with the key id
/// and version apps must configure.
///
/// # Errors
///
/// Storage failures, and an unknown or active key to retire.
pub fn export_keys(config: &Config, now: u64, action: ExportKeyAction) -> Result<String> {
    let db = open_db(&config.keys_dir())?;
    let mut ring = KeyRing::open(db.open_tree("export_signing_keys")?, now)?;
    match action {
        ExportKeyAction::List => {}
        ExportKeyAction::Rotate => {
            ring.rotate(now)?;
        }
        ExportKeyAction::Retire(kid) => ring.retire(&kid)?,
    }
    let mut out = String::new();
    for key in ring.keys() {
        out.push_str(&format!(
            "export signing key: verification_key_id {} verification_key_version {} created {}\n{}",
            config.exports.key_id,
            key.kid(),
            key.created(),
            key.public_pem()
        ));
    }
    Ok(out)
}

/// Checks the export tree as a device would, plus index consistency; returns a report and
/// whether everything verified.
///
/// # Errors
///
/// Storage failures and an unreadable index.
pub fn verify_exports(service: &KeyService) -> Result<(String, bool)> {
    let report = crate::exports::verify_tree(service.tree(), &service.trusted_export_keys())?;
    let mut out = format!(
        "{} file(s) verified, {} key(s) in them (fake keys included)\n",
        report.verified.len(),
        report.keys
    );
    for problem in &report.problems {
        out.push_str(&format!("problem: {problem}\n"));
    }
    Ok((out, report.problems.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chaff_waits_as_long_as_a_recent_real_publish() {
        let mirror = LatencyMirror::default();
        assert_eq!(mirror.sample(), LatencyMirror::INITIAL);
        for millis in 1..=300 {
            mirror.record(Duration::from_millis(millis));
        }
        for _ in 0..100 {
            let sample = mirror.sample();
            assert!((45..=300).contains(&sample.as_millis()), "{sample:?}");
        }
    }
}
