//! The GAEN cryptography v1.2 test vectors and the upload-HMAC vectors, read from
//! `../shared/vectors/` (sources named in its README).

mod common;

use serde::Deserialize;
use varsel_protocol::interval::{EK_ROLLING_PERIOD, EnIntervalNumber};
use varsel_protocol::keys::DiagnosisKey;
use varsel_protocol::keys::{Metadata, TemporaryExposureKey};
use varsel_protocol::tekmac::{self, HmacKey, TekMac, UploadKey};

#[derive(Deserialize)]
struct CryptoVectors {
    key_generation_time_unix: u64,
    tek: String,
    rolling_start_interval_number: u32,
    rolling_period: u32,
    rpik: String,
    aemk: String,
    metadata: String,
    rpis: Vec<IdentifierVector>,
}

#[derive(Deserialize)]
struct IdentifierVector {
    interval_number: u32,
    rpi: String,
    aem: String,
}

fn crypto_vectors() -> CryptoVectors {
    serde_json::from_slice(&common::read_shared("vectors/en-crypto-v1.2.json")).unwrap()
}

#[test]
fn en_crypto_v1_2_vectors() {
    let vectors = crypto_vectors();
    let tek = TemporaryExposureKey::from_bytes(common::hex_array(&vectors.tek));
    let start = EnIntervalNumber::from_unix_seconds(vectors.key_generation_time_unix).unwrap();
    assert_eq!(start.value(), vectors.rolling_start_interval_number);
    assert_eq!(vectors.rolling_period, EK_ROLLING_PERIOD);

    let rpik = tek.rpik();
    let aemk = tek.aemk();
    assert_eq!(hex::encode(rpik.expose_secret()), vectors.rpik);
    assert_eq!(hex::encode(aemk.expose_secret()), vectors.aemk);

    let metadata = Metadata::from_bytes(common::hex_array(&vectors.metadata));
    assert_eq!(metadata, Metadata::v1(8));
    assert_eq!(hex::encode(metadata.to_bytes()), vectors.metadata);

    let batch = rpik.rpis(start);
    assert_eq!(vectors.rpis.len(), 144);
    for (offset, (expected, rpi)) in (0u32..).zip(vectors.rpis.iter().zip(batch.iter())) {
        assert_eq!(expected.interval_number, start.value() + offset);
        assert_eq!(
            hex::encode(rpi.as_bytes()),
            expected.rpi,
            "RPI of {}",
            expected.interval_number
        );
        let single = rpik.rpi(EnIntervalNumber::new(expected.interval_number));
        assert_eq!(single, *rpi);
        let aem = aemk.encrypt(rpi, &metadata);
        assert_eq!(
            hex::encode(aem.to_bytes()),
            expected.aem,
            "AEM of {}",
            expected.interval_number
        );
        assert_eq!(aemk.decrypt(rpi, &aem), metadata);
    }
}

#[test]
fn diagnosis_key_derives_the_same_identifiers() {
    let vectors = crypto_vectors();
    let tek = TemporaryExposureKey::from_bytes(common::hex_array(&vectors.tek));
    let start = EnIntervalNumber::new(vectors.rolling_start_interval_number);
    let from_tek = tek.rpik().rpis(start);
    let diagnosis = tek.into_diagnosis_key();
    assert_eq!(diagnosis.rpik().rpis(start), from_tek);
}

#[derive(Deserialize)]
struct HmacVectors {
    secret_hex: String,
    cases: Vec<HmacCase>,
}

#[derive(Deserialize)]
struct HmacCase {
    keys: Vec<HmacKeyVector>,
    cleartext: String,
    hmac: String,
}

#[derive(Deserialize)]
struct HmacKeyVector {
    key: String,
    rolling_start: u32,
    rolling_period: u32,
    transmission_risk: Option<u8>,
}

#[test]
fn tek_hmac_vectors() {
    use base64::Engine;
    let vectors: HmacVectors =
        serde_json::from_slice(&common::read_shared("vectors/tek-hmac.json")).unwrap();
    let secret = HmacKey::new(hex::decode(&vectors.secret_hex).unwrap()).unwrap();
    assert_eq!(vectors.cases.len(), 3);

    for case in &vectors.cases {
        let four_part = case.keys.iter().all(|key| key.transmission_risk.is_some());
        let keys: Vec<UploadKey> = case
            .keys
            .iter()
            .map(|key| UploadKey {
                key: DiagnosisKey::from_slice(
                    &base64::engine::general_purpose::STANDARD
                        .decode(&key.key)
                        .unwrap(),
                )
                .unwrap(),
                rolling_start: EnIntervalNumber::new(key.rolling_start),
                rolling_period: key.rolling_period,
                transmission_risk: key.transmission_risk.unwrap_or(0),
            })
            .collect();
        let expected = TekMac::from_base64(&case.hmac).unwrap();

        let computed = if four_part {
            assert_eq!(tekmac::four_part_cleartext(&keys), case.cleartext);
            TekMac::compute(&secret, &keys)
        } else {
            assert_eq!(tekmac::three_part_cleartext(&keys), case.cleartext);
            TekMac::compute_three_part(&secret, &keys)
        };
        assert_eq!(computed.to_base64(), case.hmac);
        assert_eq!(expected.verify(&secret, &keys), Ok(()));
    }
}

#[test]
fn three_part_tekmac_needs_zero_risks() {
    let secret = HmacKey::new(vec![1; 16]).unwrap();
    let mut keys = vec![UploadKey {
        key: DiagnosisKey::from_bytes([5; 16]),
        rolling_start: EnIntervalNumber::new(100),
        rolling_period: 144,
        transmission_risk: 0,
    }];
    let three_part = TekMac::compute_three_part(&secret, &keys);
    assert_eq!(three_part.verify(&secret, &keys), Ok(()));

    keys[0].transmission_risk = 4;
    assert!(three_part.verify(&secret, &keys).is_err());
    assert_eq!(
        TekMac::compute(&secret, &keys).verify(&secret, &keys),
        Ok(())
    );
}

#[test]
fn tekmac_rejects_changed_keys_and_secrets() {
    let secret = HmacKey::new(vec![1; 16]).unwrap();
    let keys = [UploadKey {
        key: DiagnosisKey::from_bytes([5; 16]),
        rolling_start: EnIntervalNumber::new(100),
        rolling_period: 144,
        transmission_risk: 2,
    }];
    let tag = TekMac::compute(&secret, &keys);

    let other_secret = HmacKey::new(vec![2; 16]).unwrap();
    assert!(tag.verify(&other_secret, &keys).is_err());
    let mut shorter = keys;
    shorter[0].rolling_period = 143;
    assert!(tag.verify(&secret, &shorter).is_err());
    assert!(tag.verify(&secret, &[]).is_err());
}
