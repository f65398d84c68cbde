//! The key side over a real socket: a device-like client obtains a certificate through the
//! verification routes, uploads keys to `POST /v1/publish`, the export worker publishes them,
//! and the files served under `/exports/` are checked as a phone would check them. Every
//! publish rule has a case that passes and one that fails.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{TestServer, start_time};
use serde_json::{Value, json};
use varsel_key_server::date::Date;
use varsel_key_server::exports::{ExportPolicy, file_path};
use varsel_protocol::export::{Export, ExportArchive, ExportLimits, ReportType};
use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::keys::{DiagnosisKey, TemporaryExposureKey};
use varsel_protocol::tekmac::{HmacKey, TekMac, UploadKey};

const HOUR: u64 = 3_600;
const DAY: u64 = 86_400;

/// Today's rolling start at the test's start time.
fn today() -> EnIntervalNumber {
    EnIntervalNumber::from_unix_seconds(start_time())
        .unwrap()
        .day_start()
}

fn key_on(day_offset: i64, period: u32) -> UploadKey {
    let start = i64::from(today().value()) + 144 * day_offset;
    UploadKey {
        key: TemporaryExposureKey::generate(&mut rand_core::OsRng).into_diagnosis_key(),
        rolling_start: EnIntervalNumber::new(start as u32),
        rolling_period: period,
        transmission_risk: 4,
    }
}

/// Keys of the `days` days before today.
fn past_keys(days: i64) -> Vec<UploadKey> {
    (1..=days).map(|day| key_on(-day, 144)).collect()
}

fn days_ago(days: i64) -> String {
    Date::from_days(Date::from_unix_seconds(start_time(), 0).days() - days).to_string()
}

/// A device's upload in progress.
struct Upload {
    keys: Vec<UploadKey>,
    secret: HmacKey,
    certificate: String,
}

/// Issues a code, verifies it and trades the token for a certificate over `keys`.
async fn certify(
    server: &TestServer,
    api_key: &str,
    test_type: &str,
    onset_days_ago: Option<i64>,
    keys: Vec<UploadKey>,
) -> Upload {
    let mut issue = json!({ "testType": test_type });
    if let Some(days) = onset_days_ago {
        issue["symptomDate"] = json!(days_ago(days));
    }
    let issued = server.issue(api_key, &issue).await;
    assert_eq!(issued.status, 200, "{}", issued.text());
    let code = issued.json()["code"].as_str().unwrap().to_owned();

    let accept = json!({ "code": code, "accept": ["confirmed", "likely", "negative"] });
    let verified = server.post_json("/api/verify", &[], &accept).await;
    assert_eq!(verified.status, 200, "{}", verified.text());
    let token = verified.json()["token"].as_str().unwrap().to_owned();

    let secret = HmacKey::generate(&mut rand_core::OsRng);
    let exchange =
        json!({ "token": token, "ekeyhmac": TekMac::compute(&secret, &keys).to_base64() });
    let certified = server.post_json("/api/certificate", &[], &exchange).await;
    assert_eq!(certified.status, 200, "{}", certified.text());
    let certificate = certified.json()["certificate"].as_str().unwrap().to_owned();
    Upload {
        keys,
        secret,
        certificate,
    }
}

fn publish_body(upload: &Upload, revision_token: Option<&str>) -> Value {
    let keys: Vec<Value> = upload
        .keys
        .iter()
        .map(|key| {
            json!({
                "key": B64.encode(key.key.as_bytes()),
                "rollingStartNumber": key.rolling_start.value(),
                "rollingPeriod": key.rolling_period,
                "transmissionRisk": key.transmission_risk,
            })
        })
        .collect();
    let mut body = json!({
        "temporaryExposureKeys": keys,
        "healthAuthorityID": "varsel",
        "verificationPayload": upload.certificate,
        "hmacKey": upload.secret.to_base64(),
        "padding": "AAAA",
    });
    if let Some(token) = revision_token {
        body["revisionToken"] = json!(token);
    }
    body
}

async fn publish(server: &TestServer, upload: &Upload) -> common::Reply {
    server
        .post_json("/v1/publish", &[], &publish_body(upload, None))
        .await
}

