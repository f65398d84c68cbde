//! The whole verification flow over a real socket: issue, verify, certificate, and the check the
//! key side runs on the certificate; expiry, reuse, test types, quota and idempotency.

mod common;

use std::time::Duration;

use common::{TestServer, start_time};
use serde_json::{Value, json};
use varsel_key_server::certificate::verify_certificate;
use varsel_key_server::date::{DAY_SECONDS, Date};
use varsel_key_server::{Error, TokenRejection};
use varsel_protocol::export::ReportType;
use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::keys::TemporaryExposureKey;
use varsel_protocol::tekmac::{HmacKey, TekMac, UploadKey};

fn upload_keys(count: u32) -> Vec<UploadKey> {
    let today = EnIntervalNumber::from_unix_seconds(start_time())
        .unwrap()
        .day_start();
    (1..=count)
        .map(|day| UploadKey {
            key: TemporaryExposureKey::generate(&mut rand_core::OsRng).into_diagnosis_key(),
            rolling_start: EnIntervalNumber::new(today.value() - 144 * day),
            rolling_period: 144,
            transmission_risk: 4,
        })
        .collect()
}

fn days_ago(days: i64) -> String {
    Date::from_days(Date::from_unix_seconds(start_time(), 0).days() - days).to_string()
}

async fn verify(server: &TestServer, code: &str, accept: &[&str]) -> common::Reply {
    server
        .post_json(
            "/api/verify",
            &[],
            &json!({ "code": code, "accept": accept }),
        )
        .await
}

async fn exchange(server: &TestServer, token: &str, tekmac: TekMac) -> common::Reply {
    let body = json!({ "token": token, "ekeyhmac": tekmac.to_base64() });
    server.post_json("/api/certificate", &[], &body).await
}

#[tokio::test]
async fn issue_verify_certificate_and_check_it() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);

    // A health authority issues a code for a confirmed test with a symptom date.
    let symptoms = days_ago(3);
    let body = json!({ "testType": "confirmed", "symptomDate": symptoms, "testDate": days_ago(1) });
    let issued = server.issue(&api_key, &body).await;
    assert_eq!(issued.status, 200, "{}", issued.text());
    let issued = issued.json();
    let code = issued["code"].as_str().unwrap();
    assert_eq!(code.len(), 8);
    assert_eq!(issued["longCode"].as_str().unwrap().len(), 16);
    assert_eq!(issued["expiresAtTimestamp"], start_time() + 15 * 60);
    assert_eq!(issued["longExpiresAtTimestamp"], start_time() + DAY_SECONDS);

    // The device exchanges the code for a token...
    let verified = verify(&server, code, &["confirmed", "likely"]).await;
    assert_eq!(verified.status, 200, "{}", verified.text());
    let verified = verified.json();
    assert_eq!(verified["testtype"], "confirmed");
    assert_eq!(verified["symptomDate"], symptoms.as_str());
    let token = verified["token"].as_str().unwrap();

    // ...and the token, with the HMAC of its keys, for a certificate.
    let keys = upload_keys(5);
    let secret = HmacKey::generate(&mut rand_core::OsRng);
    let certified = exchange(&server, token, TekMac::compute(&secret, &keys)).await;
    assert_eq!(certified.status, 200, "{}", certified.text());
    let certificate = certified.json()["certificate"].as_str().unwrap().to_owned();

    // The key side accepts the certificate for exactly these keys.
    let trusted = server.verification.certificate_verifier();
    let now = server.clock.now_system();
    let checked = verify_certificate(&certificate, &keys, &secret, &trusted, now).unwrap();
    assert_eq!(checked.report_type, ReportType::ConfirmedTest);
    let onset = Date::parse(&symptoms)
        .unwrap()
        .midnight_unix_seconds()
        .unwrap();
    assert_eq!(
        checked.symptom_onset,
        Some(EnIntervalNumber::from_unix_seconds(onset).unwrap())
    );
    let fewer = &keys[..4];
    assert!(matches!(
        verify_certificate(&certificate, fewer, &secret, &trusted, now),
        Err(Error::Certificate(TokenRejection::TekMac))
    ));

    // Neither the code nor the token works twice.
    let again = verify(&server, code, &["confirmed"]).await;
    assert_eq!((again.status, again.code().as_str()), (400, "code_invalid"));
    let again = exchange(&server, token, TekMac::compute(&secret, &keys)).await;
    assert_eq!(
        (again.status, again.code().as_str()),
        (400, "token_invalid")
    );

    // The authority's counts moved.
    let counts = server.verification.counts("Lab").unwrap();
    assert_eq!((counts.issued, counts.used), (1, 1));
    server.stop().await;
}

