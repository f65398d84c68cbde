//! Real GAEN export files from `../shared/fixtures/` (facts and sources in its README).

mod common;

use sha2::{Digest, Sha256};
use varsel_protocol::Error;
use varsel_protocol::export::{
    ECDSA_P256_SHA256_OID, ExportArchive, ExportLimits, SignatureStatus, TrustedKey, TrustedKeys,
    parse_export_bin,
};

/// The sample's public key, as given in the fixtures README.
const SAMPLE_PUBLIC_KEY: &str = concat!(
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE49JY6kekDgxj3Crm4y6kEHdfoKQFSNDM4mV9cgDb+e5nOAw0",
    "GeRoRThCu9/wX5wDT2QloFoOjl2pGZHI0f3C3w==",
);

fn sample_key() -> TrustedKey {
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(SAMPLE_PUBLIC_KEY)
        .unwrap();
    TrustedKey::from_der(&der).unwrap()
}

fn sample_archive() -> ExportArchive {
    let zip = common::read_shared("fixtures/gaen-sample-export.zip");
    ExportArchive::read(&zip, &ExportLimits::default()).unwrap()
}

#[test]
fn sample_export_facts() {
    let archive = sample_archive();
    assert_eq!(archive.export_bin_len, 3_854);
    assert_eq!(
        hex::encode(archive.export_bin_sha256),
        "1df2d78a603e2f85ca178f2fbd339a587f699bffd9d46a79f61b0448e79fe9f7"
    );

    let export = &archive.export;
    assert_eq!(export.start_timestamp, 1_593_633_600);
    assert_eq!(export.end_timestamp, 1_593_633_900);
    assert_eq!(export.region, "US");
    assert_eq!((export.batch_num, export.batch_size), (1, 1));
    assert_eq!(export.keys.len(), 140);
    assert!(export.revised_keys.is_empty());

    let first = &export.keys[0];
    assert_eq!(
        hex::encode(first.key.as_bytes()),
        "0003d60b188f19856e8b3dd29a0c463b"
    );
    assert_eq!(first.transmission_risk_level, 3);
    assert_eq!(first.rolling_start.value(), 2_653_920);
    assert_eq!(first.rolling_period, 144);

    assert_eq!(archive.signatures.len(), 1);
    let info = &archive.signatures[0].signature_info;
    assert_eq!(info.verification_key_id, "310");
    assert_eq!(info.verification_key_version, "v1");
    assert_eq!(info.signature_algorithm, ECDSA_P256_SHA256_OID);
}

#[test]
fn sample_export_verifies_with_its_key() {
    let archive = sample_archive();
    let trusted: TrustedKeys = [sample_key().pinned("310", "v1")].into_iter().collect();
    assert_eq!(archive.verify(&trusted), Ok(()));
    let checks = archive.check_signatures(&trusted);
    assert_eq!(checks[0].status, SignatureStatus::Verified);
}

#[test]
fn sample_export_fails_with_another_key_or_pin() {
    let archive = sample_archive();
    let stranger = p256::ecdsa::SigningKey::random(&mut rand::thread_rng());
    let trusted: TrustedKeys = [TrustedKey::any_id(*stranger.verifying_key())]
        .into_iter()
        .collect();
    assert_eq!(archive.verify(&trusted), Err(Error::SignatureNotVerified));
    assert_eq!(
        archive.check_signatures(&trusted)[0].status,
        SignatureStatus::Invalid
    );

    let wrong_pin: TrustedKeys = [sample_key().pinned("311", "v1")].into_iter().collect();
    assert_eq!(
        archive.check_signatures(&wrong_pin)[0].status,
        SignatureStatus::UnknownKey
    );
    assert_eq!(
        archive.verify(&TrustedKeys::new()),
        Err(Error::SignatureNotVerified)
    );
}

#[test]
fn tampered_sample_does_not_verify() {
    let archive = sample_archive();
    let mut tampered = archive.clone();
    tampered.export_bin_sha256 = Sha256::digest(b"something else").into();
    let trusted: TrustedKeys = [sample_key()].into_iter().collect();
    assert_eq!(tampered.verify(&trusted), Err(Error::SignatureNotVerified));

    let mut rebatched = archive;
    rebatched.export.batch_num = 2;
    assert_eq!(
        rebatched.check_signatures(&trusted)[0].status,
        SignatureStatus::BatchMismatch
    );
}

#[test]
fn unsigned_export_bin_parses() {
    let bin = common::read_shared("fixtures/gaen-unsigned-export.bin");
    let export = parse_export_bin(&bin, &ExportLimits::default()).unwrap();
    assert!(!export.keys.is_empty());
    for key in &export.keys {
        assert!((1..=144).contains(&key.rolling_period));
    }
}

#[test]
fn export_bin_limits_hold() {
    let bin = common::read_shared("fixtures/gaen-unsigned-export.bin");
    let tight = ExportLimits {
        max_export_bin_bytes: bin.len() - 1,
        ..ExportLimits::default()
    };
    assert!(matches!(
        parse_export_bin(&bin, &tight),
        Err(Error::TooLarge { .. })
    ));
    let few_keys = ExportLimits {
        max_keys: 1,
        ..ExportLimits::default()
    };
    assert!(matches!(
        parse_export_bin(&bin, &few_keys),
        Err(Error::TooManyKeys { .. })
    ));
    assert!(matches!(
        parse_export_bin(&bin[1..], &ExportLimits::default()),
        Err(Error::BadHeader)
    ));
}