/// Moves time on, runs the export worker and reads every live file through `/exports/`.
async fn exported_after(server: &TestServer, wait: Duration) -> Vec<Export> {
    server.clock.advance(wait);
    server.keys.export_now().unwrap();
    let index = server.get("/exports/index.txt").await;
    assert_eq!(index.status, 200);
    assert_eq!(index.headers["cache-control"], "no-cache");
    let trusted = server.keys.trusted_export_keys();
    let mut exports = Vec::new();
    for path in index.text().lines() {
        let file = server.get(&format!("/exports/{path}")).await;
        assert_eq!(file.status, 200, "{path}");
        assert!(
            file.headers["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        let archive = ExportArchive::read(&file.body, &ExportLimits::default()).unwrap();
        archive.verify(&trusted).unwrap();
        exports.push(archive.export);
    }
    exports
}

fn find(exports: &[Export], key: &DiagnosisKey) -> Option<varsel_protocol::export::ExportKey> {
    exports
        .iter()
        .flat_map(|export| &export.keys)
        .find(|k| k.key == *key)
        .copied()
}

fn find_revised(exports: &[Export], key: &DiagnosisKey) -> Option<ReportType> {
    exports
        .iter()
        .flat_map(|export| &export.revised_keys)
        .find(|k| k.key == *key)
        .and_then(|k| k.report_type)
}

#[tokio::test]
async fn keys_are_published_padded_signed_and_with_onset() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    let upload = certify(&server, &api_key, "confirmed", Some(3), past_keys(5)).await;

    let reply = publish(&server, &upload).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["insertedExposures"], 5);
    assert!(reply.json()["revisionToken"].as_str().unwrap().len() > 20);

    // Nothing is exported before the window has been closed for two hours.
    assert!(exported_after(&server, Duration::ZERO).await.is_empty());
    let exports = exported_after(&server, Duration::from_secs(3 * HOUR)).await;
    assert_eq!(exports.len(), 1);
    let export = &exports[0];
    assert!(
        (1_000..=1_100).contains(&export.keys.len()),
        "{} keys",
        export.keys.len()
    );
    assert!(export.keys.windows(2).all(|pair| pair[0].key < pair[1].key));
    assert_eq!((export.batch_num, export.batch_size), (1, 1));
    for (day, key) in (1..).zip(&upload.keys) {
        let published = find(&exports, &key.key).expect("uploaded key is exported");
        assert_eq!(published.report_type, Some(ReportType::ConfirmedTest));
        assert_eq!(published.days_since_onset_of_symptoms, Some(3 - day));
        assert_eq!(published.transmission_risk_level, 4);
        assert_eq!(published.rolling_start, key.rolling_start);
    }
    server.stop().await;
}

#[tokio::test]
async fn at_most_thirty_keys() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    let thirty: Vec<_> = (0..30)
        .map(|i| key_on(-1 - i / 3, 144 - (i % 3) as u32))
        .collect();
    let upload = certify(&server, &api_key, "confirmed", None, thirty).await;
    let reply = publish(&server, &upload).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["insertedExposures"], 30);

    let thirty_one = past_keys(14)
        .into_iter()
        .chain(past_keys(14))
        .chain(past_keys(3))
        .collect();
    let upload = certify(&server, &api_key, "confirmed", None, thirty_one).await;
    let reply = publish(&server, &upload).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.code(), "bad_request");
    server.stop().await;
}

#[tokio::test]
async fn future_and_stale_keys_are_dropped_and_the_rest_kept() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    let fifteen_days = key_on(-15, 144);
    let sixteen_days = key_on(-17, 144);
    let tomorrow = key_on(1, 144);
    let yesterday = key_on(-1, 144);
    let keys = vec![fifteen_days, sixteen_days, tomorrow, yesterday];
    let upload = certify(&server, &api_key, "confirmed", None, keys).await;

    let reply = publish(&server, &upload).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["code"], "partial_failure");
    assert_eq!(body["insertedExposures"], 2);
    let dropped = body["droppedKeys"].as_array().unwrap().to_vec();
    assert_eq!(dropped[0], json!({ "index": 1, "code": "key_too_old" }));
    assert_eq!(
        dropped[1],
        json!({ "index": 2, "code": "key_from_the_future" })
    );

    let stored = server.keys.published_keys();
    assert!(stored.get(&fifteen_days.key).unwrap().is_some());
    assert!(stored.get(&yesterday.key).unwrap().is_some());
    assert!(stored.get(&sixteen_days.key).unwrap().is_none());
    assert!(stored.get(&tomorrow.key).unwrap().is_none());
    server.stop().await;
}

