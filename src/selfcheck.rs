//! `varsel selfcheck`: exercises the protocol end to end with fresh keys: a day of identifiers,
//! an advertisement, an upload HMAC and a signed export, each checked as it is made.

use anyhow::{Result, ensure};
use serde_json::{Value, json};
use varsel_protocol::advertisement::Advertisement;
use varsel_protocol::export::{
    Compression, Export, ExportArchive, ExportKey, ExportLimits, ExportSigner, ReportType,
    TrustedKey, TrustedKeys, write_archive,
};
use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::keys::{Metadata, TemporaryExposureKey};
use varsel_protocol::tekmac::{HmacKey, TekMac, UploadKey};

/// Runs every step and returns what it saw.
pub fn run() -> Result<Value> {
    let mut rng = rand::rngs::OsRng;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let today = EnIntervalNumber::from_unix_seconds(now.as_secs())?.day_start();

    // A day's key and its identifiers, as a phone would broadcast them.
    let tek = TemporaryExposureKey::generate(&mut rng);
    let identifiers = tek.rpik().rpis(today);
    let metadata = Metadata::v1(-8);
    let aem = tek.aemk().encrypt(&identifiers[0], &metadata);
    let advertisement = Advertisement {
        rpi: identifiers[0],
        aem,
    };
    let heard = Advertisement::from_payload(&advertisement.to_payload())?;
    ensure!(heard == advertisement, "advertisement did not round-trip");
    ensure!(
        tek.aemk().decrypt(&heard.rpi, &heard.aem) == metadata,
        "AEM did not decrypt"
    );

    // The upload HMAC a reporting phone would send to the verification server.
    let secret = HmacKey::generate(&mut rng);
    let key = tek.into_diagnosis_key();
    let upload = [UploadKey {
        key,
        rolling_start: today,
        rolling_period: 144,
        transmission_risk: 0,
    }];
    let tekmac = TekMac::compute(&secret, &upload);
    ensure!(
        tekmac.verify(&secret, &upload).is_ok(),
        "tekmac did not verify"
    );

    // A signed export holding the key, read back and verified as a phone would.
    let signer = ExportSigner::new(p256::ecdsa::SigningKey::random(&mut rng), "demo", "v1");
    let export = Export {
        start_timestamp: today.unix_seconds(),
        end_timestamp: today.unix_seconds() + 3600,
        region: "XX".into(),
        batch_num: 1,
        batch_size: 1,
        keys: vec![ExportKey {
            key,
            transmission_risk_level: 0,
            rolling_start: today,
            rolling_period: 144,
            report_type: Some(ReportType::ConfirmedTest),
            days_since_onset_of_symptoms: Some(0),
        }],
        ..Export::default()
    };
    let zip = write_archive(export, std::slice::from_ref(&signer), Compression::Deflated)?;
    let archive = ExportArchive::read(&zip, &ExportLimits::default())?;
    let trusted: TrustedKeys = [TrustedKey::any_id(signer.verifying_key())]
        .into_iter()
        .collect();
    archive.verify(&trusted)?;
    let matched = archive.export.keys[0].key.rpik().rpis(today) == identifiers;
    ensure!(
        matched,
        "published key did not re-derive the broadcast identifiers"
    );

    Ok(json!({
        "rolling_start_interval_number": today.value(),
        "identifiers_derived": identifiers.len(),
        "advertisement_bytes": advertisement.to_payload().len(),
        "tekmac_verified": true,
        "export_bytes": zip.len(),
        "export_signature_verified": true,
        "published_key_matches_broadcast": matched,
    }))
}
