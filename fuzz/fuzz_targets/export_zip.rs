//! Fuzzes the export archive reader: zip container, both entries and signature checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varsel_protocol::export::{ExportArchive, ExportLimits, TrustedKeys};

fuzz_target!(|data: &[u8]| {
    if let Ok(archive) = ExportArchive::read(data, &ExportLimits::default()) {
        let _ = archive.check_signatures(&TrustedKeys::new());
    }
});