#[tokio::test]
async fn overlapping_keys() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);

    // Three keys of one day (cut short and re-issued) are what phones send.
    let same_day = vec![
        key_on(-1, 144),
        key_on(-1, 60),
        key_on(-1, 30),
        key_on(-2, 144),
    ];
    let upload = certify(&server, &api_key, "confirmed", None, same_day).await;
    assert_eq!(publish(&server, &upload).await.status, 200);

    let four_same_day = vec![
        key_on(-3, 144),
        key_on(-3, 60),
        key_on(-3, 30),
        key_on(-3, 10),
    ];
    let upload = certify(&server, &api_key, "confirmed", None, four_same_day).await;
    let reply = publish(&server, &upload).await;
    assert_eq!((reply.status, reply.code().as_str()), (400, "key_overlap"));

    let mut shifted = key_on(-5, 144);
    shifted.rolling_start = EnIntervalNumber::new(shifted.rolling_start.value() + 72);
    let crossing = vec![key_on(-5, 144), shifted];
    let upload = certify(&server, &api_key, "confirmed", None, crossing.clone()).await;
    let reply = publish(&server, &upload).await;
    assert_eq!((reply.status, reply.code().as_str()), (400, "key_overlap"));
    assert!(
        server
            .keys
            .published_keys()
            .get(&crossing[0].key)
            .unwrap()
            .is_none()
    );
    server.stop().await;
}

#[tokio::test]
async fn certificate_must_match_the_keys_and_be_unused() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    let mut upload = certify(&server, &api_key, "confirmed", None, past_keys(3)).await;

    // One key more than the certificate covers.
    let honest_keys = upload.keys.clone();
    upload.keys.push(key_on(-4, 144));
    let reply = publish(&server, &upload).await;
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (400, "certificate_invalid")
    );
    assert!(server.keys.published_keys().is_empty());

    // Another device's secret.
    upload.keys = honest_keys;
    let secret = std::mem::replace(&mut upload.secret, HmacKey::generate(&mut rand_core::OsRng));
    let reply = publish(&server, &upload).await;
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (400, "certificate_invalid")
    );

    upload.secret = secret;
    assert_eq!(publish(&server, &upload).await.status, 200);
    let again = publish(&server, &upload).await;
    assert_eq!(
        (again.status, again.code().as_str()),
        (400, "certificate_invalid")
    );
    server.stop().await;
}

#[tokio::test]
async fn keys_far_from_onset_are_dropped() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    let near = key_on(-1, 144);
    let far = key_on(-15, 144);
    let upload = certify(&server, &api_key, "confirmed", Some(0), vec![near, far]).await;
    let reply = publish(&server, &upload).await.json();
    assert_eq!(reply["insertedExposures"], 1);
    assert_eq!(reply["droppedKeys"][0]["code"], "key_far_from_onset");

    let within = key_on(-14, 144);
    let upload = certify(&server, &api_key, "confirmed", Some(0), vec![within]).await;
    assert_eq!(
        publish(&server, &upload).await.json()["insertedExposures"],
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn a_key_still_valid_is_embargoed_until_two_hours_after_it_expires() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    let current = key_on(0, 144);
    let older = key_on(-1, 144);
    let upload = certify(&server, &api_key, "confirmed", None, vec![current, older]).await;
    assert_eq!(
        publish(&server, &upload).await.json()["insertedExposures"],
        2
    );

    // Uploaded at noon; today's key expires at midnight.
    let exports = exported_after(&server, Duration::from_secs(4 * HOUR)).await;
    assert!(find(&exports, &older.key).is_some());
    assert!(find(&exports, &current.key).is_none());
    let exports = exported_after(&server, Duration::from_secs(9 * HOUR)).await;
    assert!(
        find(&exports, &current.key).is_none(),
        "published before expiry + 2 h"
    );
    let exports = exported_after(&server, Duration::from_secs(4 * HOUR)).await;
    assert!(find(&exports, &current.key).is_some());
    server.stop().await;
}

