//! The crate's one error type, and the one place where errors become HTTP responses.
//!
//! Client errors answer with a status, a human-readable `error` and a machine `code`; internal
//! faults answer a generic 500 and log their detail once. No message carries a code, token,
//! key, HMAC or client address.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::padding;

/// Why a certificate (or a verification token) was refused; kept apart so each rejection can
/// be tested while the HTTP answer stays uniform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRejection {
    /// Not three base64url parts, too long, or claims that do not parse.
    #[error("malformed")]
    Malformed,
    /// A header algorithm other than ES256 (including `none` and HS256).
    #[error("algorithm not allowed")]
    Algorithm,
    /// A `kid` that is missing or not one of the trusted keys.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// The `iss` claim is not the expected issuer.
    #[error("wrong issuer")]
    Issuer,
    /// The `aud` claim is not the expected audience.
    #[error("wrong audience")]
    Audience,
    /// `nbf` or `iat` lie further in the future than the allowed skew.
    #[error("not yet valid")]
    NotYetValid,
    /// `exp` has passed (beyond the allowed skew).
    #[error("expired")]
    Expired,
    /// The lifetime `exp - iat` is longer than the issuer ever grants.
    #[error("lifetime too long")]
    Lifetime,
    /// The `tekmac` claim does not match the uploaded keys and HMAC secret.
    #[error("tekmac does not match the keys")]
    TekMac,
    /// The token was already exchanged, or never issued here.
    #[error("already used or unknown")]
    Used,
}

