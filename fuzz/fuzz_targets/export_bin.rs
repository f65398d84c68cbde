//! Fuzzes the `export.bin` parser: header and the one-pass `TemporaryExposureKeyExport` decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varsel_protocol::export::{ExportLimits, parse_export_bin};

fuzz_target!(|data: &[u8]| {
    let _ = parse_export_bin(data, &ExportLimits::default());
});
