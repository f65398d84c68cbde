//! The device's HTTP flows (sync, report, chaff) against a test double of the key server on
//! 127.0.0.1:0, with real sled databases, checking the transparency log against what the
//! double received.

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use indicatif::ProgressBar;
use p256::ecdsa::SigningKey;
use rand_core::OsRng;
use support::{Double, GOOD_CODE};
use varsel_device::clock::ManualClock;
use varsel_device::settings::{Consent, Settings, TrustedKeySetting};
use varsel_device::sighting::Sighting;
use varsel_device::store::Store;
use varsel_device::sync::{ExportHandler, VerifiedExport};
use varsel_device::transparency::Purpose;
use varsel_device::{Clock, Device, Error};
use varsel_protocol::export::{
    Compression, Export, ExportKey, ExportSigner, ReportType, TrustedKey, write_archive,
};
use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::keys::{
    AssociatedEncryptedMetadata, DiagnosisKey, RollingProximityIdentifier,
};

/// 2023-11-14 22:13:20 UTC.
const T0: u64 = 1_700_000_000;
const DAY: u64 = 86_400;

struct Setup {
    _dir: tempfile::TempDir,
    clock: ManualClock,
    device: Device,
    double: Double,
    signer: ExportSigner,
}

async fn setup() -> Setup {
    let double = Double::start().await;
    let signer = ExportSigner::new(SigningKey::random(&mut OsRng), "XX", "v1");
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let device = Device::open(dir.path(), Arc::new(clock.clone())).unwrap();
    let pem = TrustedKey::any_id(signer.verifying_key()).to_pem().unwrap();
    let settings = Settings {
        server_url: Some(double.url()),
        trusted_keys: vec![TrustedKeySetting {
            pem,
            key_id: Some("XX".into()),
            key_version: Some("v1".into()),
        }],
        ..Settings::default()
    };
    device.store().set_settings(&settings).unwrap();
    Setup {
        _dir: dir,
        clock,
        device,
        double,
        signer,
    }
}

fn grant_upload(device: &Device) {
    let consent = Consent {
        upload: true,
        research: false,
    };
    device.store().set_consent(consent).unwrap();
}

fn export_zip(signer: &ExportSigner, keys: usize, seed: u8) -> Vec<u8> {
    let keys = (0..keys)
        .map(|i| ExportKey {
            key: DiagnosisKey::from_bytes([seed ^ i as u8; 16]),
            transmission_risk_level: 0,
            rolling_start: EnIntervalNumber::new(2_833_056),
            rolling_period: 144,
            report_type: Some(ReportType::ConfirmedTest),
            days_since_onset_of_symptoms: Some(0),
        })
        .collect();
    let export = Export {
        start_timestamp: T0 - 3_600,
        end_timestamp: T0,
        region: "XX".into(),
        batch_num: 1,
        batch_size: 1,
        keys,
        ..Export::default()
    };
    write_archive(export, std::slice::from_ref(signer), Compression::Deflated).unwrap()
}

/// Records what sync hands over; fails on one path when told to.
#[derive(Default)]
struct Recorder {
    seen: Vec<(String, usize)>,
    published: Vec<u64>,
    fail_on: Option<String>,
    finished: usize,
}

impl ExportHandler for Recorder {
    fn handle(&mut self, _store: &Store, export: VerifiedExport<'_>) -> Result<u64, Error> {
        if self.fail_on.as_deref() == Some(export.path) {
            return Err(Error::Radio("simulated failure".into()));
        }
        self.seen
            .push((export.path.to_owned(), export.archive.export.keys.len()));
        self.published.push(export.published_at);
        Ok(0)
    }

    fn finish(&mut self, _store: &Store) -> Result<(), Error> {
        self.finished += 1;
        Ok(())
    }
}

#[tokio::test]
async fn sync_processes_each_verified_export_once() {
    let s = setup().await;
    s.double.put_file("a/1.zip", export_zip(&s.signer, 3, 1));
    s.double.put_file("a/2.zip", export_zip(&s.signer, 5, 2));
    s.double
        .put_file("index.txt", b"a/1.zip\na/2.zip\n".to_vec());
    let client = s.device.client().unwrap();

    let mut recorder = Recorder::default();
    let report = s
        .device
        .sync(&client, &mut recorder, &ProgressBar::hidden())
        .await
        .unwrap();
    assert_eq!(report.listed, 2);
    assert_eq!(report.processed.len(), 2);
    assert!(report.rejected.is_empty());
    assert_eq!(
        recorder.seen,
        vec![("a/1.zip".into(), 3), ("a/2.zip".into(), 5)]
    );

    let again = s
        .device
        .sync(&client, &mut recorder, &ProgressBar::hidden())
        .await
        .unwrap();
    assert_eq!(again.already_processed, 2);
    assert!(again.processed.is_empty());
    assert_eq!(recorder.seen.len(), 2, "nothing handed over twice");
    let downloads = s.double.received();
    assert_eq!(
        downloads.len(),
        4,
        "two indexes and two exports: {downloads:?}"
    );
}

