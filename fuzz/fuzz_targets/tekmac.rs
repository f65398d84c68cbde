//! Fuzzes the tekmac parsers: the base64 tag and the base64 HMAC secret, then verification.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varsel_protocol::tekmac::{HmacKey, TekMac};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (tag, secret) = text.split_once('\n').unwrap_or((text, ""));
    if let (Ok(tag), Ok(secret)) = (TekMac::from_base64(tag), HmacKey::from_base64(secret)) {
        let _ = tag.verify(&secret, &[]);
    }
});