#[tokio::test]
async fn likely_and_negative_map_to_report_types() {
    let server = TestServer::start().await;
    let api_key = server.authority("Clinic", None);
    for (test_type, expected) in [
        ("likely", ReportType::ConfirmedClinicalDiagnosis),
        ("negative", ReportType::Revoked),
    ] {
        let issued = server
            .issue(&api_key, &json!({ "testType": test_type }))
            .await
            .json();
        let long_code = issued["longCode"].as_str().unwrap();
        let token = verify(&server, long_code, &[test_type]).await.json()["token"].clone();
        let keys = upload_keys(1);
        let secret = HmacKey::generate(&mut rand_core::OsRng);
        let reply = exchange(
            &server,
            token.as_str().unwrap(),
            TekMac::compute(&secret, &keys),
        )
        .await;
        let certificate = reply.json()["certificate"].as_str().unwrap().to_owned();
        let trusted = server.verification.certificate_verifier();
        let checked = verify_certificate(
            &certificate,
            &keys,
            &secret,
            &trusted,
            server.clock.now_system(),
        )
        .unwrap();
        assert_eq!(checked.report_type, expected);
        assert_eq!(checked.symptom_onset, None);
    }
    server.stop().await;
}

#[tokio::test]
async fn codes_tokens_and_certificates_expire() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    let issued = server
        .issue(&api_key, &json!({ "testType": "confirmed" }))
        .await
        .json();
    let (short, long) = (
        issued["code"].as_str().unwrap(),
        issued["longCode"].as_str().unwrap(),
    );

    // After 15 minutes the short code is dead and the long one still works.
    server.clock.advance(Duration::from_secs(15 * 60));
    let expired = verify(&server, short, &["confirmed"]).await;
    assert_eq!(
        (expired.status, expired.code().as_str()),
        (400, "code_expired")
    );
    let token = verify(&server, long, &["confirmed"]).await.json()["token"].clone();
    let token = token.as_str().unwrap();

    // A token is good for 24 hours (plus the skew).
    server.clock.advance(Duration::from_secs(DAY_SECONDS + 61));
    let keys = upload_keys(2);
    let secret = HmacKey::generate(&mut rand_core::OsRng);
    let late = exchange(&server, token, TekMac::compute(&secret, &keys)).await;
    assert_eq!((late.status, late.code().as_str()), (400, "token_expired"));

    // A long code is good for 24 hours.
    let issued = server
        .issue(&api_key, &json!({ "testType": "confirmed" }))
        .await
        .json();
    let long = issued["longCode"].as_str().unwrap().to_owned();
    server.clock.advance(Duration::from_secs(DAY_SECONDS));
    let expired = verify(&server, &long, &["confirmed"]).await;
    assert_eq!(expired.code(), "code_expired");

    // A certificate is good for 15 minutes (plus the skew).
    let issued = server
        .issue(&api_key, &json!({ "testType": "confirmed" }))
        .await
        .json();
    let token = verify(&server, issued["code"].as_str().unwrap(), &["confirmed"])
        .await
        .json()["token"]
        .clone();
    let reply = exchange(
        &server,
        token.as_str().unwrap(),
        TekMac::compute(&secret, &keys),
    )
    .await;
    let certificate = reply.json()["certificate"].as_str().unwrap().to_owned();
    let trusted = server.verification.certificate_verifier();
    let at = |clock: &varsel_key_server::clock::ManualClock| clock.now_system();
    server.clock.advance(Duration::from_secs(15 * 60 + 59));
    assert!(verify_certificate(&certificate, &keys, &secret, &trusted, at(&server.clock)).is_ok());
    server.clock.advance(Duration::from_secs(2));
    assert!(matches!(
        verify_certificate(&certificate, &keys, &secret, &trusted, at(&server.clock)),
        Err(Error::Certificate(TokenRejection::Expired))
    ));

    // Sweeping removes what expired.
    assert!(server.verification.sweep().unwrap() >= 2);
    server.stop().await;
}

