//! Writing signed export archives (`spec/protocol.md` §6.5).

use std::io::{Cursor, Write};

use prost::Message;
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

use super::signing::ExportSigner;
use super::wire;
use super::{
    EXPORT_BIN_HEADER, EXPORT_BIN_NAME, EXPORT_SIG_NAME, Export, ExportKey, SignatureInfo,
};
use crate::Error;

/// How the archive's entries are compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// Deflate at a fast level: random key bytes barely compress, so effort buys little.
    #[default]
    Deflated,
    /// No compression: the quickest to write and to read.
    Stored,
}

/// Serializes an `export.bin`: header, then the protobuf message, keys as given (§6.2).
pub fn encode_export_bin(export: &Export) -> Vec<u8> {
    let message = wire::TemporaryExposureKeyExport {
        start_timestamp: Some(export.start_timestamp),
        end_timestamp: Some(export.end_timestamp),
        region: Some(export.region.clone()),
        batch_num: Some(export.batch_num),
        batch_size: Some(export.batch_size),
        signature_infos: export.signature_infos.iter().map(wire_info).collect(),
        keys: export.keys.iter().map(wire_key).collect(),
        revised_keys: export.revised_keys.iter().map(wire_key).collect(),
    };
    let mut bytes = Vec::with_capacity(EXPORT_BIN_HEADER.len() + message.encoded_len());
    bytes.extend_from_slice(EXPORT_BIN_HEADER);
    message.encode_raw(&mut bytes);
    bytes
}

/// Writes a signed export archive (§6.5).
///
/// Keys and revised keys are sorted by key bytes, so their order says nothing about when or by
/// whom they were uploaded, and `signature_infos` is set to the signers'. Every signer signs the
/// SHA-256 digest of the whole `export.bin`.
///
/// # Errors
///
/// [`Error::NoSigner`] without signers, [`Error::SigningFailed`] and [`Error::Zip`].
pub fn write_archive(
    mut export: Export,
    signers: &[ExportSigner],
    compression: Compression,
) -> Result<Vec<u8>, Error> {
    if signers.is_empty() {
        return Err(Error::NoSigner);
    }
    check_intervals(&export)?;
    export.keys.sort_unstable_by_key(|key| key.key);
    export.revised_keys.sort_unstable_by_key(|key| key.key);
    export.signature_infos = signers.iter().map(|signer| signer.info().clone()).collect();

    let bin = encode_export_bin(&export);
    let digest: [u8; 32] = Sha256::digest(&bin).into();
    let signatures = signers
        .iter()
        .map(|signer| {
            Ok(wire::TekSignature {
                signature_info: Some(wire_info(signer.info())),
                batch_num: Some(export.batch_num),
                batch_size: Some(export.batch_size),
                signature: Some(signer.sign_digest(&digest)?),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let sig = wire::TekSignatureList { signatures }.encode_to_vec();

    zip_entries(&bin, &sig, compression)
}

/// Interval numbers travel as int32, so those past 2³¹ − 1 (the year 42,800) cannot be written.
fn check_intervals(export: &Export) -> Result<(), Error> {
    let too_late = export
        .keys
        .iter()
        .chain(&export.revised_keys)
        .find(|key| i32::try_from(key.rolling_start.value()).is_err());
    match too_late {
        Some(key) => Err(Error::FieldOutOfRange {
            field: "rolling_start_interval_number",
            value: key.rolling_start.value().into(),
        }),
        None => Ok(()),
    }
}

fn zip_entries(bin: &[u8], sig: &[u8], compression: Compression) -> Result<Vec<u8>, Error> {
    let options = match compression {
        Compression::Deflated => SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(1)),
        Compression::Stored => {
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored)
        }
    }
    .last_modified_time(zip::DateTime::DEFAULT)
    .large_file(bin.len() > u32::MAX as usize);

    let zip_error = |e: &dyn std::fmt::Display| Error::Zip(e.to_string());
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::with_capacity(bin.len() + 4096)));
    for (name, bytes) in [(EXPORT_BIN_NAME, bin), (EXPORT_SIG_NAME, sig)] {
        writer
            .start_file(name, options)
            .map_err(|e| zip_error(&e))?;
        writer.write_all(bytes).map_err(|e| zip_error(&e))?;
    }
    let cursor = writer.finish().map_err(|e| zip_error(&e))?;
    Ok(cursor.into_inner())
}

fn wire_info(info: &SignatureInfo) -> wire::SignatureInfo {
    wire::SignatureInfo {
        verification_key_version: Some(info.verification_key_version.clone()),
        verification_key_id: Some(info.verification_key_id.clone()),
        signature_algorithm: Some(info.signature_algorithm.clone()),
    }
}

fn wire_key(key: &ExportKey) -> wire::TemporaryExposureKey {
    wire::TemporaryExposureKey {
        key_data: Some(key.key.as_bytes().to_vec()),
        transmission_risk_level: Some(key.transmission_risk_level),
        rolling_start_interval_number: Some(key.rolling_start.value().cast_signed()),
        rolling_period: Some(key.rolling_period.cast_signed()),
        report_type: key.report_type.map(|report_type| report_type.to_i32()),
        days_since_onset_of_symptoms: key.days_since_onset_of_symptoms,
    }
}
