//! `POST /v1/publish` (`spec/key-server.md`, "Publish"): a diagnosed person's keys, accepted
//! with a certificate from the verification side and stored for export.
//!
//! The rules are the GAEN reference server's, which handle real phones' quirks: single keys that
//! are too new, too old or too far from symptom onset are dropped and reported while the rest
//! are kept; anything wrong with the request as a whole refuses all of it and changes nothing.
//! A 200 answer means the keys are on disk.

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};
use varsel_protocol::export::{ExportKey, ReportType};
use varsel_protocol::interval::{
    EK_ROLLING_PERIOD, EnIntervalNumber, INTERVAL_SECONDS, RollingWindow,
};
use varsel_protocol::keys::DiagnosisKey;
use varsel_protocol::tekmac::{HmacKey, UploadKey};

use crate::certificate::{CertificateVerifier, VerifiedCertificate, verify_certificate};
use crate::error::{Error, Result};
use crate::published::{CertificateHash, PublishedKeys, StoredKey, Upload};
use crate::revision::{RevisionClaims, RevisionKey};

/// Largest publish body, in bytes.
pub const MAX_PUBLISH_BODY_BYTES: usize = 64 * 1024;
/// Most keys in one upload.
pub const MAX_KEYS: usize = 30;
/// Most keys that may share one rolling start (a same-day key cut short and re-issued).
pub const MAX_SAME_START: usize = 3;
/// A key is accepted if it was valid at some time in this many days before the upload.
pub const MAX_KEY_AGE_DAYS: u32 = 15;
/// Keys further than this many days from symptom onset are dropped.
pub const MAX_DAYS_FROM_ONSET: i32 = 14;
/// A key still valid when uploaded waits this long after it expires before any export.
pub const EMBARGO_SECONDS: u64 = 2 * 3_600;

/// The upload, as devices send it. Unknown fields are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PublishRequest {
    /// The keys.
    pub temporary_exposure_keys: Vec<KeyJson>,
    /// Which health authority's certificate this is.
    #[serde(rename = "healthAuthorityID")]
    pub health_authority_id: String,
    /// The certificate from the verification side.
    pub verification_payload: String,
    /// The device's HMAC secret, base64.
    pub hmac_key: String,
    /// Symptom onset as the device knows it; the certificate's takes precedence.
    #[serde(default)]
    pub symptom_onset_interval: Option<u32>,
    /// Whether the person travelled; accepted and not stored.
    #[serde(default)]
    pub traveler: Option<bool>,
    /// The token a first upload returned, to revise those keys.
    #[serde(default)]
    pub revision_token: Option<String>,
    /// Random filler, ignored.
    #[serde(default)]
    pub padding: Option<String>,
}

/// One key of an upload.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeyJson {
    /// Base64 of the 16 key bytes.
    pub key: String,
    /// First interval of validity.
    pub rolling_start_number: u32,
    /// Intervals of validity, 1-144.
    pub rolling_period: u32,
    /// Transmission risk, 0-8.
    pub transmission_risk: i32,
}

/// Why a single key was dropped while the rest of the upload was kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Its validity starts after the upload.
    FromTheFuture,
    /// Its validity ended more than 15 days before the upload.
    TooOld,
    /// Its day lies more than 14 days from symptom onset.
    FarFromOnset,
    /// It is stored already and its report type cannot change that way (or has changed once).
    RevisionNotAllowed,
}

impl DropReason {
    /// The machine code of the reason.
    pub fn code(self) -> &'static str {
        match self {
            Self::FromTheFuture => "key_from_the_future",
            Self::TooOld => "key_too_old",
            Self::FarFromOnset => "key_far_from_onset",
            Self::RevisionNotAllowed => "revision_not_allowed",
        }
    }
}

/// What an accepted upload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishOutcome {
    /// Keys stored or revised.
    pub inserted: usize,
    /// Keys dropped, by their position in the request.
    pub dropped: Vec<(usize, DropReason)>,
    /// The token for a later revision of these keys.
    pub revision_token: String,
}

