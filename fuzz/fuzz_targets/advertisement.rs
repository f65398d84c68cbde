//! Fuzzes the Bluetooth advertisement parsers: whole payloads and bare service data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varsel_protocol::advertisement::Advertisement;

fuzz_target!(|data: &[u8]| {
    let _ = Advertisement::from_payload(data);
    if let Some((uuid, service_data)) = data.split_first_chunk::<2>() {
        let _ = Advertisement::from_service_data(u16::from_le_bytes(*uuid), service_data);
    }
});