#[tokio::test]
async fn exports_count_as_published_at_their_end_or_their_download_if_earlier() {
    let s = setup().await;
    let client = s.device.client().unwrap();
    let mut recorder = Recorder::default();

    // Each file of `export_zip` ends at T0.
    s.double.put_file("a/1.zip", export_zip(&s.signer, 1, 1));
    s.double.put_file("index.txt", b"a/1.zip\n".to_vec());
    s.clock.set(T0 - 600);
    s.device
        .sync(&client, &mut recorder, &ProgressBar::hidden())
        .await
        .unwrap();

    s.double.put_file("a/2.zip", export_zip(&s.signer, 1, 2));
    s.double
        .put_file("index.txt", b"a/1.zip\na/2.zip\n".to_vec());
    s.clock.set(T0 + 3_600);
    s.device
        .sync(&client, &mut recorder, &ProgressBar::hidden())
        .await
        .unwrap();
    assert_eq!(recorder.published, vec![T0 - 600, T0]);
}

#[tokio::test]
async fn sync_rejects_untrusted_and_broken_exports_and_retries_them_later() {
    let s = setup().await;
    let stranger = ExportSigner::new(SigningKey::random(&mut OsRng), "XX", "v1");
    s.double.put_file("good.zip", export_zip(&s.signer, 2, 1));
    s.double.put_file("forged.zip", export_zip(&stranger, 2, 2));
    s.double
        .put_file("broken.zip", b"PK not really a zip".to_vec());
    s.double.put_file(
        "index.txt",
        b"good.zip\nforged.zip\nbroken.zip\nmissing.zip".to_vec(),
    );
    let client = s.device.client().unwrap();

    let mut recorder = Recorder::default();
    let report = s
        .device
        .sync(&client, &mut recorder, &ProgressBar::hidden())
        .await
        .unwrap();
    assert_eq!(recorder.seen, vec![("good.zip".into(), 2)]);
    let rejected: Vec<&str> = report.rejected.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(rejected, ["forged.zip", "broken.zip", "missing.zip"]);
    assert!(report.rejected[0].reason.contains("no signature verifies"));
    assert!(report.rejected[2].reason.contains("HTTP 404"));

    s.double.put_file("forged.zip", export_zip(&s.signer, 4, 2));
    let report = s
        .device
        .sync(&client, &mut recorder, &ProgressBar::hidden())
        .await
        .unwrap();
    assert_eq!(report.processed.len(), 1, "the corrected file is taken");
    assert_eq!(recorder.seen[1], ("forged.zip".into(), 4));
}

#[tokio::test]
async fn interrupted_sync_resumes_where_it_stopped() {
    let s = setup().await;
    for i in 1..=3u8 {
        s.double
            .put_file(&format!("{i}.zip"), export_zip(&s.signer, 1, i));
    }
    s.double
        .put_file("index.txt", b"1.zip\n2.zip\n3.zip\n".to_vec());
    let client = s.device.client().unwrap();

    let mut failing = Recorder {
        fail_on: Some("2.zip".into()),
        ..Recorder::default()
    };
    let outcome = s
        .device
        .sync(&client, &mut failing, &ProgressBar::hidden())
        .await;
    assert!(outcome.is_err());
    assert!(s.device.store().export_processed("1.zip").unwrap());
    assert!(!s.device.store().export_processed("2.zip").unwrap());

    let mut recorder = Recorder::default();
    let report = s
        .device
        .sync(&client, &mut recorder, &ProgressBar::hidden())
        .await
        .unwrap();
    assert_eq!(report.already_processed, 1);
    let paths: Vec<&str> = recorder.seen.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["2.zip", "3.zip"]);
    assert_eq!(recorder.finished, 1);
}

#[tokio::test]
async fn a_bad_index_changes_nothing() {
    let s = setup().await;
    s.double
        .put_file("index.txt", b"ok.zip\n../../etc/passwd\n".to_vec());
    let client = s.device.client().unwrap();
    let outcome = s
        .device
        .sync(&client, &mut Recorder::default(), &ProgressBar::hidden())
        .await;
    assert!(
        matches!(outcome, Err(Error::BadResponse { .. })),
        "{outcome:?}"
    );
    assert!(s.device.store().export_records().unwrap().is_empty());
    assert_eq!(s.double.received().len(), 1, "only the index was fetched");
}

#[tokio::test]
async fn oversized_answers_are_refused() {
    let s = setup().await;
    s.double
        .put_file("index.txt", "a.zip\n".repeat(200_000).into_bytes());
    let outcome = s.device.sync_and_match().await;
    match outcome {
        Err(Error::Transport { reason, .. }) => assert!(reason.contains("larger than")),
        other => panic!("{other:?}"),
    }
    assert!(s.device.store().export_records().unwrap().is_empty());
}