impl PublishOutcome {
    /// The JSON answer (padding is added by the caller).
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "insertedExposures": self.inserted,
            "revisionToken": self.revision_token,
        });
        if !self.dropped.is_empty() {
            body["error"] = json!(format!("{} key(s) dropped", self.dropped.len()));
            body["code"] = json!("partial_failure");
            body["droppedKeys"] = self
                .dropped
                .iter()
                .map(|(index, reason)| json!({ "index": index, "code": reason.code() }))
                .collect();
        }
        body
    }
}

/// What the publish route needs.
#[derive(Clone, Debug)]
pub struct Publisher {
    /// Where keys go, and which certificates were used.
    pub keys: PublishedKeys,
    /// Whose certificates count.
    pub verifier: CertificateVerifier,
    /// Health authority ids accepted in `healthAuthorityID`.
    pub health_authority_ids: Vec<String>,
    /// Seals and opens revision tokens.
    pub revision_key: RevisionKey,
}

/// One validated key of the request.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    index: usize,
    upload: UploadKey,
    /// The key's validity, its period checked.
    window: RollingWindow,
}

impl Publisher {
    /// Checks and stores an upload at time `now`. The caller must flush the database before
    /// answering.
    ///
    /// # Errors
    ///
    /// Whole-request problems: malformed keys, too many keys, overlaps, a refused
    /// certificate, an unknown health authority, an invalid revision token, and storage
    /// failures. Nothing is stored then.
    pub fn publish(&self, request: &PublishRequest, now: SystemTime) -> Result<PublishOutcome> {
        if !self
            .health_authority_ids
            .contains(&request.health_authority_id)
        {
            return Err(Error::InvalidField {
                field: "healthAuthorityID",
                reason: "not a health authority this server accepts",
            });
        }
        let candidates = parse_keys(&request.temporary_exposure_keys)?;
        check_overlaps(&candidates)?;
        let certificate = self.certificate(request, &candidates, now)?;
        let revision = request
            .revision_token
            .as_deref()
            .map(|token| self.revision_key.open(token))
            .transpose()?;
        let certificate_hash = CertificateHash::of(&certificate.id);

        let now = crate::certificate::unix(now);
        let upload = self.keys.upload();
        if upload.certificate_used(&certificate_hash) {
            return Err(Error::Certificate(crate::error::TokenRejection::Used));
        }
        let rules = Rules {
            certificate: &certificate,
            revision: revision.as_ref(),
            now,
            // A clock past the last interval number (in the year 83,000) reads as that one.
            current: EnIntervalNumber::from_unix_seconds(now)
                .unwrap_or(EnIntervalNumber::new(u32::MAX)),
            upload_hour: upload.hour_for(now),
        };
        let plan = plan(&upload, &candidates, &rules)?;
        upload.commit(
            &plan.records,
            &certificate_hash,
            certificate.accepted_until,
            rules.upload_hour,
        )?;
        Ok(PublishOutcome {
            inserted: plan.records.len(),
            dropped: plan.dropped,
            revision_token: self
                .revision_key
                .seal(&RevisionClaims { keys: plan.covered }),
        })
    }

    /// The upload's certificate, verified against its keys and HMAC secret.
    fn certificate(
        &self,
        request: &PublishRequest,
        candidates: &[Candidate],
        now: SystemTime,
    ) -> Result<VerifiedCertificate> {
        let hmac_key =
            HmacKey::from_base64(&request.hmac_key).map_err(|_| Error::InvalidField {
                field: "hmacKey",
                reason: "must be base64 of 16 to 128 bytes",
            })?;
        let uploads: Vec<UploadKey> = candidates.iter().map(|c| c.upload).collect();
        verify_certificate(
            &request.verification_payload,
            &uploads,
            &hmac_key,
            &self.verifier,
            now,
        )
    }
}

