//! Fuzzes the `export.sig` parser: the `TEKSignatureList` protobuf.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varsel_protocol::export::{ExportLimits, parse_signature_list};

fuzz_target!(|data: &[u8]| {
    let _ = parse_signature_list(data, &ExportLimits::default());
});
