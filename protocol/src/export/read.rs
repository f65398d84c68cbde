//! Reading export archives within limits (`spec/protocol.md` §6.4).
//!
//! The zip container and `export.sig` are read here. `export.bin` is decoded by the one-pass
//! decoder in `export_stream.rs`; the checks of one key, [`KeyFields::validate`], live here
//! and serve both that decoder and the protobuf reference in [`wire`].

use std::io::{Cursor, Read};

use prost::Message;
use sha2::{Digest, Sha256};

use super::wire;
use super::{EXPORT_BIN_NAME, EXPORT_SIG_NAME, Export, ExportKey, ReportType, SignatureInfo};
use crate::Error;
use crate::interval::{EK_ROLLING_PERIOD, EnIntervalNumber};
use crate::keys::DiagnosisKey;

/// Bounds on what a reader accepts, so that a hostile file costs bounded memory and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportLimits {
    /// Largest zip archive, in bytes.
    pub max_archive_bytes: usize,
    /// Largest uncompressed `export.bin`, in bytes.
    pub max_export_bin_bytes: usize,
    /// Largest uncompressed `export.sig`, in bytes.
    pub max_signature_bytes: usize,
    /// Most keys plus revised keys in one file.
    pub max_keys: usize,
    /// Most signatures in one `export.sig`.
    pub max_signatures: usize,
}

impl Default for ExportLimits {
    /// Room for a file of 1,000,000 keys (about 34 MB), with a margin.
    fn default() -> Self {
        Self {
            max_archive_bytes: 64 << 20,
            max_export_bin_bytes: 64 << 20,
            max_signature_bytes: 64 << 10,
            max_keys: 1_000_000,
            max_signatures: 16,
        }
    }
}

/// A parsed export archive whose signatures have not been checked yet.
///
/// Nothing in it should be trusted before [`verify`](Self::verify) succeeds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportArchive {
    /// The parsed `export.bin`.
    pub export: Export,
    /// The parsed `export.sig`.
    pub signatures: Vec<TekSignature>,
    /// SHA-256 of the whole `export.bin`, header included: what the signatures sign.
    pub export_bin_sha256: [u8; 32],
    /// Length of `export.bin` in bytes.
    pub export_bin_len: usize,
}

/// One entry of `export.sig` (§6.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TekSignature {
    /// Who signed (empty fields when absent).
    pub signature_info: SignatureInfo,
    /// Batch number the signer saw (0 when absent).
    pub batch_num: i32,
    /// Batch size the signer saw (0 when absent).
    pub batch_size: i32,
    /// The DER-encoded signature bytes.
    pub signature: Vec<u8>,
}

impl ExportArchive {
    /// Reads a zip archive: exactly `export.bin` and `export.sig`, each within `limits`.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`], [`Error::Zip`], [`Error::ArchiveEntries`], [`Error::BadHeader`],
    /// [`Error::Protobuf`], [`Error::TooManyKeys`], [`Error::TooManySignatures`] and the errors
    /// of key validation.
    pub fn read(zip: &[u8], limits: &ExportLimits) -> Result<Self, Error> {
        let (bin, sig) = archive_entries(zip, limits)?;
        Self::from_entries(parse_export_bin(&bin, limits)?, &bin, &sig, limits)
    }

    /// Completes an archive from its parsed `export.bin` and the raw bytes of both entries.
    fn from_entries(
        export: Export,
        bin: &[u8],
        sig: &[u8],
        limits: &ExportLimits,
    ) -> Result<Self, Error> {
        Ok(Self {
            export,
            signatures: parse_signature_list(sig, limits)?,
            export_bin_sha256: Sha256::digest(bin).into(),
            export_bin_len: bin.len(),
        })
    }
}

/// Opens a zip archive within `limits` and returns its two entries, `export.bin` then
/// `export.sig`, refusing any other set of entries (§6.4).
pub(crate) fn archive_entries(
    zip: &[u8],
    limits: &ExportLimits,
) -> Result<(Vec<u8>, Vec<u8>), Error> {
    check_size("export archive", zip.len(), limits.max_archive_bytes)?;
    let mut archive =
        zip::ZipArchive::new(Cursor::new(zip)).map_err(|e| Error::Zip(e.to_string()))?;
    let names = entry_names(&mut archive)?;
    if names != [EXPORT_BIN_NAME, EXPORT_SIG_NAME] && names != [EXPORT_SIG_NAME, EXPORT_BIN_NAME] {
        return Err(Error::ArchiveEntries { found: names });
    }
    let bin = read_entry(&mut archive, EXPORT_BIN_NAME, limits.max_export_bin_bytes)?;
    let sig = read_entry(&mut archive, EXPORT_SIG_NAME, limits.max_signature_bytes)?;
    Ok((bin, sig))
}

/// Lists the entry names of an archive, refusing more than a handful.
fn entry_names(archive: &mut zip::ZipArchive<Cursor<&[u8]>>) -> Result<Vec<String>, Error> {
    const MAX_LISTED: usize = 8;
    if archive.len() > MAX_LISTED {
        return Err(Error::ArchiveEntries {
            found: vec![format!("{} entries", archive.len())],
        });
    }
    (0..archive.len())
        .map(|index| {
            let file = archive
                .by_index_raw(index)
                .map_err(|e| Error::Zip(e.to_string()))?;
            Ok(String::from_utf8_lossy(file.name_raw()).into_owned())
        })
        .collect()
}