#[tokio::test]
async fn a_second_report_sends_the_revision_token() {
    let s = setup().await;
    grant_upload(&s.device);
    let client = s.device.client().unwrap();
    s.device.report(&client, GOOD_CODE).await.unwrap();
    s.device.report(&client, GOOD_CODE).await.unwrap();
    let received = s.double.received();
    let publishes: Vec<serde_json::Value> = received
        .iter()
        .filter(|r| r.path == "/v1/publish")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert!(publishes[0].get("revisionToken").is_none());
    assert_eq!(publishes[1]["revisionToken"], "revision-1");
    let keys = publishes[1]["temporaryExposureKeys"].as_array().unwrap();
    assert_eq!(
        keys.len(),
        2,
        "the day's first key and the one started after the report"
    );
}

#[tokio::test]
async fn report_uploads_the_last_14_days_and_starts_a_new_key() {
    let s = setup().await;
    grant_upload(&s.device);
    for _ in 0..20 {
        s.device.store().current_key(s.clock.now()).unwrap();
        s.clock.advance(Duration::from_secs(DAY));
    }
    let today_key = s.device.store().current_key(s.clock.now()).unwrap();
    let client = s.device.client().unwrap();

    let outcome = s.device.report(&client, GOOD_CODE).await.unwrap();
    assert_eq!(outcome.keys, 14);
    assert_eq!(outcome.inserted, Some(14));
    assert_eq!(outcome.test_type.as_deref(), Some("confirmed"));

    let published = s.double.state.lock().unwrap().published.clone();
    assert_eq!(published.len(), 1);
    let today = EnIntervalNumber::from_unix_seconds(s.clock.now())
        .unwrap()
        .day_start();
    let oldest = today.saturating_sub(13 * 144);
    assert!(
        published[0]
            .iter()
            .all(|key| key.rolling_start >= oldest && key.rolling_start <= today)
    );
    assert!(
        published[0]
            .iter()
            .any(|key| key.key == today_key.tek.clone().into_diagnosis_key())
    );

    let state = s.device.store().upload_state().unwrap();
    assert_eq!(state.revision_token.as_deref(), Some("revision-1"));
    let fresh = s.device.store().current_key(s.clock.now()).unwrap();
    assert_ne!(fresh.tek, today_key.tek, "a new key starts after a report");
    assert_eq!(fresh.window.start(), today);
}

