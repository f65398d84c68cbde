//! Runs the fuzz targets' seed corpora (`fuzz/corpus/`) through the same parsers on stable, so
//! that CI exercises them without a fuzzing toolchain. Every seed is a valid input, so each must
//! parse; the fuzzers start from them.

use std::path::PathBuf;

use varsel_protocol::advertisement::Advertisement;
use varsel_protocol::export::wire::decode_export_bin_reference;
use varsel_protocol::export::{
    ExportArchive, ExportLimits, parse_export_bin, parse_signature_list,
};
use varsel_protocol::tekmac::{HmacKey, TekMac};

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
        .iter()
        .map(|path| std::fs::read(path).unwrap())
        .collect()
}

#[test]
fn export_zip_seeds_parse() {
    for seed in seeds("export_zip") {
        ExportArchive::read(&seed, &ExportLimits::default()).unwrap();
    }
}

#[test]
fn export_bin_seeds_parse() {
    for seed in seeds("export_bin") {
        parse_export_bin(&seed, &ExportLimits::default()).unwrap();
    }
}

/// What the `export_bin_stream` target checks, on the same seeds: the one-pass decoder reads
/// each one exactly as the protobuf reference does.
#[test]
fn export_bin_seeds_decode_like_the_reference() {
    let limits = ExportLimits::default();
    for seed in seeds("export_bin") {
        assert_eq!(
            parse_export_bin(&seed, &limits).unwrap(),
            decode_export_bin_reference(&seed, &limits).unwrap()
        );
    }
}

#[test]
fn export_sig_seeds_parse() {
    for seed in seeds("export_sig") {
        assert_eq!(
            parse_signature_list(&seed, &ExportLimits::default())
                .unwrap()
                .len(),
            1
        );
    }
}

#[test]
fn advertisement_seeds_parse() {
    for seed in seeds("advertisement") {
        let from_payload = Advertisement::from_payload(&seed);
        let (uuid, data) = seed.split_first_chunk::<2>().unwrap();
        let from_service_data = Advertisement::from_service_data(u16::from_le_bytes(*uuid), data);
        assert!(from_payload.is_ok() || from_service_data.is_ok());
    }
}

#[test]
fn tekmac_seeds_parse() {
    for seed in seeds("tekmac") {
        let text = String::from_utf8(seed).unwrap();
        let (tag, secret) = text.split_once('\n').unwrap();
        TekMac::from_base64(tag).unwrap();
        HmacKey::from_base64(secret).unwrap();
    }
}
