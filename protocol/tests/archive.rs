//! Archive-level checks of the export reader: entries, sizes and signature handling.

use std::io::{Cursor, Write};

use varsel_protocol::Error;
use varsel_protocol::export::{
    Compression, Export, ExportArchive, ExportKey, ExportLimits, ExportSigner, SignatureStatus,
    TrustedKey, TrustedKeys, encode_export_bin, write_archive,
};
use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::keys::DiagnosisKey;

fn signer(seed: u8, id: &str) -> ExportSigner {
    ExportSigner::new(
        p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap(),
        id,
        "v1",
    )
}

fn sample_export(keys: usize) -> Export {
    Export {
        start_timestamp: 1_700_000_000,
        end_timestamp: 1_700_003_600,
        region: "NO".into(),
        batch_num: 1,
        batch_size: 1,
        keys: (0..keys)
            .map(|i| ExportKey {
                key: DiagnosisKey::from_bytes([(keys - i) as u8; 16]),
                transmission_risk_level: 0,
                rolling_start: EnIntervalNumber::new(2_833_344),
                rolling_period: 144,
                report_type: None,
                days_since_onset_of_symptoms: None,
            })
            .collect(),
        ..Export::default()
    }
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        writer
            .start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

#[test]
fn writer_sorts_keys() {
    let zip = write_archive(sample_export(5), &[signer(1, "a")], Compression::Deflated).unwrap();
    let archive = ExportArchive::read(&zip, &ExportLimits::default()).unwrap();
    let keys: Vec<_> = archive.export.keys.iter().map(|key| key.key).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(keys.len(), 5);
}

#[test]
fn rotation_keeps_old_and_new_keys_valid() {
    let old = signer(1, "310");
    let new = ExportSigner::new(
        p256::ecdsa::SigningKey::from_slice(&[2; 32]).unwrap(),
        "310",
        "v2",
    );
    let zip = write_archive(
        sample_export(3),
        &[old.clone(), new.clone()],
        Compression::Stored,
    )
    .unwrap();
    let archive = ExportArchive::read(&zip, &ExportLimits::default()).unwrap();
    assert_eq!(archive.export.signature_infos.len(), 2);

    let only_new: TrustedKeys = [TrustedKey::any_id(new.verifying_key()).pinned("310", "v2")]
        .into_iter()
        .collect();
    let checks = archive.check_signatures(&only_new);
    assert_eq!(checks[0].status, SignatureStatus::UnknownKey);
    assert_eq!(checks[1].status, SignatureStatus::Verified);
    assert_eq!(archive.verify(&only_new), Ok(()));
}

#[test]
fn writer_needs_a_signer() {
    assert_eq!(
        write_archive(sample_export(1), &[], Compression::Stored),
        Err(Error::NoSigner)
    );
}

#[test]
fn archive_must_hold_exactly_the_two_entries() {
    let bin = encode_export_bin(&sample_export(2));
    let only_bin = zip_of(&[("export.bin", &bin)]);
    assert!(matches!(
        ExportArchive::read(&only_bin, &ExportLimits::default()),
        Err(Error::ArchiveEntries { .. })
    ));
    let extra = zip_of(&[("export.bin", &bin), ("export.sig", b""), ("extra", b"x")]);
    assert!(matches!(
        ExportArchive::read(&extra, &ExportLimits::default()),
        Err(Error::ArchiveEntries { .. })
    ));
    let renamed = zip_of(&[("export.bin", &bin), ("export.sig2", b"")]);
    assert!(matches!(
        ExportArchive::read(&renamed, &ExportLimits::default()),
        Err(Error::ArchiveEntries { .. })
    ));
}

#[test]
fn unsigned_archive_parses_but_does_not_verify() {
    let bin = encode_export_bin(&sample_export(2));
    let zip = zip_of(&[("export.bin", &bin), ("export.sig", b"")]);
    let archive = ExportArchive::read(&zip, &ExportLimits::default()).unwrap();
    let trusted: TrustedKeys = [TrustedKey::any_id(signer(1, "a").verifying_key())]
        .into_iter()
        .collect();
    assert_eq!(archive.verify(&trusted), Err(Error::SignatureNotVerified));
}

#[test]
fn compression_bombs_are_refused() {
    let mut bin = encode_export_bin(&sample_export(0));
    bin.resize(8 << 20, 0);
    let zip = zip_of(&[("export.bin", &bin), ("export.sig", b"")]);
    assert!(zip.len() < 64 << 10, "zeros compress well");
    let limits = ExportLimits {
        max_export_bin_bytes: 1 << 20,
        ..ExportLimits::default()
    };
    assert!(matches!(
        ExportArchive::read(&zip, &limits),
        Err(Error::TooLarge {
            what: "export.bin",
            ..
        })
    ));
}

#[test]
fn oversized_archives_are_refused_before_parsing() {
    let limits = ExportLimits {
        max_archive_bytes: 10,
        ..ExportLimits::default()
    };
    assert!(matches!(
        ExportArchive::read(&[0; 11], &limits),
        Err(Error::TooLarge {
            what: "export archive",
            ..
        })
    ));
    assert!(matches!(
        ExportArchive::read(b"not a zip", &ExportLimits::default()),
        Err(Error::Zip(_))
    ));
}

#[test]
fn intervals_beyond_int32_cannot_be_written() {
    let mut export = sample_export(1);
    export.keys[0].rolling_start = EnIntervalNumber::new(u32::MAX);
    assert!(matches!(
        write_archive(export, &[signer(1, "a")], Compression::Stored),
        Err(Error::FieldOutOfRange { .. })
    ));
}