/// Everything that can go wrong in the key server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The body is not JSON of the expected shape (unknown field, wrong type, bad syntax).
    #[error("unparsable request: {0}")]
    BadJson(String),
    /// The body exceeds the route's limit.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A field parsed but its value is not acceptable.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field's JSON name.
        field: &'static str,
        /// What was expected.
        reason: &'static str,
    },
    /// No API key, or one that is unknown or revoked.
    #[error("missing, unknown or revoked API key")]
    Unauthorized,
    /// A code was already issued for this idempotency `uuid`.
    #[error("a code was already issued for this uuid")]
    DuplicateUuid,
    /// The authority's daily issuing quota is used up.
    #[error("daily quota of {limit} codes used up")]
    QuotaExceeded {
        /// Codes allowed per day.
        limit: u64,
    },
    /// Too many verification attempts from this client, or too many failures overall.
    #[error("too many attempts, try again later")]
    RateLimited,
    /// The code is malformed or was already used.
    #[error("code invalid or already used")]
    CodeInvalid,
    /// The code existed but has expired.
    #[error("code expired")]
    CodeExpired,
    /// No such code was issued.
    #[error("code not found")]
    CodeNotFound,
    /// The code's test type is not among those the app accepts.
    #[error("test type not accepted by the client")]
    UnsupportedTestType,
    /// A verification token was refused.
    #[error("verification token refused: {0}")]
    Token(TokenRejection),
    /// A certificate was refused.
    #[error("certificate refused: {0}")]
    Certificate(TokenRejection),
    /// The `ekeyhmac` is not base64 of 32 bytes.
    #[error("ekeyhmac must be base64 of 32 bytes")]
    HmacInvalid,
    /// The staff form's CSRF token is missing or wrong.
    #[error("form expired or forged; reload the page")]
    Csrf,
    /// An operator command named an authority that already exists.
    #[error("authority {0:?} already exists")]
    AuthorityExists(String),
    /// An operator command named an authority that does not exist.
    #[error("no authority named {0:?}")]
    AuthorityNotFound(String),
    /// The configuration file or an environment override is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// No such route or file.
    #[error("not found")]
    NotFound,
    /// Uploaded keys overlap in a way no phone produces.
    #[error("keys overlap: {0}")]
    KeyOverlap(&'static str),
    /// A revision was attempted without the token from the first upload of those keys.
    #[error("revision token missing, invalid or not covering the revised keys")]
    RevisionToken,
    /// An export file could not be written or read.
    #[error("export file: {0}")]
    Export(varsel_protocol::Error),
    /// The database failed.
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    /// A file or socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Stored data did not decode; the database is damaged or from another version.
    #[error("corrupt stored record: {0}")]
    Corrupt(&'static str),
}

impl Error {
    /// Every machine-readable code [`code`](Self::code) returns, for the OpenAPI document.
    pub const CODES: [&'static str; 19] = [
        "bad_request",
        "body_too_large",
        "unauthorized",
        "uuid_already_exists",
        "quota_exceeded",
        "code_invalid",
        "code_expired",
        "code_not_found",
        "unsupported_test_type",
        "token_invalid",
        "token_expired",
        "certificate_invalid",
        "hmac_invalid",
        "csrf_invalid",
        "key_overlap",
        "not_found",
        "revision_token_invalid",
        "operator_error",
        "internal",
    ];

    /// The machine-readable code sent to clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadJson(_) | Self::InvalidField { .. } => "bad_request",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::Unauthorized => "unauthorized",
            Self::DuplicateUuid => "uuid_already_exists",
            Self::QuotaExceeded { .. } | Self::RateLimited => "quota_exceeded",
            Self::CodeInvalid => "code_invalid",
            Self::CodeExpired => "code_expired",
            Self::CodeNotFound => "code_not_found",
            Self::UnsupportedTestType => "unsupported_test_type",
            Self::Token(TokenRejection::Expired) => "token_expired",
            Self::Token(_) => "token_invalid",
            Self::Certificate(_) => "certificate_invalid",
            Self::HmacInvalid => "hmac_invalid",
            Self::Csrf => "csrf_invalid",
            Self::KeyOverlap(_) => "key_overlap",
            Self::NotFound => "not_found",
            Self::RevisionToken => "revision_token_invalid",
            Self::AuthorityExists(_) | Self::AuthorityNotFound(_) | Self::Config(_) => {
                "operator_error"
            }
            Self::Export(_) | Self::Storage(_) | Self::Io(_) | Self::Corrupt(_) => "internal",
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadJson(_)
            | Self::InvalidField { .. }
            | Self::CodeInvalid
            | Self::CodeExpired
            | Self::Token(_)
            | Self::Certificate(_)
            | Self::HmacInvalid
            | Self::KeyOverlap(_)
            | Self::RevisionToken => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Csrf => StatusCode::FORBIDDEN,
            Self::CodeNotFound | Self::AuthorityNotFound(_) | Self::NotFound => {
                StatusCode::NOT_FOUND
            }
            Self::DuplicateUuid | Self::AuthorityExists(_) => StatusCode::CONFLICT,
            Self::UnsupportedTestType => StatusCode::PRECONDITION_FAILED,
            Self::QuotaExceeded { .. } | Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Config(_)
            | Self::Export(_)
            | Self::Storage(_)
            | Self::Io(_)
            | Self::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if status.is_server_error() {
            tracing::error!(error = %self, "internal fault");
            "internal error".to_owned()
        } else {
            tracing::debug!(code = self.code(), "request refused");
            self.to_string()
        };
        let body = json!({ "error": message, "code": self.code() });
        padding::padded_json(status, body)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// One error of each variant.
    fn one_of_each() -> Vec<Error> {
        vec![
            Error::BadJson(String::new()),
            Error::BodyTooLarge { limit: 1 },
            Error::InvalidField {
                field: "f",
                reason: "r",
            },
            Error::Unauthorized,
            Error::DuplicateUuid,
            Error::QuotaExceeded { limit: 1 },
            Error::RateLimited,
            Error::CodeInvalid,
            Error::CodeExpired,
            Error::CodeNotFound,
            Error::UnsupportedTestType,
            Error::Token(TokenRejection::Expired),
            Error::Token(TokenRejection::Signature),
            Error::Certificate(TokenRejection::Signature),
            Error::HmacInvalid,
            Error::Csrf,
            Error::AuthorityExists(String::new()),
            Error::AuthorityNotFound(String::new()),
            Error::Config(String::new()),
            Error::NotFound,
            Error::KeyOverlap("k"),
            Error::RevisionToken,
            Error::Export(varsel_protocol::Error::TruncatedAdStructure),
            Error::Storage(sled::Error::Unsupported(String::new())),
            Error::Io(std::io::Error::other("io")),
            Error::Corrupt("c"),
        ]
    }

    #[test]
    fn codes_lists_every_code_once() {
        let returned: std::collections::BTreeSet<_> =
            one_of_each().iter().map(Error::code).collect();
        let listed: std::collections::BTreeSet<_> = Error::CODES.into_iter().collect();
        assert_eq!(listed.len(), Error::CODES.len());
        assert_eq!(returned, listed);
    }
}