#[tokio::test]
async fn unaccepted_test_type_leaves_the_code_usable() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    let issued = server
        .issue(&api_key, &json!({ "testType": "likely" }))
        .await
        .json();
    let code = issued["code"].as_str().unwrap();
    let refused = verify(&server, code, &["confirmed"]).await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (412, "unsupported_test_type")
    );
    let accepted = verify(&server, code, &["confirmed", "likely"]).await;
    assert_eq!(accepted.status, 200);
    assert_eq!(accepted.json()["testtype"], "likely");

    let unknown = verify(&server, "12345678", &["confirmed"]).await;
    assert_eq!(
        (unknown.status, unknown.code().as_str()),
        (404, "code_not_found")
    );
    let malformed = verify(&server, "12-45", &["confirmed"]).await;
    assert_eq!(
        (malformed.status, malformed.code().as_str()),
        (400, "code_invalid")
    );
    server.stop().await;
}

#[tokio::test]
async fn quota_uuid_dates_and_api_keys() {
    let server = TestServer::start().await;
    let api_key = server.authority("Small", Some(2));
    let first = server
        .issue(&api_key, &json!({ "testType": "confirmed", "uuid": "a-1" }))
        .await;
    assert_eq!(first.status, 200);
    let repeat = server
        .issue(&api_key, &json!({ "testType": "confirmed", "uuid": "a-1" }))
        .await;
    assert_eq!(
        (repeat.status, repeat.code().as_str()),
        (409, "uuid_already_exists")
    );
    assert_eq!(
        server
            .issue(&api_key, &json!({ "testType": "confirmed" }))
            .await
            .status,
        200
    );
    let over = server
        .issue(&api_key, &json!({ "testType": "confirmed" }))
        .await;
    assert_eq!((over.status, over.code().as_str()), (429, "quota_exceeded"));
    server.clock.advance(Duration::from_secs(DAY_SECONDS));
    assert_eq!(
        server
            .issue(&api_key, &json!({ "testType": "confirmed" }))
            .await
            .status,
        200
    );

    // Dates: not in the future, at most 28 days old, real dates.
    let big = server.authority("Big", None);
    let today = Date::from_unix_seconds(server.clock.unix(), 0);
    let date = |offset: i64| Date::from_days(today.days() + offset).to_string();
    for (field, value, ok) in [
        ("symptomDate", date(0), true),
        ("symptomDate", date(-28), true),
        ("symptomDate", date(-29), false),
        ("testDate", date(1), false),
        ("testDate", "2026-02-30".to_owned(), false),
    ] {
        let reply = server
            .issue(&big, &json!({ "testType": "confirmed", field: value }))
            .await;
        assert_eq!(reply.status == 200, ok, "{field} {value}: {}", reply.text());
    }
    // A time zone ahead of UTC makes tomorrow's UTC date today.
    let body = json!({ "testType": "confirmed", "testDate": date(1), "tzOffset": 720 });
    assert_eq!(server.issue(&big, &body).await.status, 200);

    // Keys: missing, wrong, revoked.
    let body = json!({ "testType": "confirmed" });
    let none = server.post_json("/api/issue", &[], &body).await;
    assert_eq!((none.status, none.code().as_str()), (401, "unauthorized"));
    assert_eq!(server.issue("vks_not-a-key", &body).await.status, 401);
    server
        .verification
        .authorities()
        .revoke("Big", server.clock.unix())
        .unwrap();
    assert_eq!(server.issue(&big, &body).await.status, 401);
    server.stop().await;
}

#[tokio::test]
async fn nothing_secret_is_stored_in_clear() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    let body = json!({ "testType": "confirmed", "uuid": "idem-123" });
    let issued = server.issue(&api_key, &body).await.json();
    let code = issued["code"].as_str().unwrap().to_owned();
    let long = issued["longCode"].as_str().unwrap().to_owned();
    let token = verify(&server, &code, &["confirmed"]).await.json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let claims: Value = {
        use base64::Engine;
        let part = token.split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    let jti = claims["jti"].as_str().unwrap().to_owned();

    let needles = [
        code,
        long,
        token,
        jti,
        api_key,
        "idem-123".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    for (tree, key, value) in server.store.dump() {
        for needle in &needles {
            let needle = needle.as_bytes();
            let found = |bytes: &[u8]| bytes.windows(needle.len()).any(|window| window == needle);
            assert!(
                !found(&key) && !found(&value),
                "{} holds a secret",
                String::from_utf8_lossy(&tree)
            );
        }
    }
    server.stop().await;
}