/// Decides, key by key, what to store, given what is stored already.
fn plan(stored: &Upload<'_>, candidates: &[Candidate], rules: &Rules<'_>) -> Result<Plan> {
    let mut plan = Plan::default();
    for candidate in candidates {
        let upload = &candidate.upload;
        match rules.decide(candidate, stored.get(&upload.key)?)? {
            Decision::Drop(reason) => {
                plan.dropped.push((candidate.index, reason));
                continue;
            }
            Decision::Store(record) => plan.records.push(record),
            Decision::Unchanged => {}
        }
        plan.covered.push((upload.key, upload.rolling_start));
    }
    Ok(plan)
}

/// What one upload, at one moment and under one certificate, does to each of its keys.
struct Rules<'a> {
    certificate: &'a VerifiedCertificate,
    revision: Option<&'a RevisionClaims>,
    /// The upload's time, in Unix seconds.
    now: u64,
    /// The interval `now` lies in.
    current: EnIntervalNumber,
    upload_hour: u64,
}

/// The fate of one key.
enum Decision {
    /// Write this record, new or revised.
    Store(StoredKey),
    /// Stored already as it would be now: a repeated upload.
    Unchanged,
    /// Dropped, the rest of the upload going ahead.
    Drop(DropReason),
}

impl Rules<'_> {
    /// Applies the age, onset and revision rules to `candidate`, stored as `existing` if at
    /// all.
    fn decide(&self, candidate: &Candidate, existing: Option<StoredKey>) -> Result<Decision> {
        let (upload, window) = (&candidate.upload, candidate.window);
        if let Err(reason) = check_age(window, self.current) {
            return Ok(Decision::Drop(reason));
        }
        let certificate = self.certificate;
        let days = days_since_onset(window.start(), certificate.symptom_onset);
        if days.is_some_and(|days| days.abs() > MAX_DAYS_FROM_ONSET) {
            return Ok(Decision::Drop(DropReason::FarFromOnset));
        }
        let key = ExportKey {
            key: upload.key,
            transmission_risk_level: i32::from(upload.transmission_risk),
            rolling_start: window.start(),
            rolling_period: window.period(),
            report_type: Some(certificate.report_type),
            days_since_onset_of_symptoms: days,
        };
        let upload_hour = self.upload_hour;
        Ok(match existing {
            // A revocation withdraws keys published before; there is nothing to withdraw.
            None if certificate.report_type == ReportType::Revoked => {
                Decision::Drop(DropReason::RevisionNotAllowed)
            }
            None => Decision::Store(new_record(key, window, upload_hour, self.now)),
            Some(existing) if same_upload(&existing, &key) => Decision::Unchanged,
            Some(existing) => {
                match revise(
                    existing,
                    certificate.report_type,
                    self.revision,
                    upload_hour,
                )? {
                    Some(record) => Decision::Store(record),
                    None => Decision::Drop(DropReason::RevisionNotAllowed),
                }
            }
        })
    }
}

/// What one upload will write.
#[derive(Default)]
struct Plan {
    records: Vec<StoredKey>,
    dropped: Vec<(usize, DropReason)>,
    covered: Vec<(DiagnosisKey, EnIntervalNumber)>,
}