#[tokio::test]
async fn repeated_uploads_are_no_ops_and_revisions_need_the_token() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    let keys = past_keys(2);
    let likely = certify(&server, &api_key, "likely", None, keys.clone()).await;
    let first = publish(&server, &likely).await.json();
    assert_eq!(first["insertedExposures"], 2);
    let token = first["revisionToken"].as_str().unwrap().to_owned();
    let exports = exported_after(&server, Duration::from_secs(3 * HOUR)).await;
    let report = find(&exports, &keys[0].key).unwrap().report_type;
    assert_eq!(report, Some(ReportType::ConfirmedClinicalDiagnosis));

    // The same keys again, same diagnosis: nothing changes.
    let repeat = certify(&server, &api_key, "likely", None, keys.clone()).await;
    let reply = publish(&server, &repeat).await;
    assert_eq!(
        (reply.status, reply.json()["insertedExposures"].clone()),
        (200, json!(0))
    );

    // Confirmed later: a revision, refused without the token, allowed with it, once.
    let confirmed = certify(&server, &api_key, "confirmed", None, keys.clone()).await;
    let reply = publish(&server, &confirmed).await;
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (400, "revision_token_invalid")
    );
    let confirmed = certify(&server, &api_key, "confirmed", None, keys.clone()).await;
    let body = publish_body(&confirmed, Some(&token));
    let reply = server.post_json("/v1/publish", &[], &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["insertedExposures"], 2);

    let exports = exported_after(&server, Duration::from_secs(3 * HOUR)).await;
    assert_eq!(
        find_revised(&exports, &keys[0].key),
        Some(ReportType::ConfirmedTest)
    );
    // Two real revisions, padded like keys so that their number does not show.
    let revised: Vec<_> = exports.iter().flat_map(|e| &e.revised_keys).collect();
    assert!(revised.len() >= ExportPolicy::default().min_revised_keys);
    assert!(
        revised
            .iter()
            .all(|k| k.report_type == Some(ReportType::ConfirmedTest))
    );

    let revoked = certify(&server, &api_key, "negative", None, keys.clone()).await;
    let body = publish_body(&revoked, Some(&token));
    let reply = server.post_json("/v1/publish", &[], &body).await.json();
    assert_eq!(reply["insertedExposures"], 0);
    assert_eq!(reply["droppedKeys"][0]["code"], "revision_not_allowed");
    server.stop().await;
}

#[tokio::test]
async fn storage_holds_keys_with_the_upload_hour_and_nothing_else() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    server.clock.advance(Duration::from_secs(1_234));
    let upload = certify(&server, &api_key, "confirmed", None, past_keys(2)).await;
    assert_eq!(publish(&server, &upload).await.status, 200);

    let stored = server
        .keys
        .published_keys()
        .get(&upload.keys[0].key)
        .unwrap()
        .unwrap();
    assert_eq!(stored.upload_hour, start_time() / HOUR * HOUR);
    let dump = server.keys.dump();
    let everything: Vec<u8> = dump
        .iter()
        .flat_map(|(t, k, v)| [t, k, v])
        .flatten()
        .copied()
        .collect();
    let contains = |needle: &[u8]| everything.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(upload.certificate.as_bytes()));
    assert!(!contains(upload.secret.to_base64().as_bytes()));
    assert!(!contains(b"127.0.0.1"));
    let jti = upload.certificate.split('.').nth(1).unwrap();
    assert!(!contains(jti.as_bytes()));
    server.stop().await;
}