#[tokio::test]
async fn a_refused_code_changes_nothing() {
    let s = setup().await;
    grant_upload(&s.device);
    let key = s.device.store().current_key(T0).unwrap();
    let client = s.device.client().unwrap();
    let outcome = s.device.report(&client, "00000000").await;
    match outcome {
        Err(Error::Refused { status, code, .. }) => {
            assert_eq!(status, 400);
            assert_eq!(code.as_deref(), Some("code_invalid"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.device.store().current_key(T0).unwrap(), key);
    assert_eq!(
        s.device.store().upload_state().unwrap().revision_token,
        None
    );
    assert_eq!(
        s.double.received().len(),
        1,
        "stopped after the verify step"
    );
}

#[tokio::test]
async fn without_consent_only_sync_downloads_leave_the_device() {
    let s = setup().await;
    s.double.put_file("1.zip", export_zip(&s.signer, 1, 1));
    s.double.put_file("index.txt", b"1.zip\n".to_vec());
    s.device
        .store()
        .set_settings(&Settings {
            chaff_per_day: 24.0,
            ..s.device.store().settings().unwrap()
        })
        .unwrap();
    let client = s.device.client().unwrap();

    s.device
        .sync(&client, &mut Recorder::default(), &ProgressBar::hidden())
        .await
        .unwrap();
    let refused = s.device.report(&client, GOOD_CODE).await;
    assert!(
        matches!(refused, Err(Error::NoConsent { .. })),
        "{refused:?}"
    );
    assert!(matches!(
        s.device.send_chaff(&client).await,
        Err(Error::NoConsent { .. })
    ));
    for _ in 0..10 {
        s.clock.advance(Duration::from_secs(DAY));
        assert!(!s.device.chaff_if_due(&client).await.unwrap());
    }
    let direct = client
        .post_json(Purpose::Report, "api/verify", b"{}".to_vec(), false, 1024)
        .await;
    assert!(matches!(direct, Err(Error::NoConsent { .. })));
    let research = client
        .post_json(Purpose::Research, "research", b"{}".to_vec(), false, 1024)
        .await;
    assert!(matches!(research, Err(Error::NoConsent { .. })));
    let message = research.unwrap_err().to_string();
    assert!(message.contains("consent grant research"), "{message}");

    let received = s.double.received();
    assert!(!received.is_empty());
    for request in &received {
        assert_eq!(request.method, "GET");
        assert!(request.path.starts_with("/exports/"), "{}", request.path);
    }
    let log = s.device.store().transparency_log().unwrap();
    assert!(log.iter().all(|entry| entry.purpose == Purpose::Sync));
    assert_eq!(log.len(), received.len());
}

#[tokio::test]
async fn the_log_shows_everything_that_left_the_device_and_no_identifier_leaves() {
    let s = setup().await;
    grant_upload(&s.device);
    s.double.put_file("1.zip", export_zip(&s.signer, 2, 1));
    s.double.put_file("index.txt", b"1.zip\n".to_vec());
    let heard = Sighting {
        rpi: RollingProximityIdentifier::from_bytes([0x5a; 16]),
        aem: AssociatedEncryptedMetadata::from_bytes([9, 9, 9, 9]),
        rssi: -61,
        time: T0,
    };
    s.device.record(&[heard]).unwrap();
    let client = s.device.client().unwrap();

    s.device
        .sync(&client, &mut Recorder::default(), &ProgressBar::hidden())
        .await
        .unwrap();
    s.device.report(&client, GOOD_CODE).await.unwrap();
    s.device.send_chaff(&client).await.unwrap();

    let received = s.double.received();
    let log = s.device.store().transparency_log().unwrap();
    assert_eq!(log.len(), received.len());
    for (entry, request) in log.iter().zip(&received) {
        assert_eq!(entry.method, request.method);
        assert_eq!(entry.route, request.path);
        assert_eq!(entry.bytes, request.bytes);
        assert_eq!(entry.host, s.double.addr.to_string());
        assert_eq!(entry.purpose == Purpose::Chaff, request.chaff);
    }
    let purposes: Vec<Purpose> = log.iter().map(|entry| entry.purpose).collect();
    use Purpose::{Chaff, Report, Sync};
    assert_eq!(
        purposes,
        [Sync, Sync, Report, Report, Report, Chaff, Chaff, Chaff]
    );

    let rpi_forms = [
        hex::encode(heard.rpi.as_bytes()),
        base64::engine::general_purpose::STANDARD.encode(heard.rpi.as_bytes()),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(heard.rpi.as_bytes()),
    ];
    for request in &received {
        let body = String::from_utf8_lossy(&request.body);
        for form in &rpi_forms {
            assert!(
                !body.contains(form.as_str()),
                "a heard identifier left the device"
            );
        }
        let raw = heard.rpi.as_bytes();
        assert!(!request.body.windows(16).any(|window| window == raw));
    }
}

#[tokio::test]
async fn chaff_looks_like_a_report_on_the_wire() {
    let s = setup().await;
    grant_upload(&s.device);
    for _ in 0..5 {
        s.device.store().current_key(s.clock.now()).unwrap();
        s.clock.advance(Duration::from_secs(DAY));
    }
    let client = s.device.client().unwrap();
    s.device.send_chaff(&client).await.unwrap();
    s.device.report(&client, GOOD_CODE).await.unwrap();

    let received = s.double.received();
    let (real, chaff): (Vec<_>, Vec<_>) = received.iter().partition(|r| !r.chaff);
    assert_eq!(real.len(), 3);
    assert_eq!(chaff.len(), 3);
    let bounds = [(512, 768), (2_048, 2_304), (8_192, 8_448)];
    for ((real, chaff), (low, high)) in real.iter().zip(&chaff).zip(bounds) {
        assert_eq!(real.path, chaff.path);
        for request in [real, chaff] {
            assert!(
                (low..=high).contains(&request.bytes),
                "{} {}",
                request.path,
                request.bytes
            );
        }
    }
    let keys_of = |request: &support::Received| {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        body["temporaryExposureKeys"].as_array().unwrap().len()
    };
    assert_eq!(keys_of(real[2]), keys_of(chaff[2]), "same number of keys");
}

#[tokio::test]
async fn chaff_follows_its_schedule() {
    let s = setup().await;
    grant_upload(&s.device);
    let client = s.device.client().unwrap();
    assert!(
        !s.device.chaff_if_due(&client).await.unwrap(),
        "first call schedules"
    );
    let due = s
        .device
        .store()
        .upload_state()
        .unwrap()
        .next_chaff_at
        .unwrap();
    assert!(due > T0);

    s.clock.set(due - 1);
    assert!(!s.device.chaff_if_due(&client).await.unwrap());
    assert!(s.double.received().is_empty());
    s.clock.set(due);
    assert!(s.device.chaff_if_due(&client).await.unwrap());
    assert_eq!(s.double.received().len(), 3);
    let next = s
        .device
        .store()
        .upload_state()
        .unwrap()
        .next_chaff_at
        .unwrap();
    assert!(next > due);
}
