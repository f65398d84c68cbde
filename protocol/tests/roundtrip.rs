//! Property tests: every wire format round-trips, and parsers refuse damaged input without
//! panicking.

use proptest::prelude::*;
use varsel_protocol::advertisement::Advertisement;
use varsel_protocol::export::wire::decode_export_bin_reference;
use varsel_protocol::export::{
    Compression, Export, ExportArchive, ExportKey, ExportLimits, ExportSigner, ReportType,
    TrustedKey, TrustedKeys, encode_export_bin, parse_export_bin, write_archive,
};
use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::keys::{
    AssociatedEncryptedMetadata, DiagnosisKey, Metadata, RollingProximityIdentifier,
    TemporaryExposureKey,
};
use varsel_protocol::tekmac::{HmacKey, TekMac, UploadKey};

fn report_type() -> impl Strategy<Value = Option<ReportType>> {
    prop::option::of((0..=5i32).prop_map(|value| ReportType::from_i32(value).unwrap()))
}

fn export_key() -> impl Strategy<Value = ExportKey> {
    (
        any::<[u8; 16]>(),
        0..=8i32,
        0..=i32::MAX as u32,
        1..=144u32,
        report_type(),
        prop::option::of(-14..=14i32),
    )
        .prop_map(|(key, risk, start, period, report_type, onset)| ExportKey {
            key: DiagnosisKey::from_bytes(key),
            transmission_risk_level: risk,
            rolling_start: EnIntervalNumber::new(start),
            rolling_period: period,
            report_type,
            days_since_onset_of_symptoms: onset,
        })
}

fn export() -> impl Strategy<Value = Export> {
    (
        any::<u64>(),
        any::<u64>(),
        "[A-Z]{0,3}",
        1..=4i32,
        prop::collection::vec(export_key(), 0..40),
        prop::collection::vec(export_key(), 0..5),
    )
        .prop_map(|(start, end, region, batch, keys, revised_keys)| Export {
            start_timestamp: start,
            end_timestamp: end,
            region,
            batch_num: batch,
            batch_size: batch,
            signature_infos: Vec::new(),
            keys,
            revised_keys,
        })
}

fn signer() -> ExportSigner {
    let key = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
    ExportSigner::new(key, "999", "v1")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn export_bin_round_trips(export in export()) {
        let bytes = encode_export_bin(&export);
        let parsed = parse_export_bin(&bytes, &ExportLimits::default()).unwrap();
        let reference = decode_export_bin_reference(&bytes, &ExportLimits::default()).unwrap();
        prop_assert_eq!(&parsed, &reference);
        prop_assert_eq!(parsed, export);
    }

    #[test]
    fn archive_round_trips_and_verifies(mut export in export(), stored in any::<bool>()) {
        let compression = if stored { Compression::Stored } else { Compression::Deflated };
        let signer = signer();
        let signers = std::slice::from_ref(&signer);
        let zip = write_archive(export.clone(), signers, compression).unwrap();
        let archive = ExportArchive::read(&zip, &ExportLimits::default()).unwrap();

        export.keys.sort_by_key(|key| key.key);
        export.revised_keys.sort_by_key(|key| key.key);
        export.signature_infos = vec![signer.info().clone()];
        prop_assert_eq!(&archive.export, &export);

        let trusted: TrustedKeys =
            [TrustedKey::any_id(signer.verifying_key()).pinned("999", "v1")].into_iter().collect();
        prop_assert_eq!(archive.verify(&trusted), Ok(()));
    }

    #[test]
    fn damaged_archives_never_panic(
        export in export(),
        position in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut zip = write_archive(export, &[signer()], Compression::Deflated).unwrap();
        let index = position.index(zip.len());
        zip[index] ^= byte | 1;
        let trusted: TrustedKeys =
            [TrustedKey::any_id(signer().verifying_key())].into_iter().collect();
        if let Ok(archive) = ExportArchive::read(&zip, &ExportLimits::default()) {
            // A flip inside the zip's own metadata may leave both entries intact; anything that
            // changes export.bin must break the signature.
            let _ = archive.verify(&trusted);
        }
    }

    #[test]
    fn export_bin_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut input = b"EK Export v1    ".to_vec();
        input.extend_from_slice(&bytes);
        let _ = parse_export_bin(&input, &ExportLimits::default());
        let _ = decode_export_bin_reference(&input, &ExportLimits::default());
    }

    #[test]
    fn advertisement_round_trips(rpi in any::<[u8; 16]>(), aem in any::<[u8; 4]>()) {
        let advertisement = Advertisement {
            rpi: RollingProximityIdentifier::from_bytes(rpi),
            aem: AssociatedEncryptedMetadata::from_bytes(aem),
        };
        let payload = advertisement.to_payload();
        prop_assert_eq!(Advertisement::from_payload(&payload), Ok(advertisement));
        let data = advertisement.to_service_data();
        prop_assert_eq!(Advertisement::from_service_data(0xFD6F, &data), Ok(advertisement));
    }

    #[test]
    fn advertisement_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        let _ = Advertisement::from_payload(&bytes);
    }

    #[test]
    fn metadata_round_trips(bytes in any::<[u8; 4]>()) {
        prop_assert_eq!(Metadata::from_bytes(bytes).to_bytes(), bytes);
    }

    #[test]
    fn aem_round_trips(
        tek in any::<[u8; 16]>(),
        interval in any::<u32>(),
        metadata in any::<[u8; 4]>(),
    ) {
        let tek = TemporaryExposureKey::from_bytes(tek);
        let rpi = tek.rpik().rpi(EnIntervalNumber::new(interval));
        let metadata = Metadata::from_bytes(metadata);
        let aem = tek.aemk().encrypt(&rpi, &metadata);
        prop_assert_eq!(tek.aemk().decrypt(&rpi, &aem), metadata);
    }

    #[test]
    fn tekmac_round_trips(
        secret in prop::collection::vec(any::<u8>(), 16..64),
        keys in prop::collection::vec(
            (any::<[u8; 16]>(), any::<u32>(), 1..=144u32, 0..=8u8),
            0..30,
        ),
    ) {
        let secret = HmacKey::new(secret).unwrap();
        let keys: Vec<UploadKey> = keys
            .into_iter()
            .map(|(key, start, period, risk)| UploadKey {
                key: DiagnosisKey::from_bytes(key),
                rolling_start: EnIntervalNumber::new(start),
                rolling_period: period,
                transmission_risk: risk,
            })
            .collect();
        let tag = TekMac::compute(&secret, &keys);
        let parsed = TekMac::from_base64(&tag.to_base64()).unwrap();
        prop_assert_eq!(parsed.verify(&secret, &keys), Ok(()));
        let mut reversed = keys.clone();
        reversed.reverse();
        prop_assert_eq!(parsed.verify(&secret, &reversed), Ok(()));
        let parsed_secret = HmacKey::from_base64(&secret.to_base64()).unwrap();
        prop_assert_eq!(parsed.verify(&parsed_secret, &keys), Ok(()));
    }
}