/// Parses and range-checks every key; any malformed key refuses the request.
fn parse_keys(keys: &[KeyJson]) -> Result<Vec<Candidate>> {
    if keys.is_empty() {
        return Err(Error::InvalidField {
            field: "temporaryExposureKeys",
            reason: "no keys",
        });
    }
    if keys.len() > MAX_KEYS {
        return Err(Error::InvalidField {
            field: "temporaryExposureKeys",
            reason: "at most 30 keys",
        });
    }
    keys.iter()
        .enumerate()
        .map(|(index, key)| {
            let bytes = B64.decode(&key.key).ok().filter(|bytes| bytes.len() == 16);
            let bytes = bytes.ok_or(Error::InvalidField {
                field: "key",
                reason: "must be base64 of 16 bytes",
            })?;
            let rolling_start = EnIntervalNumber::new(key.rolling_start_number);
            let window = RollingWindow::new(rolling_start, key.rolling_period).map_err(|_| {
                Error::InvalidField {
                    field: "rollingPeriod",
                    reason: "must be 1-144",
                }
            })?;
            let risk = u8::try_from(key.transmission_risk)
                .ok()
                .filter(|risk| *risk <= 8);
            let risk = risk.ok_or(Error::InvalidField {
                field: "transmissionRisk",
                reason: "must be 0-8",
            })?;
            Ok(Candidate {
                index,
                upload: UploadKey {
                    key: DiagnosisKey::from_slice(&bytes).map_err(|_| Error::Corrupt("key"))?,
                    rolling_start,
                    rolling_period: key.rolling_period,
                    transmission_risk: risk,
                },
                window,
            })
        })
        .collect()
}

/// Keys with the same start may overlap (at most three of them); keys with different starts
/// may not.
fn check_overlaps(candidates: &[Candidate]) -> Result<()> {
    let mut by_start: BTreeMap<u32, (usize, u64)> = BTreeMap::new();
    for candidate in candidates {
        let start = candidate.window.start().value();
        let end = candidate.window.end_exclusive();
        let entry = by_start.entry(start).or_insert((0, end));
        entry.0 += 1;
        entry.1 = entry.1.max(end);
        if entry.0 > MAX_SAME_START {
            return Err(Error::KeyOverlap("more than 3 keys share a rolling start"));
        }
    }
    let mut previous_end = 0u64;
    for (start, (_, end)) in by_start {
        if u64::from(start) < previous_end {
            return Err(Error::KeyOverlap(
                "keys with different rolling starts overlap",
            ));
        }
        previous_end = end;
    }
    let mut seen = std::collections::HashSet::new();
    if candidates
        .iter()
        .any(|candidate| !seen.insert(candidate.upload.key))
    {
        return Err(Error::KeyOverlap("the same key appears twice"));
    }
    Ok(())
}

/// A key from the future, or one whose validity ended more than 15 days ago, is dropped.
fn check_age(window: RollingWindow, current: EnIntervalNumber) -> Result<(), DropReason> {
    if window.start() > current {
        return Err(DropReason::FromTheFuture);
    }
    let max_age = u64::from(MAX_KEY_AGE_DAYS) * u64::from(EK_ROLLING_PERIOD);
    let oldest = u64::from(current.value()).saturating_sub(max_age);
    if window.end_exclusive() <= oldest {
        return Err(DropReason::TooOld);
    }
    Ok(())
}

/// Whole days from the onset day to the key's day, when onset is known.
fn days_since_onset(start: EnIntervalNumber, onset: Option<EnIntervalNumber>) -> Option<i32> {
    let onset = i64::from(onset?.day_start().value());
    let day = i64::from(start.day_start().value());
    i32::try_from((day - onset).div_euclid(i64::from(EK_ROLLING_PERIOD))).ok()
}

/// A new key's record: released at its upload hour, or two hours after it expires if it is
/// still valid.
fn new_record(key: ExportKey, window: RollingWindow, upload_hour: u64, now: u64) -> StoredKey {
    let expires = window.end_exclusive() * INTERVAL_SECONDS;
    let release_at = if expires > now {
        expires + EMBARGO_SECONDS
    } else {
        upload_hour
    };
    StoredKey {
        key,
        upload_hour,
        release_at,
        revised_release_at: None,
    }
}

/// The same key uploaded again with nothing that would change it.
fn same_upload(existing: &StoredKey, key: &ExportKey) -> bool {
    existing.key.rolling_start == key.rolling_start && existing.key.report_type == key.report_type
}

