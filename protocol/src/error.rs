//! The one error type of the protocol crate.

/// Everything that can go wrong parsing, validating or verifying protocol data.
///
/// Messages say what was expected. Authentication failures ([`Error::TekMacMismatch`],
/// [`Error::SignatureNotVerified`]) are deliberately opaque.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A fixed-length value had the wrong length.
    #[error("{what} must be {expected} bytes, got {actual}")]
    InvalidLength {
        /// What was being read.
        what: &'static str,
        /// The length required (the minimum, for variable-length secrets).
        expected: usize,
        /// The length found.
        actual: usize,
    },
    /// Text was not valid standard base64.
    #[error("{what} is not valid base64")]
    InvalidBase64 {
        /// What was being read.
        what: &'static str,
    },
    /// A Unix time lies beyond the last 32-bit interval number.
    #[error("time {unix_seconds} is beyond the last representable interval")]
    TimeOutOfRange {
        /// The time given.
        unix_seconds: u64,
    },
    /// A rolling period was outside 1-144.
    #[error("rolling period must be 1-144 intervals, got {period}")]
    RollingPeriodOutOfRange {
        /// The period given.
        period: u32,
    },
    /// Service data came under another UUID than 0xFD6F.
    #[error("service UUID must be 0xFD6F, got {found:#06X}")]
    WrongServiceUuid {
        /// The UUID found.
        found: u16,
    },
    /// An advertising payload was longer than a legacy advertisement.
    #[error("advertising payload must be at most {limit} bytes, got {actual}")]
    AdvertisementTooLong {
        /// The limit.
        limit: usize,
        /// The length found.
        actual: usize,
    },
    /// An AD structure's length ran past the end of the payload.
    #[error("advertising payload has a truncated AD structure")]
    TruncatedAdStructure,
    /// An advertising payload had no Exposure Notification service data.
    #[error("advertising payload has no 0xFD6F service data")]
    MissingServiceData,
    /// A tekmac did not match the keys and secret.
    #[error("tekmac does not match the uploaded keys")]
    TekMacMismatch,
    /// More keys than a limit allows.
    #[error("too many keys: at most {limit}")]
    TooManyKeys {
        /// The limit.
        limit: usize,
    },
    /// More signatures than a limit allows.
    #[error("too many signatures: at most {limit}")]
    TooManySignatures {
        /// The limit.
        limit: usize,
    },
    /// Input exceeded a size limit.
    #[error("{what} is too large: {actual} bytes, limit {limit}")]
    TooLarge {
        /// What was being read.
        what: &'static str,
        /// The limit in bytes.
        limit: usize,
        /// The size found or declared.
        actual: usize,
    },
    /// The zip container could not be read or written.
    #[error("zip archive: {0}")]
    Zip(String),
    /// The archive did not hold exactly `export.bin` and `export.sig`.
    #[error("export archive must hold exactly export.bin and export.sig, found {found:?}")]
    ArchiveEntries {
        /// The entry names found.
        found: Vec<String>,
    },
    /// `export.bin` did not start with its 16-byte header.
    #[error("export.bin does not start with the header \"EK Export v1    \"")]
    BadHeader,
    /// A protobuf message could not be decoded.
    #[error("malformed protobuf: {0}")]
    Protobuf(String),
    /// A required protobuf field was absent.
    #[error("required field {field} is missing")]
    MissingField {
        /// The field's name in the schema.
        field: &'static str,
    },
    /// A numeric field was outside its range.
    #[error("{field} is out of range: {value}")]
    FieldOutOfRange {
        /// The field's name in the schema.
        field: &'static str,
        /// The value found.
        value: i64,
    },
    /// A report type GAEN does not define.
    #[error("unknown report type {value}")]
    UnknownReportType {
        /// The value found.
        value: i32,
    },
    /// A public key was not a P-256 SubjectPublicKeyInfo.
    #[error("not a P-256 public key (SubjectPublicKeyInfo, PEM or DER)")]
    InvalidPublicKey,
    /// No signature of an export verified under a trusted key.
    #[error("no signature verifies under a trusted key")]
    SignatureNotVerified,
    /// An export was to be written without a signer.
    #[error("an export needs at least one signer")]
    NoSigner,
    /// The signing operation failed.
    #[error("signing failed")]
    SigningFailed,
}
