//! Helpers shared by the protocol's integration tests: where `../shared/` lives.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::PathBuf;

/// Path of a file under the shared material beside the project (`../shared/`).
pub fn shared(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared")
        .join(relative)
}

/// Reads a shared file, naming it when it is missing.
pub fn read_shared(relative: &str) -> Vec<u8> {
    let path = shared(relative);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Decodes lowercase or uppercase hex into a fixed-size array.
pub fn hex_array<const N: usize>(text: &str) -> [u8; N] {
    hex::decode(text).unwrap().try_into().unwrap()
}