/// The revised record, if the change is allowed and the token proves the first upload; `None`
/// when the change is not one a revision may make.
fn revise(
    existing: StoredKey,
    report_type: ReportType,
    revision: Option<&RevisionClaims>,
    upload_hour: u64,
) -> Result<Option<StoredKey>> {
    if !existing.may_revise_to(report_type) {
        return Ok(None);
    }
    let covered =
        revision.is_some_and(|claims| claims.covers(&existing.key.key, existing.key.rolling_start));
    if !covered {
        return Err(Error::RevisionToken);
    }
    let mut revised = existing;
    revised.key.report_type = Some(report_type);
    revised.revised_release_at = Some(upload_hour.max(existing.release_at));
    Ok(Some(revised))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(index: usize, start: u32, period: u32) -> Candidate {
        let rolling_start = EnIntervalNumber::new(start);
        Candidate {
            index,
            upload: UploadKey {
                key: DiagnosisKey::from_bytes([index as u8; 16]),
                rolling_start,
                rolling_period: period,
                transmission_risk: 0,
            },
            window: RollingWindow::new(rolling_start, period).unwrap(),
        }
    }

    #[test]
    fn same_start_overlaps_are_allowed_up_to_three() {
        let three = [
            candidate(0, 144, 144),
            candidate(1, 144, 50),
            candidate(2, 144, 10),
        ];
        assert!(check_overlaps(&three).is_ok());
        let four = [three[0], three[1], three[2], candidate(3, 144, 1)];
        assert!(matches!(check_overlaps(&four), Err(Error::KeyOverlap(_))));
    }

    #[test]
    fn different_start_overlaps_are_refused() {
        let adjacent = [candidate(0, 0, 144), candidate(1, 144, 144)];
        assert!(check_overlaps(&adjacent).is_ok());
        let overlapping = [candidate(0, 0, 144), candidate(1, 100, 144)];
        assert!(matches!(
            check_overlaps(&overlapping),
            Err(Error::KeyOverlap(_))
        ));
    }

    #[test]
    fn age_limits() {
        let now = EnIntervalNumber::new(144 * 100 + 5);
        let today = candidate(0, 144 * 100, 144).window;
        assert_eq!(check_age(today, now), Ok(()));
        let tomorrow = candidate(0, 144 * 101, 144).window;
        assert_eq!(check_age(tomorrow, now), Err(DropReason::FromTheFuture));
        let fifteen_days = candidate(0, 144 * 85, 144).window;
        assert_eq!(check_age(fifteen_days, now), Ok(()));
        let sixteen_days = candidate(0, 144 * 84, 144).window;
        assert_eq!(check_age(sixteen_days, now), Err(DropReason::TooOld));
    }

    #[test]
    fn days_from_onset() {
        let onset = Some(EnIntervalNumber::new(144 * 10));
        assert_eq!(
            days_since_onset(EnIntervalNumber::new(144 * 12 + 7), onset),
            Some(2)
        );
        assert_eq!(
            days_since_onset(EnIntervalNumber::new(144 * 7), onset),
            Some(-3)
        );
        assert_eq!(days_since_onset(EnIntervalNumber::new(144 * 7), None), None);
    }

    #[test]
    fn embargo_holds_keys_still_valid() {
        let key = ExportKey {
            key: DiagnosisKey::from_bytes([1; 16]),
            transmission_risk_level: 0,
            rolling_start: EnIntervalNumber::new(144 * 100),
            rolling_period: 144,
            report_type: Some(ReportType::ConfirmedTest),
            days_since_onset_of_symptoms: None,
        };
        let expires = 144 * 101 * 600;
        let window = RollingWindow::full_day(key.rolling_start);
        let during = new_record(key, window, expires - 3_600, expires - 1_800);
        assert_eq!(during.release_at, expires + EMBARGO_SECONDS);
        let after = new_record(key, window, expires + 3_600, expires + 4_000);
        assert_eq!(after.release_at, expires + 3_600);
    }
}
