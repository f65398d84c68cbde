//! Fuzzes the one-pass `export.bin` decoder against the protobuf reference it stands in for: on
//! any input both must accept with equal results or both refuse, and neither may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varsel_protocol::export::wire::decode_export_bin_reference;
use varsel_protocol::export::{ExportLimits, parse_export_bin};

fuzz_target!(|data: &[u8]| {
    let limits = ExportLimits::default();
    let reference = decode_export_bin_reference(data, &limits);
    let one_pass = parse_export_bin(data, &limits);
    match (reference, one_pass) {
        (Ok(reference), Ok(one_pass)) => assert_eq!(reference, one_pass),
        (Err(_), Err(_)) => {}
        (reference, one_pass) => panic!("decoders disagree: {reference:?} vs {one_pass:?}"),
    }
});