#[tokio::test]
async fn chaff_looks_like_a_publish_and_stores_nothing() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    let upload = certify(&server, &api_key, "confirmed", None, past_keys(3)).await;
    let before = server.keys.dump();

    let body = publish_body(&upload, None);
    let chaff = server
        .post_json("/v1/publish", &[("x-chaff", "1")], &body)
        .await;
    assert_eq!(chaff.status, 200);
    assert_eq!(server.keys.dump(), before);

    let real = publish(&server, &upload).await;
    assert_eq!(real.status, 200);
    let (chaff, real) = (chaff.json(), real.json());
    let mut chaff_fields: Vec<_> = chaff.as_object().unwrap().keys().collect();
    let mut real_fields: Vec<_> = real.as_object().unwrap().keys().collect();
    chaff_fields.sort();
    real_fields.sort();
    assert_eq!(chaff_fields, real_fields);
    assert_eq!(chaff["insertedExposures"], real["insertedExposures"]);
    let token_len = |value: &Value| value["revisionToken"].as_str().unwrap().len();
    assert_eq!(token_len(&chaff), token_len(&real));
    server.stop().await;
}

#[tokio::test]
async fn malformed_uploads_change_nothing() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    let upload = certify(&server, &api_key, "confirmed", None, past_keys(2)).await;
    let before = server.keys.dump();

    let bad_json = server.send("POST", "/v1/publish", &[], "{not json").await;
    assert_eq!(
        (bad_json.status, bad_json.code().as_str()),
        (400, "bad_request")
    );

    let mut unknown = publish_body(&upload, None);
    unknown["deviceName"] = json!("phone");
    let reply = server.post_json("/v1/publish", &[], &unknown).await;
    assert_eq!((reply.status, reply.code().as_str()), (400, "bad_request"));

    let mut oversized = publish_body(&upload, None);
    oversized["padding"] = json!("A".repeat(70 * 1024));
    let reply = server.post_json("/v1/publish", &[], &oversized).await;
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (413, "body_too_large")
    );

    let mut short_key = publish_body(&upload, None);
    short_key["temporaryExposureKeys"][0]["key"] = json!(B64.encode([0u8; 15]));
    let reply = server.post_json("/v1/publish", &[], &short_key).await;
    assert_eq!(reply.status, 400);

    let mut risk = publish_body(&upload, None);
    risk["temporaryExposureKeys"][0]["transmissionRisk"] = json!(9);
    assert_eq!(
        server.post_json("/v1/publish", &[], &risk).await.status,
        400
    );

    let mut authority = publish_body(&upload, None);
    authority["healthAuthorityID"] = json!("elsewhere");
    assert_eq!(
        server
            .post_json("/v1/publish", &[], &authority)
            .await
            .status,
        400
    );

    assert_eq!(server.keys.dump(), before);
    assert_eq!(
        publish(&server, &upload).await.status,
        200,
        "the upload itself was fine"
    );
    server.stop().await;
}

#[tokio::test]
async fn keys_and_files_expire_after_fourteen_days() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    let upload = certify(&server, &api_key, "confirmed", None, past_keys(2)).await;
    assert_eq!(publish(&server, &upload).await.status, 200);
    assert_eq!(key_entries(&server), "u", "one entry for the upload");
    let exports = exported_after(&server, Duration::from_secs(3 * HOUR)).await;
    assert_eq!(exports.len(), 1);
    assert!(!server.keys.published_keys().is_empty());
    assert_eq!(
        key_entries(&server),
        "h",
        "once its hour ended, the upload is merged into an hour part"
    );

    let exports = exported_after(&server, Duration::from_secs(13 * DAY)).await;
    assert_eq!(exports.len(), 1, "kept for fourteen days");
    let exports = exported_after(&server, Duration::from_secs(DAY)).await;
    assert!(exports.is_empty());
    assert!(server.keys.published_keys().is_empty());
    assert!(server.keys.tree().zip_files().unwrap().is_empty());
    assert_eq!(key_entries(&server), "", "no stored key is left");
    server.stop().await;
}

