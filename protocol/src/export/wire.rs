//! Protobuf messages of the export format, written by hand with `prost`'s derive so that no
//! `protoc` is needed (`spec/protocol.md` §6.2). Field numbers and types are GAEN's (proto2).
//!
//! The writer encodes `export.bin` and `export.sig` with these messages, and the reader decodes
//! `export.sig` with them. `export.bin` is read by a one-pass decoder instead
//! ([`super::parse_export_bin`]); [`decode_export_bin_reference`] decodes it with these messages
//! and is kept only so that tests and fuzz targets can check the one-pass decoder against it.

use prost::Message;

use super::read::{check_size, convert_keys};
use super::{EXPORT_BIN_HEADER, EXPORT_BIN_NAME, Export, ExportLimits};
use crate::Error;

/// Decodes an `export.bin` with the generated protobuf decoder: the slow reference that the
/// one-pass [`super::parse_export_bin`] is checked against. Use that one to read files.
///
/// It accepts and refuses what [`super::parse_export_bin`] does and returns the same
/// [`Export`]; only the message of an error may differ. It decodes the whole message before
/// counting keys and signature infos, so a hostile file within the size limit can make it
/// allocate far more than `limits` suggest.
///
/// # Errors
///
/// [`Error::TooLarge`], [`Error::BadHeader`], [`Error::Protobuf`], [`Error::TooManyKeys`],
/// [`Error::TooManySignatures`], and the errors of key validation.
pub fn decode_export_bin_reference(bytes: &[u8], limits: &ExportLimits) -> Result<Export, Error> {
    check_size(EXPORT_BIN_NAME, bytes.len(), limits.max_export_bin_bytes)?;
    let body = bytes
        .strip_prefix(EXPORT_BIN_HEADER.as_slice())
        .ok_or(Error::BadHeader)?;
    let message =
        TemporaryExposureKeyExport::decode(body).map_err(|e| Error::Protobuf(e.to_string()))?;
    if message.keys.len() + message.revised_keys.len() > limits.max_keys {
        return Err(Error::TooManyKeys {
            limit: limits.max_keys,
        });
    }
    if message.signature_infos.len() > limits.max_signatures {
        return Err(Error::TooManySignatures {
            limit: limits.max_signatures,
        });
    }

    Ok(Export {
        start_timestamp: message.start_timestamp.unwrap_or(0),
        end_timestamp: message.end_timestamp.unwrap_or(0),
        region: message.region.unwrap_or_default(),
        batch_num: message.batch_num.unwrap_or(0),
        batch_size: message.batch_size.unwrap_or(0),
        signature_infos: message
            .signature_infos
            .into_iter()
            .map(super::SignatureInfo::from)
            .collect(),
        keys: convert_keys(message.keys)?,
        revised_keys: convert_keys(message.revised_keys)?,
    })
}

/// `TemporaryExposureKeyExport`: the body of `export.bin` after its header.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TemporaryExposureKeyExport {
    /// Start of the window the keys were published in, Unix seconds.
    #[prost(fixed64, optional, tag = "1")]
    pub start_timestamp: Option<u64>,
    /// End of that window, Unix seconds.
    #[prost(fixed64, optional, tag = "2")]
    pub end_timestamp: Option<u64>,
    /// Region the keys belong to, such as an ISO 3166 code.
    #[prost(string, optional, tag = "3")]
    pub region: Option<String>,
    /// Number of this file in its batch, from 1.
    #[prost(int32, optional, tag = "4")]
    pub batch_num: Option<i32>,
    /// Number of files in the batch.
    #[prost(int32, optional, tag = "5")]
    pub batch_size: Option<i32>,
    /// Who signed the file.
    #[prost(message, repeated, tag = "6")]
    pub signature_infos: Vec<SignatureInfo>,
    /// The diagnosis keys.
    #[prost(message, repeated, tag = "7")]
    pub keys: Vec<TemporaryExposureKey>,
    /// Keys published before whose report type changed.
    #[prost(message, repeated, tag = "8")]
    pub revised_keys: Vec<TemporaryExposureKey>,
}

/// `SignatureInfo`: identifies a signing key and its algorithm.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SignatureInfo {
    /// Version of the verification key.
    #[prost(string, optional, tag = "3")]
    pub verification_key_version: Option<String>,
    /// Identifier of the verification key.
    #[prost(string, optional, tag = "4")]
    pub verification_key_id: Option<String>,
    /// ASN.1 object identifier of the algorithm.
    #[prost(string, optional, tag = "5")]
    pub signature_algorithm: Option<String>,
}

/// `TemporaryExposureKey`: one diagnosis key.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TemporaryExposureKey {
    /// The 16 key bytes.
    #[prost(bytes = "vec", optional, tag = "1")]
    pub key_data: Option<Vec<u8>>,
    /// Transmission risk level.
    #[prost(int32, optional, tag = "2")]
    pub transmission_risk_level: Option<i32>,
    /// First interval the key was valid in.
    #[prost(int32, optional, tag = "3")]
    pub rolling_start_interval_number: Option<i32>,
    /// Number of intervals the key was valid for; absent means 144.
    #[prost(int32, optional, tag = "4")]
    pub rolling_period: Option<i32>,
    /// The `ReportType` enum, on the wire as an int32.
    #[prost(int32, optional, tag = "5")]
    pub report_type: Option<i32>,
    /// Days from symptom onset to the key's day.
    #[prost(sint32, optional, tag = "6")]
    pub days_since_onset_of_symptoms: Option<i32>,
}

/// `TEKSignatureList`: the whole of `export.sig`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TekSignatureList {
    /// One signature per signing key.
    #[prost(message, repeated, tag = "1")]
    pub signatures: Vec<TekSignature>,
}

/// `TEKSignature`: one signature over `export.bin`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TekSignature {
    /// Which key signed.
    #[prost(message, optional, tag = "1")]
    pub signature_info: Option<SignatureInfo>,
    /// Batch number of the signed file.
    #[prost(int32, optional, tag = "2")]
    pub batch_num: Option<i32>,
    /// Batch size of the signed file.
    #[prost(int32, optional, tag = "3")]
    pub batch_size: Option<i32>,
    /// DER-encoded ECDSA signature.
    #[prost(bytes = "vec", optional, tag = "4")]
    pub signature: Option<Vec<u8>>,
}