/// Decompresses one entry, trusting neither its declared size nor its compression ratio.
fn read_entry(
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &'static str,
    limit: usize,
) -> Result<Vec<u8>, Error> {
    let file = archive
        .by_name(name)
        .map_err(|e| Error::Zip(format!("{name}: {e}")))?;
    let declared = usize::try_from(file.size()).unwrap_or(usize::MAX);
    check_size(name, declared, limit)?;

    let mut bytes = Vec::with_capacity(declared);
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    file.take(cap)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Zip(format!("{name}: {e}")))?;
    check_size(name, bytes.len(), limit)?;
    Ok(bytes)
}

pub(crate) fn check_size(what: &'static str, actual: usize, limit: usize) -> Result<(), Error> {
    if actual > limit {
        return Err(Error::TooLarge {
            what,
            limit,
            actual,
        });
    }
    Ok(())
}

/// Parses an `export.bin`: its 16-byte header, then the protobuf message (§6.1, §6.2).
///
/// The message is decoded in one pass over the bytes, without building a protobuf message
/// first: each key is validated, and keys and signature infos are counted against `limits` as
/// they are met, so what a hostile file can make it hold is bounded by `limits`.
///
/// # Errors
///
/// [`Error::TooLarge`], [`Error::BadHeader`], [`Error::Protobuf`], [`Error::TooManyKeys`],
/// [`Error::TooManySignatures`], and the errors of [`ExportKey`] validation.
pub fn parse_export_bin(bytes: &[u8], limits: &ExportLimits) -> Result<Export, Error> {
    crate::export_stream::parse_export_bin(bytes, limits)
}

/// Parses an `export.sig` (§6.3).
///
/// # Errors
///
/// [`Error::TooLarge`], [`Error::Protobuf`] and [`Error::TooManySignatures`].
pub fn parse_signature_list(
    bytes: &[u8],
    limits: &ExportLimits,
) -> Result<Vec<TekSignature>, Error> {
    check_size(EXPORT_SIG_NAME, bytes.len(), limits.max_signature_bytes)?;
    let list = wire::TekSignatureList::decode(bytes).map_err(|e| Error::Protobuf(e.to_string()))?;
    if list.signatures.len() > limits.max_signatures {
        return Err(Error::TooManySignatures {
            limit: limits.max_signatures,
        });
    }
    Ok(list
        .signatures
        .into_iter()
        .map(|signature| TekSignature {
            signature_info: signature.signature_info.map(Into::into).unwrap_or_default(),
            batch_num: signature.batch_num.unwrap_or(0),
            batch_size: signature.batch_size.unwrap_or(0),
            signature: signature.signature.unwrap_or_default(),
        })
        .collect())
}

pub(super) fn convert_keys(keys: Vec<wire::TemporaryExposureKey>) -> Result<Vec<ExportKey>, Error> {
    keys.into_iter().map(ExportKey::try_from).collect()
}

impl TryFrom<wire::TemporaryExposureKey> for ExportKey {
    type Error = Error;

    fn try_from(key: wire::TemporaryExposureKey) -> Result<Self, Error> {
        KeyFields {
            key_data: key.key_data.as_deref(),
            transmission_risk_level: key.transmission_risk_level,
            rolling_start: key.rolling_start_interval_number,
            rolling_period: key.rolling_period,
            report_type: key.report_type,
            days_since_onset: key.days_since_onset_of_symptoms,
        }
        .validate()
    }
}

/// The fields of one `TemporaryExposureKey` as they appear on the wire, before validation;
/// both export readers fill one and validate it here.
#[derive(Default)]
pub(crate) struct KeyFields<'a> {
    pub(crate) key_data: Option<&'a [u8]>,
    pub(crate) transmission_risk_level: Option<i32>,
    pub(crate) rolling_start: Option<i32>,
    pub(crate) rolling_period: Option<i32>,
    pub(crate) report_type: Option<i32>,
    pub(crate) days_since_onset: Option<i32>,
}

impl KeyFields<'_> {
    /// Validates one key: 16 key bytes, a non-negative rolling start, a period of 1-144 (absent
    /// meaning 144) and a report type GAEN defines.
    pub(crate) fn validate(self) -> Result<ExportKey, Error> {
        let key_data = self
            .key_data
            .ok_or(Error::MissingField { field: "key_data" })?;
        let rolling_start = self.rolling_start.ok_or(Error::MissingField {
            field: "rolling_start_interval_number",
        })?;
        let rolling_start = u32::try_from(rolling_start).map_err(|_| Error::FieldOutOfRange {
            field: "rolling_start_interval_number",
            value: rolling_start.into(),
        })?;
        let rolling_period = self.rolling_period.unwrap_or(EK_ROLLING_PERIOD as i32);
        let rolling_period = u32::try_from(rolling_period)
            .ok()
            .filter(|period| (1..=EK_ROLLING_PERIOD).contains(period))
            .ok_or(Error::FieldOutOfRange {
                field: "rolling_period",
                value: rolling_period.into(),
            })?;
        let report_type = self
            .report_type
            .map(|value| ReportType::from_i32(value).ok_or(Error::UnknownReportType { value }))
            .transpose()?;

        Ok(ExportKey {
            key: DiagnosisKey::from_slice(key_data)?,
            transmission_risk_level: self.transmission_risk_level.unwrap_or(0),
            rolling_start: EnIntervalNumber::new(rolling_start),
            rolling_period,
            report_type,
            days_since_onset_of_symptoms: self.days_since_onset,
        })
    }
}

impl From<wire::SignatureInfo> for SignatureInfo {
    fn from(info: wire::SignatureInfo) -> Self {
        Self {
            verification_key_version: info.verification_key_version.unwrap_or_default(),
            verification_key_id: info.verification_key_id.unwrap_or_default(),
            signature_algorithm: info.signature_algorithm.unwrap_or_default(),
        }
    }
}
