//! Request extraction shared by the JSON routes: a size-limited body, strict JSON (unknown
//! fields refused by the types), and the chaff flag.

use axum::body::{Body, to_bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::padding::CHAFF_HEADER;

/// Largest JSON request body any verification route accepts, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A JSON body of at most [`MAX_BODY_BYTES`], parsed into `T`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_limited(request.into_body(), MAX_BODY_BYTES).await?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|error| Error::BadJson(describe(&error)))
    }
}

/// Parses a JSON body already read, with the same strictness and error words as [`ApiJson`].
///
/// # Errors
///
/// [`Error::BadJson`].
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|error| Error::BadJson(describe(&error)))
}

/// Reads a body, refusing it once it passes `limit` bytes.
pub async fn read_limited(body: Body, limit: usize) -> Result<axum::body::Bytes, Error> {
    to_bytes(body, limit)
        .await
        .map_err(|_| Error::BodyTooLarge { limit })
}

/// A serde error in words that never quote the offending value (it might be a code).
fn describe(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match error.classify() {
        serde_json::error::Category::Data if text.starts_with("unknown field") => text
            .split(", expected")
            .next()
            .unwrap_or("unknown field")
            .to_owned(),
        serde_json::error::Category::Data if text.starts_with("missing field") => text
            .split(" at line")
            .next()
            .unwrap_or("missing field")
            .to_owned(),
        serde_json::error::Category::Data => "a field has the wrong type or value".to_owned(),
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            "the body is not valid JSON".to_owned()
        }
        serde_json::error::Category::Io => "the body could not be read".to_owned(),
    }
}

/// Whether the request carries the `X-Chaff` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chaff(pub bool);

impl<S: Send + Sync> FromRequestParts<S> for Chaff {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.contains_key(CHAFF_HEADER)))
    }
}