#[tokio::test]
async fn a_failed_export_stops_neither_retention_nor_the_index() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    let early = certify(&server, &api_key, "confirmed", None, past_keys(2)).await;
    assert_eq!(publish(&server, &early).await.status, 200);
    exported_after(&server, Duration::from_secs(3 * HOUR)).await;
    let early_path = file_path("XX", start_time(), start_time() + HOUR);
    assert_eq!(
        server.get("/exports/index.txt").await.text(),
        format!("{early_path}\n")
    );

    // Thirteen days after the first upload, a second one, with keys of the two days before.
    server
        .clock
        .advance(Duration::from_secs(13 * DAY - 3 * HOUR));
    let late_keys = vec![key_on(12, 144), key_on(11, 144)];
    let late = certify(&server, &api_key, "confirmed", None, late_keys).await;
    assert_eq!(publish(&server, &late).await.status, 200);

    // A directory where the second window's file would go makes its export fail.
    let late_start = start_time() + 13 * DAY;
    let late_path = file_path("XX", late_start, late_start + HOUR);
    let blocker = server.keys.tree().root().join(&late_path);
    std::fs::create_dir_all(&blocker).unwrap();
    server.clock.advance(Duration::from_secs(DAY + 3 * HOUR));
    assert!(
        server.keys.export_now().is_err(),
        "the export cannot be written"
    );

    // Retention and the index went ahead all the same.
    assert_eq!(server.get("/exports/index.txt").await.text(), "");
    assert!(!server.keys.tree().root().join(&early_path).exists());
    let stored = server.keys.published_keys();
    let is_stored = |key: &UploadKey| stored.get(&key.key).unwrap().is_some();
    assert!(
        !early.keys.iter().any(is_stored),
        "the first keys are past retention"
    );
    assert!(late.keys.iter().all(is_stored));

    // Once the way is clear, the next run writes the window that failed.
    std::fs::remove_dir(&blocker).unwrap();
    let exports = exported_after(&server, Duration::ZERO).await;
    assert_eq!(
        server.get("/exports/index.txt").await.text(),
        format!("{late_path}\n")
    );
    assert!(
        late.keys
            .iter()
            .all(|key| find(&exports, &key.key).is_some())
    );
    server.stop().await;
}

#[tokio::test]
async fn an_expired_file_leaves_the_index_first_and_the_disk_once_it_can() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    let upload = certify(&server, &api_key, "confirmed", None, past_keys(2)).await;
    assert_eq!(publish(&server, &upload).await.status, 200);
    exported_after(&server, Duration::from_secs(3 * HOUR)).await;
    let path = file_path("XX", start_time(), start_time() + HOUR);
    let on_disk = server.keys.tree().root().join(&path);
    assert!(on_disk.is_file());

    // While the index cannot be rewritten, the expired file stays listed and on disk.
    let index_blocker = server.keys.tree().root().join("index.partial");
    std::fs::create_dir(&index_blocker).unwrap();
    std::fs::write(index_blocker.join("stuck"), b"x").unwrap();
    server.clock.advance(Duration::from_secs(14 * DAY));
    assert!(
        server.keys.export_now().is_err(),
        "the index cannot be written"
    );
    assert_eq!(
        server.get("/exports/index.txt").await.text(),
        format!("{path}\n")
    );
    assert!(on_disk.is_file());
    std::fs::remove_dir_all(&index_blocker).unwrap();

    // A non-empty directory in the file's place cannot be removed as a file.
    std::fs::remove_file(&on_disk).unwrap();
    std::fs::create_dir(&on_disk).unwrap();
    std::fs::write(on_disk.join("stuck"), b"x").unwrap();
    assert!(server.keys.export_now().is_err(), "the file cannot go");
    assert_eq!(
        server.get("/exports/index.txt").await.text(),
        "",
        "it left the index all the same"
    );
    assert!(on_disk.exists());

    // Once the way is clear, the next run deletes what is there, and then forgets the file.
    std::fs::remove_dir_all(&on_disk).unwrap();
    std::fs::write(&on_disk, b"left behind").unwrap();
    let summary = server.keys.export_now().unwrap();
    assert_eq!(summary.files_deleted, 1);
    assert!(!on_disk.exists());
    assert!(server.keys.tree().zip_files().unwrap().is_empty());
    assert_eq!(server.keys.export_now().unwrap().files_deleted, 0);
    assert_eq!(server.get("/exports/index.txt").await.text(), "");
    server.stop().await;
}

/// The kinds of key-holding entries in the key side's `keys` tree: `u` for an upload, `h` for
/// an hour part.
fn key_entries(server: &TestServer) -> String {
    server
        .keys
        .dump()
        .iter()
        .filter(|(tree, name, _)| tree == b"keys" && matches!(name[0], b'u' | b'h'))
        .map(|(_, name, _)| char::from(name[0]))
        .collect()
}
