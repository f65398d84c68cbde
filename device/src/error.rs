//! The one error type of the device crate.

/// Everything that can go wrong on the device.
///
/// Messages say what happened and, where the user can act, what to do. None of them carries a
/// key, an identifier, a code or a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database failed.
    #[error("device database: {0}")]
    Database(#[from] sled::Error),
    /// A record in the database could not be read back.
    #[error("device database holds a corrupt {what} record")]
    CorruptRecord {
        /// Which kind of record.
        what: &'static str,
    },
    /// A protocol value was invalid.
    #[error(transparent)]
    Protocol(#[from] varsel_protocol::Error),
    /// A JSON value could not be written or read.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A file could not be read or written.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Something the device needs has not been configured.
    #[error("not configured: {what}; run `varsel-device init`")]
    NotConfigured {
        /// What is missing.
        what: &'static str,
    },
    /// A setting was given an invalid value.
    #[error("invalid setting {name}: {reason}")]
    InvalidSetting {
        /// The setting.
        name: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The user has not agreed to what was asked.
    #[error("no consent to {purpose}; run `varsel-device consent grant {consent}` first")]
    NoConsent {
        /// What needed consent.
        purpose: &'static str,
        /// The consent it needs, as `varsel-device consent grant` names it.
        consent: &'static str,
    },
    /// A request could not be sent or its answer not received.
    #[error("request to {route} failed: {reason}")]
    Transport {
        /// The route asked for.
        route: String,
        /// What went wrong.
        reason: String,
    },
    /// The server refused a request.
    #[error("server refused {route} with HTTP {status}: {message}")]
    Refused {
        /// The route asked for.
        route: String,
        /// The HTTP status.
        status: u16,
        /// The server's machine-readable error code, if it gave one.
        code: Option<String>,
        /// The server's message, or the status text.
        message: String,
    },
    /// The server's answer was not what the protocol allows.
    #[error("invalid answer from {route}: {reason}")]
    BadResponse {
        /// The route asked for.
        route: String,
        /// What was wrong with it.
        reason: String,
    },
    /// An export file failed its checks and was not used.
    #[error("export {path} rejected: {reason}")]
    ExportRejected {
        /// The path from the index.
        path: String,
        /// Why.
        reason: String,
    },
    /// The radio failed or cannot do what was asked on this platform.
    #[error("radio: {0}")]
    Radio(String),
}
