//! Diagnosis-key export files, byte-compatible with GAEN (`spec/protocol.md` §6).
//!
//! An export is a zip archive holding exactly two entries: `export.bin`, a 16-byte header and a
//! protobuf `TemporaryExposureKeyExport`, and `export.sig`, a protobuf `TEKSignatureList` with an
//! ECDSA P-256 signature over the whole of `export.bin`. [`ExportArchive::read`] parses one
//! within [`ExportLimits`]; [`ExportArchive::verify`] checks its signatures against
//! [`TrustedKeys`]; [`write_archive`] produces one.

pub(crate) mod read;
mod signing;
pub mod wire;
mod write;

pub use read::{ExportArchive, ExportLimits, parse_export_bin, parse_signature_list};
pub use signing::{
    ECDSA_P256_SHA256_OID, ExportSigner, SignatureCheck, SignatureStatus, TrustedKey, TrustedKeys,
};
pub use write::{Compression, encode_export_bin, write_archive};

use crate::interval::EnIntervalNumber;
use crate::keys::DiagnosisKey;

/// The 16 bytes that open every `export.bin`: `EK Export v1` and four spaces (§6.1).
pub const EXPORT_BIN_HEADER: &[u8; 16] = b"EK Export v1    ";

/// Name of the key-file entry in the archive.
pub const EXPORT_BIN_NAME: &str = "export.bin";

/// Name of the signature entry in the archive.
pub const EXPORT_SIG_NAME: &str = "export.sig";

/// The contents of one `export.bin` (§6.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Export {
    /// Start of the publication window, Unix seconds (0 when absent).
    pub start_timestamp: u64,
    /// End of the publication window, Unix seconds (0 when absent).
    pub end_timestamp: u64,
    /// Region the keys belong to (empty when absent).
    pub region: String,
    /// Number of this file in its batch, from 1 (0 when absent).
    pub batch_num: i32,
    /// Number of files in the batch (0 when absent).
    pub batch_size: i32,
    /// The signers the file names. [`write_archive`] fills this from its signers.
    pub signature_infos: Vec<SignatureInfo>,
    /// The diagnosis keys, sorted by key bytes when written.
    pub keys: Vec<ExportKey>,
    /// Keys published earlier whose report type has changed.
    pub revised_keys: Vec<ExportKey>,
}

/// Identifies who signed an export and how (§6.3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SignatureInfo {
    /// Version of the verification key, such as `v1`.
    pub verification_key_version: String,
    /// Identifier of the verification key, agreed with the app; GAEN uses the mobile country
    /// code.
    pub verification_key_id: String,
    /// Object identifier of the algorithm; [`ECDSA_P256_SHA256_OID`] is the only one defined.
    pub signature_algorithm: String,
}

/// One diagnosis key with the facts published about it (§6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportKey {
    /// The key.
    pub key: DiagnosisKey,
    /// Transmission risk level (0 when absent).
    pub transmission_risk_level: i32,
    /// First interval the key was valid in.
    pub rolling_start: EnIntervalNumber,
    /// Number of intervals it was valid for, 1-144.
    pub rolling_period: u32,
    /// How the diagnosis was made, when stated.
    pub report_type: Option<ReportType>,
    /// Days from symptom onset to the key's day, when stated.
    pub days_since_onset_of_symptoms: Option<i32>,
}

/// How a key's owner was diagnosed (§6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReportType {
    /// Not stated.
    Unknown = 0,
    /// A positive laboratory test.
    ConfirmedTest = 1,
    /// A diagnosis by a clinician without a test.
    ConfirmedClinicalDiagnosis = 2,
    /// The owner's own report.
    SelfReport = 3,
    /// Reserved by GAEN; not used.
    Recursive = 4,
    /// An earlier report withdrawn.
    Revoked = 5,
}

impl ReportType {
    /// The enum value on the wire.
    pub const fn to_i32(self) -> i32 {
        self as i32
    }

    /// Reads an enum value from the wire, or `None` for a number GAEN does not define.
    pub const fn from_i32(value: i32) -> Option<Self> {
        Some(match value {
            0 => Self::Unknown,
            1 => Self::ConfirmedTest,
            2 => Self::ConfirmedClinicalDiagnosis,
            3 => Self::SelfReport,
            4 => Self::Recursive,
            5 => Self::Revoked,
            _ => return None,
        })
    }

    /// The name used in JSON and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::ConfirmedTest => "confirmed_test",
            Self::ConfirmedClinicalDiagnosis => "confirmed_clinical_diagnosis",
            Self::SelfReport => "self_report",
            Self::Recursive => "recursive",
            Self::Revoked => "revoked",
        }
    }
}
