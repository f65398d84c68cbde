//! Response padding: every JSON answer is filled with random characters to a random total size,
//! so the size of a response says nothing about what it holds, and a chaff answer has the same
//! size distribution as a real one (`spec/verification.md`, "Padding and chaff").

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::Value;

/// Every padded body is at least this long, in bytes.
pub const MIN_BODY_LEN: usize = 1_024;
/// A body is this many bytes longer than [`MIN_BODY_LEN`] at most (or than its content).
pub const SPREAD: usize = 512;
/// The request header that marks a chaff request.
pub const CHAFF_HEADER: &str = "x-chaff";

/// Serializes `body` with a `padding` field so its length is uniform in
/// `[max(MIN_BODY_LEN, content), that + SPREAD)`.
pub fn padded_json(status: StatusCode, mut body: Value) -> Response {
    let Some(object) = body.as_object_mut() else {
        return (status, Json(body)).into_response();
    };
    object.insert("padding".to_owned(), Value::String(String::new()));
    let unpadded = serde_json::to_string(object).map_or(0, |text| text.len());
    let mut rng = rand::thread_rng();
    let target = unpadded.max(MIN_BODY_LEN) + rng.gen_range(0..SPREAD);
    object.insert(
        "padding".to_owned(),
        Value::String(random_text(&mut rng, target - unpadded)),
    );
    (status, Json(body)).into_response()
}

/// `len` random characters from the base64url alphabet.
pub fn random_text(rng: &mut impl Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..len)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    #[tokio::test]
    async fn bodies_are_padded_into_the_window() {
        for _ in 0..50 {
            let response = padded_json(StatusCode::OK, serde_json::json!({ "a": "b" }));
            let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
            assert!((MIN_BODY_LEN..MIN_BODY_LEN + SPREAD).contains(&body.len()));
            let value: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(value["a"], "b");
        }
    }
}
